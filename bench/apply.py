"""Apply benchmark: ``tablesync_job.apply.apply`` against 1000-row ``executemany`` upserts.

Called by ``__main__``. One destination table of ``Sizes.apply_rows`` rows (WAL-logged,
primary key, vacuumed, analyzed) is copied file by file into two identical databases. The
delta (``Sizes.apply_delta_rows`` rows: about 91 % updates, 4.5 % inserts, 4.5 % deletes) is a
fat-delta Parquet file as ``diff`` writes it. Then, each in a child process:

* phase: ``apply()`` into the first database (staging COPY, set-based upsert, deletes);
* baseline: psycopg ``executemany`` of the same version-guarded upsert, then of the
  version-guarded delete, in 1000-row batches, one transaction, into the second.

Both destinations must end up equal. Target (issue 2): apply >= 3 x faster than the baseline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq

from tablesync_job.apply import apply, check_destination
from tablesync_job.diff import OLD_VERSION, OP
from tablesync_job.postgres import connect, describe_table
from tablesync_job.snapshots import Delta
from tablesync_job.spec import parse

from . import data
from .env import BenchEnv
from .measure import Stopwatch, Timed, in_child
from .results import Result, Target
from .settings import TARGETS, Sizes

TEMPLATE, ENGINE, BASELINE = "bench_apply_template", "bench_apply_engine", "bench_apply_baseline"
COLUMNS = ["id", "sku", "price", "currency", "title", "updated_at", "version"]

UPSERT = (f"INSERT INTO prices ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
          "ON CONFLICT (id) DO UPDATE SET "
          + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "id")
          + " WHERE prices.version IS NULL OR prices.version < EXCLUDED.version")
DELETE = "DELETE FROM prices WHERE id = %s AND (version IS NULL OR version <= %s)"


def delta_changes(rows: int, delta_rows: int) -> data.Changes:
    """A change round of about ``delta_rows`` rows: 91 % updates, 4.5 % inserts and deletes."""
    update_every = max(round(rows / (0.9 * delta_rows)), 51)
    return data.Changes(rows, update_every=update_every, delete_every=20 * update_every)


def apply_phase(uri: str, delta: Delta, parts: list[Path]) -> Timed:
    """In the child: check the destination, then time ``apply()``."""
    spec = parse(data.spec("file:///unused"))
    with connect(uri, "destination") as conn:  # source and destination share the schema
        info = describe_table(conn, spec.destination.table, "destination", "bench")
    dest = check_destination(spec, uri, [(c.name, c.pg_type) for c in info.columns])
    with Stopwatch() as sw:
        result = apply(spec, uri, dest, delta, parts)
    return Timed(sw.seconds, result.as_report())


def executemany_phase(uri: str, parts: list[Path], batch_rows: int) -> Timed:
    """In the child: the delta's rows as Python tuples (untimed), then timed batches."""
    table = pq.read_table(parts)
    upserts: list[tuple[Any, ...]] = []
    deletes: list[tuple[Any, ...]] = []
    for row in table.to_pylist():
        if row[OP] == "delete":
            deletes.append((row["id"], row[OLD_VERSION]))
        else:
            upserts.append(tuple(row[c] for c in COLUMNS))
    with psycopg.connect(uri) as conn, Stopwatch() as sw:
        with conn.cursor() as cur:
            for start in range(0, len(upserts), batch_rows):
                cur.executemany(UPSERT, upserts[start:start + batch_rows])
            for start in range(0, len(deletes), batch_rows):
                cur.executemany(DELETE, deletes[start:start + batch_rows])
        conn.commit()
    return Timed(sw.seconds, {"upserts": len(upserts), "deletes": len(deletes)})


def _fingerprint(uri: str) -> tuple[Any, ...]:
    return data.fetch_one(uri, "SELECT count(*), sum(version), sum(price), "
                               "sum(hashtext(sku || title)) FROM prices")


def run(env: BenchEnv, sizes: Sizes) -> list[Result]:
    rows = sizes.apply_rows
    changes = delta_changes(rows, sizes.apply_delta_rows)
    template = env.database(TEMPLATE)
    data.create_prices(template, rows, unlogged=False)
    engine_uri = env.copy_database(TEMPLATE, ENGINE)
    baseline_uri = env.copy_database(TEMPLATE, BASELINE)
    env.drop_database(TEMPLATE)
    for uri in (engine_uri, baseline_uri):
        data.settle(uri)

    work = env.dir("apply")
    delta_file = work / "part-00000.parquet"
    data.write_parquet(data.delta_query(changes, OP, OLD_VERSION), delta_file)
    delta_rows = changes.updates + changes.inserts + changes.deletes
    delta = Delta(from_id="t-1", to_id="t", inserts=changes.inserts, updates=changes.updates,
                  deletes=changes.deletes, from_rows=rows, to_rows=changes.rows_after,
                  version_kind="counter", watermark=None,
                  captured_at="2026-06-01T00:00:00+00:00", parts=[delta_file.name])

    load = os.getloadavg()[0]
    data.execute(engine_uri, "CHECKPOINT")  # each run starts with clean shared buffers
    measured = in_child(apply_phase, engine_uri, delta, [delta_file])
    data.execute(baseline_uri, "CHECKPOINT")
    baseline = in_child(executemany_phase, baseline_uri, [delta_file], TARGETS.apply_batch_rows)
    expected = {"inserted": changes.inserts, "updated": changes.updates,
                "deleted": changes.deletes}
    got = {k: measured.info.get(k) for k in expected}
    if got != expected:
        raise RuntimeError(f"apply reported {got}, expected {expected}")
    if _fingerprint(engine_uri) != _fingerprint(baseline_uri):
        raise RuntimeError("apply and the executemany baseline left different destinations")
    for name in (ENGINE, BASELINE):
        env.drop_database(name)

    speedup = baseline.seconds / measured.seconds if measured.seconds else 0.0
    need = TARGETS.apply_speedup
    return [Result(
        phase="apply", rows=delta_rows, measured=measured,
        baseline_name=f"executemany, {TARGETS.apply_batch_rows}-row batches",
        baseline=baseline,
        targets=[Target(f"speed >= {need:g}x base (ratio <= {1 / need:.2f}x)",
                        speedup >= need)],
        load_average=load,
        note=(f"{speedup:.1f}x faster; delta of {changes.updates:,} updates, "
              f"{changes.inserts:,} inserts, {changes.deletes:,} deletes into a "
              f"{rows:,}-row destination"))]
