"""Stage 3, apply: the fat delta into the destination Postgres, in one transaction.

Called by ``pipeline``. Rules from DESIGN.md sections 1 and 4:

* Stage: the delta is COPYed (ADBC ingest, Arrow-native) into a temporary table. A timestamp
  or date column holding +-infinity (DuckDB's, see ``dump.INFINITY``) is staged as NULL there
  plus a flag column, since the driver cannot COPY them, and put back by :func:`_value`.
* Columns: the destination's stored generated columns are not written (it computes them); a
  key ``GENERATED ALWAYS AS IDENTITY`` takes the source's values (``OVERRIDING SYSTEM VALUE``).
* Upsert, set-based: ``INSERT ... ON CONFLICT (pk) DO UPDATE ... WHERE dest.version <
  EXCLUDED.version``, so a stale snapshot value never overwrites a fresher event. Absolute
  values only; rows are taken in key order so concurrent writers lock in one order. A
  destination row with a NULL version counts as oldest. At an equal version the staged row
  wins only where the spec says the version is not the whole story (:func:`_newer`):
  ``compare: content`` when the content differs, ``deletes: soft`` when the row is stamped.
* Deletes (before the upsert) are version-safe: a row absent from T is deleted only if the
  destination's copy is not newer than T: ``dest.version <= watermark`` for timestamp and
  monotonic versions, ``dest.version <=`` T-1's version of that row for counters. ``soft``
  stamps ``destination.softDeleteColumn`` with T's capturedAt instead; ``ignore`` leaves rows
  alone. A delete kept because the destination was newer is asked again by the next run
  (:func:`_pending_deletes`).
* Outcome per row: inserted, updated, deleted, alreadyCurrent (the destination already held
  this version: the event lane delivered it), staleSkipped (the destination held something
  newer). ON CONFLICT locks every conflicting row, so the counts taken after the upsert in the
  same transaction are exact. When every staged row was written (the usual case) there is
  nothing to classify, and the join that counts is skipped.

Applying the same delta twice changes nothing the second time (every row is then
alreadyCurrent or staleSkipped). Nothing is visible to others until the commit.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import logs
from .diff import OLD_VERSION, OP, PENDING, SAMPLED_VERSION
from .dump import (
    FIXED_TEXT_SETTINGS,
    INFINITY,
    as_dumped,
    dumped_schema,
    infinities,
    is_infinite,
    select_expression,
    time_kind,
    travels_as_text,
)
from .errors import InputError
from .postgres import (
    TEXT_ARRAYS,
    ColumnInfo,
    TableInfo,
    adbc_connect,
    adbc_errors,
    connect,
    describe_table,
    qualified,
    quote_ident,
    quote_literal,
    with_text_arrays,
)
from .snapshots import Delta, Snapshot
from .spec import JobSpec

log = logs.get("tablesync_job.apply")

STAGE = "_tablesync_stage"
ROW = "_tablesync_row"  # the stage row's index in the delta's parts, in order


@dataclass
class ApplyResult:
    """What the apply did, row by row. ``drift`` = inserted + updated + deleted."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    already_current: int = 0
    stale_skipped: int = 0
    seconds: float = 0.0
    # Deletes the destination held a newer row for, committed as it was: their keys and the
    # destination's version (as OLD_VERSION, in the delta's type). The next diff asks again
    # (``pipeline.phase_apply`` stores them beside the snapshot). None when there are none.
    pending_deletes: pa.Table | None = None
    # of them, the destination's rows a bootstrap or refill found its snapshot lacks
    absent: int = 0

    @property
    def drift(self) -> int:
        return self.inserted + self.updated + self.deleted

    def plus(self, other: ApplyResult) -> ApplyResult:
        """Both applies' counts and seconds added up."""
        return ApplyResult(self.inserted + other.inserted, self.updated + other.updated,
                           self.deleted + other.deleted,
                           self.already_current + other.already_current,
                           self.stale_skipped + other.stale_skipped,
                           round(self.seconds + other.seconds, 3))

    def as_report(self) -> dict[str, int]:
        return {"inserted": self.inserted, "updated": self.updated, "deleted": self.deleted,
                "alreadyCurrent": self.already_current, "staleSkipped": self.stale_skipped}

    @classmethod
    def from_report(cls, counts: dict[str, int]) -> ApplyResult:
        """The counts of :meth:`as_report` back (a missing one is 0)."""
        return cls(inserted=counts.get("inserted", 0), updated=counts.get("updated", 0),
                   deleted=counts.get("deleted", 0),
                   already_current=counts.get("alreadyCurrent", 0),
                   stale_skipped=counts.get("staleSkipped", 0))


_INTEGERS = ("smallint", "integer", "bigint")
_INTEGER_DIGITS = {"smallint": 5, "integer": 10, "bigint": 19}
_TEXTS = ("character varying", "character", "text")


def _numeric_shape(pg_type: str) -> tuple[int, int] | None:
    """(precision, scale) of ``numeric(p,s)``; None for unconstrained numeric."""
    inside = pg_type[len("numeric("):-1] if pg_type.startswith("numeric(") else ""
    if not inside:
        return None
    precision, _, scale = inside.partition(",")
    return int(precision), int(scale or 0)


def lossless(source: str, dest: str) -> bool:
    """Whether every value of Postgres type ``source`` survives a CAST to ``dest`` unchanged.

    Types are ``format_type()`` spellings. Equal types, and these widenings: a wider integer
    or a numeric with room for its digits; numeric(p,s) into numeric with at least as many
    integer and fraction digits; any text type into text, varchar(n) into a longer or
    unbounded varchar; a timestamp or time into one of the same kind with at least as many
    fraction digits; real into double precision; json into jsonb. An array as its
    elements (``integer[]`` into ``bigint[]``); an array and a scalar never.
    """
    if source == dest:
        return True
    if source.endswith("[]") or dest.endswith("[]"):
        return (source.endswith("[]") and dest.endswith("[]")
                and lossless(source[:-2], dest[:-2]))
    base_src, base_dst = source.split("(")[0], dest.split("(")[0]
    if source in _INTEGERS and dest in _INTEGERS:
        return _INTEGERS.index(dest) >= _INTEGERS.index(source)
    if base_dst == "numeric" and (source in _INTEGERS or base_src == "numeric"):
        to = _numeric_shape(dest)
        if to is None:
            return True
        if source in _INTEGERS:
            return to[0] - to[1] >= _INTEGER_DIGITS[source]
        frm = _numeric_shape(source)
        return frm is not None and to[1] >= frm[1] and to[0] - to[1] >= frm[0] - frm[1]
    if base_src in _TEXTS and dest == "text":
        return True
    if base_src == "character varying" and base_dst == "character varying":
        return dest == "character varying" or (
            source != "character varying" and int(dest[18:-1]) >= int(source[18:-1]))
    frm_time, to_time = _TIME_PRECISION.match(source), _TIME_PRECISION.match(dest)
    if frm_time and to_time and frm_time.group("base", "zone") == to_time.group("base", "zone"):
        return int(to_time["digits"] or 6) >= int(frm_time["digits"] or 6)
    return (source, dest) in {("real", "double precision"), ("json", "jsonb")}


# timestamp(3) with time zone, time without time zone, ...: fraction digits 0-6 (default 6)
_TIME_PRECISION = re.compile(r"^(?P<base>timestamp|time)(?:\((?P<digits>\d)\))?"
                             r"(?P<zone> with(?:out)? time zone)$")


# softDeleteColumn types that take capturedAt (an ISO 8601 instant) and NULL
_STAMPABLE = {"timestamptz", "timestamp", "date", "text", "varchar"}


def _check_privileges(conn: Any, spec: JobSpec, info: TableInfo) -> None:
    """InputError naming the grants the destination role lacks for this spec's apply: SELECT
    (the version guard, the deletes and the counts read the destination's rows), INSERT and
    UPDATE on the table, DELETE for ``deletes: apply``, TEMPORARY on the database (the stage
    is a temporary table)."""
    row = conn.execute(
        "SELECT current_user, has_table_privilege(%(t)s, 'SELECT'), "
        "has_table_privilege(%(t)s, 'INSERT'), "
        "has_table_privilege(%(t)s, 'UPDATE'), has_table_privilege(%(t)s, 'DELETE'), "
        "has_database_privilege(current_database(), 'TEMPORARY'), current_database()",
        {"t": qualified(info.table)}).fetchone()
    user, can_select, can_insert, can_update, can_delete, can_temp, database = row
    lacking = [name for name, ok in (("SELECT", can_select), ("INSERT", can_insert),
                                     ("UPDATE", can_update),
                                     ("DELETE", can_delete or spec.destination.deletes != "apply"))
               if not ok]
    grants = []
    if lacking:
        grants.append(f"GRANT {', '.join(lacking)} ON {qualified(info.table)} TO "
                      f"{quote_ident(user)}")
    if not can_temp:
        grants.append(f"GRANT TEMPORARY ON DATABASE {quote_ident(database)} TO "
                      f"{quote_ident(user)}")
    if grants:
        deletes = ", deletes" if spec.destination.deletes == "apply" else ""
        raise InputError(f"spec.destination.table: role {user} may not apply to {info.table} "
                         f"(the apply reads, inserts, updates{deletes} and stages in a "
                         f"temporary table); {'; '.join(grants)}")


