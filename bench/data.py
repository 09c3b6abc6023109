"""The benchmark's product-price table, generated where it is used: in Postgres or in DuckDB.

Called by the benchmark modules. Row ``g`` of the table is a pure function of ``g`` (and, for a
changed row, of the change round), so Postgres (``generate_series``) and DuckDB (``range``)
build the same rows without any data crossing Python. Columns::

    id          bigint primary key (1..rows)
    sku         text, 'SKU-' and 10 digits
    price       numeric(12,2), 0.99 .. 5000.98
    currency    char(3), one of EUR USD GBP CHF
    title       text, about 30 characters
    updated_at  timestamptz, spread over 2025 (a changed row: 2026)
    version     bigint, 1..7 (a changed row: one more)

Changes between two snapshots follow the issue's mix: ``update_every`` picks the updated
rows (every n-th id, so they spread over the whole table), ``delete_every`` the deleted ones,
and inserts take ids above the table's end.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

DDL = ("CREATE {unlogged} TABLE prices (id bigint NOT NULL, sku text NOT NULL, "
       "price numeric(12,2) NOT NULL, currency char(3) NOT NULL, title text NOT NULL, "
       "updated_at timestamptz NOT NULL, version bigint NOT NULL)")

# The spec every benchmark syncs with: the counter ``version`` orders the rows.
SPEC: dict[str, Any] = {
    "apiVersion": "tablesync.dev/v1alpha1", "kind": "TableSync",
    "metadata": {"name": "prices", "namespace": "bench"},
    "spec": {
        "schedule": "*/30 * * * *",
        "source": {"uriSecretRef": {"name": "replica", "key": "uri"}, "table": "public.prices",
                   "primaryKey": ["id"], "versionColumn": "version"},
        "storage": {"url": "file:///tmp/unused", "keepSnapshots": 2},
        "destination": {"uriSecretRef": {"name": "warehouse", "key": "uri"},
                        "table": "public.prices", "deletes": "apply"},
    },
}


def spec(storage_url: str) -> dict[str, Any]:
    """The benchmark's TableSync manifest with ``storage.url`` set."""
    doc: dict[str, Any] = {**SPEC, "spec": {**SPEC["spec"]}}
    doc["spec"]["storage"] = {**SPEC["spec"]["storage"], "url": storage_url}
    return doc


@dataclass(frozen=True)
class Changes:
    """Which rows of a ``rows``-row table a change round touches (issue 2's mix by default).

    ``update_every``: every n-th id is updated (100: 1 %). ``delete_every``: every n-th id
    (offset so it never meets an updated one) is deleted. ``inserts``: new ids after ``rows``.
    """

    rows: int
    update_every: int = 100
    delete_every: int = 1000

    def __post_init__(self) -> None:
        if self.update_every <= _UPDATE_OFFSET or self.delete_every % self.update_every:
            raise ValueError("update_every must exceed 50 and divide delete_every, so that "
                             "no row is both updated and deleted")

    @property
    def updates(self) -> int:
        return _count_multiples(self.rows, self.update_every, _UPDATE_OFFSET)

    @property
    def deletes(self) -> int:
        return _count_multiples(self.rows, self.delete_every, _DELETE_OFFSET)

    @property
    def inserts(self) -> int:
        return self.rows // self.delete_every

    @property
    def rows_after(self) -> int:
        return self.rows - self.deletes + self.inserts

    def updated(self, g: str) -> str:
        return f"{g} % {self.update_every} = {_UPDATE_OFFSET % self.update_every}"

    def deleted(self, g: str) -> str:
        return f"{g} % {self.delete_every} = {_DELETE_OFFSET % self.delete_every}"


# offsets that keep updated and deleted ids apart (see Changes.__post_init__)
_UPDATE_OFFSET = 50
_DELETE_OFFSET = 1


def _count_multiples(rows: int, every: int, offset: int) -> int:
    """How many g in 1..rows have g % every == offset % every."""
    r = offset % every
    first = r if r else every
    return 0 if first > rows else (rows - first) // every + 1


# row expressions ------------------------------------------------------------------------------

def _columns(dialect: str, g: str, changed: bool) -> str:
    """The SELECT list for row ``g`` (an SQL expression) in ``postgres`` or ``duckdb``."""
    text = "::text" if dialect == "postgres" else "::VARCHAR"
    # a Lehmer step, then a quadratic residue of it: irregular from row to row, so that no
    # encoding finds a pattern real data would not have (all within bigint range)
    lehmer = f"(({g} * 48271) % 2147483647)"
    h = f"(({lehmer} * {lehmer} + {7 if changed else 0}) % 1000003)"
    year = "2026" if changed else "2025"
    if dialect == "postgres":
        when = (f"timestamptz '{year}-01-01 00:00:00+00' + ({h} * 31) "
                "* interval '1 second'")
        price = f"((({h} % 500000) + 99) / 100.0)::numeric(12,2)"
    else:
        when = f"TIMESTAMPTZ '{year}-01-01 00:00:00+00' + to_seconds({h} * 31)"
        price = f"CAST((({h} % 500000) + 99) / 100.0 AS DECIMAL(12,2))"
    return ", ".join([
        f"{g} AS id",
        f"'SKU-' || lpad({g}{text}, 10, '0') AS sku",
        f"{price} AS price",
        f"CASE {g} % 4 WHEN 0 THEN 'EUR' WHEN 1 THEN 'USD' WHEN 2 THEN 'GBP' ELSE 'CHF' END "
        "AS currency",
        f"'Product ' || ({g} % 100003){text} || ' colour ' || ({g} % 17){text} || ' size ' "
        f"|| ({g} % 9){text} AS title",
        f"{when} AS updated_at",
        f"1 + {g} % 7 + {1 if changed else 0} AS version",
    ])


