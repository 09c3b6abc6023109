"""Restarts and replicas: a restarted operator loses no status, counts no run twice and
creates no second CronJob; of two replicas only the Lease holder acts, and the standby takes
over when the leader dies. Also: the operator's rights are exactly operator/RBAC.md."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest

from localcluster.testing import Cluster, wait_for
from tests.e2e.operator.operator_kit import (
    RESYNC_SECONDS,
    SERVICE_ACCOUNT,
    SYSTEM_NAMESPACE,
    Lane,
    OperatorProcess,
    metric_value,
)

pytestmark = pytest.mark.e2e


def counters(text: str, lane: Lane) -> dict[str, float | None]:
    labels = {"namespace": lane.namespace, "name": lane.name}
    return {
        "succeeded": metric_value(text, "tablesync_runs_total", result="succeeded", **labels),
        "updated": metric_value(text, "tablesync_drift_rows_total", op="updated", **labels),
        "overruns": metric_value(text, "tablesync_overruns_total", **labels),
    }


def test_restart_loses_nothing_and_counts_nothing_twice(
    make_lane: Callable[[str], Lane], tablesync_operator: OperatorProcess
) -> None:
    lane = make_lane("prices")
    lane.load(1000)
    lane.secrets()
    lane.create()
    lane.run()
    lane.src("UPDATE public.prices SET price = 1, updated_at = now() WHERE product_id <= 10")
    assert lane.run()["driftRows"] == 10
    before = lane.status()
    cronjob_version = lane.get_object("cronjob", lane.name)["metadata"]["resourceVersion"]
    metrics_before = counters(tablesync_operator.metrics_text(), lane)
    assert metrics_before == {
        "succeeded": 2,
        "updated": 10,
        "overruns": before["overrun"]["totalOverruns"],
    }

    tablesync_operator.restart()
    # The restarted operator re-reads the TableSync and its finished Jobs.
    wait_for(
        lambda: counters(tablesync_operator.metrics_text(), lane)["succeeded"],
        30,
        "the restarted operator to serve the TableSync's metrics",
    )
    time.sleep(3 * RESYNC_SECONDS)
    after = lane.status()
    assert after["runs"] == before["runs"]
    assert after["drift"] == before["drift"]
    assert after["lastProcessedJob"] == before["lastProcessedJob"]
    assert after["lastRun"] == before["lastRun"]
    assert [c["metadata"]["name"] for c in lane.cronjobs()] == [lane.name]
    assert lane.get_object("cronjob", lane.name)["metadata"]["resourceVersion"] == cronjob_version
    assert counters(tablesync_operator.metrics_text(), lane) == metrics_before
    assert [e["reason"] for e in lane.events()].count("RunSucceeded") == 2

    # With the operator down, a TableSync can still be deleted (no finalizer waits for it).
    tablesync_operator.stop()
    try:
        lane.cluster.kubectl(
            "delete", "tablesync", lane.name, "-n", lane.namespace, "--timeout=20s"
        )
    finally:
        tablesync_operator.start()


def test_only_the_lease_holder_acts_and_the_standby_takes_over(
    cluster: Cluster,
    make_lane: Callable[[str], Lane],
    tablesync_operator: OperatorProcess,
    operator_home: object,
) -> None:
    from pathlib import Path

    home = Path(str(operator_home))
    standby = OperatorProcess(
        tablesync_operator.kubeconfig, home / "operator-2.log", name="operator-2"
    )
    standby.start(wait_leading=False)
    try:
        lane = make_lane("prices")
        lane.load(100)
        lane.secrets()
        lane.create()
        lane.wait_condition("Ready", "True")
        time.sleep(2 * RESYNC_SECONDS)
        assert "waiting to lead" in standby.current_log()
        assert "leading: Lease" not in standby.current_log()
        assert "applied CronJob" not in standby.current_log()
        assert counters(standby.metrics_text(), lane)["succeeded"] is None  # serves nothing
        lease = json.loads(
            cluster.kubectl(
                "get", "lease", "tablesync-operator", "-n", SYSTEM_NAMESPACE, "-o", "json"
            ).stdout
        )
        assert lease["spec"]["holderIdentity"].startswith("operator-1-")

        # The leader dies without releasing the Lease; the standby waits out the lease
        # duration (15 s), then leads and acts.
        tablesync_operator.stop(signal.SIGKILL)
        standby.wait_leading(timeout_seconds=60)
        run = lane.run()
        assert run["result"] == "Succeeded"
        assert "applied CronJob" in standby.current_log() or "RunStarted" in standby.current_log()
        assert lane.status()["runs"]["succeeded"] == 1
        assert counters(standby.metrics_text(), lane)["succeeded"] == 1
    finally:
        standby.stop()  # a clean stop releases the Lease: the session's operator leads again
        if not tablesync_operator.running():
            tablesync_operator.start()


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("patch", "cronjobs.batch", True),
        ("create", "jobs.batch", True),
        ("update", "tablesyncs.tablesync.dev/status", True),
        ("get", "secrets", True),
        ("list", "secrets", False),
        ("delete", "cronjobs.batch", False),
        ("delete", "jobs.batch", False),
        ("update", "tablesyncs.tablesync.dev", False),
        ("create", "pods", False),
    ],
)
def test_operator_rights_are_exactly_the_documented_ones(
    cluster: Cluster,
    tablesync_operator: OperatorProcess,
    verb: str,
    resource: str,
    allowed: bool,
) -> None:
    subject = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{SERVICE_ACCOUNT}"
    resource_name, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, resource_name, "-n", "default", f"--as={subject}"]
    if sub:
        args.append(f"--subresource={sub}")
    answer = cluster.kubectl(*args, check=False).stdout.strip()
    assert answer == ("yes" if allowed else "no"), f"{verb} {resource}: {answer}"
