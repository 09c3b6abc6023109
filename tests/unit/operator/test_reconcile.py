"""reconcile.sync against an in-memory API (the real API server is in tests/e2e/operator)."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tablesync_operator.reconcile import Context, sync
from tablesync_operator.results import format_time

from .fakekube import FakeKube
from .samples import NOW, SETTINGS, TABLESYNC, job, pod_with_report, report

NS, NAME = "data", "product-prices"


@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    k.secrets[(NS, "replica")] = {"uri"}
    k.secrets[(NS, "warehouse")] = {"uri"}
    k.secrets[(NS, "s3")] = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    body = copy.deepcopy(TABLESYNC)
    body["metadata"]["creationTimestamp"] = "2026-11-21T10:58:00Z"
    k.add_tablesync(body)
    return k


def ctx(kube: FakeKube) -> Context:
    return Context(kube=kube, settings=SETTINGS, clock=lambda: NOW)


def conditions(kube: FakeKube) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in kube.status_of(NS, NAME)["conditions"]}


def edit(kube: FakeKube, change: Any) -> None:
    body = kube.tablesyncs[(NS, NAME)]
    change(body)
    body["metadata"]["generation"] += 1


def add_finished_job(kube: FakeKube, name: str, rep: dict[str, Any], **kw: Any) -> None:
    j = job(name, **kw)
    j["metadata"]["labels"] = {
        "app.kubernetes.io/managed-by": "tablesync",
        "tablesync.dev/name": NAME,
        "tablesync.dev/uid": TABLESYNC["metadata"]["uid"],
    }
    kube.jobs[(NS, name)] = j
    kube.pods[j["metadata"]["uid"]] = [
        pod_with_report(rep, exit_code=0 if kw.get("succeeded", True) else 3)
    ]


def test_creates_the_cronjob_and_reports_ready(kube: FakeKube) -> None:
    sync(ctx(kube), NS, NAME)
    assert (NS, NAME) in kube.cronjobs
    assert conditions(kube)["Ready"] == ("True", "Reconciled")
    assert kube.status_of(NS, NAME)["observedGeneration"] == 3
    assert [e["reason"] for e in kube.events] == ["Reconciled"]
    sync(ctx(kube), NS, NAME)
    assert kube.calls.count("apply_cronjob") == 1  # unchanged spec: no churn
    assert len(kube.events) == 1  # no transition, no event


def test_spec_change_updates_the_cronjob(kube: FakeKube) -> None:
    sync(ctx(kube), NS, NAME)
    edit(kube, lambda b: b["spec"].update(schedule="*/5 * * * *", suspend=True))
    sync(ctx(kube), NS, NAME)
    cj = kube.cronjobs[(NS, NAME)]
    assert (cj["spec"]["schedule"], cj["spec"]["suspend"]) == ("*/5 * * * *", True)
    assert conditions(kube)["Ready"] == ("True", "Suspended")
    assert kube.status_of(NS, NAME)["observedGeneration"] == 4


def test_a_hand_edit_of_the_cronjob_is_put_back_once(kube: FakeKube) -> None:
    sync(ctx(kube), NS, NAME)
    cj = kube.cronjobs[(NS, NAME)]
    assert cj["metadata"]["annotations"]["tablesync.dev/applied-generation"] == "1"
    cj["spec"]["suspend"] = True  # kubectl patch: the hash annotation stays, generation moves
    cj["metadata"]["generation"] += 1
    sync(ctx(kube), NS, NAME)
    assert kube.cronjobs[(NS, NAME)]["spec"]["suspend"] is False
    applied = kube.calls.count("apply_cronjob")
    sync(ctx(kube), NS, NAME)
    assert kube.calls.count("apply_cronjob") == applied  # put back once, then left alone


def test_invalid_spec_stalls_without_touching_the_cronjob(kube: FakeKube) -> None:
    sync(ctx(kube), NS, NAME)
    before = copy.deepcopy(kube.cronjobs[(NS, NAME)])
    edit(kube, lambda b: b["spec"].update(schedule="every minute"))
    sync(ctx(kube), NS, NAME)
    assert conditions(kube)["Stalled"] == ("True", "InvalidSpec")
    assert conditions(kube)["Ready"] == ("False", "InvalidSpec")
    message = next(
        c["message"] for c in kube.status_of(NS, NAME)["conditions"] if c["type"] == "Stalled"
    )
    assert "spec.schedule" in message
    assert kube.cronjobs[(NS, NAME)] == before
    assert kube.calls.count("apply_cronjob") == 1
    edit(kube, lambda b: b["spec"].update(schedule="*/30 * * * *"))
    sync(ctx(kube), NS, NAME)
    assert conditions(kube)["Stalled"] == ("False", "Reconciled")


def test_a_missing_job_service_account_stalls_then_recovers_when_it_appears(
    kube: FakeKube,
) -> None:
    """Without it the Job controller creates no pod, and the run ended only at its deadline
    (an hour later) as DeadlineExceeded."""
    settings = dataclasses.replace(SETTINGS, job_service_account="tablesync-job")
    with_account = Context(kube=kube, settings=settings, clock=lambda: NOW)
    sync(with_account, NS, NAME)
    assert conditions(kube)["Stalled"] == ("True", "ServiceAccountNotFound")
    message = next(
        c["message"] for c in kube.status_of(NS, NAME)["conditions"] if c["type"] == "Stalled"
    )
    assert "'tablesync-job'" in message and "job.serviceAccount.namespaces" in message
    assert (NS, NAME) not in kube.cronjobs
    kube.service_accounts.add((NS, "tablesync-job"))
    sync(with_account, NS, NAME)
    assert conditions(kube)["Ready"] == ("True", "Reconciled")

    edit(kube, lambda b: b["spec"].update(job={"serviceAccountName": "s3-reader"}))
    sync(with_account, NS, NAME)
    assert conditions(kube)["Stalled"] == ("True", "ServiceAccountNotFound")
    message = next(
        c["message"] for c in kube.status_of(NS, NAME)["conditions"] if c["type"] == "Stalled"
    )
    assert "'s3-reader'" in message and "spec.job.serviceAccountName" in message


def test_missing_secret_stalls_then_recovers_when_it_appears(kube: FakeKube) -> None:
    del kube.secrets[(NS, "warehouse")]
    sync(ctx(kube), NS, NAME)
    assert conditions(kube)["Stalled"] == ("True", "SecretNotFound")
    message = next(
        c["message"] for c in kube.status_of(NS, NAME)["conditions"] if c["type"] == "Stalled"
    )
    assert "'warehouse'" in message and "spec.destination.uriSecretRef" in message
    assert (NS, NAME) not in kube.cronjobs
    kube.secrets[(NS, "warehouse")] = {"password"}
    sync(ctx(kube), NS, NAME)
    assert conditions(kube)["Stalled"] == ("True", "SecretKeyNotFound")
    kube.secrets[(NS, "warehouse")] = {"uri"}
    sync(ctx(kube), NS, NAME)  # what the resync timer does: no restart, no edit needed
    assert conditions(kube)["Ready"] == ("True", "Reconciled")
    assert (NS, NAME) in kube.cronjobs


def test_a_foreign_cronjob_is_never_taken_over(kube: FakeKube) -> None:
    kube.cronjobs[(NS, NAME)] = {
        "metadata": {"name": NAME, "namespace": NS, "uid": "x"},
        "spec": {},
    }
    sync(ctx(kube), NS, NAME)
    assert conditions(kube)["Stalled"] == ("True", "CronJobConflict")
    assert kube.cronjobs[(NS, NAME)]["spec"] == {}


def test_finished_runs_are_recorded_once(kube: FakeKube) -> None:
    sync(ctx(kube), NS, NAME)
    add_finished_job(kube, "product-prices-1", report())
    sync(ctx(kube), NS, NAME)
    status = kube.status_of(NS, NAME)
    assert status["lastRun"]["jobName"] == "product-prices-1"
    assert status["runs"]["succeeded"] == 1 and status["drift"]["totalRows"] == 300
    reasons = [e["reason"] for e in kube.events]
    sync(ctx(kube), NS, NAME)  # e.g. another Job event, or a restarted operator
    assert kube.status_of(NS, NAME)["runs"]["succeeded"] == 1
    assert kube.status_of(NS, NAME)["drift"]["totalRows"] == 300
    assert [e["reason"] for e in kube.events] == reasons
    assert reasons.count("RunSucceeded") == 1 and reasons.count("DriftFound") == 1


def test_a_status_write_conflict_is_recomputed_not_lost(kube: FakeKube) -> None:
    sync(ctx(kube), NS, NAME)
    add_finished_job(kube, "product-prices-1", report())
    kube.conflict_next_status_writes = 2
    sync(ctx(kube), NS, NAME)
    assert kube.status_of(NS, NAME)["runs"]["succeeded"] == 1
    assert [e["reason"] for e in kube.events].count("RunSucceeded") == 1


def test_run_request_starts_exactly_one_job(kube: FakeKube) -> None:
    sync(ctx(kube), NS, NAME)
    edit(
        kube,
        lambda b: b["metadata"]["annotations"].update({"tablesync.dev/run-requested-at": "t1"}),
    )
    sync(ctx(kube), NS, NAME)
    sync(ctx(kube), NS, NAME)
    created = [c for c in kube.calls if c.startswith("create_job")]
    assert len(created) == 1
    job_name = created[0].split()[1]
    assert kube.status_of(NS, NAME)["runRequest"]["jobName"] == job_name
    assert kube.status_of(NS, NAME)["activeJobs"] == [job_name]
    assert "RunStarted" in [e["reason"] for e in kube.events]
    # A second request while that Job runs waits for it (concurrencyPolicy Forbid).
    edit(
        kube,
        lambda b: b["metadata"]["annotations"].update({"tablesync.dev/run-requested-at": "t2"}),
    )
    sync(ctx(kube), NS, NAME)
    assert len([c for c in kube.calls if c.startswith("create_job")]) == 1
    kube.jobs[(NS, job_name)]["status"] = job()["status"]
    kube.pods[kube.jobs[(NS, job_name)]["metadata"]["uid"]] = [pod_with_report(report())]
    sync(ctx(kube), NS, NAME)
    assert len([c for c in kube.calls if c.startswith("create_job")]) == 2
    assert kube.status_of(NS, NAME)["runRequest"]["requestedAt"] == "t2"


def test_an_approval_rides_in_the_template_until_a_run_applies_it(kube: FakeKube) -> None:
    delta = "20261121T103000Z-cd34..20261121T110000Z-ab12"
    edit(
        kube, lambda b: b["metadata"]["annotations"].update({"tablesync.dev/approve-delta": delta})
    )
    sync(ctx(kube), NS, NAME)

    def approve_env() -> list[str]:
        env = kube.cronjobs[(NS, NAME)]["spec"]["jobTemplate"]["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
        return [e["value"] for e in env if e["name"] == "TABLESYNC_APPROVE_DELTA"]

    assert approve_env() == [delta]
    assert kube.status_of(NS, NAME)["approval"] == {"deltaId": delta, "state": "Pending"}
    add_finished_job(kube, "product-prices-1", report(deltaId=delta))
    sync(ctx(kube), NS, NAME)
    assert kube.status_of(NS, NAME)["approval"]["state"] == "Applied"
    assert approve_env() == []  # dropped in the same sync, not left for the next run


def test_runs_are_recorded_and_lag_refreshed_while_stalled(kube: FakeKube) -> None:
    sync(ctx(kube), NS, NAME)
    add_finished_job(kube, "product-prices-1", report())
    del kube.secrets[(NS, "warehouse")]
    sync(ctx(kube), NS, NAME)
    assert conditions(kube)["Stalled"] == ("True", "SecretNotFound")
    assert kube.status_of(NS, NAME)["runs"]["succeeded"] == 1
    assert kube.status_of(NS, NAME)["lagSeconds"] == 1  # captured 10:59:58.1, now 11:00:00

    edit(kube, lambda b: b["spec"].update(schedule="nope"))
    later = Context(kube=kube, settings=SETTINGS, clock=lambda: NOW + timedelta(minutes=10))
    sync(later, NS, NAME)
    assert conditions(kube)["Stalled"] == ("True", "InvalidSpec")
    assert kube.status_of(NS, NAME)["lagSeconds"] == 601


def test_runs_of_the_kept_cronjob_are_recorded_while_the_spec_is_invalid(kube: FakeKube) -> None:
    """An invalid spec leaves the CronJob as it was, so runs go on: each one that finishes
    is still counted and shown (a tripped guard above all), not skipped until someone fixes
    the spec, by when the history limits may have removed its Job."""
    sync(ctx(kube), NS, NAME)
    edit(kube, lambda b: b["spec"].update(timeZone="Mars/Olympus_Mons"))
    tripped = report(result="GuardTripped", reason="DeleteGuardTripped",
                     message="the delta would delete 40% of the rows")
    add_finished_job(kube, "product-prices-1", tripped, succeeded=False,
                     failed_reason="PodFailurePolicy")
    sync(ctx(kube), NS, NAME)
    assert conditions(kube)["Stalled"] == ("True", "InvalidSpec")
    status = kube.status_of(NS, NAME)
    assert status["runs"]["guardTripped"] == 1
    assert status["lastRun"]["jobName"] == "product-prices-1"
    assert conditions(kube)["LastRunSucceeded"] == ("False", "DeleteGuardTripped")


def test_the_resync_visits_every_tablesync_the_watch_showed(kube: FakeKube) -> None:
    from tablesync_operator import metrics
    from tablesync_operator.reconcile import observe, resync_all

    c = ctx(kube)
    observe(c, None, NS, NAME)  # kopf's initial listing has type None
    observe(c, "MODIFIED", NS, NAME)
    assert c.known() == [(NS, NAME)]
    resync_all(c)
    assert conditions(kube)["Ready"] == ("True", "Reconciled")
    assert any(key == (NS, NAME) for key, _ in metrics.STORE.snapshot())
    observe(c, "DELETED", NS, NAME)
    assert c.known() == []
    assert not any(key == (NS, NAME) for key, _ in metrics.STORE.snapshot())


@pytest.mark.parametrize("change", [True, False], ids=["status-written", "nothing-to-write"])
def test_a_tablesync_deleted_during_its_sync_keeps_no_series(kube: FakeKube, change: bool) -> None:
    """The watch's DELETED event can arrive while a sync that read the object runs: the
    series it drops must not come back when that sync ends (a lag series left so grows
    without end and fires lag alerts for a TableSync that no longer exists)."""
    import threading
    import time

    from tablesync_operator import metrics
    from tablesync_operator.reconcile import observe

    c = ctx(kube)
    sync(c, NS, NAME)
    if change:
        edit(kube, lambda ts: ts["spec"].update(schedule="*/10 * * * *"))
    read = kube.get_tablesync
    watch: list[threading.Thread] = []

    def read_then_deleted(namespace: str, name: str) -> Any:
        body = read(namespace, name)
        del kube.tablesyncs[(namespace, name)]
        watch.append(threading.Thread(target=observe, args=(c, "DELETED", namespace, name)))
        watch[0].start()
        time.sleep(0.2)  # the watch's thread forgets now, unless it waits for this sync
        return body

    kube.get_tablesync = read_then_deleted  # type: ignore[method-assign]
    sync(c, NS, NAME)
    watch[0].join()
    assert not any(key == (NS, NAME) for key, _ in metrics.STORE.snapshot())


@pytest.mark.parametrize(
    ("namespaces", "lists"),
    [
        ((), ["list_tablesyncs None"]),
        ((NS, "other"), [f"list_tablesyncs {NS}", "list_tablesyncs other"]),
        (("d*", "!dev"), ["list_namespaces", f"list_tablesyncs {NS}"]),
    ],
)
def test_the_resync_serves_a_tablesync_the_watch_never_showed(
    kube: FakeKube, namespaces: tuple[str, ...], lists: list[str]
) -> None:
    """kopf can miss a namespace created while it starts (it ignores its second listing);
    the resync lists the TableSyncs of the watched namespaces and serves them anyway."""
    from tablesync_operator.reconcile import resync_all

    kube.extra_namespaces = {"dev", "other"}
    c = Context(
        kube=kube,
        settings=dataclasses.replace(SETTINGS, namespaces=namespaces),
        clock=lambda: NOW,
    )
    assert c.known() == []  # no watch event at all
    resync_all(c)
    assert c.known() == [(NS, NAME)]
    assert conditions(kube)["Ready"] == ("True", "Reconciled")
    assert (NS, NAME) in kube.cronjobs
    assert [call for call in kube.calls if call.startswith("list_")][: len(lists)] == lists


def test_the_resync_skips_namespaces_it_does_not_watch(kube: FakeKube) -> None:
    from tablesync_operator.reconcile import resync_all

    c = Context(
        kube=kube,
        settings=dataclasses.replace(SETTINGS, namespaces=("team-*", f"!{NS}")),
        clock=lambda: NOW,
    )
    resync_all(c)
    assert c.known() == []
    assert kube.cronjobs == {}


def test_a_failed_listing_still_visits_what_the_watch_showed(kube: FakeKube) -> None:
    from tablesync_operator.kube import KubeError
    from tablesync_operator.reconcile import observe, resync_all

    def refuse(namespace: str | None) -> list[Any]:
        raise KubeError("GET tablesyncs: 503 unavailable", 503)

    kube.list_tablesyncs = refuse  # type: ignore[method-assign]
    c = ctx(kube)
    observe(c, "ADDED", NS, NAME)
    resync_all(c)
    assert conditions(kube)["Ready"] == ("True", "Reconciled")


def test_a_tablesync_gone_between_event_and_resync_is_dropped(kube: FakeKube) -> None:
    from tablesync_operator.reconcile import observe, resync_all

    c = ctx(kube)
    observe(c, "ADDED", NS, "gone")
    resync_all(c)
    assert c.known() == [(NS, NAME)]  # "gone" dropped; the listed one served


@pytest.mark.parametrize("failed_kept", [False, True], ids=["successes", "an-old-failure-too"])
def test_slots_whose_jobs_the_history_removed_are_not_judged_after_an_outage(
    kube: FakeKube, failed_kept: bool
) -> None:
    """An operator outage longer than the CronJob's Job history: the slots whose Jobs the
    history limits removed are not reported as missed. The limits keep successful and
    failed Jobs apart: a failed Job from before the outage outlives the successful Jobs of
    the slots after it (``an-old-failure-too``), and those slots ran too."""
    kube.tablesyncs[(NS, NAME)]["metadata"]["creationTimestamp"] = "2026-11-20T00:00:00Z"
    t0 = datetime(2026, 11, 21, 6, 0, 0, tzinfo=UTC)
    clock = Context(kube=kube, settings=SETTINGS, clock=lambda: t0)
    sync(clock, NS, NAME)  # healthy at 06:00; then down until 10:10
    # FakeKube stamps the CronJob as created at 10:59; a real one predates 06:00, so the
    # watermark would stand at about 06:00 less the grace. Put them there.
    kube.cronjobs[(NS, NAME)]["metadata"]["creationTimestamp"] = "2026-11-20T00:00:00Z"
    kube.tablesyncs[(NS, NAME)]["status"]["overrun"]["schedulesCheckedUntil"] = format_time(t0)
    kube.events.clear()
    slots = [t0 + timedelta(minutes=30 * i) for i in range(1, 9)]  # 06:30 .. 10:00, all ran
    if failed_kept:  # 06:30 failed: failedJobsHistoryLimit=3 keeps it
        add_finished_job(kube, f"{NAME}-{int(slots[0].timestamp() // 60)}",
                         report(result="Failed", reason="TransientError", error="reset"),
                         succeeded=False, start=format_time(slots[0] + timedelta(seconds=5)),
                         end=format_time(slots[0] + timedelta(seconds=65)),
                         scheduled=format_time(slots[0]))
    for slot in slots[-3:]:  # what successfulJobsHistoryLimit=3 left of them
        name = f"{NAME}-{int(slot.timestamp() // 60)}"
        add_finished_job(kube, name, report(capturedAt=format_time(slot), snapshotId=name),
                         start=format_time(slot + timedelta(seconds=5)),
                         end=format_time(slot + timedelta(seconds=65)),
                         scheduled=format_time(slot))
    kube.cronjobs[(NS, NAME)]["status"] = {"lastScheduleTime": format_time(slots[-1])}
    clock.clock = lambda: t0 + timedelta(hours=4, minutes=10)

    sync(clock, NS, NAME)

    assert kube.status_of(NS, NAME)["overrun"]["missedSchedules"] == 0
    assert not any(e["reason"] == "ScheduleMissed" for e in kube.events)
    assert conditions(kube)["Overrun"] == ("False", "WithinBudget")


@pytest.mark.parametrize(("status", "stalled"), [(422, True), (400, False), (403, False)])
def test_only_a_cronjob_the_api_servers_validation_refuses_stalls(
    kube: FakeKube, status: int, stalled: bool
) -> None:
    """422 (Invalid) is the spec's values; 400 is an admission webhook's denial by default
    and 403 a quota or RBAC: someone else's policy, retried as an API error."""
    import kopf

    from tablesync_operator.kube import KubeError

    def refuse(desired: Any) -> Any:
        raise KubeError(f"PATCH cronjobs/{NAME}: {status} refused: limits[cpuu]", status)

    kube.apply_cronjob = refuse  # type: ignore[method-assign, assignment]
    if stalled:
        sync(ctx(kube), NS, NAME)
        assert conditions(kube)["Stalled"] == ("True", "InvalidSpec")
        assert "refused: limits[cpuu]" in kube.status_of(NS, NAME)["conditions"][0]["message"]
    else:
        with pytest.raises(kopf.TemporaryError):
            sync(ctx(kube), NS, NAME)
        assert conditions(kube)["Reconciling"] == ("True", "ApiError")


