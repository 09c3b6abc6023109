"""leader: the Lease algorithm (expiry on our own clock, resourceVersion preconditions)."""

from __future__ import annotations

import dataclasses

from tablesync_operator.leader import LeaderElector

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
    import asyncio

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
