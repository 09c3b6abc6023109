"""The TableSync status: its typed model, the pure transitions, and the one writer.

``reconcile`` gathers facts (spec, Secrets, CronJob, finished Jobs), then calls the pure
functions here (``mark_reconciled``, ``mark_stalled``, ``record_run``, ``refresh``...) to
compute the next status from the current one, and ``write`` to store it. Nothing else writes
``status``. Shapes: DESIGN.md section 3; conditions follow ``metav1.Condition`` (KEP-1623):
``lastTransitionTime`` moves only when ``status`` changes, ``observedGeneration`` is the
generation the condition was computed for. kstatus reads ``Ready``/``Reconciling``/``Stalled``
and ``status.observedGeneration``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from . import schedule as cron
from .kube import Kube, Obj, _Conflict
from .results import RunOutcome, RunReport, format_time, parse_time
from .spec import ObjectRef, TableSync

ConditionStatus = Literal["True", "False", "Unknown"]
EventType = Literal["Normal", "Warning"]

# Condition types (DESIGN.md section 3).
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
LAST_RUN_SUCCEEDED = "LastRunSucceeded"
LAGGING = "Lagging"
OVERRUN = "Overrun"
DRIFTED = "Drifted"
CONDITION_TYPES = (READY, RECONCILING, STALLED, LAST_RUN_SUCCEEDED, LAGGING, OVERRUN, DRIFTED)


class Reason:
    """Condition and event reasons (UpperCamelCase). Run failures use the report's reason
    (``DeleteGuardTripped``, ``InputError``, ...) or results.REASON_*."""

    RECONCILED = "Reconciled"
    SUSPENDED = "Suspended"
    INVALID_SPEC = "InvalidSpec"
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_KEY_NOT_FOUND = "SecretKeyNotFound"
    SERVICE_ACCOUNT_NOT_FOUND = "ServiceAccountNotFound"
    CRONJOB_CONFLICT = "CronJobConflict"
    API_ERROR = "ApiError"
    PREDECESSOR_CRONJOB = "PredecessorCronJob"
    NO_RUN_YET = "NoRunYet"
    NO_APPLIED_SNAPSHOT = "NoAppliedSnapshot"
    LAG_ABOVE_THRESHOLD = "LagAboveThreshold"
    LAG_WITHIN_THRESHOLD = "LagWithinThreshold"
    CYCLE_OVER_BUDGET = "CycleOverBudget"
    SCHEDULE_MISSED = "ScheduleMissed"
    WITHIN_BUDGET = "WithinBudget"
    DRIFT_CORRECTED = "DriftCorrected"
    NO_DRIFT = "NoDrift"
    BOOTSTRAPPED = "Bootstrapped"
    # Event-only reasons.
    RUN_SUCCEEDED = "RunSucceeded"
    RUN_FAILED = "RunFailed"
    GUARD_TRIPPED = "GuardTripped"
    DRIFT_FOUND = "DriftFound"
    OVERRUN = "Overrun"
    CAUGHT_UP = "CaughtUp"
    LAGGING = "Lagging"
    RUN_STARTED = "RunStarted"
    DELTA_APPROVED = "DeltaApproved"


APPROVAL_PENDING = "Pending"
APPROVAL_APPLIED = "Applied"
# The destination moved past the approved delta's start without it: the job ignores it.
APPROVAL_SUPERSEDED = "Superseded"
# A fire time is judged missed only this long after the CronJob's startingDeadlineSeconds:
# the CronJob controller syncs every 10 s and may create a due Job a little late.
MISSED_SLACK_SECONDS = 20.0
# What to do, in the Overrun condition's message and in the events that report the same.
OVERRUN_ADVICE = "Make the run faster, or set spec.overrunBudgetSeconds or a slower spec.schedule"
MISSED_ADVICE = (
    "Make the runs faster or spec.schedule slower; if no run was active then, raise "
    "spec.startingDeadlineSeconds"
)


# ---------------------------------------------------------------------------------------------
# The model. to_dict()/from_dict() are the edges: camelCase keys, as the CRD schema has them.


@dataclass(frozen=True)
class Condition:
    """``metav1.Condition``."""

    type: str
    status: ConditionStatus
    reason: str
    message: str
    last_transition_time: str
    observed_generation: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
            "observedGeneration": self.observed_generation,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Condition:
        status = d.get("status")
        return cls(
            type=str(d.get("type") or ""),
            status=status if status in ("True", "False", "Unknown") else "Unknown",
            reason=str(d.get("reason") or ""),
            message=str(d.get("message") or ""),
            last_transition_time=str(d.get("lastTransitionTime") or ""),
            observed_generation=int(d.get("observedGeneration") or 0),
        )


@dataclass(frozen=True)
class RunRecord:
    """One run as the status shows it (``status.lastRun`` / ``status.lastSuccessfulRun``)."""

    job_name: str
    result: str
    reason: str
    message: str
    finished_at: str
    started_at: str | None = None
    cycle_seconds: float | None = None
    run_id: str | None = None
    snapshot_id: str | None = None
    from_snapshot_id: str | None = None
    delta_id: str | None = None
    captured_at: str | None = None
    bootstrap: bool = False
    rows: int | None = None
    delta: Mapping[str, int] | None = None
    """``insert``, ``update``, ``delete``: rows of the delta."""
    apply: Mapping[str, int] | None = None
    """``inserted``, ``updated``, ``deleted``, ``alreadyCurrent``, ``staleSkipped``, and
    ``pendingDeletes`` when the apply left any for the next run."""
    drift_rows: int | None = None
    phase_seconds: Mapping[str, float] = field(default_factory=dict)
    lost_rows: Mapping[str, int] | None = None
    """``sampled``, ``missing``, ``behind``, ``lost``: keys the job looked up in the
    destination, when any was missing or older there."""
    absent_rows: Mapping[str, int] | None = None
    """``sampled``, ``absent``: rows of the destination the job sampled, when any had a key
    the source and the snapshot lack."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "jobName": self.job_name,
            "result": self.result,
            "reason": self.reason,
            "message": self.message,
            "finishedAt": self.finished_at,
            "bootstrap": self.bootstrap,
        }
        optional: dict[str, Any] = {
            "startedAt": self.started_at,
            "cycleSeconds": self.cycle_seconds,
            "runId": self.run_id,
            "snapshotId": self.snapshot_id,
            "fromSnapshotId": self.from_snapshot_id,
            "deltaId": self.delta_id,
            "capturedAt": self.captured_at,
            "rows": self.rows,
            "delta": dict(self.delta) if self.delta is not None else None,
            "apply": dict(self.apply) if self.apply is not None else None,
            "driftRows": self.drift_rows,
            "phaseSeconds": dict(self.phase_seconds) if self.phase_seconds else None,
            "lostRows": dict(self.lost_rows) if self.lost_rows else None,
            "absentRows": dict(self.absent_rows) if self.absent_rows else None,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunRecord:
        def opt_int(v: Any) -> int | None:
            return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

        def opt_str(v: Any) -> str | None:
            return str(v) if v is not None else None

        def counts(v: Any) -> dict[str, int] | None:
            if not isinstance(v, Mapping):
                return None
            return {str(k): int(n) for k, n in v.items() if isinstance(n, int | float)}

        cycle = d.get("cycleSeconds")
        phases = d.get("phaseSeconds")
        return cls(
            job_name=str(d.get("jobName") or ""),
            result=str(d.get("result") or ""),
            reason=str(d.get("reason") or ""),
            message=str(d.get("message") or ""),
            finished_at=str(d.get("finishedAt") or ""),
            started_at=opt_str(d.get("startedAt")),
            cycle_seconds=float(cycle) if isinstance(cycle, int | float) else None,
            run_id=opt_str(d.get("runId")),
            snapshot_id=opt_str(d.get("snapshotId")),
            from_snapshot_id=opt_str(d.get("fromSnapshotId")),
            delta_id=opt_str(d.get("deltaId")),
            captured_at=opt_str(d.get("capturedAt")),
            bootstrap=bool(d.get("bootstrap")),
            rows=opt_int(d.get("rows")),
            delta=counts(d.get("delta")),
            apply=counts(d.get("apply")),
            drift_rows=opt_int(d.get("driftRows")),
            lost_rows=counts(d.get("lostRows")),
            absent_rows=counts(d.get("absentRows")),
            phase_seconds=(
                {str(k): float(v) for k, v in phases.items() if isinstance(v, int | float)}
                if isinstance(phases, Mapping)
                else {}
            ),
        )


@dataclass(frozen=True)
class AppliedSnapshot:
    """The last snapshot a run applied: what the destination matches (lag is measured here)."""

    snapshot_id: str | None
    captured_at: str

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"capturedAt": self.captured_at}
        if self.snapshot_id:
            out["snapshotId"] = self.snapshot_id
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AppliedSnapshot:
        return cls(snapshot_id=d.get("snapshotId"), captured_at=str(d.get("capturedAt") or ""))


