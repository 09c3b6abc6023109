"""One container run: a local process in its own mount namespace, and how it ended.

Called by ``pods``. ``start_container`` writes the sandbox plan (root directory, volume
mounts, termination-log file, working directory, argv) and starts
``unshare --mount --uts --propagation private -- python -I -S sandbox.py PLAN`` in a new session
with the container's environment; stdout and stderr are appended to the container's log
file. ``ContainerRun.result()`` turns the exit into the Kubernetes terminated state.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..procs import ProcessRecord, process_start_ticks
from ..settings import REPO_ROOT

# What a real image would carry: the project (its .venv holds the commands pods run) and the
# Python installation behind it. They stay visible in every container even when a volume is
# mounted over a directory that contains them (an emptyDir at /tmp, say, with the checkout
# under /tmp).
IMAGE_PATHS = sorted({str(REPO_ROOT), sys.prefix, sys.base_prefix})

SANDBOX = Path(__file__).resolve().parent / "sandbox.py"
TERMINATION_MESSAGE_MAX_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
START_ERROR_EXIT = 128


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Mount:
    """Host ``source`` bind-mounted at container ``path``."""

    source: str
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class Terminated:
    """The Kubernetes ``ContainerStateTerminated`` of a finished run."""

    exit_code: int
    reason: str
    message: str
    started_at: str
    finished_at: str
    container_id: str

    def to_status(self) -> dict[str, object]:
        state: dict[str, object] = {
            "exitCode": self.exit_code, "reason": self.reason, "startedAt": self.started_at,
            "finishedAt": self.finished_at, "containerID": self.container_id,
        }
        if self.message:
            state["message"] = self.message
        return state


@dataclass
class ContainerRun:
    """A started container process. Its pid is the container's main process."""

    name: str
    process: subprocess.Popen[bytes]
    record: ProcessRecord
    log_path: Path
    termination_path: Path
    error_path: Path
    message_policy: str
    started_at: str = field(default_factory=now_rfc3339)
    _reaped: bool = False

    @property
    def container_id(self) -> str:
        return f"local://{self.process.pid}"

    def poll(self) -> int | None:
        """Exit code, or None while running. A signal-killed process reads as 128 + signal."""
        code = self.process.poll()
        if code is None:
            return None
        if not self._reaped:
            # Like a container runtime, the container ends with its main process: kill leftovers.
            self._reaped = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        return 128 - code if code < 0 else code

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def result(self, exit_code: int) -> Terminated:
        """The terminated state: reason Completed/Error/StartError, the termination message."""
        finished = now_rfc3339()
        if (exit_code == START_ERROR_EXIT and self.error_path.exists()
                and self.error_path.stat().st_size > 0):
            message = self.error_path.read_text(errors="replace")
            return Terminated(exit_code, "StartError", message, self.started_at, finished,
                              self.container_id)
        message = ""
        try:
            with self.termination_path.open("rb") as handle:
                message = handle.read(TERMINATION_MESSAGE_MAX_BYTES).decode("utf-8", "replace")
        except OSError:
            pass
        if not message and exit_code != 0 and self.message_policy == "FallbackToLogsOnError":
            message = tail_log(self.log_path, FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES)
        reason = "Completed" if exit_code == 0 else "Error"
        return Terminated(exit_code, reason, message, self.started_at, finished, self.container_id)


def tail_log(path: Path, lines: int, max_bytes: int) -> str:
    """The last ``lines`` lines of ``path``, at most ``max_bytes`` bytes of them."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    text = b"\n".join(data.rstrip(b"\n").split(b"\n")[-lines:])[-max_bytes:]
    return text.decode("utf-8", "replace")


def start_container(name: str, run_dir: Path, log_path: Path, argv: list[str],
                    env: dict[str, str], mounts: list[Mount], workdir: str,
                    termination_message_path: str, message_policy: str,
                    hostname: str) -> ContainerRun:
    """Start one container run; ``run_dir`` is fresh per run and holds its plan and mount points."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "root").mkdir(parents=True)
    (run_dir / "scratch").mkdir()
    termination = run_dir / "termination-log"
    termination.touch()
    termination.chmod(0o666)
    error_path = run_dir / "start-error"
    plan = {
        "root": str(run_dir / "root"),
        "scratch": str(run_dir / "scratch"),
        "error_file": str(error_path),
        "mounts": [{"source": m.source, "path": m.path, "read_only": m.read_only}
                   for m in [*mounts, Mount(str(termination), termination_message_path)]],
        "workdir": workdir or "/",
        "hostname": hostname,
        "argv": argv,
        "image_paths": IMAGE_PATHS,
    }
    plan_path = run_dir / "plan.json"
    plan_path.write_text(json.dumps(plan, indent=2))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            ["unshare", "--mount", "--uts", "--propagation", "private", "--",
             sys.executable, "-I", "-S", str(SANDBOX), str(plan_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            cwd="/", start_new_session=True,
        )
    ticks = process_start_ticks(process.pid) or -1
    record = ProcessRecord(name=name, pid=process.pid, start_ticks=ticks, log=str(log_path))
    (run_dir / "process.json").write_text(json.dumps(record.to_json()))
    return ContainerRun(name=name, process=process, record=record, log_path=log_path,
                        termination_path=termination, error_path=error_path,
                        message_policy=message_policy)
