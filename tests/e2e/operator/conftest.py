"""Fixtures of the operator's e2e tests (see operator_kit.py for what they build on).

``tablesync_operator`` (session): the CRD installed, the RBAC of operator/RBAC.md bound to a
ServiceAccount, and one ``tablesync-operator`` process running with that account's token,
watching only the ``tso-*`` namespaces (the chart's e2e tests run the chart's operator in
namespaces named otherwise). On a cluster with the chart preinstalled (kind), that cluster-wide
operator is scaled to zero for the session (``preinstalled_operator_stopped``).
``ts_namespace``: a fresh ``tso-…`` namespace. ``make_lane``: databases, bucket, Secrets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from localcluster.testing import Cluster, PostgresAccess
from tests.e2e.operator.operator_kit import (
    NAMESPACE_PREFIX,
    SYSTEM_NAMESPACE,
    Lane,
    OperatorProcess,
    install_crd,
    lane,
    log_tail,
    rbac_manifests,
    restricted_kubeconfig,
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed operator test's report carries the tail of every operator log of the session
    (the session's operator and any replica a test started), so a CI failure can be read."""
    report = yield
    home = getattr(item, "funcargs", {}).get("operator_home")
    if report.failed and isinstance(home, Path):
        for log in sorted(home.glob("*.log")):
            report.sections.append((f"operator log {log.name} (tail)", log_tail(log)))
    return report


@pytest.fixture(scope="session")
def operator_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tablesync-operator")


@pytest.fixture(scope="session")
def crd_installed(cluster: Cluster) -> None:
    """crds/ applied and Established (admission tests need nothing more)."""
    install_crd(cluster)


@pytest.fixture(scope="session")
def tablesync_operator(
    cluster: Cluster, operator_home: Path, crd_installed: None, preinstalled_operator_stopped: None
) -> Iterator[OperatorProcess]:
    with contextlib.suppress(ApiException):
        cluster.core.create_namespace({"metadata": {"name": SYSTEM_NAMESPACE}})
    cluster.apply(rbac_manifests(SYSTEM_NAMESPACE))
    kubeconfig = restricted_kubeconfig(cluster, operator_home / "kubeconfig")
    operator = OperatorProcess(kubeconfig, operator_home / "operator.log")
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


@pytest.fixture
def ts_namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new namespace the session's operator watches (``tso-<test>-<hex>``)."""
    base = request.node.name.removeprefix("test_").replace("_", "-").lower()
    base = "".join(c for c in base if c.isalnum() or c == "-")[:30].strip("-")
    name = cluster.create_namespace(f"{NAMESPACE_PREFIX}{base}")
    yield name
    cluster.delete_namespace(name)


@pytest.fixture
def make_lane(
    cluster: Cluster,
    e2e_postgres: PostgresAccess,
    ts_namespace: str,
    tablesync_operator: OperatorProcess,
) -> Iterator[Callable[[str], Lane]]:
    """``make_lane(name)``: a Lane (databases, bucket) for TableSync ``name``."""
    with contextlib.ExitStack() as stack:

        def make(name: str) -> Lane:
            return stack.enter_context(lane(cluster, e2e_postgres, ts_namespace, name))

        yield make
