"""Stage 2, diff: snapshot T against the last *applied* snapshot T-1, in DuckDB.

Called by ``pipeline``. Keyed on the primary key; compares the version column (default) or
every column (``spec.source.compare: content``). First a narrow FULL OUTER JOIN of (key,
version) finds the changed keys; then the full rows are fetched for those keys only, so the
wide join the naive approach needs never happens. A large narrow join runs as several joins
over ranges of the first key column (boundaries from a sample of T-1), each small enough for
the hash table to stay in memory: far faster than one join that spills. Output (DESIGN.md
section 4) is the fat delta, Parquet with the columns::

    _tablesync_op           'insert' | 'update' | 'delete' | 'refill'
    <every column of T>     the full new row (for a delete: the row as T-1 had it)
    _tablesync_old_version  the version in T-1 (NULL for an insert)
    _tablesync_pending      true for a delete asked again (the last apply kept it; its old
                            version is the destination's then), else false; only in a
                            delta with deletes asked again

DuckDB runs with an explicit ``memory_limit`` and ``temp_directory`` so a large diff spills to
disk instead of being killed. Without T-1 (bootstrap) every row of T is an insert. With
``refill`` every other row of T is in the delta too, as a 'refill': the destination has lost
rows that T-1 and T share (:func:`probe`), and the apply upserts them like updates.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from . import logs
from .errors import START_OVER, InputError
from .postgres import quote_ident, quote_literal
from .snapshots import Delta, Snapshot
from .spec import JobSpec

log = logs.get("tablesync_job.diff")

OP = "_tablesync_op"
OLD_VERSION = "_tablesync_old_version"
PENDING = "_tablesync_pending"  # a delete asked again (in ``changes`` and in the delta)

# Bytes of memory_limit allowed per row and compared column on the build side of one
# partition of the narrow join (DuckDB's hash table needs about 25 per column plus overhead).
PARTITION_BYTES_PER_ROW_COLUMN = 100
# Never split the key space finer than this many rows per partition.
MIN_PARTITION_ROWS = 500_000
# Rows of T-1 sampled (whole vectors of 2048) for the partition boundaries.
PARTITION_SAMPLE_ROWS = 200_000
# Key types whose values order and round-trip through VARCHAR (partition boundaries).
_RANGE_TYPES = re.compile(r"^(U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)|DECIMAL.*|VARCHAR|"
                          r"DATE|TIMESTAMP.*|UUID)$")
# DuckDB's Parquet writer holds a row group per thread, of 122,880 rows by default whatever
# their width: the delta's row groups take at most memory_limit / (this * threads), within
# the bounds below (16 KB rows made 2 GB row groups, and a bootstrap failed at 1GB).
ROW_GROUP_SHARE = 16
ROW_GROUP_BYTES = (2**20, 64 * 2**20)
# A memory size as DuckDB reads one, in the standard forms: 2GB, 1.5 GB, 512MiB, 100KB.
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([KMGT])(I?)B|B)\s*$", re.IGNORECASE)


def open_duckdb(work_dir: Path, memory_limit: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that spills to ``work_dir/duckdb-spill`` past ``memory_limit``."""
    spill = work_dir / "duckdb-spill"
    spill.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={
        "memory_limit": memory_limit,
        "temp_directory": str(spill),
        "preserve_insertion_order": False,
        "threads": usable_cpus(),
    })
    con.execute("SET enable_progress_bar = false")  # the job logs its own progress
    return con


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: those it may run on (``os.sched_getaffinity``), fewer
    under a CFS quota (a pod's ``resources.limits.cpu``, ``docker run --cpus``), rounded up;
    at least 1. The quota is read from cgroup v2's ``cpu.max`` (``"200000 100000"``: two
    CPUs; ``"max 100000"``: none) or v1's ``cpu/cpu.cfs_quota_us`` over
    ``cpu/cpu.cfs_period_us`` (-1: none), under ``cgroup``.

    ``os.cpu_count()`` counts the node's CPUs: on a 64-CPU node a pod limited to 2 ran 64
    DuckDB threads, throttled, each with its share of memory_limit.
    """
    cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1)
    quota, period = None, None
    try:
        fields = (cgroup / "cpu.max").read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            quota, period = int(fields[0]), int(fields[1])
    except (OSError, ValueError):
        try:
            quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            pass
    if quota is not None and period and quota > 0:
        cpus = min(cpus, -(-quota // period))
    return max(cpus, 1)


def size_bytes(memory_limit: str) -> int:
    """``1GB``, ``512MiB``, ``2 GB`` ... in bytes (1 GiB when it cannot be read).

    KB, MB, GB, TB are powers of 1000, KiB, MiB, GiB, TiB of 1024, as DuckDB reads them.
    """
    match = _SIZE.match(memory_limit)
    if not match:
        return 2**30
    number, prefix, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** " KMGT".index((prefix or " ").upper()))


def check_memory_limit(memory_limit: str, where: str) -> str:
    """Return ``memory_limit`` if it is a positive size DuckDB reads as such, else InputError.

    DuckDB itself takes a negative size, ``-1`` or ``none`` as "80 % of the machine's
    memory", which in a pod with a memory limit ends in an OOM kill, not a spill.
    """
    if not _SIZE.match(memory_limit) or size_bytes(memory_limit) <= 0:
        raise InputError(f"{where}={memory_limit!r} is not a memory size: use a positive number "
                         "with a unit, e.g. 2GB or 512MiB (spec.job.memoryLimit)")
    return memory_limit


def delta_format(memory_limit: str) -> str:
    """The options of a COPY that writes a delta part: zstd Parquet, its row groups sized
    in bytes for ``memory_limit`` (:data:`ROW_GROUP_SHARE`), so wide rows (a jsonb
    document each) do not need more memory than narrow ones."""
    lowest, highest = ROW_GROUP_BYTES
    share = size_bytes(memory_limit) // (ROW_GROUP_SHARE * usable_cpus())
    return (f"FORMAT parquet, COMPRESSION zstd, "
            f"ROW_GROUP_SIZE_BYTES {min(max(share, lowest), highest)}")


@contextmanager
def out_of_memory(memory_limit: str) -> Iterator[None]:
    """Turn DuckDB's OutOfMemoryException into an InputError naming the setting to raise.

    DuckDB spills joins and sorts to ``temp_directory``, but some work must fit in
    ``memory_limit``; a rerun at the same limit fails the same way.
    """
    try:
        yield
    except duckdb.OutOfMemoryException as err:
        if "max_temp_directory_size" in str(err):
            raise  # the spill found the scratch disk full: pipeline.scratch_full names it
        text = (str(err).strip().splitlines() or [""])[0]
        raise InputError(f"the diff needs more memory than memory_limit={memory_limit} "
                         f"({text}): raise spec.job.memoryLimit (TABLESYNC_MEMORY_LIMIT) and "
                         "the pod's memory limit with it") from None


def parquet_scan(parts: list[Path]) -> str:
    """``read_parquet([...])`` over local files, as SQL (views cannot take parameters)."""
    return "read_parquet([" + ", ".join(quote_literal(str(p)) for p in parts) + "])"


def diff(spec: JobSpec, snap: Snapshot, snap_parts: list[Path], prev: Snapshot | None,
         prev_parts: list[Path], work_dir: Path, memory_limit: str,
         pending: list[Path] | None = None, refill: bool = False) -> tuple[Delta, list[Path]]:
    """Write the delta from ``prev`` (None: bootstrap) to ``snap`` as Parquet under work_dir.

    ``pending``: the last apply's kept deletes (``State.pending_deletes``: key columns and
    OLD_VERSION, the destination's version then); those whose key T still lacks are deleted
    again, bound by that version. ``refill``: the rows of T the delta would leave out are
    in it as 'refill' (counted in ``Delta.refills``). Returns the delta manifest (not yet
    stored) and its local part files.
    """
    started = time.monotonic()
    out_dir = work_dir / "delta" / snap.id
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "part-00000.parquet"
    with logs.heartbeat("diff", "join"), out_of_memory(memory_limit):
        con = open_duckdb(work_dir, memory_limit)
        try:
            con.execute(f"CREATE VIEW t AS SELECT * FROM {parquet_scan(snap_parts)}")
            keys = [quote_ident(k) for k in spec.source.primary_key]
            ver = quote_ident(spec.source.version_column)
            if prev is None:
                con.execute(
                    f"COPY (SELECT 'insert' AS {OP}, *, CASE WHEN false THEN {ver} END AS "
                    f"{OLD_VERSION} FROM t) TO {quote_literal(str(out))} "
                    f"({delta_format(memory_limit)})")
                counts = {"insert": snap.rows}
                watermark = snap.watermark
                asked_again = 0
            else:
                con.execute(f"CREATE VIEW p AS SELECT * FROM {parquet_scan(prev_parts)}")
                _changes(con, spec, snap, prev, keys, ver, memory_limit)
                asked_again = _ask_again(con, keys, pending or [])
                if refill:
                    _refill(con, keys, ver)
                counts = {op: int(n) for op, n in con.execute(
                    f"SELECT {OP}, count(*) FROM changes GROUP BY {OP}").fetchall()}
                _write_fat_delta(con, snap, prev, keys, ver, out, counts, asked_again,
                                 delta_format(memory_limit))
                watermark = _watermark(con, snap, ver)
        finally:
            con.close()
    delta = Delta(
        from_id=prev.id if prev else None, to_id=snap.id,
        inserts=counts.get("insert", 0), updates=counts.get("update", 0),
        deletes=counts.get("delete", 0), from_rows=prev.rows if prev else 0,
        to_rows=snap.rows, version_kind=snap.version_kind, watermark=watermark,
        captured_at=snap.captured_at, diff_seconds=round(time.monotonic() - started, 3),
        pending_deletes=asked_again, refills=counts.get("refill", 0),
        added_columns=added_columns(snap, prev) if spec.source.compare != "content" else [],
    )
    log.info("diffed", extra={"fields": {"phase": "diff", "delta": delta.id,
                                         "insert": delta.inserts, "update": delta.updates,
                                         "delete": delta.deletes,
                                         "pendingDeletes": delta.pending_deletes,
                                         "refill": delta.refills,
                                         "seconds": delta.diff_seconds}})
    return delta, [out]


def _partitions(con: duckdb.DuckDBPyConnection, rows: int, columns: int, first_key: str,
                memory_limit: str) -> list[str]:
    """Conditions that split the narrow join into parts whose hash tables fit in memory.

    Ranges of the first key column, between quantiles of a block sample of T-1 (``p``); the
    first and last range are open, so every key falls in exactly one. One condition,
    ``true``, when the join is small or the key type has no usable order.
    """
    per_partition = max(size_bytes(memory_limit) // (PARTITION_BYTES_PER_ROW_COLUMN * columns),
                         MIN_PARTITION_ROWS)
    count = math.ceil(rows / per_partition)
    if count <= 1:
        return ["true"]
    quantiles = [i / count for i in range(1, count)]
    percent = min(100.0, 100.0 * PARTITION_SAMPLE_ROWS / rows)
    row: Any = con.execute(
        f"SELECT typeof(any_value({first_key})), CAST(quantile_disc({first_key}, {quantiles}) "
        f"AS VARCHAR[]) FROM (SELECT {first_key} FROM p "
        f"USING SAMPLE {percent:.6f}% (system, 7))").fetchone()
    if row is None or row[1] is None or not _RANGE_TYPES.match(row[0]):
        return ["true"]
    # quantiles come in the key type's order; equal neighbours would make empty ranges
    literals = [f"CAST({quote_literal(b)} AS {row[0]})" for b in dict.fromkeys(row[1])]
    conditions = [f"{first_key} < {literals[0]}"]
    conditions += [f"{first_key} >= {lo} AND {first_key} < {hi}"
                   for lo, hi in itertools.pairwise(literals)]
    conditions.append(f"{first_key} >= {literals[-1]}")
    return conditions


def _changes(con: duckdb.DuckDBPyConnection, spec: JobSpec, snap: Snapshot, prev: Snapshot,
             keys: list[str], ver: str, memory_limit: str) -> None:
    """Fill the temp table ``changes`` (key columns, OP, OLD_VERSION, PENDING false).

    The op and old version columns have the delta's reserved names, so that no key column can
    share them (a key named ``op`` made every count 0: a silent "no changes").
    """
    on = " AND ".join(f"t.{k} = p.{k}" for k in keys)
    first = keys[0]
    if spec.source.compare == "content":
        changed, t_side, p_side, width = _content_sides(snap, prev)
    else:
        key_cols = ", ".join(keys)
        changed = f"t.{ver} IS DISTINCT FROM p.{ver}"
        # a column added since T-1 is backfilled: every row of T is compared, NULL too (the
        # destination may hold a value there: one it kept when the source dropped the
        # column, its own default when it was migrated first)
        if added_columns(snap, prev):
            changed = "true"
        t_side = f"SELECT {key_cols}, {ver} FROM t"
        p_side = f"SELECT {key_cols}, {ver} FROM p"
        width = len(keys) + 1
    key_out = ", ".join(f"COALESCE(t.{k}, p.{k}) AS {k}" for k in keys)
    before = {c.name: c.arrow_type for c in prev.columns}
    for field_name, names in (("spec.source.primaryKey", spec.source.primary_key),
                              ("spec.source.versionColumn", [spec.source.version_column])):
        absent = [n for n in names if n not in before]
        if absent:
            raise InputError(
                f"{field_name}: column(s) {', '.join(absent)} are not in the last applied "
                f"snapshot {prev.id} (renamed, or chosen since), so the diff cannot match its "
                f"rows; go back to the old name, or {START_OVER}")
    retyped = [f"{c.name} ({before[c.name]} -> {c.arrow_type})" for c in snap.columns
               if c.name in (*spec.source.primary_key, spec.source.version_column)
               and c.name in before and before[c.name] != c.arrow_type]
    partitions = _partitions(con, max(snap.rows, prev.rows), width, first, memory_limit)
    try:
        for i, part in enumerate(partitions):
            con.execute(
                f"{'CREATE TEMP TABLE changes AS' if i == 0 else 'INSERT INTO changes'} "
                f"SELECT {key_out}, "
                f"CASE WHEN p.{first} IS NULL THEN 'insert' WHEN t.{first} IS NULL THEN "
                f"'delete' ELSE 'update' END AS {OP}, p.{ver} AS {OLD_VERSION}, "
                f"false AS {PENDING} "
                f"FROM ({t_side} WHERE {part}) t FULL OUTER JOIN ({p_side} WHERE {part}) p "
                f"ON {on} WHERE t.{first} IS NULL OR p.{first} IS NULL OR ({changed})")
    except (duckdb.BinderException, duckdb.ConversionException) as err:
        if not retyped:
            raise
        raise InputError(f"spec.source: key or version column(s) {', '.join(retyped)} changed "
                         f"type since the last applied snapshot {prev.id}, and the diff cannot "
                         f"compare the two ({str(err).splitlines()[0]}); {START_OVER}") from None


def added_columns(snap: Snapshot, prev: Snapshot | None) -> list[str]:
    """The columns of T that T-1 lacks (added at the source since), in T's order."""
    if prev is None:
        return []
    before = {c.name for c in prev.columns}
    return [c.name for c in snap.columns if c.name not in before]


