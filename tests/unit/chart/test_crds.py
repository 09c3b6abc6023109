"""The chart's CRD copy equals the repository's crds/, and the CRD renders as a kept template."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.services import REPO_ROOT
from tests.unit.chart.helm import CHART, find, only, render

SOURCE = REPO_ROOT / "crds"
COPY = CHART / "files" / "crds"
SYNC_HINT = "run `make chart` (cp crds/*.yaml charts/tablesync/files/crds/)"


def yaml_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.yaml"))}


def test_chart_copy_of_the_crds_equals_the_repository_crds() -> None:
    source, copy = yaml_files(SOURCE), yaml_files(COPY)
    assert source, f"{SOURCE} holds no CRD"
    assert sorted(copy) == sorted(source), f"file lists differ: {SYNC_HINT}"
    for name, data in source.items():
        assert copy[name] == data, f"charts/tablesync/files/crds/{name} is stale: {SYNC_HINT}"


def test_helm_crds_directory_is_not_used() -> None:
    """Helm installs crds/ itself (never upgrading it); that would clash with the template."""
    assert not (CHART / "crds").exists() or not any((CHART / "crds").iterdir())


def test_rendered_crds_are_the_repository_crds_plus_release_metadata() -> None:
    objects = render()
    for path in sorted(SOURCE.glob("*.yaml")):
        source = yaml.safe_load(path.read_text())
        rendered = only(objects, "CustomResourceDefinition", source["metadata"]["name"])
        assert rendered["apiVersion"] == source["apiVersion"]
        assert rendered["spec"] == source["spec"]
        for key, value in (source["metadata"].get("labels") or {}).items():
            assert rendered["metadata"]["labels"][key] == value
        assert rendered["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert rendered["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_crds_install_false_leaves_them_out() -> None:
    assert find(render({"crds": {"install": False}}), "CustomResourceDefinition") == []


def test_crds_keep_false_drops_the_resource_policy() -> None:
    [crd] = find(render({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})
