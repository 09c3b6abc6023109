"""Trigger a CronJob now, as ``kubectl create job --from=cronjob/NAME`` does.

The CronJob controller schedules at minute granularity, so e2e tests and
``python -m localcluster trigger-cronjob`` start runs on demand with this. ``job_from_cronjob``
is pure (kubectl's ``createJobFromCronJob``: the jobTemplate's labels, annotations and spec,
the annotation ``cronjob.kubernetes.io/instantiate: manual``, a controller owner reference
to the CronJob); ``trigger_cronjob`` reads and creates through the official client, so it
works against any cluster (local or kind).
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

JsonDict = dict[str, Any]
INSTANTIATE_ANNOTATION = "cronjob.kubernetes.io/instantiate"


def manual_job_name(cronjob_name: str) -> str:
    """``<cronjob>-manual-<5 hex>``, within the 63-character Job name limit."""
    return f"{cronjob_name[:48]}-manual-{secrets.token_hex(3)[:5]}"


def job_from_cronjob(cronjob: JsonDict, job_name: str) -> JsonDict:
    """The Job kubectl would create from ``cronjob`` (a camelCase dict), named ``job_name``."""
    template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
    template_meta = template.get("metadata") or {}
    annotations = dict(template_meta.get("annotations") or {})
    annotations[INSTANTIATE_ANNOTATION] = "manual"
    meta = cronjob["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": meta["namespace"],
            "labels": dict(template_meta.get("labels") or {}),
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "CronJob", "name": meta["name"],
                "uid": meta["uid"], "controller": True,
            }],
        },
        "spec": template["spec"],
    }


def trigger_cronjob(api_client: Any, namespace: str, name: str,
                    job_name: str | None = None) -> JsonDict:
    """Create a Job from CronJob ``namespace/name`` now; return the created Job as a dict.

    ``api_client`` is a ``kubernetes.client.ApiClient``. Raises the client's ApiException
    (404 if the CronJob does not exist).
    """
    from kubernetes import client

    batch = client.BatchV1Api(api_client)
    cronjob = api_client.sanitize_for_serialization(
        batch.read_namespaced_cron_job(name, namespace))
    body = job_from_cronjob(cronjob, job_name or manual_job_name(name))
    created = batch.create_namespaced_job(namespace, body)
    result: JsonDict = api_client.sanitize_for_serialization(created)
    return result
