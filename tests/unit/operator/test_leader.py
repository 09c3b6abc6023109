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
