"""CronJobs through the real cronjob, job and garbage-collector controllers, and the
trigger-now helper (``kubectl create job --from=cronjob/NAME`` semantics)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from localcluster.cronjobs import INSTANTIATE_ANNOTATION
from localcluster.testing import Cluster, wait_for

pytestmark = pytest.mark.e2e
SHELL_IMAGE = "busybox:1.36"


def cronjob(name: str, schedule: str, script: str, suspend: bool = False) -> dict[str, Any]:
    pod_name = {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    return {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
        "spec": {
            "schedule": schedule, "suspend": suspend, "concurrencyPolicy": "Forbid",
            "jobTemplate": {
                "metadata": {"labels": {"app": name}, "annotations": {"from-template": "yes"}},
                "spec": {"backoffLimit": 0, "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "run", "image": SHELL_IMAGE,
                                    "command": ["sh", "-c", script], "env": [pod_name]}],
                }}},
            },
        },
    }


def test_every_minute_cronjob_produces_a_succeeded_pod(cluster: Cluster, namespace: str) -> None:
    began = time.monotonic()
    cluster.apply(cronjob("tick", "* * * * *", "echo tick from $(POD)"), namespace)

    def succeeded_pod() -> dict[str, Any] | None:
        pods = cluster.core.list_namespaced_pod(namespace).items
        done = [p for p in pods if p.status.phase == "Succeeded"]
        return cluster.api_client.sanitize_for_serialization(done[0]) if done else None

    pod = wait_for(succeeded_pod, 150, "a Succeeded pod of CronJob tick")
    assert time.monotonic() - began <= 150
    owner = pod["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Job"
    job = cluster.wait_job_finished(namespace, owner["name"], timeout_seconds=30)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert INSTANTIATE_ANNOTATION not in job["metadata"].get("annotations", {})
    assert any(c["type"] == "Complete" for c in job["status"]["conditions"])
    name = pod["metadata"]["name"]
    assert cluster.container_log(namespace, name) == f"tick from {name}\n"
    wait_for(lambda: cluster.batch.read_namespaced_cron_job("tick", namespace)
             .status.last_successful_time, 30, "CronJob status.lastSuccessfulTime")


def test_trigger_cronjob_creates_a_manual_job_owned_by_the_cronjob(
        cluster: Cluster, namespace: str) -> None:
    cluster.apply(cronjob("nightly", "0 3 * * *", "echo manual run", suspend=True), namespace)

    job = cluster.trigger_cronjob(namespace, "nightly", job_name="nightly-now")

    meta = job["metadata"]
    assert meta["name"] == "nightly-now"
    assert meta["annotations"][INSTANTIATE_ANNOTATION] == "manual"
    assert meta["annotations"]["from-template"] == "yes"
    assert meta["labels"]["app"] == "nightly"
    cron = cluster.batch.read_namespaced_cron_job("nightly", namespace)
    assert meta["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "CronJob",
                                        "name": "nightly", "uid": cron.metadata.uid,
                                        "controller": True}]
    finished = cluster.wait_job_finished(namespace, "nightly-now", timeout_seconds=60)
    assert finished["status"]["succeeded"] == 1
    pod = cluster.job_pods(namespace, "nightly-now")[0]
    assert cluster.container_log(namespace, pod["metadata"]["name"]) == "manual run\n"

    # The owner reference is real: deleting the CronJob lets the garbage collector take the Job.
    cluster.batch.delete_namespaced_cron_job("nightly", namespace,
                                             propagation_policy="Background")
    wait_for(lambda: not cluster.batch.list_namespaced_job(namespace).items, 60,
             "the garbage collector to delete the triggered Job")
