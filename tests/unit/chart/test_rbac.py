"""The operator's RBAC as rendered: exactly the rules of operator/RBAC.md, bound to the
operator's ServiceAccount only, cluster-wide or per watched namespace.

RBAC.md ends with the rules "As a manifest" (a ClusterRole for the watched namespaces, one
for cluster-scoped reads, a Role for the Lease); these tests read that block, so the chart
and the operator's own list cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.support.services import REPO_ROOT
from tests.unit.chart.helm import NAMESPACE, Manifest, find, only, render

OPERATOR = "tablesync-operator"
LEASE_ROLE = f"{OPERATOR}-leader-election"
SUBJECT = {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
RBAC_MD = REPO_ROOT / "operator" / "RBAC.md"

Grant = tuple[str, str, str]
"""(apiGroup, resource, verb)"""


def documented_roles() -> dict[str, Manifest]:
    """The roles of RBAC.md's "As a manifest" YAML block, by name."""
    text = RBAC_MD.read_text()
    section = text[text.index("## As a manifest"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, f"{RBAC_MD}: no YAML block under 'As a manifest'"
    return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(block.group(1)) if doc}


def grants(role: Manifest) -> set[Grant]:
    """Flatten a role's rules; fails on wildcards and on a grant given twice."""
    flat: set[Grant] = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), rule
                    assert (group, resource, verb) not in flat, f"{rule} grants twice"
                    flat.add((group, resource, verb))
    return flat


def role_ref(binding: Manifest) -> dict[str, Any]:
    ref: dict[str, Any] = binding["roleRef"]
    return ref


NAMESPACES_GRANTS = {("", "namespaces", "list"), ("", "namespaces", "watch")}


def test_rbac_md_lists_the_three_roles_the_chart_renders() -> None:
    assert set(documented_roles()) == {OPERATOR, f"{OPERATOR}-cluster", LEASE_ROLE}


def test_namespaced_cluster_role_is_exactly_rbac_md() -> None:
    rendered = only(render(), "ClusterRole", OPERATOR)
    assert grants(rendered) == grants(documented_roles()[OPERATOR])
    assert not any(verb == "delete" for _, _, verb in grants(rendered))


def test_cluster_scoped_reads_are_exactly_rbac_md() -> None:
    """Namespaces list/watch only when specific namespaces are watched (kopf observes
    namespaces only then, as RBAC.md says); the CRD scan always."""
    documented = grants(documented_roles()[f"{OPERATOR}-cluster"])
    clusterwide = only(render(), "ClusterRole", f"{OPERATOR}-cluster")
    assert grants(clusterwide) == documented - NAMESPACES_GRANTS
    namespaced = only(render({"operator": {"watchNamespaces": ["data"]}}), "ClusterRole",
                      f"{OPERATOR}-cluster")
    assert grants(namespaced) == documented
    assert documented >= NAMESPACES_GRANTS


def test_lease_role_is_rbac_md_limited_to_the_operators_own_lease() -> None:
    objects = render()
    role = only(objects, "Role", LEASE_ROLE, NAMESPACE)
    assert grants(role) == grants(documented_roles()[LEASE_ROLE])
    for rule in role["rules"]:
        if set(rule["verbs"]) & {"get", "update"}:
            assert rule["resourceNames"] == [OPERATOR]  # the Lease name the operator gets
        else:
            assert rule["verbs"] == ["create"] and "resourceNames" not in rule
    binding = only(objects, "RoleBinding", LEASE_ROLE, NAMESPACE)
    assert role_ref(binding) == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                 "name": LEASE_ROLE}
    assert binding["subjects"] == [SUBJECT]


def test_lease_role_follows_the_lease_name() -> None:
    objects = render({"operator": {"leaderElection": {"leaseName": "custom-lease"}}})
    role = only(objects, "Role", LEASE_ROLE)
    assert [r.get("resourceNames") for r in role["rules"]] == [None, ["custom-lease"]]


def test_no_lease_role_without_leader_election() -> None:
    objects = render({"operator": {"leaderElection": {"enabled": False}}})
    assert find(objects, "Role") == []
    assert find(objects, "RoleBinding") == []


def test_clusterwide_operator_gets_cluster_role_bindings_to_its_service_account() -> None:
    objects = render()
    for name in (OPERATOR, f"{OPERATOR}-cluster"):
        binding = only(objects, "ClusterRoleBinding", name)
        assert role_ref(binding) == {"apiGroup": "rbac.authorization.k8s.io",
                                     "kind": "ClusterRole", "name": name}
        assert binding["subjects"] == [SUBJECT]
    assert {o["metadata"]["name"] for o in find(objects, "ClusterRoleBinding")} == {
        OPERATOR, f"{OPERATOR}-cluster"}


def test_watched_namespaces_get_role_bindings_instead_of_a_cluster_wide_grant() -> None:
    objects = render({"operator": {"watchNamespaces": ["data", "etl"]}})
    assert [o["metadata"]["name"] for o in find(objects, "ClusterRoleBinding")] == [
        f"{OPERATOR}-cluster"]
    for namespace in ("data", "etl"):
        binding = only(objects, "RoleBinding", OPERATOR, namespace)
        assert role_ref(binding) == {"apiGroup": "rbac.authorization.k8s.io",
                                     "kind": "ClusterRole", "name": OPERATOR}
        assert binding["subjects"] == [SUBJECT]


def test_rbac_create_false_renders_no_rbac() -> None:
    objects = render({"rbac": {"create": False}})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert find(objects, kind) == []
