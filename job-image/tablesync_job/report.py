"""The run report: a compact JSON (<= 4 KiB) for the operator, and the full run record.

Called by ``pipeline`` and ``__main__``. The compact report goes to the termination-message
file in a pod (``/dev/termination-log``, or ``TABLESYNC_TERMINATION_LOG``) and to stdout;
its fields are the contract in job-image/README.md. The full record goes to
``<url>/runs/<run-id>.json``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .logs import redact_values

MAX_REPORT_BYTES = 4096  # the termination-message limit of a Kubernetes container
TRUNCATED_MARKER = "... [truncated]"  # ends a message or error shortened to fit
_VERBATIM = ("result", "reason")  # closed vocabularies, never redacted
# ids and times the code makes (snapshots.new_snapshot_id, delta_id, ISO 8601): kept when they
# have that shape, so that a short secret (a password 2026) cannot make them *** and leave the
# operator without a capturedAt for the lag, or an admin without a delta id to approve
_ID = r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{4}"
_TIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})?"
_SHAPED = {"runId": re.compile(_ID), "snapshotId": re.compile(_ID),
           "fromSnapshotId": re.compile(_ID),
           "deltaId": re.compile(rf"(?:{_ID}|bootstrap)\.\.{_ID}"),
           "capturedAt": re.compile(_TIME), "startedAt": re.compile(_TIME),
           "finishedAt": re.compile(_TIME)}
_ESSENTIAL = ("result", "reason", "message", "runId", "error")  # kept when nothing else fits
TERMINATION_LOG = "/dev/termination-log"


def _shaped(key: str, value: Any) -> bool:
    """``value`` is an id or time the code made for ``key`` (``_SHAPED``), so holds no secret."""
    shape = _SHAPED.get(key)
    return shape is not None and isinstance(value, str) and shape.fullmatch(value) is not None


def now_iso(timespec: str = "seconds") -> str:
    return datetime.now(UTC).isoformat(timespec=timespec)


@dataclass
class Report:
    """One run's outcome. ``result``: Succeeded | Failed | GuardTripped | DryRun."""

    run_id: str
    result: str = "Failed"
    reason: str = "TransientError"
    message: str = ""
    snapshot_id: str | None = None
    from_snapshot_id: str | None = None
    delta_id: str | None = None
    captured_at: str | None = None
    bootstrap: bool = False
    rows: int | None = None
    delta: dict[str, int] | None = None
    apply: dict[str, int] | None = None
    # sampled keys of T looked up in the destination, those missing, those held older, and
    # of them those the source confirms (pipeline.probe_destination); set only when any were
    lost_rows: dict[str, int] | None = None
    # lost rows found and left so (spec.destination.lostRows: warn); said in the message
    lost_rows_kept: bool = False
    # sampled rows of the destination, and of them those whose key the source and T lack
    # (pipeline.probe_absent); set only when any were
    absent_rows: dict[str, int] | None = None
    # such rows found and left so (lostRows: warn); said in the message
    absent_rows_kept: bool = False
    phase_seconds: dict[str, float] = field(default_factory=dict)
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    error: str | None = None
    sample: list[dict[str, Any]] | None = None  # dry run only; printed, never in compact()

    def compact(self) -> dict[str, Any]:
        """The report's fields (job-image/README.md, "Report"), camelCase, JSON-able.

        Every string is redacted (:func:`logs.redact_values`) before anything serializes it,
        so a secret that is also JSON text cannot corrupt the report. Kept verbatim: ``result``
        and ``reason`` (closed vocabularies the operator matches on), and ids and times of the
        shape the code makes them (``_SHAPED``). Also the ``report`` of the stored run record.
        """
        data: dict[str, Any] = {
            "result": self.result, "reason": self.reason, "message": self.message,
            "runId": self.run_id, "snapshotId": self.snapshot_id,
            "fromSnapshotId": self.from_snapshot_id, "deltaId": self.delta_id,
            "capturedAt": self.captured_at, "bootstrap": self.bootstrap, "rows": self.rows,
            "delta": self.delta, "apply": self.apply, "phaseSeconds": self.phase_seconds,
            **({"lostRows": self.lost_rows} if self.lost_rows else {}),
            **({"absentRows": self.absent_rows} if self.absent_rows else {}),
            "startedAt": self.started_at, "finishedAt": self.finished_at, "error": self.error,
        }
        return {key: value if key in _VERBATIM or _shaped(key, value) else redact_values(value)
                for key, value in data.items()}

    def to_json(self) -> str:
        """The compact report as one line of ASCII JSON of at most ``MAX_REPORT_BYTES``.

        The 4 KiB is the termination-message limit of a Kubernetes container. When the
        report is longer, ``message`` and ``error`` share what the other fields leave: a
        short one is kept whole and the rest goes to the other, each measured in bytes of its
        escaped form (``\\uXXXX`` for non-ASCII) and cut at a character with
        ``TRUNCATED_MARKER``. Values are redacted before they are cut, so a cut never shows
        part of a secret. If the other fields alone are too long (a very long run id), only
        ``result``, ``reason``, ``message``, ``runId`` and ``error`` are kept, all shortened
        the same way; the operator reads missing fields as absent.
        """
        data = self.compact()
        text = _dumps(data)
        if len(text) <= MAX_REPORT_BYTES:
            return text
        text = _dumps(_fit(data, ("message", "error")))
        if len(text) <= MAX_REPORT_BYTES:
            return text
        essential = {key: data[key] for key in _ESSENTIAL}
        return _dumps(_fit(essential, _ESSENTIAL))


