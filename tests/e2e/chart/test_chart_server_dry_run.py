"""The rendered chart against a real API server: ``helm template | kubectl apply
--dry-run=server`` accepts every object (schemas, strict field validation, RBAC objects,
the CRD itself), and the TableSync that NOTES.txt suggests passes the CRD's admission rules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.testing import Cluster
from tests.unit.chart.helm import find, render_notes, render_text

pytestmark = pytest.mark.e2e
RELEASE = "tablesync-dry-run"

Values = dict[str, Any]


def server_dry_run(cluster: Cluster, manifests: str) -> list[str]:
    """``kubectl apply --dry-run=server --validate=strict -f -``; returns the lines it printed
    (one per object) and fails with kubectl's stderr when the server rejects anything."""
    proc = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-",
                           input_text=manifests, check=False)
    assert proc.returncode == 0, f"the API server rejected the rendered chart:\n{proc.stderr}"
    return [line for line in proc.stdout.splitlines() if line.strip()]


def defaults(namespace: str) -> Values:
    return {}


def namespaced_with_scheduling(namespace: str) -> Values:
    """Every optional value that renders into the Deployment, RBAC per namespace."""
    return {
        "operator": {
            "watchNamespaces": [namespace],
            "leaderElection": {"leaseName": "ts-lease"},
            "extraEnv": [
                {"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            ],
        },
        "job": {"serviceAccount": {"annotations": {"example.com/role": "reader"}}},
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"example.com/team": "data"},
        "podLabels": {"team": "data"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "etl",
                         "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}},
        "metrics": {"service": {"annotations": {"example.com/scrape": "true"}}},
    }


def without_crds_and_rbac(namespace: str) -> Values:
    return {"crds": {"install": False}, "rbac": {"create": False},
            "serviceAccount": {"create": False, "name": "default"}}


@pytest.mark.parametrize("make_values", [defaults, namespaced_with_scheduling,
                                         without_crds_and_rbac])
def test_rendered_chart_passes_server_side_dry_run(
    cluster: Cluster, namespace: str, make_values: Callable[[str], Values],
) -> None:
    values = make_values(namespace)
    manifests = render_text(values, namespace=namespace, release=RELEASE)
    objects = [doc for doc in yaml.safe_load_all(manifests) if doc]
    printed = server_dry_run(cluster, manifests)
    assert len(printed) == len(objects), printed
    assert all(line.endswith("(server dry run)") for line in printed), printed
    if make_values is defaults:
        assert find(objects, "CustomResourceDefinition")
        assert find(objects, "ClusterRoleBinding")
        assert find(objects, "Deployment")


def test_notes_example_tablesync_is_admitted(cluster: Cluster, namespace: str,
                                             tablesync_crd: str, tmp_path: Path) -> None:
    """The first TableSync a user applies (from NOTES.txt) is valid for the real CRD."""
    notes = render_notes({"operator": {"watchNamespaces": [namespace]}}, tmp_path)
    start = notes.rindex("\n", 0, notes.index("apiVersion: tablesync.dev/v1alpha1")) + 1
    end = notes.index("YAML", start)
    example = yaml.safe_load("\n".join(line[3:] for line in notes[start:end].splitlines()))
    assert example["kind"] == "TableSync"
    example["metadata"]["namespace"] = namespace
    printed = server_dry_run(cluster, yaml.safe_dump(example))
    assert printed == [
        f"tablesync.tablesync.dev/{example['metadata']['name']} created (server dry run)"
    ]


def kstatus(obj: dict[str, Any]) -> str:
    """The status kstatus (sigs.k8s.io/cli-utils pkg/kstatus/status, which Flux's ``wait`` and
    ``healthChecks`` use) computes for a custom resource: ``checkGenericProperties`` in
    generic.go, then ``Compute``'s fallback for kinds without rules of their own. A missing
    ``status.observedGeneration`` skips the generation check."""
    generation = obj["metadata"].get("generation")
    status = obj.get("status") or {}
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return "InProgress"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Reconciling" and cond.get("status") == "True":
            return "InProgress"
        if cond.get("type") == "Stalled" and cond.get("status") == "True":
            return "Failed"
    return "Current"


def test_a_tablesync_the_operator_has_not_seen_is_in_progress_for_kstatus(
    cluster: Cluster, namespace: str, tablesync_crd: str,
) -> None:
    """Until the operator writes a status, kstatus must read a new TableSync as InProgress
    (the chart README: "a generation the operator has not observed yet is InProgress"), not
    Current: else Flux's ``wait: true`` passes on a TableSync no operator reconciled (operator
    down, namespace not watched) or one about to be Stalled (a missing Secret)."""
    example = {
        "apiVersion": "tablesync.dev/v1alpha1", "kind": "TableSync",
        "metadata": {"name": "unseen", "namespace": namespace},
        "spec": {
            "schedule": "*/30 * * * *",
            "source": {"uriSecretRef": {"name": "replica", "key": "uri"},
                       "table": "public.prices", "primaryKey": ["product_id"],
                       "versionColumn": "updated_at"},
            "storage": {"url": "s3://tablesync/prices"},
            "destination": {"uriSecretRef": {"name": "warehouse", "key": "uri"},
                            "table": "public.prices"},
        },
    }
    # a server dry run: the object exactly as stored, and no operator can have written to it
    proc = cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                           input_text=yaml.safe_dump(example))
    stored = yaml.safe_load(proc.stdout)
    assert stored["metadata"]["generation"] == 1
    assert kstatus(stored) == "InProgress", stored.get("status")
