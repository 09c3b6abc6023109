"""``run --dry-run``: the delta's counts and a sample; nothing applied, nothing stored."""

from __future__ import annotations

import json
import subprocess

from tests.integration.job.lane import JOB, Lane, load_prices


def test_a_dry_run_prints_the_delta_and_changes_nothing(lane: Lane) -> None:
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    state = lane.state()
    store = lane.work / "store"
    stored_before = sorted(p.relative_to(store) for p in store.rglob("*")
                           if "runs" not in p.parts)
    before = lane.table_text("destination")
    lane.src("UPDATE prices SET title = 'changed', updated_at = now() WHERE id <= 5")
    lane.src("DELETE FROM prices WHERE id = 100")

    proc = subprocess.run([JOB, "run", "--dry-run", "--spec", str(lane.spec_path())],
                          env=lane.env, capture_output=True, text=True, timeout=300,
                          check=False)

    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["result"] == "DryRun"
    assert out["delta"] == {"insert": 0, "update": 5, "delete": 1}
    assert {row["_tablesync_op"] for row in out["sample"]} == {"update", "delete"}
    assert any(row["title"] == "changed" for row in out["sample"])
    assert lane.table_text("destination") == before
    assert lane.state() == state
    assert sorted(p.relative_to(store) for p in store.rglob("*")
                  if "runs" not in p.parts) == stored_before


def test_a_dry_run_shows_a_guard_it_would_trip_without_an_approval_it_cannot_take(
        lane: Lane) -> None:
    """Before, it exited 3 with no sample, named --approve for a delta it had not stored
    (approving it then failed: no such delta), and wrote a run record."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    state = lane.state()
    runs = sorted((lane.work / "store" / "runs").iterdir())
    lane.src("DELETE FROM prices WHERE id <= 20")

    result = lane.run("run", "--dry-run")

    assert result.code == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["result"], out["delta"]["delete"]) == ("DryRun", 20)
    assert "A run would stop at DeleteGuardTripped (exit 3)" in out["message"]
    assert "--approve " + out["deltaId"] not in out["message"]
    assert {row["_tablesync_op"] for row in out["sample"]} == {"delete"}
    assert sorted((lane.work / "store" / "runs").iterdir()) == runs
    assert lane.state() == state
    assert lane.run("run").code == 3  # the run itself still stops


def test_a_failed_dry_run_stores_no_run_record(lane: Lane) -> None:
    """Before, a dry run that failed (here: a column the destination lacks) stored
    runs/<run-id>.json like a real run's failure; the README says a dry run stores none."""
    load_prices(lane, 10)
    assert lane.run("run").code == 0
    runs = sorted((lane.work / "store" / "runs").iterdir())
    lane.src("ALTER TABLE prices ADD COLUMN note text")

    result = lane.run("run", "--dry-run")

    assert result.code == 2, result.stderr
    assert "note" in result.error_line
    assert sorted((lane.work / "store" / "runs").iterdir()) == runs


def test_a_dry_run_with_an_approval_shows_the_delta_approved(lane: Lane) -> None:
    """Before, --approve was ignored by a dry run: it diffed anew, and its new delta (not the
    one approved) tripped the guard, as if the approval would not be taken; a stale or
    mistyped approval passed unnoticed."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id <= 20")
    tripped = lane.run("run")
    assert tripped.code == 3
    state, before = lane.state(), lane.table_text("destination")

    result = lane.run("run", "--dry-run", "--approve", tripped.report["deltaId"])

    assert result.code == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["result"], out["deltaId"], out["delta"]["delete"]) == (
        "DryRun", tripped.report["deltaId"], 20)
    assert "would stop" not in out["message"]
    assert {row["_tablesync_op"] for row in out["sample"]} == {"delete"}
    assert (lane.state(), lane.table_text("destination")) == (state, before)
    stale = "20200101T000000.000000Z-0000..20200101T000001.000000Z-0000"
    refused = lane.run("run", "--dry-run", "--approve", stale)
    assert refused.code == 2
    assert "--approve" in refused.error_line
