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
