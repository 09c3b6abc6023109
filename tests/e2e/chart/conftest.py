"""Fixtures of the chart's e2e tests."""

from __future__ import annotations

import json

import pytest

from localcluster.testing import Cluster, wait_for
from tests.unit.chart.helm import CHART


@pytest.fixture
def tablesync_crd(cluster: Cluster) -> str:
    """The chart's CRDs applied for real (server-side, idempotent, shared by the session) and
    Established. Returns the TableSync CRD's name."""
    for path in sorted((CHART / "files" / "crds").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts",
                        "--field-manager=tablesync-e2e", "-f", str(path))
    name = "tablesyncs.tablesync.dev"

    def established() -> bool:
        crd = json.loads(cluster.kubectl("get", "crd", name, "-o", "json").stdout)
        return any(c["type"] == "Established" and c["status"] == "True"
                   for c in (crd.get("status") or {}).get("conditions") or [])

    wait_for(established, 60, f"CRD {name} to be Established")
    return name
