"""kopf handlers: decorators only. Each unpacks its arguments and calls one function.

Imported by ``__main__`` (which registers these with kopf's default registry by importing
this module); ``kopf run -m tablesync_operator.handlers`` works too. All TableSync triggers
converge on :func:`tablesync_operator.reconcile.sync`, a level-based reconcile.
"""

from __future__ import annotations

from typing import Any

import kopf

from . import reconcile, runtime
from .names import GROUP, LABEL_MANAGED_BY, LABEL_TABLESYNC, MANAGED_BY, PLURAL, VERSION
from .settings import Settings, SettingsError

# Used when kopf runs this module directly (``kopf run -m``); ``tablesync-operator`` puts its
# own Context (with command-line overrides) into the memo first. A bad variable is reported
# (exit code 2) by ``__main__``, which reads the settings again.
try:
    _SETTINGS = Settings.from_env()
except SettingsError:
    _SETTINGS = Settings()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    ctx = runtime.ensure_context(memo, _SETTINGS)
    runtime.configure_kopf(settings, ctx.settings)
    runtime.start_resync(memo, ctx)


@kopf.on.cleanup()
async def stop(memo: Any, **_: Any) -> None:
    await runtime.stop_resync(memo)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def reconcile_tablesync(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    reconcile.sync(runtime.context(memo), str(namespace), name)


@kopf.on.event(GROUP, VERSION, PLURAL)
def tablesync_event(
    type: str | None, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    reconcile.observe(runtime.context(memo), type, str(namespace), name)


@kopf.on.event(
    "batch",
    "v1",
    "jobs",
    labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_TABLESYNC: kopf.PRESENT},
)
def job_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    reconcile.sync_for_job(runtime.context(memo), str(namespace), labels)
