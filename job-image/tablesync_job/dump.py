"""Stage 1, dump: one consistent read of the source table into zstd Parquet parts.

Called by ``pipeline``. Reads in one ``REPEATABLE READ, READ ONLY`` transaction through ADBC
(Arrow batches from COPY, bounded memory) and writes ``part-NNNNN.parquet`` files into the
work directory; ``snapshots.Layout.put_snapshot`` uploads them. Exact types (DESIGN.md
section 4): numeric(p, s) becomes decimal128/256(p, s), never float; unconstrained numeric and
types Parquet cannot carry exactly (interval, money, inet, enums, ...) travel as their Postgres
text form and are cast back by ``apply``. numeric wider than 38 digits travels as text too,
and so do arrays: the driver's Arrow lists flatten a multi-dimensional array and drop a lower
bound other than 1 (``'[0:2]={7,8,9}'``).
Every numeric is read as its exact text (``::text``) and parsed into decimal here: the
driver's own binary-numeric decoding costs more than the whole rest of the dump.
``infinity`` and ``-infinity`` in timestamp and date columns become DuckDB's own infinities
(the largest and smallest but one of the Arrow storage integers, :data:`INFINITY`), which the
diff compares and writes back as such and ``apply`` turns into Postgres's again. Finite values
past 294247 AD (beyond Arrow's microseconds) are refused, and so is an infinite version.
Rejected before anything is stored: a missing primary key or version column, a NULL key or
version, a duplicated key.

The snapshot's watermark (deletes compare against it, DESIGN.md section 4) for time-like
versions is ``capturedAt``: as an instant for ``timestamptz``, and for ``timestamp`` and
``date``, which hold wall-clock time, as the wall-clock time of the dump's session
``TimeZone``, the one the writers' ``now()``/``localtimestamp`` use by default (server,
database or role setting). Read as UTC, a zone behind UTC would delete an event lane's
re-insert after T.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import logs
from .errors import InputError
from .postgres import (
    TEXT_ARRAYS,
    ColumnInfo,
    TableInfo,
    adbc_connect,
    adbc_errors,
    connect,
    describe_table,
    map_stream_error,
    qualified,
    quote_ident,
    quote_literal,
    with_text_arrays,
)
from .snapshots import Column, Snapshot
from .spec import JobSpec

log = logs.get("tablesync_job.dump")

# typnames Arrow and Parquet carry exactly; anything else is dumped as text.
_NATIVE = {"int2", "int4", "int8", "float4", "float8", "numeric", "text", "varchar", "bpchar",
           "bool", "date", "timestamp", "timestamptz", "time", "uuid", "json", "jsonb", "bytea"}
_TIME_TYPES = {"timestamp", "timestamptz", "date"}
# Types Postgres may order, but whose order does not say which change is newer.
_UNORDERED_VERSIONS = {"uuid", "json", "jsonb", "bool"}

# Settings of the dump's session that shape the text of values travelling as text, beyond
# those it sets (DateStyle, IntervalStyle, extra_float_digits): recorded in the snapshot
# (``Snapshot.text_settings``), so that ``apply`` reads destination keys as T holds them.
TEXT_SETTINGS = ("TimeZone", "bytea_output")
# The settings the dump sets itself, for the same reason.
FIXED_TEXT_SETTINGS = {"DateStyle": "ISO, YMD", "IntervalStyle": "postgres",
                       "extra_float_digits": "3"}

ROWS_PER_PART = 4_000_000
# Arrow batches read ahead of the converting and writing thread (each about 16 MiB).
READ_AHEAD_BATCHES = 2
# A column whose first batch has at most this fraction of distinct values is dictionary-
# encoded; others are not (a dictionary that overflows costs time and compresses worse).
DICTIONARY_MAX_DISTINCT_FRACTION = 0.1


@dataclass(frozen=True)
class SourceTable:
    """The source table as checked against the spec, before any row is read."""

    info: TableInfo
    version_kind: str  # timestamp | monotonic | counter


def check_source(spec: JobSpec, uri: str) -> SourceTable:
    """Connect to the source and check the table, key and version column exist.

    Raises InputError naming the spec field (``spec.source.primaryKey`` ...) when they do not,
    and for ``versionKind: timestamp`` on a column that is not a date or timestamp.
    """
    with connect(uri, "source") as conn:
        info = describe_table(conn, spec.source.table, "source", "spec.source.table")
        version = info.column(spec.source.version_column)
        ordered = version is None or _orders(conn, info, version.name)
        subscription = _subscription(conn, info)
    if subscription is not None:
        # not in recovery, so capturedAt would be the subscriber's now(), however far its
        # apply lags: a delete would remove the event lane's newer re-insert it lacks yet
        raise InputError(f"TABLESYNC_SOURCE_URI: {info.table} is a logical replication "
                         f"subscriber's copy (subscription {subscription}), whose lag no "
                         "time on the subscriber tells, so the snapshot's capturedAt and the "
                         "deletes' watermark would be later than its data; point "
                         "TABLESYNC_SOURCE_URI at the publisher or at a streaming (physical) "
                         "standby of it")
    names = [c.name for c in info.columns]
    folded: dict[str, str] = {}
    for name in names:
        other = folded.setdefault(name.lower(), name)
        if other != name:  # DuckDB, which diffs the snapshots, folds identifiers' case
            raise InputError(f"spec.source.table: columns {other!r} and {name!r} of "
                             f"{info.table} differ only in case, which the diff cannot tell "
                             "apart; rename one")
    reserved = [name for name in names if name.lower().startswith("_tablesync_")]
    if reserved:  # the delta's own columns (diff.OP, diff.OLD_VERSION) carry this prefix
        raise InputError(f"spec.source.table: column(s) {', '.join(reserved)} of {info.table} "
                         "use the prefix _tablesync_, which the sync reserves for its own "
                         "columns; rename them")
    for i, key in enumerate(spec.source.primary_key):
        if info.column(key) is None:
            raise InputError(f"spec.source.primaryKey[{i}]: column {key!r} does not exist in "
                             f"{info.table} (columns: {', '.join(names)})")
    if version is None:
        raise InputError(f"spec.source.versionColumn: column {spec.source.version_column!r} "
                         f"does not exist in {info.table} (columns: {', '.join(names)})")
    if version.type_name in _UNORDERED_VERSIONS or not ordered:
        why = ("which does not order changes" if ordered else
               "which Postgres cannot order (no < operator), so the version guard could not "
               "tell a newer row from an older one")
        raise InputError(f"spec.source.versionColumn: {version.name!r} is {version.pg_type}, "
                         f"{why}; use a timestamp, a sequence or a counter column")
    if version.type_name == "date" and spec.source.compare != "content":
        log.warning(f"spec.source.versionColumn: {version.name!r} is a date, so a row changed "
                    "again on the day of its last change keeps its version, and compare: "
                    "version does not see that change until the row's date moves on; use a "
                    "timestamp column or set spec.source.compare: content",
                    extra={"fields": {"coarseVersion": version.name}})
    kind = spec.source.version_kind
    if kind == "auto":
        kind = "timestamp" if version.type_name in _TIME_TYPES else "counter"
    elif kind == "timestamp" and version.type_name not in _TIME_TYPES:
        # its watermark is capturedAt, a point in time: it cannot be compared with a number
        raise InputError(f"spec.source.versionKind: timestamp needs a date, timestamp or "
                         f"timestamptz column, but {version.name!r} is {version.pg_type}; use "
                         "monotonic (one sequence for the whole table) or counter (per row)")
    return SourceTable(info=info, version_kind=kind)


def present_at_source(spec: JobSpec, uri: str, source: SourceTable,
                      keys: list[tuple[str, ...]], versioned: bool = False) -> int | None:
    """How many of ``keys`` (Postgres's text of each key column, in ``spec.source.primaryKey``
    order, from ``apply.missing_keys``) the source table holds now; None if it cannot tell
    (a key type without ``=``, or a text the source's type does not take back).

    ``versioned``: each key ends with the text of a version (T-1's), and counts only if the
    source's row has that version or a newer one.

    A sampled key the destination lacks is lost only if the source still has it: one the
    source deleted after the snapshot is the event lane's delete, delivered before the
    apply. Likewise a row the destination holds older than T-1 was set back only if the
    source has not gone back too (a row deleted and inserted again with a version counter
    that started over). One statement, read-only (a standby serves it), with the key texts
    as arrays.
    """
    if not keys:
        return 0
    return _look_up_at_source(spec, uri, source, keys, versioned, "count(*)", "EXISTS",
                              lambda rows: int(rows[0][0]))


def replayed_before(uri: str, moment: datetime) -> str | None:
    """If the source is a standby whose last replayed commit is before ``moment`` (or that
    has replayed none since it started), that commit's time (``"none"``); else None.

    A look-up at such a standby is not as of ``moment``: it may lack a delete the primary
    committed, and the event lane delivered, before then.
    """
    with connect(uri, "source") as conn:
        row = conn.execute("SELECT pg_is_in_recovery() AND COALESCE(r < %s, true), r::text "
                           "FROM (SELECT pg_last_xact_replay_timestamp() AS r) AS replayed",
                           (moment,)).fetchone()
    return None if not row or not row[0] else str(row[1] or "none")


def absent_at_source(spec: JobSpec, uri: str, source: SourceTable,
                     keys: list[tuple[str, ...]]) -> list[int] | None:
    """The positions in ``keys`` (Postgres's text of each key column, in
    ``spec.source.primaryKey`` order, from ``apply.sample_destination``) of those the source
    table lacks now; None if it cannot tell (a key type without ``=``). Read-only.

    These keys are the destination's, which may hold one the source's type refuses (a
    domain's stricter CHECK, an enum label it lacks): when the one statement fails so, each
    key is looked up alone, and one the source's type refuses is one the source lacks.
    """
    if not keys:
        return []
    return _look_up_at_source(spec, uri, source, keys, False, "u.n - 1", "NOT EXISTS",
                              lambda rows: sorted(int(row[0]) for row in rows),
                              one_by_one=True)


# a key text the source's type does not take back (a format, a domain's CHECK, NOT NULL)
_REFUSED = (psycopg.errors.DataError, psycopg.errors.IntegrityError)
_Read = TypeVar("_Read")


def _look_up_at_source(spec: JobSpec, uri: str, source: SourceTable,
                       keys: list[tuple[str, ...]], versioned: bool, select: str,
                       exists: str, read: Callable[[list[tuple[Any, ...]]], _Read],
                       one_by_one: bool = False) -> _Read | None:
    """``read`` of the rows of ``SELECT select FROM unnest(keys) WITH ORDINALITY u(k0, ...,
    n) WHERE exists (the source's row)``: one statement, the key texts as arrays. None, with
    a warning, if a key type has no ``=``, or the source's type does not take a text back;
    with ``one_by_one`` such a text is taken for a key the source lacks instead: each key
    is then looked up in a statement (and savepoint) of its own."""
    names = list(spec.source.primary_key)
    if versioned:
        names.append(spec.source.version_column)
    cols = {c.name: c for c in source.info.columns}
    table = qualified(source.info.table)
    aliases = ", ".join(f"k{i}" for i in range(len(names)))
    on = " AND ".join(f"t.{quote_ident(n)} {'>=' if versioned and i == len(names) - 1 else '='}"
                      f" CAST(u.k{i} AS {cols[n].pg_type})" for i, n in enumerate(names))
    query = with_text_arrays(
        f"SELECT {select} FROM unnest({TEXT_ARRAYS}) WITH ORDINALITY AS u({aliases}, n) "
        f"WHERE {exists} (SELECT 1 FROM {table} t WHERE {on})", len(names))
    columns = [[key[i] for key in keys] for i in range(len(names))]
    with connect(uri, "source") as conn:
        try:
            with conn.transaction():
                conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
                conn.execute("SET LOCAL IntervalStyle = 'postgres'")
                try:
                    with conn.transaction():  # a savepoint: the transaction outlives it
                        found = conn.execute(query, columns).fetchall()
                    return read(found)
                except _REFUSED:
                    if not one_by_one:
                        raise
                rows: list[tuple[Any, ...]] = []
                for at, key in enumerate(keys):
                    try:
                        with conn.transaction():  # a savepoint
                            found = conn.execute(query, [[text] for text in key]).fetchall()
                    except _REFUSED:
                        found = [(0,)]  # the source's type refuses it: the source lacks it
                    rows.extend((at + int(row[0]),) for row in found)
                return read(rows)
        except (psycopg.errors.UndefinedFunction, *_REFUSED) as err:
            log.warning(f"sampled keys could not be looked up at the source "
                        f"({str(err).splitlines()[0]}); "
                        + ("they count as lost" if not one_by_one else
                           "rows the destination holds and the source lacks are not looked "
                           "for this run"))
            return None


def _subscription(conn: Any, info: TableInfo) -> str | None:
    """The name of a logical replication subscription that writes the table (or one of its
    partitions) on the source, or None."""
    row = conn.execute(
        "SELECT srsubid FROM pg_subscription_rel WHERE srrelid = %(t)s::regclass OR srrelid "
        "IN (SELECT relid FROM pg_partition_tree(%(t)s::regclass)) LIMIT 1",
        {"t": qualified(info.table)}).fetchone()
    if row is None:
        return None
    # (only then: a role without pg_subscription's table privilege reads it by column grants)
    name = conn.execute("SELECT subname FROM pg_subscription WHERE oid = %s", row).fetchone()
    return str(name[0]) if name else str(row[0])


def _orders(conn: Any, info: TableInfo, column: str) -> bool:
    """Whether Postgres has ``<`` for the column's type (the apply's version guard needs it).

    Planned, not run (EXPLAIN): json, point and xml have none, and neither do some extension
    types; a domain or varchar finds its base type's.
    """
    c = quote_ident(column)
    try:
        conn.execute(f"EXPLAIN SELECT 1 FROM {qualified(info.table)} WHERE {c} < {c}")
    except psycopg.errors.UndefinedFunction:
        return False
    return True


def _select_list(info: TableInfo) -> str:
    return ", ".join(f"{select_expression(col, quote_ident(col.name))} AS {quote_ident(col.name)}"
                     for col in info.columns)


def select_expression(col: ColumnInfo, ref: str) -> str:
    """How the dump selects column ``col`` (``ref``: the column in SQL, e.g. ``d."id"``).

    Types Arrow carries exactly come as they are; numeric (parsed back exactly by
    :func:`as_dumped`, see the module docstring) and every other type come as Postgres's text.
    Read through ADBC and passed through :func:`as_dumped`, the values are those a snapshot
    holds, in its Arrow types.
    """
    return f"{ref}::text" if travels_as_text(col) else ref


def travels_as_text(col: ColumnInfo) -> bool:
    """Whether the dump reads ``col`` as Postgres's text (its form then depends on session
    settings: ``FIXED_TEXT_SETTINGS``, ``Snapshot.text_settings``)."""
    return col.type_name not in _NATIVE or col.type_name == "numeric"


def dumped_schema(schema: pa.Schema, columns: list[ColumnInfo]) -> pa.Schema:
    """The snapshot's schema for an ADBC result's ``schema`` of :func:`select_expression`s:
    numeric becomes decimal(p, s), each field notes its Postgres type."""
    by_name = {c.name: c for c in columns}
    return pa.schema([_target_field(f, by_name.get(f.name)) for f in schema])


def _target_field(field: pa.Field, col: ColumnInfo | None) -> pa.Field:
    """The Parquet-side field for an ADBC field: numeric becomes decimal(p, s)."""
    meta = {b"POSTGRESQL:type": (col.pg_type if col else "").encode()}
    if col is not None and col.type_name == "numeric":
        if col.precision and col.precision <= 38 and 0 <= (col.scale or 0) <= col.precision:
            return pa.field(field.name, pa.decimal128(col.precision, col.scale or 0), metadata=meta)
        # Wider (and unconstrained) numerics travel as exact text: DuckDB's DECIMAL stops at
        # 38 digits and would read a decimal256 as DOUBLE. So do a negative scale and one
        # above the precision (Postgres 15), which DuckDB's DECIMAL cannot hold.
        return pa.field(field.name, pa.string(), metadata=meta)
    return field.with_metadata(meta)


# Postgres stores +-infinity as INT64/INT32 extremes, counted from 2000-01-01; the driver's
# shift to 1970 wraps them (and finite values past 294247 AD) to values far below the earliest
# finite Postgres timestamp (4714 BC) or date. (+infinity, -infinity) as the driver returns them:
_PG_EPOCH_SHIFT = {"timestamp": 946_684_800_000_000, "date32": 10_957}  # microseconds, days
_BITS = {"timestamp": 64, "date32": 32}
_WRAPPED_INFINITY = {
    kind: (2 ** (bits - 1) - 1 + _PG_EPOCH_SHIFT[kind] - 2**bits,
           -(2 ** (bits - 1)) + _PG_EPOCH_SHIFT[kind])
    for kind, bits in _BITS.items()}
_MIN_FINITE = {"timestamp": -210_900_000_000_000_000, "date32": -2_500_000}
INFINITY = {kind: (2 ** (bits - 1) - 1, -(2 ** (bits - 1) - 1)) for kind, bits in _BITS.items()}
"""(+infinity, -infinity) in a snapshot: DuckDB's infinite TIMESTAMP and DATE, as Arrow
timestamp[us] / date32 storage integers."""


def time_kind(type_: pa.DataType) -> str | None:
    """The key of :data:`INFINITY` for a timestamp or date32 type, else None."""
    if pa.types.is_timestamp(type_):
        return "timestamp"
    return "date32" if pa.types.is_date32(type_) else None


def _map_infinity(array: pa.Array, name: str) -> pa.Array:
    """The driver's wrapped +-infinity as :data:`INFINITY`; InputError on a finite value
    Arrow cannot hold (past 294247 AD)."""
    kind = time_kind(array.type)
    assert kind is not None
    ints = array.cast(pa.int64() if kind == "timestamp" else pa.int32())
    lowest = pc.min(ints).as_py()
    if lowest is None or lowest >= _MIN_FINITE[kind]:
        return array
    wrapped_pos, wrapped_neg = _WRAPPED_INFINITY[kind]
    pos, neg = pc.equal(ints, wrapped_pos), pc.equal(ints, wrapped_neg)
    finite_beyond = pc.and_(pc.less(ints, _MIN_FINITE[kind]),
                            pc.invert(pc.or_(pos, neg)))
    if pc.any(finite_beyond).as_py():
        raise InputError(f"source column {name!r} holds a date past year 294247, which cannot "
                         "be carried exactly (Arrow counts microseconds in 64 bits); replace it "
                         "with 'infinity' or a nearer date in the source")
    inf_pos, inf_neg = INFINITY[kind]
    mapped = pc.if_else(pos, pa.scalar(inf_pos, ints.type),
                        pc.if_else(neg, pa.scalar(inf_neg, ints.type), ints))
    return mapped.cast(array.type)


def infinities(array: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Booleans (+infinity, -infinity): which values of a timestamp or date array are
    :data:`INFINITY`."""
    kind = time_kind(array.type)
    assert kind is not None
    ints = array.cast(pa.int64() if kind == "timestamp" else pa.int32())
    pos, neg = INFINITY[kind]
    return pc.equal(ints, pos), pc.equal(ints, neg)


def is_infinite(array: pa.Array) -> pa.Array:
    """Booleans: which values of a timestamp or date array are +-:data:`INFINITY`."""
    return pc.or_(*infinities(array))


def as_dumped(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """An ADBC batch of :func:`select_expression`s in ``schema`` (:func:`dumped_schema`):
    +-infinity as :data:`INFINITY`, numeric text as decimal. InputError naming the column
    for a value the snapshot's type cannot hold."""
    arrays = []
    for i, target in enumerate(schema):
        array = batch.column(i)
        if time_kind(array.type) is not None:
            array = _map_infinity(array, target.name)
        if isinstance(array.type, pa.ExtensionType) and not array.type.equals(target.type):
            array = array.storage  # numeric arrives as an opaque string extension
        if not array.type.equals(target.type):
            try:
                array = array.cast(target.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                if pa.types.is_decimal(target.type) and pc.any(pc.equal(array, "NaN")).as_py():
                    pg_type = (target.metadata or {}).get(b"POSTGRESQL:type", b"").decode()
                    raise InputError(f"source column {target.name!r} holds NaN, which a "
                                     f"{pg_type} column cannot carry (it travels as "
                                     f"{target.type}); set those values to NULL at the source, "
                                     "or make the column plain numeric at the source and in "
                                     "the destination (it then travels as its exact text, "
                                     "NaN too)") from None
                raise InputError(f"source column {target.name!r}: a value cannot be stored "
                                 f"exactly as {target.type} ({err})") from None
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class ReadAhead:
    """Iterate an Arrow stream with the next batches read on a thread of their own.

    The driver decodes COPY rows while the caller converts and compresses the previous
    batch: both release the GIL, so on two cores the dump takes about as long as the slower
    of the two instead of their sum. Holds at most ``READ_AHEAD_BATCHES`` batches. An error
    in the reading thread is raised in the caller's, as ``map_error`` makes it (the stream's own
    errors differ from the caller's: a failing disk is not a failing source); :meth:`close`
    stops the thread.
    """

    _END = object()

    def __init__(self, reader: Any, depth: int = READ_AHEAD_BATCHES,
                 map_error: Callable[[Exception], Exception] = lambda err: err) -> None:
        self._reader = reader
        self._map_error = map_error
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="dump-read-ahead", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for batch in self._reader:
                if not self._put(batch):
                    return
        except Exception as err:  # handed to the caller's thread by __iter__
            self._put(self._map_error(err))
            return
        except BaseException as err:
            self._put(err)
            return
        self._put(self._END)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop reading ahead (the stream is left where it is) and wait for the thread."""
        self._stop.set()
        self._thread.join()


class PartWriter:
    """Arrow batches into zstd Parquet parts ``part-NNNNN.parquet`` of ``ROWS_PER_PART`` rows.

    Encodings are chosen once, from the first batch: dictionary for columns with few distinct
    values (``DICTIONARY_MAX_DISTINCT_FRACTION``), DELTA_BINARY_PACKED for the other integer,
    date, time and timestamp columns and decimals up to 18 digits (stored as integers), plain
    for the rest. Statistics are kept for ``statistics_columns`` only (key and version). Also used
    by ``bench/`` to write snapshots the way a dump does.
    """

    def __init__(self, out_dir: Path, schema: pa.Schema,
                 statistics_columns: list[str]) -> None:
        self.out_dir = out_dir
        self.schema = schema
        self.parts: list[Path] = []
        self._statistics = statistics_columns
        self._options: dict[str, Any] | None = None
        self._writer: pq.ParquetWriter | None = None
        self._part_rows = 0

    def _choose_options(self, batch: pa.RecordBatch) -> dict[str, Any]:
        dictionary: list[str] = []
        delta: dict[str, str] = {}
        for field, array in zip(self.schema, batch.columns, strict=True):
            flat = pa.types.is_primitive(field.type) or pa.types.is_string(field.type) \
                or pa.types.is_binary(field.type) or pa.types.is_decimal(field.type)
            if not flat or pa.types.is_boolean(field.type):
                continue
            if pc.count_distinct(array).as_py() <= len(array) * DICTIONARY_MAX_DISTINCT_FRACTION:
                dictionary.append(field.name)
            elif (pa.types.is_integer(field.type) or pa.types.is_timestamp(field.type)
                  or pa.types.is_date32(field.type) or pa.types.is_time(field.type)
                  or (pa.types.is_decimal128(field.type) and field.type.precision <= 18)):
                delta[field.name] = "DELTA_BINARY_PACKED"
        return {"use_dictionary": dictionary, "column_encoding": delta or None}

    def write(self, batch: pa.RecordBatch) -> None:
        if self._options is None:
            self._options = self._choose_options(batch)
        if self._writer is None or self._part_rows >= ROWS_PER_PART:
            if self._writer is not None:
                self._writer.close()
            path = self.out_dir / f"part-{len(self.parts):05d}.parquet"
            self.parts.append(path)
            self._writer = pq.ParquetWriter(path, self.schema, compression="zstd",
                                            write_statistics=self._statistics,
                                            store_decimal_as_integer=True, **self._options)
            self._part_rows = 0
        self._writer.write_batch(batch)
        self._part_rows += batch.num_rows

    def close(self) -> list[Path]:
        """Finish the last part; return the parts (one empty part when nothing was written)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self.parts:  # an empty table is still a snapshot, with one empty part
            path = self.out_dir / "part-00000.parquet"
            pq.write_table(self.schema.empty_table(), path, compression="zstd")
            self.parts.append(path)
        return self.parts


def dump(spec: JobSpec, uri: str, source: SourceTable, work_dir: Path,
         snapshot_id: str, memory_limit: str = "1GB") -> tuple[Snapshot, list[Path]]:
    """Read the source table into Parquet parts under ``work_dir``.

    Returns the snapshot manifest (not yet stored) and the local part files. Raises InputError
    on NULL or duplicated keys and NULL versions, TransientError on connection failures.
    ``memory_limit``: DuckDB's, for the duplicate-key check (``TABLESYNC_MEMORY_LIMIT``).
    """
    started = time.monotonic()
    info = source.info
    out_dir = work_dir / "snapshot" / snapshot_id
    out_dir.mkdir(parents=True, exist_ok=True)
    key_names = list(spec.source.primary_key)
    version_name = spec.source.version_column
    version_col = info.column(version_name)
    version_type = version_col.type_name if version_col is not None else ""
    progress = logs.Progress("dump", total=info.estimated_rows)
    parts: list[Path] = []
    rows = 0
    ends: list[pa.Array | None] = []  # each batch's lowest and highest version

    conn = adbc_connect(uri, "source", autocommit=True)
    try:
        with adbc_errors("source", f"reading {info.table}"):
            cur = conn.cursor()
            try:
                # A standby's last replayed commit, read before the transaction's snapshot is
                # fixed: one replayed while the first statement runs (after the snapshot) made
                # capturedAt later than the data, and a delete then removed the event lane's
                # re-insert the snapshot lacks. ``replayed_wall``: in the session's TimeZone.
                cur.execute("SELECT c, c::timestamp FROM (SELECT "
                            "pg_last_xact_replay_timestamp() AS c) AS replayed")
                replayed, replayed_wall = cur.fetchone()
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                # Values that travel as text (ranges, intervals, ...) in a form the apply reads
                # the same whatever its session's styles (a DMY DateStyle swaps day and month),
                # floats inside them (arrays, point, ...) exactly. SET, not set_config(): a
                # SELECT would fix the transaction's snapshot before its time is captured.
                for name, value in FIXED_TEXT_SETTINGS.items():
                    cur.execute(f"SET LOCAL {name} = {quote_literal(value)}")
                # The whole table is one statement: a statement_timeout of the replica's
                # role or database (set for the applications' queries) cancelled every
                # dump longer than it, run after run; pg_dump turns it off likewise.
                cur.execute("SET LOCAL statement_timeout = 0")
                # The first statement fixes the transaction's snapshot: capture its as-of time
                # (on a standby, the commit replayed before it, read above).
                # ``wall``: the same instant as wall-clock time in the session's TimeZone.
                cur.execute(
                    "SELECT r, c, c::timestamp, r AND pg_last_xact_replay_timestamp() IS NULL, "
                    "has_function_privilege('pg_control_checkpoint()', 'EXECUTE'), "
                    "has_function_privilege('pg_control_system()', 'EXECUTE') AND "
                    "has_function_privilege(CASE WHEN r THEN 'pg_last_wal_replay_lsn()' ELSE "
                    "'pg_current_wal_flush_lsn()' END, 'EXECUTE') "
                    "FROM (SELECT pg_is_in_recovery() AS r, COALESCE(CASE WHEN "
                    "pg_is_in_recovery() THEN pg_last_xact_replay_timestamp() END, now()) AS c) "
                    "AS captured")
                (in_recovery, captured, wall, no_replay, may_read_control,
                 may_read_position) = cur.fetchone()
                if in_recovery and not no_replay:
                    if replayed is None:  # its first commit since a restart replayed just now
                        no_replay = True
                    else:
                        captured, wall = replayed, replayed_wall
                position, system = _wal_position(cur, bool(in_recovery), may_read_position)
                if no_replay:
                    # A standby that has replayed no commit since it started: the data is at
                    # least as fresh as the checkpoint it restarted from; now() would hide a
                    # standby stuck after a restart (a separate statement: a role without the
                    # function's EXECUTE would fail the first one even where it is not used)
                    if may_read_control:
                        cur.execute("SELECT c, c::timestamp FROM (SELECT (pg_control_checkpoint())"
                                    ".checkpoint_time AS c) AS restarted")
                        captured, wall = cur.fetchone()
                    else:
                        log.warning("standby has replayed no commit since it started and "
                                    "pg_control_checkpoint() is not allowed: capturedAt is now()")
                cur.execute("SELECT " + ", ".join(f"current_setting({quote_literal(name)})"
                                                  for name in TEXT_SETTINGS))
                text_settings = dict(zip(TEXT_SETTINGS, cur.fetchone(), strict=True))
                cur.execute(f"SELECT {_select_list(info)} FROM {qualified(info.table)}")
                reader = cur.fetch_record_batch()
                schema = dumped_schema(reader.schema, info.columns)
                key_idx = [schema.get_field_index(k) for k in key_names]
                ver_idx = schema.get_field_index(version_name)
                writer = PartWriter(out_dir, schema, [*key_names, version_name])
                ahead = ReadAhead(reader, map_error=lambda err: map_stream_error(
                    err, "source", f"reading {info.table}"))
                try:
                    for batch in ahead:
                        if batch.num_rows == 0:
                            continue
                        batch = as_dumped(batch, schema)
                        for name, idx in zip(key_names, key_idx, strict=True):
                            if batch.column(idx).null_count:
                                raise InputError(f"spec.source.primaryKey: column {name!r} of "
                                                 f"{info.table} holds NULL; key columns must be "
                                                 "NOT NULL")
                        version = batch.column(ver_idx)
                        if version.null_count:
                            raise InputError(f"spec.source.versionColumn: column {version_name!r} "
                                             f"of {info.table} holds NULL in {version.null_count} "
                                             "rows; every row needs a version")
                        if time_kind(version.type) and pc.any(is_infinite(version)).as_py():
                            raise InputError(f"spec.source.versionColumn: column {version_name!r} "
                                             f"of {info.table} holds 'infinity' or '-infinity'; "
                                             "versions must be finite to be ordered")
                        ends.append(version_extremes(version, version_type))
                        writer.write(batch)
                        rows += batch.num_rows
                        progress.update(batch.num_rows)
                finally:
                    ahead.close()
                parts = writer.close()
                cur.execute("COMMIT")
            finally:
                cur.close()
    finally:
        conn.close()
        progress.close()

    if info.inherited or not info.has_unique(spec.source.primary_key):
        _check_unique(parts, key_names, str(info.table), work_dir, memory_limit)
    # kept as Arrow scalars: Python's datetime stops at years 1..9999
    span = None if not ends or any(e is None for e in ends) else version_extremes(
        pa.concat_arrays(ends), version_type)
    lo, hi = (None, None) if span is None else (span[0], span[1])
    size = sum(p.stat().st_size for p in parts)
    captured_iso = captured.isoformat()
    watermark: str | None = None
    if source.version_kind == "timestamp":
        watermark = captured_iso if version_type == "timestamptz" else wall.isoformat()
    elif source.version_kind == "monotonic" and hi is not None:
        watermark = _version_text(hi)
    snap = Snapshot(
        id=snapshot_id, table=str(info.table), captured_at=captured_iso,
        in_recovery=bool(in_recovery), rows=rows, bytes=size,
        columns=[Column(name=f.name, pg_type=(info.column(f.name).pg_type  # type: ignore[union-attr]
                                              ), arrow_type=str(f.type)) for f in schema],
        primary_key=key_names, version_column=version_name, version_kind=source.version_kind,
        min_version=None if lo is None else _version_text(lo),
        max_version=None if hi is None else _version_text(hi),
        watermark=watermark, dump_seconds=round(time.monotonic() - started, 3),
        lsn=position, system_identifier=system, text_settings=text_settings,
    )
    log.info("dumped", extra={"fields": {**progress.figures(), "bytes": size,
                                         "parts": len(parts), "capturedAt": captured_iso}})
    return snap, parts


def version_extremes(versions: pa.Array, type_name: str) -> pa.Array | None:
    """The lowest and highest of ``versions`` (as dumped, not empty), in Postgres's order of
    the version column's type (``type_name``: ``pg_type.typname``), as an array of two; None
    where the snapshot's form does not tell that order: a version travelling as text other
    than numeric (pg_lsn, a domain, text: '0/9' > '0/10' as text).

    numeric's text is ordered by value (NaN above Infinity, as Postgres sorts it): the
    extremes as doubles, then exactly among the values nearest to them.
    """
    if not (pa.types.is_string(versions.type) or pa.types.is_large_string(versions.type)):
        mm = pc.min_max(versions)
        return pa.array([mm["min"], mm["max"]], versions.type)
    if type_name != "numeric":
        return None
    approx = versions.cast(pa.float64())
    nan = pc.is_nan(approx)
    numbers, approx = versions.filter(pc.invert(nan)), approx.filter(pc.invert(nan))
    if len(numbers) == 0:
        return pa.array(["NaN", "NaN"], versions.type)
    mm = pc.min_max(approx)
    lowest = min(numbers.filter(pc.equal(approx, mm["min"])).to_pylist(), key=Decimal)
    highest = max(numbers.filter(pc.equal(approx, mm["max"])).to_pylist(), key=Decimal)
    return pa.array([lowest, "NaN" if pc.any(nan).as_py() else highest], versions.type)


def _wal_position(cur: Any, in_recovery: bool, allowed: bool) -> tuple[str | None, str | None]:
    """(lsn, system_identifier) of the data the transaction sees (``Snapshot.lsn``), or Nones.

    Read after the snapshot was fixed, so never before it. Optional: without EXECUTE on the
    functions, on a server where they fail (a managed service may not offer them) or give no
    position, a snapshot behind the last applied one is told by capturedAt alone; the read
    runs under a savepoint so that a failure leaves the transaction and its snapshot usable.
    """
    import adbc_driver_manager

    if not allowed:
        log.warning("pg_control_system() or the WAL position functions are not allowed: a "
                    "snapshot behind the last applied one is told by capturedAt alone")
        return None, None
    function = "pg_last_wal_replay_lsn()" if in_recovery else "pg_current_wal_flush_lsn()"
    cur.execute("SAVEPOINT tablesync_wal_position")
    try:
        cur.execute(f"SELECT {function}::text, (pg_control_system()).system_identifier::text")
        position, system = cur.fetchone()
    except adbc_driver_manager.Error as err:
        cur.execute("ROLLBACK TO SAVEPOINT tablesync_wal_position")
        log.warning(f"{function} or pg_control_system() failed ({str(err).splitlines()[0]}): a "
                    "snapshot behind the last applied one is told by capturedAt alone")
        return None, None
    cur.execute("RELEASE SAVEPOINT tablesync_wal_position")
    if not position or position == "0/0" or not system:
        return None, None
    return str(position), str(system)


def _version_text(value: pa.Scalar) -> str:
    """A version as text: ISO 8601 for times (Arrow's form outside Python's years 1..9999)."""
    try:
        py = value.as_py()
    except (OverflowError, ValueError):  # a date or time Python's datetime cannot hold
        return str(pa.array([value]).cast(pa.string())[0].as_py())
    return py.isoformat() if hasattr(py, "isoformat") else str(py)


def _check_unique(parts: list[Path], keys: list[str], table: str, work_dir: Path,
                  memory_limit: str) -> None:
    """Reject a snapshot with a duplicated key (only when the source has no unique index, or
    has child tables that one does not span: a view, for one).

    Its GROUP BY holds every key: DuckDB runs as in the diff (``diff.open_duckdb``), within
    ``memory_limit`` and spilling under ``work_dir``. DuckDB's own defaults (80 % of the
    node's memory, a thread per node CPU, spilling into the read-only working directory)
    got a pod with a memory limit OOMKilled on a large source.
    """
    from .diff import open_duckdb

    cols = ", ".join(quote_ident(k) for k in keys)
    files = [str(p) for p in parts]
    con = open_duckdb(work_dir, memory_limit)
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
