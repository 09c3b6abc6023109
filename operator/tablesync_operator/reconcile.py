"""The one level-based reconcile of a TableSync: spec → Secrets → CronJob → runs → status.

Every trigger calls :func:`sync` with a namespace and a name: kopf's create/update/resume
handlers, the resync timer, and events of the Jobs the TableSync's CronJob owns. ``sync``
reads the current state, acts idempotently (server-side apply of the CronJob, Jobs with
deterministic names) and then writes the whole status once, with the resourceVersion it read
as a precondition; on a conflict it starts over. So concurrent triggers, reruns and
restarts never double count a run or start a second one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from . import manifests, metrics
from . import status as st
from .kube import CONFLICT, Kube, KubeError
from .names import (
    ANNOTATION_APPLIED_GENERATION,
    ANNOTATION_TEMPLATE_HASH,
    CONTROLLER_UID_LABEL,
    GROUP,
    KIND,
    LABEL_MANAGED_BY,
    LABEL_TABLESYNC,
    LABEL_TABLESYNC_UID,
    MANAGED_BY,
)
from .results import (
    RunOutcome,
    job_finished_at,
    job_is_active,
    job_sort_key,
    outcome_from_job,
    parse_time,
    scheduled_time,
)
from .settings import Settings
from .spec import ObjectRef, SpecError, TableSync, parse

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
RETRY_DELAY_SECONDS = 10.0


@dataclass
class Context:
    """What a sync needs besides the object: API access, settings, a clock (tests fake it)."""

    kube: Kube
    settings: Settings
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _known: set[tuple[str, str]] = field(default_factory=set)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, namespace: str, name: str) -> threading.Lock:
        """One lock per TableSync: triggers for the same object run one after another."""
        with self._guard:
            return self._locks.setdefault(f"{namespace}/{name}", threading.Lock())

    def remember(self, namespace: str, name: str) -> None:
        """A TableSync the watch has shown us: the resync visits it."""
        with self._guard:
            self._known.add((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._known.discard((namespace, name))
            self._locks.pop(f"{namespace}/{name}", None)

    def known(self) -> list[tuple[str, str]]:
        with self._guard:
            return sorted(self._known)


def sync(ctx: Context, namespace: str, name: str) -> None:
    """Reconcile one TableSync and write its status.

    Raises kopf.TemporaryError when the API fails (the status then says Reconciling=True
    with the error, if it can still be written).
    """
    with ctx.lock(namespace, name):
        try:
            for _ in range(MAX_ATTEMPTS):
                outcome = _sync_once(ctx, namespace, name)
                if outcome == "done":
                    return
            raise KubeError(f"the status of {namespace}/{name} kept changing under the operator")
        except KubeError as err:
            logger.warning("sync of %s/%s failed, retrying: %s", namespace, name, err)
            _report_api_error(ctx, namespace, name, err)
            raise kopf.TemporaryError(str(err), delay=RETRY_DELAY_SECONDS) from err


def _sync_once(ctx: Context, namespace: str, name: str) -> str:
    """One pass. Returns "done", or "again" after a write conflict or a change that needs a
    second pass (an approval just consumed: the CronJob must drop it)."""
    kube, now = ctx.kube, ctx.clock()
    body = kube.get_tablesync(namespace, name)
    if body is None:
        ctx.forget(namespace, name)
        metrics.forget(namespace, name)
        return "done"
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return "done"
    old = st.TableSyncStatus.from_dict(body.get("status"))
    ref = ObjectRef.of(body)
    created_at = parse_time(meta.get("creationTimestamp"))
    try:
        ts = parse(body)
    except SpecError as err:
        # The CronJob stays as it is, so its runs go on: record them with the spec it runs.
        new = old
        stalled_events: list[st.StatusEvent] = []
        running = running_tablesync(kube, ref)
        if running is not None:
            jobs = kube.list_jobs(namespace, job_selector(running))
            for outcome in new_outcomes(kube, old, jobs):
                new, run_events = st.record_run(new, running, outcome, now)
                stalled_events += run_events
            new = st.set_active_jobs(
                new, [str(j["metadata"]["name"]) for j in jobs if job_is_active(j)]
            )
        new = st.mark_stalled(
            new,
            ref,
            st.Reason.INVALID_SPEC,
            f"invalid spec: {err}. Fix the TableSync; its CronJob stays unchanged until then",
            now,
        )
        new = st.refresh_lag(new, ref.generation, now, created_at)
        return _write(ctx, body, old, new, stalled_events)

    # Runs that finished are recorded whatever else is wrong now.
    jobs = kube.list_jobs(namespace, job_selector(ts))
    events: list[st.StatusEvent] = []
    new = old
    for outcome in new_outcomes(kube, old, jobs):
        new, run_events = st.record_run(new, ts, outcome, now)
        events += run_events
    active = [str(j["metadata"]["name"]) for j in jobs if job_is_active(j)]
    new = st.set_active_jobs(new, active)
    scheduled = [t for t in (scheduled_time(j) for j in jobs) if t is not None]
    kept_since = history_start(jobs)

    def settle_without_cronjob(new: st.TableSyncStatus) -> str:
        # a status that leaves the CronJob as it is: missed schedules are not judged by it
        new, refresh_events = st.refresh(
            new, ts, now, created_at, None, scheduled, count_missed=False
        )
        return _write(ctx, body, old, new, events + refresh_events)

    cronjob = kube.get_cronjob(namespace, manifests.cronjob_name(ts))
    problem = secret_problem(kube, ts) or account_problem(kube, ts, ctx.settings)
    if (
        problem is None
        and cronjob is not None
        and not controlled_by(cronjob, ts.uid)
        and controlled_by_predecessor(cronjob, ts)
    ):
        # deleted and created again: garbage collection removes the old CronJob (its Jobs
        # trigger a sync as they go; else the resync), then this one's is created
        new = st.mark_reconciling(
            new,
            ref,
            st.Reason.PREDECESSOR_CRONJOB,
            f"CronJob {manifests.cronjob_name(ts)} belongs to a deleted TableSync of the same "
            "name and is being garbage-collected; this TableSync's CronJob is created then",
            now,
        )
        return settle_without_cronjob(new)
    if problem is None and cronjob is not None and not controlled_by(cronjob, ts.uid):
        problem = (
            st.Reason.CRONJOB_CONFLICT,
            f"a CronJob named {manifests.cronjob_name(ts)} already exists in {namespace} and "
            "is not owned by this TableSync; rename one of them",
        )
    if problem is not None:
        new = st.mark_stalled(new, ref, problem[0], problem[1], now)
        return settle_without_cronjob(new)

    approve = st.pending_approval(new, ts)
    desired = manifests.build_cronjob(ts, ctx.settings, approve)
    if cronjob is None or needs_update(cronjob, desired):
        by_hand = cronjob is not None and _hash_current(cronjob, desired)
        try:
            cronjob = apply_cronjob(kube, desired, cronjob)
        except KubeError as err:
            if err.status not in REFUSED_AS_INVALID:
                # retried (sync raises); the CronJob as it is runs on meanwhile, so the runs
                # that finished are recorded now, before the Job history limits remove them
                new = st.mark_reconciling(
                    new, ref, st.Reason.API_ERROR, f"retrying after an API error: {err}", now
                )
                settle_without_cronjob(new)
                raise
            # the spec made a CronJob the API server's validation refuses (a resource name
            # that is none): a retry gets the same answer; the next change recovers
            detail = str(err).partition(f": {err.status} ")[2] or str(err)
            new = st.mark_stalled(
                new,
                ref,
                st.Reason.INVALID_SPEC,
                f"invalid spec: the API server refused the CronJob it makes ({detail}). Fix "
                "the TableSync; its CronJob stays unchanged until then",
                now,
            )
            return settle_without_cronjob(new)
        logger.info(
            "applied CronJob %s/%s (generation %d)%s", namespace, ts.name, ts.generation,
            ": its spec had been changed by hand" if by_hand else "",
        )
    new = st.mark_reconciled(new, ts, now, cronjob, approval_pending=approve is not None)

    requested = ts.run_requested_at
    if requested and (old.run_request is None or old.run_request.requested_at != requested):
        if active:
            logger.info(
                "%s: run requested at %s waits for %s", ts.key, requested, ", ".join(active)
            )
        else:
            previous = old.run_request.job_name if old.run_request is not None else None
            job = manifests.build_manual_job(
                ts, ctx.settings, str(cronjob["metadata"]["uid"]), requested, previous, approve
            )
            created = kube.create_job(job)
            job_name = str(job["metadata"]["name"])
            new = st.record_run_request(new, requested, job_name, now)
            new = st.set_active_jobs(new, [*active, job_name])
            if created is not None:
                events.append(
                    st.StatusEvent(
                        "Normal",
                        st.Reason.RUN_STARTED,
                        f"started Job {job_name} as requested at {requested}",
                    )
                )
    new, refresh_events = st.refresh(
        new, ts, now, created_at, cronjob, scheduled, count_missed=not ts.spec.suspend,
        history_start=kept_since,
    )
    events += refresh_events
    result = _write(ctx, body, old, new, events)
    if result == "done" and approve is not None and st.pending_approval(new, ts) is None:
        return "again"  # the approval was consumed: rebuild the CronJob without it
    return result


# HTTP statuses of a CronJob apply that the spec's values caused: 422 (Invalid: the API
# server's validation refused a value). Not 400, which an admission webhook's denial is by
# default (another team's policy, not the spec), nor 403 (a quota, RBAC): those are retried.
REFUSED_AS_INVALID = (422,)


def running_tablesync(kube: Kube, ref: ObjectRef) -> TableSync | None:
    """The TableSync as its CronJob runs it (the spec in the job container's
    ``TABLESYNC_SPEC``), for a TableSync whose current spec does not parse; None when it has
    no CronJob of its own or that spec cannot be read."""
    cronjob = kube.get_cronjob(ref.namespace, ref.name)
    if cronjob is None or not controlled_by(cronjob, ref.uid):
        return None
    pod = (((cronjob.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}).get(
        "template"
    ) or {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") != "TABLESYNC_SPEC":
                continue
            try:
                manifest = json.loads(str(env.get("value") or ""))
                return parse({
                    "metadata": {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid,
                                 "generation": ref.generation},
                    "spec": manifest.get("spec"),
                })
            except (ValueError, AttributeError):  # SpecError is a ValueError
                return None
    return None


def secret_problem(kube: Kube, ts: TableSync) -> tuple[str, str] | None:
    """(reason, message) for the first referenced Secret or key that is missing, else None."""
    seen: dict[str, set[str] | None] = {}
    for path, ref in ts.spec.secret_refs():
        if ref.name not in seen:
            seen[ref.name] = kube.get_secret_keys(ts.namespace, ref.name)
        keys = seen[ref.name]
        if keys is None:
            return (
                st.Reason.SECRET_NOT_FOUND,
                f"Secret {ref.name!r} named by {path} does not exist in namespace "
                f"{ts.namespace}; create it with the key {ref.key!r}",
            )
        if ref.key not in keys:
            return (
                st.Reason.SECRET_KEY_NOT_FOUND,
                f"Secret {ref.name!r} has no key {ref.key!r} (named by {path}); "
                f"its keys are: {', '.join(sorted(keys)) or 'none'}",
            )
    return None


def account_problem(kube: Kube, ts: TableSync, settings: Settings) -> tuple[str, str] | None:
    """(reason, message) if the job pods' ServiceAccount is missing from the TableSync's
    namespace, else None. Without it the Job controller cannot create a single pod, and the
    run ends only at its deadline (``job.activeDeadlineSeconds``) as DeadlineExceeded. None
    when no account is named (the namespace's ``default``)."""
    name = ts.spec.job.service_account_name or settings.job_service_account
    if not name or kube.service_account_exists(ts.namespace, name):
        return None
    if ts.spec.job.service_account_name:
        fix = "create it there, or change spec.job.serviceAccountName"
    else:
        fix = (f"install the chart with {ts.namespace} in job.serviceAccount.namespaces (or "
               "operator.watchNamespaces), which creates it there, or set "
               "spec.job.serviceAccountName to an account of this namespace")
    return (
        st.Reason.SERVICE_ACCOUNT_NOT_FOUND,
        f"ServiceAccount {name!r} for the job pods does not exist in namespace {ts.namespace} "
        f"(a pod can only use one of its own namespace), so no run could start; {fix}",
    )


def controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    """True if ``obj`` has a controller owner reference to ``uid``."""
    for owner in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("uid") == uid and owner.get("controller"):
            return True
    return False


def controlled_by_predecessor(obj: Mapping[str, Any], ts: TableSync) -> bool:
    """True if ``obj``'s controller is a TableSync of ``ts``'s name with another uid: one
    deleted before ``ts`` was created, whose dependents garbage collection is removing."""
    for owner in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("controller"):
            return bool(
                owner.get("kind") == KIND
                and str(owner.get("apiVersion") or "").split("/")[0] == GROUP
                and owner.get("name") == ts.name
                and owner.get("uid") != ts.uid
            )
    return False


def _hash_current(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    have = ((existing.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_TEMPLATE_HASH)
    return bool(have == desired["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH])


def needs_update(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True unless the CronJob carries the desired template hash and its spec is unchanged
    since the operator applied it: its ``metadata.generation`` (bumped by every spec change,
    also by ``kubectl edit``) is still the ``tablesync.dev/applied-generation`` it recorded.
    The TableSync is the source of truth; a CronJob suspended or rescheduled by hand is put
    back."""
    meta = existing.get("metadata") or {}
    applied = (meta.get("annotations") or {}).get(ANNOTATION_APPLIED_GENERATION)
    return not _hash_current(existing, desired) or applied != str(meta.get("generation"))


def apply_cronjob(
    kube: Kube, desired: Mapping[str, Any], existing: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Server-side apply ``desired`` with the applied-generation annotation; returns the
    stored CronJob. The annotation is written with the generation the apply is expected to
    give (1 when creating, one more than now when updating); when the spec did not change
    after all (or a concurrent edit moved it), a second apply records the real one."""
    current = int(((existing or {}).get("metadata") or {}).get("generation") or 0)
    expected = current + 1 if existing is not None else 1
    stored = kube.apply_cronjob(manifests.with_applied_generation(desired, expected))
    actual = (stored.get("metadata") or {}).get("generation")
    if isinstance(actual, int) and actual != expected:
        stored = kube.apply_cronjob(manifests.with_applied_generation(desired, actual))
    return stored


def history_start(jobs: Sequence[Mapping[str, Any]]) -> datetime | None:
    """The schedule slot from which the CronJob's Job history still holds every Job it
    created, by their ``cronjob-scheduled-timestamp``; None when it keeps none.

    ``successfulJobsHistoryLimit`` and ``failedJobsHistoryLimit`` each remove the oldest
    finished Jobs of their own kind, so the failed Jobs kept can be far older than the
    successful ones (a failure last week, successes every minute): a slot before the oldest
    kept Job of either kind may have had a Job of that kind, since removed. The latest of
    the oldest slots of all Jobs, of the successful and of the failed ones.
    """
    groups: dict[str, list[datetime]] = {"all": [], "Complete": [], "Failed": []}
    for job in jobs:
        slot = scheduled_time(job)
        if slot is None:
            continue
        groups["all"].append(slot)
        for cond in (job.get("status") or {}).get("conditions") or []:
            if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
                groups[str(cond["type"])].append(slot)
    oldest = [min(slots) for slots in groups.values() if slots]
    return max(oldest) if oldest else None


def job_selector(ts: TableSync) -> str:
    """Label selector of this TableSync's Jobs (the uid keeps a same-named predecessor's out)."""
    return (
        f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_TABLESYNC}={ts.name},"
        f"{LABEL_TABLESYNC_UID}={ts.uid}"
    )


def new_outcomes(
    kube: Kube, old: st.TableSyncStatus, jobs: Sequence[Mapping[str, Any]]
) -> list[RunOutcome]:
    """Outcomes of the finished Jobs not yet counted in ``old``, oldest first."""
    finished = sorted((j for j in jobs if job_finished_at(j) is not None), key=job_sort_key)
    outcomes: list[RunOutcome] = []
    mark = old.last_processed_job
    for job in finished:
        if mark is not None and mark.counted(*job_sort_key(job)):
            continue
        uid = str(job["metadata"].get("uid") or "")
        pods = kube.list_pods(str(job["metadata"]["namespace"]), f"{CONTROLLER_UID_LABEL}={uid}")
        outcomes.append(outcome_from_job(job, pods))
    return outcomes


def _worth_writing(old: st.TableSyncStatus, new: st.TableSyncStatus, resync_seconds: float) -> bool:
    """False if nothing changed but lag by less than half a resync interval."""
    if old == new:
        return False
    if (
        old.lag_seconds is not None
        and new.lag_seconds is not None
        and abs(new.lag_seconds - old.lag_seconds) < resync_seconds / 2
    ):
        return dataclasses.replace(new, lag_seconds=old.lag_seconds) != old
    return True


def _write(
    ctx: Context,
    body: Mapping[str, Any],
    old: st.TableSyncStatus,
    new: st.TableSyncStatus,
    events: list[st.StatusEvent],
) -> str:
    meta = body["metadata"]
    events = events + st.transition_events(old, new)
    if not _worth_writing(old, new, ctx.settings.resync_interval_seconds) and not events:
        metrics.observe(meta["namespace"], meta["name"], old)
        return "done"
    stored = st.write(ctx.kube, body, new)
    if stored is CONFLICT:
        return "again"
    if stored is None:  # deleted since it was read: its series must not come back
        metrics.forget(meta["namespace"], meta["name"])
        return "done"
    metrics.observe(meta["namespace"], meta["name"], new)
    now = ctx.clock()
    for event in events:
        ctx.kube.create_event(
            manifests.build_event(
                namespace=meta["namespace"],
                name=meta["name"],
                uid=meta.get("uid", ""),
                event_type=event.type,
                reason=event.reason,
                message=event.message,
                now=now,
                instance=ctx.settings.identity,
            )
        )
        log = logger.warning if event.type == "Warning" else logger.info
        log("%s/%s %s: %s", meta["namespace"], meta["name"], event.reason, event.message)
    return "done"


def _report_api_error(ctx: Context, namespace: str, name: str, err: KubeError) -> None:
    """Best effort: say Reconciling=True with the API error; ignore failures to say it.
    The metrics serve the status so stored (Ready=False while the error lasts, and a
    TableSync's series at all when the operator restarted into the error)."""
    try:
        body = ctx.kube.get_tablesync(namespace, name)
        if body is None:
            metrics.forget(namespace, name)
            return
        old = st.TableSyncStatus.from_dict(body.get("status"))
        new = st.mark_reconciling(
            old,
            ObjectRef.of(body),
            st.Reason.API_ERROR,
            f"retrying after an API error: {err}",
            ctx.clock(),
        )
        if new == old:
            metrics.observe(namespace, name, old)
            return
        stored = st.write(ctx.kube, body, new)
        if stored is None:
            metrics.forget(namespace, name)
        elif stored is not CONFLICT:
            metrics.observe(namespace, name, new)
    except KubeError:
        pass


def observe(ctx: Context, event_type: str | None, namespace: str, name: str) -> None:
    """Every watch event of a TableSync: keep the set the resync visits; a deleted one loses
    its metrics (its CronJob goes by garbage collection), once a sync of it in progress is
    done: that sync read the object before the delete, and records its series at the end."""
    if event_type == "DELETED":
        with ctx.lock(namespace, name):
            ctx.forget(namespace, name)
            metrics.forget(namespace, name)
    else:
        ctx.remember(namespace, name)


def listed_tablesyncs(ctx: Context) -> set[tuple[str, str]]:
    """Every TableSync in the watched namespaces, as (namespace, name), read from the API.

    Why the resync lists rather than trusting the watch alone: kopf lists the namespaces
    once, then starts its namespace watch from a second listing whose entries it ignores, so
    a namespace created between the two (a few milliseconds after the operator starts) is
    never watched until it changes. Raises KubeError.
    """
    settings, kube = ctx.settings, ctx.kube
    if settings.clusterwide:
        bodies = kube.list_tablesyncs(None)
    else:
        namespaces = settings.exact_namespaces()
        if namespaces is None:
            namespaces = [n for n in kube.list_namespace_names() if settings.watches(n)]
        bodies = [body for ns in namespaces for body in kube.list_tablesyncs(ns)]
    return {(str(b["metadata"]["namespace"]), str(b["metadata"]["name"])) for b in bodies}


def resync_all(ctx: Context) -> None:
    """One resync round: every TableSync of the watched namespaces (listed, plus any the
    watch has shown), one after another. Errors are logged; the next round retries."""
    try:
        listed = listed_tablesyncs(ctx)
    except KubeError as err:
        logger.warning("resync: could not list the TableSyncs (%s); visiting those seen", err)
        listed = set()
    for namespace, name in sorted(listed - set(ctx.known())):
        logger.info("resync: found %s/%s, which the watch has not shown; serving it", namespace,
                    name)
        ctx.remember(namespace, name)
    for namespace, name in ctx.known():
        try:
            sync(ctx, namespace, name)
        except kopf.TemporaryError:
            pass  # logged by sync(); the status says Reconciling
        except Exception:
            logger.exception("resync of %s/%s failed", namespace, name)


def tablesync_of_job(job_labels: Mapping[str, str]) -> str | None:
    """The TableSync name a Job belongs to, from its labels."""
    return job_labels.get(LABEL_TABLESYNC) or None


def sync_for_job(ctx: Context, namespace: str, job_labels: Mapping[str, str]) -> None:
    """A Job of a TableSync changed (started, finished): reconcile its TableSync."""
    name = tablesync_of_job(job_labels)
    if name:
        sync(ctx, namespace, name)