@dataclass(frozen=True)
class RunCounts:
    """Runs recorded since the TableSync was created, by result (``tablesync_runs_total``)."""

    succeeded: int = 0
    failed: int = 0
    guard_tripped: int = 0
    dry_run: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "succeeded": self.succeeded,
            "failed": self.failed,
            "guardTripped": self.guard_tripped,
            "dryRun": self.dry_run,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunCounts:
        return cls(
            succeeded=int(d.get("succeeded") or 0),
            failed=int(d.get("failed") or 0),
            guard_tripped=int(d.get("guardTripped") or 0),
            dry_run=int(d.get("dryRun") or 0),
        )

    def add(self, result: str) -> RunCounts:
        attr = {
            "Succeeded": "succeeded",
            "Failed": "failed",
            "GuardTripped": "guard_tripped",
            "DryRun": "dry_run",
        }.get(result, "failed")
        return dataclasses.replace(self, **{attr: getattr(self, attr) + 1})


@dataclass(frozen=True)
class DriftFigures:
    """Rows the applies changed: rows the event lane had not delivered (DESIGN.md section 3)."""

    last_run_rows: int = 0
    last_run_fraction: float = 0.0
    """``last_run_rows`` over the delta's row count; 0..1."""
    total_rows: int = 0
    total_inserted: int = 0
    total_updated: int = 0
    total_deleted: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "lastRunRows": self.last_run_rows,
            "lastRunFraction": self.last_run_fraction,
            "totalRows": self.total_rows,
            "totalInserted": self.total_inserted,
            "totalUpdated": self.total_updated,
            "totalDeleted": self.total_deleted,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftFigures:
        return cls(
            last_run_rows=int(d.get("lastRunRows") or 0),
            last_run_fraction=float(d.get("lastRunFraction") or 0.0),
            total_rows=int(d.get("totalRows") or 0),
            total_inserted=int(d.get("totalInserted") or 0),
            total_updated=int(d.get("totalUpdated") or 0),
            total_deleted=int(d.get("totalDeleted") or 0),
        )


