"""Idempotent runs and crash safety: nothing duplicated or lost on a crash at any point."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.job.lane import JOB, JobResult, Lane, _exec, load_prices
from tests.support.services import PostgresServer, start_postgres


def change_source(lane: Lane) -> None:
    lane.src("UPDATE prices SET price = price + 1, updated_at = now() WHERE id % 10 = 0")
    lane.src("DELETE FROM prices WHERE id % 97 = 0")
    lane.src("INSERT INTO prices SELECT g, 'new-' || g, 5, 'USD', 'new', now() "
             "FROM generate_series(100001, 100100) g")


def test_the_same_run_twice_gives_the_same_destination(lane: Lane) -> None:
    load_prices(lane, 5000)
    assert lane.run("run").code == 0
    change_source(lane)

    first = lane.run("run")
    after_first = lane.table_text("destination")
    second = lane.run("run")

    assert first.code == 0 and second.code == 0
    assert first.report["apply"]["updated"] > 0
    assert second.report["reason"] == "NoChanges"
    assert lane.table_text("destination") == after_first == lane.table_text("source")


def test_an_already_applied_delta_is_refused_as_stale(lane: Lane) -> None:
    load_prices(lane, 2000)
    assert lane.run("run").code == 0
    change_source(lane)
    assert lane.run("dump").code == 0
    assert lane.run("diff").code == 0
    delta = lane.run("apply")
    assert delta.code == 0
    state = lane.state()
    assert state is not None

    again = lane.run("apply", "--delta", delta.report["deltaId"])
    assert again.code == 2  # stale: state is already past this delta
    assert "stale" in again.error_line


def test_a_hand_diff_of_a_snapshot_older_than_the_last_applied_names_the_option(
        lane: Lane) -> None:
    """Before, it said the source was behind and to point TABLESYNC_SOURCE_URI at a caught-up
    replica, with exit 75 (retry): the diff reads the stored snapshot, not the source, so
    every retry failed the same way."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    old = lane.run("dump")
    assert old.code == 0
    change_source(lane)
    assert lane.run("run").code == 0
    stored = sorted((lane.work / "store" / "deltas").iterdir())

    result = lane.run("diff", "--snapshot", old.report["snapshotId"])

    assert result.code == 2, result.stderr
    assert result.error_line.startswith("tablesync-job: --snapshot: snapshot "
                                        + old.report["snapshotId"])
    assert "TABLESYNC_SOURCE_URI" not in result.error_line
    assert "'tablesync-job dump'" in result.error_line
    assert sorted((lane.work / "store" / "deltas").iterdir()) == stored
    assert lane.run("diff").code == 0  # the newest one


@pytest.mark.parametrize("point", ["after-dump", "after-diff", "mid-apply", "after-commit"])
def test_a_crash_at_any_point_then_a_rerun_converges(lane: Lane, point: str) -> None:
    load_prices(lane, 5000)
    assert lane.run("run").code == 0
    change_source(lane)
    before = lane.table_text("destination")

    crashed = lane.run("run", env={"TABLESYNC_FAULT_INJECT": point})

    assert crashed.code == -9  # SIGKILL, as a killed pod
    crashed_delta = (lane.state() or {}).get("applying")
    if point != "after-commit":
        assert lane.table_text("destination") == before  # nothing half-written
    rerun = lane.run("run")
    assert rerun.code == 0, rerun.stderr
    dest = lane.table_text("destination")
    assert dest == lane.table_text("source")
    assert len(dest) == len(set(dest))
    if point == "mid-apply":  # rolled back, as the destination says: a normal run follows
        assert "an interrupted apply did not commit" in rerun.stderr
        assert rerun.report["reason"] == "Applied"
        assert rerun.report["apply"]["updated"] > 0
    if point == "after-commit":  # committed, as the destination says: the state advances
        assert "an interrupted apply had committed" in rerun.stderr
        assert rerun.report["reason"] == "NoChanges"  # nothing new since
        # the killed run's counts, stored before its commit: its drift is not lost
        assert rerun.report["apply"]["updated"] > 0
        # and its message says where they come from (LastRunSucceeded said NoChanges beside
        # a Drifted that counted them)
        drift = sum(rerun.report["apply"][op] for op in ("inserted", "updated", "deleted"))
        assert f"first it finished the apply of delta {crashed_delta} that a killed run " \
            f"had committed or begun: {drift} rows corrected" in rerun.report["message"]
    state = lane.state()
    assert state is not None and state["applying"] is None


