"""``python -m bench --quick`` runs every benchmark and prints a row for each phase.

Behaviour only: the figures depend on the machine, so no timing is asserted here.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_quick_bench_runs_every_phase_and_prints_its_row(tmp_path: Path) -> None:
    # a short work dir: Postgres's Unix socket path must stay under 108 bytes
    with tempfile.TemporaryDirectory(prefix="tsbench-") as work:
        proc = subprocess.run(
            [sys.executable, "-m", "bench", "--quick", "--work-dir", work,
             "--json", str(tmp_path / "results.json")],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    final = proc.stdout.split("== all results", 1)[1]
    for phase in ("dump", "diff", "apply", "whole run"):
        rows = [line for line in final.splitlines() if line.startswith(phase + " ")]
        assert rows, f"no {phase} row in:\n{final}"
        assert "PASS" in rows[0] or "MISS" in rows[0]
    # apply's note sets the target beside per-row round trips and the floor
    (note,) = [line for line in final.splitlines()
               if line.startswith("apply ") and "x faster" in line]
    assert "without pipelining takes" in note and "the floor" in note, note
    assert (tmp_path / "results.json").read_text().count('"phase"') == 4