def check_destination(spec: JobSpec, uri: str, source_columns: list[tuple[str, str]],
                      definitions: dict[str, str] | None = None) -> TableInfo:
    """Check the destination table can take the source's rows; InputError naming the field.

    ``source_columns`` are (name, ``format_type``) pairs; ``definitions`` what the source's
    user-defined types are made of, by column (``ColumnInfo.definition``). Every source
    column must exist in the destination with a type that takes its values unchanged
    (:func:`lossless`; a user-defined type of the same name made the same way: a domain over
    numeric(12,0) there rounds 1.50 to 2, a composite type's attributes in another order
    swap values), the
    primary key must be a unique key there (ON CONFLICT needs it), a destination-only NOT
    NULL column needs a default (or a BEFORE INSERT trigger that may fill it), and
    ``softDeleteColumn`` must exist for ``deletes: soft``, in the destination only.
    """
    with connect(uri, "destination") as conn:
        if conn.info.server_version < 130000:  # pg_current_xact_id(), see Transaction
            raise InputError(f"TABLESYNC_DESTINATION_URI: the destination runs Postgres "
                             f"{conn.info.server_version // 10000}; tablesync applies to "
                             "Postgres 13 or later")
        info = describe_table(conn, spec.destination.table, "destination",
                              "spec.destination.table")
        if info.kind not in ("r", "p"):
            what = {"v": "a view", "m": "a materialized view", "f": "a foreign table"}
            raise InputError(f"spec.destination.table: {info.table} is "
                             f"{what.get(info.kind, 'not a table')}; the destination must be a "
                             "table (or a partitioned table)")
        _check_privileges(conn, spec, info)
    have = {c.name for c in info.columns}
    missing = [name for name, _ in source_columns if name not in have]
    if missing:
        raise InputError(f"spec.destination.table: {info.table} lacks source column(s) "
                         f"{', '.join(missing)}; add them to the destination table")
    for name, source_type in source_columns:
        dest_type = info.column(name).pg_type  # type: ignore[union-attr]
        if not lossless(source_type, dest_type):
            raise InputError(f"spec.destination.table: column {name!r} is {source_type} in the "
                             f"source but {dest_type} in {info.table}, which could change its "
                             f"values; make the destination column {source_type} (or wider)")
        made = (definitions or {}).get(name, "")
        dest_made = info.column(name).definition  # type: ignore[union-attr]
        if made and dest_type == source_type and dest_made != made:
            raise InputError(f"spec.destination.table: column {name!r} is {source_type} in both, "
                             f"but that type is made of ({made}) in the source and "
                             f"({dest_made}) in {info.table}, which could change its values; "
                             "define it in the destination as in the source")
    keys = set(spec.source.primary_key) | {spec.source.version_column}
    for name, _ in source_columns:
        col = info.column(name)
        assert col is not None
        if col.generated and name in keys:
            raise InputError(f"spec.destination.table: column {name!r} of {info.table} is "
                             "GENERATED ALWAYS AS (...) STORED, but the sync must write its "
                             "key and version columns; make it a plain column there")
        if col.identity == "a" and name not in spec.source.primary_key:
            raise InputError(f"spec.destination.table: column {name!r} of {info.table} is "
                             "GENERATED ALWAYS AS IDENTITY outside the key, which an UPDATE may "
                             f"not set; ALTER TABLE {qualified(info.table)} ALTER COLUMN "
                             f"{quote_ident(name)} SET GENERATED BY DEFAULT")
    # ON CONFLICT (key) takes every unique key on those columns as an arbiter and refuses a
    # DEFERRABLE one even beside a plain unique index; and Postgres alters the deferrability
    # of foreign keys only (ALTER CONSTRAINT on a unique key: "not a foreign key constraint")
    if any(set(key) == set(spec.source.primary_key) for key in info.deferrable_keys):
        columns = ", ".join(quote_ident(c) for c in spec.source.primary_key)
        raise InputError(f"spec.destination.table: the unique key of {info.table} on "
                         f"({', '.join(spec.source.primary_key)}) is DEFERRABLE, which ON "
                         "CONFLICT cannot use, even beside a plain unique index; drop it and "
                         f"add it again NOT DEFERRABLE (ALTER TABLE {qualified(info.table)} "
                         f"DROP CONSTRAINT <its name>, ADD PRIMARY KEY ({columns}); or ADD "
                         f"UNIQUE ({columns})): Postgres cannot ALTER a unique key's "
                         "deferrability")
    if not info.has_unique(spec.source.primary_key, immediate=True):
        raise InputError(f"spec.destination.table: {info.table} has no primary key or unique "
                         f"index on ({', '.join(spec.source.primary_key)}); create one "
                         "(the upsert needs it)")
    sources = {name for name, _ in source_columns}
    # (NOT NULL is checked after BEFORE INSERT triggers, which may fill such a column)
    unfilled = [c.name for c in info.columns if c.not_null and not c.has_default
                and not info.insert_triggers
                and not c.generated and c.name not in sources
                and not (spec.destination.deletes == "soft"
                         and c.name == spec.destination.soft_delete_column)]
    if unfilled:
        raise InputError(f"spec.destination.table: {info.table} has NOT NULL column(s) "
                         f"{', '.join(unfilled)} without a default that the source does not "
                         "have, so no row could be inserted; give them a DEFAULT or drop NOT "
                         "NULL")
    soft = spec.destination.soft_delete_column
    if spec.destination.deletes == "soft" and soft not in have:
        raise InputError(f"spec.destination.softDeleteColumn: {info.table} has no column "
                         f"{soft!r}; add a timestamptz column or change deletes")
    soft_col = info.column(soft) if spec.destination.deletes == "soft" else None
    if soft_col is not None and (soft_col.type_name not in _STAMPABLE or soft_col.not_null
                                 or soft_col.generated):
        raise InputError(f"spec.destination.softDeleteColumn: {soft!r} of {info.table} is "
                         f"{soft_col.pg_type}{' NOT NULL' if soft_col.not_null else ''}; it "
                         "holds the time a row was deleted and NULL while it lives, so make it "
                         "a nullable timestamptz (or timestamp, date, text)")
    if spec.destination.deletes == "soft" and soft in {name for name, _ in source_columns}:
        raise InputError(f"spec.destination.softDeleteColumn: {soft!r} is also a source column, "
                         "whose values the sync writes; name a destination-only column")
    return info


@dataclass
class _Staged:
    """Rows COPYed into the stage: upserts (insert and update) and deletes; and, for each
    timestamp or date column holding +-infinity, the stage's flag column beside it."""

    upserts: int = 0
    deletes: int = 0
    infinite: dict[str, str] = field(default_factory=dict)
    # decimal columns: numeric(p,s) of each, the scale the driver's COPY drops (1.50 as 1.5)
    decimals: dict[str, str] = field(default_factory=dict)
    survived: int = 0  # deletes whose destination row stayed (it was newer)
    pending: bool = False  # the delta marks the deletes asked again (diff.PENDING)


def _infinite_columns(parts: list[Path], schema: pa.Schema) -> list[str]:
    """The timestamp and date columns of the delta holding +-infinity.

    Parquet statistics answer for most row groups (an infinity is the column's extreme); a
    row group without them is read, that column only.
    """
    found: list[str] = []
    files = [pq.ParquetFile(part) for part in parts]
    for index, field_ in enumerate(schema):
        kind = time_kind(field_.type)
        if kind is None:
            continue
        pos, neg = INFINITY[kind]
        if any(_holds_infinity(file, index, field_.name, pos, neg) for file in files):
            found.append(field_.name)
    return found


def _holds_infinity(file: pq.ParquetFile, index: int, name: str, pos: int, neg: int) -> bool:
    meta = file.metadata
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(index).statistics
        if stats is not None and stats.has_min_max:
            if stats.max_raw == pos or stats.min_raw == neg:
                return True
        elif pc.any(is_infinite(file.read_row_group(group, columns=[name]).column(0))).as_py():
            return True
    return False