@dataclass(frozen=True)
class OverrunFigures:
    """Cycle time against its budget, and schedules that fired no Job."""

    budget_seconds: int | None = None
    last_cycle_seconds: float | None = None
    last_phase_seconds: Mapping[str, float] = field(default_factory=dict)
    consecutive_overruns: int = 0
    total_overruns: int = 0
    missed_schedules: int = 0
    last_missed_schedule_time: str | None = None
    schedules_checked_until: str | None = None
    """Watermark: fire times up to this instant are judged (fired or missed) and never again."""
    checked_schedule: str | None = None
    """``spec.schedule`` whose fire times the watermark judged; None while missed schedules
    are not counted (suspended, stalled) or before any judging: counting then restarts from
    the next refresh, so no slot the CronJob did not have is judged (see ``refresh``)."""
    checked_time_zone: str | None = None
    """``spec.timeZone`` that went with ``checked_schedule`` (None: UTC, or not counting)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "consecutiveOverruns": self.consecutive_overruns,
            "totalOverruns": self.total_overruns,
            "missedSchedules": self.missed_schedules,
        }
        optional: dict[str, Any] = {
            "budgetSeconds": self.budget_seconds,
            "lastCycleSeconds": self.last_cycle_seconds,
            "lastPhaseSeconds": dict(self.last_phase_seconds) if self.last_phase_seconds else None,
            "lastMissedScheduleTime": self.last_missed_schedule_time,
            "schedulesCheckedUntil": self.schedules_checked_until,
            "checkedSchedule": self.checked_schedule,
            "checkedTimeZone": self.checked_time_zone,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OverrunFigures:
        cycle = d.get("lastCycleSeconds")
        phases = d.get("lastPhaseSeconds")
        budget = d.get("budgetSeconds")
        return cls(
            budget_seconds=int(budget) if isinstance(budget, int | float) else None,
            last_cycle_seconds=float(cycle) if isinstance(cycle, int | float) else None,
            last_phase_seconds=(
                {str(k): float(v) for k, v in phases.items() if isinstance(v, int | float)}
                if isinstance(phases, Mapping)
                else {}
            ),
            consecutive_overruns=int(d.get("consecutiveOverruns") or 0),
            total_overruns=int(d.get("totalOverruns") or 0),
            missed_schedules=int(d.get("missedSchedules") or 0),
            last_missed_schedule_time=d.get("lastMissedScheduleTime"),
            schedules_checked_until=d.get("schedulesCheckedUntil"),
            checked_schedule=d.get("checkedSchedule"),
            checked_time_zone=d.get("checkedTimeZone"),
        )


@dataclass(frozen=True)
class JobMark:
    """The newest finished Job already counted: Jobs at or before it are never re-counted,
    so a restarted operator that sees old Jobs again does not double count."""

    name: str
    finished_at: str
    names: tuple[str, ...] | None = None
    """Every Job counted that finished in the second ``finished_at`` (``name`` among them).
    Finish times have second precision, and Jobs finishing in the same second are seen in
    any order, so a name is no order among them. None in a mark written by an operator
    before this field: it had counted those up to ``name`` by name."""

    def counted(self, finished_at: str, name: str) -> bool:
        """True if the Job ``name`` that finished at ``finished_at`` (RFC 3339, seconds) is
        at or before this mark: already counted, never to be counted again."""
        if finished_at != self.finished_at:
            return finished_at < self.finished_at
        return name <= self.name if self.names is None else name in self.names

    def advanced(self, finished_at: str, name: str) -> JobMark:
        """The mark once the Job ``name`` that finished at ``finished_at`` is counted too."""
        if finished_at > self.finished_at:
            return JobMark(name, finished_at, (name,))
        if finished_at < self.finished_at:
            return self
        if self.names is None:
            return JobMark(max(name, self.name), finished_at)
        return JobMark(name, finished_at, tuple(sorted({*self.names, name})))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "finishedAt": self.finished_at}
        if self.names is not None:
            out["names"] = list(self.names)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobMark:
        names = d.get("names")
        return cls(
            name=str(d.get("name") or ""),
            finished_at=str(d.get("finishedAt") or ""),
            names=tuple(str(n) for n in names) if isinstance(names, list) else None,
        )


@dataclass(frozen=True)
class RunRequest:
    """The last ``tablesync.dev/run-requested-at`` value acted on, and the Job it started."""

    requested_at: str
    job_name: str
    started_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "requestedAt": self.requested_at,
            "jobName": self.job_name,
            "startedAt": self.started_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunRequest:
        return cls(
            requested_at=str(d.get("requestedAt") or ""),
            job_name=str(d.get("jobName") or ""),
            started_at=str(d.get("startedAt") or ""),
        )


@dataclass(frozen=True)
class Approval:
    """The delta approved by ``tablesync.dev/approve-delta`` and whether a run applied it."""

    delta_id: str
    state: str
    job_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"deltaId": self.delta_id, "state": self.state}
        if self.job_name:
            out["jobName"] = self.job_name
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Approval:
        return cls(
            delta_id=str(d.get("deltaId") or ""),
            state=str(d.get("state") or APPROVAL_PENDING),
            job_name=d.get("jobName"),
        )


@dataclass(frozen=True)
class TableSyncStatus:
    """``status`` of a TableSync."""

    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    cron_job_name: str | None = None
    last_schedule_time: str | None = None
    active_jobs: tuple[str, ...] = ()
    lag_seconds: int | None = None
    lag_threshold_seconds: int | None = None
    applied_snapshot: AppliedSnapshot | None = None
    last_run: RunRecord | None = None
    last_successful_run: RunRecord | None = None
    runs: RunCounts = field(default_factory=RunCounts)
    drift: DriftFigures = field(default_factory=DriftFigures)
    overrun: OverrunFigures = field(default_factory=OverrunFigures)
    last_processed_job: JobMark | None = None
    run_request: RunRequest | None = None
    approval: Approval | None = None

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def is_true(self, kind: str) -> bool:
        cond = self.condition(kind)
        return cond is not None and cond.status == "True"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "conditions": [c.to_dict() for c in self.conditions],
            "runs": self.runs.to_dict(),
            "overrun": self.overrun.to_dict(),
        }
        if self.last_successful_run is not None or self.drift != DriftFigures():
            # Absent until a run applied something: an empty Drift column, not a false 0.
            out["drift"] = self.drift.to_dict()
        optional: dict[str, Any] = {
            "observedGeneration": self.observed_generation,
            "cronJobName": self.cron_job_name,
            "lastScheduleTime": self.last_schedule_time,
            "activeJobs": list(self.active_jobs) if self.active_jobs else None,
            "lagSeconds": self.lag_seconds,
            "lagThresholdSeconds": self.lag_threshold_seconds,
            "appliedSnapshot": self.applied_snapshot.to_dict() if self.applied_snapshot else None,
            "lastRun": self.last_run.to_dict() if self.last_run else None,
            "lastSuccessfulRun": (
                self.last_successful_run.to_dict() if self.last_successful_run else None
            ),
            "lastProcessedJob": (
                self.last_processed_job.to_dict() if self.last_processed_job else None
            ),
            "runRequest": self.run_request.to_dict() if self.run_request else None,
            "approval": self.approval.to_dict() if self.approval else None,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TableSyncStatus:
        d = d or {}

        def sub(key: str) -> Mapping[str, Any] | None:
            value = d.get(key)
            return value if isinstance(value, Mapping) else None

        applied, last, good = sub("appliedSnapshot"), sub("lastRun"), sub("lastSuccessfulRun")
        mark, request, approval = sub("lastProcessedJob"), sub("runRequest"), sub("approval")
        generation = d.get("observedGeneration")
        lag = d.get("lagSeconds")
        threshold = d.get("lagThresholdSeconds")
        return cls(
            observed_generation=int(generation) if isinstance(generation, int) else None,
            conditions=tuple(
                Condition.from_dict(c) for c in d.get("conditions") or [] if isinstance(c, Mapping)
            ),
            cron_job_name=d.get("cronJobName"),
            last_schedule_time=d.get("lastScheduleTime"),
            active_jobs=tuple(str(j) for j in d.get("activeJobs") or []),
            lag_seconds=int(lag) if isinstance(lag, int | float) else None,
            lag_threshold_seconds=int(threshold) if isinstance(threshold, int | float) else None,
            applied_snapshot=AppliedSnapshot.from_dict(applied) if applied else None,
            last_run=RunRecord.from_dict(last) if last else None,
            last_successful_run=RunRecord.from_dict(good) if good else None,
            runs=RunCounts.from_dict(sub("runs") or {}),
            drift=DriftFigures.from_dict(sub("drift") or {}),
            overrun=OverrunFigures.from_dict(sub("overrun") or {}),
            last_processed_job=JobMark.from_dict(mark) if mark else None,
            run_request=RunRequest.from_dict(request) if request else None,
            approval=Approval.from_dict(approval) if approval else None,
        )


@dataclass(frozen=True)
class StatusEvent:
    """A Kubernetes Event to post once the status that caused it is stored."""

    type: EventType
    reason: str
    message: str


# ---------------------------------------------------------------------------------------------
# Conditions.


def set_condition(
    st: TableSyncStatus,
    kind: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> TableSyncStatus:
    """Set one condition; ``lastTransitionTime`` changes only when ``status`` changes."""
    old = st.condition(kind)
    transition = (
        old.last_transition_time
        if old is not None and old.status == status and old.last_transition_time
        else format_time(now)
    )
    new = Condition(kind, status, reason, message, transition, generation)
    others = [c for c in st.conditions if c.type != kind]
    ordered = sorted([*others, new], key=_condition_order)
    return dataclasses.replace(st, conditions=tuple(ordered))


def _condition_order(c: Condition) -> tuple[int, str]:
    try:
        return (CONDITION_TYPES.index(c.type), c.type)
    except ValueError:
        return (len(CONDITION_TYPES), c.type)


def _stamp_generation(st: TableSyncStatus, generation: int) -> TableSyncStatus:
    """Every write re-evaluates every condition for ``generation``: say so on each."""
    return dataclasses.replace(
        st,
        observed_generation=generation,
        conditions=tuple(
            dataclasses.replace(c, observed_generation=generation) for c in st.conditions
        ),
    )


def _ensure_run_conditions(st: TableSyncStatus, generation: int, now: datetime) -> TableSyncStatus:
    """Before the first run, the run conditions are Unknown with reason NoRunYet."""
    for kind, message in (
        (LAST_RUN_SUCCEEDED, "no run has finished yet"),
        (OVERRUN, "no run has finished yet"),
        (DRIFTED, "no run has applied a delta yet"),
    ):
        if st.condition(kind) is None:
            st = set_condition(st, kind, "Unknown", Reason.NO_RUN_YET, message, generation, now)
    return st


# ---------------------------------------------------------------------------------------------
# Reconcile outcomes.


def mark_reconciled(
    st: TableSyncStatus,
    ts: TableSync,
    now: datetime,
    cronjob: Mapping[str, Any] | None,
    approval_pending: bool,
) -> TableSyncStatus:
    """The generation is valid and its CronJob is in place.

    Ready=True, Stalled=False, Reconciling=False; records a pending approval."""
    gen = ts.generation
    cj_name = str(((cronjob or {}).get("metadata") or {}).get("name") or ts.name)
    if ts.spec.suspend:
        reason = Reason.SUSPENDED
        message = f"CronJob {cj_name} is suspended (spec.suspend); no scheduled runs"
    else:
        zone = f" ({ts.spec.time_zone})" if ts.spec.time_zone else ""
        reason = Reason.RECONCILED
        message = f"CronJob {cj_name} runs on schedule {ts.spec.schedule!r}{zone}"
    st = set_condition(st, READY, "True", reason, message, gen, now)
    st = set_condition(
        st, STALLED, "False", Reason.RECONCILED, "the spec is valid and its Secrets exist", gen, now
    )
    st = set_condition(
        st, RECONCILING, "False", Reason.RECONCILED, "the CronJob matches this generation", gen, now
    )
    st = _ensure_run_conditions(st, gen, now)
    cj_status = (cronjob or {}).get("status") or {}
    approval = st.approval
    if ts.approve_delta:
        if (
            approval is None
            or approval.delta_id != ts.approve_delta
            or (approval_pending and approval.state != APPROVAL_PENDING)
        ):
            approval = Approval(ts.approve_delta, APPROVAL_PENDING)
    else:
        approval = None
    st = dataclasses.replace(
        st,
        cron_job_name=cj_name,
        last_schedule_time=cj_status.get("lastScheduleTime") or st.last_schedule_time,
        approval=approval,
    )
    return _stamp_generation(st, gen)


def mark_stalled(
    st: TableSyncStatus, ref: ObjectRef, reason: str, message: str, now: datetime
) -> TableSyncStatus:
    """The generation cannot be reconciled until the user acts: Stalled=True, Ready=False.

    The existing CronJob (if any) is left as it is: no churn while the spec is broken.
    """
    gen = ref.generation
    st = set_condition(st, STALLED, "True", reason, message, gen, now)
    st = set_condition(st, READY, "False", reason, message, gen, now)
    st = set_condition(
        st, RECONCILING, "False", reason, "waiting for the spec or Secret to be fixed", gen, now
    )
    st = _ensure_run_conditions(st, gen, now)
    return _stamp_generation(st, gen)


def mark_reconciling(
    st: TableSyncStatus, ref: ObjectRef, reason: str, message: str, now: datetime
) -> TableSyncStatus:
    """Work for this generation is under way or being retried (a transient API error)."""
    gen = ref.generation
    st = set_condition(st, RECONCILING, "True", reason, message, gen, now)
    st = set_condition(st, READY, "False", reason, message, gen, now)
    st = set_condition(st, STALLED, "False", reason, "the operator keeps retrying", gen, now)
    st = _ensure_run_conditions(st, gen, now)
    return _stamp_generation(st, gen)


def set_active_jobs(st: TableSyncStatus, names: Iterable[str]) -> TableSyncStatus:
    return dataclasses.replace(st, active_jobs=tuple(sorted(names)))


def record_run_request(
    st: TableSyncStatus, requested_at: str, job_name: str, now: datetime
) -> TableSyncStatus:
    """Remember that the ``run-requested-at`` value was acted on (so it never runs twice)."""
    return dataclasses.replace(st, run_request=RunRequest(requested_at, job_name, format_time(now)))


def _delta_start(delta_id: str) -> str:
    """FROM of a ``FROM..TO`` delta id (``bootstrap`` for a first load)."""
    return delta_id.partition("..")[0]


def pending_approval(st: TableSyncStatus, ts: TableSync) -> str | None:
    """The delta id the next run may apply, or None once a run applied it or it is superseded.

    The approval stays in the CronJob's template (TABLESYNC_APPROVE_DELTA) until a run
    reports that delta applied, or a run applied another delta from another start
    (superseded); the job applies it only if the delta is exactly FROM..TO, so a stale
    approval can never apply another delta.
    """
    if not ts.approve_delta:
        return None
    if (
        st.approval is not None
        and st.approval.delta_id == ts.approve_delta
        and st.approval.state in (APPROVAL_APPLIED, APPROVAL_SUPERSEDED)
    ):
        return None
    return ts.approve_delta


# ---------------------------------------------------------------------------------------------
# Runs.


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _run_record(outcome: RunOutcome) -> RunRecord:
    rep = outcome.report
    drift: int | None = None
    delta = apply = None
    if rep is not None:
        if rep.delta is not None:
            delta = {
                "insert": rep.delta.insert,
                "update": rep.delta.update,
                "delete": rep.delta.delete,
            }
            if rep.delta.refill:
                delta["refill"] = rep.delta.refill
        if rep.apply is not None:
            apply = {
                "inserted": rep.apply.inserted,
                "updated": rep.apply.updated,
                "deleted": rep.apply.deleted,
                "alreadyCurrent": rep.apply.already_current,
                "staleSkipped": rep.apply.stale_skipped,
            }
            if rep.apply.pending_deletes:
                apply["pendingDeletes"] = rep.apply.pending_deletes
            if outcome.succeeded:
                drift = 0 if rep.bootstrap else rep.apply.changed
    captured = None
    if rep is not None and rep.captured_at is not None:
        captured = rep.captured_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return RunRecord(
        job_name=outcome.job_name,
        result=outcome.result,
        reason=outcome.reason,
        message=outcome.message[:1024],
        finished_at=format_time(outcome.finished_at),
        started_at=format_time(outcome.started_at) if outcome.started_at else None,
        cycle_seconds=_round(outcome.cycle_seconds),
        run_id=rep.run_id if rep else None,
        snapshot_id=rep.snapshot_id if rep else None,
        from_snapshot_id=rep.from_snapshot_id if rep else None,
        delta_id=rep.delta_id if rep else None,
        captured_at=captured,
        bootstrap=bool(rep and rep.bootstrap),
        rows=rep.rows if rep else None,
        delta=delta,
        apply=apply,
        drift_rows=drift,
        phase_seconds={k: round(v, 3) for k, v in (rep.phase_seconds if rep else {}).items()},
        lost_rows=dict(rep.lost_rows) if rep and rep.lost_rows else None,
        absent_rows=dict(rep.absent_rows) if rep and rep.absent_rows else None,
    )


def _absent_text(rep: RunReport) -> str:
    """The Drifted message's note of the rows the run's sample found the source lacks."""
    absent = rep.absent_rows or {}
    if not absent.get("absent"):
        return ""
    return (f"; of {absent.get('sampled', 0)} sampled rows of the destination, "
            f"{absent['absent']} have a key the source lacks (the event lane lost their "
            "deletes, or they were written there alone)")


def _lost_text(rep: RunReport) -> str:
    """The Drifted message's note of the rows the run's look-up found lost and left so
    (``spec.destination.lostRows: warn``); a refill corrected them, counted as drift."""
    lost = rep.lost_rows or {}
    if not lost.get("lost") or rep.reason == "Refilled":
        return ""
    return (f"; of {lost.get('sampled', 0)} keys looked up in the destination, {lost['lost']} "
            "were missing or older there and stay so (spec.destination.lostRows: warn)")


def _pending_text(rep: RunReport) -> str:
    """The Drifted message's note of the deletes an apply left for the next run."""
    pending = rep.apply.pending_deletes if rep.apply is not None else 0
    if not pending:
        return ""
    return (f"; {pending} rows the destination holds are left for the next run, which "
            "deletes those its snapshot lacks too (apply.pendingDeletes)")


