"""``tablesync-operator``: start the metrics server, win the Lease, run kopf.

Usage::

    tablesync-operator [--namespace NS ...] [--metrics-port PORT]
                       [--no-leader-election] [--verbose]

Settings come from ``TABLESYNC_OPERATOR_*`` environment variables (see ``settings``); the
options above override them. Kubernetes access: the pod's service account, else
``$KUBECONFIG``. Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 1 when the Lease was
lost (the process exits at once so the new leader never overlaps with it), 2 for bad
settings.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence

import kopf

from . import handlers as _handlers  # noqa: F401  (importing registers the kopf handlers)
from . import metrics, runtime
from .kube import Kube
from .leader import LeaderElector
from .reconcile import Context
from .settings import Settings, SettingsError

logger = logging.getLogger("tablesync_operator")

EXIT_LEASE_LOST = 1
EXIT_SETTINGS = 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tablesync-operator",
        description="Reconcile TableSync resources into CronJobs; report lag, overrun, drift.",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        help="namespace to watch (repeatable; default: TABLESYNC_OPERATOR_NAMESPACES or all)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="port of /metrics and /healthz"
    )
    parser.add_argument(
        "--no-leader-election",
        action="store_true",
        help="act without holding the Lease (single replica or local runs only)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides: dict[str, object] = {}
    if args.namespace:
        overrides["namespaces"] = tuple(args.namespace)
    if args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    if args.no_leader_election:
        overrides["leader_election"] = False
    if args.verbose:
        overrides["verbose"] = True
    return dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]


async def _beat() -> None:
    while True:
        metrics.HEARTBEAT.beat()
        await asyncio.sleep(5)


def _lease_lost() -> None:
    logging.shutdown()
    os._exit(EXIT_LEASE_LOST)


async def run(settings: Settings) -> int:
    """Run until stopped. Returns the exit code."""
    beat = asyncio.create_task(_beat())
    kube = Kube.from_environment()
    ctx = Context(kube=kube, settings=settings)
    elector: LeaderElector | None = None
    holder: asyncio.Task[None] | None = None
    if settings.leader_election:
        elector = LeaderElector(kube, settings)
        await elector.acquire()
        holder = asyncio.create_task(elector.hold(on_lost=_lease_lost))
    memo = kopf.Memo()
    memo[runtime.MEMO_KEY] = ctx
    try:
        await kopf.operator(
            registry=kopf.get_default_registry(),
            clusterwide=settings.clusterwide,
            namespaces=settings.kopf_namespaces(),
            standalone=True,
            memo=memo,
        )
    finally:
        for task in (holder, beat):
            if task is not None:
                task.cancel()
        if elector is not None:
            await asyncio.to_thread(elector.release)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from(args)
    except SettingsError as err:
        print(f"tablesync-operator: {err}", file=sys.stderr)
        return EXIT_SETTINGS
    kopf.configure(
        verbose=settings.verbose,
        log_format={
            "plain": kopf.LogFormat.PLAIN,
            "full": kopf.LogFormat.FULL,
            "json": kopf.LogFormat.JSON,
        }[settings.log_format],
    )
    if settings.metrics_port:
        metrics.serve(settings.metrics_host, settings.metrics_port)
    logger.info(
        "tablesync-operator starting: %s, identity %s",
        "all namespaces" if settings.clusterwide else ", ".join(settings.namespaces),
        settings.identity,
    )
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
