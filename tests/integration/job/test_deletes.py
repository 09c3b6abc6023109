"""Deletes are version-safe and honour deletes: apply | soft | ignore (DESIGN.md section 4)."""

from __future__ import annotations

import psycopg
import pytest

from tests.integration.job.lane import Lane, load_prices


def test_a_source_delete_is_applied_and_an_event_lane_reinsert_survives(lane: Lane) -> None:
    load_prices(lane, 1000)
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id IN (1, 2, 3)")
    assert lane.run("dump").code == 0  # snapshot T without 1, 2, 3
    # After T, the event lane re-inserts id 3 (a fresher row than T knows).
    lane.dst("UPDATE prices SET title = 're-inserted', updated_at = clock_timestamp() "
             "WHERE id = 3")
    assert lane.run("diff").code == 0

    result = lane.run("apply")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["deleted"] == 2
    assert result.report["apply"]["staleSkipped"] == 1
    assert lane.dst("SELECT id, title FROM prices WHERE id <= 3") == [(3, "re-inserted")]


def test_counter_versions_compare_each_delete_with_its_old_version(lane: Lane) -> None:
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, v bigint NOT NULL, title text)")
    lane.src("INSERT INTO prices SELECT g, 1, 'x' FROM generate_series(1, 100) g")
    lane.spec["spec"]["source"]["versionColumn"] = "v"
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id IN (1, 2)")
    lane.dst("UPDATE prices SET v = 2, title = 'newer' WHERE id = 2")  # event lane, newer

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["deleted"] == 1
    assert lane.dst("SELECT id, title FROM prices WHERE id <= 2") == [(2, "newer")]


@pytest.mark.parametrize("kind", ["counter", "monotonic"])
def test_a_delete_lost_after_an_update_the_event_lane_delivered_is_applied_next_run(
        lane: Lane, kind: str) -> None:
    """The event lane delivered an update (v 5 -> 6), then lost the delete. The destination's
    6 is newer than T-1's 5, so the version-safe delete kept the row as stale-skipped, and no
    later snapshot had the key again: the row stayed for good. The next run asks again."""
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, v bigint NOT NULL, title text)")
    lane.src("INSERT INTO prices SELECT g, 5, 'x' FROM generate_series(1, 100) g")
    lane.spec["spec"]["source"].update(versionColumn="v", versionKind=kind)
    assert lane.run("run").code == 0
    lane.both("UPDATE prices SET v = 6, title = 'y' WHERE id IN (1, 2)")  # delivered
    lane.src("DELETE FROM prices WHERE id IN (1, 2)")  # lost by the event lane
    lane.dst("UPDATE prices SET v = 7 WHERE id = 2")  # and the event lane writes 2 again

    kept = lane.run("run")
    assert kept.code == 0, kept.stderr
    assert kept.report["apply"]["staleSkipped"] == 2
    assert (lane.state() or {}).get("pending_deletes") == 2

    lane.dst("UPDATE prices SET v = 8 WHERE id = 2")  # still busy: 2 is asked again later
    again = lane.run("run")

    assert again.code == 0, again.stderr
    assert again.report["delta"]["delete"] == 2
    assert again.report["apply"]["deleted"] == 1 and again.report["apply"]["staleSkipped"] == 1
    assert lane.dst("SELECT id FROM prices WHERE id <= 2") == [(2,)]
    assert (lane.state() or {}).get("pending_deletes") == 1
    last = lane.run("run")
    assert last.code == 0 and last.report["apply"]["deleted"] == 1
    assert lane.table_text("destination") == lane.table_text("source")
    assert (lane.state() or {}).get("pending_deletes") == 0
    assert lane.run("run").report["reason"] == "NoChanges"


def test_a_kept_delete_whose_row_the_source_has_again_is_not_asked_again(lane: Lane) -> None:
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, v bigint NOT NULL, title text)")
    lane.src("INSERT INTO prices SELECT g, 5, 'x' FROM generate_series(1, 100) g")
    lane.spec["spec"]["source"]["versionColumn"] = "v"
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id = 1")
    assert lane.run("dump").code == 0  # T without 1
    lane.src("INSERT INTO prices VALUES (1, 9, 'back')")  # re-inserted after T ...
    lane.dst("UPDATE prices SET v = 9, title = 'back' WHERE id = 1")  # ... and delivered
    assert lane.run("diff").code == 0
    kept = lane.run("apply")
    assert kept.code == 0 and kept.report["apply"]["staleSkipped"] == 1

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["delta"] == {"insert": 1, "update": 0, "delete": 0}
    assert lane.dst("SELECT v, title FROM prices WHERE id = 1") == [(9, "back")]
    assert (lane.state() or {}).get("pending_deletes", 0) == 0


