"""The rendered chart: lint, the object set, the operator Deployment, Service and
ServiceMonitor, the job ServiceAccount, labels, NOTES.txt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tablesync_operator.settings import Settings, SettingsError
from tests.unit.chart.helm import (
    NAMESPACE,
    RELEASE,
    HelmFailed,
    Manifest,
    find,
    only,
    render,
    render_notes,
    run_helm,
)

OPERATOR = "tablesync-operator"
JOB_SA = "tablesync-job"
CLUSTER_SCOPED = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


@pytest.fixture(scope="module")
def default_objects() -> list[Manifest]:
    return render()


def container(objects: list[Manifest]) -> dict[str, Any]:
    deployment = only(objects, "Deployment", OPERATOR, NAMESPACE)
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    result: dict[str, Any] = containers[0]
    return result


def test_helm_lint_strict_passes() -> None:
    out = run_helm("lint", "--strict")
    assert "0 chart(s) failed" in out


def test_helm_lint_strict_passes_with_every_option_on() -> None:
    run_helm(
        "lint", "--strict",
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "operator.watchNamespaces={data,etl}",
        "--set", "job.serviceAccount.namespaces={reports}",
        "--set", "imagePullSecrets[0].name=regcred",
    )


def test_default_render_has_exactly_the_expected_objects(default_objects: list[Manifest]) -> None:
    got = sorted(
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
        for o in default_objects
    )
    assert got == sorted([
        ("CustomResourceDefinition", "", "tablesyncs.tablesync.dev"),
        ("ServiceAccount", NAMESPACE, OPERATOR),
        ("ServiceAccount", NAMESPACE, JOB_SA),
        ("ClusterRole", "", OPERATOR),
        ("ClusterRole", "", f"{OPERATOR}-cluster"),
        ("ClusterRoleBinding", "", OPERATOR),
        ("ClusterRoleBinding", "", f"{OPERATOR}-cluster"),
        ("Role", NAMESPACE, f"{OPERATOR}-leader-election"),
        ("RoleBinding", NAMESPACE, f"{OPERATOR}-leader-election"),
        ("Deployment", NAMESPACE, OPERATOR),
        ("Service", NAMESPACE, "tablesync-metrics"),
    ])


def test_every_object_has_the_standard_labels_and_an_explicit_namespace(
    default_objects: list[Manifest],
) -> None:
    for obj in default_objects:
        labels = obj["metadata"]["labels"]
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels["app.kubernetes.io/name"] == "tablesync", where
        assert labels["app.kubernetes.io/instance"] == RELEASE, where
        assert labels["app.kubernetes.io/managed-by"] == "Helm", where
        assert labels["app.kubernetes.io/part-of"] == "tablesync", where
        assert labels["app.kubernetes.io/version"] == "0.1.0", where
        assert labels["app.kubernetes.io/component"] in {"operator", "job", "crd"}, where
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], where
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, where


def test_deployment_is_one_replica_recreate(default_objects: list[Manifest]) -> None:
    spec = only(default_objects, "Deployment", OPERATOR)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    selector = spec["selector"]["matchLabels"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()


def test_deployment_runs_the_operator_image_under_its_service_account(
    default_objects: list[Manifest],
) -> None:
    pod = only(default_objects, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == OPERATOR
    assert pod["automountServiceAccountToken"] is True
    main = container(default_objects)
    assert main["image"] == "tablesync/operator:0.1.0"
    assert main["imagePullPolicy"] == "IfNotPresent"
    assert "command" not in main and "args" not in main  # the image's ENTRYPOINT runs


def test_pod_and_container_security_context_are_restricted(
    default_objects: list[Manifest],
) -> None:
    pod = only(default_objects, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    pod_sc = pod["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == 65532
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(default_objects)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_tmp_is_a_writable_empty_dir(default_objects: list[Manifest]) -> None:
    pod = only(default_objects, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in container(default_objects)["volumeMounts"]}
    assert not mounts["/tmp"].get("readOnly", False)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_liveness_probe_hits_healthz_on_the_metrics_port(default_objects: list[Manifest]) -> None:
    main = container(default_objects)
    probe = main["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports[probe["port"]] == 8080
    assert main["livenessProbe"]["periodSeconds"] > 0


def test_resources_have_requests_and_a_memory_limit(default_objects: list[Manifest]) -> None:
    resources = container(default_objects)["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]


def test_metrics_service_selects_the_operator_pod_port(default_objects: list[Manifest]) -> None:
    service = only(default_objects, "Service", "tablesync-metrics")
    pod_labels = only(default_objects, "Deployment", OPERATOR)["spec"]["template"]["metadata"][
        "labels"
    ]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    assert port["name"] == "http-metrics"
    assert port["targetPort"] in {p["name"] for p in container(default_objects)["ports"]}


def test_service_monitor_only_when_enabled(default_objects: list[Manifest]) -> None:
    assert find(default_objects, "ServiceMonitor") == []
    objects = render({"metrics": {"serviceMonitor": {"enabled": True,
                                                     "labels": {"release": "prometheus"}}}})
    monitor = only(objects, "ServiceMonitor", OPERATOR, NAMESPACE)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    service = only(objects, "Service", "tablesync-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"
    ].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # keep the TableSync's own `namespace` label


def test_job_service_account_has_no_token_and_no_binding(default_objects: list[Manifest]) -> None:
    account = only(default_objects, "ServiceAccount", JOB_SA, NAMESPACE)
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"]["labels"]["app.kubernetes.io/component"] == "job"
    for binding in find(default_objects, "RoleBinding") + find(default_objects,
                                                               "ClusterRoleBinding"):
        assert all(s["name"] != JOB_SA for s in binding["subjects"])


def test_job_service_account_exists_in_every_namespace_that_holds_tablesyncs() -> None:
    objects = render({
        "operator": {"watchNamespaces": ["data", "etl"]},
        "job": {"serviceAccount": {"namespaces": ["etl", "reports"]}},
    })
    namespaces = sorted(o["metadata"]["namespace"] for o in find(objects, "ServiceAccount", JOB_SA))
    assert namespaces == sorted([NAMESPACE, "data", "etl", "reports"])


def test_image_repositories_tags_and_pull_policies_are_values() -> None:
    objects = render({
        "image": {"repository": "ghcr.io/acme/tablesync-operator", "tag": "1.2.3",
                  "pullPolicy": "Always"},
        "job": {"image": {"repository": "ghcr.io/acme/tablesync-job", "tag": "1.2.4",
                          "pullPolicy": "Never"}},
    })
    main = container(objects)
    assert main["image"] == "ghcr.io/acme/tablesync-operator:1.2.3"
    assert main["imagePullPolicy"] == "Always"
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["TABLESYNC_OPERATOR_JOB_IMAGE"] == "ghcr.io/acme/tablesync-job:1.2.4"
    assert env["TABLESYNC_OPERATOR_JOB_IMAGE_PULL_POLICY"] == "Never"


def test_renew_deadline_must_be_below_the_lease_duration() -> None:
    with pytest.raises(HelmFailed, match="renewDeadlineSeconds must be below"):
        render({"operator": {"leaderElection": {"leaseDurationSeconds": 10,
                                                "renewDeadlineSeconds": 10}}})


def test_renew_deadline_is_checked_with_leader_election_off_too() -> None:
    """The operator refuses these settings at start whatever the leader election (exit 2,
    a pod in CrashLoopBackOff), so rendering must refuse them too."""
    values = {"operator": {"leaderElection": {"enabled": False, "leaseDurationSeconds": 15,
                                              "renewDeadlineSeconds": 20}}}
    with pytest.raises(SettingsError, match="RENEW_DEADLINE_SECONDS"):
        Settings.from_env({"TABLESYNC_OPERATOR_LEADER_ELECTION": "false",
                           "TABLESYNC_OPERATOR_LEASE_DURATION_SECONDS": "15",
                           "TABLESYNC_OPERATOR_RENEW_DEADLINE_SECONDS": "20"})
    with pytest.raises(HelmFailed, match="renewDeadlineSeconds must be below"):
        render(values)


def test_service_account_name_is_required_when_not_created() -> None:
    with pytest.raises(HelmFailed, match=r"serviceAccount\.name must name"):
        render({"serviceAccount": {"create": False}})
    objects = render({"serviceAccount": {"create": False, "name": "existing"}})
    assert find(objects, "ServiceAccount", "existing") == []
    pod = only(objects, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "existing"
    binding = only(objects, "ClusterRoleBinding", OPERATOR)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "existing", "namespace": NAMESPACE}
    ]


def test_notes_give_the_first_commands(tmp_path: Path) -> None:
    notes = render_notes({"operator": {"watchNamespaces": ["data"]}}, tmp_path)
    assert f"kubectl -n {NAMESPACE} rollout status deploy/{OPERATOR}" in notes
    assert "kubectl -n data create secret generic replica" in notes
    assert "kind: TableSync" in notes and "apiVersion: tablesync.dev/v1alpha1" in notes
    assert "kubectl -n data get ts" in notes
    assert "tablesync.dev/run-requested-at=" in notes  # trigger a run now
    assert "kubectl -n data wait ts/product-prices --for=condition=LastRunSucceeded" in notes


def test_job_service_account_name_is_required_when_not_created() -> None:
    """Without it the operator pointed TableSyncs at "<fullname>-job", which nothing creates,
    so every TableSync was Stalled/ServiceAccountNotFound after a clean install."""
    with pytest.raises(HelmFailed, match=r"job\.serviceAccount\.name must name"):
        render({"job": {"serviceAccount": {"create": False}}})
    objects = render({"job": {"serviceAccount": {"create": False, "name": "default"}}})
    assert find(objects, "ServiceAccount", "default") == []
    env = only(objects, "Deployment", OPERATOR)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TABLESYNC_OPERATOR_JOB_SERVICE_ACCOUNT", "value": "default"} in env


def test_notes_name_only_watched_namespaces(tmp_path: Path) -> None:
    """With operator.watchNamespaces, a TableSync anywhere else is never reconciled (no status,
    `kubectl wait` times out), even where the job ServiceAccount exists: the release
    namespace, or a job.serviceAccount.namespaces entry. The NOTES must not send the first
    TableSync there, nor list those namespaces as working."""
    notes = render_notes({"operator": {"watchNamespaces": ["data", "etl"]},
                          "job": {"serviceAccount": {"namespaces": ["ops"]}}}, tmp_path)
    assert "kubectl -n data create secret generic replica" in notes
    assert "kubectl -n data wait ts/product-prices --for=condition=Ready" in notes
    assert "kubectl -n ops " not in notes
    [served] = [line for line in notes.splitlines() if line.startswith("ServiceAccount ")]
    assert served.endswith(": data, etl).")


def test_notes_cluster_wide_name_the_job_namespaces(tmp_path: Path) -> None:
    notes = render_notes({"job": {"serviceAccount": {"namespaces": ["data"]}}}, tmp_path)
    assert "kubectl -n data create secret generic replica" in notes
    [served] = [line for line in notes.splitlines() if line.startswith("ServiceAccount ")]
    assert served.endswith(f": {NAMESPACE}, data).")


def test_job_pods_get_the_image_pull_secrets() -> None:
    """imagePullSecrets reached the operator pod only: job pods of an image in a private
    registry sat in ImagePullBackOff until their deadline (DeadlineExceeded every run)."""
    objects = render({"imagePullSecrets": [{"name": "regcred"}],
                      "job": {"serviceAccount": {"namespaces": ["etl"]}}})
    for ns in (NAMESPACE, "etl"):
        account = only(objects, "ServiceAccount", JOB_SA, namespace=ns)
        assert account["imagePullSecrets"] == [{"name": "regcred"}]
    objects = render({"imagePullSecrets": [{"name": "regcred"}],
                      "job": {"serviceAccount": {"imagePullSecrets": [{"name": "jobs"}]}}})
    account = only(objects, "ServiceAccount", JOB_SA)
    assert account["imagePullSecrets"] == [{"name": "jobs"}]
    assert "imagePullSecrets" not in only(render({}), "ServiceAccount", JOB_SA)
