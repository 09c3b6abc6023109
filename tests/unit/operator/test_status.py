"""status: conditions, runs, lag, overrun and drift figures (pure transitions)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from tablesync_operator import status as st
from tablesync_operator.results import RunOutcome, outcome_from_job
from tablesync_operator.spec import ObjectRef, TableSync, parse

from .samples import NOW, REPORT, TABLESYNC, job, pod_with_report, report, tablesync

CRONJOB: dict[str, Any] = {
    "metadata": {
        "name": "product-prices",
        "uid": "cj",
        "creationTimestamp": "2026-11-20T09:00:05Z",
    },
    "status": {"lastScheduleTime": "2026-11-21T10:30:00Z"},
}


def ts(body: dict[str, Any] | None = None) -> TableSync:
    return parse(body or TABLESYNC)


def ready(
    status: st.TableSyncStatus | None = None, body: dict[str, Any] | None = None
) -> st.TableSyncStatus:
    return st.mark_reconciled(
        status or st.TableSyncStatus(), ts(body), NOW, CRONJOB, approval_pending=False
    )


def run(
    name: str = "product-prices-29400000",
    rep: dict[str, Any] | None = None,
    succeeded: bool = True,
    start: str = "2026-11-21T10:59:50Z",
    end: str = "2026-11-21T11:00:05Z",
    exit_code: int = 0,
) -> RunOutcome:
    j = job(name, succeeded=succeeded, start=start, end=end, failed_reason="PodFailurePolicy")
    return outcome_from_job(j, [pod_with_report(rep or REPORT, exit_code=exit_code)])


def bootstrap_report() -> dict[str, Any]:
    return report(
        reason="Bootstrapped",
        bootstrap=True,
        fromSnapshotId=None,
        deltaId=None,
        snapshotId="20261121T100000Z-0001",
        capturedAt="2026-11-21T10:00:00+00:00",
        delta={"insert": 100000, "update": 0, "delete": 0},
        apply={
            "inserted": 100000,
            "updated": 0,
            "deleted": 0,
            "alreadyCurrent": 0,
            "staleSkipped": 0,
        },
    )


def cond(status: st.TableSyncStatus, kind: str) -> st.Condition:
    found = status.condition(kind)
    assert found is not None, kind
    return found


# -- conditions ---------------------------------------------------------------------------


def test_last_transition_time_moves_only_when_status_changes() -> None:
    s = st.set_condition(st.TableSyncStatus(), "Ready", "False", "A", "a", 1, NOW)
    later = NOW + timedelta(minutes=5)
    same = st.set_condition(s, "Ready", "False", "B", "b", 2, later)
    assert cond(same, "Ready").last_transition_time == "2026-11-21T11:00:00Z"
    assert (cond(same, "Ready").reason, cond(same, "Ready").observed_generation) == ("B", 2)
    flipped = st.set_condition(same, "Ready", "True", "C", "c", 2, later)
    assert cond(flipped, "Ready").last_transition_time == "2026-11-21T11:05:00Z"


def test_reconciled_sets_ready_and_clears_stalled_with_observed_generation() -> None:
    s = ready()
    assert s.observed_generation == 3
    assert cond(s, "Ready").status == "True" and cond(s, "Ready").reason == "Reconciled"
    assert "*/30 * * * *" in cond(s, "Ready").message
    assert cond(s, "Stalled").status == "False"
    assert cond(s, "Reconciling").status == "False"
    for kind in ("LastRunSucceeded", "Overrun", "Drifted"):
        assert (cond(s, kind).status, cond(s, kind).reason) == ("Unknown", "NoRunYet")
    assert all(c.observed_generation == 3 for c in s.conditions)
    assert s.cron_job_name == "product-prices"
    assert s.last_schedule_time == "2026-11-21T10:30:00Z"


def test_suspended_is_ready_with_its_own_reason() -> None:
    s = ready(body=tablesync(suspend=True))
    assert (cond(s, "Ready").status, cond(s, "Ready").reason) == ("True", "Suspended")


def test_stalled_says_why_and_ready_is_false() -> None:
    body = tablesync(schedule="bad")
    s = st.mark_stalled(ready(), ObjectRef.of(body), "InvalidSpec", "spec.schedule: bad", NOW)
    assert (cond(s, "Stalled").status, cond(s, "Stalled").message) == ("True", "spec.schedule: bad")
    assert (cond(s, "Ready").status, cond(s, "Ready").reason) == ("False", "InvalidSpec")
    events = st.transition_events(ready(), s)
    assert [(e.type, e.reason) for e in events] == [("Warning", "InvalidSpec")]
    recovered = ready(s)
    assert [(e.type, e.reason) for e in st.transition_events(s, recovered)] == [
        ("Normal", "Reconciled")
    ]


def test_no_events_when_nothing_transitions() -> None:
    s = ready()
    assert st.transition_events(s, ready(s)) == []


# -- runs -----------------------------------------------------------------------------------


def test_bootstrap_run_is_reported_as_bootstrap_not_drift() -> None:
    s, events = st.record_run(ready(), ts(), run(rep=bootstrap_report()), NOW)
    assert s.last_run is not None and s.last_run.bootstrap is True
    assert s.last_successful_run == s.last_run
    assert (cond(s, "Drifted").status, cond(s, "Drifted").reason) == ("False", "Bootstrapped")
    assert s.drift.last_run_rows == 0 and s.drift.total_rows == 0
    assert (cond(s, "LastRunSucceeded").status, cond(s, "LastRunSucceeded").reason) == (
        "True",
        "Bootstrapped",
    )
    assert s.applied_snapshot == st.AppliedSnapshot("20261121T100000Z-0001", "2026-11-21T10:00:00Z")
    assert [e.reason for e in events] == ["RunSucceeded"]


def test_drift_run_counts_rows_the_event_lane_missed() -> None:
    s, _ = st.record_run(
        ready(),
        ts(),
        run("b", bootstrap_report(), end="2026-11-21T10:00:05Z", start="2026-11-21T10:00:00Z"),
        NOW,
    )
    s, events = st.record_run(s, ts(), run("c"), NOW)
    assert s.last_run is not None
    assert s.last_run.drift_rows == 300
    assert s.last_run.apply == {
        "inserted": 10,
        "updated": 280,
        "deleted": 10,
        "alreadyCurrent": 650,
        "staleSkipped": 50,
    }
    assert s.last_run.delta == {"insert": 10, "update": 980, "delete": 10}
    assert (s.drift.last_run_rows, s.drift.last_run_fraction, s.drift.total_rows) == (300, 0.3, 300)
    assert (s.drift.total_inserted, s.drift.total_updated, s.drift.total_deleted) == (10, 280, 10)
    d = cond(s, "Drifted")
    assert (d.status, d.reason) == ("True", "DriftCorrected")
    assert (
        "300 rows" in d.message
        and "650 already current" in d.message
        and "50 stale-skipped" in d.message
    )
    assert [e.reason for e in events] == ["RunSucceeded", "DriftFound"]
    assert s.runs == st.RunCounts(succeeded=2)


def test_a_refill_is_drift_and_its_refill_rows_count_in_the_delta() -> None:
    """The job's refill (the destination had lost rows): the rows it inserted are drift, and
    the fraction is of every row the delta carried, refill included."""
    refilled = report(
        reason="Refilled",
        delta={"insert": 10, "update": 980, "delete": 10, "refill": 99000},
        apply={
            "inserted": 50010,
            "updated": 280,
            "deleted": 10,
            "alreadyCurrent": 49700,
            "staleSkipped": 0,
        },
    )
    s, _ = st.record_run(ready(), ts(), run("b", bootstrap_report()), NOW)
    s, _ = st.record_run(s, ts(), run("c", refilled), NOW)
    assert s.last_run is not None
    assert s.last_run.delta == {"insert": 10, "update": 980, "delete": 10, "refill": 99000}
    assert (s.drift.last_run_rows, s.drift.last_run_fraction) == (50300, 0.503)
    assert (cond(s, "Drifted").status, cond(s, "LastRunSucceeded").reason) == ("True", "Refilled")


def test_the_runs_look_up_of_lost_rows_is_in_the_status_and_survives_a_round_trip() -> None:
    warned = report(lostRows={"sampled": 1000, "missing": 120, "behind": 30, "lost": 150},
                    message="applied a..b: 0 rows corrected (drift); 150 of 1000 sampled rows "
                            "were lost outside any delta and stay lost")
    s, _ = st.record_run(ready(), ts(), run(rep=warned), NOW)
    assert s.last_run is not None
    lost = {"sampled": 1000, "missing": 120, "behind": 30, "lost": 150}
    assert s.last_run.lost_rows == lost
    assert s.to_dict()["lastRun"]["lostRows"] == lost
    assert st.TableSyncStatus.from_dict(s.to_dict()) == s
    assert "stay lost" in cond(s, "LastRunSucceeded").message
    quiet, _ = st.record_run(ready(), ts(), run(rep=report()), NOW)
    assert quiet.last_run is not None and "lostRows" not in quiet.to_dict()["lastRun"]


def test_lost_rows_a_run_kept_are_in_the_drifted_message() -> None:
    """Under lostRows: warn the run finds rows lost and leaves them: Drifted said "the event
    lane had delivered all 0 changes", as if the destination matched the source."""
    warned = report(
        delta={"insert": 0, "update": 0, "delete": 0},
        apply={"inserted": 0, "updated": 0, "deleted": 0, "alreadyCurrent": 0,
               "staleSkipped": 0},
        reason="NoChanges",
        lostRows={"sampled": 1000, "missing": 50, "behind": 30, "lost": 80},
    )
    s, _ = st.record_run(ready(), ts(), run(rep=warned), NOW)
    drifted = cond(s, "Drifted")
    assert (drifted.status, drifted.reason) == ("False", "NoDrift")
    assert "; of 1000 keys looked up in the destination, 80 were missing or older there and " \
        "stay so (spec.destination.lostRows: warn)" in drifted.message
    changed = report(lostRows={"sampled": 1000, "missing": 50, "behind": 30, "lost": 80})
    s, _ = st.record_run(ready(), ts(), run(rep=changed), NOW)
    assert "80 were missing or older there and stay so" in cond(s, "Drifted").message
    # refilled: they are the drift corrected, not kept; none lost: nothing to say
    refilled = report(reason="Refilled", delta={"insert": 0, "update": 0, "delete": 0,
                                                "refill": 1000},
                      lostRows={"sampled": 1000, "missing": 50, "behind": 30, "lost": 80})
    none_lost = report(lostRows={"sampled": 1000, "missing": 50, "behind": 0, "lost": 0})
    for rep in (refilled, none_lost):
        s, _ = st.record_run(ready(), ts(), run(rep=rep), NOW)
        assert "stay so" not in cond(s, "Drifted").message