def test_soft_deletes_stamp_the_column_and_a_reinsert_clears_it(lane: Lane) -> None:
    load_prices(lane, 100)
    lane.dst("ALTER TABLE prices ADD COLUMN deleted_at timestamptz")
    lane.spec["spec"]["destination"]["deletes"] = "soft"
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id = 5")

    deleted = lane.run("run")
    assert deleted.code == 0, deleted.stderr
    assert deleted.report["apply"]["deleted"] == 1
    stamped = lane.dst("SELECT deleted_at IS NOT NULL FROM prices WHERE id = 5")
    assert stamped == [(True,)]

    lane.src("INSERT INTO prices VALUES (5, 'sku-5', 1, 'EUR', 'back', now())")
    back = lane.run("run")
    assert back.code == 0
    assert lane.dst("SELECT deleted_at, title FROM prices WHERE id = 5") == [(None, "back")]


def test_soft_deletes_need_the_column(lane: Lane) -> None:
    load_prices(lane, 10)
    lane.spec["spec"]["destination"]["deletes"] = "soft"
    result = lane.run("run")
    assert result.code == 2
    assert "spec.destination.softDeleteColumn" in result.error_line


def test_ignore_leaves_deleted_rows_in_place(lane: Lane) -> None:
    load_prices(lane, 100)
    lane.spec["spec"]["destination"]["deletes"] = "ignore"
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id <= 50")  # half: no guard with deletes ignored

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["deleted"] == 0
    assert lane.dst("SELECT count(*) FROM prices") == [(100,)]


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo"])
def test_naive_timestamp_versions_are_read_in_the_source_time_zone(lane: Lane,
                                                                     zone: str) -> None:
    """A ``timestamp`` (no zone) version holds wall-clock time of the writers' TimeZone.

    The delete watermark must be T's capturedAt in that zone: read as UTC, a zone behind UTC
    (New York) would delete the event lane's re-insert, and one ahead (Tokyo) would keep
    rows the source deleted.
    """
    for uri in (lane.source, lane.destination):
        _exec_in(uri, f"ALTER DATABASE {{db}} SET TimeZone = '{zone}'")
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, title text, "
              "updated_at timestamp NOT NULL DEFAULT localtimestamp)")
    lane.src("INSERT INTO prices (id, title) SELECT g, 'x' FROM generate_series(1, 100) g")
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id IN (1, 2, 3)")
    assert lane.run("dump").code == 0  # snapshot T without 1, 2, 3
    # After T, the event lane re-inserts id 3, stamped with its (local) wall clock.
    lane.dst("UPDATE prices SET title = 're-inserted', updated_at = localtimestamp "
             "WHERE id = 3")
    assert lane.run("diff").code == 0

    result = lane.run("apply")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["deleted"] == 2, result.report
    assert result.report["apply"]["staleSkipped"] == 1
    assert lane.dst("SELECT id, title FROM prices WHERE id <= 3") == [(3, "re-inserted")]


def _exec_in(uri: str, sql: str) -> None:
    """Run ``sql`` with ``{db}`` replaced by the quoted name of ``uri``'s database."""
    with psycopg.connect(uri, autocommit=True) as conn:
        name = conn.execute("SELECT quote_ident(current_database())").fetchone()
        assert name is not None
        conn.execute(sql.replace("{db}", name[0]))


def test_a_soft_deleted_row_that_returns_with_the_same_version_is_unstamped(lane: Lane) -> None:
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, v int NOT NULL, title text)")
    lane.dst("ALTER TABLE prices ADD COLUMN deleted_at timestamptz")
    lane.spec["spec"]["source"]["versionColumn"] = "v"
    lane.spec["spec"]["destination"]["deletes"] = "soft"
    lane.src("INSERT INTO prices SELECT g, 1, 'a' FROM generate_series(1, 100) g")
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id = 3")
    assert lane.run("run").report["apply"]["deleted"] == 1
    lane.src("INSERT INTO prices VALUES (3, 1, 'a')")  # restored as it was

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["updated"] == 1
    assert lane.dst("SELECT deleted_at FROM prices WHERE id = 3") == [(None,)]


def _soft_counter_lane(lane: Lane) -> None:
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, v int NOT NULL, title text)")
    lane.dst("ALTER TABLE prices ADD COLUMN deleted_at timestamptz")
    lane.spec["spec"]["source"]["versionColumn"] = "v"
    lane.spec["spec"]["destination"]["deletes"] = "soft"
    lane.src("INSERT INTO prices SELECT g, 5, 'a' FROM generate_series(1, 100) g")
    assert lane.run("run").code == 0


def test_a_soft_deleted_row_that_returns_with_a_lower_version_is_unstamped(lane: Lane) -> None:
    """Re-inserted with a counter that started again: the guard kept the stamped row with its
    higher version as "stale-skipped", stamped deleted for good, while the source had it live
    (with ``deletes: apply`` the row is simply inserted anew)."""
    _soft_counter_lane(lane)
    lane.src("DELETE FROM prices WHERE id = 3")
    assert lane.run("run").report["apply"]["deleted"] == 1
    lane.src("INSERT INTO prices VALUES (3, 1, 'back')")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["updated"] == 1 and result.report["apply"]["staleSkipped"] == 0
    assert lane.dst("SELECT v, title, deleted_at FROM prices WHERE id = 3") == [(1, "back", None)]


