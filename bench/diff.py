"""Diff benchmark: ``tablesync_job.diff.diff`` against a naive full-row FULL OUTER JOIN.

Called by ``__main__``. Snapshots T-1 and T (``Sizes.diff_rows`` rows each; T has 1 %
updates, 0.1 % inserts and 0.1 % deletes) are generated in DuckDB and written by the dump's
own :class:`~tablesync_job.dump.PartWriter`, so their Parquet layout is what a dump writes,
without dumping 40M rows twice. Then, each in a child process at the same ``memory_limit``
(1GB) and thread count:

* phase: ``diff()``, which writes the fat delta;
* baseline: one FULL OUTER JOIN of the full rows of T and T-1 on the key, filtered to the
  changed keys, written as the same fat delta.

Targets (issue 2): <= 8 s for 40M-row snapshots (scaled by rows at other sizes); peak RSS
<= 1.5 GiB.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa

from tablesync_job.diff import OLD_VERSION, OP, diff, open_duckdb, parquet_scan
from tablesync_job.dump import PartWriter
from tablesync_job.snapshots import Column, Snapshot
from tablesync_job.spec import parse

from . import data
from .env import BenchEnv
from .measure import Stopwatch, Timed, in_child
from .results import Result, Target, rss_target
from .settings import TARGETS, Sizes

# What a dump of the product-price table writes (dump._target_field's types).
SCHEMA = pa.schema([
    pa.field("id", pa.int64()), pa.field("sku", pa.string()),
    pa.field("price", pa.decimal128(12, 2)), pa.field("currency", pa.string()),
    pa.field("title", pa.string()), pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    pa.field("version", pa.int64()),
])
PG_TYPES = {"id": "bigint", "sku": "text", "price": "numeric(12,2)", "currency": "character(3)",
            "title": "text", "updated_at": "timestamp with time zone", "version": "bigint"}
# Rows per Arrow batch handed to the writer: about what the ADBC driver yields per 16 MiB.
BATCH_ROWS = 150_000


def write_snapshot(query: str, out_dir: Path, snapshot_id: str, rows: int) -> tuple[Snapshot,
                                                                                    list[Path]]:
    """Run a DuckDB query into snapshot parts the way ``dump`` writes them; the manifest."""
    import duckdb

    out_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"threads": os.cpu_count() or 1})
    try:
        reader = con.sql(query).to_arrow_reader(BATCH_ROWS)
        writer = PartWriter(out_dir, SCHEMA, ["id", "version"])
        written = 0
        for batch in reader:
            writer.write(batch.cast(SCHEMA))
            written += batch.num_rows
        parts = writer.close()
    finally:
        con.close()
    if written != rows:
        raise RuntimeError(f"snapshot {snapshot_id}: generated {written} rows, expected {rows}")
    snap = Snapshot(
        id=snapshot_id, table="public.prices", captured_at="2026-01-01T00:00:00+00:00",
        in_recovery=False, rows=rows, bytes=sum(p.stat().st_size for p in parts),
        columns=[Column(name=f.name, pg_type=PG_TYPES[f.name], arrow_type=str(f.type))
                 for f in SCHEMA],
        primary_key=["id"], version_column="version", version_kind="counter",
        min_version=None, max_version=None, watermark=None,
        parts=[p.name for p in parts])
    return snap, parts


def diff_phase(snap: Snapshot, parts: list[Path], prev: Snapshot, prev_parts: list[Path],
               work_dir: str, memory_limit: str) -> Timed:
    """In the child: time ``diff()`` of T against T-1."""
    spec = parse(data.spec("file:///unused"))
    with Stopwatch() as sw:
        delta, delta_parts = diff(spec, snap, parts, prev, prev_parts, Path(work_dir),
                                  memory_limit)
    return Timed(sw.seconds, {"insert": delta.inserts, "update": delta.updates,
                              "delete": delta.deletes,
                              "deltaBytes": sum(p.stat().st_size for p in delta_parts),
                              "delta": [str(p) for p in delta_parts]})


def naive_phase(parts: list[Path], prev_parts: list[Path], work_dir: str,
                memory_limit: str) -> Timed:
    """In the child: the full-row FULL OUTER JOIN, writing the same fat delta."""
    work = Path(work_dir)
    out = work / "naive-delta.parquet"
    con = open_duckdb(work, memory_limit)
    try:
        cols = ", ".join(f"CASE WHEN t.id IS NULL THEN p.{f.name} ELSE t.{f.name} END "
                         f"AS {f.name}" for f in SCHEMA)
        with Stopwatch() as sw:
            con.execute(
                f"COPY (SELECT CASE WHEN p.id IS NULL THEN 'insert' WHEN t.id IS NULL "
                f"THEN 'delete' ELSE 'update' END AS {OP}, {cols}, p.version AS {OLD_VERSION} "
                f"FROM {parquet_scan(parts)} t FULL OUTER JOIN {parquet_scan(prev_parts)} p "
                f"ON t.id = p.id WHERE t.id IS NULL OR p.id IS NULL "
                f"OR t.version IS DISTINCT FROM p.version) "
                f"TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
        counts = dict(con.execute(f"SELECT {OP}, count(*) FROM read_parquet('{out}') "
                                  "GROUP BY ALL").fetchall())
    finally:
        con.close()
    return Timed(sw.seconds, {**{op: int(n) for op, n in counts.items()}, "delta": [str(out)]})


def same_rows(a: list[str], b: list[str]) -> bool:
    """Whether two sets of Parquet files hold the same rows (as multisets)."""
    import duckdb

    con = duckdb.connect()
    try:
        row = con.execute(
            "SELECT count(*) FROM ((SELECT * FROM read_parquet($a) EXCEPT ALL "
            "SELECT * FROM read_parquet($b)) UNION ALL (SELECT * FROM read_parquet($b) "
            "EXCEPT ALL SELECT * FROM read_parquet($a)))", {"a": a, "b": b}).fetchone()
    finally:
        con.close()
    return row is not None and row[0] == 0


def run(env: BenchEnv, sizes: Sizes) -> list[Result]:
    rows = sizes.diff_rows
    changes = data.Changes(rows)
    work = env.dir("diff")
    prev, prev_parts = write_snapshot(data.snapshot_query(changes, after=False),
                                      work / "prev", "t-1", rows)
    snap, parts = write_snapshot(data.snapshot_query(changes, after=True),
                                 work / "next", "t", changes.rows_after)
    limit = TARGETS.diff_memory_limit
    load = os.getloadavg()[0]
    measured = in_child(diff_phase, snap, parts, prev, prev_parts, str(env.dir("diff-run")),
                        limit)
    baseline = in_child(naive_phase, parts, prev_parts, str(env.dir("diff-naive")), limit)
    expected = {"insert": changes.inserts, "update": changes.updates, "delete": changes.deletes}
    for name, m in (("diff", measured), ("naive diff", baseline)):
        got = {op: m.info.get(op, 0) for op in expected}
        if got != expected:
            raise RuntimeError(f"{name} found {got}, expected {expected}")
    if not same_rows(measured.info.pop("delta"), baseline.info.pop("delta")):
        raise RuntimeError("diff and the naive diff wrote different deltas")
    for name in ("diff", "diff-run", "diff-naive"):
        shutil.rmtree(env.root / name, ignore_errors=True)
    scaled = rows != TARGETS.diff_rows
    seconds = TARGETS.diff_seconds_for(rows)
    return [Result(
        phase="diff", rows=rows, measured=measured,
        baseline_name="naive full-row join",
        baseline=baseline,
        targets=[Target(f"time <= {seconds:.3g} s" + (" (scaled)" if scaled else ""),
                        measured.seconds <= seconds),
                 rss_target(measured, TARGETS.diff_rss_mib)],
        load_average=load,
        note=(f"{changes.updates:,} updates, {changes.inserts:,} inserts, "
              f"{changes.deletes:,} deletes; snapshots {snap.bytes / 2**20:,.0f} + "
              f"{prev.bytes / 2**20:,.0f} MiB Parquet; memory_limit={limit}"))]
