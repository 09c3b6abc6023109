"""Secrets never reach the output, and the report stays valid and useful: the real job against
real Postgres, checking stdout, stderr (JSON log lines), the termination message and the stored
run record."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.integration.job.lane import PRICES_DDL, JobResult, Lane, load_prices


def with_login(uri: str, user: str, password: str) -> str:
    """``uri`` with its userinfo replaced, verbatim (no percent-encoding)."""
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def run(lane: Lane, env: dict[str, str]) -> tuple[JobResult, str, str]:
    """Run the job; returns its result, the termination message and all it wrote."""
    termlog = lane.work / "termination-log"
    termlog.write_text("")
    result = lane.run("run", env={**env, "TABLESYNC_TERMINATION_LOG": str(termlog)})
    store = Path(lane.storage_url[len("file://"):])
    records = "".join(p.read_text() for p in store.glob("runs/*.json"))
    message = termlog.read_text()
    return result, message, result.stdout + result.stderr + message + records


def assert_log_lines_are_json(result: JobResult) -> None:
    for line in result.stderr.splitlines():
        if line.startswith("{"):
            json.loads(line)


def test_an_unencoded_at_sign_in_the_password_is_refused_unprinted(lane: Lane) -> None:
    load_prices(lane, 10)
    uri = with_login(lane.source, "postgres", "TopSecretA1@TopSecretB2")
    result, message, everything = run(lane, {"TABLESYNC_SOURCE_URI": uri})
    assert result.code == 2
    assert "TABLESYNC_SOURCE_URI" in result.error_line and "%40" in result.error_line
    assert json.loads(message)["reason"] == "InputError"
    assert "TopSecret" not in everything
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]


def test_a_password_parameter_with_bad_percent_encoding_is_not_printed(lane: Lane) -> None:
    load_prices(lane, 10)
    parts = urlsplit(lane.destination)
    uri = urlunsplit(parts._replace(netloc="postgres@" + parts.netloc.rpartition("@")[2],
                                    query="password=TopSecret%zzB2"))
    result, message, everything = run(lane, {"TABLESYNC_DESTINATION_URI": uri})
    assert result.code == 2
    assert "TABLESYNC_DESTINATION_URI" in result.error_line
    assert json.loads(message)["reason"] == "InputError"
    assert "TopSecret" not in everything


def test_a_key_value_string_with_an_unquoted_space_is_not_printed(lane: Lane) -> None:
    load_prices(lane, 10)
    parts = urlsplit(lane.source)
    dsn = (f"host={parts.hostname} port={parts.port} user=postgres "
           f"password=TopSecretA1 TopSecretB2 dbname={parts.path.lstrip('/')}")
    result, message, everything = run(lane, {"TABLESYNC_SOURCE_URI": dsn})
    assert result.code == 2
    assert "TABLESYNC_SOURCE_URI" in result.error_line
    assert json.loads(message)["reason"] == "InputError"
    assert "TopSecret" not in everything


@pytest.fixture
def role(lane: Lane) -> Iterator[str]:
    """A login role of its own (roles are shared by the whole server), dropped afterwards."""
    name = f"ts_{uuid.uuid4().hex[:8]}"
    yield name
    lane.src(f"DROP ROLE IF EXISTS {name}")


@pytest.mark.parametrize("password", ["100", "rows"])
def test_a_password_that_is_json_text_leaves_report_and_logs_valid(
        lane: Lane, role: str, password: str) -> None:
    load_prices(lane, 100)
    lane.src(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
    result, message, _ = run(lane, {"TABLESYNC_SOURCE_URI": with_login(lane.source, role,
                                                                        password)})
    assert result.code == 0, result.stderr
    report = json.loads(message)  # what the operator parses
    assert report["result"] == "Succeeded"
    assert report["rows"] == 100
    assert json.loads(result.stdout.strip().splitlines()[-1]) == report
    assert_log_lines_are_json(result)


def test_a_long_non_ascii_error_keeps_its_start_in_the_report(lane: Lane) -> None:
    lane.both(PRICES_DDL)
    columns = ", ".join(f"ADD COLUMN größe_{i:03d} int" for i in range(300))
    lane.src(f"ALTER TABLE prices {columns}")
    result, message, _ = run(lane, {})
    assert result.code == 2
    assert len(message.encode()) <= 4096
    report = json.loads(message)
    assert "lacks source column" in report["message"]
    assert "lacks source column" in report["error"]
    assert "größe_000" in report["error"]
