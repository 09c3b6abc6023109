"""Postgres adapter: connections, catalog look-ups and error mapping, for source and destination.

The only module that opens database connections (psycopg for catalog queries, ADBC for Arrow
streams in and out). Errors become the job's family: wrong password, a missing database or
table is an InputError naming the variable or field; a refused connection or a serialization
failure is a TransientError. Messages never contain the URI (``logs.redact``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from .errors import InputError, TableSyncError, TransientError
from .logs import redact
from .spec import TableName

# SQLSTATE classes a retry may cure: connection, transaction rollback (serialization,
# deadlock), insufficient resources, operator intervention (shutdown), system error.
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")


def quote_ident(name: str) -> str:
    """An SQL identifier, double-quoted (Postgres and DuckDB rules)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def qualified(table: TableName) -> str:
    return f"{quote_ident(table.schema)}.{quote_ident(table.name)}"


def map_error(err: Exception, role: str, what: str) -> TableSyncError:
    """Turn a psycopg/ADBC error into InputError or TransientError.

    ``role`` is ``source`` or ``destination`` (names the env variable), ``what`` says what
    was being done, e.g. ``reading public.prices``.
    """
    var = f"TABLESYNC_{role.upper()}_URI"
    text = redact(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
    sqlstate = getattr(err, "sqlstate", None) or ""
    lowered = text.lower()
    if "password authentication failed" in lowered or sqlstate.startswith("28"):
        return InputError(f"{role} database refused the login ({text}): fix the user or "
                          f"password in {var}")
    if sqlstate == "3D000" or ("database" in lowered and "does not exist" in lowered):
        return InputError(f"{role} database does not exist ({text}): fix {var}")
    if isinstance(err, psycopg.ProgrammingError) or (not sqlstate and "invalid " in lowered):
        # libpq could not read the URI, or refused one of its options (sslmode=bogus)
        return InputError(f"{var} is not a usable libpq URI ({text}): fix it, e.g. "
                          "postgresql://user:password@host:5432/dbname?sslmode=require")
    if sqlstate[:2] in _TRANSIENT_CLASSES or not sqlstate:
        return TransientError(f"{role} database: {what} failed ({text}); a retry may help")
    return InputError(f"{role} database: {what} failed ({text}) [SQLSTATE {sqlstate}]")


def _numeric_scale(typmod: int) -> int:
    """The scale of ``numeric(p, s)`` from its typmod: 11 bits, signed since Postgres 15."""
    bits = (typmod - 4) & 0x7FF
    return (bits ^ 0x400) - 0x400


@contextmanager
def connect(uri: str, role: str) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection (autocommit) with errors mapped by :func:`map_error`."""
    try:
        conn = psycopg.connect(uri, autocommit=True, connect_timeout=15,
                               application_name=f"tablesync-{role}")
    except psycopg.Error as err:
        raise map_error(err, role, "connecting") from None
    try:
        yield conn
    except psycopg.Error as err:
        raise map_error(err, role, "a catalog query") from None
    finally:
        conn.close()


@contextmanager
def adbc_errors(role: str, what: str) -> Iterator[None]:
    """Map ADBC driver errors raised inside the block with :func:`map_error`."""
    import adbc_driver_manager

    try:
        yield
    except adbc_driver_manager.Error as err:
        raise map_error(err, role, what) from None


def adbc_connect(uri: str, role: str, autocommit: bool) -> Any:
    """An ADBC DB-API connection (Arrow-native COPY in and out)."""
    import adbc_driver_manager
    import adbc_driver_postgresql.dbapi as pgdb

    try:
        return pgdb.connect(uri, autocommit=autocommit)
    except adbc_driver_manager.Error as err:
        raise map_error(err, role, "connecting") from None


class RunLock:
    """A session advisory lock on the destination, held for a whole run.

    The CronJob's ``concurrencyPolicy: Forbid`` does not cover a Job started on demand, so
    two runs of one TableSync could overlap; the second one exits with a TransientError
    instead of racing on ``state.json``. The key is derived from the destination table.
    """

    def __init__(self, uri: str, table: TableName) -> None:
        self._uri = uri
        self._key = f"tablesync:{table}"
        self._conn: psycopg.Connection[Any] | None = None

    def acquire(self) -> None:
        try:
            conn = psycopg.connect(self._uri, autocommit=True, connect_timeout=15,
                                   application_name="tablesync-lock")
            row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                               (self._key,)).fetchone()
        except psycopg.Error as err:
            raise map_error(err, "destination", "taking the run lock") from None
        if not row or not row[0]:
            conn.close()
            raise TransientError(f"another run is applying to {self._key[len('tablesync:'):]} "
                                 "right now; this run will be retried")
        self._conn = conn

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()  # closing the session releases the lock
            self._conn = None


@dataclass(frozen=True)
class ColumnInfo:
    """A table column from the catalog. ``pg_type`` is ``format_type()`` (e.g. numeric(12,2))."""

    name: str
    pg_type: str
    type_name: str  # pg_type.typname, e.g. numeric, _int4
    not_null: bool
    precision: int | None  # numeric(p, s) only
    scale: int | None


@dataclass(frozen=True)
class TableInfo:
    table: TableName
    columns: list[ColumnInfo]
    unique_keys: list[tuple[str, ...]]  # primary key and unique indexes, as column tuples
    estimated_rows: int

    def column(self, name: str) -> ColumnInfo | None:
        return next((c for c in self.columns if c.name == name), None)

    def has_unique(self, columns: tuple[str, ...]) -> bool:
        return any(set(key) == set(columns) for key in self.unique_keys)


def describe_table(conn: psycopg.Connection[Any], table: TableName, role: str,
                   field: str) -> TableInfo:
    """Columns, unique keys and a row estimate; InputError naming ``field`` if it is missing."""
    row = conn.execute(
        "SELECT c.oid, c.reltuples::bigint FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
        "AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        (table.schema, table.name),
    ).fetchone()
    if row is None:
        raise InputError(f"{field}: table {table} does not exist in the {role} database "
                         f"(check the name and TABLESYNC_{role.upper()}_URI)")
    oid, estimate = row
    columns = [
        ColumnInfo(name=name, pg_type=fmt, type_name=typname, not_null=notnull,
                   precision=((typmod - 4) >> 16) & 0xFFFF if typname == "numeric" and typmod > 0
                   else None,
                   scale=_numeric_scale(typmod) if typname == "numeric" and typmod > 0 else None)
        for name, fmt, typname, notnull, typmod in conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, a.attnotnull, "
            "a.atttypmod FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (oid,),
        ).fetchall()
    ]
    unique_keys = [
        tuple(cols) for (cols,) in conn.execute(
            "SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL "
            "GROUP BY i.indexrelid", (oid,),
        ).fetchall()
    ]
    return TableInfo(table=table, columns=columns, unique_keys=unique_keys,
                     estimated_rows=max(int(estimate), 0))