def test_the_series_follow_the_status_an_api_error_writes(kube: FakeKube) -> None:
    """While a CronJob update keeps failing (a webhook's denial, a quota), the status says
    Ready=False with ApiError, and so must the condition series: a Ready alert on the
    metrics stayed silent while ``kubectl get ts`` showed READY False. An operator that
    restarts into the failure serves the TableSync's series too (its counters were gone)."""
    import kopf

    from tablesync_operator import metrics
    from tablesync_operator.kube import KubeError

    from .test_metrics import scrape

    def series() -> set[tuple[str, str]]:
        """(type, status) of the TableSync's tablesync_condition series."""
        return {
            (labels["type"], labels["status"])
            for (metric, pairs), _ in scrape(metrics.STORE).items()
            if metric == "tablesync_condition"
            and (labels := dict(pairs))["namespace"] == NS and labels["name"] == NAME
        }

    def refuse(desired: Any) -> Any:
        raise KubeError(f"PATCH cronjobs/{NAME}: 400 denied by policy", 400)

    sync(ctx(kube), NS, NAME)
    assert ("Ready", "True") in series()
    edit(kube, lambda ts: ts["spec"].update(schedule="*/10 * * * *"))
    kube.apply_cronjob = refuse  # type: ignore[method-assign, assignment]
    with pytest.raises(kopf.TemporaryError):
        sync(ctx(kube), NS, NAME)
    assert conditions(kube)["Ready"] == ("False", "ApiError")
    assert ("Ready", "False") in series() and ("Ready", "True") not in series()

    metrics.forget(NS, NAME)  # a restarted operator: nothing observed yet
    with pytest.raises(kopf.TemporaryError):
        sync(ctx(kube), NS, NAME)
    assert ("Ready", "False") in series()
    metrics.forget(NS, NAME)


