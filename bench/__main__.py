"""Command line: ``python -m bench [--quick | --rows N] [--only dump,diff,apply,run]``.

Run from the repository root with the venv's Python (``make bench``). Starts its own Postgres
(and MinIO for the whole run) under a temporary directory, runs the selected benchmarks in
order, prints each one's table as it finishes and all of them at the end, and optionally
writes them as JSON. Exit code 0 whether targets pass or miss (the figures are the product);
1 when a benchmark could not run or its result was wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import apply, diff, dump, whole_run
from .env import BenchEnv
from .results import Result, table
from .settings import QUICK_ROWS, Sizes

BENCHMARKS: dict[str, Callable[[BenchEnv, Sizes], list[Result]]] = {
    "dump": dump.run, "diff": diff.run, "apply": apply.run, "run": whole_run.run,
}
# Free disk the full-size run wants under the work directory (Postgres tables, Parquet, spill).
FULL_RUN_DISK_BYTES = 25 * 2**30


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="tablesync benchmarks: dump, diff, apply and the whole run, each beside a "
                    "baseline measured in the same run (issue 2, 'Benchmark').")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help=f"every benchmark at {QUICK_ROWS:,} rows (a smoke test, ~20 s)")
    size.add_argument("--rows", type=int, metavar="N",
                      help="every benchmark at N rows (targets scale with N)")
    parser.add_argument("--only", metavar="LIST", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--work-dir", type=Path, metavar="DIR",
                        help="where Postgres, MinIO and Parquet files go (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory afterwards")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    return parser


def _sizes(args: argparse.Namespace) -> Sizes:
    if args.quick:
        return Sizes.for_rows(QUICK_ROWS)
    if args.rows is not None:
        if args.rows < 1000:
            raise SystemExit("python -m bench: --rows must be at least 1000")
        return Sizes.for_rows(args.rows)
    return Sizes()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in BENCHMARKS]
    if unknown:
        print(f"python -m bench: --only: unknown {', '.join(unknown)}; "
              f"use {','.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    sizes = _sizes(args)
    env = BenchEnv.create(args.work_dir, keep=args.keep)
    free = shutil.disk_usage(env.root).free
    if not sizes.scaled and free < FULL_RUN_DISK_BYTES:
        print(f"warning: {free / 2**30:.0f} GiB free under {env.root}; the full run wants about "
              f"{FULL_RUN_DISK_BYTES / 2**30:.0f} GiB (use --work-dir)", file=sys.stderr)
    print(f"tablesync benchmarks: {', '.join(only)}; {os.cpu_count()} cores; "
          f"{'scaled sizes' if sizes.scaled else 'issue 2 sizes'}; work dir {env.root}",
          flush=True)
    results: list[Result] = []
    started = time.monotonic()
    code = 0
    try:
        for name in only:
            phase_started = time.monotonic()
            print(f"\n== {name} ...", flush=True)
            try:
                got = BENCHMARKS[name](env, sizes)
            except Exception as err:  # report it, go on with the next benchmark
                print(f"== {name} failed: {type(err).__name__}: {err}", flush=True)
                code = 1
                continue
            results.extend(got)
            print(f"== {name} ({time.monotonic() - phase_started:.0f} s including setup)\n"
                  f"{table(got)}", flush=True)
    finally:
        env.close()
    print(f"\n== all results ({time.monotonic() - started:.0f} s in total)\n{table(results)}",
          flush=True)
    if args.json:
        args.json.write_text(json.dumps([r.as_json() for r in results], indent=1) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
