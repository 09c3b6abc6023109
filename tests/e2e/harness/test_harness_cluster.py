"""The control plane as tests see it: version, node, RBAC, controllers."""

from __future__ import annotations

import json

import pytest

from localcluster.settings import KUBERNETES_VERSION, NODE_NAME
from localcluster.testing import Cluster, wait_for

pytestmark = pytest.mark.e2e


def test_api_server_version_rbac_and_node(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    nodes = cluster.core.list_node().items

    if cluster.local:
        assert version["gitVersion"] == KUBERNETES_VERSION
        assert [n.metadata.name for n in nodes] == [NODE_NAME]
        node = nodes[0]
        assert not node.spec.taints
        lease = json.loads(cluster.kubectl("get", "lease", "-n", "kube-node-lease", NODE_NAME,
                                           "-o", "json").stdout)
        assert lease["spec"]["holderIdentity"] == NODE_NAME
    assert all(any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)
               for n in nodes)
    authz = cluster.kubectl("auth", "can-i", "list", "secrets", "-n", "default",
                            "--as", "system:serviceaccount:default:default", check=False)
    assert authz.stdout.strip() == "no"


def test_aggregated_cluster_roles_are_filled(cluster: Cluster) -> None:
    """The clusterrole-aggregation controller runs, so binding ``view``/``edit`` means something."""
    view = cluster.kubectl("get", "clusterrole", "view", "-o", "json").stdout
    assert '"configmaps"' in view


def test_deployment_runs_a_ready_pod_and_the_garbage_collector_removes_it(
        cluster: Cluster, namespace: str) -> None:
    cluster.apply({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                "name": "main", "image": "busybox:1.36",
                "command": ["sh", "-c", "echo serving; exec sleep 600"]}]}}},
    }, namespace)

    cluster.kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=60s")
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert [p.status.phase for p in pods] == ["Running"]
    wait_for(lambda: cluster.container_log(namespace, pods[0].metadata.name) == "serving\n",
             10, "the Deployment's container to log")

    cluster.kubectl("delete", "-n", namespace, "deployment/web", "--cascade=background")
    wait_for(lambda: not cluster.core.list_namespaced_pod(namespace).items, 60,
             "the ReplicaSet's pod to be garbage-collected and removed")


def test_ttl_after_finished_deletes_the_job(cluster: Cluster, namespace: str) -> None:
    cluster.apply({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "short-lived"},
        "spec": {"ttlSecondsAfterFinished": 1, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox:1.36",
                            "command": ["sh", "-c", "true"]}]}}},
    }, namespace)

    wait_for(lambda: not cluster.batch.list_namespaced_job(namespace).items, 60,
             "the ttl-after-finished controller to delete the finished Job")
