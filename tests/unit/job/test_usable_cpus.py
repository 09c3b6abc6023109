"""diff.usable_cpus: DuckDB's threads follow the CPU quota, not the node's CPU count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tablesync_job.diff import open_duckdb, usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("files", "expected"),
    [({"cpu.max": "100000 100000\n"}, 1),
     ({"cpu.max": "150000 100000\n"}, min(2, AFFINITY)),
     ({"cpu.max": "5000 100000\n"}, 1),
     ({"cpu.max": "max 100000\n"}, AFFINITY),
     ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
     ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, AFFINITY),
     ({}, AFFINITY)],
    ids=["v2-one", "v2-one-and-a-half", "v2-a-twentieth", "v2-none", "v1-one", "v1-none",
         "no-cgroup"])
def test_the_cpu_quota_caps_the_threads(tmp_path: Path, files: dict[str, str],
                                        expected: int) -> None:
    """A pod limited to one CPU on a node with many: DuckDB ran one thread per node CPU,
    throttled by the quota, each thread taking its share of memory_limit."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert usable_cpus(tmp_path) == expected


def test_duckdb_runs_that_many_threads(tmp_path: Path) -> None:
    con = open_duckdb(tmp_path, "100MB")
    try:
        assert con.execute("SELECT current_setting('threads')").fetchone() == (usable_cpus(),)
    finally:
        con.close()