# Postgres -------------------------------------------------------------------------------------

def execute(uri: str, *statements: str) -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def fetch_one(uri: str, sql: str) -> tuple[Any, ...]:
    with psycopg.connect(uri, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return tuple(row)


def _parallel_insert(uri: str, first: int, last: int, workers: int = 2) -> None:
    """INSERT rows first..last in ``workers`` concurrent sessions (one per core)."""
    step = (last - first + workers) // workers
    errors: list[BaseException] = []

    def insert(lo: int, hi: int) -> None:
        try:
            execute(uri, f"INSERT INTO prices SELECT {_columns('postgres', 'g', False)} "
                         f"FROM generate_series({lo}::bigint, {hi}::bigint) g")
        except BaseException as err:  # re-raised below, in the caller's thread
            errors.append(err)

    threads = [threading.Thread(target=insert, args=(lo, min(lo + step - 1, last)))
               for lo in range(first, last + 1, step)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def create_prices(uri: str, rows: int, unlogged: bool) -> None:
    """Create ``prices`` with ids 1..rows and its primary key, vacuumed, analyzed, checkpointed.

    ``unlogged`` for a source (only read); a destination stays a normal, WAL-logged table.
    """
    execute(uri, "DROP TABLE IF EXISTS prices",
            DDL.format(unlogged="UNLOGGED" if unlogged else ""))
    if rows:
        _parallel_insert(uri, 1, rows)
    execute(uri, "ALTER TABLE prices ADD PRIMARY KEY (id)")
    settle(uri)


def extend_prices(uri: str, rows_now: int, rows: int) -> None:
    """Grow ``prices`` from ``rows_now`` to ``rows`` rows (the key is rebuilt, not maintained)."""
    execute(uri, "ALTER TABLE prices DROP CONSTRAINT prices_pkey")
    _parallel_insert(uri, rows_now + 1, rows)
    execute(uri, "ALTER TABLE prices ADD PRIMARY KEY (id)")
    settle(uri)


def change_prices(uri: str, changes: Changes) -> None:
    """Apply one change round to ``prices`` in Postgres: updates, deletes, then inserts."""
    changed = _columns("postgres", "id", True).split(", ")
    sets = ", ".join(expr.rsplit(" AS ", 1)[1] + " = " + expr.rsplit(" AS ", 1)[0]
                     for expr in changed if expr.endswith(("price", "updated_at")))
    execute(uri,
            f"UPDATE prices SET {sets}, version = version + 1 WHERE {changes.updated('id')}",
            f"DELETE FROM prices WHERE {changes.deleted('id')}",
            f"INSERT INTO prices SELECT {_columns('postgres', 'g', False)} FROM generate_series("
            f"{changes.rows + 1}::bigint, {changes.rows + changes.inserts}::bigint) g")
    settle(uri)


def settle(uri: str) -> None:
    """VACUUM ANALYZE and CHECKPOINT, so timing starts from a quiet server."""
    execute(uri, "VACUUM ANALYZE prices", "CHECKPOINT")


# DuckDB ---------------------------------------------------------------------------------------

def snapshot_query(changes: Changes, after: bool) -> str:
    """DuckDB SQL for the rows of snapshot T-1 (``after=False``) or T (``after=True``).

    T keeps the order a Postgres heap has after the change round: untouched rows by id, then
    the updated rows (new tuple versions go to the end of the heap), then the inserts.
    """
    n = changes.rows
    base = _columns("duckdb", "g", False)
    if not after:
        return f"SELECT {base} FROM range(1, {n + 1}) r(g)"
    # the updated row keeps id, sku, currency, title; price, updated_at and version change
    updated = _columns("duckdb", "g", True)
    return (f"SELECT {base} FROM range(1, {n + 1}) r(g) WHERE NOT ({changes.updated('g')}) "
            f"AND NOT ({changes.deleted('g')}) "
            f"UNION ALL SELECT {updated} FROM range(1, {n + 1}) r(g) WHERE {changes.updated('g')} "
            f"UNION ALL SELECT {base} FROM range({n + 1}, {n + changes.inserts + 1}) r(g)")


def delta_query(changes: Changes, op_column: str, old_version_column: str) -> str:
    """DuckDB SQL for the fat delta from T-1 to T (what ``diff`` writes), in id order."""
    n = changes.rows
    old_version = "1 + g % 7"
    return (
        f"SELECT 'update' AS {op_column}, {_columns('duckdb', 'g', True)}, "
        f"{old_version} AS {old_version_column} FROM range(1, {n + 1}) r(g) "
        f"WHERE {changes.updated('g')} "
        f"UNION ALL SELECT 'insert', {_columns('duckdb', 'g', False)}, NULL "
        f"FROM range({n + 1}, {n + changes.inserts + 1}) r(g) "
        f"UNION ALL SELECT 'delete', {_columns('duckdb', 'g', False)}, {old_version} "
        f"FROM range(1, {n + 1}) r(g) WHERE {changes.deleted('g')}")


def write_parquet(query: str, path: Path, threads: int = 2) -> None:
    """Run a DuckDB query into one zstd Parquet file (the way ``diff`` writes deltas)."""
    import duckdb

    con = duckdb.connect(config={"threads": threads})
    try:
        con.execute(f"COPY ({query}) TO '{path}' (FORMAT parquet, COMPRESSION zstd)")
    finally:
        con.close()
