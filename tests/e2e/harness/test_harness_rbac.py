"""A pod's in-cluster client authenticates with its own ServiceAccount token, and RBAC applies."""

from __future__ import annotations

import pytest

from localcluster.testing import Cluster

pytestmark = pytest.mark.e2e
PYTHON_IMAGE = "tablesync/operator:dev"  # has python and the kubernetes client

IN_CLUSTER_SCRIPT = """
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

config.load_incluster_config()
core = client.CoreV1Api()
ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
print("get configmaps:", core.read_namespaced_config_map("settings", ns).data["color"])
try:
    core.list_namespaced_secret(ns)
    print("list secrets: allowed")
except ApiException as err:
    print("list secrets:", err.status)
review = client.AuthenticationV1Api().create_self_subject_review(
    {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
info = review.status.user_info
print("user:", info.username)
print("bound to pod:", (info.extra or {}).get("authentication.kubernetes.io/pod-name"))
"""


def test_service_account_role_allows_get_configmaps_and_forbids_list_secrets(
        cluster: Cluster, namespace: str) -> None:
    cluster.apply([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
         "data": {"color": "blue"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "read-configmaps"},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "reader-reads-configmaps"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "read-configmaps"},
         "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]},
    ], namespace)

    cluster.run_pod(namespace, "in-cluster", PYTHON_IMAGE, ["python", "-c", IN_CLUSTER_SCRIPT],
                    serviceAccountName="reader")
    done = cluster.wait_pod_phase(namespace, "in-cluster", timeout_seconds=60)

    log = cluster.container_log(namespace, "in-cluster")
    assert done["status"]["phase"] == "Succeeded", log
    assert log.splitlines() == [
        "get configmaps: blue",
        "list secrets: 403",
        f"user: system:serviceaccount:{namespace}:reader",
        "bound to pod: ['in-cluster']",
    ]