def _split_infinity(batch: pa.RecordBatch, infinite: dict[str, str]) -> pa.RecordBatch:
    """NULL for +-infinity in each ``infinite`` column, and its flag column: 1, -1 or NULL.

    The ADBC driver refuses DuckDB's infinities when it COPYs them into the stage (they are
    out of Postgres's range once shifted to its epoch); :func:`_value` puts them back.
    """
    arrays = list(batch.columns)
    fields = list(batch.schema)
    for name, flag in infinite.items():
        column = batch.column(name)
        is_pos, is_neg = infinities(column)
        either = pc.or_(is_pos, is_neg)
        arrays[batch.schema.get_field_index(name)] = pc.if_else(
            either, pa.scalar(None, column.type), column)
        arrays.append(pc.if_else(is_pos, pa.scalar(1, pa.int8()),
                                 pc.if_else(is_neg, pa.scalar(-1, pa.int8()),
                                            pa.scalar(None, pa.int8()))))
        fields.append(pa.field(flag, pa.int8()))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _batches(parts: list[Path], progress: logs.Progress,
             staged: _Staged) -> tuple[pa.Schema, Iterator[Any]]:
    """The stage's schema and its batches: the delta's, with infinities split off."""
    schema = pq.read_schema(parts[0])
    staged.pending = PENDING in schema.names  # not in a delta an earlier build stored
    staged.decimals = {f.name: f"numeric({f.type.precision},{f.type.scale})" for f in schema
                       if pa.types.is_decimal(f.type)}
    staged.infinite = {name: f"_tablesync_infinite_{i}"
                       for i, name in enumerate(_infinite_columns(parts, schema))}
    stage_schema = schema
    for flag in staged.infinite.values():
        stage_schema = stage_schema.append(pa.field(flag, pa.int8()))
    stage_schema = stage_schema.append(pa.field(ROW, pa.int64()))

    def gen() -> Iterator[pa.RecordBatch]:
        offset = 0
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=65536):
                deletes = pc.sum(pc.equal(batch.column(OP), "delete")).as_py() or 0
                staged.deletes += deletes
                staged.upserts += batch.num_rows - deletes
                progress.update(batch.num_rows)
                if staged.infinite:
                    batch = _split_infinity(batch, staged.infinite)
                rows = pa.array(range(offset, offset + batch.num_rows), pa.int64())
                offset += batch.num_rows
                yield pa.RecordBatch.from_arrays([*batch.columns, rows],
                                                 schema=batch.schema.append(stage_schema.field(ROW)))

    return stage_schema, gen()


def _fault(point: str) -> None:
    """Test hook: ``TABLESYNC_FAULT_INJECT=<point>`` kills the process here (SIGKILL)."""
    if os.environ.get("TABLESYNC_FAULT_INJECT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def apply(spec: JobSpec, uri: str, dest: TableInfo, delta: Delta, parts: list[Path],
          began: Callable[[Transaction], None] | None = None,
          committing: Callable[[ApplyResult], None] | None = None,
          absent_from: Snapshot | None = None, kept_at: str | None = None) -> ApplyResult:
    """Apply ``delta`` (local Parquet ``parts``) to the destination; commit; return counts.

    ``began`` is called with the apply's :class:`Transaction` once it has begun, before it
    writes anything and so before it can commit (``pipeline`` records it in ``state.json``);
    ``committing`` with the counts and the deletes kept for the next run just before the
    commit (``pipeline`` stores them: a commit is never without them).
    ``absent_from``: the snapshot T of a delta that holds every row of T (a bootstrap, a
    refill); the destination's rows whose key T lacks are kept for the next run too
    (:func:`_absent_rows`). ``kept_at``: when the last apply kept the deletes this delta
    asks again (``State.applied_at``): a T captured before then (a replica lagging by more
    than a cycle) also bounds them by its watermark (:func:`_delete`).
    Raises InputError when a value does not fit the destination's
    column type, and TransientError on connection loss, deadlock or serialization failure
    (nothing committed).
    """
    started = time.monotonic()
    result = ApplyResult()
    progress = logs.Progress("apply", total=delta.changes + delta.refills)
    conn = adbc_connect(uri, "destination", autocommit=False)
    try:
        with adbc_errors("destination", f"applying {delta.id} to {dest.table}",
                         _kept_rows_advice(spec)):
            cur = conn.cursor()
            # Staging and the upsert are one statement each over the whole delta: a
            # statement_timeout of the destination's role or database (set for the
            # applications' queries) failed every apply longer than it, run after run.
            _set_local(cur, {"statement_timeout": "0"})
            if began is not None:
                cur.execute(f"SELECT pg_current_xact_id()::text, {_SYSTEM}")
                xid, system = cur.fetchone()
                began(Transaction(xid, system))
            staged = _Staged()
            schema = pq.read_schema(parts[0])
            stage_schema, batches = _batches(parts, progress, staged)
            reader = pa.RecordBatchReader.from_batches(stage_schema, batches)
            cur.adbc_ingest(STAGE, reader, mode="create", temporary=True)
            # Past the stage, each statement reports no rows until it ends (the upsert of a
            # large delta, a wait for a row the event lane holds): a line every few seconds
            with logs.heartbeat("apply", "write"):
                _plan_settings(cur, spec)
                # Deletes first: a key Postgres finds equal to a deleted one (numeric 1 and 1.00,
                # a case-insensitive collation) but DuckDB does not is then deleted and inserted,
                # where the other order would update the row and then delete it.
                _delete(cur, spec, dest, delta, staged, result, kept_at)
                _fault("mid-apply")
                _upsert(cur, spec, dest, delta, schema, staged, result)
                kept = None
                if staged.survived:
                    kept = _pending_deletes(cur, spec, dest, parts, schema, staged)
                absent = None
                if absent_from is not None and spec.destination.deletes != "ignore":
                    absent = _absent_rows(cur, spec, dest, absent_from, schema, staged)
                result.absent = 0 if absent is None else absent.num_rows
                if kept is not None and absent is not None:
                    result.pending_deletes = pa.concat_tables([kept, absent.cast(kept.schema)])
                else:
                    result.pending_deletes = kept if absent is None else absent
            if committing is not None:
                committing(result)
            conn.commit()
            cur.close()
    finally:
        progress.close()
        conn.close()
    result.seconds = round(time.monotonic() - started, 3)
    log.info("applied", extra={"fields": {"phase": "apply", **result.as_report(),
                                          "seconds": result.seconds}})
    return result


def _kept_rows_advice(spec: JobSpec) -> str | None:
    """What a unique or exclusion violation of the apply may be under ``deletes: soft`` or
    ``ignore``: a row the source deleted stays in the destination with its values, and one
    of them is now another row's at the source (a product deleted and created again with
    the same sku). DEFERRABLE does not help there: the rows conflict at the commit too."""
    soft = spec.destination.soft_delete_column
    if spec.destination.deletes == "soft":
        return ("or, as spec.destination.deletes is soft, a row deleted at the source stays "
                "stamped with its values: leave stamped rows out of the constraint (e.g. a "
                f"unique index ... WHERE {quote_ident(soft)} IS NULL)")
    if spec.destination.deletes == "ignore":
        return ("or, as spec.destination.deletes is ignore, a row deleted at the source stays "
                "with its values: drop the constraint in the destination or set "
                "spec.destination.deletes to soft (with a constraint that leaves stamped rows "
                "out) or apply")
    return None


# The cluster's identity (``pg_control_system()``), NULL where the function is not granted.
_SYSTEM = ("CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE') THEN "
           "(SELECT system_identifier::text FROM pg_control_system()) END")


class Transaction(NamedTuple):
    """An apply's destination transaction: ``xid`` is ``pg_current_xact_id()`` (the 64-bit
    id, as text), ``system`` the cluster's ``system_identifier`` (None where not readable)."""

    xid: str
    system: str | None


TransactionStatus = Literal["committed", "aborted", "in progress"]


def transaction_status(uri: str, transaction: Transaction) -> TransactionStatus | None:
    """What became of an apply's transaction, from the destination's commit log
    (``pg_xact_status``, the function Postgres documents for finding out whether a
    transaction committed after the connection was lost).

    'aborted' too for an id still in the future of the same cluster (``system_identifier``):
    a promoted standby or a restore from before it began. None when the destination cannot
    tell: the id is older than the commit log it keeps, or the destination is not the
    cluster the transaction ran on (another ``system_identifier``, or an id in its future
    where the identifier is not readable). TransientError when the destination is
    unreachable.
    """
    with connect(uri, "destination") as conn:
        row = conn.execute(f"SELECT {_SYSTEM}").fetchone()
        here = row[0] if row else None
        if transaction.system is not None and here is not None and here != transaction.system:
            return None
        try:
            row = conn.execute("SELECT pg_xact_status(%s::xid8)", (transaction.xid,)).fetchone()
        except psycopg.errors.DataError:  # "transaction ID ... is in the future", not an id
            if transaction.system is not None and here == transaction.system:
                # a copy of the cluster (a promoted standby, a restore) from before the
                # transaction began: here it never ran
                return "aborted"
            return None
    status = row[0] if row else None
    return status if status in ("committed", "aborted", "in progress") else None


