"""A finished Job (and its pods) read into one run outcome.

Called by ``reconcile`` with Jobs and pods as the API returns them; returns typed values that
``status`` folds into the TableSync's status. The report is the JSON the job writes to its
termination message (job-image/README.md, "Report"); when there is none (the pod was killed,
ran out of memory or never started) the Job's own conditions say what happened.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .names import CONTAINER_NAME, CRONJOB_SCHEDULED_TIMESTAMP

Result = Literal["Succeeded", "Failed", "GuardTripped", "DryRun"]
RESULTS: tuple[Result, ...] = ("Succeeded", "Failed", "GuardTripped", "DryRun")

# Reasons the operator gives when the report does not (UpperCamelCase, as conditions want).
REASON_DEADLINE_EXCEEDED = "DeadlineExceeded"
REASON_OOM_KILLED = "OOMKilled"
REASON_EVICTED = "Evicted"
REASON_BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
REASON_INPUT_ERROR = "InputError"
REASON_GUARD_TRIPPED = "GuardTripped"
REASON_REPORT_MISSING = "ReportMissing"
REASON_REPORT_UNREADABLE = "ReportUnreadable"
REASON_JOB_FAILED = "JobFailed"
REASON_SUCCEEDED = "Succeeded"


class ReportError(ValueError):
    """The termination message is not a job report (truncated, empty or not JSON)."""


@dataclass(frozen=True)
class DeltaCounts:
    """Rows of the delta by operation (diff output)."""

    insert: int = 0
    update: int = 0
    delete: int = 0
    # rows unchanged since the last applied snapshot, upserted because the destination had
    # lost rows (the job's refill)
    refill: int = 0

    @property
    def total(self) -> int:
        return self.insert + self.update + self.delete + self.refill


@dataclass(frozen=True)
class ApplyCounts:
    """What the apply did with the delta's rows (DESIGN.md section 3, apply outcome)."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    already_current: int = 0
    stale_skipped: int = 0
    # rows the apply left in the destination for the next run to delete if its snapshot
    # lacks them too: deletes whose row the destination held newer, and the rows a bootstrap
    # or refill found its snapshot lacks (not drift yet: the next run's deletes are)
    pending_deletes: int = 0

    @property
    def changed(self) -> int:
        """Rows the apply changed: the drift (rows the event lane had not delivered)."""
        return self.inserted + self.updated + self.deleted


@dataclass(frozen=True)
class RunReport:
    """The job's compact report, as job-image/README.md specifies it."""

    result: Result
    reason: str
    message: str = ""
    run_id: str | None = None
    snapshot_id: str | None = None
    from_snapshot_id: str | None = None
    delta_id: str | None = None
    captured_at: datetime | None = None
    bootstrap: bool = False
    rows: int | None = None
    delta: DeltaCounts | None = None
    apply: ApplyCounts | None = None
    phase_seconds: Mapping[str, float] = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    lost_rows: Mapping[str, int] | None = None
    """``sampled``, ``missing``, ``behind``, ``lost``: the job's look-up of random keys in the
    destination, when any was missing or older (job-image/README.md, ``Refilled``)."""
    absent_rows: Mapping[str, int] | None = None
    """``sampled``, ``absent``: the job's sample of the destination's rows, when any had a key
    the source and the snapshot lack (job-image/README.md, ``Refilled``)."""


@dataclass(frozen=True)
class RunOutcome:
    """One finished run: the Job's facts plus the report when there is one."""

    job_name: str
    job_uid: str
    result: Result
    reason: str
    message: str
    started_at: datetime | None
    finished_at: datetime
    scheduled_at: datetime | None
    report: RunReport | None
    exit_code: int | None = None

    @property
    def cycle_seconds(self) -> float | None:
        """Job start to completion, in seconds (None if the Job never started)."""
        if self.started_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds())

    @property
    def succeeded(self) -> bool:
        return self.result == "Succeeded"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime (UTC when the text has no zone)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with seconds precision, as Kubernetes writes metav1.Time."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _opt_str(value: Any) -> str | None:
    return str(value) if isinstance(value, str) and value else None