def job_mark(st: TableSyncStatus, outcome: RunOutcome) -> JobMark:
    """``lastProcessedJob`` once ``outcome`` is counted too."""
    finished_at = format_time(outcome.finished_at)
    if st.last_processed_job is None:
        return JobMark(outcome.job_name, finished_at, (outcome.job_name,))
    return st.last_processed_job.advanced(finished_at, outcome.job_name)


def is_new(st: TableSyncStatus, outcome: RunOutcome) -> bool:
    """True if the run is not counted yet: it finished after ``lastProcessedJob``, or in
    its second but is not among the Jobs counted there (see ``JobMark.counted``)."""
    if st.last_processed_job is None:
        return True
    return not st.last_processed_job.counted(format_time(outcome.finished_at), outcome.job_name)


def record_run(
    st: TableSyncStatus, ts: TableSync, outcome: RunOutcome, now: datetime
) -> tuple[TableSyncStatus, list[StatusEvent]]:
    """Fold one finished run into the status; returns the events it deserves.

    A run that is not new (see ``is_new``) changes nothing. A failed run replaces
    ``lastRun`` but keeps ``lastSuccessfulRun``, the applied snapshot and the drift figures,
    and its condition says why it failed. Events only on transitions (DESIGN.md section 3):
    a run event when ``LastRunSucceeded`` changes status or reason, ``DriftFound`` when
    ``Drifted`` turns True, ``Overrun`` when a run goes over budget after one that did not,
    ``DeltaApproved`` once per approval.
    """
    if not is_new(st, outcome):
        return st, []
    gen = ts.generation
    events: list[StatusEvent] = []
    before = {kind: (c.status, c.reason) if (c := st.condition(kind)) is not None else None
              for kind in (LAST_RUN_SUCCEEDED, DRIFTED)}

    def flipped(kind: str, status: str, reason: str) -> bool:
        was = before[kind]
        if kind == DRIFTED:  # DriftFound when drift appears, not on every drifting run
            return was is None or was[0] != status
        return was != (status, reason)

    record = _run_record(outcome)
    rep = outcome.report
    st = dataclasses.replace(
        st,
        last_run=record,
        last_processed_job=job_mark(st, outcome),
        runs=st.runs.add(outcome.result),
    )

    # LastRunSucceeded and the run event.
    if outcome.result == "Succeeded":
        st = dataclasses.replace(st, last_successful_run=record)
        if rep is not None and rep.captured_at is not None:
            st = dataclasses.replace(
                st, applied_snapshot=AppliedSnapshot(rep.snapshot_id, record.captured_at or "")
            )
        message = f"{outcome.job_name}: {outcome.message}"
        st = set_condition(st, LAST_RUN_SUCCEEDED, "True", outcome.reason, message, gen, now)
        if flipped(LAST_RUN_SUCCEEDED, "True", outcome.reason):
            events.append(StatusEvent("Normal", Reason.RUN_SUCCEEDED, message))
    elif outcome.result == "DryRun":
        message = f"{outcome.job_name}: dry run, nothing applied: {outcome.message}"
        st = set_condition(st, LAST_RUN_SUCCEEDED, "True", outcome.reason, message, gen, now)
        if flipped(LAST_RUN_SUCCEEDED, "True", outcome.reason):
            events.append(StatusEvent("Normal", Reason.RUN_SUCCEEDED, message))
    else:
        message = _failure_message(st, ts, outcome)
        st = set_condition(st, LAST_RUN_SUCCEEDED, "False", outcome.reason, message, gen, now)
        reason = Reason.GUARD_TRIPPED if outcome.result == "GuardTripped" else Reason.RUN_FAILED
        if flipped(LAST_RUN_SUCCEEDED, "False", outcome.reason):
            events.append(StatusEvent("Warning", reason, message))

    # Drift: only a successful, non-bootstrap run with apply figures measures it.
    if outcome.result == "Succeeded" and rep is not None:
        if rep.bootstrap:
            st = dataclasses.replace(
                st, drift=dataclasses.replace(st.drift, last_run_rows=0, last_run_fraction=0.0)
            )
            st = set_condition(
                st,
                DRIFTED,
                "False",
                Reason.BOOTSTRAPPED,
                f"bootstrap run loaded {rep.rows if rep.rows is not None else 'all'} rows from "
                f"snapshot {rep.snapshot_id}; drift is measured from the next run"
                + _pending_text(rep),
                gen,
                now,
            )
        elif rep.apply is not None:
            changed = rep.apply.changed
            delta_total = rep.delta.total if rep.delta is not None else 0
            fraction = round(changed / delta_total, 4) if delta_total else 0.0
            d = st.drift
            st = dataclasses.replace(
                st,
                drift=DriftFigures(
                    last_run_rows=changed,
                    last_run_fraction=fraction,
                    total_rows=d.total_rows + changed,
                    total_inserted=d.total_inserted + rep.apply.inserted,
                    total_updated=d.total_updated + rep.apply.updated,
                    total_deleted=d.total_deleted + rep.apply.deleted,
                ),
            )
            if changed:
                message = (
                    f"the last run corrected {changed} rows the event lane had not delivered "
                    f"({fraction:.1%} of a {delta_total}-row delta: {rep.apply.inserted} inserted, "
                    f"{rep.apply.updated} updated, {rep.apply.deleted} deleted); "
                    f"{rep.apply.already_current} already current, {rep.apply.stale_skipped} "
                    "stale-skipped (the destination had newer versions)" + _lost_text(rep)
                    + _absent_text(rep) + _pending_text(rep)
                )
                st = set_condition(st, DRIFTED, "True", Reason.DRIFT_CORRECTED, message, gen, now)
                if flipped(DRIFTED, "True", Reason.DRIFT_CORRECTED):
                    events.append(StatusEvent("Warning", Reason.DRIFT_FOUND, message))
            else:
                refill = rep.delta.refill if rep.delta is not None else 0
                again = (f", and the {refill} rows of the snapshot applied again were current"
                         if refill else "")
                message = (
                    f"the last run changed no rows: the event lane had delivered all "
                    f"{delta_total - refill} changes{again} ({rep.apply.already_current} "
                    f"already current, {rep.apply.stale_skipped} stale-skipped)"
                    + _lost_text(rep) + _absent_text(rep) + _pending_text(rep)
                )
                st = set_condition(st, DRIFTED, "False", Reason.NO_DRIFT, message, gen, now)

    # Approval bookkeeping.
    if (
        outcome.result == "Succeeded"
        and rep is not None
        and st.approval is not None
        and st.approval.state == APPROVAL_PENDING
        and rep.delta_id == st.approval.delta_id
    ):
        st = dataclasses.replace(
            st, approval=Approval(st.approval.delta_id, APPROVAL_APPLIED, outcome.job_name)
        )
        events.append(
            StatusEvent(
                "Normal",
                Reason.DELTA_APPROVED,
                f"{outcome.job_name} applied the approved delta {rep.delta_id}",
            )
        )
    elif (
        outcome.result == "Succeeded"
        and rep is not None
        and st.approval is not None
        and st.approval.state == APPROVAL_PENDING
        and rep.delta_id is not None
        and _delta_start(rep.delta_id) != _delta_start(st.approval.delta_id)
    ):
        # the job ignores an approval that no longer starts at the destination's snapshot
        st = dataclasses.replace(
            st, approval=Approval(st.approval.delta_id, APPROVAL_SUPERSEDED, outcome.job_name)
        )

    # Overrun figures.
    budget = ts.spec.budget_seconds()
    cycle = outcome.cycle_seconds
    o = st.overrun
    if cycle is not None:
        over = cycle > budget
        o = dataclasses.replace(
            o,
            budget_seconds=budget,
            last_cycle_seconds=_round(cycle),
            last_phase_seconds=dict(record.phase_seconds),
            consecutive_overruns=o.consecutive_overruns + 1 if over else 0,
            total_overruns=o.total_overruns + (1 if over else 0),
        )
        if over and o.consecutive_overruns == 1:  # the first over budget after one within
            events.append(
                StatusEvent(
                    "Warning",
                    Reason.OVERRUN,
                    f"{outcome.job_name} took {cycle:.0f}s, over its budget of {budget}s"
                    f"{_phases_text(record.phase_seconds)}. {OVERRUN_ADVICE}",
                )
            )
    st = dataclasses.replace(st, overrun=o)
    st = _overrun_condition(st, ts, now)
    return _stamp_generation(st, gen), events