def _plan_settings(cur: Any, spec: JobSpec) -> None:
    """Statistics and planner settings for this transaction's joins of stage and destination.

    ANALYZE covers only the columns the joins and filters use. ``random_page_cost`` is
    capped at 1.1 (SET LOCAL, this transaction only): with the default 4 the planner reads a
    10M-row destination sequentially to match a 100k-row delta, where index look-ups of
    cached pages are several times faster; large deltas still get hash joins. JIT is off: it
    costs more to compile than it saves on these short statements. DateStyle and IntervalStyle
    are the dump's, for the values that travel as text and are cast back here.
    """
    columns = [OP, *spec.source.primary_key, spec.source.version_column, OLD_VERSION]
    cur.execute(f"ANALYZE {STAGE} ({', '.join(quote_ident(c) for c in columns)})")
    _index_friendly(cur)
    _text_styles(cur)
    # A DEFERRABLE unique or foreign key constraint is checked at the commit, on the final
    # rows, not row by row (a swap of two unique values, a parent deleted before its child
    # moves away): the source satisfied it as a whole.
    cur.execute("SET CONSTRAINTS ALL DEFERRED")


def _index_friendly(cur: Any) -> None:
    """``random_page_cost`` capped at 1.1 and JIT off, for this transaction: its joins of
    a stage onto the destination look keys up by index (:func:`_plan_settings`)."""
    cur.execute("SELECT set_config('random_page_cost', least(current_setting("
                "'random_page_cost')::float8, 1.1)::text, true), set_config('jit', 'off', true)")


def _text_styles(cur: Any) -> None:
    """The dump's DateStyle, IntervalStyle and extra_float_digits (``dump
    .FIXED_TEXT_SETTINGS``), for values that travel as text, and for versions read back as
    text (a float version printed with fewer digits matches no row); this transaction only."""
    _set_local(cur, FIXED_TEXT_SETTINGS)


def _set_local(cur: Any, settings: dict[str, str]) -> None:
    """``settings`` for the rest of this transaction (``set_config(..., true)``)."""
    cur.execute("SELECT " + ", ".join(f"set_config({quote_literal(name)}, "
                                      f"{quote_literal(value)}, true)"
                                      for name, value in settings.items()))


class Probed(NamedTuple):
    """What :func:`missing_keys` found: keys as Postgres's own text of each key column (in
    ``spec.source.primaryKey`` order)."""
    missing: list[tuple[str, ...]]  # keys the destination lacks
    behind: list[tuple[str, ...]]  # keys it holds older; each ends with T-1's version (text)
    probed: int  # keys looked up


def missing_keys(spec: JobSpec, uri: str, dest: TableInfo, captured_at: str,
                 probe: Path) -> Probed:
    """The keys in ``probe`` (a Parquet file in the delta's shape, from ``diff.probe``) that
    the destination lacks, or holds at a version older than T-1's (the probe's version
    column, unless NULL there; a NULL version here counts as older, as in the upsert's
    guard): the last apply left each at T-1's version or newer, so an older one was set back
    outside the sync (a restore from a backup, an event replayed out of order).

    With ``deletes: soft`` a row stamped no later than T's ``capturedAt`` counts as missing
    too (T has it: the stamp is wrong); a later stamp is the event lane's. Reads only; the
    stage is dropped with the rolled-back transaction. The text is ISO dates, hex bytea and
    shortest-exact floats, which :func:`dump.present_at_source` casts back.
    """
    keys = list(spec.source.primary_key)
    ver = spec.source.version_column
    conn = adbc_connect(uri, "destination", autocommit=False)
    try:
        with adbc_errors("destination", f"looking up sampled keys in {dest.table}"):
            cur = conn.cursor()
            staged = _Staged()
            stage_schema, batches = _batches([probe], logs.Progress("probe"), staged)
            cur.adbc_ingest(STAGE, pa.RecordBatchReader.from_batches(stage_schema, batches),
                            mode="create", temporary=True)
            _text_styles(cur)
            # index look-ups of the sampled keys, not a (parallel) scan of the destination
            _index_friendly(cur)
            cur.execute("SELECT set_config('extra_float_digits', '3', true), "
                        "set_config('bytea_output', 'hex', true)")
            join = " AND ".join(f"d.{quote_ident(k)} = {_value(dest, staged, k)}" for k in keys)
            if spec.destination.deletes == "soft":
                soft = spec.destination.soft_delete_column
                stamp = _stamp(dest, spec, captured_at)
                join += f" AND (d.{quote_ident(soft)} IS NULL OR d.{quote_ident(soft)} > {stamp})"
            texts = ", ".join(f"CAST({_value(dest, staged, k)} AS text)" for k in keys)
            cur.execute(f"SELECT {texts} FROM {STAGE} s WHERE NOT EXISTS (SELECT 1 FROM "
                        f"{qualified(dest.table)} d WHERE {join})")
            missing = [tuple(row) for row in cur.fetchall()]
            behind: list[tuple[str, ...]] = []
            if ver in stage_schema.names and ver not in keys:
                d_ver, s_ver = f"d.{quote_ident(ver)}", _value(dest, staged, ver)
                cur.execute(f"SELECT {texts}, CAST({s_ver} AS text) FROM {STAGE} s WHERE EXISTS "
                            f"(SELECT 1 FROM {qualified(dest.table)} d WHERE {join} AND "
                            f"{s_ver} IS NOT NULL AND ({d_ver} < {s_ver} OR {d_ver} IS NULL))")
                behind = [tuple(row) for row in cur.fetchall()]
            cur.execute(f"SELECT count(*) FROM {STAGE}")
            probed = int(cur.fetchone()[0])
            cur.close()
            conn.rollback()
    finally:
        conn.close()
    return Probed(missing, behind, probed)


def _cast(dest: TableInfo, column: str, expr: str) -> str:
    col = dest.column(column)
    assert col is not None
    return f"CAST({expr} AS {col.pg_type})"


def _stamp(dest: TableInfo, spec: JobSpec, captured_at: str) -> str:
    """T's ``capturedAt`` (an ISO 8601 instant) as ``softDeleteColumn``'s type, for stamping
    and comparing stamps. A timestamp (without time zone) or date holds wall-clock time, which
    the event lane writes in the destination session's TimeZone (``localtimestamp``), so the
    instant is taken to that zone first (as the dump takes the version watermark to the
    source's): cast straight from the text, its offset is ignored, and the stamp was UTC's
    wall-clock time."""
    column = spec.destination.soft_delete_column
    col = dest.column(column)
    assert col is not None
    literal = quote_literal(captured_at)
    if col.type_name in ("timestamp", "date"):
        literal = f"CAST({literal} AS timestamptz)"
    return _cast(dest, column, literal)


def _value(dest: TableInfo, staged: _Staged, column: str, alias: str = "s") -> str:
    """The staged value of ``column`` (stage alias ``alias``) as the destination's type.

    A decimal is first given back its scale (the stage's numeric holds 1.50 as 1.5, which an
    unconstrained numeric destination column would keep); a numeric(p,s) destination column
    gives it back itself, so that cast (a cost per row) is left out there."""
    expr = f"{alias}.{quote_ident(column)}"
    shape = staged.decimals.get(column)
    col = dest.column(column)
    if shape is not None and not (col is not None and col.type_name == "numeric"
                                  and col.scale is not None):
        expr = f"CAST({expr} AS {shape})"
    flag = staged.infinite.get(column)
    if flag is not None:
        expr = (f"CASE {alias}.{flag} WHEN 1 THEN 'infinity' WHEN -1 THEN '-infinity' "
                f"ELSE {expr} END")
    return _cast(dest, column, expr)


def _old_version(dest: TableInfo, staged: _Staged, ver: str) -> str:
    """The staged OLD_VERSION (stage alias ``s``) as the destination's version type, its
    +-infinity put back (a destination's version a delete was kept or noted at)."""
    expr = f"s.{OLD_VERSION}"
    flag = staged.infinite.get(OLD_VERSION)
    if flag is not None:
        expr = f"CASE s.{flag} WHEN 1 THEN 'infinity' WHEN -1 THEN '-infinity' ELSE {expr} END"
    return _cast(dest, ver, expr)


def _written(dest: TableInfo, schema: pa.Schema) -> list[str]:
    """The delta's columns the upsert writes: not the destination's generated columns, which
    it computes itself (Postgres refuses a value for them)."""
    written = []
    for f in schema:
        col = dest.column(f.name)
        if f.name not in (OP, OLD_VERSION, PENDING) and not (col is not None and col.generated):
            written.append(f.name)
    return written


