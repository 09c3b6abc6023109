"""manifests: the CronJob and manual Job a TableSync becomes (pure builders)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tablesync_operator import manifests
from tablesync_operator.spec import parse

from .samples import SETTINGS, TABLESYNC, UID, tablesync


def cronjob(body: dict[str, Any] | None = None, approve: str | None = None) -> dict[str, Any]:
    return manifests.build_cronjob(parse(body or TABLESYNC), SETTINGS, approve)


def pod_spec(cj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def env_of(cj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in pod_spec(cj)["containers"][0]["env"]}


def test_cronjob_is_owned_forbids_overlap_and_follows_the_schedule() -> None:
    cj = cronjob()
    assert cj["apiVersion"] == "batch/v1" and cj["kind"] == "CronJob"
    assert cj["metadata"]["name"] == "product-prices"
    assert cj["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "tablesync.dev/v1alpha1",
            "kind": "TableSync",
            "name": "product-prices",
            "uid": UID,
            "controller": True,
        }
    ]
    spec = cj["spec"]
    assert spec["schedule"] == "*/30 * * * *"
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["suspend"] is False
    assert spec["startingDeadlineSeconds"] == 300
    assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3


def test_a_schedule_without_a_time_zone_is_read_in_utc() -> None:
    """Unset, the CronJob controller would read it in kube-controller-manager's zone, where
    the operator counts missed runs in UTC (as the CRD documents)."""
    body = tablesync()
    del body["spec"]["timeZone"]
    assert cronjob(body)["spec"]["timeZone"] == "Etc/UTC"
    assert cronjob(tablesync(timeZone="Europe/Berlin"))["spec"]["timeZone"] == "Europe/Berlin"


def test_suspend_follows_the_spec() -> None:
    assert cronjob(tablesync(suspend=True))["spec"]["suspend"] is True


def test_job_deadline_retries_and_pod_failure_policy() -> None:
    job = cronjob()["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == 3600
    assert job["backoffLimit"] == 2
    rules = job["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "tablesync", "operator": "In", "values": [2, 3]},
    }
    assert rules[1]["action"] == "Ignore"
    assert rules[1]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    custom = cronjob(tablesync(job={"activeDeadlineSeconds": 120, "backoffLimit": 0}))
    assert custom["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 120
    assert custom["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0


def test_pod_is_hardened_with_a_scratch_volume() -> None:
    spec = pod_spec(cronjob())
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = spec["containers"][0]
    assert container["args"] == ["run"]
    assert container["image"] == SETTINGS.job_image
    assert container["terminationMessagePolicy"] == "File"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/scratch"}]
    assert spec["volumes"] == [{"name": "scratch", "emptyDir": {}}]
    env = env_of(cronjob())
    assert env["TABLESYNC_WORK_DIR"]["value"] == "/scratch"
    assert env["TMPDIR"]["value"] == "/scratch"


@pytest.mark.parametrize(
    ("job", "expected"),
    [({}, None),
     ({"memoryLimit": "3GB"}, "3GB"),
     ({"memoryLimit": "3GB", "resources": {"limits": {"memory": "1Gi"}}}, "3GB"),
     ({"resources": {"limits": {"memory": "1Gi"}}}, "512MiB"),
     ({"resources": {"limits": {"memory": "1.5G"}}}, "715MiB"),
     ({"resources": {"limits": {"memory": "8Gi"}}}, None),
     ({"resources": {"requests": {"memory": "256Mi"}}}, None)],
    ids=["default", "set", "set-with-a-limit", "1Gi", "1.5G", "8Gi", "request-only"])
def test_duckdbs_memory_limit_leaves_room_under_the_containers(
        job: dict[str, Any], expected: str | None) -> None:
    """DuckDB's 1GB default in a container limited to 1Gi: the diff was OOMKilled where it
    should have spilled. Unless the spec sets memoryLimit, DuckDB takes at most half of the
    container's limit."""
    env = env_of(cronjob(tablesync(job=job)))
    assert env.get("TABLESYNC_MEMORY_LIMIT", {}).get("value") == expected


