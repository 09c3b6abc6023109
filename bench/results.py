"""One benchmark result per phase and size, its targets, and the table they print as.

Called by the benchmark modules (which build :class:`Result`) and ``__main__`` (which prints
them and writes them as JSON). Every result carries the baseline measured in the same run, so
a machine busy with something else slows both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .measure import MIB, Measurement


@dataclass(frozen=True)
class Target:
    """One target of issue 2 and whether this run met it.

    ``text`` reads like the issue (e.g. ``time <= 2x baseline``); ``met`` is None when the
    figure it needs was not measured.
    """

    text: str
    met: bool | None


@dataclass
class Result:
    """A phase measured at one size, beside its baseline.

    ``rows`` is the table (dump, diff, whole run) or delta (apply) size the phase handled;
    ``ratio`` is the phase's seconds over the baseline's.
    """

    phase: str
    rows: int
    measured: Measurement
    baseline_name: str
    baseline: Measurement
    targets: list[Target] = field(default_factory=list)
    # The 1-minute load average when the phase started: other work on the machine.
    load_average: float = 0.0
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.measured.seconds / self.baseline.seconds if self.baseline.seconds else 0.0

    @property
    def verdict(self) -> str:
        if any(t.met is False for t in self.targets):
            return "MISS"
        return "PASS" if self.targets and all(t.met for t in self.targets) else "-"

    def as_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase, "rows": self.rows,
            "seconds": round(self.measured.seconds, 3),
            "rowsPerSecond": round(rate(self.rows, self.measured.seconds)),
            "peakRssMiB": _mib(self.measured), "info": self.measured.info,
            "baseline": {"name": self.baseline_name,
                         "seconds": round(self.baseline.seconds, 3),
                         "peakRssMiB": _mib(self.baseline), "info": self.baseline.info},
            "ratio": round(self.ratio, 3),
            "targets": [{"text": t.text, "met": t.met} for t in self.targets],
            "verdict": self.verdict, "loadAverage": round(self.load_average, 2),
            "note": self.note,
        }


def rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else 0.0


def _mib(m: Measurement) -> float | None:
    return None if m.peak_rss_bytes is None else round(m.peak_rss_bytes / MIB, 1)


def rss_target(m: Measurement, limit_mib: int) -> Target:
    """``peak RSS <= limit_mib MiB``."""
    rss = m.peak_rss_mib
    return Target(f"RSS <= {limit_mib} MiB", None if rss is None else rss <= limit_mib)


COLUMNS = ("phase", "rows", "seconds", "rows/s", "peak RSS MiB", "baseline (same run)",
           "base s", "base RSS MiB", "ratio", "target", "result", "load")
_RIGHT = {"rows", "seconds", "rows/s", "peak RSS MiB", "base s", "base RSS MiB", "ratio",
          "load"}


def _cells(r: Result) -> list[str]:
    def rss(m: Measurement) -> str:
        return "-" if m.peak_rss_mib is None else f"{m.peak_rss_mib:,.0f}"

    verdict = r.verdict
    missed = [t.text.split(" ")[0] for t in r.targets if t.met is False]
    return [
        r.phase, f"{r.rows:,}", f"{r.measured.seconds:.2f}",
        f"{rate(r.rows, r.measured.seconds):,.0f}", rss(r.measured), r.baseline_name,
        f"{r.baseline.seconds:.2f}", rss(r.baseline), f"{r.ratio:.2f}x",
        "; ".join(t.text for t in r.targets) or "-",
        verdict + (f" ({', '.join(missed)})" if missed else ""),
        f"{r.load_average:.1f}",
    ]


def table(results: list[Result]) -> str:
    """The results as an aligned plain-text table (one line per result, notes below)."""
    rows = [list(COLUMNS), *(_cells(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.rjust(w) if COLUMNS[i] in _RIGHT else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"{r.phase} {r.rows:,}: {r.note}" for r in results if r.note]
    return "\n".join(lines + (["", *notes] if notes else []))
