"""Stage 2, diff: snapshot T against the last *applied* snapshot T-1, in DuckDB.

Called by ``pipeline``. Keyed on the primary key; compares the version column (default) or
every column (``spec.source.compare: content``). First a narrow FULL OUTER JOIN of (key,
version) finds the changed keys; then the full rows are fetched for those keys only, so the
wide join the naive approach needs never happens. Output (DESIGN.md section 4) is the fat
delta, Parquet with the columns::

    _tablesync_op           'insert' | 'update' | 'delete'
    <every column of T>     the full new row (for a delete: the row as T-1 had it)
    _tablesync_old_version  the version in T-1 (NULL for an insert)

DuckDB runs with an explicit ``memory_limit`` and ``temp_directory`` so a large diff spills to
disk instead of being killed. Without T-1 (bootstrap) every row of T is an insert.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import duckdb

from . import logs
from .postgres import quote_ident, quote_literal
from .snapshots import Delta, Snapshot
from .spec import JobSpec

log = logs.get("tablesync_job.diff")

OP = "_tablesync_op"
OLD_VERSION = "_tablesync_old_version"


def open_duckdb(work_dir: Path, memory_limit: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that spills to ``work_dir/duckdb-spill`` past ``memory_limit``."""
    spill = work_dir / "duckdb-spill"
    spill.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(config={
        "memory_limit": memory_limit,
        "temp_directory": str(spill),
        "preserve_insertion_order": False,
        "threads": max(os.cpu_count() or 1, 1),
    })


def parquet_scan(parts: list[Path]) -> str:
    """``read_parquet([...])`` over local files, as SQL (views cannot take parameters)."""
    return "read_parquet([" + ", ".join(quote_literal(str(p)) for p in parts) + "])"


def diff(spec: JobSpec, snap: Snapshot, snap_parts: list[Path], prev: Snapshot | None,
         prev_parts: list[Path], work_dir: Path, memory_limit: str) -> tuple[Delta, list[Path]]:
    """Write the delta from ``prev`` (None: bootstrap) to ``snap`` as Parquet under work_dir.

    Returns the delta manifest (not yet stored) and its local part files.
    """
    started = time.monotonic()
    out_dir = work_dir / "delta" / snap.id
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "part-00000.parquet"
    con = open_duckdb(work_dir, memory_limit)
    try:
        con.execute(f"CREATE VIEW t AS SELECT * FROM {parquet_scan(snap_parts)}")
        keys = [quote_ident(k) for k in spec.source.primary_key]
        ver = quote_ident(spec.source.version_column)
        if prev is None:
            con.execute(
                f"COPY (SELECT 'insert' AS {OP}, *, CASE WHEN false THEN {ver} END AS "
                f"{OLD_VERSION} FROM t) TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
            counts = {"insert": snap.rows}
            watermark = snap.watermark
        else:
            con.execute(f"CREATE VIEW p AS SELECT * FROM {parquet_scan(prev_parts)}")
            counts = _changes(con, spec, snap, prev, keys, ver)
            _write_fat_delta(con, snap, prev, keys, ver, out)
            watermark = _watermark(con, snap, ver)
    finally:
        con.close()
    delta = Delta(
        from_id=prev.id if prev else None, to_id=snap.id,
        inserts=counts.get("insert", 0), updates=counts.get("update", 0),
        deletes=counts.get("delete", 0), from_rows=prev.rows if prev else 0,
        to_rows=snap.rows, version_kind=snap.version_kind, watermark=watermark,
        captured_at=snap.captured_at, diff_seconds=round(time.monotonic() - started, 3),
    )
    log.info("diffed", extra={"fields": {"phase": "diff", "delta": delta.id,
                                         "insert": delta.inserts, "update": delta.updates,
                                         "delete": delta.deletes,
                                         "seconds": delta.diff_seconds}})
    return delta, [out]


def _changes(con: duckdb.DuckDBPyConnection, spec: JobSpec, snap: Snapshot, prev: Snapshot,
             keys: list[str], ver: str) -> dict[str, int]:
    """Fill the temp table ``changes`` (key columns, op, old_version); return counts per op."""
    on = " AND ".join(f"t.{k} = p.{k}" for k in keys)
    first = keys[0]
    if spec.source.compare == "content":
        shared = [quote_ident(c.name) for c in snap.columns
                  if c.name in {pc.name for pc in prev.columns}]
        t_cols = ", ".join(f"{c}" for c in shared)
        changed = " OR ".join(f"t.{c} IS DISTINCT FROM p.{c}" for c in shared)
        t_side, p_side = f"SELECT {t_cols} FROM t", f"SELECT {t_cols} FROM p"
    else:
        key_cols = ", ".join(keys)
        changed = f"t.{ver} IS DISTINCT FROM p.{ver}"
        t_side = f"SELECT {key_cols}, {ver} FROM t"
        p_side = f"SELECT {key_cols}, {ver} FROM p"
    key_out = ", ".join(f"COALESCE(t.{k}, p.{k}) AS {k}" for k in keys)
    con.execute(
        f"CREATE TEMP TABLE changes AS SELECT {key_out}, "
        f"CASE WHEN p.{first} IS NULL THEN 'insert' WHEN t.{first} IS NULL THEN 'delete' "
        f"ELSE 'update' END AS op, p.{ver} AS old_version "
        f"FROM ({t_side}) t FULL OUTER JOIN ({p_side}) p ON {on} "
        f"WHERE t.{first} IS NULL OR p.{first} IS NULL OR ({changed})")
    return {op: int(n) for op, n in
            con.execute("SELECT op, count(*) FROM changes GROUP BY op").fetchall()}


def _write_fat_delta(con: duckdb.DuckDBPyConnection, snap: Snapshot, prev: Snapshot,
                     keys: list[str], ver: str, out: Path) -> None:
    on_t = " AND ".join(f"t.{k} = c.{k}" for k in keys)
    on_p = " AND ".join(f"p.{k} = c.{k}" for k in keys)
    prev_names = {c.name for c in prev.columns}
    t_cols = ", ".join(f"t.{quote_ident(c.name)}" for c in snap.columns)
    # A delete carries the row as T-1 had it, in T's column list (NULL for a new column).
    p_cols = ", ".join(
        f"p.{quote_ident(c.name)}" if c.name in prev_names else f"NULL AS {quote_ident(c.name)}"
        for c in snap.columns)
    con.execute(
        f"COPY (SELECT c.op AS {OP}, {t_cols}, c.old_version AS {OLD_VERSION} "
        f"FROM t JOIN changes c ON {on_t} WHERE c.op <> 'delete' "
        f"UNION ALL BY NAME "
        f"SELECT 'delete' AS {OP}, {p_cols}, p.{ver} AS {OLD_VERSION} "
        f"FROM p JOIN changes c ON {on_p} WHERE c.op = 'delete') "
        f"TO '{out}' (FORMAT parquet, COMPRESSION zstd)")


def _watermark(con: duckdb.DuckDBPyConnection, snap: Snapshot, ver: str) -> str | None:
    """The version a delete is checked against (DESIGN.md section 4, version-safe deletes).

    timestamp: T's capturedAt. monotonic: the highest version in T or T-1. counter: None
    (each delete is checked against its own T-1 version instead).
    """
    if snap.version_kind == "timestamp":
        return snap.watermark
    if snap.version_kind == "monotonic":
        row: Any = con.execute(
            f"SELECT CAST(max(v) AS VARCHAR) FROM (SELECT max({ver}) AS v FROM t "
            f"UNION ALL SELECT max({ver}) FROM p)").fetchone()
        return None if row is None else row[0]
    return None