def _ask_again(con: duckdb.DuckDBPyConnection, keys: list[str], pending: list[Path]) -> int:
    """Add the last apply's kept deletes whose key T lacks to ``changes``; return how many.

    Their keys are absent from T-1 (they were deleted before it), so none is in ``changes``
    yet; one that T has again is the source's live row, upserted as an insert instead.
    """
    if not pending:
        return 0
    on = " AND ".join(f"t.{k} = q.{k}" for k in keys)
    try:
        con.execute(f"INSERT INTO changes SELECT {', '.join(f'q.{k}' for k in keys)}, "
                    f"'delete', q.{OLD_VERSION}, true FROM {parquet_scan(pending)} q "
                    f"WHERE NOT EXISTS (SELECT 1 FROM t WHERE {on})")
    except (duckdb.BinderException, duckdb.ConversionException) as err:
        # a key or version retyped since (and beyond a cast): they are not asked again
        log.warning(f"the deletes kept at the last run are not asked again: "
                    f"{str(err).splitlines()[0]}", extra={"fields": {"pendingDeletes": 0}})
        return 0
    row: Any = con.execute(f"SELECT count(*) FROM changes WHERE {PENDING}").fetchone()
    return int(row[0])


def _refill(con: duckdb.DuckDBPyConnection, keys: list[str], ver: str) -> None:
    """Add every key of T that ``changes`` lacks (unchanged since T-1) as a 'refill'."""
    on = " AND ".join(f"c.{k} = t.{k}" for k in keys)
    con.execute(f"INSERT INTO changes SELECT {', '.join(f't.{k}' for k in keys)}, 'refill', "
                f"t.{ver}, false FROM t WHERE NOT EXISTS (SELECT 1 FROM changes c WHERE {on})")


