"""activeDeadlineSeconds and pod deletion stop the container's processes."""

from __future__ import annotations

import os
import re
import time

import pytest
from kubernetes.client.exceptions import ApiException

from localcluster.testing import Cluster, wait_for

pytestmark = pytest.mark.e2e
SHELL_IMAGE = "busybox:1.36"
# `$$$$` is `$$` after Kubernetes' $(VAR) expansion: the shell's pid.
TRAPS_TERM = ("trap 'echo got TERM; exit 0' TERM; echo pid=$$$$; "
              "while true; do sleep 0.1; done")
IGNORES_TERM = "trap '' TERM; echo pid=$$$$; while true; do sleep 0.1; done"


def logged_pid(cluster: Cluster, namespace: str, pod: str) -> int:
    def find() -> int | None:
        match = re.search(r"pid=(\d+)", cluster.container_log(namespace, pod))
        return int(match.group(1)) if match else None

    return wait_for(find, 30, f"{namespace}/{pod} to log its pid")


def assert_process_gone(cluster: Cluster, pid: int) -> None:
    """On the local cluster the container is a host process: it must not exist any more."""
    if cluster.local:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, f"process {pid} to be gone")


def pod_gone(cluster: Cluster, namespace: str, name: str) -> bool:
    try:
        cluster.core.read_namespaced_pod(name, namespace)
    except ApiException as err:
        return bool(err.status == 404)
    return False


def test_active_deadline_seconds_kills_the_pod(cluster: Cluster, namespace: str) -> None:
    cluster.run_pod(namespace, "slow", SHELL_IMAGE, ["sh", "-c", "echo pid=$$$$; exec sleep 300"],
                    activeDeadlineSeconds=3)
    pid = logged_pid(cluster, namespace, "slow")
    began = time.monotonic()

    done = cluster.wait_pod_phase(namespace, "slow", timeout_seconds=30)

    assert time.monotonic() - began < 15
    assert done["status"]["phase"] == "Failed"
    assert done["status"]["reason"] == "DeadlineExceeded"
    state = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 128 + 15  # SIGTERM
    assert_process_gone(cluster, pid)


def test_job_active_deadline_fails_the_job_and_kills_its_pod(
        cluster: Cluster, namespace: str) -> None:
    cluster.apply({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "overrun"},
        "spec": {"activeDeadlineSeconds": 4, "backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": SHELL_IMAGE,
                            "command": ["sh", "-c", TRAPS_TERM]}]}}},
    }, namespace)
    pod = wait_for(lambda: cluster.job_pods(namespace, "overrun"), 30, "the Job's pod")[0]
    name = pod["metadata"]["name"]
    pid = logged_pid(cluster, namespace, name)

    job = cluster.wait_job_finished(namespace, "overrun", timeout_seconds=60)

    reasons = [c.get("reason") for c in job["status"]["conditions"] if c["type"] == "Failed"]
    assert reasons == ["DeadlineExceeded"]
    wait_for(lambda: pod_gone(cluster, namespace, name), 30, "the Job controller's pod deletion")
    assert "got TERM" in cluster.container_log(namespace, name)
    assert_process_gone(cluster, pid)


def test_pod_deletion_sends_sigterm(cluster: Cluster, namespace: str) -> None:
    cluster.run_pod(namespace, "graceful", SHELL_IMAGE, ["sh", "-c", TRAPS_TERM])
    pid = logged_pid(cluster, namespace, "graceful")
    began = time.monotonic()

    cluster.core.delete_namespaced_pod("graceful", namespace)
    wait_for(lambda: pod_gone(cluster, namespace, "graceful"), 30, "the pod to be removed")

    assert time.monotonic() - began < 10
    assert cluster.container_log(namespace, "graceful").endswith("got TERM\n")
    assert_process_gone(cluster, pid)


def test_pod_deletion_sigkills_after_the_grace_period(cluster: Cluster, namespace: str) -> None:
    cluster.run_pod(namespace, "stubborn", SHELL_IMAGE, ["sh", "-c", IGNORES_TERM],
                    terminationGracePeriodSeconds=2)
    pid = logged_pid(cluster, namespace, "stubborn")
    began = time.monotonic()

    cluster.core.delete_namespaced_pod("stubborn", namespace)
    wait_for(lambda: pod_gone(cluster, namespace, "stubborn"), 30, "the pod to be removed")

    assert 1.5 <= time.monotonic() - began < 15
    assert_process_gone(cluster, pid)