def test_the_deletes_an_apply_left_for_the_next_run_are_in_the_status() -> None:
    """A bootstrap that found rows the snapshot lacks: lastRun.apply.pendingDeletes and the
    Drifted message say the next run deletes them (and that those deletes are drift then)."""
    noted = bootstrap_report()
    noted["apply"] = {**noted["apply"], "pendingDeletes": 120}
    s, _ = st.record_run(ready(), ts(), run("b", noted), NOW)
    assert s.last_run is not None and s.last_run.apply is not None
    assert s.last_run.apply["pendingDeletes"] == 120
    assert s.to_dict()["lastRun"]["apply"]["pendingDeletes"] == 120
    assert st.TableSyncStatus.from_dict(s.to_dict()) == s
    drifted = cond(s, "Drifted")
    assert (drifted.status, drifted.reason) == ("False", "Bootstrapped")
    assert "; 120 rows the destination holds are left for the next run" in drifted.message
    s, _ = st.record_run(s, ts(), run("c"), NOW)
    assert s.last_run is not None and s.last_run.apply is not None
    assert "pendingDeletes" not in s.last_run.apply
    assert "left for the next run" not in cond(s, "Drifted").message


def test_the_runs_sample_of_rows_the_source_lacks_is_in_the_status() -> None:
    refilled = report(reason="Refilled", absentRows={"sampled": 1020, "absent": 20})
    s, _ = st.record_run(ready(), ts(), run(rep=refilled), NOW)
    assert s.last_run is not None
    assert s.last_run.absent_rows == {"sampled": 1020, "absent": 20}
    assert s.to_dict()["lastRun"]["absentRows"] == {"sampled": 1020, "absent": 20}
    assert st.TableSyncStatus.from_dict(s.to_dict()) == s
    quiet, _ = st.record_run(ready(), ts(), run(rep=report()), NOW)
    assert quiet.last_run is not None and "absentRows" not in quiet.to_dict()["lastRun"]


