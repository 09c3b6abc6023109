"""Render the tablesync chart with the pinned Helm binary; shared by the chart tests.

Used by ``tests/unit/chart`` (render and inspect) and ``tests/e2e/chart`` (pipe the output to
``kubectl apply --dry-run=server``). Helm is the Go-built binary from
``tests/e2e/cluster/install-binaries.sh`` (via ``tests.support.services.cluster_bin_dir``), so
the tests use the same Helm version everywhere.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.support.services import REPO_ROOT, cluster_bin_dir

CHART = REPO_ROOT / "charts" / "tablesync"
RELEASE = "tablesync"
NAMESPACE = "tablesync-system"

Manifest = dict[str, Any]


class HelmFailed(AssertionError):
    """helm exited non-zero; the message holds its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} exited {returncode}:\n{stderr}")
        self.stderr = stderr


@cache
def helm_binary() -> Path:
    """The pinned helm binary (built on first use by install-binaries.sh)."""
    path = cluster_bin_dir() / "helm"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run tests/e2e/cluster/install-binaries.sh")
    return path


def run_helm(*args: str, chart: Path = CHART) -> str:
    """Run ``helm ARGS... CHART`` and return stdout; raise HelmFailed on a non-zero exit."""
    argv = [str(helm_binary()), *args, str(chart)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HelmFailed(argv, proc.returncode, proc.stderr)
    return proc.stdout


def template_args(values: Mapping[str, Any] | None = None, namespace: str = NAMESPACE,
                  release: str = RELEASE) -> list[str]:
    """``helm template`` arguments; each top-level value goes in as one ``--set-json``."""
    args = ["template", release, "--namespace", namespace]
    for key, value in (values or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def render_text(values: Mapping[str, Any] | None = None, namespace: str = NAMESPACE,
                release: str = RELEASE, chart: Path = CHART) -> str:
    """The chart's ``helm template`` output as YAML text."""
    return run_helm(*template_args(values, namespace, release), chart=chart)


def render(values: Mapping[str, Any] | None = None, namespace: str = NAMESPACE,
           release: str = RELEASE) -> list[Manifest]:
    """The rendered objects, in Helm's output order (empty documents dropped)."""
    text = render_text(values, namespace, release)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_notes(values: Mapping[str, Any] | None = None, tmp_dir: Path | None = None) -> str:
    """NOTES.txt as ``helm install`` would print it.

    ``helm template`` does not render NOTES.txt and ``helm install --dry-run`` needs a
    cluster, so this renders a copy of the chart in which a ConfigMap template runs NOTES.txt
    through ``tpl`` (same helpers, same values).
    """
    if tmp_dir is None:
        raise ValueError("render_notes needs a scratch directory")
    copy = tmp_dir / "tablesync"
    shutil.copytree(CHART, copy)
    shutil.copy(copy / "templates" / "NOTES.txt", copy / "notes-under-test.txt")
    (copy / "templates" / "zz-notes-under-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes-under-test}\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes-under-test.txt") . | quote }}\n'
    )
    text = run_helm(*template_args(values), "--show-only", "templates/zz-notes-under-test.yaml",
                    chart=copy)
    notes = yaml.safe_load(text)["data"]["notes"]
    assert isinstance(notes, str)
    return notes


def find(objects: Sequence[Manifest], kind: str, name: str | None = None,
         namespace: str | None = None) -> list[Manifest]:
    """Objects of ``kind`` (and ``name`` / ``namespace`` when given)."""
    return [
        o for o in objects
        if o["kind"] == kind
        and (name is None or o["metadata"]["name"] == name)
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def only(objects: Sequence[Manifest], kind: str, name: str | None = None,
         namespace: str | None = None) -> Manifest:
    """The single object of ``kind`` (and name / namespace); fails if there are 0 or 2+."""
    found = find(objects, kind, name, namespace)
    assert len(found) == 1, (
        f"expected one {kind} {name or ''} {namespace or ''}, got "
        f"{[(o['metadata'].get('namespace'), o['metadata']['name']) for o in found]}"
    )
    return found[0]
