"""kopf's configuration for this operator, and the context its handlers share.

Called by the startup handler in ``handlers`` (so ``kopf run -m tablesync_operator.handlers``
and ``kopf.testing.KopfRunner`` get the same configuration as ``tablesync-operator``) and by
``__main__``, which builds the context before kopf starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from .kube import Kube
from .names import FINALIZER, KOPF_PREFIX, LABEL_MANAGED_BY, MANAGED_BY
from .reconcile import Context, resync_all
from .settings import Settings

MEMO_KEY = "tablesync"
RESYNC_TASK_KEY = "tablesync-resync"
logger = logging.getLogger(__name__)


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    """Apply our choices to kopf's settings.

    * bookkeeping under ``operator.tablesync.dev/`` annotations only (never ``status``, whose
      schema is ours); finalizer name ``tablesync.dev/finalizer`` — though no handler needs
      one (no delete handler, no kopf timer: see ``resync_forever``), so kopf puts none on
      TableSyncs and their deletion never waits for the operator; the CronJob goes by owner
      reference;
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


async def resync_forever(ctx: Context) -> None:
    """Every ``resync_interval_seconds``: reconcile every TableSync the watch has shown.

    This is the periodic re-check (lag grows in the status between runs, missed schedules,
    a Secret that appeared, a CronJob deleted behind our back). It is a plain task rather
    than a kopf timer on purpose: kopf puts a finalizer on every object that has a timer,
    and a TableSync should never wait for the operator to be deleted (nor keep a namespace
    in Terminating while the operator is down).
    """
    interval = ctx.settings.resync_interval_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(resync_all, ctx)
        except Exception:  # never let the loop die
            logger.exception("resync round failed")


def start_resync(memo: Any, ctx: Context) -> None:
    """Start the resync task on the running loop (once) and keep it in the memo."""
    task = memo.get(RESYNC_TASK_KEY)
    if task is None or task.done():
        memo[RESYNC_TASK_KEY] = asyncio.get_running_loop().create_task(
            resync_forever(ctx), name="tablesync resync"
        )


async def stop_resync(memo: Any) -> None:
    task = memo.get(RESYNC_TASK_KEY)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