def _upsert(cur: Any, spec: JobSpec, dest: TableInfo, delta: Delta, schema: pa.Schema,
            staged: _Staged, result: ApplyResult) -> None:
    columns = _written(dest, schema)
    keys = list(spec.source.primary_key)
    ver = spec.source.version_column
    table = qualified(dest.table)
    q = quote_ident
    insert_cols = ", ".join(q(c) for c in columns)
    select_cols = ", ".join(_value(dest, staged, c) for c in columns)
    # in the destination's order (a json key is staged as json, which has none)
    order = ", ".join(_value(dest, staged, k) for k in keys)
    sets = [f"{q(c)} = EXCLUDED.{q(c)}" for c in columns if c not in keys]
    if spec.destination.deletes == "soft":
        sets.append(f"{q(spec.destination.soft_delete_column)} = NULL")
    conflict = ", ".join(q(k) for k in keys)
    # a key GENERATED ALWAYS AS IDENTITY takes the source's values only when told to
    always = [c for c in columns if (col := dest.column(c)) is not None and col.identity == "a"]
    overriding = " OVERRIDING SYSTEM VALUE" if always else ""
    join = " AND ".join(f"d.{q(k)} = {_value(dest, staged, k)}" for k in keys)
    upsert = (f"INSERT INTO {table} AS d ({insert_cols}){overriding} "
              f"SELECT {select_cols} FROM {STAGE} s WHERE s.{OP} <> 'delete' ORDER BY {order} "
              f"ON CONFLICT ({conflict}) DO UPDATE SET {', '.join(sets)} "
              f"WHERE {_newer(spec, dest, delta, columns)} ")
    s_ver = _value(dest, staged, ver)
    # With BEFORE INSERT/UPDATE row triggers, the written version is checked against the
    # staged one: a trigger that rewrites it (updated_at = now()) would make later source
    # changes look stale to the version guard, and they would be lost without a trace.
    returned, checked, joined = "", "", ""
    if dest.row_triggers:
        returned = ", " + ", ".join(f"d.{q(k)} AS _tablesync_k{i}" for i, k in enumerate(keys))
        returned += f", d.{q(ver)} AS _tablesync_written"
        checked = f", count(*) FILTER (WHERE up._tablesync_written IS DISTINCT FROM {s_ver})"
        joined = f" JOIN {STAGE} s ON " + " AND ".join(
            f"up._tablesync_k{i} = {_value(dest, staged, k)}" for i, k in enumerate(keys))
    if not dest.partitioned:
        # xmax = 0: the row version this statement inserted (an update sets its xmax)
        cur.execute(f"WITH up AS ({upsert} RETURNING (xmax = 0) AS inserted{returned}) "
                    "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT "
                    f"inserted){checked} FROM up{joined}")
        inserted, updated, *rewritten = cur.fetchone()
    else:
        # RETURNING cannot read xmax from a partitioned table: the keys present beforehand
        # are counted and locked, in key order as the upsert takes them (so none of them goes
        # away meanwhile); the others were inserted, unless the event lane inserted one in
        # between (then it is counted inserted).
        cur.execute(f"WITH present AS (SELECT 1 FROM {table} d JOIN {STAGE} s ON {join} "
                    f"WHERE s.{OP} <> 'delete' ORDER BY {order} FOR UPDATE OF d) "
                    "SELECT count(*) FROM present")
        present = int(cur.fetchone()[0])
        cur.execute(f"WITH up AS ({upsert} RETURNING 1 AS one{returned}) "
                    f"SELECT count(*){checked} FROM up{joined}")
        written, *rewritten = cur.fetchone()
        inserted = min(int(written), staged.upserts - present)
        updated = int(written) - inserted
    if rewritten and int(rewritten[0]):
        raise InputError(
            f"spec.destination.table: a trigger on {dest.table} changed {ver} in "
            f"{int(rewritten[0])} of the rows the apply wrote; the version guard compares "
            f"against what the destination holds, so later source changes would look stale "
            f"and be lost. Nothing was applied: keep the trigger from changing {ver} for the "
            "sync (e.g. a WHEN condition on current_user) or disable it for the sync's role")
    result.inserted, result.updated = int(inserted), int(updated)
    if result.inserted + result.updated == staged.upserts:
        return  # every row was written: none already current, none stale; no join needed
    old_ver = _cast(dest, ver, f"s.{OLD_VERSION}")
    cur.execute(
        f"SELECT count(*) FILTER (WHERE d.{q(ver)} = {s_ver}), "
        f"count(*) FILTER (WHERE d.{q(ver)} > {s_ver}), "
        f"count(*) FILTER (WHERE d.{q(ver)} > {s_ver} AND {old_ver} > {s_ver}) "
        f"FROM {STAGE} s JOIN {table} d ON {join} WHERE s.{OP} <> 'delete'")
    equal, newer, went_down = cur.fetchone()
    # Every staged row now has its version or a newer one in the destination, unless a BEFORE
    # INSERT/UPDATE trigger returned NULL for it: its write was skipped, without a trace.
    skipped = staged.upserts - int(equal) - int(newer)
    if skipped and dest.row_triggers:
        raise InputError(
            f"spec.destination.table: a trigger on {dest.table} skipped {skipped} of the rows "
            f"the apply wrote (it returned NULL), so the destination would keep older rows than "
            f"the source's and no later run would bring them across. Nothing was applied: keep "
            "the trigger from skipping rows for the sync (e.g. a WHEN condition on "
            "current_user) or disable it for the sync's role")
    result.already_current += int(equal) - result.inserted - result.updated
    result.stale_skipped += int(newer)
    if went_down:
        _warn_versions_went_down(cur, spec, dest, int(went_down), old_ver, s_ver)


def _warn_versions_went_down(cur: Any, spec: JobSpec, dest: TableInfo, rows: int,
                             old_ver: str, s_ver: str) -> None:
    """Log the rows skipped as stale whose version at the source is lower in T than in T-1.

    Not the event lane being ahead: the source itself went back (a row restored from a backup,
    an application writing ``updated_at`` from a slow clock, a text version going from '9' to
    '10'). The version guard keeps the destination's higher version and so T-1's content, and
    every later run skips the row again until its source version passes the destination's;
    only a write at the source that raises the version brings the row across.
    """
    ver = spec.source.version_column
    keys = list(spec.source.primary_key)
    key_text = " || ', ' || ".join(f"s.{quote_ident(k)}::text" for k in keys)
    cur.execute(f"SELECT {key_text}, ({old_ver})::text, ({s_ver})::text FROM {STAGE} s "
                f"WHERE s.{OP} = 'update' AND {old_ver} > {s_ver} ORDER BY 1 LIMIT 3")
    sample = "; ".join(f"({key}) {before} -> {after}" for key, before, after in cur.fetchall())
    log.warning(
        f"{rows} row(s) of {dest.table} kept their content: their {ver} at the source went "
        f"down since the last applied snapshot (key ({', '.join(keys)}) {ver} before -> now: "
        f"{sample}), and the version guard skips a lower version as stale; raise {ver} at the "
        "source for these rows to bring them across",
        extra={"fields": {"versionWentDown": rows}})


def _newer(spec: JobSpec, dest: TableInfo, delta: Delta, columns: list[str]) -> str:
    """When the staged row (``EXCLUDED``) replaces the destination's (``d``).

    Its version is higher, or the destination's is NULL. With ``compare: content`` also at an
    equal version when any other column differs (as text: json, xml and others have no
    equality): the diff found a change that kept the version, and the source is the truth.
    With ``compare: version``, likewise for the columns added at the source since T-1
    (``Delta.added_columns``): adding one did not change the versions, so it is backfilled.
    With ``deletes: soft`` also, whatever the versions, when the destination row was stamped
    deleted no later than T's capturedAt: the row is live at the source in T, so it came back
    (restored as it was, or re-inserted with a counter that started again), as a hard-deleted
    row would be inserted anew. A stamp after T (the event lane deleted the row since) stays.
    """
    q = quote_ident
    ver = q(spec.source.version_column)
    cond = f"d.{ver} IS NULL OR d.{ver} < EXCLUDED.{ver}"
    keys = set(spec.source.primary_key) | {spec.source.version_column}
    others = [q(c) for c in columns if c not in keys]
    if spec.source.compare != "content":
        others = [q(c) for c in columns if c in delta.added_columns and c not in keys]
    if others:
        mine = ", ".join(f"d.{c}::text" for c in others)
        theirs = ", ".join(f"EXCLUDED.{c}::text" for c in others)
        cond += f" OR (d.{ver} = EXCLUDED.{ver} AND ROW({mine}) IS DISTINCT FROM ROW({theirs}))"
    if spec.destination.deletes == "soft":
        soft = q(spec.destination.soft_delete_column)
        stamp = _stamp(dest, spec, delta.captured_at)
        cond += f" OR d.{soft} <= {stamp}"
    return cond