def test_no_drift_run() -> None:
    quiet = report(
        apply={"inserted": 0, "updated": 0, "deleted": 0, "alreadyCurrent": 1000, "staleSkipped": 0}
    )
    s, events = st.record_run(ready(), ts(), run(rep=quiet), NOW)
    assert (cond(s, "Drifted").status, cond(s, "Drifted").reason) == ("False", "NoDrift")
    assert [e.reason for e in events] == ["RunSucceeded"]


def test_failed_run_keeps_the_last_success_and_says_why() -> None:
    good, _ = st.record_run(
        ready(), ts(), run("good", end="2026-11-21T10:30:05Z", start="2026-11-21T10:30:00Z"), NOW
    )
    guard = report(
        result="GuardTripped",
        reason="DeleteGuardTripped",
        apply=None,
        deltaId="S1..S2",
        message="delta deletes 50000 of 100000 rows (50.0% > 5.0%)",
        error="delta deletes 50000 of 100000 rows (50.0% > 5.0%)",
    )
    s, events = st.record_run(good, ts(), run("bad", guard, succeeded=False, exit_code=3), NOW)
    c = cond(s, "LastRunSucceeded")
    assert (c.status, c.reason) == ("False", "DeleteGuardTripped")
    assert "50000 of 100000" in c.message
    assert "tablesync.dev/approve-delta=S1..S2" in c.message
    assert "still matches snapshot 20261121T110000Z-ab12" in c.message
    assert s.last_successful_run == good.last_successful_run
    assert s.applied_snapshot == good.applied_snapshot
    assert s.drift == good.drift
    assert cond(s, "Drifted") == cond(good, "Drifted")
    assert s.runs == st.RunCounts(succeeded=1, guard_tripped=1)
    assert [(e.type, e.reason) for e in events] == [("Warning", "GuardTripped")]


