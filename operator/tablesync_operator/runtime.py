"""kopf's configuration for this operator, and the context its handlers share.

Called by the startup handler in ``handlers`` (so ``kopf run -m tablesync_operator.handlers``
and ``kopf.testing.KopfRunner`` get the same configuration as ``tablesync-operator``) and by
``__main__``, which builds the context before kopf starts.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from .kube import Kube
from .names import FINALIZER, KOPF_PREFIX, LABEL_MANAGED_BY, MANAGED_BY
from .reconcile import Context
from .settings import Settings

MEMO_KEY = "tablesync"


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    """Apply our choices to kopf's settings.

    * bookkeeping under ``operator.tablesync.dev/`` annotations only (never ``status``, whose
      schema is ours); finalizer ``tablesync.dev/finalizer``, which kopf puts on every
      TableSync because of the resync timer and removes after stopping the timer on deletion
      (the CronJob itself goes by owner reference). A TableSync deleted while no operator
      runs waits for one; ``kubectl patch --type=json -p '[{"op":"remove",
      "path":"/metadata/finalizers"}]'`` releases it by hand;
    * no peering (the Lease in ``leader`` decides who runs);
    * no kopf Events for handler progress: the operator posts its own, on transitions;
    * the Job watch is filtered on the server by ``app.kubernetes.io/managed-by=tablesync``.
    """
    kopf_settings.persistence.finalizer = FINALIZER
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    kopf_settings.peering.standalone = True
    kopf_settings.posting.enabled = False
    kopf_settings.execution.max_workers = settings.workers
    kopf_settings.watching.label_selectors["batch", "jobs"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    # Reconnect watches well before the API server's own timeout; retry failed handlers soon.
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    kopf_settings.execution.default_backoff = 10
    kopf_settings.networking.error_backoffs = [1, 2, 5, 10]
    logging.getLogger("kubernetes.client.rest").setLevel(logging.WARNING)
    if not settings.verbose:
        # kopf logs every handler and timer success at INFO; our own log says what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def ensure_context(memo: Any, settings: Settings | None = None) -> Context:
    """The Context stored in kopf's memo, created from the environment if absent."""
    existing = memo.get(MEMO_KEY) if hasattr(memo, "get") else None
    if isinstance(existing, Context):
        return existing
    ctx = Context(kube=Kube.from_environment(), settings=settings or Settings.from_env())
    memo[MEMO_KEY] = ctx
    return ctx


def context(memo: Any) -> Context:
    """The Context for a handler call (created lazily if the startup handler did not run)."""
    return ensure_context(memo)
