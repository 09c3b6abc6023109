"""The compact report: valid JSON whatever the secrets are, and at most 4 KiB with a useful
message and error (job-image/README.md, "Report")."""

from __future__ import annotations

import json

import pytest

from tablesync_job import logs
from tablesync_job.report import MAX_REPORT_BYTES, TRUNCATED_MARKER, Report


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test registers its own secrets; none leak into other tests."""
    monkeypatch.setattr(logs, "_SECRETS", set())


def succeeded() -> Report:
    return Report(run_id="r1", result="Succeeded", reason="Applied",
                  message="applied 100 changes (100 drift)", rows=100,
                  delta={"insert": 100, "update": 0, "delete": 0}, bootstrap=False,
                  phase_seconds={"dump": 1.5})


@pytest.mark.parametrize("password", ["100", "null", "true", "false", "rows", "result",
                                      '","', '":"', "1.5", "Applied", "Succeeded"])
def test_a_password_that_is_also_json_text_leaves_the_report_valid(password: str) -> None:
    logs.register_secret(password)
    text = succeeded().to_json()
    doc = json.loads(text)
    assert doc["rows"] == 100
    assert doc["delta"] == {"insert": 100, "update": 0, "delete": 0}
    assert doc["result"] == "Succeeded"
    assert doc["bootstrap"] is False
    assert doc["phaseSeconds"] == {"dump": 1.5}
    assert doc["reason"] == "Applied"  # a closed vocabulary the operator matches on


def test_secrets_in_string_values_are_redacted() -> None:
    logs.register_secret("postgresql://app:s3cr3t-pw@db:5432/x")
    report = Report(run_id="r1", message="login as app:s3cr3t-pw refused",
                    error="login as app:s3cr3t-pw refused")
    assert "s3cr3t-pw" not in report.to_json()
    assert json.loads(report.to_json())["error"] == "login as app:*** refused"
    assert "s3cr3t-pw" not in json.dumps(report.compact())  # the stored run record


def missing_columns(fmt: str, n: int) -> str:
    names = ", ".join(fmt.format(i) for i in range(n))
    return (f"spec.destination.table: public.prices lacks source column(s) {names}; "
            "add them to the destination table")


@pytest.mark.parametrize("fmt,n", [("column_{:03d}", 300), ("column_{:03d}", 600),
                                   ("größe_{:03d}", 300), ("列_{:03d}", 900),
                                   ("😀_{:03d}", 300)])
def test_a_long_error_keeps_its_start_in_message_and_error(fmt: str, n: int) -> None:
    err = missing_columns(fmt, n)
    report = Report(run_id="r1", reason="InputError", message=err, error=err)
    text = report.to_json()
    assert len(text.encode()) <= MAX_REPORT_BYTES
    doc = json.loads(text)
    for key in ("message", "error"):
        assert doc[key].startswith("spec.destination.table: public.prices lacks source column")
        assert doc[key].endswith(TRUNCATED_MARKER)
        assert err.startswith(doc[key][: -len(TRUNCATED_MARKER)])
    # Both halves of the budget are used: within a few characters of 4 KiB.
    assert len(text.encode()) > MAX_REPORT_BYTES - 16


def test_a_short_message_leaves_the_rest_of_the_budget_to_the_error() -> None:
    err = "x" * 10000
    report = Report(run_id="r1", message="the destination refused the delta", error=err)
    doc = json.loads(report.to_json())
    assert doc["message"] == "the destination refused the delta"
    assert len(doc["error"]) > 3500


def test_both_long_fields_share_the_budget() -> None:
    report = Report(run_id="r", error="x" * 10000, message="y" * 10000)
    text = report.to_json()
    assert len(text.encode()) <= MAX_REPORT_BYTES
    doc = json.loads(text)
    assert abs(len(doc["message"]) - len(doc["error"])) <= 1
    assert doc["runId"] == "r"


def test_fitting_report_is_unchanged() -> None:
    report = Report(run_id="r1", message="m" * 1000, error="e" * 1000)
    doc = json.loads(report.to_json())
    assert doc["message"] == "m" * 1000 and doc["error"] == "e" * 1000


def test_truncation_never_shows_part_of_a_secret() -> None:
    secret = "VerySecretPassword" * 4
    logs.register_secret(secret)
    # The secret straddles every possible cut point of a report that must be shortened.
    for pad in range(0, 4200, 97):
        text = Report(run_id="r1", message="a" * pad + secret + "b" * 4000).to_json()
        assert len(text.encode()) <= MAX_REPORT_BYTES
        assert "VerySecret" not in text and "Password" not in text


def test_a_report_whose_other_fields_are_too_long_still_fits() -> None:
    report = Report(run_id="r" * 5000, result="Failed", reason="InputError",
                    message="m" * 5000, error="e" * 5000, snapshot_id="s" * 5000)
    text = report.to_json()
    assert len(text.encode()) <= MAX_REPORT_BYTES
    doc = json.loads(text)
    assert doc["result"] == "Failed"
    assert doc["reason"] == "InputError"
    assert doc["message"].startswith("mmm") and doc["error"].startswith("eee")


def test_a_short_secret_does_not_hide_the_ids_and_times() -> None:
    """A numeric password (2026) turned snapshotId, deltaId and capturedAt into ***1122T...:
    the operator had no capturedAt to compute the lag from, and an admin no delta id to
    approve. Ids and times of the shape the code makes cannot hold a secret."""
    logs.register_secret("2026")
    snap, older = "20261122T140716.123456Z-3fa2", "20261122T135716.654321Z-0b1c"
    report = succeeded()
    report.run_id, report.snapshot_id, report.from_snapshot_id = snap, snap, older
    report.delta_id, report.captured_at = f"{older}..{snap}", "2026-11-22T14:07:16.120000+00:00"
    report.message = "applied 100 changes to table t2026"
    doc = json.loads(report.to_json())
    assert (doc["runId"], doc["snapshotId"], doc["fromSnapshotId"]) == (snap, snap, older)
    assert doc["deltaId"] == f"{older}..{snap}"
    assert doc["capturedAt"] == "2026-11-22T14:07:16.120000+00:00"
    assert doc["startedAt"].startswith("2026-")
    assert doc["message"] == "applied 100 changes to table t***"
    report.delta_id = "2026 is the password"  # not of the shape: redacted as before
    assert json.loads(report.to_json())["deltaId"] == "*** is the password"