def test_a_run_is_never_counted_twice() -> None:
    once, _ = st.record_run(ready(), ts(), run(), NOW)
    twice, events = st.record_run(once, ts(), run(), NOW)
    assert twice == once and events == []
    older = run("older", end="2026-11-21T10:00:05Z", start="2026-11-21T10:00:00Z")
    assert not st.is_new(once, older)
    # ...also after a round trip through the stored form (an operator restart).
    restored = st.TableSyncStatus.from_dict(once.to_dict())
    assert st.record_run(restored, ts(), run(), NOW)[0] == restored


def test_runs_of_one_second_are_counted_in_any_order_and_once() -> None:
    s = ready()
    for name in ("product-prices-mab12cd34", "product-prices-29400000", "product-prices-mab12cd34"):
        s, _ = st.record_run(s, ts(), run(name), NOW)
    assert s.runs == st.RunCounts(succeeded=2)
    restored = st.TableSyncStatus.from_dict(s.to_dict())
    assert not st.is_new(restored, run("product-prices-29400000"))
    assert st.is_new(restored, run("product-prices-29400001"))


def test_a_mark_written_before_names_were_kept_counts_that_second_by_name() -> None:
    """A status written by an older operator: its mark counted the Jobs of its second up to
    its name; none of those is counted again after an upgrade."""
    s = st.TableSyncStatus.from_dict(
        {"lastProcessedJob": {"name": "product-prices-m1", "finishedAt": "2026-11-21T11:00:05Z"}}
    )
    assert not st.is_new(s, run("product-prices-29400000"))
    s, _ = st.record_run(s, ts(), run("product-prices-m2"), NOW)
    assert s.runs.succeeded == 1 and not st.is_new(s, run("product-prices-m2"))
    assert not st.is_new(s, run("product-prices-29400000"))


def test_overrun_when_a_run_exceeds_its_budget() -> None:
    body = tablesync(overrunBudgetSeconds=10)
    s, events = st.record_run(ready(body=body), ts(body), run(), NOW)
    o = cond(s, "Overrun")
    assert (o.status, o.reason) == ("True", "CycleOverBudget")
    assert "15s, over its budget of 10s" in o.message
    assert (s.overrun.budget_seconds, s.overrun.last_cycle_seconds) == (10, 15.0)
    assert s.overrun.last_phase_seconds == {"dump": 1.2, "diff": 0.3, "apply": 0.8}
    assert (s.overrun.consecutive_overruns, s.overrun.total_overruns) == (1, 1)
    (event,) = [e for e in events if e.reason == "Overrun"]
    # the Warning says what to do, as the condition does
    assert event.type == "Warning"
    assert "set spec.overrunBudgetSeconds or a slower spec.schedule" in event.message
    s, _ = st.record_run(
        s, ts(body), run("second", start="2026-11-21T11:29:00Z", end="2026-11-21T11:30:00Z"), NOW
    )
    assert (s.overrun.consecutive_overruns, s.overrun.total_overruns) == (2, 2)
    s, _ = st.record_run(
        s, ts(body), run("third", start="2026-11-21T12:00:00Z", end="2026-11-21T12:00:05Z"), NOW
    )
    assert (s.overrun.consecutive_overruns, s.overrun.total_overruns) == (0, 2)
    assert (cond(s, "Overrun").status, cond(s, "Overrun").reason) == ("False", "WithinBudget")


