"""Pure builders of the Kubernetes objects the operator owns: CronJob, manual Job, Event.

Called by ``reconcile``; nothing here does I/O or reads the clock except through arguments.
The pod contract (arguments, environment, exit codes, termination message) is
job-image/README.md; the CronJob shape is issue 4 and DESIGN.md section 4.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from .names import (
    ANNOTATION_APPLIED_GENERATION,
    ANNOTATION_REQUESTED_AT,
    ANNOTATION_TEMPLATE_HASH,
    API_VERSION,
    CONTAINER_NAME,
    EVENT_COMPONENT,
    JOB_NAME_LABEL,
    KIND,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_TABLESYNC,
    LABEL_TABLESYNC_UID,
    MANAGED_BY,
)
from .settings import Settings
from .spec import JobSpec, TableSync

SCRATCH_DIR = "/scratch"
TERMINATION_LOG = "/dev/termination-log"
# job-image/README.md exit codes: 2 = fix the input, 3 = a guard refused the delta.
# Retrying either cannot help, so the podFailurePolicy fails the Job at once.
EXIT_INPUT = 2
EXIT_GUARD = 3
MESSAGE_LIMIT = 1024  # Event.message is truncated by convention at 1 KiB


def cronjob_name(ts: TableSync) -> str:
    """The CronJob has the TableSync's name (admission keeps names to 52 characters)."""
    return ts.name


def manual_job_name(ts: TableSync, requested_at: str, previous_job: str | None) -> str:
    """Name of the Job started for one value of ``run-requested-at``, set after the request
    whose Job was ``previous_job`` (``status.runRequest.jobName``; None before any).

    Deterministic, so that a retried request finds the Job it already created (409) instead
    of starting a second run: ``status.runRequest`` moves on only with the status write that
    records this Job. The previous Job and the TableSync's uid are in the hash, so a value
    set again later (t1, t2, t1), or by a TableSync created again under the same name, gets
    a Job of its own instead of the 409 of a Job still kept in the CronJob's history. At most
    52 + 10 characters (Job names and the ``job-name`` label allow 63).
    """
    seed = "\n".join((ts.uid, previous_job or "", requested_at))
    digest = hashlib.sha256(seed.encode()).hexdigest()[:8]
    return f"{cronjob_name(ts)}-m{digest}"


def labels(ts: TableSync) -> dict[str, str]:
    """Labels on the CronJob, its Jobs and their pods."""
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_NAME: "tablesync",
        LABEL_COMPONENT: "sync-job",
        LABEL_TABLESYNC: ts.name,
        LABEL_TABLESYNC_UID: ts.uid,
    }


def owner_reference(ts: TableSync) -> dict[str, Any]:
    """Controller owner reference to the TableSync: deleting it garbage-collects the CronJob.

    Without ``blockOwnerDeletion``: setting it needs ``update`` on ``tablesyncs/finalizers``
    where the OwnerReferencesPermissionEnforcement admission plugin runs, and it only matters
    for foreground deletion (operator/RBAC.md keeps the operator's rights minimal).
    """
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ts.name,
        "uid": ts.uid,
        "controller": True,
    }