def _dumps(data: dict[str, Any]) -> str:
    """Compact JSON, ASCII only: its length in characters is its length in bytes."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True)


def _escaped_bytes(value: str) -> int:
    """Bytes ``value`` takes between its quotes in the report's JSON (``\\uXXXX`` per
    non-ASCII character, 12 bytes for one outside the BMP, ``\\"`` for a quote)."""
    return len(json.dumps(value, ensure_ascii=True)) - 2


def _truncate_escaped(value: str, budget_bytes: int) -> str:
    """``value`` if its escaped form fits ``budget_bytes``; else its longest prefix that fits
    together with ``TRUNCATED_MARKER``, plus the marker; ``""`` if not even the marker fits."""
    if _escaped_bytes(value) <= budget_bytes:
        return value
    room = budget_bytes - _escaped_bytes(TRUNCATED_MARKER)
    if room < 0:
        return ""
    value = value[:room]  # every character takes at least one byte
    low, high = 0, len(value)  # the longest prefix whose escaped form fits in room
    while low < high:
        mid = (low + high + 1) // 2
        if _escaped_bytes(value[:mid]) <= room:
            low = mid
        else:
            high = mid - 1
    return value[:low] + TRUNCATED_MARKER


def _shares(sizes: dict[str, int], budget_bytes: int) -> dict[str, int]:
    """Split ``budget_bytes`` among fields of ``sizes`` bytes, max-min fair: the smallest
    fields get all they need, the others an equal part of what is left."""
    shares: dict[str, int] = {}
    left = max(budget_bytes, 0)
    order = sorted(sizes, key=lambda key: sizes[key])
    for done, key in enumerate(order):
        shares[key] = min(sizes[key], left // (len(order) - done))
        left -= shares[key]
    return shares


def _fit(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``data`` with its string fields ``keys`` shortened to share the bytes the other
    fields leave of ``MAX_REPORT_BYTES`` (:func:`_shares`, :func:`_truncate_escaped`)."""
    values = {key: data[key] for key in keys if isinstance(data.get(key), str)}
    fitted = {**data, **dict.fromkeys(values, "")}
    budget_bytes = MAX_REPORT_BYTES - len(_dumps(fitted))
    sizes = {key: _escaped_bytes(value) for key, value in values.items()}
    for key, share in _shares(sizes, budget_bytes).items():
        fitted[key] = _truncate_escaped(values[key], share)
    return fitted


def write_termination_message(text: str) -> bool:
    """Write ``text`` where Kubernetes reads the termination message; False outside a pod."""
    path = os.environ.get("TABLESYNC_TERMINATION_LOG")
    if not path:
        if not os.path.exists(TERMINATION_LOG):
            return False
        path = TERMINATION_LOG
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except OSError:
        return False
    return True