def test_approval_becomes_applied_when_a_run_applies_that_delta() -> None:
    body = tablesync()
    body["metadata"]["annotations"] = {"tablesync.dev/approve-delta": "S1..S2"}
    t = ts(body)
    s = st.mark_reconciled(st.TableSyncStatus(), t, NOW, CRONJOB, approval_pending=True)
    assert s.approval == st.Approval("S1..S2", "Pending")
    assert st.pending_approval(s, t) == "S1..S2"
    other, _ = st.record_run(s, t, run(rep=report(deltaId="S1..S3")), NOW)
    assert st.pending_approval(other, t) == "S1..S2"
    done, events = st.record_run(s, t, run(rep=report(deltaId="S1..S2")), NOW)
    assert done.approval == st.Approval("S1..S2", "Applied", "product-prices-29400000")
    assert st.pending_approval(done, t) is None
    assert "DeltaApproved" in [e.reason for e in events]
    # Reconciling again later keeps it applied; a new approval value is pending again.
    assert (
        st.mark_reconciled(done, t, NOW, CRONJOB, approval_pending=False).approval == done.approval
    )
    body["metadata"]["annotations"]["tablesync.dev/approve-delta"] = "S2..S3"
    assert st.pending_approval(done, ts(body)) == "S2..S3"


def test_an_approval_the_destination_moved_past_is_superseded() -> None:
    """The job ignores an approval that no longer starts at the destination's snapshot; the
    status says so and the variable leaves the CronJob's template."""
    body = tablesync()
    body["metadata"]["annotations"] = {"tablesync.dev/approve-delta": "S1..S2"}
    t = ts(body)
    s = st.mark_reconciled(st.TableSyncStatus(), t, NOW, CRONJOB, approval_pending=True)
    moved, events = st.record_run(s, t, run(rep=report(deltaId="S3..S4")), NOW)
    assert moved.approval == st.Approval("S1..S2", "Superseded", "product-prices-29400000")
    assert st.pending_approval(moved, t) is None
    assert "DeltaApproved" not in [e.reason for e in events]
    again = st.mark_reconciled(moved, t, NOW, CRONJOB, approval_pending=False)
    assert again.approval == moved.approval


# -- refresh: lag and missed schedules --------------------------------------------------------


def refreshed(
    s: st.TableSyncStatus,
    now_offset: timedelta,
    body: dict[str, Any] | None = None,
    fired: list[Any] | None = None,
    cronjob: dict[str, Any] | None = None,
    count: bool = True,
) -> tuple[st.TableSyncStatus, list[st.StatusEvent]]:
    from .samples import TABLESYNC as base

    created = parse_created(body or base)
    return st.refresh(
        s, ts(body), NOW + now_offset, created, cronjob or CRONJOB, fired or [], count
    )


def parse_created(body: dict[str, Any]) -> Any:
    from tablesync_operator.results import parse_time

    return parse_time(body["metadata"]["creationTimestamp"])


def test_lag_grows_between_runs_and_lagging_turns_on_past_the_threshold() -> None:
    body = tablesync(lagThresholdSeconds=600)
    s, _ = st.record_run(ready(body=body), ts(body), run(), NOW)
    s1, _ = refreshed(s, timedelta(seconds=60), body)
    assert s1.lag_seconds == 61  # captured 10:59:58.123, now 11:01:00
    assert (cond(s1, "Lagging").status, cond(s1, "Lagging").reason) == (
        "False",
        "LagWithinThreshold",
    )
    s2, _ = refreshed(s1, timedelta(seconds=700), body)
    assert s2.lag_seconds == 701
    assert (cond(s2, "Lagging").status, cond(s2, "Lagging").reason) == ("True", "LagAboveThreshold")
    assert [e.reason for e in st.transition_events(s1, s2)] == ["Lagging"]
    assert st.transition_events(s2, refreshed(s2, timedelta(seconds=730), body)[0]) == []
    assert s2.lag_threshold_seconds == 600