def spec_manifest(ts: TableSync) -> str:
    """The TableSync manifest handed to the job in ``TABLESYNC_SPEC``: compact JSON.

    Holds the spec only (with its API defaults), plus name and namespace; no status, no
    annotations, and no secret values (the spec holds references only).
    """
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": ts.name, "namespace": ts.namespace},
        "spec": ts.raw_spec,
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"))


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def build_env(ts: TableSync, approve_delta: str | None) -> list[dict[str, Any]]:
    """Environment of the job container (job-image/README.md, "Environment").

    Secrets reach the pod only as ``secretKeyRef`` variables. ``TABLESYNC_APPROVE_DELTA`` is
    present only while an approval is pending. ``TABLESYNC_RUN_ID`` is the Job's name.
    """
    spec = ts.spec
    env: list[dict[str, Any]] = [
        {"name": "TABLESYNC_SPEC", "value": spec_manifest(ts)},
        {
            "name": "TABLESYNC_RUN_ID",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}},
        },
        _secret_env(
            "TABLESYNC_SOURCE_URI", spec.source.uri_secret_ref.name, spec.source.uri_secret_ref.key
        ),
        _secret_env(
            "TABLESYNC_DESTINATION_URI",
            spec.destination.uri_secret_ref.name,
            spec.destination.uri_secret_ref.key,
        ),
    ]
    if spec.storage.credentials_secret:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append(_secret_env(key, spec.storage.credentials_secret, key))
    env += [
        {"name": "TABLESYNC_WORK_DIR", "value": SCRATCH_DIR},
        {"name": "TMPDIR", "value": SCRATCH_DIR},
        {"name": "HOME", "value": SCRATCH_DIR},
        {"name": "TABLESYNC_TERMINATION_LOG", "value": TERMINATION_LOG},
    ]
    memory_limit = duckdb_memory_limit(spec.job)
    if memory_limit:
        env.append({"name": "TABLESYNC_MEMORY_LIMIT", "value": memory_limit})
    if approve_delta:
        env.append({"name": "TABLESYNC_APPROVE_DELTA", "value": approve_delta})
    return env


# The job's default DuckDB memory_limit (job-image: TABLESYNC_MEMORY_LIMIT), in bytes, and the
# share of the container's memory limit it takes at most when the spec sets none: DuckDB's
# limit covers its buffers only, and the run's Arrow batches, Parquet writers and Python
# itself need the rest.
DEFAULT_MEMORY_LIMIT_BYTES = 10**9
MEMORY_LIMIT_SHARE = 0.5


def duckdb_memory_limit(job: JobSpec) -> str | None:
    """DuckDB's ``memory_limit`` for the run (``TABLESYNC_MEMORY_LIMIT``): ``spec.job.memoryLimit``
    when set; else, with ``spec.job.resources.limits.memory``, the job's default (1GB) or
    half of that limit if smaller, in MiB; else None (the job's default).

    Without this a container limit of 1Gi met DuckDB's 1GB default: a diff that should have
    spilled to the scratch volume was OOMKilled instead.
    """
    if job.memory_limit:
        return job.memory_limit
    limit = (job.resources.get("limits") or {}).get("memory")
    if limit is None:
        return None
    share = int(parse_quantity(limit) * Decimal(MEMORY_LIMIT_SHARE))
    if share >= DEFAULT_MEMORY_LIMIT_BYTES:
        return None
    return f"{max(share // 2**20, 1)}MiB"


def build_job_spec(ts: TableSync, settings: Settings, approve_delta: str | None) -> dict[str, Any]:
    """``JobSpec`` of one run: deadline, retries, pod failure policy and a hardened pod."""
    spec = ts.spec
    uid = settings.job_user_id
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.job.image or settings.job_image,
        "imagePullPolicy": settings.job_image_pull_policy,
        "args": ["run"],
        "env": build_env(ts, approve_delta),
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH_DIR}],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if spec.job.resources:
        container["resources"] = {k: dict(v) for k, v in spec.job.resources.items()}
    scratch: dict[str, Any] = {}
    if spec.job.scratch_size_limit:
        scratch["sizeLimit"] = spec.job.scratch_size_limit
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": scratch}],
    }
    service_account = spec.job.service_account_name or settings.job_service_account
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    return {
        "activeDeadlineSeconds": (
            spec.job.active_deadline_seconds or settings.default_active_deadline_seconds
        ),
        "backoffLimit": (
            spec.job.backoff_limit
            if spec.job.backoff_limit is not None
            else settings.default_backoff_limit
        ),
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER_NAME,
                        "operator": "In",
                        "values": [EXIT_INPUT, EXIT_GUARD],
                    },
                },
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                },
            ]
        },
        "template": {"metadata": {"labels": labels(ts)}, "spec": pod_spec},
    }