def probe(spec: JobSpec, snap: Snapshot, prev: Snapshot, snap_parts: list[Path],
          delta_parts: list[Path], work_dir: Path, memory_limit: str, rows: int) -> Path | None:
    """Up to ``rows`` keys of T that T-1 had too, drawn at random, as a Parquet file in the
    delta's shape (OP 'update', the key columns and, unless it is a key column, the version
    column holding T-1's version of the row: the version the last apply left); None if
    there are none. The version is NULL (not looked at) for a row the delta updates when
    the version column's type changed since T-1: its old version is of the old type (a
    naive timestamp, or a numeric stored as text), not comparable with T's.

    After the last apply the destination held each of them at that version or a newer one
    (deleted since only if the event lane deleted it after T), whether or not this delta
    changes the row: ``pipeline`` looks them up there to find rows lost, or set back to an
    older version, outside any delta.
    """
    out = work_dir / "probe" / "probe.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    keys = [quote_ident(k) for k in spec.source.primary_key]
    ver = quote_ident(spec.source.version_column)
    on = " AND ".join(f"d.{k} = t.{k}" for k in keys)
    on_sample = " AND ".join(f"d.{k} = s.{k}" for k in keys)
    picked = ", ".join(keys) if ver in keys else f"{', '.join(keys)}, {ver}"
    retyped = _arrow_type(snap, spec.source.version_column) != _arrow_type(
        prev, spec.source.version_column)
    old_version = "NULL" if retyped else f"d.{OLD_VERSION}"
    applied = "" if ver in keys else (
        f", CASE WHEN d.{OP} IS NULL THEN s.{ver} ELSE {old_version} END AS {ver}")
    with out_of_memory(memory_limit):
        con = open_duckdb(work_dir, memory_limit)
        try:
            con.execute(
                f"COPY (SELECT 'update' AS {OP}, {', '.join(f's.{k}' for k in keys)}{applied} "
                f"FROM (SELECT * FROM (SELECT {picked} FROM {parquet_scan(snap_parts)} t "
                f"WHERE NOT EXISTS (SELECT 1 FROM {parquet_scan(delta_parts)} d "
                f"WHERE d.{OP} = 'insert' AND {on})) USING SAMPLE reservoir({int(rows)} ROWS)) s "
                f"LEFT JOIN (SELECT {', '.join(keys)}, {OP}, {OLD_VERSION} FROM "
                f"{parquet_scan(delta_parts)} WHERE {OP} = 'update') d "
                f"ON {on_sample}) TO {quote_literal(str(out))} (FORMAT parquet)")
            row: Any = con.execute(f"SELECT count(*) FROM {parquet_scan([out])}").fetchone()
        finally:
            con.close()
    return out if row[0] else None