def _where_variables_come_from(message: str, ts: TableSync) -> str:
    """Name the Secret and field behind a job variable the message mentions (the job knows
    only its environment; the person reading the status knows the TableSync)."""
    source, destination = ts.spec.source.uri_secret_ref, ts.spec.destination.uri_secret_ref
    origins = {
        "TABLESYNC_SOURCE_URI": (
            f"Secret '{source.name}' key '{source.key}', spec.source.uriSecretRef"
        ),
        "TABLESYNC_DESTINATION_URI": (
            f"Secret '{destination.name}' key '{destination.key}', spec.destination.uriSecretRef"
        ),
    }
    if ts.spec.storage.credentials_secret:
        origin = f"Secret '{ts.spec.storage.credentials_secret}', spec.storage.credentialsSecretRef"
        origins["AWS_ACCESS_KEY_ID"] = origin
        origins["AWS_SECRET_ACCESS_KEY"] = origin
    for variable, origin in origins.items():
        if variable in message and origin not in message:
            message = message.replace(variable, f"{variable} ({origin})", 1)
    return message


def _failure_message(st: TableSyncStatus, ts: TableSync, outcome: RunOutcome) -> str:
    parts = [f"{outcome.job_name}: {_where_variables_come_from(outcome.message, ts)}"]
    rep = outcome.report
    if outcome.result == "GuardTripped" and rep is not None and rep.delta_id:
        parts.append(
            f"nothing was applied; to apply this delta anyway: kubectl annotate tablesync "
            f"{ts.name} -n {ts.namespace} --overwrite tablesync.dev/approve-delta={rep.delta_id}"
        )
    applied = st.applied_snapshot
    if applied is not None:
        parts.append(
            f"the destination still matches snapshot {applied.snapshot_id} "
            f"(captured {applied.captured_at})"
        )
    return "; ".join(parts)