def test_runs_that_finished_are_recorded_while_the_cronjob_update_fails(
    kube: FakeKube,
) -> None:
    """A spec change whose CronJob a webhook denies (400) or a quota refuses (403) is retried
    as an API error until someone acts; the CronJob as it was keeps running, and its runs
    must reach the status meanwhile. They were dropped with the failed pass: the status
    kept the old applied snapshot (Lagging turned True while the runs applied) and, once the
    Job history limits removed those Jobs, runs_total and the drift totals never counted
    them."""
    import kopf

    from tablesync_operator.kube import KubeError

    def refuse(desired: Any) -> Any:
        raise KubeError(f"PATCH cronjobs/{NAME}: 400 denied by policy", 400)

    sync(ctx(kube), NS, NAME)
    edit(kube, lambda ts: ts["spec"].update(schedule="*/10 * * * *"))
    kube.apply_cronjob = refuse  # type: ignore[method-assign, assignment]
    add_finished_job(kube, "product-prices-29400000", report())
    with pytest.raises(kopf.TemporaryError):
        sync(ctx(kube), NS, NAME)
    status = kube.status_of(NS, NAME)
    assert status["runs"]["succeeded"] == 1
    assert status["lastRun"]["jobName"] == "product-prices-29400000"
    assert conditions(kube)["LastRunSucceeded"] == ("True", "Applied")
    assert conditions(kube)["Ready"] == ("False", "ApiError")
    assert "400 denied by policy" in next(
        c["message"] for c in status["conditions"] if c["type"] == "Ready"
    )
    assert [e["reason"] for e in kube.events].count("RunSucceeded") == 1
    with pytest.raises(kopf.TemporaryError):  # the retry counts nothing twice
        sync(ctx(kube), NS, NAME)
    assert kube.status_of(NS, NAME)["runs"]["succeeded"] == 1
    assert [e["reason"] for e in kube.events].count("RunSucceeded") == 1