def parse_report(text: str) -> RunReport:
    """Parse the termination message into a RunReport.

    Raises ReportError if ``text`` is not a JSON object with a known ``result``. Missing
    figures default to zero/None: the report is at most 4 KiB and may omit what it lacks.
    """
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, TypeError) as err:
        raise ReportError(f"not JSON ({err})") from None
    if not isinstance(doc, dict):
        raise ReportError("not a JSON object")
    result = doc.get("result")
    if result not in RESULTS:
        raise ReportError(f"unknown result {result!r}")
    delta_raw = doc.get("delta")
    apply_raw = doc.get("apply")
    phases_raw = doc.get("phaseSeconds") or {}
    phases = (
        {
            str(k): float(v)
            for k, v in phases_raw.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if isinstance(phases_raw, dict)
        else {}
    )
    return RunReport(
        result=result,
        reason=_opt_str(doc.get("reason")) or str(result),
        message=str(doc.get("message") or ""),
        run_id=_opt_str(doc.get("runId")),
        snapshot_id=_opt_str(doc.get("snapshotId")),
        from_snapshot_id=_opt_str(doc.get("fromSnapshotId")),
        delta_id=_opt_str(doc.get("deltaId")),
        captured_at=parse_time(doc.get("capturedAt")),
        bootstrap=bool(doc.get("bootstrap")),
        rows=_int(doc["rows"]) if isinstance(doc.get("rows"), int) else None,
        delta=(
            DeltaCounts(
                insert=_int(delta_raw.get("insert")),
                update=_int(delta_raw.get("update")),
                delete=_int(delta_raw.get("delete")),
                refill=_int(delta_raw.get("refill")),
            )
            if isinstance(delta_raw, dict)
            else None
        ),
        apply=(
            ApplyCounts(
                inserted=_int(apply_raw.get("inserted")),
                updated=_int(apply_raw.get("updated")),
                deleted=_int(apply_raw.get("deleted")),
                already_current=_int(apply_raw.get("alreadyCurrent")),
                stale_skipped=_int(apply_raw.get("staleSkipped")),
                pending_deletes=_int(apply_raw.get("pendingDeletes")),
            )
            if isinstance(apply_raw, dict)
            else None
        ),
        phase_seconds=phases,
        started_at=parse_time(doc.get("startedAt")),
        finished_at=parse_time(doc.get("finishedAt")),
        error=_opt_str(doc.get("error")),
        lost_rows=_counts(doc.get("lostRows")),
        absent_rows=_counts(doc.get("absentRows")),
    )


def _counts(raw: Any) -> dict[str, int] | None:
    """A report's object of counts (``lostRows``, ``absentRows``); None if not an object."""
    if not isinstance(raw, dict):
        return None
    return {
        str(k): int(v) for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool)
    }


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def job_finished_at(job: Mapping[str, Any]) -> datetime | None:
    """When the Job reached ``Complete`` or ``Failed``; None while it is not finished."""
    status = job.get("status") or {}
    complete = _condition(job, "Complete")
    if complete is not None:
        return (
            parse_time(status.get("completionTime"))
            or parse_time(complete.get("lastTransitionTime"))
            or datetime.now(UTC)
        )
    failed = _condition(job, "Failed")
    if failed is not None:
        return parse_time(failed.get("lastTransitionTime")) or datetime.now(UTC)
    return None


def job_is_active(job: Mapping[str, Any]) -> bool:
    """True while the Job has not reached a terminal condition."""
    return job_finished_at(job) is None


def job_sort_key(job: Mapping[str, Any]) -> tuple[str, str]:
    """Order finished Jobs by finish time, then name: ``(RFC 3339 finish, name)``."""
    finished = job_finished_at(job)
    meta = job.get("metadata") or {}
    return (format_time(finished) if finished else "", str(meta.get("name") or ""))


def scheduled_time(job: Mapping[str, Any]) -> datetime | None:
    """The schedule slot a CronJob-created Job ran for (None for manual Jobs)."""
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    return parse_time(annotations.get(CRONJOB_SCHEDULED_TIMESTAMP))


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER_NAME:
            state = cs.get("state") or {}
            terminated = state.get("terminated")
            if terminated:
                return dict(terminated)
            last = (cs.get("lastState") or {}).get("terminated")
            return dict(last) if last else None
    return None


def _latest_terminated_pod(
    pods: Sequence[Mapping[str, Any]], prefer_succeeded: bool
) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """The pod whose job container terminated last, with that terminated state."""
    candidates: list[tuple[bool, str, Mapping[str, Any], Mapping[str, Any]]] = []
    for pod in pods:
        term = _terminated(pod)
        if term is None:
            continue
        succeeded = (pod.get("status") or {}).get("phase") == "Succeeded"
        finished = str(term.get("finishedAt") or "")
        candidates.append((succeeded if prefer_succeeded else True, finished, pod, term))
    if not candidates:
        return None
    best = max(candidates, key=lambda c: (c[0], c[1]))
    return best[2], best[3]


def _eviction_message(pod: Mapping[str, Any]) -> str:
    """What to do about a pod the kubelet evicted (``status.reason: Evicted``), from the
    kubelet's ``status.message`` (pkg/kubelet/eviction: the emptyDir ``sizeLimit``, the
    ephemeral-storage limit, or the node running short).

    Past the scratch volume's ``sizeLimit`` the kubelet kills the pod (exit 137, no
    report); the job never sees the ENOSPC it would name, so this is the only place that
    can say so.
    """
    said = str((pod.get("status") or {}).get("message") or "").strip()
    if "EmptyDir" in said:
        fix = (
            "the run's scratch files (the snapshot, T-1, the delta and DuckDB's spill) outgrew "
            "the scratch volume: raise spec.job.scratchSizeLimit"
        )
    elif "ephemeral" in said:
        fix = (
            "the run's scratch files count against its ephemeral-storage limit: raise "
            "spec.job.resources.limits.ephemeral-storage (and spec.job.scratchSizeLimit)"
        )
    else:
        fix = "the node ran short of a resource; a later run may land on another node"
    return f"the kubelet evicted the run's pod ({said or 'no message'}); {fix}"


