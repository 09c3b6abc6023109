"""Dump benchmark: ``tablesync_job.dump.dump`` against the server's own binary COPY.

Called by ``__main__``. For each size in ``Sizes.dump_rows`` the source table grows to that
size (UNLOGGED, primary key, vacuumed, analyzed, checkpointed), then:

* baseline: ``COPY prices TO '/dev/null' (FORMAT binary)`` run by the server itself (after
  an untimed warm-up that also fills the page cache);
* phase: ``dump()`` in a child process, from the same table into zstd Parquet parts.

Each is timed ``REPEAT`` times and the best time counts (the machine is shared).

Targets (issue 2): wall time <= 2 x baseline; peak RSS <= 512 MiB at every size.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from tablesync_job.dump import check_source, dump
from tablesync_job.spec import parse

from . import data
from .env import BenchEnv
from .measure import Measurement, Stopwatch, Timed, in_child
from .results import Result, Target, rss_target
from .settings import TARGETS, Sizes

DATABASE = "bench_dump"
REPEAT = 3


def dump_phase(uri: str, work_dir: str) -> Timed:
    """In the child: check the source, then time ``dump()`` into ``work_dir``."""
    spec = parse(data.spec("file:///unused"))
    source = check_source(spec, uri)
    cpu = time.process_time()
    with Stopwatch() as sw:
        snap, parts = dump(spec, uri, source, Path(work_dir), "bench")
    return Timed(sw.seconds, {"rows": snap.rows, "bytes": snap.bytes, "parts": len(parts),
                              "cpuSeconds": round(time.process_time() - cpu, 2)})


def copy_to_dev_null(uri: str, repeat: int = REPEAT) -> Measurement:
    """The server's own binary COPY of ``prices`` to /dev/null: best of ``repeat`` timings."""
    copy = "COPY prices TO '/dev/null' (FORMAT binary)"
    data.execute(uri, copy)  # warm-up: page cache and shared buffers as the dump will see them
    best = float("inf")
    for _ in range(repeat):
        with Stopwatch() as sw:
            data.execute(uri, copy)
        best = min(best, sw.seconds)
    return Measurement(seconds=best, peak_rss_bytes=None)


def run(env: BenchEnv, sizes: Sizes) -> list[Result]:
    uri = env.database(DATABASE)
    results = []
    have = 0
    for rows in sizes.dump_rows:
        if have == 0:
            data.create_prices(uri, rows, unlogged=True)
        else:
            data.extend_prices(uri, have, rows)
        have = rows
        load = os.getloadavg()[0]
        baseline = copy_to_dev_null(uri)
        runs = []
        for _ in range(REPEAT):
            work = env.dir("dump")
            runs.append(in_child(dump_phase, uri, str(work)))
            shutil.rmtree(work, ignore_errors=True)
        measured = min(runs, key=lambda m: m.seconds)
        measured.peak_rss_bytes = max(m.peak_rss_bytes or 0 for m in runs)
        if measured.info["rows"] != rows:
            raise RuntimeError(f"dump wrote {measured.info['rows']} rows, expected {rows}")
        ratio = measured.seconds / baseline.seconds
        limit = TARGETS.dump_time_ratio
        results.append(Result(
            phase="dump", rows=rows, measured=measured,
            baseline_name="server COPY to /dev/null", baseline=baseline,
            targets=[Target(f"time <= {limit:g}x base", ratio <= limit),
                     rss_target(measured, TARGETS.dump_rss_mib)],
            load_average=load,
            note=f"{measured.info['bytes'] / 2**20:,.0f} MiB Parquet in "
                 f"{measured.info['parts']} parts; best of {REPEAT} runs each, "
                 f"peak RSS the highest; dump runs: "
                 + ", ".join(f"{m.seconds:.2f} s" for m in runs)
                 + f" (the best used {measured.info['cpuSeconds']:.1f} s of CPU in the job's "
                   "process, beside the server's)"))
    env.drop_database(DATABASE)
    return results
