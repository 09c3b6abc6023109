"""The dump from a read replica: a real hot standby streaming from a primary (issue 2: "Postgres
source, a read replica in production"; capturedAt "on a standby pg_last_xact_replay_timestamp()").

One primary and its standby for the module: the primary runs with autovacuum off, so that no
background commit moves the standby's last replayed commit while a test looks at it; the
standby cancels a conflicting read at once (``max_standby_streaming_delay = 0``), as a busy
replica does after its delay. The lane's source is the standby, its destination a database on
the primary. Covered: capturedAt from the last replayed commit (or, after a restart with none,
the checkpoint restarted from), a read cancelled by a recovery conflict, a source behind
the last applied snapshot, and a caught-up standby of an idle primary, which is not behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from tests.integration.job.lane import JOB, Lane, _exec, load_prices
from tests.support.services import PostgresServer, start_postgres, start_standby


@pytest.fixture(scope="module")
def replica_pair() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    # Not under pytest's basetemp: every pytest session that starts sets its root back to
    # mode 0700, which would cut the 'postgres' user off from pg_basebackup's target midway.
    base = Path(tempfile.mkdtemp(prefix="tablesync-replica-"))
    try:
        primary = start_postgres(base / "primary", settings={"autovacuum": "off"})
        try:
            standby = start_standby(primary, base / "standby",
                                    settings={"max_standby_streaming_delay": "0"})
        except BaseException:
            primary.stop()
            raise
        yield primary, standby
        standby.stop()
        primary.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def replica_lane(replica_pair: tuple[PostgresServer, PostgresServer],
                 destination_server: PostgresServer, tmp_path: Path) -> Lane:
    """A lane whose source is read on the standby (written on the primary: ``Lane.source``)
    and whose destination is a database on ``destination_server``."""
    primary, standby = replica_pair
    tag = uuid.uuid4().hex[:8]
    primary.create_database(f"src_{tag}")
    lane = Lane.at(primary.uri(f"src_{tag}"), destination_server.create_database(f"dst_{tag}"),
                   tmp_path, read_source=standby.uri(f"src_{tag}"))
    caught_up(primary, standby)
    return lane


@pytest.fixture
def standby_lane(replica_pair: tuple[PostgresServer, PostgresServer],
                 tmp_path: Path) -> Lane:
    """The destination on the primary."""
    return replica_lane(replica_pair, replica_pair[0], tmp_path)


@pytest.fixture
def idle_primary_lane(replica_pair: tuple[PostgresServer, PostgresServer],
                      postgres: PostgresServer, tmp_path: Path) -> Lane:
    """The destination on another server: the runs' applies write nothing to the primary,
    which stays idle between the test's own writes."""
    return replica_lane(replica_pair, postgres, tmp_path)


