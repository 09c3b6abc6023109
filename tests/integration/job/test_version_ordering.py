"""A stale snapshot value never overwrites a fresher event (DESIGN.md section 1)."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import datetime

import psycopg
import pytest

from tests.integration.job.lane import PRICES_DDL, Lane, load_prices


@pytest.mark.parametrize("destination", ["plain", "partitioned"])
def test_event_lane_writes_during_apply_are_never_overwritten(lane: Lane,
                                                              destination: str) -> None:
    """Also into a partitioned destination, whose upsert counts differently (no xmax)."""
    rows = 20000
    load_prices(lane, rows)
    if destination == "partitioned":
        lane.dst("DROP TABLE prices")
        lane.dst(f"{PRICES_DDL} PARTITION BY HASH (id)")
        for i in range(4):
            lane.dst(f"CREATE TABLE prices_{i} PARTITION OF prices "
                     f"FOR VALUES WITH (MODULUS 4, REMAINDER {i})")
    assert lane.run("run").code == 0
    # Every source row changes; the snapshot taken next is stale for keys the event lane
    # keeps writing (with later versions) while the apply runs.
    lane.src("UPDATE prices SET price = price + 1, updated_at = now()")
    lane.run("dump")
    lane.run("diff")
    written: dict[int, datetime] = {}
    stop = threading.Event()
    rng = random.Random(7)

    def event_lane() -> None:
        with psycopg.connect(lane.destination, autocommit=True) as conn:
            while not stop.is_set():
                ids = rng.sample(range(1, rows + 1), 50)
                with conn.transaction():
                    for key in sorted(ids):
                        row = conn.execute(
                            "UPDATE prices SET price = -1, updated_at = clock_timestamp() "
                            "WHERE id = %s RETURNING updated_at", (key,)).fetchone()
                        if row:
                            written[key] = row[0]

    # Some fresher writes land before the apply starts, so staleSkipped cannot be zero.
    thread = threading.Thread(target=event_lane)
    thread.start()
    time.sleep(0.5)
    result = lane.run("apply")
    time.sleep(0.3)
    stop.set()
    thread.join()

    assert result.code == 0, result.stderr
    dest = dict(lane.dst("SELECT id, updated_at FROM prices"))
    older = [k for k, v in written.items() if dest[k] < v]
    assert older == []
    outcome = result.report["apply"]
    assert outcome["staleSkipped"] > 0
    stale_now = lane.dst("SELECT count(*) FROM prices WHERE price = -1")[0][0]
    assert outcome["staleSkipped"] <= stale_now
    assert outcome["updated"] + outcome["staleSkipped"] + outcome["alreadyCurrent"] == rows


def test_outcome_counts_split_drift_already_current_and_stale(lane: Lane) -> None:
    load_prices(lane, 1000)
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET price = price + 1, updated_at = now() WHERE id <= 100")
    # The event lane delivered 60 of the 100 changes exactly, and 10 with a newer version.
    src_rows = lane.src("SELECT id, price, updated_at FROM prices WHERE id <= 70")
    with psycopg.connect(lane.destination, autocommit=True) as conn:
        for key, price, version in src_rows:
            if key <= 60:
                conn.execute("UPDATE prices SET price = %s, updated_at = %s WHERE id = %s",
                             (price, version, key))
            else:
                conn.execute("UPDATE prices SET price = 0, updated_at = now() + interval '1 h' "
                             "WHERE id = %s", (key,))

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"] == {"inserted": 0, "updated": 30, "deleted": 0,
                                      "alreadyCurrent": 60, "staleSkipped": 10}
    assert lane.dst("SELECT count(*) FROM prices WHERE price = 0")[0][0] == 10
    assert "versionWentDown" not in result.stderr  # the event lane ahead is no warning


def test_a_version_that_went_down_at_the_source_is_named(lane: Lane) -> None:
    """Rows whose version is lower in T than in T-1 are skipped as stale, like the event
    lane's fresher rows, but nothing will ever bring them across unless the source raises
    their version: the run says which, apart from the stale rows the event lane explains."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET price = 7, updated_at = updated_at - interval '1 h' "
             "WHERE id IN (3, 5)")  # restored from an older copy
    lane.src("UPDATE prices SET price = 8, updated_at = now() WHERE id = 9")
    lane.dst("UPDATE prices SET price = 9, updated_at = now() + interval '1 h' WHERE id = 9")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["staleSkipped"] == 3
    warnings = [json.loads(line) for line in result.stderr.splitlines()
                if line.startswith("{") and "versionWentDown" in line]
    assert [w["versionWentDown"] for w in warnings] == [2], result.stderr
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["msg"].startswith(
        "2 row(s) of public.prices kept their content: their updated_at at the source went down "
        "since the last applied snapshot (key (id) updated_at before -> now: (3) ")
    assert "; (5) " in warnings[0]["msg"]
    assert lane.dst("SELECT count(*) FROM prices WHERE price = 7") == [(0,)]


def test_an_apply_waiting_on_the_event_lane_still_logs_every_few_seconds(lane: Lane) -> None:
    """Past the stage the apply's statements report no rows until they end: an upsert of a
    large delta, or one waiting on a row the event lane holds locked, left the log silent
    for as long as it took, and a stuck run looked like a dead one."""
    load_prices(lane, 10)
    lane.dst("INSERT INTO prices (id, sku, updated_at) VALUES (5, 'old', '2000-01-01')")
    held = psycopg.connect(lane.destination)
    held.execute("SELECT 1 FROM prices WHERE id = 5 FOR UPDATE")  # the event lane's write
    timer = threading.Timer(8, held.commit)
    timer.start()
    try:
        result = lane.run("run")
    finally:
        timer.join()
        held.close()

    assert result.code == 0, result.error_line
    beats = [json.loads(line) for line in result.stderr.splitlines()
             if line.startswith("{") and '"step"' in line]
    assert [b["step"] for b in beats if b.get("phase") == "apply"], result.stderr


def test_a_lock_timeout_met_while_the_event_lane_holds_a_row_is_retried(lane: Lane) -> None:
    """A destination whose lock_timeout ran out while the event lane held a row: exit 2 (fix
    the input), though nothing was wrong with it and the next run applies."""
    load_prices(lane, 10)
    lane.dst("INSERT INTO prices (id, sku, updated_at) VALUES (5, 'old', '2000-01-01')")
    lane.set_for_database("destination", "lock_timeout", "300ms")
    with psycopg.connect(lane.destination) as held:
        held.execute("SELECT 1 FROM prices WHERE id = 5 FOR UPDATE")  # the event lane's write
        timed_out = lane.run("run")

    assert timed_out.code == 75, timed_out.error_line
    assert "lock_timeout" in timed_out.error_line
    assert lane.run("run").code == 0
