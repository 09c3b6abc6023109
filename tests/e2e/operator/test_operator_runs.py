"""Runs that go wrong or slow: a tripped guard and its approval, a wrong password, an
overrun, lag growing past its threshold."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from localcluster.testing import Cluster, wait_for
from tests.e2e.operator.operator_kit import RESYNC_SECONDS, Lane

pytestmark = pytest.mark.e2e


def approve_env(lane: Lane) -> list[str]:
    cronjob = lane.get_object("cronjob", lane.name)
    env = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    return [e["value"] for e in env if e["name"] == "TABLESYNC_APPROVE_DELTA"]


def test_guard_trips_on_a_half_deleted_source_and_the_approval_applies_it(
    make_lane: Callable[[str], Lane],
) -> None:
    lane = make_lane("prices")
    lane.load(2000)
    lane.secrets()
    lane.create()
    assert lane.run()["result"] == "Succeeded"
    good = lane.status()["lastSuccessfulRun"]
    lane.src("DELETE FROM public.prices WHERE product_id % 2 = 0")

    tripped = lane.run()
    assert (tripped["result"], tripped["reason"]) == ("GuardTripped", "DeleteGuardTripped")
    delta = tripped["deltaId"]
    cond = lane.wait_condition("LastRunSucceeded", "False", "DeleteGuardTripped")
    assert f"tablesync.dev/approve-delta={delta}" in cond["message"]
    assert "maxDeleteFraction" in cond["message"]
    assert lane.dst("SELECT count(*) FROM public.prices") == [(2000,)]  # untouched
    status = lane.status()
    assert status["lastSuccessfulRun"] == good  # the last good figures stay
    assert status["runs"]["guardTripped"] == 1
    assert "GuardTripped" in [e["reason"] for e in lane.events()]

    lane.annotate("tablesync.dev/approve-delta", delta)
    wait_for(lambda: approve_env(lane) == [delta], 30, "the approval in the CronJob template")
    assert lane.status()["approval"] == {"deltaId": delta, "state": "Pending"}

    applied = lane.run()
    assert applied["result"] == "Succeeded", applied
    assert applied["deltaId"] == delta
    assert applied["apply"]["deleted"] == 1000
    assert lane.dst("SELECT count(*) FROM public.prices") == [(1000,)]
    lane.wait_condition("LastRunSucceeded", "True")
    assert lane.status()["approval"]["state"] == "Applied"
    wait_for(lambda: approve_env(lane) == [], 30, "the approval to leave the CronJob template")

    # The next run is an ordinary one again (a stale approval would fail it).
    lane.src("INSERT INTO public.prices VALUES (5000, 'late', 1, now())")
    follow_up = lane.run()
    assert follow_up["result"] == "Succeeded", follow_up
    assert follow_up["apply"]["inserted"] == 1


def test_wrong_destination_password_fails_the_run_with_a_clear_message(
    cluster: Cluster, make_lane: Callable[[str], Lane]
) -> None:
    lane = make_lane("prices")
    lane.load(100)
    lane.secrets(destination_password="not-the-password")
    lane.create()
    failed = lane.run()
    assert (failed["result"], failed["reason"]) == ("Failed", "InputError"), failed
    cond = lane.wait_condition("LastRunSucceeded", "False", "InputError")
    assert "password" in cond["message"]
    assert "Secret 'warehouse' key 'uri', spec.destination.uriSecretRef" in cond["message"]
    assert "not-the-password" not in str(lane.status())
    assert lane.status()["runs"]["failed"] == 1
    # One attempt only: exit code 2 is a FailJob rule of the podFailurePolicy.
    (job,) = [j for j in lane.jobs() if j["metadata"]["name"] == failed["jobName"]]
    assert job["status"].get("failed") == 1

    lane.secrets()
    good = lane.run()
    assert good["result"] == "Succeeded", good
    cluster.kubectl(
        "wait",
        "--for=condition=LastRunSucceeded",
        f"tablesync/{lane.name}",
        "-n",
        lane.namespace,
        "--timeout=30s",
    )


def test_overrun_and_lag(make_lane: Callable[[str], Lane]) -> None:
    lane = make_lane("prices")
    lane.load(20_000)
    # Each read of the source view sleeps 3 s, so a run is over a 1 s budget whatever the
    # machine's speed (Job times have a 1 s resolution).
    lane.src(
        "CREATE VIEW public.paced_prices AS SELECT * FROM public.prices "
        "WHERE (SELECT pg_sleep(3)::text) = ''"
    )
    lane.secrets()
    source = lane.manifest()["spec"]["source"] | {"table": "public.paced_prices"}
    lane.create(overrunBudgetSeconds=1, lagThresholdSeconds=20, source=source)

    first = lane.run()
    assert first["result"] == "Succeeded"
    assert first["cycleSeconds"] >= 3
    cond = lane.wait_condition("Overrun", "True", "CycleOverBudget")
    assert "over its budget of 1s" in cond["message"]
    overrun = lane.status()["overrun"]
    assert overrun["budgetSeconds"] == 1
    assert overrun["lastCycleSeconds"] == first["cycleSeconds"]
    assert set(overrun["lastPhaseSeconds"]) == {"dump", "diff", "apply"}
    assert (overrun["consecutiveOverruns"], overrun["totalOverruns"]) == (1, 1)
    assert "Overrun" in [e["reason"] for e in lane.events()]

    # lagSeconds grows between runs (the resync timer), and Lagging turns on past 20 s.
    lag_before = lane.status()["lagSeconds"]
    time.sleep(2 * RESYNC_SECONDS + 1)
    assert lane.status()["lagSeconds"] > lag_before
    lagging = lane.wait_condition("Lagging", "True", "LagAboveThreshold", timeout_seconds=60)
    assert "20s threshold" in lagging["message"]
    assert lane.status()["lagSeconds"] > 20
    assert "Lagging" in [e["reason"] for e in lane.events()]

    second = lane.run()
    assert second["result"] == "Succeeded"
    lane.wait_condition("Lagging", "False", "LagWithinThreshold")
    assert "CaughtUp" in [e["reason"] for e in lane.events()]
    wait_for(
        lambda: lane.status()["overrun"]["consecutiveOverruns"] == 2,
        30,
        "the second overrun to be counted",
    )
    assert lane.status()["overrun"]["totalOverruns"] == 2

    # A budget the run fits in clears the condition and the streak, not the total.
    lane.create(overrunBudgetSeconds=600, lagThresholdSeconds=20, source=source)
    third = lane.run()
    assert third["result"] == "Succeeded"
    lane.wait_condition("Overrun", "False", "WithinBudget")
    overrun = lane.status()["overrun"]
    assert (overrun["consecutiveOverruns"], overrun["totalOverruns"]) == (0, 2)
    assert overrun["budgetSeconds"] == 600


def test_a_schedule_skipped_under_forbid_is_an_overrun(make_lane: Callable[[str], Lane]) -> None:
    """Every minute, but each run takes 80 s: the real CronJob controller skips the next
    slot (concurrencyPolicy Forbid, startingDeadlineSeconds 10) and the operator says so."""
    lane = make_lane("prices")
    lane.load(100)
    lane.src(
        "CREATE VIEW public.slow_prices AS SELECT * FROM public.prices "
        "WHERE (SELECT pg_sleep(80)::text) = ''"
    )
    lane.secrets()
    source = lane.manifest()["spec"]["source"] | {"table": "public.slow_prices"}
    lane.create(
        schedule="* * * * *", startingDeadlineSeconds=10, overrunBudgetSeconds=600, source=source
    )

    first = wait_for(
        lambda: lane.status().get("lastRun"),
        200,
        "the first scheduled (slow) run to finish",
        interval_seconds=2,
    )
    assert first["result"] == "Succeeded", first
    cond = lane.wait_condition("Overrun", "True", "ScheduleMissed", timeout_seconds=90)
    overrun = lane.status()["overrun"]
    assert overrun["missedSchedules"] >= 1
    assert overrun["totalOverruns"] == 0  # the cycle itself was within its budget
    assert overrun["lastMissedScheduleTime"] in cond["message"]
    assert "concurrencyPolicy Forbid" in cond["message"]
    assert "ScheduleMissed" in [e["reason"] for e in lane.events()]


def test_rows_the_destination_lost_show_in_the_status(make_lane: Callable[[str], Lane]) -> None:
    """``lostRows: warn`` only reports them: the figures and the message reach the status
    (the pod's log goes with the Job); with ``refill`` the run brings them back as drift."""
    lane = make_lane("prices")
    lane.load(2000)
    lane.secrets()
    destination = lane.manifest()["spec"]["destination"]
    lane.create(destination={**destination, "lostRows": "warn"})
    assert lane.run()["result"] == "Succeeded"
    lane.dst("DELETE FROM public.prices WHERE product_id <= 500")

    warned = lane.run()
    assert (warned["result"], warned["reason"]) == ("Succeeded", "NoChanges"), warned
    lost = warned["lostRows"]
    assert lost["sampled"] == 1000 and lost["missing"] == lost["lost"] > 100, lost
    assert "stay lost (spec.destination.lostRows: warn)" in warned["message"]
    cond = lane.wait_condition("LastRunSucceeded", "True", "NoChanges")
    assert "stay lost" in cond["message"]

    generation = lane.create(destination=destination)["metadata"]["generation"]
    wait_for(lambda: lane.status().get("observedGeneration") == generation, 30,
             "the CronJob to take lostRows: refill")
    refilled = lane.run()
    assert (refilled["result"], refilled["reason"]) == ("Succeeded", "Refilled"), refilled
    assert refilled["apply"]["inserted"] == 500 and refilled["driftRows"] == 500
    assert refilled["delta"]["refill"] > 0 and refilled["lostRows"]["lost"] > 100
    lane.wait_condition("Drifted", "True", "DriftCorrected")
    assert lane.table(lane.destination_db) == lane.table(lane.source_db)


def test_rows_the_source_lacks_show_in_the_status(make_lane: Callable[[str], Lane]) -> None:
    """A bootstrap onto a destination with rows the source lacks: the status shows them as
    left for the next run (``apply.pendingDeletes``, which the CRD's schema keeps), and that
    run deletes them as drift. Later such rows are found by a run's sample (``absentRows``),
    which refills, and the run after deletes them."""
    lane = make_lane("prices")
    lane.load(1000)
    lane.dst("INSERT INTO public.prices VALUES (9001, 'gone', 1, now() - interval '2 days'), "
             "(9002, 'gone', 1, now() - interval '2 days')")
    lane.secrets()
    lane.create()

    first = lane.run()
    assert (first["result"], first["reason"]) == ("Succeeded", "Bootstrapped"), first
    assert first["apply"]["pendingDeletes"] == 2
    drifted = lane.wait_condition("Drifted", "False", "Bootstrapped")
    assert "2 rows the destination holds are left for the next run" in drifted["message"]

    second = lane.run()
    assert (second["result"], second["apply"]["deleted"]) == ("Succeeded", 2), second
    assert "pendingDeletes" not in second["apply"] and second["driftRows"] == 2
    assert lane.table(lane.destination_db) == lane.table(lane.source_db)

    # In steady state: rows no snapshot had, found by the run's sample of the destination.
    lane.src("UPDATE public.prices SET updated_at = now() WHERE product_id = 1")
    lane.dst("INSERT INTO public.prices SELECT g, 'gone', 1, now() - interval '2 days' "
             "FROM generate_series(9001, 9010) g")
    refilled = lane.run()
    assert (refilled["result"], refilled["reason"]) == ("Succeeded", "Refilled"), refilled
    assert refilled["absentRows"] == {"sampled": 1010, "absent": 10}
    assert refilled["apply"]["pendingDeletes"] == 10
    third = lane.run()
    assert (third["result"], third["apply"]["deleted"]) == ("Succeeded", 10), third
    assert lane.table(lane.destination_db) == lane.table(lane.source_db)
