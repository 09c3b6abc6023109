"""A TableSync's CronJob follows it: create, edit, suspend, delete; a broken spec or a
missing Secret stalls it without touching the CronJob, and fixing it recovers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from localcluster.testing import Cluster, wait_for
from tests.e2e.operator.operator_kit import Lane

pytestmark = pytest.mark.e2e


def cronjob(lane: Lane) -> dict[str, object] | None:
    found = [c for c in lane.cronjobs() if c["metadata"]["name"] == lane.name]
    return found[0] if found else None


def test_cronjob_is_created_owned_edited_suspended_and_deleted(
    cluster: Cluster, make_lane: Callable[[str], Lane]
) -> None:
    lane = make_lane("prices")
    lane.secrets()
    ts = lane.create(schedule="*/30 * * * *", timeZone="Europe/Berlin")
    lane.wait_condition("Ready", "True", "Reconciled")

    cj = lane.get_object("cronjob", "prices")
    assert cj["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "tablesync.dev/v1alpha1",
            "kind": "TableSync",
            "name": "prices",
            "uid": ts["metadata"]["uid"],
            "controller": True,
        }
    ]
    spec = cj["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["suspend"]) == (
        "*/30 * * * *",
        "Europe/Berlin",
        False,
    )
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == 300
    job = spec["jobTemplate"]["spec"]
    assert job["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 3]
    pod = job["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    status = lane.status()
    assert status["observedGeneration"] == ts["metadata"]["generation"]
    assert status["cronJobName"] == "prices"
    # No finalizer: deleting a TableSync (or its namespace) never waits for the operator.
    assert not lane.get()["metadata"].get("finalizers")

    # edit -> the CronJob follows
    lane.create(schedule="*/5 * * * *")
    wait_for(
        lambda: lane.get_object("cronjob", "prices")["spec"]["schedule"] == "*/5 * * * *",
        30,
        "the CronJob to take the new schedule",
    )
    assert lane.status()["observedGeneration"] == lane.get()["metadata"]["generation"]

    # suspend
    lane.create(schedule="*/5 * * * *", suspend=True)
    wait_for(
        lambda: lane.get_object("cronjob", "prices")["spec"]["suspend"] is True,
        30,
        "the CronJob to be suspended",
    )
    lane.wait_condition("Ready", "True", "Suspended")
    assert len(lane.cronjobs()) == 1

    # delete -> garbage collection removes the CronJob
    cluster.kubectl("delete", "tablesync", "prices", "-n", lane.namespace)
    wait_for(lambda: cronjob(lane) is None, 60, "the CronJob to be garbage-collected")


def test_a_hand_edit_of_the_cronjob_is_reverted(
    cluster: Cluster, make_lane: Callable[[str], Lane]
) -> None:
    """The TableSync is the source of truth: a CronJob suspended or rescheduled by hand
    (kubectl edit/patch) is put back by the next resync, so Ready never claims a schedule
    the CronJob does not run."""
    lane = make_lane("prices")
    lane.secrets()
    lane.create(schedule="*/30 * * * *")
    lane.wait_condition("Ready", "True", "Reconciled")

    cluster.kubectl(
        "patch", "cronjob", "prices", "-n", lane.namespace, "--type=merge",
        "-p", json.dumps({"spec": {"suspend": True, "schedule": "*/5 * * * *"}}),
    )
    edited = lane.get_object("cronjob", "prices")["spec"]
    assert (edited["suspend"], edited["schedule"]) == (True, "*/5 * * * *")

    def restored() -> bool:
        spec = lane.get_object("cronjob", "prices")["spec"]
        return (spec["suspend"], spec["schedule"]) == (False, "*/30 * * * *")

    wait_for(restored, 30, "the operator to put the hand-edited CronJob back")
    assert lane.condition("Ready")["status"] == "True"
    # Put back once: the CronJob's spec is then left alone.
    generation = lane.get_object("cronjob", "prices")["metadata"]["generation"]
    time.sleep(8)  # more than two resync intervals
    assert lane.get_object("cronjob", "prices")["metadata"]["generation"] == generation


def test_invalid_spec_stalls_without_cronjob_churn_and_recovers(
    make_lane: Callable[[str], Lane],
) -> None:
    lane = make_lane("prices")
    lane.secrets()
    lane.create(schedule="*/30 * * * *")
    lane.wait_condition("Ready", "True")
    version = lane.get_object("cronjob", "prices")["metadata"]["resourceVersion"]

    # Admission cannot know IANA zones; the operator can.
    lane.create(schedule="*/30 * * * *", timeZone="Mars/Olympus_Mons")
    stalled = lane.wait_condition("Stalled", "True", "InvalidSpec")
    assert "spec.timeZone" in stalled["message"] and "IANA" in stalled["message"]
    assert lane.condition("Ready")["status"] == "False"
    assert lane.status()["observedGeneration"] == lane.get()["metadata"]["generation"]
    assert lane.get_object("cronjob", "prices")["metadata"]["resourceVersion"] == version
    reasons = [e["reason"] for e in lane.events()]
    assert "InvalidSpec" in reasons

    lane.create(schedule="*/30 * * * *", timeZone="Europe/Berlin")
    lane.wait_condition("Ready", "True", "Reconciled")
    assert lane.condition("Stalled")["status"] == "False"
    assert lane.get_object("cronjob", "prices")["spec"]["timeZone"] == "Europe/Berlin"


def test_a_spec_the_api_server_refuses_in_the_cronjob_stalls_and_recovers(
    make_lane: Callable[[str], Lane],
) -> None:
    """A value admission lets through but the CronJob cannot hold (a memory limit of
    ``512mi``, lower-case: not a Kubernetes quantity) is a bad spec: Stalled=True naming it,
    as kstatus and Argo CD read it (Failed / Degraded), not an API error retried forever."""
    lane = make_lane("prices")
    lane.secrets()
    lane.create(job={"resources": {"limits": {"memory": "512mi"}}})
    stalled = lane.wait_condition("Stalled", "True", "InvalidSpec", timeout_seconds=30)
    assert "spec.job.resources.limits.memory" in stalled["message"]
    assert lane.condition("Reconciling")["status"] == "False"
    assert lane.status()["observedGeneration"] == lane.get()["metadata"]["generation"]

    lane.create(job={"resources": {"limits": {"memory": "512Mi"}}})
    lane.wait_condition("Ready", "True", "Reconciled")
    assert lane.condition("Stalled")["status"] == "False"


def test_a_cronjob_the_api_server_finds_invalid_stalls_and_recovers(
    make_lane: Callable[[str], Lane],
) -> None:
    """Any value the API server's validation of the CronJob refuses (422; here a resource
    name, ``cpuu``, that is no resource) stalls naming what it refused, rather than retry
    an API error every few seconds for ever."""
    lane = make_lane("prices")
    lane.secrets()
    lane.create(job={"resources": {"limits": {"cpuu": "1"}}})
    stalled = lane.wait_condition("Stalled", "True", "InvalidSpec", timeout_seconds=30)
    assert "refused the CronJob" in stalled["message"]
    assert "cpuu" in stalled["message"]
    assert lane.condition("Reconciling")["status"] == "False"
    assert cronjob(lane) is None

    lane.create(job={"resources": {"limits": {"cpu": "1"}}})
    lane.wait_condition("Ready", "True", "Reconciled")
    assert lane.condition("Stalled")["status"] == "False"


def test_missing_secret_stalls_and_recovers_without_a_restart(
    cluster: Cluster, make_lane: Callable[[str], Lane], tablesync_operator: object
) -> None:
    lane = make_lane("prices")
    lane.create()
    stalled = lane.wait_condition("Stalled", "True", "SecretNotFound")
    assert "Secret 'replica'" in stalled["message"]
    assert "spec.source.uriSecretRef" in stalled["message"]
    assert cronjob(lane) is None

    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "replica", "namespace": lane.namespace},
            "stringData": {"wrong-key": "x"},
        }
    )
    lane.wait_condition("Stalled", "True", "SecretKeyNotFound")

    lane.secrets()  # no edit of the TableSync: the resync notices
    lane.wait_condition("Ready", "True", "Reconciled", timeout_seconds=30)
    assert cronjob(lane) is not None
    events = {e["reason"] for e in lane.events()}
    assert {"SecretNotFound", "Reconciled"} <= events
    assert json.dumps(lane.status()).count("wrong-key") <= 1  # key names only, never values


def test_a_missing_job_service_account_stalls_and_recovers_without_a_restart(
    cluster: Cluster, make_lane: Callable[[str], Lane], tablesync_operator: object
) -> None:
    """Before, the CronJob's Jobs could not create a pod and each run ended an hour later
    as DeadlineExceeded, with Ready=True meanwhile."""
    lane = make_lane("prices")
    lane.secrets()
    lane.create(job={"serviceAccountName": "s3-reader"})
    stalled = lane.wait_condition("Stalled", "True", "ServiceAccountNotFound")
    assert "'s3-reader'" in stalled["message"] and lane.namespace in stalled["message"]
    assert cronjob(lane) is None

    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "s3-reader", "namespace": lane.namespace},
        }
    )
    lane.wait_condition("Ready", "True", "Reconciled", timeout_seconds=30)
    assert cronjob(lane) is not None


def test_a_cronjob_deleted_by_hand_is_restored_and_its_past_slots_not_called_missed(
    cluster: Cluster, make_lane: Callable[[str], Lane]
) -> None:
    """``kubectl delete cronjob`` takes the CronJob's Jobs with it (garbage collection), so
    the slots they ran for show no Job any more: the operator restores the CronJob, and a
    slot that ran (its run is even in the status) is not reported as one that fired none."""
    lane = make_lane("prices")
    lane.load(100)
    lane.secrets()
    lane.create(schedule="* * * * *", startingDeadlineSeconds=30)  # a slot is judged at +50 s
    # two slots run: the oldest kept Job's slot bounds what is judged (the Job history)
    wait_for(
        lambda: lane.status()["runs"]["succeeded"] == 2, 200, "two scheduled runs to finish",
        interval_seconds=1,
    )
    second = lane.status()["lastRun"]
    job = lane.get_object("job", second["jobName"])
    slot = datetime.fromisoformat(
        job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    )
    assert datetime.now(UTC) < slot + timedelta(seconds=40), "the run took too long to tell"
    uid = lane.get_object("cronjob", "prices")["metadata"]["uid"]

    cluster.kubectl("delete", "cronjob", "prices", "-n", lane.namespace)
    wait_for(
        lambda: cronjob(lane) is not None
        and lane.get_object("cronjob", "prices")["metadata"]["uid"] != uid,
        30, "the operator to restore the CronJob",
    )
    wait_for(lambda: not any(j["metadata"]["name"] == second["jobName"] for j in lane.jobs()),
             60, "garbage collection to remove the deleted CronJob's Jobs")
    # past the slot's judgement (+50 s) and two resyncs, before the next slot's
    time.sleep(max(0.0, (slot + timedelta(seconds=58) - datetime.now(UTC)).total_seconds()))
    assert lane.status()["overrun"]["missedSchedules"] == 0, lane.status()["overrun"]
    assert "ScheduleMissed" not in [e["reason"] for e in lane.events()]
    assert lane.condition("Overrun")["reason"] != "ScheduleMissed"


def test_a_tablesync_created_again_under_its_name_is_not_stalled_by_its_predecessor(
    cluster: Cluster, make_lane: Callable[[str], Lane]
) -> None:
    """Delete and create again (the way to change an immutable field such as primaryKey):
    the predecessor's CronJob, owned by the old uid, lingers until garbage collection
    removes it. That is no conflict to fix by renaming: the new TableSync waits for it."""
    lane = make_lane("prices")
    lane.secrets()
    first = lane.create()
    lane.wait_condition("Ready", "True", "Reconciled")

    cluster.kubectl("delete", "tablesync", "prices", "-n", lane.namespace, "--wait=true")
    second = lane.create()
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    lane.wait_condition("Ready", "True", "Reconciled", timeout_seconds=60)
    assert "CronJobConflict" not in [e["reason"] for e in lane.events()]