def _phases_text(phases: Mapping[str, float]) -> str:
    if not phases:
        return ""
    return " (" + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items()) + ")"


def _overrun_condition(st: TableSyncStatus, ts: TableSync, now: datetime) -> TableSyncStatus:
    gen = ts.generation
    o = st.overrun
    budget = ts.spec.budget_seconds()
    last = st.last_run
    missed_at = parse_time(o.last_missed_schedule_time)
    last_started = parse_time(last.started_at) if last else None
    if missed_at is not None and (last_started is None or missed_at >= last_started):
        message = (
            f"{o.missed_schedules} scheduled run(s) fired no Job so far, the last at "
            f"{o.last_missed_schedule_time}: a run was still active (concurrencyPolicy Forbid) "
            f"or the CronJob could not start within startingDeadlineSeconds. {MISSED_ADVICE}"
        )
        return set_condition(st, OVERRUN, "True", Reason.SCHEDULE_MISSED, message, gen, now)
    if last is None or o.last_cycle_seconds is None:
        return st
    if o.last_cycle_seconds > budget:
        message = (
            f"the last run took {o.last_cycle_seconds:.0f}s, over its budget of {budget}s"
            f"{_phases_text(o.last_phase_seconds)}; {o.consecutive_overruns} consecutive, "
            f"{o.total_overruns} in total. {OVERRUN_ADVICE}"
        )
        return set_condition(st, OVERRUN, "True", Reason.CYCLE_OVER_BUDGET, message, gen, now)
    message = f"the last run took {o.last_cycle_seconds:.0f}s of its {budget}s budget"
    return set_condition(st, OVERRUN, "False", Reason.WITHIN_BUDGET, message, gen, now)


