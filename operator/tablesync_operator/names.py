"""Names the operator shares with the cluster: API coordinates, labels, annotations.

Imported by every other module (it imports nothing of ours). Changing a value here changes
the contract with existing objects in clusters: treat it as API.
"""

from __future__ import annotations

GROUP = "tablesync.dev"
VERSION = "v1alpha1"
PLURAL = "tablesyncs"
KIND = "TableSync"
API_VERSION = f"{GROUP}/{VERSION}"

# Objects the operator creates carry these labels (the Job watch selects on MANAGED_BY).
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "tablesync"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_TABLESYNC = f"{GROUP}/name"
LABEL_TABLESYNC_UID = f"{GROUP}/uid"

# User-facing annotations on a TableSync.
ANNOTATION_RUN_REQUESTED_AT = f"{GROUP}/run-requested-at"
ANNOTATION_APPROVE_DELTA = f"{GROUP}/approve-delta"
# On the CronJob: hash of the desired object, to skip no-op updates.
ANNOTATION_TEMPLATE_HASH = f"{GROUP}/template-hash"
# On the CronJob: its metadata.generation right after the operator's last apply. Any later
# change of its spec (kubectl edit/patch) bumps the generation past it, and the next
# reconcile applies the CronJob again.
ANNOTATION_APPLIED_GENERATION = f"{GROUP}/applied-generation"
# On manual Jobs: which run-requested-at value started it.
ANNOTATION_REQUESTED_AT = f"{GROUP}/requested-at"

# kopf's own bookkeeping (progress, last-handled configuration) goes under a *different*
# prefix than the user annotations above: kopf drops every annotation under its storage
# prefix from the diff it reacts to, so sharing "tablesync.dev" would hide run requests and
# approvals from the update handler.
KOPF_PREFIX = f"operator.{GROUP}"
FINALIZER = f"{GROUP}/finalizer"

# Kubernetes-owned names the operator reads.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
CRONJOB_SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"

CONTAINER_NAME = "tablesync"
FIELD_MANAGER = "tablesync-operator"
EVENT_COMPONENT = "tablesync-operator"
