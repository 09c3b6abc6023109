"""leader: the Lease algorithm (expiry on our own clock, resourceVersion preconditions)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Mapping
from typing import Any

from tablesync_operator.kube import KubeError
from tablesync_operator.leader import LeaderElector
from tablesync_operator.settings import Settings

from .fakekube import FakeKube
from .samples import NOW, SETTINGS


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def elector(kube: FakeKube, identity: str, clock: Clock) -> LeaderElector:
    settings = dataclasses.replace(SETTINGS, identity=identity, leader_election=True)
    return LeaderElector(kube, settings, monotonic=clock, wall=lambda: NOW)


def test_only_one_replica_leads() -> None:
    kube, clock = FakeKube(), Clock()
    a, b = elector(kube, "a", clock), elector(kube, "b", clock)
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False
    clock.now += 10
    assert a.try_acquire_or_renew() is True  # renewing
    assert b.try_acquire_or_renew() is False
    lease = kube.get_lease("default", "tablesync-operator")
    assert lease is not None and lease["spec"]["holderIdentity"] == "a"


def test_a_silent_leader_is_replaced_after_the_lease_duration_on_the_candidates_clock() -> None:
    kube, clock = FakeKube(), Clock()
    a, b = elector(kube, "a", clock), elector(kube, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b first sees the record now
    clock.now += 14
    assert not b.try_acquire_or_renew()
    clock.now += 2  # 16 s > 15 s without a change of the record
    assert b.try_acquire_or_renew()
    lease = kube.get_lease("default", "tablesync-operator")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    assert not a.try_acquire_or_renew()  # a sees b's fresh record


def test_two_candidates_racing_for_an_expired_lease_cannot_both_win() -> None:
    kube, clock = FakeKube(), Clock()
    a, b, c = (elector(kube, n, clock) for n in "abc")
    assert a.try_acquire_or_renew()
    b.try_acquire_or_renew(), c.try_acquire_or_renew()
    clock.now += 20
    # b and c read the same expired record; whoever writes second hits the resourceVersion.
    stale = kube.get_lease("default", "tablesync-operator")
    assert b.try_acquire_or_renew()
    assert stale is not None
    assert kube.replace_lease(stale) is None
    assert not c.try_acquire_or_renew()


def test_release_hands_over_at_once() -> None:
    kube, clock = FakeKube(), Clock()
    a, b = elector(kube, "a", clock), elector(kube, "b", clock)
    assert a.try_acquire_or_renew()
    a.release()
    assert b.try_acquire_or_renew()


def test_a_leader_that_cannot_renew_gives_up_within_the_renew_deadline() -> None:
    kube, clock = FakeKube(), Clock()
    settings = dataclasses.replace(
        SETTINGS,
        identity="a",
        leader_election=True,
        retry_period_seconds=0.01,
        renew_deadline_seconds=10,
        lease_duration_seconds=15,
    )
    leader = LeaderElector(kube, settings, monotonic=clock, wall=lambda: NOW)
    asyncio.run(leader.acquire())
    assert leader.is_leader
    kube.leases.clear()
    kube.create_lease = lambda manifest: None  # type: ignore[method-assign]  # API refuses
    lost: list[float] = []

    async def hold() -> None:
        async def tick() -> None:
            while not lost:
                clock.now += 1  # each renewal attempt takes a second of our clock
                await asyncio.sleep(0.005)

        ticker = asyncio.create_task(tick())
        await asyncio.wait_for(leader.hold(on_lost=lambda: lost.append(clock.now)), 5)
        ticker.cancel()

    asyncio.run(hold())
    assert lost and 10 < lost[0] <= 15  # gave up after the renew deadline, before expiry
    assert not leader.is_leader


def hanging_renewals(kube: FakeKube, hang_seconds: float) -> threading.Event:
    """From now on every Lease read hangs, as a request to an API server that does not
    answer does until its client timeout (30 s); set the returned event to let it go."""
    let_go = threading.Event()

    def get_lease(namespace: str, name: str) -> dict[str, Any] | None:
        let_go.wait(hang_seconds)
        raise KubeError(f"GET lease {namespace}/{name}: timed out")

    kube.get_lease = get_lease  # type: ignore[method-assign]
    return let_go


def quick_settings(identity: str) -> Settings:
    return dataclasses.replace(
        SETTINGS,
        identity=identity,
        leader_election=True,
        retry_period_seconds=0.05,
        renew_deadline_seconds=1.0,
        lease_duration_seconds=1.5,
    )


def test_a_leader_whose_renewal_hangs_gives_up_before_the_lease_expires() -> None:
    """A standby may take the Lease once its record has not changed for the lease duration:
    the leader must have stopped by then, even while a renewal request is still hanging."""
    kube = FakeKube()
    leader = LeaderElector(kube, quick_settings("a"), wall=lambda: NOW)
    renewed = time.monotonic()  # the last renewal (here the acquisition) began no earlier
    asyncio.run(leader.acquire())
    let_go = hanging_renewals(kube, hang_seconds=10)
    lost: list[float] = []

    def on_lost() -> None:
        lost.append(time.monotonic())
        let_go.set()

    asyncio.run(asyncio.wait_for(leader.hold(on_lost=on_lost), 20))
    assert lost and lost[0] - renewed < 1.5  # before a standby may take over
    assert not leader.is_leader


def test_an_acquisition_that_hung_past_the_renew_deadline_does_not_lead_on_it() -> None:
    """The Lease was written when the request began; a reply that took longer than the renew
    deadline leaves too little of the lease to act on: the next attempt renews first."""
    kube = FakeKube()
    leader = LeaderElector(kube, quick_settings("a"), wall=lambda: NOW)
    slow = threading.Event()
    create = kube.create_lease

    def create_lease(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        if not slow.is_set():
            slow.set()
            time.sleep(1.2)  # the write went through; its reply comes late
        return create(manifest)

    kube.create_lease = create_lease  # type: ignore[method-assign]
    attempts: list[float] = []
    renew = leader.try_acquire_or_renew

    def attempt() -> bool:
        attempts.append(time.monotonic())
        return renew()

    leader.try_acquire_or_renew = attempt  # type: ignore[method-assign]
    asyncio.run(leader.acquire())
    assert len(attempts) == 2  # the slow one, then a renewal
    assert time.monotonic() - attempts[-1] < 1.0


def test_a_leader_whose_api_server_answers_slowly_keeps_the_lease() -> None:
    """Each Lease request takes a quarter of the renew deadline (2.5 s of 10 s: an API server
    slow but answering): every renewal goes through, well within the lease, so the leader
    leads on. It gave up after its first renewal: the deadline was counted from the read
    that began the attempt, and the next attempt began only a retry period after the reply,
    leaving it less time than two requests take (review)."""
    kube = FakeKube()
    get, replace = kube.get_lease, kube.replace_lease

    def get_lease(namespace: str, name: str) -> dict[str, Any] | None:
        time.sleep(0.25)
        return get(namespace, name)

    def replace_lease(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        time.sleep(0.25)
        return replace(manifest)

    settings = dataclasses.replace(quick_settings("a"), retry_period_seconds=0.2)
    leader = LeaderElector(kube, settings, wall=lambda: NOW)
    asyncio.run(leader.acquire())
    kube.get_lease, kube.replace_lease = get_lease, replace_lease  # type: ignore[method-assign]
    lost: list[float] = []

    async def hold() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(leader.hold(on_lost=lambda: lost.append(0)), 3)

    asyncio.run(hold())
    assert not lost and leader.is_leader


def test_a_lease_duration_in_fractions_of_a_second_is_rounded_up_in_the_lease() -> None:
    """10.9 s was written as 10: b took the Lease at 10 s while a led until its renew deadline
    (10.5 s), two leaders at once; and 0.5 s was written as 0, which the API server refuses."""
    kube, clock = FakeKube(), Clock()
    settings = dataclasses.replace(SETTINGS, leader_election=True, lease_duration_seconds=10.9,
                                   renew_deadline_seconds=10.5)
    a = LeaderElector(kube, dataclasses.replace(settings, identity="a"), monotonic=clock,
                      wall=lambda: NOW)
    b = LeaderElector(kube, dataclasses.replace(settings, identity="b"), monotonic=clock,
                      wall=lambda: NOW)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += 10.6  # a still leads (past its renew deadline only after 10.5 s unrenewed)
    assert not b.try_acquire_or_renew()
    lease = kube.get_lease("default", "tablesync-operator")
    assert lease is not None and lease["spec"]["leaseDurationSeconds"] == 11
    short = LeaderElector(FakeKube(), dataclasses.replace(
        settings, identity="c", lease_duration_seconds=0.5, renew_deadline_seconds=0.2),
        monotonic=clock, wall=lambda: NOW)
    assert short.try_acquire_or_renew()
    held = short.kube.get_lease("default", "tablesync-operator")
    assert held is not None and held["spec"]["leaseDurationSeconds"] == 1