def outcome_from_job(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> RunOutcome:
    """Read a finished Job and its pods into a RunOutcome.

    The Job decides success or failure; the report (if readable) supplies the figures and
    the reason. Without a report the reason comes from the Job (``DeadlineExceeded``,
    ``BackoffLimitExceeded``), the pod (``Evicted``: its scratch volume outgrew its
    ``sizeLimit``, ...) or the container (``OOMKilled``, exit code 2 → ``InputError``,
    3 → ``GuardTripped``). Raises ValueError if the Job is not finished.
    """
    finished_at = job_finished_at(job)
    if finished_at is None:
        raise ValueError("the Job has not finished")
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    name = str(meta.get("name") or "")
    succeeded = _condition(job, "Complete") is not None
    failed_cond = _condition(job, "Failed") or {}
    picked = _latest_terminated_pod(pods, prefer_succeeded=succeeded)
    term: Mapping[str, Any] = picked[1] if picked else {}
    exit_code = term.get("exitCode") if isinstance(term.get("exitCode"), int) else None

    report: RunReport | None = None
    report_problem: str | None = None
    message_text = str(term.get("message") or "").strip()
    if message_text:
        try:
            report = parse_report(message_text)
        except ReportError as err:
            report_problem = f"the termination message is not a report ({err})"
    started_at = parse_time(status.get("startTime"))

    if succeeded:
        if report is not None and report.result in ("Succeeded", "DryRun"):
            return RunOutcome(
                job_name=name,
                job_uid=str(meta.get("uid") or ""),
                result=report.result,
                reason=report.reason,
                message=report.message or "the run succeeded",
                started_at=started_at,
                finished_at=finished_at,
                scheduled_at=scheduled_time(job),
                report=report,
                exit_code=exit_code,
            )
        reason = REASON_REPORT_UNREADABLE if report_problem else REASON_REPORT_MISSING
        return RunOutcome(
            job_name=name,
            job_uid=str(meta.get("uid") or ""),
            result="Succeeded",
            reason=reason,
            message=f"Job {name} completed but {report_problem or 'left no report'}; "
            "its figures are unknown",
            started_at=started_at,
            finished_at=finished_at,
            scheduled_at=scheduled_time(job),
            report=None,
            exit_code=exit_code,
        )

    job_reason = str(failed_cond.get("reason") or "")
    job_message = str(failed_cond.get("message") or "").strip()
    result: Result = "Failed"
    if report is not None and report.result in ("Failed", "GuardTripped"):
        result = report.result
        reason = report.reason
        message = report.error or report.message or job_message
        if job_reason == "BackoffLimitExceeded":
            message += f" (gave up after {status.get('failed', '?')} attempts)"
    elif exit_code == 3:
        result, reason = "GuardTripped", REASON_GUARD_TRIPPED
        message = "a guard refused the delta (exit code 3) but the run left no report"
    elif exit_code == 2:
        reason = REASON_INPUT_ERROR
        message = "the run rejected its input (exit code 2) but left no report; see the pod log"
    elif picked is not None and (picked[0].get("status") or {}).get("reason") == "Evicted":
        reason = REASON_EVICTED
        message = _eviction_message(picked[0])
    elif term.get("reason") == "OOMKilled":
        reason = REASON_OOM_KILLED
        message = (
            "the job container ran out of memory; raise spec.job.resources.limits.memory "
            "or lower spec.job.memoryLimit"
        )
    elif job_reason:
        reason = job_reason
        message = job_message or f"Job {name} failed ({job_reason})"
        if exit_code is not None:
            message += f"; last exit code {exit_code}"
    else:
        reason = REASON_JOB_FAILED
        message = f"Job {name} failed"
    if job_reason == "DeadlineExceeded":
        # The deadline killed the pod; whatever it reported last, that is why the run ended.
        reason = REASON_DEADLINE_EXCEEDED
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        message = (
            f"the run exceeded activeDeadlineSeconds ({deadline}s) and was stopped; raise "
            "spec.job.activeDeadlineSeconds or make the run faster"
        )
        result = "Failed"
    if report_problem and report is None:
        message += f" ({report_problem})"
    return RunOutcome(
        job_name=name,
        job_uid=str(meta.get("uid") or ""),
        result=result,
        reason=reason,
        message=message,
        started_at=started_at,
        finished_at=finished_at,
        scheduled_at=scheduled_time(job),
        report=report,
        exit_code=exit_code,
    )