def build_cronjob(ts: TableSync, settings: Settings, approve_delta: str | None) -> dict[str, Any]:
    """The one CronJob of a TableSync (batch/v1), owned by it.

    ``concurrencyPolicy: Forbid`` (DESIGN.md section 4); ``suspend`` follows the spec. The
    ``tablesync.dev/template-hash`` annotation is a hash of everything else, so the
    reconciler can tell an up-to-date CronJob from a stale one without field-by-field diffs.
    """
    spec = ts.spec
    cron_spec: dict[str, Any] = {
        "schedule": spec.schedule,
        "suspend": spec.suspend,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": spec.starting_deadline(),
        "successfulJobsHistoryLimit": settings.successful_jobs_history_limit,
        "failedJobsHistoryLimit": settings.failed_jobs_history_limit,
        "jobTemplate": {
            "metadata": {"labels": labels(ts)},
            "spec": build_job_spec(ts, settings, approve_delta),
        },
    }
    # Always set: unset, the CronJob controller reads the schedule in kube-controller-manager's
    # local zone, while the CRD documents UTC and the operator counts missed runs in UTC.
    cron_spec["timeZone"] = spec.time_zone or "Etc/UTC"
    cronjob: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": cronjob_name(ts),
            "namespace": ts.namespace,
            "labels": labels(ts),
            "annotations": {},
            "ownerReferences": [owner_reference(ts)],
        },
        "spec": cron_spec,
    }
    cronjob["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH] = template_hash(cronjob)
    return cronjob


def template_hash(obj: Mapping[str, Any]) -> str:
    """A short, stable hash of an object, ignoring its own template-hash and
    applied-generation annotations."""
    clean = copy.deepcopy(dict(obj))
    annotations = clean.get("metadata", {}).get("annotations", {})
    annotations.pop(ANNOTATION_TEMPLATE_HASH, None)
    annotations.pop(ANNOTATION_APPLIED_GENERATION, None)
    text = json.dumps(clean, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_applied_generation(cronjob: Mapping[str, Any], generation: int) -> dict[str, Any]:
    """``cronjob`` (as ``build_cronjob`` made it) with the ``tablesync.dev/applied-generation``
    annotation: the CronJob's ``metadata.generation`` once this manifest is applied. The
    annotation is metadata, so writing it does not bump the generation (nor the hash)."""
    out = copy.deepcopy(dict(cronjob))
    out["metadata"]["annotations"][ANNOTATION_APPLIED_GENERATION] = str(generation)
    return out


def build_manual_job(
    ts: TableSync,
    settings: Settings,
    cronjob_uid: str,
    requested_at: str,
    previous_job: str | None,
    approve_delta: str | None,
) -> dict[str, Any]:
    """A Job started on demand, as ``kubectl create job --from=cronjob/<name>`` would, named
    by ``manual_job_name``.

    Owned by the CronJob (controller), so the CronJob's ``Forbid`` policy and history
    limits see it and deleting the TableSync removes it.
    """
    name = cronjob_name(ts)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": manual_job_name(ts, requested_at, previous_job),
            "namespace": ts.namespace,
            "labels": labels(ts),
            "annotations": {
                "cronjob.kubernetes.io/instantiate": "manual",
                ANNOTATION_REQUESTED_AT: requested_at,
            },
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": name,
                    "uid": cronjob_uid,
                    "controller": True,
                }
            ],
        },
        "spec": build_job_spec(ts, settings, approve_delta),
    }


def build_event(
    *,
    namespace: str,
    name: str,
    uid: str,
    event_type: str,
    reason: str,
    message: str,
    now: datetime,
    instance: str,
) -> dict[str, Any]:
    """A core/v1 Event about a TableSync (``kubectl describe ts`` shows it)."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    text = message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": name,
            "namespace": namespace,
            "uid": uid,
        },
        "type": event_type,
        "reason": reason,
        "message": text,
        "source": {"component": EVENT_COMPONENT},
        "reportingComponent": EVENT_COMPONENT,
        "reportingInstance": instance[:128],
        "action": reason,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
