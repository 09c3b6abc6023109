"""Wall time and peak RSS of one phase, measured in a process of its own.

Called by the benchmark modules. A phase runs in a fresh ``spawn``-ed child (or as a command,
for the whole run), so its peak RSS is that phase's alone, not the benchmark's cumulative
high-water mark: the child reads its own ``VmHWM`` from ``/proc/self/status`` when the phase
ends; a command's comes from ``wait4``'s ``ru_maxrss``. The phase function times the part
that is the phase itself (setup such as parsing the spec stays outside) and returns
:class:`Timed`.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 2**20


@dataclass
class Timed:
    """What a phase function returns: its own wall time and anything worth reporting."""

    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measurement:
    """A phase's wall time (seconds), peak RSS (bytes; None when not measured) and info."""

    seconds: float
    peak_rss_bytes: int | None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def peak_rss_mib(self) -> float | None:
        return None if self.peak_rss_bytes is None else self.peak_rss_bytes / MIB


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds`` (monotonic wall time)."""

    seconds: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self._started


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM) in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(fn: Callable[..., Timed], args: tuple[Any, ...]) -> Measurement:
    timed = fn(*args)
    return Measurement(seconds=timed.seconds, peak_rss_bytes=peak_rss_bytes(), info=timed.info)


def in_child(fn: Callable[..., Timed], *args: Any) -> Measurement:
    """Run ``fn(*args)`` in a fresh spawned process; its result and that process's peak RSS.

    ``fn`` must be a module-level function (it is imported by name in the child). An
    exception in the child is raised here.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_child, fn, args).result()


def command(argv: list[str], env: dict[str, str], log_dir: Path,
            name: str) -> tuple[Measurement, str]:
    """Run a command; its wall time, peak RSS (``wait4``) and stdout.

    stdout and stderr go to ``log_dir/name.out`` and ``.err``. Raises RuntimeError naming the
    stderr file when the command fails.
    """
    out, err = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} exited with {proc.returncode}; see {err}")
    return Measurement(seconds=seconds, peak_rss_bytes=usage.ru_maxrss * 1024), out.read_text()
