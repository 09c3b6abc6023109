"""A bootstrap and a refill delete the destination's rows whose key the snapshot lacks.

Deletes no delta carries: made at the source before the first snapshot and lost by the event
lane, or brought back by a restore from an older backup. Before, a bootstrap and a refill
only upserted, so such rows stayed for good (the numbers never agreed).
"""

from __future__ import annotations

import pytest

from tests.integration.job.lane import Lane, load_prices


def destination_with_extra_rows(lane: Lane, rows: int = 100, extra: int = 3) -> None:
    """The source's rows, and ``extra`` more in the destination only (ids from 1001),
    as old as the source's: the event lane lost their deletes."""
    load_prices(lane, rows)
    lane.dst(f"INSERT INTO prices SELECT g, 'sku-' || g, 1, 'EUR', 'gone', "
             f"now() - interval '2 days' FROM generate_series(1001, {1000 + extra}) g")


@pytest.mark.parametrize("deletes", ["apply", "soft"])
def test_a_bootstrap_deletes_the_rows_the_source_lacks(lane: Lane, deletes: str) -> None:
    destination_with_extra_rows(lane)
    # the event lane's insert after the snapshot: newer than its watermark, it stays
    lane.dst("INSERT INTO prices VALUES (2000, 'sku-2000', 1, 'EUR', 'new', "
             "now() + interval '1 hour')")
    if deletes == "soft":
        lane.dst("ALTER TABLE prices ADD COLUMN deleted_at timestamptz")
        lane.spec["spec"]["destination"].update(deletes="soft",
                                                softDeleteColumn="deleted_at")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["reason"] == "Bootstrapped"
    assert result.report["apply"]["deleted"] == 3
    assert "3 rows the source lacks deleted" in result.report["message"]
    live = "" if deletes == "apply" else " WHERE deleted_at IS NULL"
    ids = [r[0] for r in lane.dst(f"SELECT id FROM prices{live} ORDER BY id")]
    assert ids == [*range(1, 101), 2000]
    if deletes == "soft":  # stamped, not removed
        assert lane.dst("SELECT count(*) FROM prices WHERE id > 1000") == [(4,)]


def test_more_rows_than_the_guard_allows_trip_it_and_an_approval_deletes_them(
        lane: Lane) -> None:
    """A truncated first dump would otherwise empty the destination."""
    destination_with_extra_rows(lane, rows=100, extra=20)  # 20 of 100: 20% > 5%
    before = lane.table_text("destination")
    lane.src("UPDATE prices SET title = 'changed', updated_at = now() WHERE id = 1")

    tripped = lane.run("run")

    assert tripped.code == 3, tripped.stderr
    assert tripped.report["reason"] == "DeleteGuardTripped"
    assert "holds 20 rows whose key snapshot" in tripped.error_line
    assert "20.0% of 100 rows" in tripped.error_line
    assert lane.table_text("destination") == before  # nothing applied, upserts neither
    assert lane.state() is None
    delta = tripped.report["deltaId"]
    assert delta.startswith("bootstrap..") and f"--approve {delta}" in tripped.error_line

    approved = lane.run("run", env={"TABLESYNC_APPROVE_DELTA": delta})

    assert approved.code == 0, approved.stderr
    assert approved.report["apply"]["deleted"] == 20
    assert lane.table_text("destination") == lane.table_text("source")


@pytest.mark.parametrize("setting", ["deletes: ignore", "versionKind: counter"])
def test_rows_the_source_lacks_stay_where_they_cannot_be_told_apart(
        lane: Lane, setting: str) -> None:
    destination_with_extra_rows(lane)
    if setting == "deletes: ignore":
        lane.spec["spec"]["destination"]["deletes"] = "ignore"
    else:
        lane.both("ALTER TABLE prices ADD COLUMN v bigint NOT NULL DEFAULT 1")
        lane.spec["spec"]["source"].update(versionColumn="v", versionKind="counter")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert lane.dst("SELECT count(*) FROM prices WHERE id > 1000") == [(3,)]


def test_a_refill_deletes_the_rows_a_restored_backup_brought_back(lane: Lane) -> None:
    """The destination restored from a backup: it lacks rows (which makes the run refill)
    and holds rows deleted at the source since the backup."""
    load_prices(lane, 1000)
    assert lane.run("run").code == 0
    lane.both("DELETE FROM prices WHERE id > 990")  # the event lane delivered these deletes
    assert lane.run("run").code == 0
    lane.dst("DELETE FROM prices")  # the restore: what the backup held
    lane.dst("INSERT INTO prices SELECT g, 'sku-' || g, (g % 1000) + 0.99, 'EUR', "
             "'product ' || g, now() - interval '3 days' FROM generate_series(51, 1000) g")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["reason"] == "Refilled"
    assert result.report["apply"]["deleted"] == 10
    assert lane.table_text("destination") == lane.table_text("source")
