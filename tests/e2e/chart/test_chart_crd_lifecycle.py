"""The chart's CRD story on a real API server with real Helm: ``helm install`` creates the
CRD, ``helm upgrade`` upgrades it (what Helm never does for a chart's crds/ directory),
``helm uninstall`` keeps it (``helm.sh/resource-policy: keep``), and a reinstall adopts it.

The chart is a copy whose ``files/crds/`` holds a stand-in CRD of a unique group, so the
session's real TableSync CRD (shared with the other e2e tests) is never touched; the
template does not care which CRD files it renders.
"""

from __future__ import annotations

import copy
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.testing import Cluster, wait_for
from tests.unit.chart.helm import CHART, helm_binary

pytestmark = pytest.mark.e2e


def stand_in_crd(group: str, with_color: bool) -> dict[str, Any]:
    """A small namespaced CRD; ``with_color`` is the "next chart version" of it."""
    properties: dict[str, Any] = {"size": {"type": "integer"}}
    columns = [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]
    if with_color:
        properties["color"] = {"type": "string", "enum": ["red", "blue"]}
        columns.append({"name": "Color", "type": "string", "jsonPath": ".spec.color"})
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}", "labels": {"app.kubernetes.io/name": "t"}},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": properties}}}},
            }],
        },
    }


class Helm:
    """helm against the e2e cluster, in one namespace."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.base = [str(helm_binary()), "--kubeconfig", str(cluster.kubeconfig),
                     "--namespace", namespace]

    def __call__(self, *args: str) -> str:
        proc = subprocess.run([*self.base, *args], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"helm {' '.join(args)}: {proc.stderr}"
        return proc.stdout


@pytest.fixture
def chart_copy(tmp_path: Path, cluster: Cluster) -> Iterator[tuple[Path, str]]:
    """A copy of the chart with a stand-in CRD; yields (chart dir, CRD group). Deletes the
    stand-in CRD afterwards (the keep policy means nothing else will)."""
    chart = tmp_path / "tablesync"
    shutil.copytree(CHART, chart)
    for old in (chart / "files" / "crds").glob("*.yaml"):
        old.unlink()
    group = f"g{secrets.token_hex(4)}.chart-e2e.tablesync.dev"
    yield chart, group
    cluster.kubectl("delete", "crd", f"widgets.{group}", "--ignore-not-found", check=False)


def write_crd(chart: Path, crd: dict[str, Any]) -> None:
    (chart / "files" / "crds" / "widgets.yaml").write_text(yaml.safe_dump(crd))


def live_crd(cluster: Cluster, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", "crd", name, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_helm_installs_upgrades_and_keeps_the_crd(
    cluster: Cluster, namespace: str, chart_copy: tuple[Path, str],
) -> None:
    chart, group = chart_copy
    name = f"widgets.{group}"
    helm = Helm(cluster, namespace)
    release = f"crd-{secrets.token_hex(3)}"
    # Only the CRD matters here: no RBAC, and an image the e2e node does not know, so no
    # operator process starts.
    flags = ["--set", "rbac.create=false", "--set", "image.repository=example.invalid/none",
             "--set", f"operator.watchNamespaces={{{namespace}}}"]

    v1 = stand_in_crd(group, with_color=False)
    write_crd(chart, v1)
    helm("install", release, str(chart), *flags)
    installed = wait_for(lambda: live_crd(cluster, name), 30, f"CRD {name} to exist")
    assert installed["spec"]["versions"][0]["schema"] == v1["spec"]["versions"][0]["schema"]
    assert installed["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert installed["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
    assert installed["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"

    v2 = stand_in_crd(group, with_color=True)
    write_crd(chart, v2)
    helm("upgrade", release, str(chart), *flags)
    upgraded = live_crd(cluster, name)
    assert upgraded is not None
    version = upgraded["spec"]["versions"][0]
    assert "color" in version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Size", "Color"]

    # The upgraded schema is in force: a Widget with a color outside the enum is refused.
    widget: dict[str, Any] = {"apiVersion": f"{group}/v1", "kind": "Widget",
                              "metadata": {"name": "w", "namespace": namespace},
                              "spec": {"size": 1, "color": "green"}}
    wait_for(lambda: cluster.kubectl("get", "widgets." + group, "-n", namespace,
                                     check=False).returncode == 0, 30, "the new API to serve")
    refused = cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(widget),
                              check=False)
    assert refused.returncode != 0 and "Unsupported value" in refused.stderr, refused.stderr
    ok = copy.deepcopy(widget)
    ok["spec"]["color"] = "blue"
    cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(ok))

    helm("uninstall", release)
    kept = live_crd(cluster, name)
    assert kept is not None, "helm uninstall deleted the CRD despite resource-policy keep"
    assert cluster.kubectl("get", f"widget.{group}/w", "-n", namespace, check=False
                           ).returncode == 0, "the custom resource did not survive"

    # Same release name and namespace: the kept CRD is adopted, no manual step.
    helm("install", release, str(chart), *flags)
    assert helm("status", release).count("STATUS: deployed") == 1
    helm("uninstall", release)
