"""The diff's key-range partitions (``tablesync_job.diff``) give exactly the one-join delta.

Partitioning only starts at millions of rows; here its threshold is lowered so that 200k-row
snapshots (written by the dump's own Parquet writer) split into many ranges, for an integer,
a text and a composite key whose first column has only four values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import data
from bench.diff import same_rows, write_snapshot
from tablesync_job import diff as diff_mod
from tablesync_job.diff import OLD_VERSION, OP, diff, open_duckdb, parquet_scan
from tablesync_job.spec import parse

ROWS = 200_000
COLUMNS = ["id", "sku", "price", "currency", "title", "updated_at", "version"]


def _one_join_delta(parts: list[Path], prev_parts: list[Path], keys: list[str],
                    out: Path) -> None:
    on = " AND ".join(f"t.{k} = p.{k}" for k in keys)
    cols = ", ".join(f"CASE WHEN t.id IS NULL THEN p.{c} ELSE t.{c} END AS {c}" for c in COLUMNS)
    con = open_duckdb(out.parent, "1GB")
    try:
        con.execute(
            f"COPY (SELECT CASE WHEN p.id IS NULL THEN 'insert' WHEN t.id IS NULL "
            f"THEN 'delete' ELSE 'update' END AS {OP}, {cols}, p.version AS {OLD_VERSION} "
            f"FROM {parquet_scan(parts)} t FULL OUTER JOIN {parquet_scan(prev_parts)} p "
            f"ON {on} WHERE t.id IS NULL OR p.id IS NULL OR t.version <> p.version) "
            f"TO '{out}' (FORMAT parquet)")
    finally:
        con.close()


@pytest.mark.parametrize("keys", [["id"], ["sku"], ["currency", "id"]])
def test_partitioned_diff_equals_the_single_join(keys: list[str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    changes = data.Changes(ROWS)
    prev, prev_parts = write_snapshot(data.snapshot_query(changes, after=False),
                                      tmp_path / "prev", "t-1", ROWS)
    snap, parts = write_snapshot(data.snapshot_query(changes, after=True),
                                 tmp_path / "next", "t", changes.rows_after)
    prev.primary_key = snap.primary_key = keys
    doc: dict[str, Any] = data.spec("file:///unused")
    doc["spec"]["source"]["primaryKey"] = keys
    seen: list[list[str]] = []
    partitions = diff_mod._partitions

    def spy(*args: Any) -> list[str]:
        seen.append(partitions(*args))
        return seen[-1]

    monkeypatch.setattr(diff_mod, "MIN_PARTITION_ROWS", 10_000)
    monkeypatch.setattr(diff_mod, "PARTITION_BYTES_PER_ROW_COLUMN", 1600)  # 64MB: ~20k rows
    monkeypatch.setattr(diff_mod, "_partitions", spy)

    delta, delta_parts = diff(parse(doc), snap, parts, prev, prev_parts, tmp_path / "work",
                              "64MB")

    assert len(seen[0]) >= (4 if keys[0] == "currency" else 8)
    assert (delta.inserts, delta.updates, delta.deletes) == (
        changes.inserts, changes.updates, changes.deletes)
    expected = tmp_path / "expected.parquet"
    _one_join_delta(parts, prev_parts, keys, expected)
    assert same_rows([str(p) for p in delta_parts], [str(expected)])
