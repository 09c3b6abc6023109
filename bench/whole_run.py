"""Whole-run benchmark: ``tablesync-job run`` of a table with 1 % changes, through MinIO.

Called by ``__main__``. A source table of ``Sizes.run_rows`` rows and an empty destination
(both with the primary key), storage in a MinIO bucket. The job runs as the real command, as
a CronJob pod runs it:

* baseline: the first run, a bootstrap (the whole table dumped, stored, applied);
* phase: after 0.8 % of the rows were updated, 0.1 % deleted and 0.1 % inserted at the
  source, the next run (dump, upload, fetch of T-1, diff, upload, apply, state, retention).

Wall time is the process's, start to exit; peak RSS from ``wait4``. Afterwards the
destination must hold exactly the source's row count. Target (issue 2): <= 30 s for 10M rows
(scaled by rows at other sizes).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from . import data
from .env import BenchEnv
from .measure import command
from .results import Result, Target
from .settings import TARGETS, Sizes

SOURCE, DESTINATION = "bench_run_source", "bench_run_destination"
JOB = str(Path(sys.executable).parent / "tablesync-job")


def _report(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            report: dict[str, Any] = json.loads(line)
            return report
    return json.loads(stdout) if stdout.strip().startswith("{") else {}


def run(env: BenchEnv, sizes: Sizes) -> list[Result]:
    rows = sizes.run_rows
    changes = data.Changes(rows, update_every=125, delete_every=1000)
    source = env.database(SOURCE)
    destination = env.database(DESTINATION)
    data.create_prices(source, rows, unlogged=True)
    data.create_prices(destination, 0, unlogged=False)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    env.minio.create_bucket(bucket)

    work = env.dir("run")
    spec_file = work / "tablesync.yaml"
    spec_file.write_text(yaml.safe_dump(data.spec(f"s3://{bucket}/prices")))
    job_env = {k: v for k, v in os.environ.items() if not k.startswith(("TABLESYNC_", "AWS_"))}
    job_env.update(env.minio.env())
    job_env.update({"TABLESYNC_SOURCE_URI": source, "TABLESYNC_DESTINATION_URI": destination,
                    "TABLESYNC_WORK_DIR": str(work / "job"),
                    "TABLESYNC_TERMINATION_LOG": str(work / "termination-log")})
    argv = [JOB, "run", "--spec", str(spec_file)]

    baseline, out = command(argv, job_env, work, "bootstrap")
    report = _report(out)
    if report.get("reason") != "Bootstrapped":
        raise RuntimeError(f"bootstrap run: {report.get('reason')}: {report.get('message')}")
    data.change_prices(source, changes)
    load = os.getloadavg()[0]
    measured, out = command(argv, job_env, work, "run")
    report = _report(out)
    expected = {"insert": changes.inserts, "update": changes.updates, "delete": changes.deletes}
    if report.get("reason") != "Applied" or report.get("delta") != expected:
        raise RuntimeError(f"run: {report.get('reason')}: delta {report.get('delta')}, "
                           f"expected {expected}")
    counts = [data.fetch_one(uri, "SELECT count(*) FROM prices")[0]
              for uri in (source, destination)]
    if counts[0] != counts[1]:
        raise RuntimeError(f"after the run the destination has {counts[1]} rows, the source "
                           f"{counts[0]}")
    measured.info = {"phaseSeconds": report.get("phaseSeconds"), "apply": report.get("apply")}
    for name in (SOURCE, DESTINATION):
        env.drop_database(name)

    scaled = rows != TARGETS.run_rows
    limit = TARGETS.run_seconds_for(rows)
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in (report.get("phaseSeconds") or {}).items())
    return [Result(
        phase="whole run", rows=rows, measured=measured,
        baseline_name="bootstrap run (full load)", baseline=baseline,
        targets=[Target(f"time <= {limit:.3g} s" + (" (scaled)" if scaled else ""),
                        measured.seconds <= limit)],
        load_average=load,
        note=(f"{changes.updates:,} updates, {changes.inserts:,} inserts, "
              f"{changes.deletes:,} deletes via MinIO; phases: {phases}"))]