def restart(server: PostgresServer) -> None:
    subprocess.run([*(["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []),
                    str(server.bindir / "pg_ctl"), "-D", str(server.data_dir), "-w",
                    "-m", "fast", "restart"], check=True, stdout=subprocess.DEVNULL)


def caught_up(primary: PostgresServer, standby: PostgresServer) -> None:
    """Wait until the standby has replayed everything the primary has committed so far.

    The test servers run with ``synchronous_commit=off``: a commit returns before its WAL is
    written, so ``pg_current_wal_lsn()`` may stand before it (the standby then still showed
    a deleted row after "catching up"). The insert position covers every record; it is
    reached once the WAL writer has written them. Where the last record ends at a page's
    end, the insert position stands past the next page's header, which replay only passes
    with the next record: that page's start is enough. Writes nothing itself (tests of an
    idle primary count the commits the standby replays).
    """
    target = _exec(primary.uri(), "SELECT pg_current_wal_insert_lsn()::text")[0][0]
    deadline = time.monotonic() + 60
    while True:
        behind = _exec(standby.uri(), "SELECT pg_last_wal_replay_lsn() < %(t)s::pg_lsn AND "
                       "NOT (%(t)s::pg_lsn - '0/0'::pg_lsn) %% 8192 IN (24, 40) OR "
                       "pg_last_wal_replay_lsn() < %(t)s::pg_lsn - "
                       "(%(t)s::pg_lsn - '0/0'::pg_lsn) %% 8192", {"t": target})[0][0]
        if not behind:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the standby did not replay up to {target} within 60 s")
        time.sleep(0.05)


def replayed_commit(standby: PostgresServer) -> datetime:
    value = _exec(standby.uri(), "SELECT pg_last_xact_replay_timestamp()")[0][0]
    assert isinstance(value, datetime)
    return value


def test_a_run_from_a_standby_is_as_of_its_last_replayed_commit(
        standby_lane: Lane, replica_pair: tuple[PostgresServer, PostgresServer]) -> None:
    """The dump runs on the standby (REPEATABLE READ, READ ONLY is allowed there), records
    ``in_recovery`` and takes capturedAt from the last replayed commit, not from the standby's
    clock: the primary's last commit was more than a second before the run started."""
    primary, standby = replica_pair
    lane = standby_lane
    load_prices(lane, 500)
    caught_up(primary, standby)
    replayed = replayed_commit(standby)
    time.sleep(1.5)
    started = datetime.now().astimezone()

    first = lane.run()
    assert first.code == 0, first.stderr
    assert datetime.fromisoformat(first.report["capturedAt"]) == replayed
    assert (started - replayed).total_seconds() > 1
    manifest = lane.snapshot_manifest(first.report["snapshotId"])
    assert manifest["in_recovery"] is True
    assert lane.table_text("destination") == lane.table_text("source")

    lane.src("UPDATE prices SET price = price + 1, updated_at = now() WHERE id <= 10")
    lane.src("DELETE FROM prices WHERE id = 500")
    caught_up(primary, standby)
    replayed = replayed_commit(standby)

    second = lane.run()
    assert second.code == 0, second.stderr
    assert datetime.fromisoformat(second.report["capturedAt"]) == replayed
    assert second.report["apply"]["updated"] == 10
    assert second.report["apply"]["deleted"] == 1
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_read_cancelled_by_recovery_is_transient_and_says_which_settings_help(
        standby_lane: Lane, replica_pair: tuple[PostgresServer, PostgresServer]) -> None:
    """A standby cancels a read that blocks its replay (here a lock taken on the primary; on a
    busy primary more often VACUUM removing row versions the read still sees). The run exits
    75 with one line naming the standby's settings that prevent it, and nothing is stored."""
    primary, standby = replica_pair
    lane = standby_lane
    load_prices(lane, 3_000_000)
    caught_up(primary, standby)
    proc = subprocess.Popen([JOB, "dump", "--spec", str(lane.spec_path())], env=lane.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        reading = ("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                   "AND query LIKE 'COPY%prices%'")
        deadline = time.monotonic() + 60
        while _exec(lane.env["TABLESYNC_SOURCE_URI"], reading)[0][0] == 0:
            assert proc.poll() is None, "the dump ended before its read was seen"
            assert time.monotonic() < deadline, "the dump's read never started"
            time.sleep(0.01)
        with psycopg.connect(lane.source) as conn:  # the primary
            conn.execute("LOCK TABLE prices IN ACCESS EXCLUSIVE MODE")  # replayed as a lock
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 75, stderr
    line = [ln for ln in stderr.splitlines() if ln.startswith("tablesync-job:")][-1]
    assert "conflict with recovery" in line
    assert "hot_standby_feedback" in line and "max_standby_streaming_delay" in line
    assert "Traceback" not in stderr
    root = Path(lane.storage_url[len("file://"):])
    stored = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    assert not [p for p in stored if p.name == "manifest.json"], stored


def test_a_source_behind_the_last_applied_snapshot_is_refused_until_it_catches_up(
        standby_lane: Lane, replica_pair: tuple[PostgresServer, PostgresServer]) -> None:
    """Run 1 reads the primary; run 2 a standby whose replay is paused from before that: its
    snapshot would bring back a row deleted since (an insert in the delta). It is refused
    (75), nothing is stored or applied; once the standby has caught up, the next run goes on."""
    primary, standby = replica_pair
    lane = standby_lane
    load_prices(lane, 100)
    caught_up(primary, standby)
    _exec(standby.uri(), "SELECT pg_wal_replay_pause()")
    try:
        lane.src("DELETE FROM prices WHERE id = 100")  # the standby does not see this yet
        on_primary = lane.run(env={"TABLESYNC_SOURCE_URI": lane.source})
        assert on_primary.code == 0, on_primary.stderr
        assert lane.dst("SELECT count(*) FROM prices") == [(99,)]
        root = Path(lane.storage_url[len("file://"):])
        stored = sorted(p.name for p in (root / "snapshots").iterdir())
        state = json.loads((root / "state.json").read_text())

        behind = lane.run()

        assert behind.code == 75, behind.stderr
        assert behind.error_line.startswith("tablesync-job: the source (a standby) is behind: ")
        assert " holds its WAL up to " in behind.error_line
        assert f"of the last applied snapshot {on_primary.report['snapshotId']};" in (
            behind.error_line)
        assert lane.dst("SELECT count(*) FROM prices WHERE id = 100") == [(0,)]
        assert sorted(p.name for p in (root / "snapshots").iterdir()) == stored
        assert json.loads((root / "state.json").read_text()) == state
    finally:
        _exec(standby.uri(), "SELECT pg_wal_replay_resume()")
    lane.src("UPDATE prices SET price = price + 1, updated_at = now() WHERE id = 1")
    caught_up(primary, standby)

    later = lane.run()

    assert later.code == 0, later.stderr
    assert later.report["apply"]["updated"] == 1
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_standby_with_no_replayed_commit_since_its_restart_is_as_of_its_checkpoint(
        standby_lane: Lane, replica_pair: tuple[PostgresServer, PostgresServer]) -> None:
    """After a restart, until it replays a commit, a standby has no last replayed commit:
    capturedAt is then the checkpoint it restarted from (a lower bound), not its clock, so a
    standby stuck after a restart shows as lag (and as behind, see the test above)."""
    primary, standby = replica_pair
    lane = standby_lane
    load_prices(lane, 10)
    _exec(lane.source, "CHECKPOINT")
    caught_up(primary, standby)
    _exec(standby.uri(), "CHECKPOINT")  # a restartpoint at the primary's checkpoint
    restart(standby)
    assert _exec(standby.uri(), "SELECT pg_last_xact_replay_timestamp()") == [(None,)]
    checkpoint = _exec(standby.uri(), "SELECT (pg_control_checkpoint()).checkpoint_time")[0][0]
    time.sleep(1.5)

    result = lane.run()

    assert result.code == 0, result.stderr
    assert datetime.fromisoformat(result.report["capturedAt"]) == checkpoint
    assert lane.table_text("destination") == lane.table_text("source")


def test_without_execute_on_pg_control_functions_the_dump_still_runs(
        standby_lane: Lane, replica_pair: tuple[PostgresServer, PostgresServer]) -> None:
    """A hardened source may revoke pg_control_checkpoint() and pg_control_system(): the dump
    then falls back to now() for capturedAt, and to capturedAt alone for telling a source
    behind, each with a warning, instead of failing (privileges are checked before use)."""
    primary, standby = replica_pair
    lane = standby_lane
    load_prices(lane, 10)
    database = lane.source.rsplit("/", 1)[1]
    _exec(lane.source, "CREATE ROLE plain_reader LOGIN PASSWORD 'reader'; "
                       "GRANT SELECT ON prices TO plain_reader")
    # function privileges are per database: this test's source database only
    _exec(lane.source, "REVOKE EXECUTE ON FUNCTION pg_control_checkpoint() FROM PUBLIC; "
                       "REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
    try:
        _exec(lane.source, "CHECKPOINT")
        caught_up(primary, standby)
        _exec(standby.uri(), "CHECKPOINT")
        restart(standby)
        assert _exec(standby.uri(), "SELECT pg_last_xact_replay_timestamp()") == [(None,)]
        before = datetime.now().astimezone()

        result = lane.run(env={"TABLESYNC_SOURCE_URI": standby.uri(database, "plain_reader",
                                                                   "reader")})

        assert result.code == 0, result.stderr
        assert datetime.fromisoformat(result.report["capturedAt"]) >= before
        assert "pg_control_checkpoint() is not allowed" in result.stderr
        assert "pg_control_system() or the WAL position functions are not allowed" in (
            result.stderr)
        manifest = lane.snapshot_manifest(result.report["snapshotId"])
        assert manifest["lsn"] is None and manifest["system_identifier"] is None
    finally:
        _exec(lane.source, "DROP OWNED BY plain_reader; DROP ROLE plain_reader")


def test_a_caught_up_standby_of_an_idle_primary_is_not_behind(
        idle_primary_lane: Lane, replica_pair: tuple[PostgresServer, PostgresServer]) -> None:
    """Run 1 reads the primary (capturedAt: its now()); nothing commits on the primary since;
    run 2 reads its caught-up standby, whose capturedAt is the last commit, before run 1's.
    By capturedAt it would look behind until the next commit on the primary, however long the
    source stays idle; by WAL position it holds everything run 1 saw, and goes on."""
    primary, standby = replica_pair
    lane = idle_primary_lane
    load_prices(lane, 100)
    caught_up(primary, standby)
    time.sleep(1.1)
    on_primary = lane.run(env={"TABLESYNC_SOURCE_URI": lane.source})
    assert on_primary.code == 0, on_primary.stderr
    caught_up(primary, standby)

    from_standby = lane.run()

    assert from_standby.code == 0, from_standby.stderr
    assert (datetime.fromisoformat(from_standby.report["capturedAt"])
            < datetime.fromisoformat(on_primary.report["capturedAt"]))
    assert lane.table_text("destination") == lane.table_text("source")
    manifest = lane.snapshot_manifest(from_standby.report["snapshotId"])
    first = lane.snapshot_manifest(on_primary.report["snapshotId"])
    assert manifest["system_identifier"] == first["system_identifier"]
    assert manifest["lsn"] and first["lsn"]


def test_a_standby_restarted_with_no_commit_to_replay_is_not_behind(
        idle_primary_lane: Lane, replica_pair: tuple[PostgresServer, PostgresServer]) -> None:
    """Run 1 reads the primary (capturedAt: its now()); the standby restarts from a
    restartpoint after the last commit, so it replays none: its capturedAt is that checkpoint's
    time, before run 1's. It holds everything run 1 saw, and run 2 from it goes on."""
    primary, standby = replica_pair
    lane = idle_primary_lane
    load_prices(lane, 100)
    _exec(primary.uri(), "CHECKPOINT")
    caught_up(primary, standby)
    _exec(standby.uri(), "CHECKPOINT")  # the restartpoint: after the rows above
    time.sleep(1.1)
    on_primary = lane.run(env={"TABLESYNC_SOURCE_URI": lane.source})
    assert on_primary.code == 0, on_primary.stderr
    restart(standby)
    caught_up(primary, standby)
    assert _exec(standby.uri(), "SELECT pg_last_xact_replay_timestamp()") == [(None,)]

    from_standby = lane.run()

    assert from_standby.code == 0, from_standby.stderr
    assert (datetime.fromisoformat(from_standby.report["capturedAt"])
            < datetime.fromisoformat(on_primary.report["capturedAt"]))
    assert lane.table_text("destination") == lane.table_text("source")


def counter_versioned_and_applied(lane: Lane, primary: PostgresServer,
                                  standby: PostgresServer) -> None:
    """300 rows with a counter version column v, read from the standby caught up, applied."""
    load_prices(lane, 300)
    lane.both("ALTER TABLE prices ADD COLUMN v bigint NOT NULL DEFAULT 1")
    lane.spec["spec"]["source"].update(versionColumn="v", versionKind="counter")
    caught_up(primary, standby)
    assert lane.run().code == 0


def test_the_event_lanes_insert_a_paused_replica_lacks_for_runs_stays(
        idle_primary_lane: Lane, replica_pair: tuple[PostgresServer, PostgresServer]) -> None:
    """Versions that do not order across rows (a counter): a row the source and T lack
    counts when seen twice. The standby's replay is paused (a replica lagging, or delayed,
    by more than a cycle): the event lane's insert it lacks was seen twice, refilled and
    noted, and the run after deleted it from the destination, though the primary has it
    (review). It counts only once a snapshot's capturedAt is past the run that first saw
    it: a replica caught up to then has the event lane's inserts of before."""
    primary, standby = replica_pair
    lane = idle_primary_lane
    counter_versioned_and_applied(lane, primary, standby)
    _exec(standby.uri(), "SELECT pg_wal_replay_pause()")
    try:
        new = "(301, 'sku-301', 1, 'EUR', 'new', '2026-01-01+00', 1)"
        lane.src(f"INSERT INTO prices VALUES {new}")  # the primary
        lane.dst(f"INSERT INTO prices VALUES {new}")  # the event lane
        paused = [lane.run() for _ in range(3)]
    finally:
        _exec(standby.uri(), "SELECT pg_wal_replay_resume()")
    caught_up(primary, standby)
    after = lane.run()

    assert [r.code for r in paused] == [0, 0, 0], paused[-1].stderr[-3000:]
    assert [r.report["reason"] for r in paused] == ["NoChanges"] * 3
    assert lane.dst("SELECT count(*) FROM prices WHERE id = 301") == [(1,)]
    assert after.code == 0, after.stderr[-3000:]
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_row_the_source_lacks_counts_once_a_snapshot_is_past_the_run_that_first_saw_it(
        idle_primary_lane: Lane, replica_pair: tuple[PostgresServer, PostgresServer]) -> None:
    """Versions that do not order across rows (a counter): a row the destination alone holds
    counts once a snapshot's capturedAt is past the run that *first* saw it. A standby that
    lags more than a cycle (delayed, paused): every run's sample finds the row again, and the
    run stored the time of its own sample instead, which the next snapshot is never past:
    the row stayed in the destination for good (review)."""
    primary, standby = replica_pair
    lane = idle_primary_lane
    counter_versioned_and_applied(lane, primary, standby)
    lane.dst("INSERT INTO prices VALUES (301, 'sku-301', 1, 'EUR', 'phantom', "
             "'2026-01-01+00', 1)")  # in the destination alone
    _exec(standby.uri(), "SELECT pg_wal_replay_pause()")
    try:
        lagging = [lane.run()]  # first sees it
        lane.src("CREATE TABLE tick (t int)")  # a commit the standby replays later
        lagging.append(lane.run())  # as of before the first sighting: waits
    finally:
        _exec(standby.uri(), "SELECT pg_wal_replay_resume()")
    caught_up(primary, standby)
    counted = lane.run()  # as of the commit after the first sighting
    deleted = lane.run()

    assert [r.code for r in lagging] == [0, 0], lagging[-1].stderr[-3000:]
    assert [r.report["reason"] for r in lagging] == ["NoChanges"] * 2
    assert counted.code == 0, counted.stderr[-3000:]
    assert counted.report["reason"] == "Refilled"
    assert deleted.code == 0, deleted.stderr[-3000:]
    assert lane.table_text("destination") == lane.table_text("source")


def test_the_event_lanes_re_insert_a_paused_replica_lacks_for_runs_stays(
        idle_primary_lane: Lane, replica_pair: tuple[PostgresServer, PostgresServer]) -> None:
    """Timestamp versions: the source deletes row 7 and inserts it again; the standby has
    replayed the delete, not the insert (paused: lagging by more than a cycle); the event
    lane delivered both. The first run keeps the delete (the destination's row is newer than
    T); the next, from the same lagging standby, asked it again bound by the version kept
    alone, and deleted the row the primary has (review). That T was captured before the
    apply that kept the delete, and the row is newer than its watermark: it stays."""
    primary, standby = replica_pair
    lane = idle_primary_lane
    load_prices(lane, 100)
    caught_up(primary, standby)
    assert lane.run().code == 0
    lane.src("DELETE FROM prices WHERE id = 7")
    lane.dst("DELETE FROM prices WHERE id = 7")  # the event lane
    caught_up(primary, standby)
    assert _exec(lane.env["TABLESYNC_SOURCE_URI"], "SELECT count(*) FROM prices WHERE id = 7"
                 ) == [(0,)]
    _exec(standby.uri(), "SELECT pg_wal_replay_pause()")
    try:
        lane.src("INSERT INTO prices VALUES (7, 'sku-7', 1, 'EUR', 'back', now())")
        version = lane.src("SELECT updated_at FROM prices WHERE id = 7")[0][0]
        lane.dst("INSERT INTO prices VALUES (7, 'sku-7', 1, 'EUR', 'back', %s)", (version,))
        paused = [lane.run() for _ in range(2)]
        held = lane.dst("SELECT title FROM prices WHERE id = 7")
    finally:
        _exec(standby.uri(), "SELECT pg_wal_replay_resume()")
    caught_up(primary, standby)
    after = lane.run()

    assert [r.code for r in paused] == [0, 0], paused[-1].stderr[-3000:]
    assert [(r.report["apply"]["deleted"], r.report["apply"]["staleSkipped"]) for r in paused
            ] == [(0, 1), (0, 1)]
    assert held == [("back",)]
    assert after.code == 0, after.stderr[-3000:]
    assert lane.table_text("destination") == lane.table_text("source")


@pytest.fixture(scope="module")
def publisher() -> Iterator[PostgresServer]:
    """A server that publishes its tables to logical replication subscribers."""
    base = Path(tempfile.mkdtemp(prefix="tablesync-publisher-"))
    try:
        server = start_postgres(base / "publisher", settings={"wal_level": "logical"})
        yield server
        server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_logical_replication_subscribers_copy_is_refused_as_the_source(
        publisher: PostgresServer, postgres: PostgresServer, tmp_path: Path) -> None:
    """A logical replica (a subscriber, not a standby) is not in recovery, so capturedAt was
    its own now(), however far its subscription lags: the event lane's re-insert of row 7,
    which the subscriber had not applied yet, was older than that watermark and deleted
    from the destination, though the publisher has it. No time on the subscriber tells how
    far it lags, so such a source is refused (2), naming the subscription, and nothing is
    applied."""
    tag = uuid.uuid4().hex[:8]
    pub = publisher.create_database(f"pub_{tag}")
    sub = postgres.create_database(f"src_{tag}")
    lane = Lane.at(pub, postgres.create_database(f"dst_{tag}"), tmp_path, read_source=sub)
    load_prices(lane, 100)
    _exec(sub, "CREATE TABLE prices (id bigint PRIMARY KEY, sku text NOT NULL, "
               "price numeric(12,2), currency char(3), title text, "
               "updated_at timestamptz NOT NULL)")
    _exec(pub, "CREATE PUBLICATION tablesync_pub FOR TABLE prices")
    _exec(sub, f"CREATE SUBSCRIPTION sub_{tag} CONNECTION 'host={publisher.host} "
               f"port={publisher.port} dbname=pub_{tag} user={publisher.user} "
               f"password={publisher.password}' PUBLICATION tablesync_pub")
    try:
        def applied(sql: str) -> None:
            deadline = time.monotonic() + 60
            while not _exec(sub, sql)[0][0]:
                assert time.monotonic() < deadline, sql
                time.sleep(0.05)

        applied("SELECT count(*) = 100 FROM prices")
        first = lane.run(env={"TABLESYNC_SOURCE_URI": pub})  # the publisher itself
        assert first.code == 0, first.stderr
        lane.src("DELETE FROM prices WHERE id = 7")
        lane.dst("DELETE FROM prices WHERE id = 7")  # the event lane
        applied("SELECT count(*) = 0 FROM prices WHERE id = 7")
        _exec(sub, f"ALTER SUBSCRIPTION sub_{tag} DISABLE")  # the subscriber lags from here
        lane.src("INSERT INTO prices VALUES (7, 'sku-7', 1, 'EUR', 'back', now())")
        version = lane.src("SELECT updated_at FROM prices WHERE id = 7")[0][0]
        lane.dst("INSERT INTO prices VALUES (7, 'sku-7', 1, 'EUR', 'back', %s)", (version,))
        time.sleep(0.1)

        lagging = lane.run()

        assert lane.dst("SELECT title FROM prices WHERE id = 7") == [("back",)]
        assert lagging.code == 2, lagging.stderr[-3000:]
        assert lagging.error_line.startswith("tablesync-job: TABLESYNC_SOURCE_URI: ")
        assert f"subscription sub_{tag}" in lagging.error_line
        assert "the publisher" in lagging.error_line
    finally:
        _exec(sub, f"DROP SUBSCRIPTION sub_{tag}")



def test_capturedat_is_not_a_commit_the_standby_replayed_after_the_dumps_snapshot(
        idle_primary_lane: Lane, replica_pair: tuple[PostgresServer, PostgresServer]) -> None:
    """The dump's first statement fixed its snapshot, then read the last replayed commit: a
    commit replayed in between was capturedAt, though the snapshot lacks it. Here the event
    lane's re-insert of row 7 commits while the statement waits (for pg_auth_members, locked
    by the primary and so by the standby's replay, which it reads to check the role's EXECUTE
    on pg_is_in_recovery(), granted through a group): older than the watermark, the row was
    deleted from the destination though the source has it. A busy standby replays commits
    in that gap without any lock. capturedAt is read before the snapshot now."""
    primary, standby = replica_pair
    lane = idle_primary_lane
    load_prices(lane, 100)
    database = lane.source.rsplit("/", 1)[1]
    _exec(lane.source, "CREATE ROLE recovery_watchers; CREATE ROLE lock_reader LOGIN "
                       "PASSWORD 'reader' IN ROLE recovery_watchers; "
                       "GRANT SELECT ON prices TO lock_reader; "
                       "REVOKE EXECUTE ON FUNCTION pg_is_in_recovery() FROM PUBLIC; "
                       "GRANT EXECUTE ON FUNCTION pg_is_in_recovery() TO recovery_watchers")
    try:
        reader = {"TABLESYNC_SOURCE_URI": standby.uri(database, "lock_reader", "reader")}
        caught_up(primary, standby)
        assert lane.run(env=reader).code == 0
        lane.src("DELETE FROM prices WHERE id = 7")
        lane.dst("DELETE FROM prices WHERE id = 7")  # the event lane
        caught_up(primary, standby)
        with psycopg.connect(lane.source) as conn:  # the primary
            conn.execute("LOCK TABLE pg_auth_members IN ACCESS EXCLUSIVE MODE")
            deadline = time.monotonic() + 60
            while not _exec(standby.uri(), "SELECT count(*) FROM pg_locks WHERE relation = "
                            "'pg_auth_members'::regclass")[0][0]:
                assert time.monotonic() < deadline, "the standby never took the lock"
                time.sleep(0.05)
            proc = subprocess.Popen([JOB, "run", "--spec", str(lane.spec_path())],
                                    env={**lane.env, **reader}, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            try:
                waiting = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                           "'Lock' AND usename = 'lock_reader' AND query LIKE '%pg_last_xact%'")
                while not _exec(standby.uri(), waiting)[0][0]:
                    assert proc.poll() is None, proc.communicate()
                    assert time.monotonic() < deadline, "the dump never waited for the lock"
                    time.sleep(0.05)
                lane.src("INSERT INTO prices VALUES (7, 'sku-7', 1, 'EUR', 'back', now())")
                version = lane.src("SELECT updated_at FROM prices WHERE id = 7")[0]
                lane.dst("INSERT INTO prices VALUES (7, 'sku-7', 1, 'EUR', 'back', %s)", version)
                caught_up(primary, standby)  # replayed while the dump's statement waits
            except BaseException:
                proc.kill()
                raise
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-3000:]
        assert lane.dst("SELECT title FROM prices WHERE id = 7") == [("back",)]
        caught_up(primary, standby)
        assert lane.run(env=reader).code == 0
        assert lane.table_text("destination") == lane.table_text("source")
    finally:
        _exec(lane.source, "GRANT EXECUTE ON FUNCTION pg_is_in_recovery() TO PUBLIC; "
                           "DROP OWNED BY lock_reader, recovery_watchers; DROP ROLE lock_reader; "
                           "DROP ROLE recovery_watchers")


@pytest.mark.parametrize("deletes", ["apply", "ignore"])
def test_a_row_the_event_lane_deleted_is_not_lost_while_a_lagging_standby_has_it(
        idle_primary_lane: Lane, replica_pair: tuple[PostgresServer, PostgresServer],
        deletes: str) -> None:
    """The primary deletes row 5, the event lane deletes it from the destination; the
    standby has not replayed the delete (paused: lagging). T and T-1 both hold the row, so
    the probe found it missing from the destination, asked the standby, which still has it,
    and refilled it: the deleted row was back in the destination (for good under
    ``deletes: ignore``). The source is asked only once it has replayed past the sample."""
    primary, standby = replica_pair
    lane = idle_primary_lane
    lane.spec["spec"]["destination"]["deletes"] = deletes
    load_prices(lane, 100)
    caught_up(primary, standby)
    assert lane.run().code == 0
    _exec(standby.uri(), "SELECT pg_wal_replay_pause()")
    try:
        lane.src("DELETE FROM prices WHERE id = 5")
        lane.dst("DELETE FROM prices WHERE id = 5")  # the event lane
        lagging = lane.run()
        held = lane.dst("SELECT count(*) FROM prices WHERE id = 5")
    finally:
        _exec(standby.uri(), "SELECT pg_wal_replay_resume()")
    caught_up(primary, standby)
    after = lane.run()

    assert lagging.code == 0, lagging.stderr[-3000:]
    assert lagging.report["reason"] == "NoChanges"
    assert held == [(0,)]
    assert after.code == 0, after.stderr[-3000:]
    assert lane.table_text("destination") == lane.table_text("source")