SAMPLED_VERSION = "_tablesync_version"  # the version in apply.sample_destination's rows


def absent_from(spec: JobSpec, snap_parts: list[Path], delta_parts: list[Path],
                sampled: pa.Table, work_dir: Path, memory_limit: str,
                below_highest: bool = True) -> list[int]:
    """Positions in ``sampled`` (destination rows: the key columns and
    :data:`SAMPLED_VERSION`, in T's types, from ``apply.sample_destination``) of the rows
    whose key T lacks and the delta does not delete, at a version below T's highest (unless
    not ``below_highest``: where versions do not order across rows, a row is seen twice
    instead, ``pipeline.probe_absent``).

    The delta's deletes are rows of T-1, and the deletes the last apply kept, asked again:
    the run deletes them, or keeps them pending. A version not below T's highest may be the
    event lane's insert of a row committed at the source after T: a replica lagging behind
    the primary the event lane reads lacks it too. That bound needs a version column that
    orders across rows in T's type (:func:`versions_order`).
    """
    keys = [quote_ident(k) for k in spec.source.primary_key]
    ver = quote_ident(spec.source.version_column)
    rows = sampled.append_column("_tablesync_at", pa.array(range(sampled.num_rows), pa.int64()))
    on_t = " AND ".join(f"s.{k} = t.{k}" for k in keys)
    with out_of_memory(memory_limit):
        con = open_duckdb(work_dir, memory_limit)
        try:
            con.register("sampled", rows)
            found = con.execute(
                f"SELECT s._tablesync_at FROM sampled s WHERE s._tablesync_at NOT IN (SELECT "
                f"s._tablesync_at FROM sampled s JOIN {parquet_scan(snap_parts)} t ON {on_t}) "
                f"AND s._tablesync_at NOT IN (SELECT s._tablesync_at FROM sampled s JOIN "
                f"{parquet_scan(delta_parts)} t ON {on_t} WHERE t.{OP} = 'delete') "
                + (f"AND s.{SAMPLED_VERSION} < (SELECT max(t.{ver}) FROM "
                   f"{parquet_scan(snap_parts)} t) " if below_highest else "")
                + "ORDER BY 1").fetchall()
        finally:
            con.close()
    return [int(row[0]) for row in found]


