"""Fixtures of the e2e suite: a real Kubernetes cluster per session, a namespace per test.

``cluster`` (session): if ``TABLESYNC_KUBECONFIG`` is set, the cluster it points at is used
and left running (a local one from ``make cluster-up``, or kind via ``make e2e-kind``).
Otherwise this session starts its own local cluster (``tests/e2e/cluster/localcluster``) in
``<repo>/.e2e/clusters/session-<pid>/`` and stops it at the end, also when tests failed;
clusters left by killed sessions are stopped first. See ``tests/e2e/README.md``.

``namespace`` (function): a fresh namespace, deleted after the test.
``e2e_postgres`` (session): Postgres reachable from the tests and from pods.
``preinstalled_operator_stopped`` (session): on a cluster with the chart preinstalled (kind),
its cluster-wide operator is scaled to zero for the rest of the session, so that the operators
the tests start (each watching namespaces no other one watches) are the only ones acting.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

from localcluster.controlplane import ClusterError, down, reap_stale, up
from localcluster.settings import REPO_ROOT
from localcluster.testing import Cluster, PostgresAccess
from tests.support.services import PostgresServer

SESSIONS_DIR = REPO_ROOT / ".e2e" / "clusters"
KEEP_STOPPED_SESSIONS = 3


def _prune_old_sessions() -> None:
    """Keep the logs of the last few stopped sessions, delete older ones."""
    stopped = sorted((p for p in SESSIONS_DIR.glob("session-*")
                      if not (p / "state.json").exists()), key=lambda p: p.stat().st_mtime)
    for old in stopped[:-KEEP_STOPPED_SESSIONS]:
        with open("/proc/self/mounts") as mounts:
            if any(line.split()[1].startswith(f"{old}/") for line in mounts):
                continue
        shutil.rmtree(old, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The cluster under test (see the module docstring)."""
    kubeconfig = os.environ.get("TABLESYNC_KUBECONFIG")
    if kubeconfig:
        handle = Cluster.connect(Path(kubeconfig))
        yield handle
        handle.cleanup_namespaces()
        return
    SESSIONS_DIR.mkdir(parents=True, exist_ok=True)
    reap_stale(SESSIONS_DIR)
    _prune_old_sessions()
    state_dir = SESSIONS_DIR / f"session-{os.getpid()}"
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # A CI timeout's SIGTERM then unwinds like Ctrl-C: the teardown below still runs.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        state = up(state_dir, owner_pid=os.getpid())
    except ClusterError as err:
        pytest.fail(f"could not start the local cluster: {err}", pytrace=False)
    try:
        yield Cluster.connect(Path(state.kubeconfig))
    finally:
        # A second Ctrl-C / SIGTERM must not cut the teardown short and leave processes behind.
        handlers = {sig: signal.signal(sig, signal.SIG_IGN)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            failed = down(state_dir)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if failed:
            raise ClusterError(f"could not stop {', '.join(failed)}; see {state_dir}")


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new namespace named after the test; deleted (without waiting) afterwards."""
    prefix = request.node.name.replace("_", "-").lower()
    prefix = "".join(c for c in prefix if c.isalnum() or c == "-")[:40].strip("-") or "e2e"
    name = cluster.create_namespace(prefix)
    yield name
    cluster.delete_namespace(name)


@pytest.fixture(scope="session")
def e2e_postgres(request: pytest.FixtureRequest, cluster: Cluster) -> PostgresAccess:
    """Postgres for e2e tests: the session's local server when pods are local processes,
    the in-cluster one ``tests/e2e/kind/run.sh`` installs otherwise."""
    if cluster.local:
        server: PostgresServer = request.getfixturevalue("postgres")
        return PostgresAccess(server.host, server.port, server.host, server.port,
                              server.user, server.password)
    return PostgresAccess.from_env()


def _scale_release(cluster: Cluster, replicas: int) -> None:
    release = cluster.preinstalled_release
    if release is None:
        return
    namespace, name = release
    cluster.kubectl("scale", "deployment", "-n", namespace, "-l",
                    f"app.kubernetes.io/instance={name}", f"--replicas={replicas}", check=False)


@pytest.fixture(scope="session")
def preinstalled_operator_stopped(cluster: Cluster) -> Iterator[None]:
    """See the module docstring; scaled back to one replica at the end of the session."""
    _scale_release(cluster, 0)
    try:
        yield
    finally:
        _scale_release(cluster, 1)
