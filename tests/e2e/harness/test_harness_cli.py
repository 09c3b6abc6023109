"""``python -m localcluster`` as the Makefile calls it: up (fast, idempotent), status,
trigger-cronjob, logs, and down leaving nothing running. Starts its own second cluster, so it
runs on the process-based harness only (tests/e2e/kind/run.sh leaves this file out)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localcluster.settings import PACKAGE_PARENT, REPO_ROOT
from localcluster.state import ClusterState
from localcluster.testing import Cluster, wait_for

pytestmark = pytest.mark.e2e


def _cli(state: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT)}
    env.pop("TABLESYNC_CLUSTER_STATE", None)
    return subprocess.run(
        [sys.executable, "-m", "localcluster", "--state", str(state), *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def test_cli_up_status_trigger_down_leaves_nothing_running(tmp_path: Path) -> None:
    state_dir = tmp_path / "cli-cluster"
    began = time.monotonic()
    started = _cli(state_dir, "up")
    startup_seconds = time.monotonic() - began
    try:
        assert started.returncode == 0, started.stderr
        kubeconfig = started.stdout.strip().splitlines()[-1]
        assert kubeconfig == str(state_dir / "kubeconfig")
        assert "export KUBECONFIG=" in started.stdout
        assert startup_seconds < 30, f"cluster-up took {startup_seconds:.1f} s"
        assert _cli(state_dir, "status").returncode == 0
        again = _cli(state_dir, "up")  # idempotent: reports the running cluster
        assert again.returncode == 0 and again.stdout.strip().endswith(kubeconfig)

        cli_cluster = Cluster.connect(Path(kubeconfig))
        namespace = cli_cluster.create_namespace("cli")
        cli_cluster.apply({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "later"},
            "spec": {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{
                    "name": "main", "image": "busybox",
                    "command": ["sh", "-c", "echo pid=$$$$; exec sleep 600"]}]}}}}},
        }, namespace)
        triggered = _cli(state_dir, "trigger-cronjob", "-n", namespace, "later")
        assert triggered.returncode == 0, triggered.stderr
        job_name = triggered.stdout.strip()
        assert job_name.startswith("later-manual-")
        pod = wait_for(lambda: [p for p in cli_cluster.job_pods(namespace, job_name)
                                if p.get("status", {}).get("phase") == "Running"], 30,
                       "the triggered Job's pod to run")[0]
        logs = _cli(state_dir, "logs", f"{namespace}/{pod['metadata']['name']}")
        assert logs.stdout.startswith("pid="), logs
        container_pid = int(logs.stdout.split("=")[1])
        state = ClusterState.load(state_dir)
    finally:
        stopped = _cli(state_dir, "down")

    assert stopped.returncode == 0, stopped.stderr
    names = {record.name for record in state.processes}
    assert names == {"etcd", "kube-apiserver", "kube-controller-manager", "runner", "minio",
                     "supervisor"}
    # gone, not even zombies: the supervisor reaps what `down` stopped, then exits itself
    wait_for(lambda: not [r for r in state.processes if os.path.exists(f"/proc/{r.pid}")],
             10, "every cluster process to be gone from /proc")
    assert not os.path.exists(f"/proc/{container_pid}")
    assert _processes_mentioning(str(state_dir)) == []
    assert _cli(state_dir, "status").returncode == 3


def test_failed_up_stops_what_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from localcluster.controlplane import ClusterError, up
    from tests.support.services import cluster_bin_dir

    real = cluster_bin_dir()
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("etcd", "kube-controller-manager", "minio"):
        (fake / name).symlink_to(real / name)
    broken = fake / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'apiserver refuses to start' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("TABLESYNC_CLUSTER_BIN", str(fake))
    state_dir = tmp_path / "broken-cluster"

    with pytest.raises(ClusterError) as failure:
        up(state_dir)

    assert "kube-apiserver exited with 3" in str(failure.value)
    assert "apiserver refuses to start" in str(failure.value)
    started = ClusterState.load_any(state_dir)
    assert {r.name for r in started.processes} >= {"etcd", "kube-apiserver"}
    wait_for(lambda: not [r for r in started.processes if r.alive()], 10,
             "every process of the failed start to be stopped")
    assert _processes_mentioning(str(state_dir)) == []