def test_lagging_without_any_applied_snapshot() -> None:
    body = tablesync(lagThresholdSeconds=600)
    s, _ = refreshed(ready(body=body), timedelta(0), body)
    # Created a day before NOW: far past the threshold with nothing applied.
    assert (cond(s, "Lagging").status, cond(s, "Lagging").reason) == ("True", "NoAppliedSnapshot")
    assert s.lag_seconds is None


def test_missed_schedules_turn_overrun_on() -> None:
    body = tablesync(startingDeadlineSeconds=10)
    s, _ = st.record_run(ready(body=body), ts(body), run(start="2026-11-21T10:59:50Z"), NOW)
    s = dataclasses.replace(
        s, overrun=dataclasses.replace(s.overrun, schedules_checked_until="2026-11-21T11:00:30Z")
    )
    quiet, events = refreshed(s, timedelta(minutes=10), body)
    assert events == [] and cond(quiet, "Overrun").status == "False"
    later, events = refreshed(quiet, timedelta(minutes=31), body)
    assert later.overrun.missed_schedules == 1
    assert later.overrun.last_missed_schedule_time == "2026-11-21T11:30:00Z"
    assert [e.reason for e in events] == ["ScheduleMissed"]
    assert (cond(later, "Overrun").status, cond(later, "Overrun").reason) == (
        "True",
        "ScheduleMissed",
    )
    for message in (events[0].message, cond(later, "Overrun").message):
        assert "spec.schedule slower" in message and "raise spec.startingDeadlineSeconds" in message
    # The next run that starts after the miss and stays within budget clears it.
    nxt, _ = st.record_run(
        later, ts(body), run("next", start="2026-11-21T12:00:00Z", end="2026-11-21T12:00:10Z"), NOW
    )
    assert cond(nxt, "Overrun").status == "False"


def judged_until(
    s: st.TableSyncStatus, until: str, body: dict[str, Any] | None = None
) -> st.TableSyncStatus:
    """``s`` with its missed-schedule watermark at ``until``, kept for the schedule of ``body``."""
    spec = ts(body).spec
    return dataclasses.replace(
        s,
        overrun=dataclasses.replace(
            s.overrun,
            schedules_checked_until=until,
            checked_schedule=spec.schedule,
            checked_time_zone=spec.time_zone,
        ),
    )


def test_a_fired_schedule_is_not_missed_and_suspension_counts_nothing() -> None:
    body = tablesync(startingDeadlineSeconds=10)
    s = judged_until(ready(body=body), "2026-11-21T11:00:30Z", body)
    from .test_schedule import at

    missed, _ = refreshed(s, timedelta(minutes=31), body)
    assert missed.overrun.missed_schedules == 1  # the 11:30 slot, judged at 11:30:30
    fired, _ = refreshed(s, timedelta(minutes=31), body, fired=[at("2026-11-21T11:30:00")])
    assert fired.overrun.missed_schedules == 0
    suspended, events = refreshed(s, timedelta(minutes=31), body, count=False)
    assert suspended.overrun.missed_schedules == 0 and events == []
    # Nothing fires while suspended: the watermark moves to now, and forgets the schedule.
    assert suspended.overrun.schedules_checked_until == "2026-11-21T11:31:00Z"
    assert suspended.overrun.checked_schedule is None


def test_unsuspending_never_judges_slots_of_the_suspension() -> None:
    """Regression (review 2): the last ``grace`` seconds of a suspension were judged after
    ``suspend: false`` and counted as missed."""
    suspended, resumed = tablesync(suspend=True), tablesync(suspend=False)  # */30, grace 320 s
    s = judged_until(ready(body=resumed), "2026-11-21T11:00:30Z", resumed)
    s, events = refreshed(s, timedelta(minutes=32), suspended, count=False)
    assert s.overrun.missed_schedules == 0 and events == []
    # Resumed at 11:33: the 11:30 slot fell in the suspension (the CronJob fired nothing).
    s, _ = refreshed(s, timedelta(minutes=33), resumed)
    s, events = refreshed(s, timedelta(minutes=37), resumed)
    assert s.overrun.missed_schedules == 0 and events == []
    assert cond(s, "Overrun").reason == "NoRunYet"
    # Counting resumed: the 12:00 slot that fires no Job is missed.
    s, events = refreshed(s, timedelta(minutes=66), resumed)
    assert (s.overrun.missed_schedules, s.overrun.last_missed_schedule_time) == (
        1,
        "2026-11-21T12:00:00Z",
    )
    assert [e.reason for e in events] == ["ScheduleMissed"]


