"""results: finished Jobs and their pods' termination messages -> run outcomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tablesync_operator.results import (
    ReportError,
    job_finished_at,
    job_is_active,
    outcome_from_job,
    parse_report,
)

from .samples import REPORT, job, pod, pod_with_report, report


def test_parses_the_documented_report() -> None:
    rep = parse_report(json.dumps(REPORT))
    assert (rep.result, rep.reason) == ("Succeeded", "Applied")
    assert rep.delta is not None and rep.delta.total == 1000
    assert rep.apply is not None
    assert (rep.apply.changed, rep.apply.already_current, rep.apply.stale_skipped) == (300, 650, 50)
    assert rep.captured_at == datetime(2026, 11, 21, 10, 59, 58, 123456, tzinfo=UTC)
    assert rep.phase_seconds == {"dump": 1.2, "diff": 0.3, "apply": 0.8}
    assert rep.delta_id == "20261121T103000Z-cd34..20261121T110000Z-ab12"


@pytest.mark.parametrize(
    "text", ["", "not json", "[1]", '{"result": "Maybe"}', '{"result": "Succe']
)
def test_garbage_is_not_a_report(text: str) -> None:
    with pytest.raises(ReportError):
        parse_report(text)


def test_finished_and_active_jobs() -> None:
    assert job_finished_at(job()) == datetime(2026, 11, 21, 11, 0, 5, tzinfo=UTC)
    assert job_finished_at(job(succeeded=False)) == datetime(2026, 11, 21, 11, 0, 5, tzinfo=UTC)
    assert job_is_active(job(finished=False))
    assert not job_is_active(job())


def test_successful_job_with_report() -> None:
    out = outcome_from_job(job(), [pod_with_report(REPORT)])
    assert (out.result, out.reason) == ("Succeeded", "Applied")
    assert out.cycle_seconds == 15.0
    assert out.report is not None and out.report.rows == 100000
    assert out.scheduled_at == datetime(2026, 11, 21, 11, 0, tzinfo=UTC)


def test_guard_tripped_job_takes_reason_from_the_report() -> None:
    rep = report(
        result="GuardTripped",
        reason="DeleteGuardTripped",
        message="delta deletes 50000 of 100000 rows (50.0% > 5.0%)",
        error="delta deletes 50000 of 100000 rows (50.0% > 5.0%)",
        apply=None,
    )
    failed = job(
        succeeded=False,
        failed_reason="PodFailurePolicy",
        failed_message="Container tablesync exited with 3",
    )
    out = outcome_from_job(failed, [pod_with_report(rep, exit_code=3)])
    assert (out.result, out.reason) == ("GuardTripped", "DeleteGuardTripped")
    assert "50000 of 100000" in out.message
    assert out.exit_code == 3


def test_input_error_without_report_uses_the_exit_code() -> None:
    failed = job(succeeded=False, failed_reason="PodFailurePolicy")
    out = outcome_from_job(failed, [pod(message=None, exit_code=2, reason="Error")])
    assert (out.result, out.reason) == ("Failed", "InputError")


def test_deadline_exceeded_wins_over_whatever_the_pod_said() -> None:
    failed = job(
        succeeded=False,
        failed_reason="DeadlineExceeded",
        failed_message="Job was active longer than specified deadline",
    )
    rep = report(result="Failed", reason="TransientError", error="terminated", apply=None)
    out = outcome_from_job(failed, [pod_with_report(rep, exit_code=75)])
    assert (out.result, out.reason) == ("Failed", "DeadlineExceeded")
    assert "activeDeadlineSeconds (3600s)" in out.message


def test_oom_killed_pod() -> None:
    failed = job(succeeded=False)
    out = outcome_from_job(failed, [pod(message=None, exit_code=137, reason="OOMKilled")])
    assert out.reason == "OOMKilled"
    assert "memory" in out.message


def test_a_pod_evicted_for_its_scratch_volume_names_the_scratch_size_limit() -> None:
    """Past the emptyDir's sizeLimit the kubelet evicts the pod (SIGKILL, exit 137, no
    report) and the Job retries until its backoff limit: the status said
    BackoffLimitExceeded "last exit code 137", which reads as out of memory."""
    evicted = pod(message=None, exit_code=137, reason="Error")
    evicted["status"].update(
        reason="Evicted", message='Usage of EmptyDir volume "scratch" exceeds the limit "10Gi". '
    )
    out = outcome_from_job(job(succeeded=False), [evicted])
    assert (out.result, out.reason) == ("Failed", "Evicted")
    assert 'EmptyDir volume "scratch" exceeds the limit "10Gi"' in out.message
    assert "raise spec.job.scratchSizeLimit" in out.message
    evicted["status"]["message"] = (
        "Pod ephemeral local storage usage exceeds the total limit of containers 2Gi. "
    )
    out = outcome_from_job(job(succeeded=False), [evicted])
    assert out.reason == "Evicted"
    assert "spec.job.resources.limits.ephemeral-storage" in out.message


def test_backoff_limit_exceeded_keeps_the_job_reason_and_exit_code() -> None:
    failed = job(succeeded=False)
    out = outcome_from_job(failed, [pod(message="", exit_code=75, reason="Error")])
    assert out.reason == "BackoffLimitExceeded"
    assert "last exit code 75" in out.message


def test_failed_report_message_reaches_the_outcome() -> None:
    rep = report(
        result="Failed",
        reason="InputError",
        error='connection to destination failed: password authentication failed for user "app"',
        apply=None,
    )
    out = outcome_from_job(
        job(succeeded=False, failed_reason="PodFailurePolicy"), [pod_with_report(rep, exit_code=2)]
    )
    assert (out.result, out.reason) == ("Failed", "InputError")
    assert "password authentication failed" in out.message


def test_completed_job_without_report_is_a_success_with_unknown_figures() -> None:
    out = outcome_from_job(job(), [pod(message=None)])
    assert (out.result, out.reason, out.report) == ("Succeeded", "ReportMissing", None)
    unreadable = outcome_from_job(job(), [pod(message="{truncated")])
    assert unreadable.reason == "ReportUnreadable"


def test_the_last_pod_of_a_retried_job_is_read() -> None:
    first = pod_with_report(
        report(result="Failed", reason="TransientError", apply=None), exit_code=75
    )
    first["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = (
        "2026-11-21T11:00:01Z"
    )
    second = pod_with_report(REPORT)
    out = outcome_from_job(job(), [second, first])
    assert out.reason == "Applied"


def test_unfinished_job_is_refused() -> None:
    with pytest.raises(ValueError):
        outcome_from_job(job(finished=False), [])
