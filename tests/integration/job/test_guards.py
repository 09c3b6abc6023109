"""Guards: a delta that looks like a truncated dump applies nothing until approved."""

from __future__ import annotations

from tests.integration.job.lane import Lane, load_prices


def test_truncated_source_trips_the_guard_and_approval_applies_exactly_that_delta(
        lane: Lane) -> None:
    load_prices(lane, 1000)
    assert lane.run("run").code == 0
    state_before = lane.state()
    lane.src("TRUNCATE prices")

    tripped = lane.run("run")

    assert tripped.code == 3
    assert tripped.report["result"] == "GuardTripped"
    assert tripped.report["reason"] == "DeleteGuardTripped"
    assert "spec.guards.maxDeleteFraction" in tripped.error_line
    assert lane.dst("SELECT count(*) FROM prices") == [(1000,)]
    assert lane.state() == state_before
    delta = tripped.report["deltaId"]

    # A newer row arrives meanwhile: the approval still applies exactly the tripped delta.
    lane.src("INSERT INTO prices VALUES (5000, 'late', 1, 'EUR', 'late', now())")
    approved = lane.run("run", env={"TABLESYNC_APPROVE_DELTA": delta})

    assert approved.code == 0, approved.stderr
    assert approved.report["deltaId"] == delta
    assert approved.report["apply"]["deleted"] == 1000
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]
    state = lane.state()
    assert state is not None and delta.endswith(state["last_applied_snapshot_id"])
    # The operator removes the approval from the CronJob once it saw it applied; a run
    # before that still has it, and runs normally.
    follow_up = lane.run("run", env={"TABLESYNC_APPROVE_DELTA": delta})
    assert follow_up.code == 0, follow_up.stderr
    assert follow_up.report["apply"]["inserted"] == 1
    assert "approval no longer applies" in follow_up.stderr


def test_a_shrunken_snapshot_trips_the_shrink_guard(lane: Lane) -> None:
    load_prices(lane, 1000)
    lane.spec["spec"]["guards"] = {"maxDeleteFraction": 1, "maxShrinkFraction": 0.2}
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id > 700")

    result = lane.run("run")

    assert result.code == 3
    assert result.report["reason"] == "ShrinkGuardTripped"
    assert lane.dst("SELECT count(*) FROM prices") == [(1000,)]


def test_an_approval_for_another_delta_is_refused(lane: Lane) -> None:
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    other = "20200101T000000.000000Z-0000..20200101T000001.000000Z-0000"
    result = lane.run("run", "--approve", other)
    assert result.code == 2
    assert "--approve" in result.error_line


def test_a_guard_that_keeps_tripping_does_not_pile_up_snapshots(lane: Lane) -> None:
    load_prices(lane, 100)
    assert lane.run("run").code == 0  # keepSnapshots is 3
    applied = lane.state()
    assert applied is not None
    lane.src("TRUNCATE prices")

    tripped = [lane.run("run") for _ in range(4)]

    assert [r.code for r in tripped] == [3, 3, 3, 3]
    kept = sorted(p.name for p in (lane.work / "store" / "snapshots").iterdir())
    assert len(kept) == 4  # the newest 3 and the last applied one
    assert applied["last_applied_snapshot_id"] in kept
    assert tripped[-1].report["snapshotId"] in kept
    approved = lane.run("run", "--approve", tripped[-1].report["deltaId"])
    assert approved.code == 0, approved.stderr


def test_a_standing_approval_whose_delta_is_gone_lets_runs_go_on(lane: Lane) -> None:
    """Retention of later tripped runs removed the approved delta: every run then failed on
    it (exit 2, before a dump), so no newer delta ever appeared to approve instead."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    state = lane.state()
    assert state is not None
    lane.src("TRUNCATE prices")
    gone = f"{state['last_applied_snapshot_id']}..20261121T000000.000000Z-0000"

    result = lane.run("run", env={"TABLESYNC_APPROVE_DELTA": gone})

    assert result.code == 3, result.stderr
    assert result.report["deltaId"] != gone
    assert "is no longer stored" in result.stderr


def test_apply_approve_without_delta_applies_the_delta_approved(lane: Lane) -> None:
    """Two runs tripped on the same truncation, each storing its delta: 'apply --approve'
    with the first one applied the newest delta instead, which the approval does not
    cover, so the guard tripped again naming the other one."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    lane.src("TRUNCATE prices")
    first, second = lane.run("run"), lane.run("run")
    assert (first.code, second.code) == (3, 3)
    assert first.report["deltaId"] != second.report["deltaId"]

    applied = lane.run("apply", "--approve", first.report["deltaId"])

    assert applied.code == 0, applied.stderr
    assert applied.report["deltaId"] == first.report["deltaId"]
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]