@pytest.mark.parametrize("bootstrap", [False, True])
def test_a_row_inserted_by_an_interrupted_apply_and_then_deleted_is_deleted(
        lane: Lane, bootstrap: bool) -> None:
    """Killed after the commit, before state.json advanced: the next run must not diff
    against the older snapshot, where the row it must now delete never was."""
    load_prices(lane, 100)
    if not bootstrap:
        assert lane.run("run").code == 0
    lane.src("INSERT INTO prices VALUES (1000, 'sku-1000', 1, 'EUR', 'new', now())")
    crashed = lane.run("run", env={"TABLESYNC_FAULT_INJECT": "after-commit"})
    assert crashed.code == -9
    assert lane.dst("SELECT count(*) FROM prices WHERE id = 1000") == [(1,)]
    lane.src("DELETE FROM prices WHERE id = 1000")

    rerun = lane.run("run")

    assert rerun.code == 0, rerun.stderr
    assert rerun.report["apply"]["deleted"] == 1
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_counter_update_by_an_interrupted_apply_then_deleted_is_deleted(lane: Lane) -> None:
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, v bigint NOT NULL, title text)")
    lane.src("INSERT INTO prices SELECT g, 1, 'x' FROM generate_series(1, 100) g")
    lane.spec["spec"]["source"]["versionColumn"] = "v"
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET v = 2, title = 'y' WHERE id = 7")
    assert lane.run("run", env={"TABLESYNC_FAULT_INJECT": "after-commit"}).code == -9
    lane.src("DELETE FROM prices WHERE id = 7")

    rerun = lane.run("run")

    assert rerun.code == 0, rerun.stderr
    assert lane.dst("SELECT count(*) FROM prices WHERE id = 7") == [(0,)]


def interrupt_an_apply(lane: Lane, point: str, marker: str = "kept") -> dict[str, Any]:
    """Kill a run at ``point`` (mid-apply or after-commit) of an apply changing rows 1 to 10;
    return the state.json it left. ``marker``: ``kept``; ``no transaction`` (as an earlier
    build wrote it); ``another cluster`` (the destination is not where the apply ran)."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET price = price + 1, updated_at = now() WHERE id <= 10")
    assert lane.run("run", env={"TABLESYNC_FAULT_INJECT": point}).code == -9
    state = lane.state()
    assert state is not None and state["applying"] and state["applying_xid"]
    if marker == "no transaction":
        del state["applying_xid"], state["applying_system"]
    elif marker == "another cluster":
        state["applying_system"] = "1"
    lane.put_state(state)
    return state


@pytest.mark.parametrize("point, marker, code", [
    ("mid-apply", "kept", 0),  # rolled back: the delta is not needed
    ("after-commit", "kept", 0),  # committed: the state advances without it
    ("mid-apply", "no transaction", 2),  # unknown: only starting over is safe
    ("mid-apply", "another cluster", 2),
])
def test_an_interrupted_apply_whose_delta_is_gone(
        lane: Lane, point: str, marker: str, code: int) -> None:
    state = interrupt_an_apply(lane, point, marker)
    shutil.rmtree(lane.work / "store" / "deltas" / state["applying"])

    rerun = lane.run("run")

    assert rerun.code == code, rerun.stderr
    if code == 2:
        assert "state.json" in rerun.error_line and "interrupted" in rerun.error_line
        assert "committed is unknown" in rerun.error_line
    else:
        assert lane.table_text("destination") == lane.table_text("source")
        assert lane.state()["applying"] is None  # type: ignore[index]


def test_an_interrupted_apply_still_running_in_the_destination_is_waited_for(
        lane: Lane) -> None:
    """The marker names a transaction that has not ended (a killed run's session that
    Postgres has not yet noticed is gone): it may still commit, so the run backs off."""
    state = interrupt_an_apply(lane, "mid-apply")
    with psycopg.connect(lane.destination) as held:  # a transaction left open
        xid = held.execute("SELECT pg_current_xact_id()::text").fetchone()[0]  # type: ignore[index]
        lane.put_state({**state, "applying_xid": xid})

        running = lane.run("run")

        assert running.code == 75, running.stderr
        assert f"still running in the destination (transaction {xid})" in running.error_line
        held.rollback()
    ended = lane.run("run")
    assert ended.code == 0, ended.stderr
    assert "an interrupted apply did not commit" in ended.stderr
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_refused_delta_whose_apply_was_interrupted_is_not_applied_again(lane: Lane) -> None:
    """Killed mid-apply (rolled back), and the destination refuses the delta since (a CHECK
    it violates). Before, every run applied the stored delta again first and failed, also
    after the source was fixed, until someone edited state.json by hand."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET price = -1, updated_at = now() WHERE id = 5")
    assert lane.run("run", env={"TABLESYNC_FAULT_INJECT": "mid-apply"}).code == -9
    lane.dst("ALTER TABLE prices ADD CONSTRAINT positive CHECK (price > 0)")

    refused = lane.run("run")

    assert refused.code == 2, refused.stderr
    assert "positive" in refused.error_line
    assert lane.state()["applying"] is None  # type: ignore[index]
    lane.src("UPDATE prices SET price = 2, updated_at = now() WHERE id = 5")  # fixed
    fixed = lane.run("run")
    assert fixed.code == 0, fixed.stderr
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_second_concurrent_run_backs_off(lane: Lane) -> None:
    load_prices(lane, 100)
    with psycopg.connect(lane.destination, autocommit=True) as held:
        held.execute("SELECT pg_advisory_lock(hashtextextended('tablesync:public.prices', 0))")
        result = lane.run("run")
    assert result.code == 75
    assert "another run is applying to public.prices" in result.error_line
    assert lane.state() is None
    assert lane.run("run").code == 0  # the lock went with the session