def versions_order(version_kind: str, version_type: pa.DataType) -> bool:
    """Whether versions order across rows as T holds them (``version_type``): not per-row
    counters (``version_kind`` counter), nor a version T holds as text (an unconstrained
    numeric, an interval), whose text does not order as its values do."""
    return version_kind != "counter" and not (pa.types.is_string(version_type)
                                              or pa.types.is_large_string(version_type))


def _arrow_type(snap: Snapshot, column: str) -> str | None:
    return next((c.arrow_type for c in snap.columns if c.name == column), None)


def _content_sides(snap: Snapshot, prev: Snapshot) -> tuple[str, str, str, int]:
    """(changed condition, T side, T-1 side, width) of the content comparison.

    Every column of T counts: one T-1 lacks (added since) differs in every row (where T
    holds NULL the destination may not, see :func:`_changes`); one whose type changed is
    compared as text (DuckDB would cast one side to the other's type and may fail); a
    column T lacks (dropped) is left out.
    """
    before = {c.name: c.arrow_type for c in prev.columns}
    t_cols, p_cols, conditions = [], [], []
    for col in snap.columns:
        c = quote_ident(col.name)
        t_cols.append(c)
        if col.name not in before:
            conditions.append("true")
            continue
        p_cols.append(c)
        if before[col.name] == col.arrow_type:
            conditions.append(f"t.{c} IS DISTINCT FROM p.{c}")
        else:
            conditions.append(f"CAST(t.{c} AS VARCHAR) IS DISTINCT FROM CAST(p.{c} AS VARCHAR)")
    return (" OR ".join(conditions), f"SELECT {', '.join(t_cols)} FROM t",
            f"SELECT {', '.join(p_cols)} FROM p", len(t_cols))


