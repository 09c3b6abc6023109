"""Stage 1, dump: one consistent read of the source table into zstd Parquet parts.

Called by ``pipeline``. Reads in one ``REPEATABLE READ, READ ONLY`` transaction through ADBC
(Arrow batches from COPY, bounded memory) and writes ``part-NNNNN.parquet`` files into the
work directory; ``snapshots.Layout.put_snapshot`` uploads them. Exact types (DESIGN.md
section 4): numeric(p, s) becomes decimal128/256(p, s), never float; unconstrained numeric and
types Parquet cannot carry exactly (interval, money, inet, enums, ...) travel as their Postgres
text form and are cast back by ``apply``. numeric wider than 38 digits travels as text too.
Infinite timestamps and dates are refused with a clear error (Arrow has no infinity).
Rejected before anything is stored: a missing primary key or version column, a NULL key or
version, a duplicated key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import logs
from .errors import InputError
from .postgres import (
    TableInfo,
    adbc_connect,
    connect,
    describe_table,
    map_error,
    qualified,
    quote_ident,
)
from .snapshots import Column, Snapshot
from .spec import JobSpec

log = logs.get("tablesync_job.dump")

# typnames Arrow and Parquet carry exactly; anything else is dumped as text.
_NATIVE = {"int2", "int4", "int8", "float4", "float8", "numeric", "text", "varchar", "bpchar",
           "bool", "date", "timestamp", "timestamptz", "time", "uuid", "json", "jsonb", "bytea"}
_NATIVE_ARRAYS = {"_int2", "_int4", "_int8", "_float4", "_float8", "_text", "_varchar", "_bool",
                  "_date", "_timestamp", "_timestamptz"}
_TIME_TYPES = {"timestamp", "timestamptz", "date"}

ROWS_PER_PART = 4_000_000


@dataclass(frozen=True)
class SourceTable:
    """The source table as checked against the spec, before any row is read."""

    info: TableInfo
    version_kind: str  # timestamp | monotonic | counter


def check_source(spec: JobSpec, uri: str) -> SourceTable:
    """Connect to the source and check the table, key and version column exist.

    Raises InputError naming the spec field (``spec.source.primaryKey`` ...) when they do not.
    """
    with connect(uri, "source") as conn:
        info = describe_table(conn, spec.source.table, "source", "spec.source.table")
    names = [c.name for c in info.columns]
    for i, key in enumerate(spec.source.primary_key):
        if info.column(key) is None:
            raise InputError(f"spec.source.primaryKey[{i}]: column {key!r} does not exist in "
                             f"{info.table} (columns: {', '.join(names)})")
    version = info.column(spec.source.version_column)
    if version is None:
        raise InputError(f"spec.source.versionColumn: column {spec.source.version_column!r} "
                         f"does not exist in {info.table} (columns: {', '.join(names)})")
    kind = spec.source.version_kind
    if kind == "auto":
        kind = "timestamp" if version.type_name in _TIME_TYPES else "counter"
    return SourceTable(info=info, version_kind=kind)


def _select_list(info: TableInfo) -> str:
    exprs = []
    for col in info.columns:
        name = quote_ident(col.name)
        native = col.type_name in _NATIVE or col.type_name in _NATIVE_ARRAYS
        exprs.append(name if native else f"{name}::text AS {name}")
    return ", ".join(exprs)


def _target_field(field: pa.Field, info: TableInfo) -> pa.Field:
    """The Parquet-side field for an ADBC field: numeric becomes decimal(p, s)."""
    col = info.column(field.name)
    meta = {b"POSTGRESQL:type": (col.pg_type if col else "").encode()}
    if col is not None and col.type_name == "numeric":
        if col.precision and col.precision <= 38:
            return pa.field(field.name, pa.decimal128(col.precision, col.scale or 0), metadata=meta)
        # Wider (and unconstrained) numerics travel as exact text: DuckDB's DECIMAL stops at
        # 38 digits and would read a decimal256 as DOUBLE.
        return pa.field(field.name, pa.string(), metadata=meta)
    return field.with_metadata(meta)


# Postgres stores +-infinity as INT64/INT32 extremes; the driver's epoch shift wraps them to
# values far below the earliest finite Postgres timestamp (4714 BC) or date.
_MIN_FINITE = {"timestamp": -210_900_000_000_000_000, "date32": -2_500_000}


def _reject_infinity(array: pa.Array, name: str) -> None:
    kind = "timestamp" if pa.types.is_timestamp(array.type) else "date32"
    if array.null_count == len(array):
        return
    lowest = pc.min(array.cast(pa.int64() if kind == "timestamp" else pa.int32())).as_py()
    if lowest is not None and lowest < _MIN_FINITE[kind]:
        raise InputError(f"source column {name!r} holds 'infinity', '-infinity' or a "
                         "date past year 294000, which cannot be carried exactly; replace "
                         "it with NULL or a finite sentinel in the source (or exclude the table)")


def _convert(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for i, target in enumerate(schema):
        array = batch.column(i)
        if pa.types.is_timestamp(array.type) or pa.types.is_date32(array.type):
            _reject_infinity(array, target.name)
        if isinstance(array.type, pa.ExtensionType) and not array.type.equals(target.type):
            array = array.storage  # numeric arrives as an opaque string extension
        if not array.type.equals(target.type):
            try:
                array = array.cast(target.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise InputError(f"source column {target.name!r}: a value cannot be stored "
                                 f"exactly as {target.type} ({err}); NaN and Infinity are "
                                 "not supported in numeric columns") from None
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def dump(spec: JobSpec, uri: str, source: SourceTable, work_dir: Path,
         snapshot_id: str) -> tuple[Snapshot, list[Path]]:
    """Read the source table into Parquet parts under ``work_dir``.

    Returns the snapshot manifest (not yet stored) and the local part files. Raises InputError
    on NULL or duplicated keys and NULL versions, TransientError on connection failures.
    """
    started = time.monotonic()
    info = source.info
    out_dir = work_dir / "snapshot" / snapshot_id
    out_dir.mkdir(parents=True, exist_ok=True)
    key_names = list(spec.source.primary_key)
    version_name = spec.source.version_column
    progress = logs.Progress("dump", total=info.estimated_rows)
    parts: list[Path] = []
    rows = size = 0
    lo: Any = None
    hi: Any = None

    conn = adbc_connect(uri, "source", autocommit=True)
    try:
        cur = conn.cursor()
        try:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # The first statement fixes the transaction's snapshot: capture its as-of time.
            cur.execute(
                "SELECT pg_is_in_recovery(), COALESCE(CASE WHEN pg_is_in_recovery() THEN "
                "pg_last_xact_replay_timestamp() END, now()) AS captured")
            in_recovery, captured = cur.fetchone()
            cur.execute(f"SELECT {_select_list(info)} FROM {qualified(info.table)}")
            reader = cur.fetch_record_batch()
            schema = pa.schema([_target_field(f, info) for f in reader.schema])
            key_idx = [schema.get_field_index(k) for k in key_names]
            ver_idx = schema.get_field_index(version_name)
            writer: pq.ParquetWriter | None = None
            part_rows = 0
            for batch in reader:
                if batch.num_rows == 0:
                    continue
                batch = _convert(batch, schema)
                for name, idx in zip(key_names, key_idx, strict=True):
                    if batch.column(idx).null_count:
                        raise InputError(f"spec.source.primaryKey: column {name!r} of "
                                         f"{info.table} holds NULL; key columns must be NOT NULL")
                version = batch.column(ver_idx)
                if version.null_count:
                    raise InputError(f"spec.source.versionColumn: column {version_name!r} of "
                                     f"{info.table} holds NULL in {version.null_count} rows; "
                                     "every row needs a version")
                mm = pc.min_max(version)
                b_lo, b_hi = mm["min"].as_py(), mm["max"].as_py()
                lo = b_lo if lo is None or b_lo < lo else lo
                hi = b_hi if hi is None or b_hi > hi else hi
                if writer is None or part_rows >= ROWS_PER_PART:
                    if writer is not None:
                        writer.close()
                    path = out_dir / f"part-{len(parts):05d}.parquet"
                    parts.append(path)
                    writer = pq.ParquetWriter(path, schema, compression="zstd",
                                              write_statistics=[*key_names, version_name])
                    part_rows = 0
                writer.write_batch(batch)
                part_rows += batch.num_rows
                rows += batch.num_rows
                progress.update(batch.num_rows)
            if writer is not None:
                writer.close()
            if not parts:  # an empty table is still a snapshot, with one empty part
                path = out_dir / "part-00000.parquet"
                pq.write_table(schema.empty_table(), path, compression="zstd")
                parts.append(path)
            cur.execute("COMMIT")
        finally:
            cur.close()
    except InputError:
        raise
    except Exception as err:
        import adbc_driver_manager

        if isinstance(err, adbc_driver_manager.Error):
            raise map_error(err, "source", f"reading {info.table}") from None
        raise
    finally:
        conn.close()
        progress.close()

    if not info.has_unique(spec.source.primary_key):
        _check_unique(parts, key_names, str(info.table))
    size = sum(p.stat().st_size for p in parts)
    captured_iso = captured.isoformat()
    watermark: str | None = None
    if source.version_kind == "timestamp":
        watermark = captured_iso
    elif source.version_kind == "monotonic" and hi is not None:
        watermark = str(hi)
    snap = Snapshot(
        id=snapshot_id, table=str(info.table), captured_at=captured_iso,
        in_recovery=bool(in_recovery), rows=rows, bytes=size,
        columns=[Column(name=f.name, pg_type=(info.column(f.name).pg_type  # type: ignore[union-attr]
                                              ), arrow_type=str(f.type)) for f in schema],
        primary_key=key_names, version_column=version_name, version_kind=source.version_kind,
        min_version=None if lo is None else _version_text(lo),
        max_version=None if hi is None else _version_text(hi),
        watermark=watermark, dump_seconds=round(time.monotonic() - started, 3),
    )
    log.info("dumped", extra={"fields": {**progress.figures(), "bytes": size,
                                         "parts": len(parts), "capturedAt": captured_iso}})
    return snap, parts


def _version_text(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _check_unique(parts: list[Path], keys: list[str], table: str) -> None:
    """Reject a snapshot with a duplicated key (only when the source has no unique index)."""
    import duckdb

    cols = ", ".join(quote_ident(k) for k in keys)
    files = [str(p) for p in parts]
    con = duckdb.connect()
    try:
        dup = con.execute(
            f"SELECT {cols}, count(*) FROM read_parquet($files) GROUP BY ALL "
            "HAVING count(*) > 1 LIMIT 1", {"files": files}).fetchone()
    finally:
        con.close()
    if dup:
        shown = ", ".join(f"{k}={v!r}" for k, v in zip(keys, dup[:-1], strict=True))
        raise InputError(f"spec.source.primaryKey: key ({shown}) appears {dup[-1]} times in "
                         f"{table}; the key must be unique (declare the real primary key)")
