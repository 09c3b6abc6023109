"""The whole run through real MinIO: layout, retention, run records, bucket errors."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.job.lane import Lane, load_prices
from tests.support.services import MinioServer


def _keys(minio: MinioServer, bucket: str) -> list[str]:
    client: Any = minio.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_runs_through_minio_keep_the_layout_and_retention(s3_lane: Lane,
                                                          minio: MinioServer) -> None:
    lane = s3_lane
    lane.spec["spec"]["storage"]["keepSnapshots"] = 2
    load_prices(lane, 3000)
    bucket = lane.storage_url.split("/")[2]
    reports = []
    for i in range(4):
        lane.src(f"UPDATE prices SET price = price + 1, updated_at = now() WHERE id % 7 = {i}")
        result = lane.run("run")
        assert result.code == 0, result.stderr
        reports.append(result.report)

    assert lane.table_text("destination") == lane.table_text("source")
    keys = _keys(minio, bucket)
    snapshots = {k.split("/")[2] for k in keys if k.startswith("prices/snapshots/")}
    assert len(snapshots) == 2  # keepSnapshots
    assert reports[-1]["snapshotId"] in snapshots
    state = json.loads(minio.client().get_object(  # type: ignore[attr-defined]
        Bucket=bucket, Key="prices/state.json")["Body"].read())
    assert state["last_applied_snapshot_id"] == reports[-1]["snapshotId"]
    runs = [k for k in keys if k.startswith("prices/runs/")]
    assert len(runs) == 4
    assert all(k.startswith("prices/deltas/") or k.startswith(("prices/snapshots/",
               "prices/runs/", "prices/state.json")) for k in keys)


def test_missing_bucket_is_an_input_error_that_names_it(s3_lane: Lane) -> None:
    lane = s3_lane
    load_prices(lane, 10)
    lane.spec["spec"]["storage"]["url"] = "s3://no-such-bucket-here/prices"
    result = lane.run("run")
    assert result.code == 2
    assert "no-such-bucket-here" in result.error_line
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]


def test_wrong_storage_secret_is_an_input_error(s3_lane: Lane) -> None:
    lane = s3_lane
    load_prices(lane, 10)
    result = lane.run("run", env={"AWS_SECRET_ACCESS_KEY": "wrong-secret-key"})
    assert result.code == 2
    assert "AWS_SECRET_ACCESS_KEY" in result.error_line
    assert "wrong-secret-key" not in result.stdout + result.stderr


def test_report_goes_to_the_termination_log_and_fits_4_kib(lane: Lane) -> None:
    load_prices(lane, 10)
    path = lane.work / "termination-log"
    path.write_text("")
    result = lane.run("run", env={"TABLESYNC_TERMINATION_LOG": str(path)})
    assert result.code == 0
    text = path.read_text()
    assert len(text.encode()) <= 4096
    report = json.loads(text)
    assert report["result"] == "Succeeded" and report["bootstrap"] is True
    assert set(report["apply"]) == {"inserted", "updated", "deleted", "alreadyCurrent",
                                    "staleSkipped"}


def test_a_refused_bootstrap_leaves_no_state_in_minio(s3_lane: Lane, minio: MinioServer) -> None:
    lane = s3_lane
    load_prices(lane, 10)
    lane.dst("ALTER TABLE prices ADD CONSTRAINT positive CHECK (price > 1)")
    lane.src("UPDATE prices SET price = 0 WHERE id = 5")
    bucket = lane.storage_url.split("/")[2]

    refused = lane.run("run")

    assert refused.code == 2, refused.stderr
    assert "prices/state.json" not in _keys(minio, bucket)
    lane.src("UPDATE prices SET price = 2 WHERE id = 5")
    assert lane.run("run").code == 0
    assert lane.table_text("destination") == lane.table_text("source")
