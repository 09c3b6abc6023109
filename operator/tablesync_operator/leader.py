"""Leader election on a ``coordination.k8s.io/v1`` Lease: one replica acts, others wait.

Called by ``__main__`` before kopf starts. Why a Lease and not kopf's peering: kopf's
peering pauses *every* operator of the same priority when it sees a peer (two replicas of
one Deployment would both pause), pauses asynchronously, and keeps no per-object lock. With
a Lease, a standby replica runs no kopf at all, and a leader that cannot renew within
``renew_deadline_seconds`` (below the lease duration) exits before anyone else may acquire.

The algorithm is client-go's: a Lease is free when it has no holder, or when its record
(holder, renewTime) has not changed for ``leaseDurationSeconds`` as measured on *our*
monotonic clock since we first saw that record (no trust in clock agreement between nodes).
Updates carry the resourceVersion read, so two candidates can never both win one round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .kube import Kube, KubeError
from .settings import Settings

logger = logging.getLogger(__name__)


def micro_time(now: datetime) -> str:
    """``metav1.MicroTime`` text."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_seconds(settings: Settings) -> int:
    """The Lease's ``leaseDurationSeconds`` (whole seconds), rounded up: a candidate trusts
    the holder that long, so rounding down (10.9 s -> 10) let it take over while the holder
    still led (until its renew deadline, 10.5 s), and 0.5 s became 0, which the API server
    refuses."""
    return math.ceil(settings.lease_duration_seconds)


def build_lease(settings: Settings, now: datetime) -> dict[str, Any]:
    """A new Lease held by this replica."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": settings.lease_name, "namespace": settings.lease_namespace},
        "spec": {
            "holderIdentity": settings.identity,
            "leaseDurationSeconds": lease_seconds(settings),
            "acquireTime": micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": 0,
        },
    }


class LeaderElector:
    """Acquire, hold and release the Lease named in the settings."""

    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.monotonic = monotonic
        self.wall = wall
        self._observed: tuple[Any, Any] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._attempted_at = 0.0
        self.is_leader = False

    def try_acquire_or_renew(self) -> bool:
        """One attempt. True if this replica holds the Lease afterwards; the Lease is then
        ours for the renew deadline from the moment its write was sent (see ``_remaining``)."""
        self._attempted_at = self.monotonic()
        written = self._attempt()
        if written is not None:
            self._renewed_at = written
        return written is not None

    def _remaining(self) -> float:
        """Seconds left to act on the last successful attempt: the renew deadline from the
        moment it sent the write, not from its reply, which may come late. A standby takes the
        Lease only once the record that write made has stood unchanged for the lease
        duration (longer than the renew deadline) on the standby's clock, from a time after
        it was written. (Not from the read before it either: a slow API server's read would
        cost the time a second attempt needs.)"""
        return self._renewed_at + self.settings.renew_deadline_seconds - self.monotonic()

    def _attempt(self) -> float | None:
        """One read and write of the Lease; when the write made this replica the holder,
        the monotonic time at which it was sent, else None."""
        s = self.settings
        try:
            lease = self.kube.get_lease(s.lease_namespace, s.lease_name)
            now = self.wall()
            if lease is None:
                sent = self.monotonic()
                created = self.kube.create_lease(build_lease(s, now))
                if created is not None:
                    self._observe((s.identity, created["spec"].get("renewTime")))
                    return sent
                return None
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or None
            record = (holder, spec.get("renewTime"))
            if record != self._observed:
                self._observe(record)
            if holder and holder != s.identity:
                duration = float(spec.get("leaseDurationSeconds") or s.lease_duration_seconds)
                if self.monotonic() - self._observed_at < duration:
                    return None
                logger.info(
                    "Lease %s/%s held by %s expired; taking it",
                    s.lease_namespace,
                    s.lease_name,
                    holder,
                )
            renewed = {
                **spec,
                "holderIdentity": s.identity,
                "leaseDurationSeconds": lease_seconds(s),
                "renewTime": micro_time(now),
            }
            if holder != s.identity:
                renewed["acquireTime"] = micro_time(now)
                renewed["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            lease["spec"] = renewed
            sent = self.monotonic()
            replaced = self.kube.replace_lease(lease)
            if replaced is None:
                return None
            self._observe((s.identity, renewed["renewTime"]))
            return sent
        except KubeError as err:
            logger.warning("Lease %s/%s: %s", s.lease_namespace, s.lease_name, err)
            return None

    def _observe(self, record: tuple[Any, Any]) -> None:
        self._observed = record
        self._observed_at = self.monotonic()

    async def acquire(self) -> None:
        """Return once this replica holds the Lease (waits while another replica does)."""
        s = self.settings
        logger.info(
            "waiting to lead: Lease %s/%s as %s", s.lease_namespace, s.lease_name, s.identity
        )
        # an attempt whose reply came after the renew deadline holds the Lease for too
        # short a time to act on: the next one renews it
        while not (await asyncio.to_thread(self.try_acquire_or_renew) and self._remaining() > 0):
            await asyncio.sleep(s.retry_period_seconds)
        self.is_leader = True
        logger.info(
            "leading: Lease %s/%s acquired as %s", s.lease_namespace, s.lease_name, s.identity
        )

    async def hold(self, on_lost: Callable[[], None]) -> None:
        """Renew every retry period; call ``on_lost`` as soon as the renew deadline has passed
        since the last successful attempt sent its write, even while an attempt is still
        waiting for the API server (a request may hang for its whole timeout, 30 s, longer
        than the lease: a standby would lead while this replica still acts)."""
        s = self.settings
        while True:
            # a retry period from the last attempt's beginning: a slow reply (a slow API
            # server) must not push the next attempt past the deadline it has to meet
            due = self._attempted_at + s.retry_period_seconds - self.monotonic()
            await asyncio.sleep(max(0.0, min(due, self._remaining())))
            remaining = self._remaining()
            if remaining > 0:
                # on a timeout the request goes on in its thread; only its beginning counts
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.to_thread(self.try_acquire_or_renew), remaining
                    )
            if self._remaining() < 0:
                self.is_leader = False
                logger.error(
                    "lost the Lease %s/%s: could not renew for %.0fs",
                    s.lease_namespace,
                    s.lease_name,
                    s.renew_deadline_seconds,
                )
                on_lost()
                return

    def release(self) -> None:
        """Give the Lease up on a clean shutdown so a standby takes over at once."""
        s = self.settings
        try:
            lease = self.kube.get_lease(s.lease_namespace, s.lease_name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != s.identity:
                return
            lease["spec"] = {
                **lease["spec"],
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": micro_time(self.wall()),
            }
            self.kube.replace_lease(lease)
            logger.info("released the Lease %s/%s", s.lease_namespace, s.lease_name)
        except KubeError as err:
            logger.warning("could not release the Lease: %s", err)
        finally:
            self.is_leader = False