def test_runs_finishing_in_the_same_second_are_each_counted_once(kube: FakeKube) -> None:
    # A requested Job and a scheduled one finish in the same second (finish times have
    # second precision), and the Job events reach the operator in the other order than
    # their names sort: the requested one (``-m…``) first, the scheduled one (``-2…``) next.
    sync(ctx(kube), NS, NAME)
    add_finished_job(kube, "product-prices-mab12cd34", report(), scheduled=None)
    sync(ctx(kube), NS, NAME)
    assert kube.status_of(NS, NAME)["runs"]["succeeded"] == 1
    add_finished_job(kube, "product-prices-29400000", report())
    sync(ctx(kube), NS, NAME)
    assert kube.status_of(NS, NAME)["runs"]["succeeded"] == 2
    assert kube.status_of(NS, NAME)["lastRun"]["jobName"] == "product-prices-29400000"
    sync(ctx(kube), NS, NAME)  # another event, or a restarted operator: nothing twice
    assert kube.status_of(NS, NAME)["runs"]["succeeded"] == 2
    # A run that finishes in that second after both is counted too, and only once.
    add_finished_job(kube, "product-prices-29400001", report())
    sync(ctx(kube), NS, NAME)
    sync(ctx(kube), NS, NAME)
    assert kube.status_of(NS, NAME)["runs"]["succeeded"] == 3


def test_an_earlier_run_request_value_set_again_starts_a_run(kube: FakeKube) -> None:
    # t1, then t2, then t1 again (a reverted manifest, a toggled value): the third value is
    # new to the annotation, so it starts a run, although t1's Job is still kept in history.
    sync(ctx(kube), NS, NAME)
    started: list[str] = []
    for value in ("t1", "t2", "t1"):
        edit(
            kube,
            lambda b, v=value: b["metadata"]["annotations"].update(
                {"tablesync.dev/run-requested-at": v}
            ),
        )
        sync(ctx(kube), NS, NAME)
        request = kube.status_of(NS, NAME)["runRequest"]
        assert request["requestedAt"] == value
        started.append(request["jobName"])
        assert kube.status_of(NS, NAME)["activeJobs"] == [request["jobName"]]
        kube.jobs[(NS, request["jobName"])]["status"] = job()["status"]  # it ran and finished
        kube.pods[kube.jobs[(NS, request["jobName"])]["metadata"]["uid"]] = [
            pod_with_report(report())
        ]
    assert len(set(started)) == 3
    assert [c.split()[1] for c in kube.calls if c.startswith("create_job")] == started
    assert [e["reason"] for e in kube.events].count("RunStarted") == 3
