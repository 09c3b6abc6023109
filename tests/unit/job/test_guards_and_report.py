"""Guards, the compact report's 4 KiB limit, delta ids, redaction and retention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tablesync_job import logs
from tablesync_job.errors import GuardTripped, InputError
from tablesync_job.pipeline import check_guards
from tablesync_job.report import MAX_REPORT_BYTES, Report
from tablesync_job.snapshots import Delta, Layout, parse_delta_id
from tablesync_job.spec import parse
from tablesync_job.storage import FileStorage
from tests.unit.job.test_spec import MANIFEST


def delta(deletes: int, from_rows: int = 1000, to_rows: int | None = None) -> Delta:
    return Delta(from_id="a", to_id="b", inserts=0, updates=0, deletes=deletes,
                 from_rows=from_rows, to_rows=to_rows if to_rows is not None
                 else from_rows - deletes, version_kind="timestamp", watermark=None,
                 captured_at="2026-01-01T00:00:00+00:00")


def test_delete_guard_trips_above_the_fraction_and_names_the_delta() -> None:
    spec = parse(MANIFEST)
    check_guards(spec, delta(50), approved=None)  # exactly 5%: allowed
    with pytest.raises(GuardTripped) as err:
        check_guards(spec, delta(51), approved=None)
    assert err.value.reason == "DeleteGuardTripped"
    assert err.value.delta_id == "a..b"
    assert err.value.exit_code == 3


def test_an_approval_of_that_exact_delta_passes_the_guard() -> None:
    spec = parse(MANIFEST)
    check_guards(spec, delta(900), approved="a..b")
    with pytest.raises(GuardTripped):
        check_guards(spec, delta(900), approved="a..c")


def test_shrink_guard() -> None:
    doc = json.loads(json.dumps(MANIFEST))
    doc["spec"]["guards"] = {"maxDeleteFraction": 1, "maxShrinkFraction": 0.1}
    with pytest.raises(GuardTripped) as err:
        check_guards(parse(doc), delta(200), approved=None)
    assert err.value.reason == "ShrinkGuardTripped"


def test_a_snapshot_shrunk_by_exactly_the_fraction_passes_the_shrink_guard() -> None:
    """Like the delete guard, the shrink guard refuses more than the fraction. Before,
    1 - 95/100 came out above 0.05 in floating point, so exactly 5% fewer rows tripped
    it ("5.0% fewer ... > maxShrinkFraction 5.0%")."""
    doc = json.loads(json.dumps(MANIFEST))
    for fraction, kept in ((0.05, 950), (0.3, 700), (0.7, 300)):
        doc["spec"]["guards"] = {"maxDeleteFraction": 1, "maxShrinkFraction": fraction}
        check_guards(parse(doc), delta(1000 - kept), approved=None)
        with pytest.raises(GuardTripped, match="ShrinkFraction"):
            check_guards(parse(doc), delta(1001 - kept), approved=None)


def test_report_is_truncated_to_4_kib() -> None:
    report = Report(run_id="r", error="x" * 10000, message="y" * 10000)
    text = report.to_json()
    assert len(text.encode()) <= MAX_REPORT_BYTES
    assert json.loads(text)["runId"] == "r"


def test_delta_ids_parse_and_name_the_field() -> None:
    assert parse_delta_id("bootstrap..T2", "--approve") == (None, "T2")
    assert parse_delta_id("T1..T2", "--approve") == ("T1", "T2")
    with pytest.raises(InputError, match="--approve"):
        parse_delta_id("T1-T2", "--approve")


def test_secrets_and_uri_passwords_are_redacted() -> None:
    logs.register_secret("postgresql://app:s3cr3t-pw@db:5432/x")
    assert "s3cr3t-pw" not in logs.redact("login for app:s3cr3t-pw failed")


def test_retention_keeps_the_newest_and_the_last_applied(tmp_path: Path) -> None:
    layout = Layout(FileStorage("file://" + str(tmp_path), tmp_path))
    for snap in ("s1", "s2", "s3", "s4"):
        layout.storage.put_bytes(f"snapshots/{snap}/manifest.json", b"{}")
        layout.storage.put_bytes(f"snapshots/{snap}/part-00000.parquet", b"x")
    layout.storage.put_bytes("deltas/s1..s2/manifest.json", b"{}")
    layout.storage.put_bytes("deltas/s3..s4/manifest.json", b"{}")

    removed = layout.apply_retention(keep_snapshots=2, last_applied="s1")

    assert removed == ["s2"]
    assert layout.snapshot_ids() == ["s1", "s3", "s4"]
    assert layout.delta_ids() == ["s3..s4"]


def test_heartbeat_logs_while_a_silent_step_runs(caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import time

    logger = logging.getLogger("tablesync_job")
    logger.propagate = True
    try:
        with caplog.at_level(logging.INFO, logger="tablesync_job.progress"), \
                logs.heartbeat("diff", "join", interval_seconds=0.05):
            time.sleep(0.3)
    finally:
        logger.propagate = False
    beats = [r for r in caplog.records if getattr(r, "fields", {}).get("step") == "join"]
    assert len(beats) >= 3
    assert all(r.fields["phase"] == "diff" for r in beats)  # type: ignore[attr-defined]
