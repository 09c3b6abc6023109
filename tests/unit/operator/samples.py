"""Sample objects for the operator's unit tests: a TableSync, Jobs, pods and run reports."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from tablesync_operator.settings import Settings

NOW = datetime(2026, 11, 21, 11, 0, 0, tzinfo=UTC)
UID = "0b9f1c2e-1111-4222-8333-444455556666"
SETTINGS = Settings(identity="test-replica", leader_election=False)

TABLESYNC: dict[str, Any] = {
    "apiVersion": "tablesync.dev/v1alpha1",
    "kind": "TableSync",
    "metadata": {
        "name": "product-prices",
        "namespace": "data",
        "uid": UID,
        "generation": 3,
        "resourceVersion": "100",
        "creationTimestamp": "2026-11-20T09:00:00Z",
        "annotations": {},
    },
    "spec": {
        "schedule": "*/30 * * * *",
        "timeZone": "Etc/UTC",
        "suspend": False,
        "source": {
            "uriSecretRef": {"name": "replica", "key": "uri"},
            "table": "public.prices",
            "primaryKey": ["product_id"],
            "versionColumn": "updated_at",
            "compare": "version",
        },
        "storage": {
            "url": "s3://tablesync/prices",
            "endpoint": "http://minio.minio:9000",
            "credentialsSecretRef": {"name": "s3"},
            "keepSnapshots": 3,
        },
        "destination": {
            "uriSecretRef": {"name": "warehouse", "key": "uri"},
            "table": "public.prices",
            "deletes": "apply",
        },
        "guards": {"maxDeleteFraction": 0.05, "maxShrinkFraction": 0.5},
    },
}


def tablesync(**spec_overrides: Any) -> dict[str, Any]:
    """A deep copy of TABLESYNC with top-level spec fields replaced."""
    body = copy.deepcopy(TABLESYNC)
    body["spec"].update(spec_overrides)
    return body


REPORT: dict[str, Any] = {
    "result": "Succeeded",
    "reason": "Applied",
    "message": "applied 1000 changes (300 drift)",
    "runId": "product-prices-29400000",
    "snapshotId": "20261121T110000Z-ab12",
    "fromSnapshotId": "20261121T103000Z-cd34",
    "deltaId": "20261121T103000Z-cd34..20261121T110000Z-ab12",
    "capturedAt": "2026-11-21T10:59:58.123456+00:00",
    "bootstrap": False,
    "rows": 100000,
    "delta": {"insert": 10, "update": 980, "delete": 10},
    "apply": {
        "inserted": 10,
        "updated": 280,
        "deleted": 10,
        "alreadyCurrent": 650,
        "staleSkipped": 50,
    },
    "phaseSeconds": {"dump": 1.2, "diff": 0.3, "apply": 0.8},
    "startedAt": "2026-11-21T10:59:58+00:00",
    "finishedAt": "2026-11-21T11:00:01+00:00",
    "error": None,
}


def report(**overrides: Any) -> dict[str, Any]:
    out = copy.deepcopy(REPORT)
    out.update(overrides)
    return out


def job(
    name: str = "product-prices-29400000",
    *,
    succeeded: bool = True,
    start: str = "2026-11-21T10:59:50Z",
    end: str = "2026-11-21T11:00:05Z",
    failed_reason: str = "BackoffLimitExceeded",
    failed_message: str = "Job has reached the specified backoff limit",
    scheduled: str | None = "2026-11-21T11:00:00Z",
    finished: bool = True,
) -> dict[str, Any]:
    """A batch/v1 Job as the API returns it, finished unless ``finished`` is False."""
    annotations = {}
    if scheduled:
        annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"] = scheduled
    status: dict[str, Any] = {"startTime": start}
    if finished and succeeded:
        status["completionTime"] = end
        status["succeeded"] = 1
        status["conditions"] = [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": end},
            {"type": "Complete", "status": "True", "lastTransitionTime": end},
        ]
    elif finished:
        status["failed"] = 1
        status["conditions"] = [
            {
                "type": "Failed",
                "status": "True",
                "reason": failed_reason,
                "message": failed_message,
                "lastTransitionTime": end,
            }
        ]
    else:
        status["active"] = 1
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "data",
            "uid": f"uid-{name}",
            "annotations": annotations,
            "labels": {"tablesync.dev/name": "product-prices"},
        },
        "spec": {"activeDeadlineSeconds": 3600},
        "status": status,
    }


def pod(
    *,
    message: str | None,
    exit_code: int = 0,
    reason: str = "Completed",
    phase: str | None = None,
    finished_at: str = "2026-11-21T11:00:04Z",
) -> dict[str, Any]:
    """A pod whose tablesync container terminated with ``message``."""
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason,
        "finishedAt": finished_at,
    }
    if message is not None:
        terminated["message"] = message
    return {
        "metadata": {"name": "p"},
        "status": {
            "phase": phase or ("Succeeded" if exit_code == 0 else "Failed"),
            "containerStatuses": [{"name": "tablesync", "state": {"terminated": terminated}}],
        },
    }


def pod_with_report(rep: dict[str, Any], exit_code: int = 0) -> dict[str, Any]:
    return pod(
        message=json.dumps(rep),
        exit_code=exit_code,
        reason="Completed" if exit_code == 0 else "Error",
    )