def _write_fat_delta(con: duckdb.DuckDBPyConnection, snap: Snapshot, prev: Snapshot,
                     keys: list[str], ver: str, out: Path, counts: dict[str, int],
                     asked_again: int, options: str) -> None:
    """COPY the fat delta: T's rows of the changed keys, and T-1's keys of the deleted ones.

    Every column has T's type. ``UNION ALL BY NAME`` would otherwise give a column that
    changed type since T-1 a type of both (DuckDB makes DECIMAL(38,0) of DECIMAL(38,10) and
    DECIMAL(38,0), DOUBLE of DECIMAL and DOUBLE): T's values rounded, exit 0, for good. So a
    delete carries T-1's value in T's type where the type is unchanged or the column is a key
    (:func:`_check_key_casts` has made sure the key survives the cast), else NULL: the apply
    reads only a delete's key and old version. A delete asked again (:func:`_ask_again`) has
    only those. ``options``: the COPY's (:func:`delta_format`).
    """
    on_t = " AND ".join(f"t.{k} = c.{k}" for k in keys)
    on_p = " AND ".join(f"p.{k} = c.{k}" for k in keys)
    t_types = _types(con, "t")
    p_types = _types(con, "p")
    t_cols = ", ".join(f"t.{quote_ident(c.name)}" for c in snap.columns)
    p_cols = []
    for col in snap.columns:
        c = quote_ident(col.name)
        kind = t_types[col.name]
        if p_types.get(col.name) == kind:
            p_cols.append(f"p.{c}")
        elif col.name in snap.primary_key:
            p_cols.append(f"CAST(p.{c} AS {kind}) AS {c}")
        else:
            p_cols.append(f"CAST(NULL AS {kind}) AS {c}")
    # A side without changes is not scanned at all (each scan reads every column).
    no_t = "" if counts.get("insert") or counts.get("update") or counts.get("refill") \
        else " AND false"
    no_p = "" if counts.get("delete", 0) > asked_again else " AND false"
    again = ""
    # PENDING only in a delta with deletes asked again: an earlier build (a rolled-back
    # image) applies the others, and would take the column for one of the table's
    flag = f", false AS {PENDING}" if asked_again else ""
    if asked_again:
        again_keys = ", ".join(f"CAST(c.{quote_ident(n)} AS {t_types[n]}) AS {quote_ident(n)}"
                               for n in snap.primary_key)
        again = (f" UNION ALL BY NAME SELECT 'delete' AS {OP}, {again_keys}, "
                 f"c.{OLD_VERSION} AS {OLD_VERSION}, true AS {PENDING} FROM changes c "
                 f"WHERE c.{PENDING}")
    if counts.get("delete"):
        _check_key_casts(con, snap, prev, t_types, p_types, on_p)
    con.execute(
        f"COPY (SELECT c.{OP} AS {OP}, {t_cols}, c.{OLD_VERSION} AS {OLD_VERSION}{flag} "
        f"FROM t JOIN changes c ON {on_t} WHERE c.{OP} <> 'delete'{no_t} "
        f"UNION ALL BY NAME "
        f"SELECT 'delete' AS {OP}, {', '.join(p_cols)}, p.{ver} AS {OLD_VERSION}{flag} "
        f"FROM p JOIN changes c ON {on_p} WHERE c.{OP} = 'delete' AND NOT c.{PENDING}{no_p}"
        f"{again}) "
        f"TO {quote_literal(str(out))} ({options})")


