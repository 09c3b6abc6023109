"""Start background processes and stop them again by process id, safely.

Used by ``controlplane`` (etcd, kube-apiserver, kube-controller-manager, the pod runner) and
by the pod runner for container processes. A process is recorded as a ``ProcessRecord``: its
pid plus its start time from ``/proc/<pid>/stat``, so a later ``stop`` never signals an
unrelated process that happens to reuse the pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[19])


@dataclass(frozen=True)
class ProcessRecord:
    """A process we started. ``start_ticks`` pins it against pid reuse."""

    name: str
    pid: int
    start_ticks: int
    log: str

    def alive(self) -> bool:
        """True while the very process we started exists (zombies count as gone)."""
        if process_start_ticks(self.pid) != self.start_ticks:
            return False
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return state[state.rindex(")") + 2] != "Z"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(name=str(data["name"]), pid=int(data["pid"]),
                   start_ticks=int(data["start_ticks"]), log=str(data["log"]))


def spawn(name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start ``argv`` in its own session, stdin from /dev/null, stdout+stderr appended to ``log``.

    Its own session means Ctrl-C in the terminal that ran ``up`` does not reach it, and
    ``stop`` can signal its whole process group.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )
    ticks = process_start_ticks(proc.pid)
    if ticks is None:  # exited already: still return a record that reads as dead
        ticks = -1
    return proc, ProcessRecord(name=name, pid=proc.pid, start_ticks=ticks, log=str(log))


def stop(record: ProcessRecord, grace_seconds: float = 10.0, group: bool = True) -> bool:
    """SIGTERM the process (and its group), SIGKILL after ``grace_seconds``.

    Returns True if the process is gone afterwards. A record whose pid now belongs to another
    process is left alone.
    """
    if record.alive():
        _signal(record, signal.SIGTERM, group)
    deadline = time.monotonic() + grace_seconds
    while record.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if record.alive():
        _signal(record, signal.SIGKILL, group)
        deadline = time.monotonic() + 5
        while record.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    if record.alive():
        return False
    _reap(record.pid)
    return True


def _signal(record: ProcessRecord, sig: signal.Signals, group: bool) -> None:
    try:
        if group and os.getpgid(record.pid) == record.pid:
            os.killpg(record.pid, sig)
        else:
            os.kill(record.pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our (dead) child, so it does not linger as a zombie
    (some container inits, e.g. Firecracker's, never reap orphans)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
