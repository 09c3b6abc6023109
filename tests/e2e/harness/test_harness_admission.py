"""Real admission: CRD structural schema and CEL ``x-kubernetes-validations`` rules."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from localcluster.testing import Cluster, wait_for

pytestmark = pytest.mark.e2e
RULE_MESSAGE = "maxReplicas must be at least minReplicas"


@pytest.fixture
def crd(cluster: Cluster) -> Iterator[str]:
    """A throwaway namespaced CRD with one CEL rule; yields its kind's plural.group."""
    plural = f"gadgets{secrets.token_hex(3)}"
    group = "harness.tablesync.dev"
    cluster.apply({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": "Gadget" + plural[7:]},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                    "type": "object",
                    "required": ["minReplicas", "maxReplicas"],
                    "properties": {"minReplicas": {"type": "integer"},
                                   "maxReplicas": {"type": "integer"}},
                    "x-kubernetes-validations": [{
                        "rule": "self.maxReplicas >= self.minReplicas",
                        "message": RULE_MESSAGE}],
                }}}}}],
        },
    })
    name = f"{plural}.{group}"
    wait_for(lambda: "Established=True" in cluster.kubectl(
        "get", "crd", name, "-o",
        "jsonpath={range .status.conditions[*]}{.type}={.status} {end}").stdout,
        30, f"CRD {name} Established")
    yield plural
    cluster.kubectl("delete", "crd", name, "--wait=false")


def test_cel_rule_rejects_a_violating_object_with_its_message(
        cluster: Cluster, namespace: str, crd: str) -> None:
    kind = "Gadget" + crd[7:]

    def gadget(name: str, low: int, high: int) -> str:
        return (f"apiVersion: harness.tablesync.dev/v1\nkind: {kind}\n"
                f"metadata: {{name: {name}}}\nspec: {{minReplicas: {low}, maxReplicas: {high}}}\n")

    ok = cluster.kubectl("apply", "-n", namespace, "-f", "-", input_text=gadget("fine", 1, 3))
    bad = cluster.kubectl("apply", "-n", namespace, "-f", "-", input_text=gadget("bad", 5, 2),
                          check=False)

    assert ok.returncode == 0, ok.stderr
    assert bad.returncode != 0
    assert RULE_MESSAGE in bad.stderr
    assert "Invalid value" in bad.stderr
    assert cluster.kubectl("get", crd, "bad", "-n", namespace, check=False).returncode != 0
