"""The test suite's own Postgres (tests/support/services.py) keeps working while another
pytest session starts: that session makes pytest's root (/tmp/pytest-of-root) private again,
which locked a server of this session out of its data directory (pg_control_system() then
failed with "Permission denied", and with it every apply that records its transaction)."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.services import PostgresServer


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