def test_a_slot_between_the_last_suspended_refresh_and_the_unsuspend_is_not_judged() -> None:
    suspended, resumed = tablesync(suspend=True), tablesync(suspend=False)
    s = judged_until(ready(body=resumed), "2026-11-21T11:00:30Z", resumed)
    # Last refresh while suspended at 11:29:45; the 11:30 slot passes suspended; resumed
    # (and the CronJob unsuspended) at 11:30:15.
    s, _ = refreshed(s, timedelta(minutes=29, seconds=45), suspended, count=False)
    s, _ = refreshed(s, timedelta(minutes=30, seconds=15), resumed)
    assert s.overrun.schedules_checked_until == "2026-11-21T11:30:15Z"
    assert s.overrun.checked_schedule == "*/30 * * * *"
    s, events = refreshed(s, timedelta(minutes=40), resumed)
    assert s.overrun.missed_schedules == 0 and events == []


def test_a_schedule_change_judges_only_slots_of_the_new_schedule_after_the_change() -> None:
    """Regression (review 2): ``0 * * * *`` -> ``*/5 * * * *`` judged a */5 slot from before
    the change, which the old CronJob never had."""
    hourly, five = tablesync(schedule="0 * * * *"), tablesync(schedule="*/5 * * * *")
    s = judged_until(ready(body=hourly), "2026-11-21T11:00:30Z", hourly)
    s, _ = refreshed(s, timedelta(minutes=10), hourly)  # watermark 11:04:40 (grace 320 s)
    # The schedule becomes */5 (grace 170 s); the CronJob is updated at 11:11.
    s, events = refreshed(s, timedelta(minutes=11), five)
    assert s.overrun.missed_schedules == 0 and events == []
    assert (s.overrun.schedules_checked_until, s.overrun.checked_schedule) == (
        "2026-11-21T11:11:00Z",
        "*/5 * * * *",
    )
    # The new schedule's slots after the change are judged: 11:15 and 11:20 missed.
    s, events = refreshed(s, timedelta(minutes=23), five)
    assert (s.overrun.missed_schedules, s.overrun.last_missed_schedule_time) == (
        2,
        "2026-11-21T11:20:00Z",
    )


def test_a_time_zone_change_judges_no_slot_from_before_the_change() -> None:
    utc = tablesync(schedule="0 * * * *")
    kolkata = tablesync(schedule="0 * * * *", timeZone="Asia/Kolkata")  # UTC+05:30
    s = judged_until(ready(body=utc), "2026-11-21T11:00:30Z", utc)
    s, _ = refreshed(s, timedelta(minutes=10), utc)  # watermark 11:04:40
    # The zone changes at 11:36: 11:30 UTC is a Kolkata slot the UTC CronJob never had.
    s, events = refreshed(s, timedelta(minutes=36), kolkata)
    assert s.overrun.missed_schedules == 0 and events == []
    assert (s.overrun.checked_schedule, s.overrun.checked_time_zone) == (
        "0 * * * *",
        "Asia/Kolkata",
    )
    s, events = refreshed(s, timedelta(minutes=96), kolkata)
    assert s.overrun.last_missed_schedule_time == "2026-11-21T12:30:00Z"


# -- stored form ------------------------------------------------------------------------------


def full_status() -> st.TableSyncStatus:
    body = tablesync(overrunBudgetSeconds=10, timeZone="Europe/Berlin")
    body["metadata"]["annotations"] = {"tablesync.dev/approve-delta": "S1..S2"}
    t = ts(body)
    s = st.mark_reconciled(st.TableSyncStatus(), t, NOW, CRONJOB, approval_pending=True)
    s, _ = st.record_run(
        s,
        t,
        run("a", bootstrap_report(), start="2026-11-21T10:00:00Z", end="2026-11-21T10:00:30Z"),
        NOW,
    )
    s, _ = st.record_run(s, t, run("b"), NOW)
    s = st.record_run_request(s, "now", "product-prices-m1234abcd", NOW)
    s = st.set_active_jobs(s, ["product-prices-m1234abcd"])
    s = dataclasses.replace(
        s, overrun=dataclasses.replace(s.overrun, last_missed_schedule_time="2026-11-21T10:30:00Z")
    )
    s, _ = st.refresh(s, t, NOW, parse_created(body), CRONJOB, [], True)
    return s


