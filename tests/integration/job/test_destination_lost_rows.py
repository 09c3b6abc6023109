"""Rows the destination lost outside any delta are found by a sample of keys on each run.

A delta brings across what changed between T-1 and T. Before this, a destination emptied,
dropped and created again, or cut by a stray DELETE got the delta alone, with exit 0, and the
other rows never came back. Now each run looks up random keys of T that T-1 had too; above a
tenth missing, the delta takes every row of T (a refill), fewer missing are a warning.
"""

from __future__ import annotations

import json

from tests.integration.job.lane import PRICES_DDL, Lane, load_prices


def first_run_then_changes(lane: Lane) -> None:
    load_prices(lane, 2000)
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET price = price + 1, updated_at = now() WHERE id % 10 = 0")
    lane.src("DELETE FROM prices WHERE id % 97 = 0")
    lane.src("INSERT INTO prices SELECT g, 'new-' || g, 5, 'USD', 'new', now() "
             "FROM generate_series(3001, 3010) g")


def test_an_emptied_destination_gets_every_row_back_as_drift(lane: Lane) -> None:
    first_run_then_changes(lane)
    lane.dst("TRUNCATE prices")
    rows = lane.src("SELECT count(*) FROM prices")[0][0]

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["reason"] == "Refilled"
    assert result.report["bootstrap"] is False  # the operator counts these rows as drift
    assert result.report["apply"]["inserted"] == rows
    assert result.report["delta"]["refill"] > 0
    assert '"missingSampled": 1000' in result.stderr
    assert lane.table_text("destination") == lane.table_text("source")
    assert lane.run("run").report["reason"] == "NoChanges"


def test_a_re_created_destination_the_event_lane_already_writes_to(lane: Lane) -> None:
    first_run_then_changes(lane)
    lane.dst("DROP TABLE prices")
    lane.dst(PRICES_DDL)
    # the event lane goes on delivering into the new, empty table
    for row in lane.src("SELECT * FROM prices WHERE id IN (3001, 3002)"):
        lane.dst("INSERT INTO prices VALUES (%s, %s, %s, %s, %s, %s)", row)

    result = lane.run("run")

    assert result.code == 0 and result.report["reason"] == "Refilled", result.stderr
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_refill_still_deletes_what_the_source_deleted(lane: Lane) -> None:
    """Half the destination restored from nowhere: the refill brings the other half back,
    and the rows deleted at the source since T-1 still go (a load of T alone would keep
    them for good)."""
    first_run_then_changes(lane)
    lane.dst("DELETE FROM prices WHERE id % 2 = 1")

    result = lane.run("run")

    assert result.code == 0 and result.report["reason"] == "Refilled", result.stderr
    assert result.report["apply"]["deleted"] == lane.src(
        "SELECT count(*) FROM generate_series(1, 2000) g WHERE g % 97 = 0 AND g % 2 = 0")[0][0]
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_few_missing_rows_are_a_warning_not_a_refill(lane: Lane) -> None:
    first_run_then_changes(lane)
    lane.dst("DELETE FROM prices WHERE id BETWEEN 1001 AND 1020")

    result = lane.run("run")

    assert result.code == 0 and result.report["reason"] == "Applied", result.stderr
    assert "missingSampled" in result.stderr and "deleted outside the sync" in result.stderr
    assert "refill" not in result.report["delta"]


def test_the_delete_guard_still_holds_in_a_refill_and_approving_applies_it(
        lane: Lane) -> None:
    load_prices(lane, 2000)
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id % 10 = 0")
    lane.dst("TRUNCATE prices")

    tripped = lane.run("run")
    assert tripped.code == 3, tripped.stderr
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]

    approved = lane.run("run", "--approve", tripped.report["deltaId"])
    assert approved.code == 0 and approved.report["reason"] == "Refilled", approved.stderr
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_dry_run_says_so_and_changes_nothing(lane: Lane) -> None:
    first_run_then_changes(lane)
    lane.dst("TRUNCATE prices")
    state = lane.state()

    result = lane.run("run", "--dry-run")

    assert result.code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["result"] == "DryRun" and out["delta"]["refill"] > 0
    assert "refills" in out["message"]
    assert {row["_tablesync_op"] for row in out["sample"]} >= {"refill", "update", "delete"}
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]
    assert lane.state() == state
