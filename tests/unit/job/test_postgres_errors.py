"""Errors the driver's Arrow stream raises mid-read (``map_stream_error``): the libpq ones are
transient, a standby's recovery conflict names the settings that prevent it, anything else is
left as it is. tests/integration/job/test_standby.py provokes a real recovery conflict. And
psycopg's ProgrammingError (``map_error``): a malformed URI only without a SQLSTATE."""

from __future__ import annotations

import psycopg
import pytest

from tablesync_job import logs
from tablesync_job.errors import InputError, TransientError
from tablesync_job.postgres import map_error, map_stream_error


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_SECRETS", {"s3cr3t"})


def test_a_lost_connection_mid_read_is_transient_and_redacted() -> None:
    err = OSError("[libpq] Execution error [PGRES_FATAL_ERROR]: server closed the connection "
                  "unexpectedly (user s3cr3t)\n\tThis probably means the server terminated")
    mapped = map_stream_error(err, "source", "reading public.prices")
    assert isinstance(mapped, TransientError)
    assert str(mapped).startswith("source database: reading public.prices failed mid-read "
                                  "(server closed the connection unexpectedly")
    assert "s3cr3t" not in str(mapped) and "\n" not in str(mapped)


def test_a_recovery_conflict_names_the_standby_settings() -> None:
    err = OSError("[libpq] Execution error [PGRES_FATAL_ERROR]: ERROR:  canceling statement "
                  "due to conflict with recovery\nDETAIL:  User query might have needed to see "
                  "row versions that must be removed.")
    mapped = map_stream_error(err, "source", "reading public.prices")
    assert isinstance(mapped, TransientError)
    assert "hot_standby_feedback = on" in str(mapped)
    assert "max_standby_streaming_delay" in str(mapped)


def test_an_error_not_from_libpq_is_left_alone() -> None:
    err = OSError("No space left on device")
    assert map_stream_error(err, "source", "reading public.prices") is err


def test_libpq_refusing_the_uri_names_the_variable() -> None:
    err = psycopg.ProgrammingError('missing "=" after "notauri" in connection info string')
    mapped = map_error(err, "source", "connecting")
    assert isinstance(mapped, InputError)
    assert str(mapped).startswith("TABLESYNC_SOURCE_URI is not a usable libpq URI")


def test_a_server_error_psycopg_calls_programming_is_not_a_uri_error() -> None:
    mapped = map_error(psycopg.errors.UndefinedColumn('column "sku" does not exist'),
                       "destination", "a catalog query")
    assert isinstance(mapped, InputError)
    assert "libpq URI" not in str(mapped)
    assert str(mapped) == ('destination database: a catalog query failed (column "sku" does '
                           'not exist) [SQLSTATE 42703]')
    denied = map_error(psycopg.errors.InsufficientPrivilege("permission denied for table t"),
                       "destination", "a catalog query")
    assert "grant the role of TABLESYNC_DESTINATION_URI" in str(denied)