def test_a_row_the_event_lane_stamped_deleted_after_the_snapshot_stays_stamped(
        lane: Lane) -> None:
    _soft_counter_lane(lane)
    lane.src("UPDATE prices SET title = 'b', v = 6 WHERE id = 4")
    assert lane.run("dump").code == 0  # T: id 4 live at version 6
    lane.src("DELETE FROM prices WHERE id = 4")  # after T; the event lane stamps it
    lane.dst("UPDATE prices SET title = 'b', v = 6, deleted_at = clock_timestamp() WHERE id = 4")
    assert lane.run("diff").code == 0

    result = lane.run("apply")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["alreadyCurrent"] == 1
    assert lane.dst("SELECT deleted_at IS NOT NULL FROM prices WHERE id = 4") == [(True,)]


@pytest.mark.parametrize("key_type, old, new", [
    ("numeric", "1", "1.00"),  # equal numbers, different text
    ("text COLLATE ci", "'ABC'", "'abc'"),  # equal under a case-insensitive collation
])
def test_a_key_postgres_finds_equal_to_a_deleted_one_is_kept(lane: Lane, key_type: str,
                                                             old: str, new: str) -> None:
    """DuckDB sees a delete of ``old`` and an insert of ``new``; Postgres sees one row."""
    lane.both("CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', "
              "deterministic = false)")
    lane.both(f"CREATE TABLE prices (k {key_type} PRIMARY KEY, updated_at timestamptz NOT NULL, "
              "x int)")
    lane.spec["spec"]["source"]["primaryKey"] = ["k"]
    lane.src(f"INSERT INTO prices SELECT CAST(g AS {key_type.split()[0]}), now(), g "
             "FROM generate_series(2, 100) g")
    lane.src(f"INSERT INTO prices VALUES ({old}, now(), 1)")
    assert lane.run("run").code == 0
    lane.src(f"UPDATE prices SET k = {new}, x = 999, updated_at = now() WHERE k = {old}")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert lane.table_text("destination", order="x") == lane.table_text("source", order="x")


@pytest.mark.parametrize("version_type, value", [("numeric", "g"),
                                                  ("pg_lsn", "('0/' || to_hex(g))::pg_lsn")])
def test_a_monotonic_version_that_travels_as_text_deletes_by_its_postgres_order(
        lane: Lane, version_type: str, value: str) -> None:
    """As text, '99' sorts after '100' and '0/F' after '0/10': no string maximum as watermark."""
    lane.both(f"CREATE TABLE prices (id int PRIMARY KEY, v {version_type} NOT NULL, x text)")
    lane.spec["spec"]["source"].update(versionColumn="v", versionKind="monotonic")
    lane.src(f"INSERT INTO prices SELECT g, {value}, 'a' FROM generate_series(1, 100) g")
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id = 100")  # the highest version

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["deleted"] == 1
    assert lane.dst("SELECT count(*) FROM prices WHERE id = 100") == [(0,)]


def test_a_timestamp_stamp_is_wall_clock_time_in_the_destinations_zone(lane: Lane) -> None:
    """A ``timestamp`` (without time zone) softDeleteColumn holds wall-clock time, which the
    event lane writes in the destination session's TimeZone (``localtimestamp``); T's
    capturedAt is compared and stamped as such too. Cast straight from its ISO text, its
    offset was dropped: UTC wall-clock time, 10 hours after the event lane's stamps in
    Honolulu, so an event-lane delete made after T counted as before it and T brought the
    row back to life."""
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, v int NOT NULL, title text)")
    lane.dst("ALTER TABLE prices ADD COLUMN deleted_at timestamp")
    lane.set_for_database("destination", "TimeZone", "Pacific/Honolulu")
    lane.spec["spec"]["source"]["versionColumn"] = "v"
    lane.spec["spec"]["destination"]["deletes"] = "soft"
    lane.src("INSERT INTO prices SELECT g, 5, 'a' FROM generate_series(1, 100) g")
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET title = 'b', v = 6 WHERE id = 4")
    assert lane.run("dump").code == 0  # T: id 4 live at version 6
    lane.src("DELETE FROM prices WHERE id IN (4, 7)")  # after T; the event lane stamps 4
    lane.dst("UPDATE prices SET title = 'b', v = 6, deleted_at = localtimestamp WHERE id = 4")
    assert lane.run("diff").code == 0
    assert lane.run("apply").code == 0
    assert lane.dst("SELECT deleted_at IS NOT NULL FROM prices WHERE id = 4") == [(True,)]

    result = lane.run("run")  # T+1 lacks 7: stamped with its capturedAt in Honolulu

    assert result.code == 0, result.stderr
    assert lane.dst("SELECT deleted_at = (%s::timestamptz AT TIME ZONE 'Pacific/Honolulu') "
                    "FROM prices WHERE id = 7", (result.report["capturedAt"],)) == [(True,)]