def test_round_trip_through_the_stored_form() -> None:
    s = full_status()
    assert st.TableSyncStatus.from_dict(s.to_dict()) == s


def test_every_stored_field_is_in_the_crd_schema() -> None:
    """The API server prunes unknown fields: a field missing from the schema would be lost
    (and with lastProcessedJob, runs would be double counted)."""
    from .test_crd import status_schema

    def walk(value: Any, schema: dict[str, Any], path: str) -> None:
        if isinstance(value, dict):
            props = schema.get("properties")
            extra = schema.get("additionalProperties")
            for key, sub in value.items():
                if props is not None and key in props:
                    walk(sub, props[key], f"{path}.{key}")
                else:
                    assert isinstance(extra, dict), f"{path}.{key} is not in the CRD schema"
                    walk(sub, extra, f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                walk(item, schema["items"], f"{path}[]")
        else:
            kind = schema.get("type")
            expected: dict[str, type | tuple[type, ...]] = {
                "string": str,
                "integer": int,
                "number": (int, float),
                "boolean": bool,
            }
            assert kind in expected, f"{path}: no type"
            assert isinstance(value, expected[kind]), f"{path}: {value!r} is not {kind}"

    walk(full_status().to_dict(), status_schema(), "status")


def test_a_failure_naming_a_variable_names_its_secret_and_field() -> None:
    bad = report(
        result="Failed",
        reason="InputError",
        apply=None,
        error="TABLESYNC_DESTINATION_URI: password authentication failed for user postgres",
    )
    s, _ = st.record_run(ready(), ts(), run(rep=bad, succeeded=False, exit_code=2), NOW)
    message = cond(s, "LastRunSucceeded").message
    assert (
        "TABLESYNC_DESTINATION_URI (Secret 'warehouse' key 'uri', "
        "spec.destination.uriSecretRef): password authentication failed" in message
    )


def test_run_drift_and_overrun_events_are_posted_on_transitions_only() -> None:
    """DESIGN.md section 3: a steadily drifting, over-budget sync does not post per run."""
    body = tablesync(overrunBudgetSeconds=10)
    s, first = st.record_run(ready(body=body), ts(body), run("a"), NOW)
    assert [e.reason for e in first] == ["RunSucceeded", "DriftFound", "Overrun"]
    s, second = st.record_run(
        s, ts(body), run("b", start="2026-11-21T11:29:00Z", end="2026-11-21T11:30:00Z"), NOW
    )
    assert second == []  # still succeeding, still drifting, still over budget
    s, failed = st.record_run(
        s, ts(body), run("c", succeeded=False, exit_code=2, start="2026-11-21T12:00:00Z",
                         end="2026-11-21T12:00:05Z"), NOW
    )
    assert [e.reason for e in failed] == ["RunFailed"]
    s, again = st.record_run(
        s, ts(body), run("d", succeeded=False, exit_code=2, start="2026-11-21T12:30:00Z",
                         end="2026-11-21T12:30:05Z"), NOW
    )
    assert again == []  # the same failure again
    s, back = st.record_run(
        s, ts(body), run("e", start="2026-11-21T13:00:00Z", end="2026-11-21T13:00:05Z"), NOW
    )
    assert [e.reason for e in back] == ["RunSucceeded"]  # drifting all along: no DriftFound


def test_a_refill_for_rows_the_source_lacks_says_what_the_sample_found() -> None:
    """No change, every row of T applied again (none written), 20 rows noted: the Drifted
    message must not count the refill's rows as changes the event lane delivered, and says
    what the sample found (third review)."""
    refilled = report(
        reason="Refilled",
        delta={"insert": 0, "update": 0, "delete": 0, "refill": 1000},
        apply={"inserted": 0, "updated": 0, "deleted": 0, "alreadyCurrent": 1000,
               "staleSkipped": 0, "pendingDeletes": 20},
        absentRows={"sampled": 1020, "absent": 20},
    )
    s, _ = st.record_run(ready(), ts(), run(rep=refilled), NOW)

    drifted = cond(s, "Drifted")
    assert (drifted.status, drifted.reason) == ("False", "NoDrift")
    assert "delivered all 0 changes, and the 1000 rows of the snapshot applied again were " \
        "current" in drifted.message
    assert "of 1020 sampled rows of the destination, 20 have a key the source lacks" \
        in drifted.message
    assert "20 rows the destination holds are left for the next run" in drifted.message
