"""An operator outage longer than the CronJob's Job history: the slots whose Jobs the history
limits removed are not reported as missed."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from tablesync_operator.reconcile import Context, sync
from tablesync_operator.results import format_time

from .fakekube import FakeKube
from .samples import SETTINGS, TABLESYNC, job, pod_with_report, report

NS, NAME = "data", "product-prices"


def test_slots_before_the_oldest_kept_job_are_not_judged_after_an_outage() -> None:
    kube = FakeKube()
    kube.secrets[(NS, "replica")] = {"uri"}
    kube.secrets[(NS, "warehouse")] = {"uri"}
    kube.secrets[(NS, "s3")] = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    body = copy.deepcopy(TABLESYNC)
    body["metadata"]["creationTimestamp"] = "2026-11-20T00:00:00Z"
    kube.add_tablesync(body)
    t0 = datetime(2026, 11, 21, 6, 0, 0, tzinfo=UTC)
    ctx = Context(kube=kube, settings=SETTINGS, clock=lambda: t0)
    sync(ctx, NS, NAME)  # operator healthy at 06:00; then it is down until 10:10
    # (FakeKube stamps the CronJob as created at 10:59; a real one predates 06:00, so the
    # watermark would stand at about 06:00 - grace. Put it there.)
    kube.tablesyncs[(NS, NAME)]["status"]["overrun"]["schedulesCheckedUntil"] = format_time(t0)
    kube.events.clear()
    slots = [t0 + timedelta(minutes=30 * i) for i in range(1, 9)]  # 06:30 .. 10:00, all ran
    for slot in slots[-3:]:  # what successfulJobsHistoryLimit=3 left
        name = f"{NAME}-{int(slot.timestamp() // 60)}"
        j = job(name, start=format_time(slot + timedelta(seconds=5)),
                end=format_time(slot + timedelta(seconds=65)), scheduled=format_time(slot))
        j["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "tablesync",
                                   "tablesync.dev/name": NAME,
                                   "tablesync.dev/uid": TABLESYNC["metadata"]["uid"]}
        kube.jobs[(NS, name)] = j
        kube.pods[j["metadata"]["uid"]] = [pod_with_report(report(
            capturedAt=format_time(slot), snapshotId=name))]
    kube.cronjobs[(NS, NAME)]["status"] = {"lastScheduleTime": format_time(slots[-1])}
    ctx.clock = lambda: t0 + timedelta(hours=4, minutes=10)
    sync(ctx, NS, NAME)
    status = kube.status_of(NS, NAME)
    assert status["overrun"]["missedSchedules"] == 0
    assert not any(e["reason"] == "ScheduleMissed" for e in kube.events)
