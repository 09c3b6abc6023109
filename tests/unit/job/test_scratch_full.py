"""A full scratch disk is named as such (``pipeline.scratch_full``): pyarrow's Parquet writer
(a real ENOSPC from /dev/full) and DuckDB's spill (its out-of-memory error once
``max_temp_directory_size`` is reached, in DuckDB's words). DuckDB running out of
``memory_limit`` itself is an input error naming spec.job.memoryLimit (``diff.out_of_memory``)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tablesync_job.diff import out_of_memory
from tablesync_job.errors import InputError, TransientError
from tablesync_job.pipeline import scratch_full

# a hash join of 30M rows on each side: more than 1MB of memory
BIG_JOIN = ("SELECT count(*) FROM range(30000000) a JOIN range(30000000) b "
            "ON a.range = b.range")


def test_a_parquet_write_to_a_full_disk(tmp_path: Path) -> None:
    # a file object, not the path: after a failed write pyarrow removes the file at a path
    with pytest.raises(OSError) as info:
        pq.write_table(pa.table({"id": list(range(100_000))}), pa.OSFile("/dev/full", "wb"))
    mapped = scratch_full(info.value, tmp_path / "tablesync-x")
    assert isinstance(mapped, TransientError)
    assert str(mapped).startswith(f"the run's scratch space under {tmp_path} is full (")
    assert "No space left on device" in str(mapped)
    assert "spec.job.scratchSizeLimit" in str(mapped) and "TABLESYNC_WORK_DIR" in str(mapped)


# DuckDB 2.0's error when its spill found a 256 KiB tmpfs full (max_temp_directory_size is, by
# default, the free space of the temp directory's disk)
SPILL_FULL = ("Out of Memory Error: failed to offload data block of size 256.0 KiB (192.0 KiB/"
              "230.3 KiB used).\nThis limit was set by the 'max_temp_directory_size' setting.\n"
              "By default, this setting utilizes the available disk space on the drive where "
              "the 'temp_directory' is located.")


def test_a_duckdb_spill_that_finds_no_room(tmp_path: Path) -> None:
    """Not a memory limit to raise: ``out_of_memory`` lets it through to ``scratch_full``."""
    with pytest.raises(duckdb.OutOfMemoryException) as info, out_of_memory("1GB"):
        raise duckdb.OutOfMemoryException(SPILL_FULL)
    mapped = scratch_full(info.value, tmp_path / "tablesync-x")
    assert isinstance(mapped, TransientError)
    assert "failed to offload data block" in str(mapped) and "\n" not in str(mapped)


def test_duckdb_out_of_its_memory_limit_names_the_setting(tmp_path: Path) -> None:
    con = duckdb.connect(config={"memory_limit": "1MB", "threads": 1,
                                 "temp_directory": str(tmp_path / "spill")})
    with pytest.raises(InputError) as info, out_of_memory("1MB"):
        con.execute(BIG_JOIN).fetchall()
    assert str(info.value).startswith("the diff needs more memory than memory_limit=1MB (")
    assert "spec.job.memoryLimit (TABLESYNC_MEMORY_LIMIT)" in str(info.value)
    assert scratch_full(info.value, tmp_path) is None


def test_other_errors_are_not_a_full_disk(tmp_path: Path) -> None:
    assert scratch_full(FileNotFoundError(2, "No such file or directory"), tmp_path) is None
    assert scratch_full(ValueError("bad"), tmp_path) is None