def _delete(cur: Any, spec: JobSpec, dest: TableInfo, delta: Delta, staged: _Staged,
            result: ApplyResult, kept_at: str | None = None) -> None:
    mode = spec.destination.deletes
    if mode == "ignore" or delta.deletes == 0:
        return
    keys = list(spec.source.primary_key)
    ver = spec.source.version_column
    table = qualified(dest.table)
    q = quote_ident
    join = " AND ".join(f"d.{q(k)} = {_value(dest, staged, k)}" for k in keys)
    bound = _old_version(dest, staged, ver)
    if delta.version_kind != "counter" and delta.watermark is not None:
        # the unmodified type: timestamp(0) would round the watermark up, to after T. The
        # row's own old version counts too: a destination row no newer than T-1's copy (or
        # than the version a delete found last time) is not the event lane's either.
        col = dest.column(ver)
        assert col is not None
        watermark = f"CAST({quote_literal(delta.watermark)} AS {col.base_type or col.pg_type})"
        latest = f"GREATEST({watermark}, {bound})"
        # A delete asked again is bound by the version the destination held when it was
        # kept: a row written since (the event lane's insert of a row the source has again
        # after T, with a version the watermark covers) is not the row found then. And by
        # T's watermark too when T was captured before that apply: read on a replica
        # lagging more than a cycle behind the primary, T may lack the row the event lane
        # re-inserted, which that apply kept for being newer than its T.
        kept = bound
        if kept_at is not None and \
                datetime.fromisoformat(delta.captured_at) < datetime.fromisoformat(kept_at):
            kept = f"LEAST({watermark}, {bound})"
        bound = latest if not staged.pending else f"CASE WHEN s.{PENDING} THEN {kept} " \
                                                   f"ELSE {latest} END"
    safe = f"(d.{q(ver)} IS NULL OR d.{q(ver)} <= {bound})"
    where = f"s.{OP} = 'delete' AND {join} AND {safe}"
    if staged.pending:
        # Nor is a key one of the delta's upserts has under Postgres's equality (a key whose
        # text differed from T's for DuckDB: deleted, it would be inserted again, and the
        # destination's ON DELETE CASCADE children would go with it). Such a delete is
        # marked (PENDING NULL) beforehand: a semi-join, where a condition on it here would
        # scan the stage once per delete.
        same = " AND ".join(f"{_value(dest, staged, k)} = {_value(dest, staged, k, 'u')}"
                            for k in keys)
        cur.execute(f"UPDATE {STAGE} s SET {PENDING} = NULL WHERE s.{OP} = 'delete' AND "
                    f"s.{PENDING} AND EXISTS (SELECT 1 FROM {STAGE} u WHERE u.{OP} <> "
                    f"'delete' AND {same})")
        where += f" AND s.{PENDING} IS NOT NULL"
    if mode == "apply":
        remove = f"DELETE FROM {table} d USING {STAGE} s WHERE {where}"
        live = ""  # a row still present survived
    else:
        soft = q(spec.destination.soft_delete_column)
        stamp = _stamp(dest, spec, delta.captured_at)
        remove = (f"UPDATE {table} d SET {soft} = {stamp} FROM {STAGE} s "
                  f"WHERE {where} AND d.{soft} IS NULL")
        live = f" AND d.{soft} IS NULL"  # a row not stamped survived
    cur.execute(f"WITH gone AS ({remove} RETURNING 1) SELECT count(*) FROM gone")
    result.deleted = int(cur.fetchone()[0])
    survivors = 0
    if result.deleted < staged.deletes:
        # (a delete marked above is not one: the upsert writes that row, already current)
        marked = f" AND s.{PENDING} IS NOT NULL" if staged.pending else ""
        cur.execute(f"SELECT count(*), count(*) FILTER (WHERE {safe}) FROM {STAGE} s "
                    f"JOIN {table} d ON {join} WHERE s.{OP} = 'delete'{live}{marked}")
        survivors, skipped = (int(n) for n in cur.fetchone())
        # A row still there that the version guard let go: a BEFORE DELETE (or, stamping,
        # UPDATE) trigger returned NULL for it. Counted stale and kept for the next run, it
        # would be asked again run after run, as if the event lane held it newer.
        triggered = dest.delete_triggers if mode == "apply" else dest.row_triggers
        if skipped and triggered:
            what = "deletes" if mode == "apply" else "soft deletes (its UPDATE)"
            raise InputError(
                f"spec.destination.table: a trigger on {dest.table} skipped {skipped} of the "
                f"{what} the apply made (it returned NULL), so rows deleted at the source "
                "would stay, reported as newer in the destination, run after run. Nothing was "
                "applied: keep the trigger from skipping the sync's deletes (e.g. a WHEN "
                "condition on current_user), or set spec.destination.deletes to ignore (or "
                "soft) to keep deleted rows")
    result.stale_skipped += survivors
    result.already_current += delta.deletes - result.deleted - survivors
    staged.survived = survivors


def _pending_deletes(cur: Any, spec: JobSpec, dest: TableInfo, parts: list[Path],
                     schema: pa.Schema, staged: _Staged) -> pa.Table | None:
    """The deletes whose destination row stayed because it was newer: key and its version.

    Kept "stale-skipped" by the version-safe rule (DESIGN.md section 4), such a row is either
    the event lane's re-insert after T, or an update the event lane delivered before it lost
    the delete. Only the next snapshot tells them apart: without the key, the row is gone at
    the source, and is deleted then if the destination still holds this version. Read after
    the upsert, in the same transaction, so a key Postgres finds equal to an upserted one
    (numeric 1 and 1.00) is not taken for a deleted one. Versions are read as the dump reads
    them (``infinity`` too), in the delta's old-version type; one that type cannot hold is
    warned about and not kept.
    """
    q = quote_ident
    keys = list(spec.source.primary_key)
    ver = spec.source.version_column
    table = qualified(dest.table)
    join = " AND ".join(f"d.{q(k)} = {_value(dest, staged, k)}" for k in keys)
    upserted = " AND ".join(f"d.{q(k)} = {_cast(dest, k, f'u.{q(k)}')}" for k in keys)
    live = ""
    if spec.destination.deletes == "soft":
        live = f" AND d.{q(spec.destination.soft_delete_column)} IS NULL"
    if staged.pending:
        live += f" AND s.{PENDING} IS NOT NULL"  # (marked: not to be asked again)
    ver_col = dest.column(ver)
    assert ver_col is not None
    cur.execute(f"SELECT s.{ROW}, {select_expression(ver_col, f'd.{q(ver)}')} AS {q(ver)} "
                f"FROM {STAGE} s JOIN {table} d ON {join} "
                f"WHERE s.{OP} = 'delete'{live} AND NOT EXISTS (SELECT 1 FROM {STAGE} u "
                f"WHERE u.{OP} <> 'delete' AND {upserted}) ORDER BY s.{ROW}")
    reader = cur.fetch_record_batch()
    # the version as the dump reads it (natively where it can; as _absent_rows does)
    read = dumped_schema(reader.schema, [ver_col])
    target = schema.field(OLD_VERSION).type
    wanted = pa.schema([pa.field(ROW, pa.int64()), pa.field(OLD_VERSION, target)])
    tables, unread = [], 0
    for batch in reader:
        table, lost = _as_in_t(batch, read, wanted, [0, 1])
        tables.append(table)
        unread += lost
    if unread:
        log.warning(f"{unread} delete(s) kept because the destination was newer will not be "
                    f"asked again at the next run: their {ver} does not fit T's type {target}",
                    extra={"fields": {"pendingDeletesUnread": unread}})
    found = pa.concat_tables(tables) if tables else None
    if found is None or found.num_rows == 0:
        return None
    key_rows = pa.concat_tables([pq.read_table(part, columns=keys) for part in parts])
    picked = key_rows.take(found.column(ROW))
    return picked.append_column(pa.field(OLD_VERSION, target), found.column(OLD_VERSION))


