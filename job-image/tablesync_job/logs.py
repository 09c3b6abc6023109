"""Structured logging and progress reporting for the job.

Log lines are JSON objects on stderr with the TableSync, run id and phase (STYLE.md rule 5);
secrets registered with :func:`register_secret` are replaced by ``***`` in every line and in
every error message (:func:`redact`). Structured output is redacted value by value before it is
serialized (:func:`redact_values`), so a secret that is also JSON text (``100``, ``null``, a
key) cannot break a line or the report. Long phases report progress through :class:`Progress`:
a JSON line at least every ``interval_seconds`` or, on a terminal, a tqdm progress bar.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

_SECRETS: set[str] = set()
_CONTEXT: dict[str, str] = {}


def register_secret(value: str | None) -> None:
    """Never print ``value``; for a URI, never print its password either."""
    if not value:
        return
    _SECRETS.add(value)
    try:
        password = urlsplit(value).password
    except ValueError:
        password = None
    if password:
        _SECRETS.add(password)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***`` (longest first)."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def redact_values(value: Any) -> Any:
    """``value`` (a JSON-able tree) with every string value in it redacted.

    Keys are kept: they are field names chosen by the code, and a secret that happens to be a
    field name (``rows``) must not remove the field. Numbers, booleans and None are kept;
    tuples become lists; any other object becomes its redacted ``str()`` (what
    ``json.dumps(default=str)`` would print).
    """
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {k: redact_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v) for v in value]
    return redact(str(value))


def set_context(**fields: str) -> None:
    """Fields added to every log line from now on (e.g. ``tablesync``, ``runId``, ``phase``)."""
    _CONTEXT.update(fields)


class _JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` and ``level`` (kept as they are), the context,
    ``msg``, the record's ``fields`` and, for ``log.exception`` (an unexpected error: a bug),
    ``traceback``; all redacted value by value (:func:`redact_values`)."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {**_CONTEXT, "msg": record.getMessage()}
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            fields.update(extra)
        if record.exc_info:
            fields["traceback"] = self.formatException(record.exc_info)
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            **redact_values(fields),
        }
        return json.dumps(line, ensure_ascii=False)


def setup(level: int = logging.INFO) -> None:
    """Send the ``tablesync_job`` loggers to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger("tablesync_job")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def get(name: str) -> logging.Logger:
    return logging.getLogger(name)


class Progress:
    """Counts rows of one phase and reports them every ``interval_seconds`` (rows, rows/s).

    ``total`` is an estimate (e.g. ``pg_class.reltuples``) used by the terminal bar only.
    """

    def __init__(self, phase: str, total: int | None = None,
                 interval_seconds: float = 5.0) -> None:
        self.phase = phase
        self.rows = 0
        self.started = time.monotonic()
        self._last = self.started
        self._interval = interval_seconds
        self._log = get("tablesync_job.progress")
        self._bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total if total and total > 0 else None, unit="rows",
                             desc=phase, unit_scale=True, leave=False)

    def update(self, rows: int) -> None:
        self.rows += rows
        if self._bar is not None:
            self._bar.update(rows)
            return
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._log.info("progress", extra={"fields": self.figures()})

    def figures(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {"phase": self.phase, "rows": self.rows,
                "rowsPerSecond": round(self.rows / elapsed), "seconds": round(elapsed, 3)}

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@contextmanager
def heartbeat(phase: str, step: str, interval_seconds: float = 5.0) -> Iterator[None]:
    """Log ``{phase, step, seconds}`` every ``interval_seconds`` while the block runs.

    For steps that report no rows while they work (a DuckDB statement), so a long phase still
    shows it is alive at least every few seconds.
    """
    done = threading.Event()
    started = time.monotonic()
    log = get("tablesync_job.progress")

    def beat() -> None:
        while not done.wait(interval_seconds):
            log.info("progress", extra={"fields": {
                "phase": phase, "step": step,
                "seconds": round(time.monotonic() - started, 1)}})

    thread = threading.Thread(target=beat, name=f"heartbeat-{phase}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