def refresh_lag(
    st: TableSyncStatus, generation: int, now: datetime, created_at: datetime | None
) -> TableSyncStatus:
    """Refresh lag with the last known threshold (the spec does not parse, so the lag keeps
    growing in the status while a person fixes it)."""
    if st.lag_threshold_seconds is None:
        return st
    return _stamp_generation(
        _lag_against(st, generation, st.lag_threshold_seconds, now, created_at), generation
    )


def _lag(
    st: TableSyncStatus, ts: TableSync, now: datetime, created_at: datetime | None
) -> TableSyncStatus:
    return _lag_against(st, ts.generation, ts.spec.lag_threshold(), now, created_at)


def _lag_against(
    st: TableSyncStatus,
    gen: int,
    threshold: int,
    now: datetime,
    created_at: datetime | None,
) -> TableSyncStatus:
    st = dataclasses.replace(st, lag_threshold_seconds=threshold)
    applied = st.applied_snapshot
    captured = parse_time(applied.captured_at) if applied else None
    if captured is None:
        st = dataclasses.replace(st, lag_seconds=None)
        if created_at is not None and (now - created_at).total_seconds() > threshold:
            message = (
                f"no snapshot has been applied in the {int((now - created_at).total_seconds())}s "
                f"since the TableSync was created (threshold {threshold}s); see LastRunSucceeded"
            )
            return set_condition(st, LAGGING, "True", Reason.NO_APPLIED_SNAPSHOT, message, gen, now)
        if st.condition(LAGGING) is None or created_at is not None:
            return set_condition(
                st,
                LAGGING,
                "Unknown",
                Reason.NO_APPLIED_SNAPSHOT,
                "no snapshot has been applied yet",
                gen,
                now,
            )
        return st
    lag = max(0, int((now - captured).total_seconds()))
    st = dataclasses.replace(st, lag_seconds=lag)
    if lag > threshold:
        message = (
            f"the destination matches the source as of {applied.captured_at if applied else '?'}, "
            f"{lag}s ago, above the {threshold}s threshold (spec.lagThresholdSeconds); "
            "see LastRunSucceeded and Overrun"
        )
        return set_condition(st, LAGGING, "True", Reason.LAG_ABOVE_THRESHOLD, message, gen, now)
    message = f"lag {lag}s is within the {threshold}s threshold"
    return set_condition(st, LAGGING, "False", Reason.LAG_WITHIN_THRESHOLD, message, gen, now)


