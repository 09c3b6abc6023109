"""JSON log lines: secrets redacted, and every line still valid JSON whatever the secret is."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from tablesync_job import logs


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_SECRETS", set())
    monkeypatch.setattr(logs, "_CONTEXT", {"tablesync": "test/prices", "runId": "r1"})


def line(msg: str, fields: dict[str, object] | None = None) -> str:
    record = logging.LogRecord("tablesync_job.test", logging.INFO, __file__, 1, msg, None, None)
    if fields is not None:
        record.fields = fields
    return logs._JsonFormatter().format(record)


@pytest.mark.parametrize("password", ["100", "null", "true", "rows", "msg", "level", '": "',
                                      "info", "tablesync"])
def test_a_password_that_is_also_json_text_leaves_log_lines_valid(password: str) -> None:
    logs.register_secret(password)
    doc = json.loads(line("progress", {"phase": "dump", "rows": 100, "done": True,
                                       "nothing": None}))
    assert doc["level"] == "info" and doc["tablesync"] == "test/prices"
    assert doc["rows"] == 100
    assert doc["done"] is True and doc["nothing"] is None
    assert doc["phase"] == "dump" and doc["msg"] == "progress"


def test_secrets_are_redacted_in_the_message_fields_and_context() -> None:
    logs.register_secret("s3cr3t-pw")
    logs.set_context(phase="s3cr3t-pw")
    text = line("login as app:s3cr3t-pw", {
        "error": "refused for s3cr3t-pw",
        "nested": {"list": ["s3cr3t-pw", 1]},
        "object": ValueError("bad s3cr3t-pw"),
    })
    assert "s3cr3t-pw" not in text
    doc = json.loads(text)
    assert doc["msg"] == "login as app:***"
    assert doc["error"] == "refused for ***"
    assert doc["nested"] == {"list": ["***", 1]}
    assert doc["object"] == "bad ***"
    assert doc["phase"] == "***"


def test_redact_values_keeps_the_shape() -> None:
    logs.register_secret("100")
    value = {"a": [100, "100 rows", (1.5, None)], "b": {"c": False}}
    assert logs.redact_values(value) == {"a": [100, "*** rows", [1.5, None]],
                                         "b": {"c": False}}


def test_an_unexpected_error_logs_its_traceback_redacted() -> None:
    logs.register_secret("s3cr3t-pw")
    try:
        raise RuntimeError("boom with s3cr3t-pw")
    except RuntimeError:
        record = logging.LogRecord("tablesync_job.test", logging.ERROR, __file__, 1,
                                   "unexpected error", None, sys.exc_info())
    doc = json.loads(logs._JsonFormatter().format(record))
    assert "Traceback" in doc["traceback"] and "RuntimeError: boom with ***" in doc["traceback"]
    assert "s3cr3t-pw" not in json.dumps(doc)
