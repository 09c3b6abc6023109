"""Apply benchmark: ``tablesync_job.apply.apply`` against 1000-row ``executemany`` upserts.

Called by ``__main__``. One destination table of ``Sizes.apply_rows`` rows (WAL-logged,
primary key, vacuumed, analyzed) is copied file by file into identical databases, one for
each measurement. The delta (``Sizes.apply_delta_rows`` rows: about 91 % updates, 4.5 %
inserts, 4.5 % deletes) is a fat-delta Parquet file as ``diff`` writes it. Then, each in a
child process:

* phase: ``apply()`` into the first database (staging COPY, set-based upsert, deletes);
* baseline: psycopg ``executemany`` of the same version-guarded upsert, then of the
  version-guarded delete, in 1000-row batches, one transaction, into the second.

Both destinations must end up equal. Target (issue 2): apply >= 3 x faster than the baseline.

Beside them, for context, each on a copy of its own:

* the same statements, one prepared ``execute`` a row without pipelining (a round trip each,
  as psycopg 2's ``executemany`` does);
* the floor: the smallest write Postgres can make to the delta's updated rows, ``UPDATE
  prices SET version = version + 1`` joined to their keys in one statement. Every apply must
  at least rewrite those rows, so no apply can be faster than the floor; the note prints it
  next to the time the target asks for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.compute as pc
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
PER_ROW, FLOOR = "bench_apply_per_row", "bench_apply_floor"
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


def _rows(parts: list[Path]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The delta as parameter tuples: (upserts, deletes)."""
    upserts: list[tuple[Any, ...]] = []
    deletes: list[tuple[Any, ...]] = []
    for row in pq.read_table(parts).to_pylist():
        if row[OP] == "delete":
            deletes.append((row["id"], row[OLD_VERSION]))
        else:
            upserts.append(tuple(row[c] for c in COLUMNS))
    return upserts, deletes


def executemany_phase(uri: str, parts: list[Path], batch_rows: int) -> Timed:
    """In the child: the delta's rows as Python tuples (untimed), then timed batches.

    psycopg 3 pipelines each ``executemany`` batch (libpq pipeline mode).
    """
    upserts, deletes = _rows(parts)
    with psycopg.connect(uri) as conn, Stopwatch() as sw:
        with conn.cursor() as cur:
            for start in range(0, len(upserts), batch_rows):
                cur.executemany(UPSERT, upserts[start:start + batch_rows])
            for start in range(0, len(deletes), batch_rows):
                cur.executemany(DELETE, deletes[start:start + batch_rows])
        conn.commit()
    return Timed(sw.seconds, {"upserts": len(upserts), "deletes": len(deletes)})


def per_row_phase(uri: str, parts: list[Path]) -> Timed:
    """In the child: one prepared ``execute`` a row, a round trip each, one transaction."""
    upserts, deletes = _rows(parts)
    with psycopg.connect(uri) as conn, Stopwatch() as sw:
        with conn.cursor() as cur:
            for params in upserts:
                cur.execute(UPSERT, params, prepare=True)
            for params in deletes:
                cur.execute(DELETE, params, prepare=True)
        conn.commit()
    return Timed(sw.seconds, {"upserts": len(upserts), "deletes": len(deletes)})


def floor_seconds(uri: str, parts: list[Path]) -> tuple[int, float]:
    """(rows, seconds) of ``UPDATE ... SET version = version + 1`` of the delta's updated rows.

    Their keys are COPYed into a temporary table first (untimed), then a CHECKPOINT as for the
    others; planner settings as apply() sets them. The UPDATE is timed on the client around
    the one statement, then rolled back.
    """
    table = pq.read_table(parts, columns=[OP, "id"])
    keys = table.filter(pc.equal(table.column(OP), "update")).column("id").to_pylist()
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE floor_keys (id bigint PRIMARY KEY)")
        with conn.cursor().copy("COPY floor_keys (id) FROM STDIN") as copy:
            for key in keys:
                copy.write_row((key,))
        conn.execute("ANALYZE floor_keys")
        conn.execute("CHECKPOINT")
        conn.execute("SET jit = off")  # as apply() sets them: no JIT, index look-ups
        conn.execute("SET random_page_cost = 1.1")
        conn.execute("BEGIN")
        with Stopwatch() as sw:
            conn.execute("UPDATE prices d SET version = d.version + 1 FROM floor_keys k "
                         "WHERE d.id = k.id")
        conn.execute("ROLLBACK")
    return len(keys), sw.seconds


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
    per_row_uri = env.copy_database(TEMPLATE, PER_ROW)
    floor_uri = env.copy_database(TEMPLATE, FLOOR)
    env.drop_database(TEMPLATE)
    for uri in (engine_uri, baseline_uri, per_row_uri, floor_uri):
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
    data.execute(per_row_uri, "CHECKPOINT")
    per_row = in_child(per_row_phase, per_row_uri, [delta_file])
    if _fingerprint(per_row_uri) != _fingerprint(engine_uri):
        raise RuntimeError("apply and the per-row baseline left different destinations")
    floor_rows, floor = floor_seconds(floor_uri, [delta_file])
    for name in (ENGINE, BASELINE, PER_ROW, FLOOR):
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
              f"{rows:,}-row destination; one execute a row without pipelining takes "
              f"{per_row.seconds:.2f} s ({per_row.seconds / measured.seconds:.1f}x the apply); "
              f"{need:g}x needs <= {baseline.seconds / need:.2f} s, "
              f"and the floor, UPDATE ... SET version = version + 1 of the {floor_rows:,} "
              f"updated rows alone, takes {floor:.2f} s"))]
