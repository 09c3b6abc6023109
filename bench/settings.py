"""How big each benchmark is, and the targets of issue 2 ("Benchmark") at those sizes.

Called by ``__main__`` (which picks the sizes from the command line) and the benchmark
modules. The default sizes are the issue's; ``--quick`` and ``--rows`` shrink them, and the
absolute time targets (diff, whole run) then scale with the row count: a smaller run checks
the same rows/s.
"""

from __future__ import annotations

from dataclasses import dataclass

M = 1_000_000


@dataclass(frozen=True)
class Sizes:
    """Row counts. ``scaled`` is True when they are not the issue's (targets scale then)."""

    # Source tables dumped, in this order (the table grows from one size to the next).
    dump_rows: tuple[int, ...] = (10 * M, 40 * M)
    # Rows in each of the two snapshots diffed.
    diff_rows: int = 40 * M
    # Rows in the destination table the delta is applied to.
    apply_rows: int = 10 * M
    # Rows in the delta applied (updates, inserts and deletes).
    apply_delta_rows: int = 100_000
    # Rows in the table the whole run syncs through MinIO.
    run_rows: int = 10 * M
    scaled: bool = False

    @classmethod
    def for_rows(cls, rows: int) -> Sizes:
        """Every benchmark at ``rows`` rows; the applied delta is 1 % of them."""
        return cls(dump_rows=(rows,), diff_rows=rows, apply_rows=rows,
                   apply_delta_rows=max(rows // 100, 10), run_rows=rows, scaled=True)


QUICK_ROWS = 200_000


@dataclass(frozen=True)
class Targets:
    """Issue 2's targets, at the issue's sizes."""

    # dump: wall time <= this x the server's own COPY TO '/dev/null' (FORMAT binary).
    dump_time_ratio: float = 2.0
    # dump: peak RSS, MiB, at every size.
    dump_rss_mib: int = 512
    # diff: seconds for two 40M-row snapshots at memory_limit 1GB.
    diff_seconds: float = 8.0
    diff_rows: int = 40 * M
    diff_memory_limit: str = "1GB"
    # diff: peak RSS, MiB.
    diff_rss_mib: int = 1536
    # apply: at least this many times faster than 1000-row executemany upsert batches.
    apply_speedup: float = 3.0
    apply_batch_rows: int = 1000
    # whole run: seconds for a 10M-row table with 1 % changes, through MinIO.
    run_seconds: float = 30.0
    run_rows: int = 10 * M

    def diff_seconds_for(self, rows: int) -> float:
        return self.diff_seconds * rows / self.diff_rows

    def run_seconds_for(self, rows: int) -> float:
        return self.run_seconds * rows / self.run_rows


TARGETS = Targets()
