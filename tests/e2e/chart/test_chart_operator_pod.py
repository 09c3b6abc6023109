"""The operator as the chart deploys it: a pod of the rendered Deployment, under the chart's
ServiceAccount and RBAC only. It wins its Lease, reconciles a TableSync into a CronJob, writes
the status, starts a requested run and reads its outcome — with no request forbidden. This is
the proof that the chart's RBAC is sufficient (the unit tests pin that it is not wider); the
main scenario under the same chart install is ``test_chart_main_scenario.py``.

Namespaced mode (``operator.watchNamespaces``): the grant is a RoleBinding in the test's
namespace, so nothing here touches TableSyncs elsewhere in the cluster.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from localcluster.testing import Cluster, wait_for
from tests.e2e.chart.chart_kit import (
    ChartRelease,
    condition,
    from_pod,
    get_json,
    operator_pod,
    refused_requests,
)

pytestmark = pytest.mark.e2e


def test_operator_from_the_chart_reconciles_with_only_the_chart_rbac(
    cluster: Cluster, namespace: str, installed: ChartRelease,
) -> None:
    operator_sa = f"system:serviceaccount:{namespace}:{installed.operator}"
    job_sa = f"system:serviceaccount:{namespace}:{installed.job_service_account}"
    # The grant as the API server sees it: enough for the operator, nothing for the job pods.
    def can(who: str, where: str, *what: str) -> str:
        return cluster.kubectl("auth", "can-i", "--as", who, "-n", where, *what,
                               check=False).stdout.strip()

    for what in (("patch", "cronjobs.batch"), ("create", "cronjobs.batch"), ("get", "secrets"),
                 ("get", "serviceaccounts"),
                 ("update", "tablesyncs.tablesync.dev", "--subresource=status"),
                 ("create", "jobs.batch"),
                 ("update", f"leases.coordination.k8s.io/{installed.operator}")):
        assert can(operator_sa, namespace, *what) == "yes", what
    assert can(operator_sa, "default", "get", "secrets") == "no"  # not a watched namespace
    assert can(operator_sa, namespace, "list", "secrets") == "no"
    assert can(operator_sa, namespace, "create", "serviceaccounts") == "no"
    assert can(operator_sa, namespace, "delete", "cronjobs.batch") == "no"
    assert can(operator_sa, namespace, "update", "leases.coordination.k8s.io/other") == "no"
    assert can(job_sa, namespace, "get", "tablesyncs.tablesync.dev") == "no"
    assert can(job_sa, namespace, "get", "secrets") == "no"

    pod = wait_for(lambda: operator_pod(cluster, namespace), 60, "the operator pod to run")
    assert pod["spec"]["serviceAccountName"] == installed.operator
    lease = wait_for(
        lambda: get_json(cluster, "-n", namespace, "lease", installed.operator)
        if cluster.kubectl("-n", namespace, "get", "lease", installed.operator,
                           check=False).returncode == 0 else None,
        60, "the operator to take its Lease")
    assert lease["spec"]["holderIdentity"].startswith(pod["metadata"]["name"])
    # What the liveness probe and the metrics Service reach: the container port the chart
    # names http-metrics.
    [port] = pod["spec"]["containers"][0]["ports"]
    assert port["name"] == "http-metrics"
    assert from_pod(cluster, pod, port["containerPort"], "/healthz")

    for name, data in (("replica", {"uri": "postgresql://reader:pw@127.0.0.1:1/app"}),
                       ("warehouse", {"uri": "postgresql://writer:pw@127.0.0.1:1/dw"}),
                       ("s3", {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})):
        cluster.kubectl("-n", namespace, "create", "secret", "generic", name,
                        *[f"--from-literal={k}={v}" for k, v in data.items()])
    cluster.apply({
        "apiVersion": "tablesync.dev/v1alpha1", "kind": "TableSync",
        "metadata": {"name": "prices", "namespace": namespace},
        "spec": {
            "schedule": "0 3 * * *",
            "source": {"uriSecretRef": {"name": "replica", "key": "uri"},
                       "table": "public.prices", "primaryKey": ["product_id"],
                       "versionColumn": "updated_at"},
            "storage": {"url": "s3://tablesync/prices", "credentialsSecretRef": {"name": "s3"}},
            "destination": {"uriSecretRef": {"name": "warehouse", "key": "uri"},
                            "table": "public.prices"},
        },
    })

    def ready() -> dict[str, Any] | None:
        ts = get_json(cluster, "-n", namespace, "tablesync", "prices")
        cond = condition(ts, "Ready")
        return ts if cond and cond["status"] == "True" else None

    ts = wait_for(ready, 90, "TableSync prices to be Ready")
    cronjobs = get_json(cluster, "-n", namespace, "cronjobs")["items"]
    assert len(cronjobs) == 1
    [owner] = cronjobs[0]["metadata"]["ownerReferences"]
    assert owner["uid"] == ts["metadata"]["uid"]
    job_pod_spec = cronjobs[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert job_pod_spec["serviceAccountName"] == installed.job_service_account
    assert job_pod_spec["containers"][0]["image"] == "tablesync/job:0.1.0"

    # A run on request: the operator creates the Job, the run fails (nothing listens on the
    # source's port) and the operator reads the outcome from the pod.
    requested_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.kubectl("-n", namespace, "annotate", "--overwrite", "tablesync/prices",
                    f"tablesync.dev/run-requested-at={requested_at}")

    def run_recorded() -> dict[str, Any] | None:
        ts = get_json(cluster, "-n", namespace, "tablesync", "prices")
        cond = condition(ts, "LastRunSucceeded")
        return cond if cond and cond["status"] != "Unknown" else None

    last_run = wait_for(run_recorded, 180, "the operator to record the requested run")
    assert last_run["status"] == "False", last_run
    jobs = get_json(cluster, "-n", namespace, "jobs")["items"]
    assert jobs, "no Job was created for the requested run"

    metrics = from_pod(cluster, pod, port["containerPort"], "/metrics")
    assert "tablesync_runs_total{" in metrics, metrics[:2000]

    log = cluster.container_log(namespace, pod["metadata"]["name"])
    assert not refused_requests(log), log[-3000:]
