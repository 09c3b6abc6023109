"""The control plane as tests see it: version, node, RBAC, controllers."""

from __future__ import annotations

import json

import pytest

from localcluster.settings import KUBERNETES_VERSION, NODE_NAME
from localcluster.testing import Cluster

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