def _as_in_t(batch: pa.RecordBatch, read: pa.Schema, wanted: pa.Schema,
             pick: list[int]) -> tuple[pa.Table, int]:
    """Columns ``pick`` of ``batch`` (read from the destination as the dump reads,
    ``read``: :func:`dump.dumped_schema`) in T's types (``wanted``), and how many rows were
    left out: one value T's types cannot hold (a version widened in the destination, a year
    past 294247) costs that row, not the others."""
    def converted(part: pa.RecordBatch) -> pa.Table:
        dumped = as_dumped(part, read)
        arrays = [dumped.column(i).cast(f.type) for i, f in zip(pick, wanted, strict=True)]
        return pa.Table.from_arrays(arrays, schema=wanted)

    try:
        return converted(batch), 0
    except (InputError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        rows, unread = [], 0
        for i in range(batch.num_rows):
            try:
                rows.append(converted(batch.slice(i, 1)))
            except (InputError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
                unread += 1
        return pa.concat_tables(rows) if rows else wanted.empty_table(), unread


def _absent_rows(cur: Any, spec: JobSpec, dest: TableInfo, snap: Snapshot, schema: pa.Schema,
                 staged: _Staged) -> pa.Table | None:
    """The destination's rows whose key snapshot T lacks: their keys, as T holds keys, and
    their version (as OLD_VERSION, in the delta's type). None when there are none.

    Called for a delta that holds every row of T (a bootstrap, a refill), after its upsert:
    the stage then holds every key of T. Such a row is in no delta: a delete the event lane
    lost before the first snapshot, a row a restore from an older backup brought back, a
    row written into the destination alone. Nor is it deleted here: it may be the event
    lane's insert of a row committed at the source after T (a transaction that began before
    the dump, or later the same day with date versions), which no version tells apart. Kept
    as a pending delete, it is deleted by the next run if T+1 lacks its key too and the
    destination still holds that version or an older one (``diff._ask_again``), under that
    run's delete guard. Which rows may be noted: :func:`_notable`.

    The keys are read as the dump reads them (:func:`_read_as_in_t`), so the next diff
    matches them with T+1's exactly. Memory grows with the number of such rows (their keys
    and versions).
    """
    q = quote_ident
    keys = list(spec.source.primary_key)
    read_cols = _read_as_in_t(cur, spec, dest, snap)
    if read_cols is None:
        return None
    join = " AND ".join(f"d.{q(k)} = {_value(dest, staged, k)}" for k in keys)
    selected = ", ".join(f"{select_expression(c, f'd.{q(c.name)}')} AS {q(c.name)}"
                         for c in read_cols)
    # not a key of the stage's deletes either: _delete deleted those, _pending_deletes
    # keeps those it did not
    cur.execute(f"SELECT {selected} FROM {qualified(dest.table)} d WHERE "
                f"{_notable(cur, spec, dest)} AND NOT EXISTS (SELECT 1 FROM {STAGE} s "
                f"WHERE {join})")
    # as _pending_deletes keeps them
    wanted = pa.schema([*(schema.field(k) for k in keys),
                        pa.field(OLD_VERSION, schema.field(OLD_VERSION).type)])
    found, unread = _fetch_as_in_t(cur, spec, read_cols, wanted)
    if unread:
        log.warning(f"{unread} row(s) of {dest.table} whose key the snapshot lacks are not kept "
                    f"for the next run: a key or {spec.source.version_column} does not fit T's "
                    "type; they stay until deleted by hand",
                    extra={"fields": {"absentRowsUnread": unread}})
    if found.num_rows == 0:
        return None
    log.info(f"{found.num_rows} row(s) of {dest.table} have a key snapshot {snap.id} lacks; "
             "the next run deletes those its snapshot lacks too, unchanged here since",
             extra={"fields": {"absentRows": found.num_rows}})
    return found


def _read_as_in_t(cur: Any, spec: JobSpec, dest: TableInfo, snap: Snapshot,
                  quiet: bool = False) -> list[ColumnInfo] | None:
    """The destination's key columns and then its version column (unless a key), to read
    as the dump read T's (``dump.select_expression``): their values then equal T's exactly.
    None, with a warning (a log line if ``quiet``), where they cannot be read so: a key
    column whose type differs between the destination and T (a widened key: read in T's
    type, one key could look like another), or a TimeZone the destination's server does not
    know (``pg_timezone_names``) while a column travels as text. Sets the dump's text
    settings (``FIXED_TEXT_SETTINGS``, ``Snapshot.text_settings``) for the rest of the
    transaction when one does; asked before, as a failed statement would abort the
    transaction (and the ADBC driver then refuses every statement until a rollback).
    """
    keys = list(spec.source.primary_key)
    ver = spec.source.version_column
    in_t = {c.name: c.pg_type for c in snap.columns}
    cols = [dest.column(k) for k in keys]
    differ = [f"{k} ({in_t.get(k)} in T, {c.pg_type if c else None} in {dest.table})"
              for k, c in zip(keys, cols, strict=True) if c is None or c.pg_type != in_t.get(k)]
    say = log.info if quiet else log.warning
    if differ:
        say(f"rows of {dest.table} whose key the snapshot lacks are not looked for: "
            f"key column(s) {', '.join(differ)} differ in type, and read in T's type "
            "one key could look like another; such rows stay until deleted by hand",
            extra={"fields": {"absentRowsLookedFor": False}})
        return None
    key_cols = [c for c in cols if c is not None]
    ver_col = dest.column(ver)
    assert ver_col is not None
    # the version as the dump reads it too (natively where it can: its text may be in an
    # offset Arrow cannot parse, or 'infinity')
    read_cols = key_cols if ver in keys else [*key_cols, ver_col]
    if any(travels_as_text(c) for c in read_cols):
        settings = {**FIXED_TEXT_SETTINGS, **(snap.text_settings or {})}
        cur.execute("SELECT count(*) FROM pg_timezone_names WHERE name = "
                    f"{quote_literal(settings.get('TimeZone', 'UTC'))}")
        if not int(cur.fetchone()[0]):
            say(f"rows of {dest.table} whose key the snapshot lacks are not looked for: "
                f"the destination does not know the source's TimeZone "
                f"{settings.get('TimeZone')!r}, which the text of its keys needs; such "
                "rows stay until deleted by hand",
                extra={"fields": {"absentRowsLookedFor": False}})
            return None
        _set_local(cur, settings)
    return read_cols


def _notable(cur: Any, spec: JobSpec, dest: TableInfo, quiet: bool = False) -> str:
    """The condition (on alias ``d``) a destination row whose key T lacks meets to be kept
    as a pending delete: a key without NULL (a UNIQUE index on a nullable column matches no
    delete), live under ``deletes: soft``, and not referenced by a foreign key of the
    destination's (a table of its own onto a row the source lost long ago, onto the
    destination or one of its partitions). With NO ACTION or RESTRICT its delete would fail
    the next run's whole apply, and every run after; with CASCADE or SET NULL it could fail
    further down (a table that references the one cascaded into), or change rows of a table
    tablesync does not sync, on a guess.

    ``false`` (nothing is notable), with a warning (a log line if ``quiet``), when this role
    cannot read every row of such a table (no SELECT on it, or row-level security hides
    some): which rows it holds is unknown.
    """
    where = _kept_alone(spec)
    table = f"{quote_literal(qualified(dest.table))}::regclass"
    cur.execute(
        "SELECT c.conrelid::regclass::text, array_to_string(ARRAY(SELECT quote_ident(a.attname) "
        "FROM unnest(c.conkey) WITH ORDINALITY k(n, i) JOIN pg_attribute a ON a.attrelid = "
        "c.conrelid AND a.attnum = k.n ORDER BY k.i), chr(31)), array_to_string(ARRAY(SELECT "
        "quote_ident(a.attname) FROM unnest(c.confkey) WITH ORDINALITY k(n, i) JOIN "
        "pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i), chr(31)), "
        "has_table_privilege(c.conrelid, 'SELECT') AND NOT row_security_active(c.conrelid) "
        "AND has_schema_privilege(r.relnamespace, 'USAGE'), "
        "array_to_string(ARRAY(SELECT coalesce(' COLLATE ' || quote_ident(cn.nspname) || '.' || "
        "quote_ident(co.collname), '') FROM unnest(c.confkey) WITH ORDINALITY k(n, i) JOIN "
        "pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n LEFT JOIN pg_collation co "
        "ON co.oid = a.attcollation LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace "
        "ORDER BY k.i), chr(31)) "
        "FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid WHERE c.contype = 'f' AND "
        f"c.conparentid = 0 AND (c.confrelid = {table} OR c.confrelid IN (SELECT relid FROM "
        f"pg_partition_tree({table})) OR c.confrelid IN (SELECT relid FROM "
        f"pg_partition_ancestors({table})))")  # (a foreign key onto one partition too)
    for child, child_cols, parent_cols, readable, collations in cur.fetchall():
        if not readable:
            (log.info if quiet else log.warning)(
                f"rows of {dest.table} whose key the snapshot lacks are not looked for: "
                f"{child} references it, and this role cannot read all its rows (grant "
                "SELECT on it, or exempt the role from its row-level security); such rows "
                "stay until deleted by hand", extra={"fields": {"absentRowsLookedFor": False}})
            return "false"
        held = " AND ".join(f"f.{c} = d.{pc}{co}" for c, pc, co in zip(
            str(child_cols).split("\x1f"), str(parent_cols).split("\x1f"),
            str(collations).split("\x1f"), strict=True))
        where += f" AND NOT EXISTS (SELECT 1 FROM {child} f WHERE {held})"
    return where


def _kept_alone(spec: JobSpec) -> str:
    """:func:`_notable`'s condition on the row itself: a key without NULL, live under
    ``deletes: soft``."""
    q = quote_ident
    where = " AND ".join(f"d.{q(k)} IS NOT NULL" for k in spec.source.primary_key)
    if spec.destination.deletes == "soft":
        where += f" AND d.{q(spec.destination.soft_delete_column)} IS NULL"
    return where


def notable(spec: JobSpec, uri: str, dest: TableInfo, keys: list[tuple[str, ...]],
            versions: list[str] | None = None) -> list[int]:
    """The positions in ``keys`` (Postgres's text of each key column, from
    :func:`sample_destination`) of the destination's rows a bootstrap or refill would note
    if T lacked them (:func:`_notable`: no foreign key references them), and, given
    ``versions`` (the text of each one's version, from the same), that still hold that
    version. Asked for a few keys only: a table that references the destination has no
    index on its foreign key as a rule, and is read whole. Reads only."""
    names = list(spec.source.primary_key)
    columns = [[key[i] for key in keys] for i in range(len(names))]
    aliases = ", ".join(f"k{i}" for i in range(len(names)))
    on = " AND ".join(f"d.{quote_ident(n)} = {_cast(dest, n, f'u.k{i}')}"
                      for i, n in enumerate(names))
    if versions is not None:
        ver = spec.source.version_column
        aliases += ", v"
        on += f" AND d.{quote_ident(ver)} = {_cast(dest, ver, 'u.v')}"
        columns.append(versions)
    with connect(uri, "destination") as conn, conn.transaction():
        _set_local(conn.cursor(), {**FIXED_TEXT_SETTINGS, "lock_timeout": SAMPLE_LOCK_TIMEOUT})
        where = _notable(conn.cursor(), spec, dest, quiet=True)
        query = with_text_arrays(
            f"SELECT u.n - 1 FROM unnest({TEXT_ARRAYS}) WITH ORDINALITY AS u({aliases}, n) "
            f"JOIN {qualified(dest.table)} d ON {on} WHERE {where}", len(columns))
        rows = conn.execute(query, columns).fetchall()
    return sorted(int(row[0]) for row in rows)


def _estimated_rows(cur: Any, dest: TableInfo) -> int:
    """The planner's estimate of the destination's rows (``reltuples``; of its leaf
    partitions when partitioned), 0 when never counted."""
    table = f"{quote_literal(qualified(dest.table))}::regclass"
    cur.execute("SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_class c "
                f"WHERE (c.oid = {table} AND c.relkind = 'r') OR c.oid IN (SELECT relid FROM "
                f"pg_partition_tree({table}) WHERE isleaf)")
    return int(cur.fetchone()[0])


def _fetch_as_in_t(cur: Any, spec: JobSpec, read_cols: list[ColumnInfo],
                   wanted: pa.Schema) -> tuple[pa.Table, int]:
    """The result of the statement just run (the :func:`_read_as_in_t` columns' select
    expressions, then any more columns, which pass as they are) as a table of ``wanted``:
    the key columns, the version, then those more columns; and how many rows were left out
    (:func:`_as_in_t`)."""
    reader = cur.fetch_record_batch()
    read = dumped_schema(reader.schema, read_cols)
    version_at = [c.name for c in read_cols].index(spec.source.version_column)
    keys = len(spec.source.primary_key)
    pick = [*range(keys), version_at, *range(len(read_cols), len(read.names))]
    tables, unread = [], 0
    for batch in reader:
        table, lost = _as_in_t(batch, read, wanted, pick)
        tables.append(table)
        unread += lost
    return (pa.concat_tables(tables) if tables else wanted.empty_table()), unread


def _loosely_equal_keys(cur: Any, spec: JobSpec, dest: TableInfo) -> bool:
    """Whether a key column of the destination has a nondeterministic collation (one
    where 'SKU-1' = 'sku-1'), logged if so. A sampled key the source and T lack byte for
    byte may then equal one of T's there: a refill would not note it, and each run would
    refill again."""
    names = ", ".join(quote_literal(k) for k in spec.source.primary_key)
    cur.execute("SELECT string_agg(a.attname, ', ') FROM pg_attribute a JOIN pg_collation c "
                "ON c.oid = a.attcollation WHERE a.attrelid = "
                f"{quote_literal(qualified(dest.table))}::regclass AND a.attname IN ({names}) "
                "AND NOT c.collisdeterministic")
    loose = cur.fetchone()[0]
    if loose:
        log.info(f"rows of {dest.table} whose key the source lacks are not sampled: key "
                 f"column(s) {loose} have a nondeterministic collation; a bootstrap or refill "
                 "still notes them", extra={"fields": {"absentRowsSampled": False}})
    return bool(loose)


SAMPLE_LOCK_TIMEOUT = "2s"  # how long sample_destination waits for a lock


class SampledRows(NamedTuple):
    """Destination rows drawn at random by :func:`sample_destination`."""
    rows: pa.Table  # the key columns and SAMPLED_VERSION, as T holds them (T's types)
    texts: list[tuple[str, ...]]  # Postgres's text of each key column, row by row
    versions: list[str]  # Postgres's text of the version, row by row


def sample_destination(spec: JobSpec, uri: str, dest: TableInfo, snap: Snapshot,
                       schema: pa.Schema, rows: int) -> SampledRows | None:
    """About ``rows`` of the destination's rows, drawn at random (``TABLESAMPLE SYSTEM``, by
    block, sized by the larger of T's row count and the destination's estimate), with keys
    without NULL and, under ``deletes: soft``, live (:func:`_kept_alone`; :func:`notable`
    tells which of a few a refill would note); None where their keys cannot be read as T
    holds them (:func:`_read_as_in_t`; logged, not warned: a refill could not note them
    either), or compare loosely (:func:`_loosely_equal_keys`).

    ``schema``: T's (a part's Parquet schema), whose types the keys and version are read in.
    A lock held on a table it reads (the destination, or one referencing it) for longer than
    :data:`SAMPLE_LOCK_TIMEOUT` fails it (TransientError).
    The key texts are ISO dates and exact floats, which :func:`dump.absent_at_source` casts
    back. Reads only, in a transaction rolled back.
    """
    keys = list(spec.source.primary_key)
    ver = spec.source.version_column
    q = quote_ident
    conn = adbc_connect(uri, "destination", autocommit=False)
    try:
        with adbc_errors("destination", f"sampling rows of {dest.table}"):
            cur = conn.cursor()
            read_cols = _read_as_in_t(cur, spec, dest, snap, quiet=True)
            if read_cols is None or _loosely_equal_keys(cur, spec, dest):
                conn.rollback()
                return None
            # (the dump's too: no change if set); a table of another team's that references
            # the destination, locked for a migration, does not hold the run up
            _set_local(cur, {**FIXED_TEXT_SETTINGS, "lock_timeout": SAMPLE_LOCK_TIMEOUT})
            selected = ", ".join(f"{select_expression(c, f'd.{q(c.name)}')} AS {q(c.name)}"
                                 for c in read_cols)
            texts = ", ".join(f"CAST(d.{q(k)} AS text) AS _tablesync_text_{i}"
                              for i, k in enumerate([*keys, ver]))
            percent = 100.0 * min(1.0, rows / max(snap.rows, _estimated_rows(cur, dest), 1))
            cur.execute(f"SELECT {selected}, {texts} FROM {qualified(dest.table)} d "
                        f"TABLESAMPLE SYSTEM ({percent!r}) WHERE {_kept_alone(spec)} "
                        f"LIMIT {2 * int(rows)}")
            wanted = pa.schema([*(schema.field(k) for k in keys),
                                pa.field(SAMPLED_VERSION, schema.field(ver).type),
                                *(pa.field(f"_tablesync_text_{i}", pa.string())
                                  for i in range(len(keys) + 1))])
            found, _ = _fetch_as_in_t(cur, spec, read_cols, wanted)
            cur.close()
            conn.rollback()
    finally:
        conn.close()
    text_columns = [found.column(len(keys) + 1 + i).to_pylist() for i in range(len(keys))]
    return SampledRows(found.select([*range(len(keys) + 1)]),
                       list(zip(*text_columns, strict=True)),
                       found.column(2 * len(keys) + 1).to_pylist())