def _types(con: duckdb.DuckDBPyConnection, view: str) -> dict[str, str]:
    """Column name -> DuckDB type of a view."""
    return {str(name): str(kind) for name, kind, *_ in con.execute(f"DESCRIBE {view}").fetchall()}


def _check_key_casts(con: duckdb.DuckDBPyConnection, snap: Snapshot, prev: Snapshot,
                     t_types: dict[str, str], p_types: dict[str, str], on_p: str) -> None:
    """InputError unless every deleted key of T-1 keeps its value in the key's type in T.

    A key whose type changed since T-1 (int to bigint: fine) is deleted as T's type; one that
    would not survive the cast (numeric(12,2) 1.50 as numeric(10,0) is 2) would delete another
    row, so the run stops instead.
    """
    for name in snap.primary_key:
        key = quote_ident(name)
        kind = t_types[name]
        if p_types.get(name) == kind:
            continue
        try:
            row: Any = con.execute(
                f"SELECT count(*) FROM p JOIN changes c ON {on_p} WHERE c.{OP} = 'delete' "
                f"AND TRY_CAST(p.{key} AS {kind}) IS DISTINCT FROM p.{key}").fetchone()
            lost = int(row[0])
        except (duckdb.BinderException, duckdb.ConversionException):
            lost = -1
        if lost:
            raise InputError(
                f"spec.source.primaryKey: key column {name} changed type since the last applied "
                f"snapshot {prev.id} ({p_types.get(name)} -> {kind}), and the keys of deleted "
                f"rows do not keep their values in the new type; {START_OVER}")


# Arrow types whose order in DuckDB is the order of the Postgres values they came from.
_ORDERED_ARROW_TYPES = ("int", "uint", "decimal", "double", "float", "timestamp", "date")


def _watermark(con: duckdb.DuckDBPyConnection, snap: Snapshot, ver: str) -> str | None:
    """The version a delete is checked against (DESIGN.md section 4, version-safe deletes).

    timestamp: T's capturedAt. monotonic: the highest version in T or T-1. counter: None
    (each delete is checked against its own T-1 version instead). None also for a monotonic
    version that travels as text (pg_lsn, unconstrained numeric, text): DuckDB's order of the
    text is not Postgres's order of the values ('99' > '100'); the per-row check is the safe
    one then.
    """
    if snap.version_kind == "timestamp":
        return snap.watermark
    column = next((c for c in snap.columns if c.name == snap.version_column), None)
    ordered = column is not None and column.arrow_type.startswith(_ORDERED_ARROW_TYPES)
    if snap.version_kind == "monotonic" and ordered:
        row: Any = con.execute(
            f"SELECT CAST(max(v) AS VARCHAR) FROM (SELECT max({ver}) AS v FROM t "
            f"UNION ALL SELECT max({ver}) FROM p)").fetchone()
        return None if row is None else row[0]
    return None