# ---------------------------------------------------------------------------------------------
# Periodic refresh: lag, missed schedules.


def refresh(
    st: TableSyncStatus,
    ts: TableSync,
    now: datetime,
    created_at: datetime | None,
    cronjob: Mapping[str, Any] | None,
    scheduled_times: Iterable[datetime],
    count_missed: bool,
    history_start: datetime | None = None,
) -> tuple[TableSyncStatus, list[StatusEvent]]:
    """Recompute lag (and Lagging) and look for schedules that fired no Job.

    ``scheduled_times`` are the slots of the CronJob's Jobs; with the CronJob's
    ``lastScheduleTime`` they are what fired. A fire time is judged once, after the grace
    of ``startingDeadlineSeconds`` + ``MISSED_SLACK_SECONDS``; ``overrun.schedulesCheckedUntil``
    is the watermark up to which fire times were judged.

    ``count_missed`` is False while the CronJob is suspended or not reconciled: the watermark
    then moves to ``now`` (nothing fires, so no slot up to now may be judged later) and the
    schedule it was kept for is forgotten. When counting, a watermark kept for another
    ``spec.schedule`` / ``spec.timeZone`` (changed, or counting just resumed) restarts at
    ``now``: the caller has just applied the CronJob for this spec, so slots of this schedule
    before ``now`` were never the CronJob's. Slots before ``history_start`` (the slot from
    which the CronJob's Job history still holds every Job, see
    ``reconcile.history_start``) are not judged either: after an operator outage longer
    than the Job history, the history limits have removed the Jobs that show they fired.
    Nor are slots before the CronJob's creation: a CronJob deleted by hand, and made again
    by the operator, took the Jobs of its slots with it.
    Slots skipped so go unjudged (an undercount, never a false ``ScheduleMissed``).
    """
    events: list[StatusEvent] = []
    st = _lag(st, ts, now, created_at)
    o = st.overrun
    checked = parse_time(o.schedules_checked_until)
    missed: list[datetime] = []
    checked_for: tuple[str | None, str | None] = (None, None)
    if not count_missed:
        until = now if checked is None else max(checked, now)
    else:
        checked_for = (ts.spec.schedule, ts.spec.time_zone)
        cj_meta = (cronjob or {}).get("metadata") or {}
        cj_created = parse_time(cj_meta.get("creationTimestamp"))
        if checked is None:
            # Start from the CronJob's last schedule (or its creation): earlier Jobs may be
            # gone with the history limits, so their slots could not be told from missed ones.
            cj_last = parse_time(((cronjob or {}).get("status") or {}).get("lastScheduleTime"))
            checked = cj_last or cj_created or now
        elif (o.checked_schedule, o.checked_time_zone) != checked_for:
            checked = max(checked, now)
        if cj_created is not None:
            # A CronJob deleted (kubectl delete) and made again: its predecessor's Jobs went
            # with it (garbage collection), so the slots before it cannot be told from missed.
            checked = max(checked, cj_created)
        fired = list(scheduled_times)
        if history_start is not None:
            # Slots before it cannot be told from slots whose Jobs the history limits
            # removed (an operator outage longer than the history): not judged.
            checked = max(checked, history_start)
        last_schedule = parse_time(((cronjob or {}).get("status") or {}).get("lastScheduleTime"))
        if last_schedule is not None:
            fired.append(last_schedule)
        grace = ts.spec.starting_deadline() + MISSED_SLACK_SECONDS
        missed, until = cron.missed_schedules(
            ts.spec.schedule, ts.spec.time_zone, checked, now, grace, fired
        )
    o = dataclasses.replace(
        o,
        schedules_checked_until=format_time(until),
        checked_schedule=checked_for[0],
        checked_time_zone=checked_for[1],
        budget_seconds=ts.spec.budget_seconds(),
    )
    if missed:
        o = dataclasses.replace(
            o,
            missed_schedules=o.missed_schedules + len(missed),
            last_missed_schedule_time=format_time(missed[-1]),
        )
        events.append(
            StatusEvent(
                "Warning",
                Reason.SCHEDULE_MISSED,
                f"{len(missed)} scheduled run(s) fired no Job "
                f"(the last at {format_time(missed[-1])}): "
                "the previous run was still active (concurrencyPolicy Forbid) or could not "
                f"start within startingDeadlineSeconds. {MISSED_ADVICE}",
            )
        )
    st = dataclasses.replace(st, overrun=o)
    st = _overrun_condition(st, ts, now)
    return _stamp_generation(st, ts.generation), events


# ---------------------------------------------------------------------------------------------
# Events from condition transitions (run events come from record_run / refresh).


def transition_events(old: TableSyncStatus, new: TableSyncStatus) -> list[StatusEvent]:
    """Events for conditions that changed status between two stored statuses."""
    events: list[StatusEvent] = []

    def flipped(kind: str, to: ConditionStatus) -> Condition | None:
        before, after = old.condition(kind), new.condition(kind)
        if after is None or after.status != to:
            return None
        if before is not None and before.status == to and before.reason == after.reason:
            return None
        return after

    stalled = flipped(STALLED, "True")
    if stalled is not None:
        events.append(StatusEvent("Warning", stalled.reason, stalled.message))
    ready = flipped(READY, "True")
    if ready is not None and not old.is_true(READY):
        events.append(StatusEvent("Normal", Reason.RECONCILED, ready.message))
    lagging = flipped(LAGGING, "True")
    if lagging is not None and not old.is_true(LAGGING):
        events.append(StatusEvent("Warning", Reason.LAGGING, lagging.message))
    caught_up = flipped(LAGGING, "False")
    if caught_up is not None and old.is_true(LAGGING):
        events.append(StatusEvent("Normal", Reason.CAUGHT_UP, caught_up.message))
    return events


def write(kube: Kube, body: Mapping[str, Any], new: TableSyncStatus) -> Obj | _Conflict | None:
    """Store ``new`` as the status of ``body``, the object as it was read.

    The PUT carries the read resourceVersion: it succeeds only if nobody wrote in between,
    else it returns CONFLICT and the caller recomputes from a fresh read. None: the object
    is gone.
    """
    out = dict(body)
    out["status"] = new.to_dict()
    return kube.replace_tablesync_status(out)
