"""The main e2e scenario (``tests/e2e/operator/scenario.py``: bootstrap 100k rows, then exactly
300 rows of drift, 650 already current, 50 stale-skipped) with the operator installed from the
rendered chart: a pod of the chart's Deployment (the pod runner maps ``tablesync/operator:*``
to ``tablesync-operator``) under the chart's ServiceAccount, ClusterRoles, Role and bindings,
and the job pods under the chart's job ServiceAccount.

The proof that the chart's RBAC is enough and that nothing else helped: the scenario passes,
the operator's log reports no refused request, and before and after it the chart's bindings
are the only ones in the cluster naming the operator's ServiceAccount (or a group it is in),
besides the cluster's bootstrap defaults every authenticated user has; the roles they bind are
the rendered ones, unchanged. The API server authorizes with ``Node,RBAC`` only. The job's
ServiceAccount has no binding at all. That the rules are no wider than operator/RBAC.md is
pinned by ``tests/unit/chart/test_rbac.py``.

The chart watches only this test's namespace, which the process-run operator of
``tests/e2e/operator`` (``tso-*`` namespaces) does not watch: every Event on the TableSync
must come from the chart's pod.
"""

from __future__ import annotations

import pytest
from kubernetes import client

from localcluster.testing import Cluster, PostgresAccess, wait_for
from tests.e2e.chart.chart_kit import (
    ChartRelease,
    JsonDict,
    bindings_granting,
    from_pod,
    get_json,
    operator_pod,
    refused_requests,
)
from tests.e2e.operator.operator_kit import lane
from tests.e2e.operator.scenario import bootstrap_then_exact_drift

pytestmark = pytest.mark.e2e


def _rules(rules: list[JsonDict]) -> list[JsonDict]:
    """Policy rules without empty fields, comparable between the rendered and the live role."""
    return [{k: v for k, v in rule.items() if v} for rule in rules]


def assert_only_the_chart_grants(cluster: Cluster, release: ChartRelease) -> None:
    """The operator's grants are exactly the chart's bindings to the chart's rendered roles;
    the job pods' ServiceAccount has none."""
    defaults, operator_bindings = bindings_granting(cluster, release.namespace, release.operator)
    assert operator_bindings == release.bindings(), (
        f"bindings naming {release.operator}: {sorted(operator_bindings)}; "
        f"the chart rendered {sorted(release.bindings())}")
    assert defaults, "expected the bootstrap bindings of all authenticated users"
    _, job_bindings = bindings_granting(cluster, release.namespace, release.job_service_account)
    assert job_bindings == set(), job_bindings

    rbac = client.RbacAuthorizationV1Api(cluster.api_client)
    for role in release.roles():
        name = role["metadata"]["name"]
        if role["kind"] == "ClusterRole":
            live = rbac.read_cluster_role(name)
            assert live.aggregation_rule is None, name
        else:
            live = rbac.read_namespaced_role(name, role["metadata"]["namespace"])
        live_rules: list[JsonDict] = cluster.api_client.sanitize_for_serialization(live.rules)
        assert _rules(live_rules or []) == _rules(role["rules"]), name


def test_main_scenario_with_the_operator_from_the_chart(
    cluster: Cluster, namespace: str, installed: ChartRelease, e2e_postgres: PostgresAccess,
) -> None:
    pod = wait_for(lambda: operator_pod(cluster, namespace), 60, "the chart's operator pod")
    pod_name = pod["metadata"]["name"]
    assert pod["spec"]["serviceAccountName"] == installed.operator
    [container] = pod["spec"]["containers"]
    assert container["image"].startswith("tablesync/operator:")
    [port] = container["ports"]
    wait_for(lambda: "leading: Lease" in cluster.container_log(namespace, pod_name), 60,
             f"{pod_name} to take its Lease")
    assert_only_the_chart_grants(cluster, installed)

    with lane(cluster, e2e_postgres, namespace, "prices") as prices:
        bootstrap_then_exact_drift(
            cluster,
            prices,
            metrics_text=lambda: from_pod(cluster, pod, port["containerPort"], "/metrics"),
            resync_seconds=installed.resync_seconds,
            acting_instance=pod_name,
        )

        # Both runs' pods ran under the chart's job ServiceAccount, without an API token.
        [cronjob] = prices.cronjobs()
        template = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert template["serviceAccountName"] == installed.job_service_account
        assert len(prices.jobs()) == 2
        job_pods = [p for p in get_json(cluster, "-n", namespace, "pods")["items"]
                    if p["metadata"]["name"] != pod_name]
        assert len(job_pods) == 2, [p["metadata"]["name"] for p in job_pods]
        for job_pod in job_pods:
            assert job_pod["spec"]["serviceAccountName"] == installed.job_service_account
            assert job_pod["spec"]["automountServiceAccountToken"] is False
            assert job_pod["status"]["phase"] == "Succeeded"

    # The same operator pod did it all, never refused, and nothing widened its grants.
    after = get_json(cluster, "-n", namespace, "pod", pod_name)
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0
    log = cluster.container_log(namespace, pod_name)
    assert not refused_requests(log), "\n".join(refused_requests(log)[:20])
    assert_only_the_chart_grants(cluster, installed)