@pytest.fixture
def far_node(lane: Lane) -> Iterator[tuple[str, str]]:
    """A network namespace joined to this host by a veth pair, as a job pod's node, and a
    Postgres of its own that listens there too (the session's listens on loopback only); the
    lane's source and destination are databases on it. Yields the namespace and the address
    the namespace reaches Postgres at."""
    tag = f"ts{os.getpid() % 100000}"
    net = f"10.{200 + os.getpid() % 50}.{os.getpid() // 50 % 250}"
    base = Path(tempfile.mkdtemp(prefix="tablesync-far-node-"))
    server: PostgresServer | None = None

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        ip("netns", "add", tag)
        ip("link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b")
        ip("link", "set", f"{tag}b", "netns", tag)
        ip("addr", "add", f"{net}.1/24", "dev", f"{tag}a")
        ip("link", "set", f"{tag}a", "up")
        ip("netns", "exec", tag, "ip", "addr", "add", f"{net}.2/24", "dev", f"{tag}b")
        ip("netns", "exec", tag, "ip", "link", "set", f"{tag}b", "up")
        server = start_postgres(base, settings={"listen_addresses": f"'127.0.0.1,{net}.1'"})
        with open(server.data_dir / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {net}.0/24 scram-sha-256\n")
        _exec(server.uri(), "SELECT pg_reload_conf()")
        lane.source = server.create_database("src")
        lane.destination = server.create_database("dst")
        lane.env.update({"TABLESYNC_SOURCE_URI": lane.source,
                         "TABLESYNC_DESTINATION_URI": lane.destination})
        yield tag, f"{net}.1"
    finally:
        subprocess.run(["ip", "netns", "del", tag], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", f"{tag}a"], capture_output=True, check=False)
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_the_lock_of_a_run_whose_node_was_lost_goes_within_minutes(
        lane: Lane, far_node: tuple[str, str]) -> None:
    """A pod whose node is lost (powered off, cut off) never closes its lock session, so only
    the server's TCP keepalives end it. The job set the client's alone: the server kept the
    lock for the kernel's 2 h idle and 11 min of probes, and every run meanwhile failed with
    "another run is applying" (exit 75), which the README says to wait out."""
    namespace, address = far_node
    load_prices(lane, 5000)
    # the pod on the far node, frozen with the run lock held, when its node goes
    far_env = {**lane.env,
               "TABLESYNC_SOURCE_URI": lane.source.replace("127.0.0.1", address),
               "TABLESYNC_DESTINATION_URI": lane.destination.replace("127.0.0.1", address)}
    far = subprocess.Popen(["ip", "netns", "exec", namespace, JOB, "run", "--spec",
                            str(lane.spec_path())], env=far_env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not _exec(lane.destination, "SELECT 1 FROM pg_locks WHERE "
                           "locktype = 'advisory' AND granted"):
            assert far.poll() is None
            time.sleep(0.02)
        far.send_signal(signal.SIGSTOP)
        subprocess.run(["ip", "link", "set", f"{namespace}a", "down"], check=True)
    finally:
        far.kill()  # (its goodbye cannot reach the server now)
        far.wait()
    assert lane.run("run").error_line.startswith(
        "tablesync-job: another run is applying to public.prices")

    deadline = time.monotonic() + 150
    while (result := lane.run("run")).code == 75 and time.monotonic() < deadline:
        time.sleep(10)

    assert result.code == 0, result.stderr
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_run_keeps_its_lock_when_the_destination_ends_idle_sessions(lane: Lane) -> None:
    """The run lock's session is idle for the whole run. A destination that ends idle
    sessions (idle_session_timeout, for the database or the sync's role) ended it a second
    into the run, which released the lock unnoticed: a second run went ahead beside the
    first, both applying and writing state.json."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    # from now on the dump reads the source slowly (about 5 s)
    lane.src("ALTER TABLE prices RENAME TO prices_table")
    lane.src("CREATE FUNCTION slowly(id bigint) RETURNS bigint VOLATILE LANGUAGE plpgsql AS "
             "$$ BEGIN PERFORM pg_sleep(0.05); RETURN id; END $$")
    lane.src("CREATE VIEW prices AS SELECT slowly(id) AS id, sku, price, currency, title, "
             "updated_at FROM prices_table")
    database = lane.dst("SELECT quote_ident(current_database())")[0][0]
    lane.dst(f"ALTER DATABASE {database} SET idle_session_timeout = '1s'")
    lane.src("UPDATE prices_table SET price = 7, updated_at = now() WHERE id <= 5")

    def locked() -> bool:
        return lane.dst("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND granted") != [(0,)]

    first = subprocess.Popen([JOB, "run", "--spec", str(lane.spec_path())], env=lane.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not locked() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2)  # twice the idle timeout, well within the dump
        assert first.poll() is None

        second = lane.run("run")

        assert second.code == 75, second.stderr
        assert "another run is applying to public.prices" in second.error_line
        assert first.poll() is None  # refused while the first was still dumping
    finally:
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_run_whose_lock_session_was_ended_applies_nothing(lane: Lane) -> None:
    """An administrator, or a reaper of idle connections, ended the lock's session mid-run:
    the lock was gone and another run could start, yet the run applied and wrote state.json
    as if it still held it."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    state = lane.state()
    before = lane.table_text("destination")
    lane.src("ALTER TABLE prices RENAME TO prices_table")
    lane.src("CREATE FUNCTION slowly(id bigint) RETURNS bigint VOLATILE LANGUAGE plpgsql AS "
             "$$ BEGIN PERFORM pg_sleep(0.03); RETURN id; END $$")
    lane.src("CREATE VIEW prices AS SELECT slowly(id) AS id, sku, price, currency, title, "
             "updated_at FROM prices_table")
    lane.src("UPDATE prices_table SET price = 7, updated_at = now() WHERE id <= 5")
    ended = ("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND "
             "granted AND database = (SELECT oid FROM pg_database WHERE datname = "
             "current_database())")

    first = subprocess.Popen([JOB, "run", "--spec", str(lane.spec_path())], env=lane.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while lane.dst(ended) == [] and time.monotonic() < deadline:
        time.sleep(0.05)
    _, stderr = first.communicate(timeout=120)

    assert first.returncode == 75, stderr
    assert "the run lock on public.prices was lost" in stderr
    assert lane.table_text("destination") == before
    assert lane.state() == state
    assert lane.run("run").code == 0  # the next run goes on
    assert lane.table_text("destination") == lane.table_text("source")


@pytest.mark.parametrize("bootstrap", [False, True])
def test_an_apply_the_destination_refused_is_not_resumed(lane: Lane, bootstrap: bool) -> None:
    """Rolled back for sure: the next run diffs afresh and applies the fixed source."""
    load_prices(lane, 100)
    lane.dst("ALTER TABLE prices ADD CONSTRAINT positive CHECK (price > 0)")
    if not bootstrap:
        assert lane.run("run").code == 0
    before = lane.state()
    lane.src("UPDATE prices SET price = -1, updated_at = now() WHERE id = 5")

    refused = lane.run("run")

    assert refused.code == 2, refused.stderr
    assert lane.state() == before  # no interrupted apply to resume
    lane.src("UPDATE prices SET price = 2, updated_at = now() WHERE id = 5")  # fixed
    fixed = lane.run("run")
    assert fixed.code == 0, fixed.stderr
    assert lane.table_text("destination") == lane.table_text("source")


@pytest.mark.parametrize("point", ["mid-apply", "after-commit"])
@pytest.mark.parametrize("how", ["--approve", "TABLESYNC_APPROVE_DELTA"])
def test_an_approved_run_killed_mid_apply_and_retried_reports_the_approved_delta(
        lane: Lane, how: str, point: str) -> None:
    """A retried pod of the approved run finishes the interrupted apply first. Before, the
    retry then failed with --approve (exit 2, "stale"), or reported NoChanges with the next
    delta's id under the variable, so the operator never saw the approval applied."""
    load_prices(lane, 300)
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id % 2 = 0")
    delta = lane.run("run").report["deltaId"]

    def approved_run(env: dict[str, str]) -> JobResult:
        if how == "--approve":
            return lane.run("run", "--approve", delta, env=env)
        return lane.run("run", env={**env, "TABLESYNC_APPROVE_DELTA": delta})

    crashed = approved_run({"TABLESYNC_FAULT_INJECT": point})
    assert crashed.code == -9

    retried = approved_run({})

    report = retried.report
    assert retried.code == 0, retried.stderr
    assert (report["reason"], report["deltaId"]) == ("Applied", delta)
    # rolled back, the retry applies it; committed, it reports the killed run's counts
    assert report["apply"]["deleted"] == 150 and "(approved)" in report["message"]
    assert lane.table_text("destination") == lane.table_text("source")
    assert lane.run("run").report["reason"] == "NoChanges"


@pytest.mark.parametrize("point, marker", [
    ("mid-apply", "kept"), ("after-commit", "kept"), ("mid-apply", "no transaction")])
def test_a_column_dropped_while_an_apply_was_interrupted(
        lane: Lane, point: str, marker: str) -> None:
    """The interrupted delta has the dropped column; the destination no longer does. Rolled
    back, a fresh diff applies the source as it is now; committed, the state advances past
    the delta without applying it again. Not known (a marker without its transaction), it
    is an input error naming the column and the way out. Before, every run failed with an
    internal error (exit 75, 'a retry may help'), and then with the input error for good."""
    interrupt_an_apply(lane, point, marker)
    lane.both("ALTER TABLE prices DROP COLUMN title")

    rerun = lane.run("run")

    assert "Traceback" not in rerun.stderr
    if marker == "no transaction":
        assert rerun.code == 2, rerun.stderr
        assert "title" in rerun.error_line and "to start over, delete state.json" in \
            rerun.error_line
        return
    assert rerun.code == 0, rerun.stderr
    if point == "after-commit":
        assert "an interrupted apply had committed" in rerun.stderr
    assert lane.table_text("destination") == lane.table_text("source")
    assert lane.state()["applying"] is None  # type: ignore[index]
    assert lane.run("run").report["reason"] == "NoChanges"


@pytest.mark.parametrize("meanwhile", ["nothing", "a column dropped"])
def test_a_delete_kept_by_an_apply_killed_after_its_commit_is_asked_again(
        lane: Lane, meanwhile: str) -> None:
    """The apply kept a delete (the destination's row was newer); the run died after the
    commit. Before, the kept deletes were stored after the commit, so the advance found none
    and the row stayed for good."""
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, v bigint NOT NULL, title text)")
    lane.src("INSERT INTO prices SELECT g, 5, 'x' FROM generate_series(1, 100) g")
    lane.spec["spec"]["source"].update(versionColumn="v", versionKind="monotonic")
    assert lane.run("run").code == 0
    lane.both("UPDATE prices SET v = 6, title = 'y' WHERE id = 1")  # delivered
    lane.src("DELETE FROM prices WHERE id = 1")  # the delete the event lane lost
    assert lane.run("run", env={"TABLESYNC_FAULT_INJECT": "after-commit"}).code == -9
    if meanwhile == "a column dropped":
        lane.both("ALTER TABLE prices DROP COLUMN title")

    rerun = lane.run("run")
    assert rerun.code == 0, rerun.stderr
    assert "an interrupted apply had committed" in rerun.stderr
    last = lane.run("run")  # as without the crash: the run after the one that kept it

    assert last.code == 0, last.stderr
    assert lane.dst("SELECT id FROM prices WHERE id = 1") == []
    assert lane.table_text("destination") == lane.table_text("source")


def pass_transaction(lane: Lane, xid: int, end: str) -> None:
    """Begin and end (``commit`` or ``rollback``) destination transactions until ``xid``
    has been one of them."""
    with psycopg.connect(lane.destination) as conn:
        while True:
            row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
            getattr(conn, end)()
            if row is not None and int(row[0]) >= xid:
                break
    status = "committed" if end == "commit" else "aborted"
    assert lane.dst("SELECT pg_xact_status(%s::xid8)", (str(xid),)) == [(status,)]


def the_marker_names_a_transaction_to_come(lane: Lane) -> int:
    """Killed mid-apply; then the marker's id is one the destination has not reached (a
    standby promoted, or a restore, from before the transaction began). Returns it."""
    assert lane.run("run", env={"TABLESYNC_FAULT_INJECT": "mid-apply"}).code == -9
    state = lane.state()
    assert state is not None and state["applying"]
    current = lane.dst("SELECT pg_current_xact_id()::text")[0][0]
    future = int(current) + 300
    lane.put_state({**state, "applying_xid": str(future)})
    return future


def test_a_marker_transaction_the_destination_has_not_reached_did_not_commit(
        lane: Lane) -> None:
    """Same cluster, id still to come: it never ran here. Before, it was taken as unknown and
    kept in the marker, so once the destination's ids passed it, another transaction's
    outcome was read as the apply's: rolled back, the state went back behind the destination
    (row 1000, inserted by then and deleted since, stayed for good)."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    lane.src("INSERT INTO prices VALUES (1000, 'sku-1000', 1, 'EUR', 'new', now())")
    future = the_marker_names_a_transaction_to_come(lane)

    rerun = lane.run("run", env={"TABLESYNC_FAULT_INJECT": "after-commit"})
    assert rerun.code == -9
    assert "an interrupted apply did not commit" in rerun.stderr
    assert lane.dst("SELECT count(*) FROM prices WHERE id = 1000") == [(1,)]
    pass_transaction(lane, future, "rollback")
    lane.src("DELETE FROM prices WHERE id = 1000")

    last = lane.run("run")

    assert last.code == 0, last.stderr
    assert lane.table_text("destination") == lane.table_text("source")


def test_an_unknown_marker_transaction_is_not_read_again(lane: Lane) -> None:
    """Another cluster's id (the marker names another system): unknown, so the delta is
    applied again, and the id is dropped from the marker. Before, it stayed, and once this
    destination's ids passed it, a committed transaction of its own advanced the state past
    a delta the destination had refused (row 7's delete was lost)."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id = 7")
    lane.src("UPDATE prices SET price = -1, updated_at = now() WHERE id = 5")
    future = the_marker_names_a_transaction_to_come(lane)
    lane.put_state({**lane.state(), "applying_system": "1"})  # type: ignore[dict-item]
    lane.dst("ALTER TABLE prices ADD CONSTRAINT positive CHECK (price > 0)")

    refused = lane.run("run")
    assert refused.code == 2, refused.stderr
    assert "whether it committed is unknown" in refused.error_line
    assert lane.state()["applying_xid"] is None  # type: ignore[index]
    pass_transaction(lane, future, "commit")
    lane.src("UPDATE prices SET price = 2, updated_at = now() WHERE id = 5")  # fixed
    lane.dst("ALTER TABLE prices DROP CONSTRAINT positive")  # and the destination let go

    fixed = lane.run("run")

    assert fixed.code == 0, fixed.stderr
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_retried_one_phase_apply_killed_after_its_commit_reports_the_delta_applied(
        lane: Lane) -> None:
    """Before, the retry settled the delta and then refused it as stale (exit 2)."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET price = price + 1, updated_at = now() WHERE id <= 10")
    assert lane.run("dump").code == 0
    delta = lane.run("diff").report["deltaId"]
    crashed = lane.run("apply", "--delta", delta, env={"TABLESYNC_FAULT_INJECT": "after-commit"})
    assert crashed.code == -9

    retried = lane.run("apply", "--delta", delta)

    assert retried.code == 0, retried.error_line
    assert (retried.report["reason"], retried.report["deltaId"]) == ("Applied", delta)
    assert lane.table_text("destination") == lane.table_text("source")


def test_the_run_locks_idle_session_keeps_its_connection_alive(lane: Lane) -> None:
    """The lock's session sits idle for the whole run: TCP keepalives keep a NAT's state for
    it, and a dead peer fails check() within about a minute instead of hanging it."""
    from tablesync_job.postgres import RunLock
    from tablesync_job.spec import TableName

    lock = RunLock(lane.destination, TableName("public", "prices"))
    lock.acquire()
    try:
        assert lock._conn is not None
        settings = lock._conn.info.get_parameters()
        assert {k: settings.get(k) for k in ("keepalives_idle", "keepalives_interval",
                                             "keepalives_count", "tcp_user_timeout")} == {
            "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3",
            "tcp_user_timeout": "60000"}
        lock.check()
    finally:
        lock.release()
