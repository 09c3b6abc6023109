"""The operator's RBAC as rendered: exactly the rules of operator/RBAC.md, bound to the
operator's ServiceAccount only, cluster-wide or per watched namespace."""

from __future__ import annotations

from typing import Any

from tests.unit.chart.helm import NAMESPACE, Manifest, find, only, render

OPERATOR = "tablesync-operator"
SUBJECT = {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}

Rule = tuple[str, str, frozenset[str]]

# (apiGroup, resource, verbs) -- keep in step with operator/RBAC.md and the chart README.
NAMESPACED_RULES: set[Rule] = {
    ("tablesync.dev", "tablesyncs", frozenset({"get", "list", "watch", "patch", "update"})),
    ("tablesync.dev", "tablesyncs/status", frozenset({"get", "patch", "update"})),
    ("batch", "cronjobs",
     frozenset({"get", "list", "watch", "create", "update", "patch", "delete"})),
    ("batch", "jobs", frozenset({"get", "list", "watch", "create", "delete"})),
    ("", "pods", frozenset({"get", "list", "watch"})),
    ("", "secrets", frozenset({"get"})),
    ("", "events", frozenset({"create", "patch"})),
    ("events.k8s.io", "events", frozenset({"create", "patch"})),
}
CLUSTER_RULES: set[Rule] = {
    ("apiextensions.k8s.io", "customresourcedefinitions", frozenset({"list", "watch"})),
    ("", "namespaces", frozenset({"list", "watch"})),
}
LEADER_ELECTION_RULES: set[Rule] = {
    ("coordination.k8s.io", "leases", frozenset({"get", "create", "update"})),
}


def rules(role: Manifest) -> set[Rule]:
    """Flatten a role's rules to (group, resource, verbs); no wildcards, no resourceNames."""
    flat: set[Rule] = set()
    seen: set[tuple[str, str]] = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) not in seen, f"{group}/{resource} granted twice"
                seen.add((group, resource))
                flat.add((group, resource, frozenset(rule["verbs"])))
    return flat


def role_ref(binding: Manifest) -> dict[str, Any]:
    ref: dict[str, Any] = binding["roleRef"]
    return ref


def test_cluster_role_holds_exactly_the_namespaced_rules() -> None:
    assert rules(only(render(), "ClusterRole", OPERATOR)) == NAMESPACED_RULES


def test_cluster_scoped_reads_are_a_separate_cluster_role() -> None:
    assert rules(only(render(), "ClusterRole", f"{OPERATOR}-cluster")) == CLUSTER_RULES


def test_leader_election_is_a_role_in_the_release_namespace() -> None:
    objects = render()
    role = only(objects, "Role", f"{OPERATOR}-leader-election", NAMESPACE)
    assert rules(role) == LEADER_ELECTION_RULES
    binding = only(objects, "RoleBinding", f"{OPERATOR}-leader-election", NAMESPACE)
    assert role_ref(binding) == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                 "name": f"{OPERATOR}-leader-election"}
    assert binding["subjects"] == [SUBJECT]


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