def test_secrets_reach_the_pod_only_as_secret_key_refs() -> None:
    env = env_of(cronjob())
    assert env["TABLESYNC_SOURCE_URI"]["valueFrom"] == {
        "secretKeyRef": {"name": "replica", "key": "uri"}
    }
    assert env["TABLESYNC_DESTINATION_URI"]["valueFrom"] == {
        "secretKeyRef": {"name": "warehouse", "key": "uri"}
    }
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3", "key": "AWS_ACCESS_KEY_ID"}
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    for name in ("TABLESYNC_SOURCE_URI", "TABLESYNC_DESTINATION_URI", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[name]
    pod = pod_spec(cronjob())
    assert "envFrom" not in pod["containers"][0]
    assert all("secret" not in v for v in pod["volumes"])


def test_no_storage_credentials_means_no_aws_variables() -> None:
    body = tablesync()
    del body["spec"]["storage"]["credentialsSecretRef"]
    env = env_of(cronjob(body))
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env


def test_spec_and_run_id_reach_the_job() -> None:
    env = env_of(cronjob())
    manifest = json.loads(env["TABLESYNC_SPEC"]["value"])
    assert manifest == {
        "apiVersion": "tablesync.dev/v1alpha1",
        "kind": "TableSync",
        "metadata": {"name": "product-prices", "namespace": "data"},
        "spec": TABLESYNC["spec"],
    }
    assert env["TABLESYNC_RUN_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}
    }


def test_labels_on_cronjob_jobs_and_pods() -> None:
    cj = cronjob()
    for labels in (
        cj["metadata"]["labels"],
        cj["spec"]["jobTemplate"]["metadata"]["labels"],
        cj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
    ):
        assert labels["app.kubernetes.io/managed-by"] == "tablesync"
        assert labels["tablesync.dev/name"] == "product-prices"
        assert labels["tablesync.dev/uid"] == UID


def test_approval_is_in_the_template_only_while_pending() -> None:
    assert "TABLESYNC_APPROVE_DELTA" not in env_of(cronjob())
    env = env_of(cronjob(approve="A..B"))
    assert env["TABLESYNC_APPROVE_DELTA"]["value"] == "A..B"


def test_template_hash_is_stable_and_tracks_changes() -> None:
    first, again = cronjob(), cronjob()
    key = "tablesync.dev/template-hash"
    assert first["metadata"]["annotations"][key] == again["metadata"]["annotations"][key]
    changed = cronjob(tablesync(schedule="*/5 * * * *"))
    assert changed["metadata"]["annotations"][key] != first["metadata"]["annotations"][key]
    approved = cronjob(approve="A..B")
    assert approved["metadata"]["annotations"][key] != first["metadata"]["annotations"][key]


def test_service_account_from_settings_or_spec() -> None:
    settings = dataclasses.replace(SETTINGS, job_service_account="tablesync-job")
    spec = manifests.build_cronjob(parse(TABLESYNC), settings, None)
    assert pod_spec(spec)["serviceAccountName"] == "tablesync-job"
    body = tablesync(job={"serviceAccountName": "custom"})
    assert (
        pod_spec(manifests.build_cronjob(parse(body), settings, None))["serviceAccountName"]
        == "custom"
    )
    assert "serviceAccountName" not in pod_spec(cronjob())


def test_manual_job_is_owned_by_the_cronjob_and_named_by_the_request() -> None:
    ts = parse(TABLESYNC)

    def name(requested_at: str, previous: str | None) -> str:
        built = manifests.build_manual_job(ts, SETTINGS, "cj-uid", requested_at, previous, None)
        return str(built["metadata"]["name"])

    job = manifests.build_manual_job(ts, SETTINGS, "cj-uid", "2026-11-21T11:00:00Z", None, None)
    assert job["metadata"]["name"] == name("2026-11-21T11:00:00Z", None)  # a retry finds it
    assert name("2026-11-21T12:00:00Z", None) != job["metadata"]["name"]
    # the same value after another request is another run
    assert name("2026-11-21T11:00:00Z", "product-prices-m1234abcd") != job["metadata"]["name"]
    assert len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["ownerReferences"][0] == {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": "product-prices",
        "uid": "cj-uid",
        "controller": True,
    }
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["spec"] == cronjob()["spec"]["jobTemplate"]["spec"]


def test_event_shape() -> None:
    from .samples import NOW

    event = manifests.build_event(
        namespace="data",
        name="product-prices",
        uid=UID,
        event_type="Warning",
        reason="GuardTripped",
        message="x" * 2000,
        now=NOW,
        instance="me",
    )
    assert event["involvedObject"]["kind"] == "TableSync"
    assert event["involvedObject"]["uid"] == UID
    assert event["type"] == "Warning" and event["reason"] == "GuardTripped"
    assert len(event["message"]) == 1024
    assert event["metadata"]["generateName"] == "product-prices."
