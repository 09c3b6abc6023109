"""``file://`` storage writes each object durably: the data is flushed before the rename over
the old object, and the directory after it, so a power loss leaves state.json (and every
snapshot and delta file) old or new and whole, never empty or renamed without its data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tablesync_job.storage import open_storage


def test_each_write_flushes_the_file_then_its_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    storage = open_storage(f"file://{tmp_path}/store")
    storage.check()
    local = tmp_path / "part.parquet"
    local.write_bytes(b"PAR1")

    storage.put_bytes("state.json", b'{"a": 1}')
    storage.upload_file(local, "snapshots/s1/part-00000.parquet")

    root = tmp_path / "store"
    assert synced == [str(root / "state.json.tmp"), str(root),
                      str(root / "snapshots/s1/part-00000.parquet.tmp"), str(root / "snapshots/s1")]
    assert storage.get_bytes("state.json") == b'{"a": 1}'
    assert not list(root.rglob("*.tmp"))
