"""Command line: ``tablesync-job run|dump|diff|apply``. Contract: job-image/README.md.

The only place that catches the job's errors: it prints one line naming what is wrong and
what to do (no stack trace for expected failures, no secrets), writes the compact report, and
exits 0 / 2 (input) / 3 (guard) / 75 (transient).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import logs, pipeline
from . import spec as spec_mod
from .apply import ApplyResult
from .errors import EXIT_OK, EXIT_TRANSIENT, GuardTripped, InputError, TableSyncError
from .report import Report, now_iso, write_termination_message
from .snapshots import delta_id

log = logs.get("tablesync_job.main")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tablesync-job",
        description="One run of the tablesync reconciliation lane: dump -> diff -> apply.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--spec", help="TableSync manifest (YAML/JSON); default: $TABLESYNC_SPEC")

    run = sub.add_parser("run", help="dump, diff and apply (the CronJob's command)")
    common(run)
    run.add_argument("--dry-run", action="store_true",
                     help="compute the delta, print counts and a sample; change nothing")
    run.add_argument("--approve", metavar="FROM..TO",
                     help="apply exactly this stored delta despite a guard "
                          "(default: $TABLESYNC_APPROVE_DELTA)")
    dump = sub.add_parser("dump", help="dump the source table to a stored snapshot")
    common(dump)
    diff = sub.add_parser("diff", help="diff a snapshot against the last applied one")
    common(diff)
    diff.add_argument("--snapshot", metavar="ID", help="snapshot T (default: the newest)")
    apply = sub.add_parser("apply", help="apply a stored delta to the destination")
    common(apply)
    apply.add_argument("--delta", metavar="FROM..TO",
                       help="the delta (default: the newest one from the last applied snapshot)")
    apply.add_argument("--approve", metavar="FROM..TO",
                       help="apply it despite a guard (without --delta: apply this delta)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logs.setup()
    args = _parser().parse_args(argv)
    try:
        spec = spec_mod.load(args.spec)
        ctx = pipeline.make_context(spec)  # opens the storage adapter: checks its settings
    except InputError as err:
        # Before there is a context: still one line on stderr and a report for the operator.
        report = Report(run_id=os.environ.get("TABLESYNC_RUN_ID") or "", reason=err.reason,
                        message=err.message, error=err.message, finished_at=now_iso())
        text = report.to_json()
        write_termination_message(text)
        print(text)
        print(f"tablesync-job: {logs.redact(err.message)}", file=sys.stderr)
        return err.exit_code
    try:
        code = _dispatch(ctx, args)
    finally:
        pipeline.cleanup(ctx)
    return code


def _command(ctx: pipeline.RunContext, args: argparse.Namespace) -> None:
    report = ctx.report
    if args.command == "run":
        pipeline.run(ctx, dry_run=args.dry_run, approve=args.approve,
                     standing=os.environ.get("TABLESYNC_APPROVE_DELTA") or None)
    elif args.command == "dump":
        pipeline.preflight(ctx)
        snap, _ = pipeline.phase_dump(ctx)
        report.result, report.reason = "Succeeded", "Dumped"
        report.message = f"snapshot {snap.id}: {snap.rows} rows, {snap.bytes} bytes"
    elif args.command == "diff":
        _diff_only(ctx, args.snapshot)
    else:
        _apply_only(ctx, args.delta, args.approve)


def _dispatch(ctx: pipeline.RunContext, args: argparse.Namespace) -> int:
    report = ctx.report
    try:
        try:
            _command(ctx, args)
        except Exception as err:
            full = pipeline.scratch_full(err, ctx.work_dir)
            if full is None:
                raise
            raise full from None
        code = EXIT_OK
    except TableSyncError as err:
        report.result = "GuardTripped" if isinstance(err, GuardTripped) else "Failed"
        report.reason = err.reason
        report.message = report.error = err.message
        if isinstance(err, GuardTripped):
            report.delta_id = err.delta_id
        code = err.exit_code
        print(f"tablesync-job: {logs.redact(err.message)}", file=sys.stderr)
    except Exception as err:  # a bug: still report it, then let a retry try again
        log.exception("unexpected error")
        report.result, report.reason = "Failed", "InternalError"
        first_line = (str(err).strip().splitlines() or [""])[0]
        report.message = report.error = logs.redact(f"{type(err).__name__}: {first_line}")
        code = EXIT_TRANSIENT
        print(f"tablesync-job: internal error: {report.error}", file=sys.stderr)
    except KeyboardInterrupt:
        report.result, report.reason, report.error = "Failed", "Interrupted", "interrupted"
        code = 130
    report.finished_at = now_iso()
    _finish(ctx, code, dry_run=getattr(args, "dry_run", False))
    return code


def _diff_only(ctx: pipeline.RunContext, snapshot_id: str | None) -> None:
    ctx.layout.storage.check()
    pipeline.check_owner(ctx)
    ids = ctx.layout.snapshot_ids()
    target = snapshot_id or (ids[-1] if ids else None)
    snap = ctx.layout.get_snapshot(target) if target else None
    if snap is None:
        raise InputError(f"--snapshot: no snapshot {target or '(none stored yet)'} in "
                         f"{ctx.spec.storage.url}; run 'tablesync-job dump' first")
    pipeline.check_not_behind(ctx, snap, stored="--snapshot")
    parts = ctx.layout.fetch(ctx.layout.snapshot_prefix(snap.id), snap.parts,
                             ctx.work_dir / "snapshot-in")
    delta, _ = pipeline.phase_diff(ctx, snap, parts)
    ctx.report.result, ctx.report.reason = "Succeeded", "Diffed"
    ctx.report.message = (f"delta {delta.id}: {delta.inserts} inserts, {delta.updates} updates, "
                          f"{delta.deletes} deletes")


def _apply_only(ctx: pipeline.RunContext, delta_ref: str | None, approve: str | None) -> None:
    pipeline.preflight(ctx)
    pipeline.resume_interrupted(ctx)
    done = ctx.resumed_delta
    if done is not None and delta_ref in (None, done.id):
        # this command's own apply, killed after it began (a retry), or the one left over
        pipeline.describe_delta(ctx, done)
        pipeline.succeeded(ctx.report, done, ctx.resumed or ApplyResult(),
                           approved=approve == done.id)
        return
    field_name = "--delta"
    if delta_ref is None and approve is not None:
        # the delta approved is the one to apply: the newest could be another run's, which
        # the approval does not cover (the guard tripped again, naming that one)
        delta_ref, field_name = approve, "--approve"
    if delta_ref is None:
        state = ctx.layout.get_state()
        start = delta_id(state.last_applied_snapshot_id if state else None, "")
        candidates = [d for d in ctx.layout.delta_ids() if d.startswith(start)]
        if not candidates:
            raise InputError(f"--delta: no stored delta starts at {start[:-2]}; run "
                             "'tablesync-job diff' first")
        delta_ref = candidates[-1]
    delta, parts = pipeline.stored_delta(ctx, delta_ref, field_name)
    pipeline.describe_delta(ctx, delta)
    pipeline.check_guards(ctx.spec, delta, approve)
    result = pipeline.phase_apply(ctx, delta, parts)
    pipeline.note_resumed(ctx, pipeline.succeeded(ctx.report, delta, result,
                                                  approved=approve == delta.id))


def _finish(ctx: pipeline.RunContext, code: int, dry_run: bool = False) -> None:
    report = ctx.report
    text = report.to_json()
    write_termination_message(text)
    if report.sample is not None:
        out: dict[str, Any] = {**report.compact(), "sample": report.sample}
        print(json.dumps(logs.redact_values(out), indent=1))
    else:
        print(text)
    if not dry_run:  # a dry run changes nothing, failed or not
        try:
            ctx.layout.put_run(ctx.run_id, pipeline.run_record(ctx))
        except TableSyncError as err:  # storage itself may be what failed
            log.warning("run record not stored", extra={"fields": {"error": err.message}})
    log.info("finished", extra={"fields": {"result": report.result, "reason": report.reason,
                                           "exitCode": code}})


if __name__ == "__main__":
    sys.exit(main())
