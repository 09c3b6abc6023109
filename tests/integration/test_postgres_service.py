"""The test suite's own Postgres (tests/support/services.py) keeps working while another
pytest session starts: that session makes pytest's root (/tmp/pytest-of-root) private again,
which locked a server of this session out of its data directory (pg_control_system() then
failed with "Permission denied", and with it every apply that records its transaction)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.services import PostgresServer, postgres_bindir

REPO = Path(__file__).resolve().parents[2]


def test_a_private_pytest_root_does_not_lock_the_server_out(
        postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.getbasetemp().parent  # what another session chmods to 0700
    mode = root.stat().st_mode
    root.chmod(0o700)
    try:
        with psycopg.connect(postgres.uri(), autocommit=True) as conn:
            row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
    finally:
        root.chmod(mode)
    assert row is not None and row[0] > 0


def test_make_demo_again_after_its_postgres_died_leaves_no_files_behind(
        tmp_path: Path) -> None:
    """`make demo` finds its Postgres gone (killed, the machine restarted) and starts a new
    one. As root the server's files live in a directory of their own, linked from the
    demo's state: removing the state removed the link only, and the dead server's data
    stayed in /tmp for good (fourth review)."""
    state = tmp_path / "demo"
    env = {**os.environ, "TABLESYNC_DEMO_STATE": str(state), "TABLESYNC_DEMO_ROWS": "10",
           "PYTHONPATH": str(REPO)}
    step = [sys.executable, "-c", "from demo.__main__ import Demo; Demo().postgres()"]
    link = state / "postgres" / "server"
    first = subprocess.run(step, cwd=REPO, env=env, text=True, capture_output=True,
                           timeout=300, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    old = link.resolve() if link.is_symlink() else state / "postgres"
    assert link.is_symlink() == (os.geteuid() == 0)
    PostgresServer(port=0, data_dir=old / "pgdata", bindir=postgres_bindir()).stop()  # dies
    if link.is_symlink():
        old.mkdir()  # (stop removes its own directory: the dead server's files stay)
        (old / "pgdata").mkdir()
    try:
        again = subprocess.run(step, cwd=REPO, env=env, text=True, capture_output=True,
                               timeout=300, check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        new = link.resolve() if link.is_symlink() else state / "postgres"
        assert new == old or not old.exists(), f"{old} (the dead server's files) stayed"
    finally:
        new = link.resolve() if link.is_symlink() else state / "postgres"
        PostgresServer(port=0, data_dir=new / "pgdata", bindir=postgres_bindir()).stop()
        if old != new:
            shutil.rmtree(old, ignore_errors=True)
