"""The run report: a compact JSON (<= 4 KiB) for the operator, and the full run record.

Called by ``pipeline`` and ``__main__``. The compact report goes to the termination-message
file in a pod (``/dev/termination-log``, or ``TABLESYNC_TERMINATION_LOG``) and to stdout;
its fields are the contract in job-image/README.md. The full record goes to
``<url>/runs/<run-id>.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .logs import redact

MAX_REPORT_BYTES = 4096
TERMINATION_LOG = "/dev/termination-log"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
    phase_seconds: dict[str, float] = field(default_factory=dict)
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    error: str | None = None
    sample: list[dict[str, Any]] | None = None  # dry run only; printed, never in compact()

    def compact(self) -> dict[str, Any]:
        data = {
            "result": self.result, "reason": self.reason, "message": self.message,
            "runId": self.run_id, "snapshotId": self.snapshot_id,
            "fromSnapshotId": self.from_snapshot_id, "deltaId": self.delta_id,
            "capturedAt": self.captured_at, "bootstrap": self.bootstrap, "rows": self.rows,
            "delta": self.delta, "apply": self.apply, "phaseSeconds": self.phase_seconds,
            "startedAt": self.started_at, "finishedAt": self.finished_at, "error": self.error,
        }
        return data

    def to_json(self) -> str:
        """The compact report, truncating message and error so it fits in 4 KiB."""
        data = self.compact()
        text = redact(json.dumps(data, separators=(",", ":")))
        for key in ("error", "message"):
            if len(text.encode()) <= MAX_REPORT_BYTES:
                break
            value = data.get(key) or ""
            excess = len(text.encode()) - MAX_REPORT_BYTES + 16
            data[key] = value[: max(len(value) - excess, 0)] + "..."
            text = redact(json.dumps(data, separators=(",", ":")))
        return text


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
