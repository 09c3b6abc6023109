"""Fixtures of the chart's e2e tests (helpers in ``chart_kit.py``).

``tablesync_crd``: the chart's CRDs applied and Established. ``installed``: the rendered chart
applied in namespaced mode, watching only the test's namespace (see ``chart_kit``).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator

import pytest

from localcluster.testing import Cluster, wait_for
from tests.e2e.chart.chart_kit import ChartRelease, install_chart
from tests.e2e.operator.operator_kit import NAMESPACE_PREFIX
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


@pytest.fixture
def installed(
    cluster: Cluster, namespace: str, tablesync_crd: str, preinstalled_operator_stopped: None,
) -> Iterator[ChartRelease]:
    """The chart applied with release namespace = watched namespace = the test's namespace.
    No other operator of the session watches that namespace: the process-run one of
    tests/e2e/operator watches ``tso-*`` only, and each chart install its own namespace."""
    assert not fnmatch.fnmatch(namespace, f"{NAMESPACE_PREFIX}*"), (
        f"{namespace} is also watched by the process-run operator of tests/e2e/operator")
    with install_chart(cluster, namespace) as release:
        yield release
