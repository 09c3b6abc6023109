"""spec.parse: typed TableSync from a raw object; every problem names its field."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tablesync_operator.spec import SecretKeyRef, SpecError, parse
from tests.support.services import REPO_ROOT

from .samples import TABLESYNC, tablesync


def problems(body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse(body)
    return {p.path: p.message for p in info.value.problems}


def test_parses_the_design_example() -> None:
    ts = parse(TABLESYNC)
    assert (ts.namespace, ts.name, ts.generation) == ("data", "product-prices", 3)
    assert ts.spec.schedule == "*/30 * * * *"
    assert ts.spec.source.primary_key == ("product_id",)
    assert ts.spec.source.version_column == "updated_at"
    assert ts.spec.storage.credentials_secret == "s3"
    assert ts.spec.guards.max_delete_fraction == 0.05
    assert ts.raw_spec is TABLESYNC["spec"]


def test_defaults_when_optional_fields_are_absent() -> None:
    body = tablesync()
    del body["spec"]["guards"], body["spec"]["timeZone"], body["spec"]["suspend"]
    del body["spec"]["source"]["compare"], body["spec"]["destination"]["deletes"]
    ts = parse(body)
    assert ts.spec.suspend is False and ts.spec.time_zone is None
    assert ts.spec.source.compare == "version"
    assert ts.spec.destination.deletes == "apply"
    assert (ts.spec.guards.max_delete_fraction, ts.spec.guards.max_shrink_fraction) == (0.05, 0.5)


def test_secret_refs_list_every_key_the_pod_needs_with_its_field() -> None:
    refs = parse(TABLESYNC).spec.secret_refs()
    assert refs == [
        ("spec.source.uriSecretRef", SecretKeyRef("replica", "uri")),
        ("spec.destination.uriSecretRef", SecretKeyRef("warehouse", "uri")),
        ("spec.storage.credentialsSecretRef", SecretKeyRef("s3", "AWS_ACCESS_KEY_ID")),
        ("spec.storage.credentialsSecretRef", SecretKeyRef("s3", "AWS_SECRET_ACCESS_KEY")),
    ]


@pytest.mark.parametrize(
    ("schedule", "ok"),
    [
        ("*/30 * * * *", True),
        ("0 9,17 * * 1-5", True),
        ("@hourly", True),
        ("@daily", True),
        ("* * * * * *", False),  # six fields (seconds): not a Kubernetes schedule
        ("@every 5m", False),
        ("@reboot", False),
        ("99 * * * *", False),
        ("", False),
        ("0 0 30 2 *", False),  # never fires: the build of the CronJob would crash on it
        ("0 0 * * 7", False),  # what croniter takes and the CronJob API rejects
        ("0 3 * * 1-7", False),
        ("0 0 L * *", False),
        ("0 0 1W * *", False),
        ("0 0 * * WED", True),
        ("0 0 */2 * 1", True),
    ],
)
def test_schedule_must_be_five_fields_or_a_macro(schedule: str, ok: bool) -> None:
    body = tablesync(schedule=schedule)
    if ok:
        assert parse(body).spec.schedule == schedule
    else:
        assert "spec.schedule" in problems(body)


def test_unknown_time_zone_is_named() -> None:
    assert "IANA" in problems(tablesync(timeZone="Mars/Olympus"))["spec.timeZone"]


def test_empty_primary_key_and_missing_version_column_are_named() -> None:
    body = tablesync()
    body["spec"]["source"]["primaryKey"] = []
    del body["spec"]["source"]["versionColumn"]
    found = problems(body)
    assert "one or more key columns" in found["spec.source.primaryKey"]
    assert "spec.source.versionColumn" in found


def test_version_column_may_not_be_a_key_column() -> None:
    body = tablesync()
    body["spec"]["source"]["versionColumn"] = "product_id"
    assert "spec.source.versionColumn" in problems(body)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, "half", True])
def test_fractions_must_be_within_zero_and_one(fraction: Any) -> None:
    body = tablesync(guards={"maxDeleteFraction": fraction})
    assert "fraction from 0 to 1" in problems(body)["spec.guards.maxDeleteFraction"]


@pytest.mark.parametrize("url", ["http://example.com/x", "s3://bucket/x#one",
                                 "s3://bucket/x?two", "file:///",
                                 # object names S3 or MinIO refuse (the run failed with exit 75)
                                 "s3://bucket/a//b", "s3://bucket/a/../b", "s3://bucket/./b",
                                 "s3://bucket/a\tb", "s3://bucket/" + "x" * 901])
def test_storage_url_must_be_s3_or_file(url: str) -> None:
    body = tablesync()
    body["spec"]["storage"]["url"] = url
    assert "spec.storage.url" in problems(body)


def test_file_storage_is_refused_in_the_cluster() -> None:
    """file:// is for runs by hand: a job pod's files go with it (read-only root, scratch
    volume only), so the TableSync was Ready while every run bootstrapped anew."""
    body = tablesync()
    body["spec"]["storage"]["url"] = "file:///srv/tablesync/prices"
    assert "file:// storage is for runs by hand" in problems(body)["spec.storage.url"]


@pytest.mark.parametrize("url", ["s3://bucket", "s3://bucket/", "s3://bucket/a/b/",
                                 "s3://bucket/" + "x" * 900, "s3://bucket/a.b/..c/ü"])
def test_storage_urls_s3_takes(url: str) -> None:
    body = tablesync()
    body["spec"]["storage"]["url"] = url
    assert parse(body).spec.storage.url == url


ENDPOINTS = {"http://minio.minio:9000": True, "https://s3.example.com/base": True,
             "http://[::1]:9000": True, "https://user:pw@minio:9000": True,
             "http://minio:9000 ": False, "http://minio:9000\n": False, "http://": False,
             "http://:9000": False, "http://minio:port": False, "http://minio:0": False,
             "http://minio:99999": False, "http://min io:9000": False}


@pytest.mark.parametrize("endpoint,good", sorted(ENDPOINTS.items()))
def test_storage_endpoint_is_one_the_job_accepts(endpoint: str, good: bool) -> None:
    """An endpoint the job refuses at start (exit 2) is Stalled here, not Ready with every
    run failing; one it takes is accepted (tablesync_job.storage.open_storage)."""
    from tablesync_job.errors import InputError
    from tablesync_job.storage import open_storage

    body = tablesync()
    body["spec"]["storage"]["endpoint"] = endpoint
    if good:
        assert parse(body).spec.storage.endpoint == endpoint
        open_storage("s3://bucket/prefix", endpoint)
    else:
        found = problems(body)["spec.storage.endpoint"]
        assert "http(s)://host[:port]" in found and "pw" not in found
        with pytest.raises(InputError, match=r"spec\.storage\.endpoint"):
            open_storage("s3://bucket/prefix", endpoint)


@pytest.mark.parametrize("separator", ["/", "?", "#"])
def test_an_endpoint_whose_password_ends_its_host_early_is_refused_unechoed(
        separator: str) -> None:
    """urlsplit ends the host part at the '/', '?' or '#', so it sees no user and password,
    and the refusal showed the endpoint: the password, in the condition, an Event and the
    job's report."""
    from tablesync_job.errors import InputError
    from tablesync_job.storage import open_storage

    endpoint = f"http://admin:TopSecretA1{separator}TopSecretB2@minio:9000"
    body = tablesync()
    body["spec"]["storage"]["endpoint"] = endpoint
    found = problems(body)["spec.storage.endpoint"]
    assert "drop the user and password" in found and "TopSecret" not in found
    with pytest.raises(InputError, match=r"spec\.storage\.endpoint") as err:
        open_storage("s3://bucket/prefix", endpoint)
    assert "drop the user and password" in err.value.message
    assert "TopSecret" not in err.value.message


def test_missing_secret_key_ref_key_is_named() -> None:
    body = tablesync()
    del body["spec"]["destination"]["uriSecretRef"]["key"]
    assert "spec.destination.uriSecretRef.key" in problems(body)


def test_invalid_service_account_name_is_named_as_a_service_account() -> None:
    """The CRD takes any string there; the message must not call it a Secret, nor missing."""
    message = problems(tablesync(job={"serviceAccountName": "ETL_Runner"}))[
        "spec.job.serviceAccountName"
    ]
    assert "ServiceAccount" in message and "Secret" not in message
    assert "'ETL_Runner' is not" in message and "required" not in message
    message = problems(tablesync(
        source={**TABLESYNC["spec"]["source"], "uriSecretRef": {"name": "Replica", "key": "uri"}}
    ))["spec.source.uriSecretRef.name"]
    assert "'Replica' is not a Secret name" in message


def test_all_problems_are_reported_at_once() -> None:
    body = tablesync(schedule="nope")
    body["spec"]["source"]["table"] = ""
    assert {"spec.schedule", "spec.source.table"} <= set(problems(body))


def test_name_longer_than_a_cronjob_name_is_refused() -> None:
    body = tablesync()
    body["metadata"]["name"] = "x" * 53
    assert "52" in problems(body)["metadata.name"]


def test_annotations_run_request_and_approval() -> None:
    body = tablesync()
    body["metadata"]["annotations"] = {
        "tablesync.dev/run-requested-at": " 2026-11-21T11:00:00Z ",
        "tablesync.dev/approve-delta": "20261121T103000Z-cd34..20261121T110000Z-ab12",
    }
    ts = parse(body)
    assert ts.run_requested_at == "2026-11-21T11:00:00Z"
    assert ts.approve_delta == "20261121T103000Z-cd34..20261121T110000Z-ab12"


def test_malformed_approval_is_refused_with_a_hint() -> None:
    body = tablesync()
    body["metadata"]["annotations"] = {"tablesync.dev/approve-delta": "yes please"}
    found = problems(body)
    assert "FROM..TO" in found["metadata.annotations[tablesync.dev/approve-delta]"]


def test_an_approval_the_job_cannot_split_is_refused() -> None:
    """The job splits FROM..TO at '..' and refuses anything but two parts (exit 2 on every
    run): a delta id pasted twice passed the operator and stopped the sync."""
    from tablesync_job.errors import InputError
    from tablesync_job.snapshots import parse_delta_id

    delta = "20261121T103000.000000Z-cd34..20261121T110000.000000Z-ab12"
    for approval in (delta + delta, delta + "..", "A....B"):
        body = tablesync()
        body["metadata"]["annotations"] = {"tablesync.dev/approve-delta": approval}
        found = problems(body)
        assert "FROM..TO" in found["metadata.annotations[tablesync.dev/approve-delta]"]
        with pytest.raises(InputError):
            parse_delta_id(approval, "TABLESYNC_APPROVE_DELTA")


def test_derived_budget_lag_threshold_and_starting_deadline() -> None:
    spec = parse(TABLESYNC).spec
    assert spec.budget_seconds() == 900  # half of 30 minutes
    assert spec.lag_threshold() == 3600  # two intervals
    assert spec.starting_deadline() == 300  # the budget, clamped to 300
    custom = parse(tablesync(overrunBudgetSeconds=60, lagThresholdSeconds=120)).spec
    assert (custom.budget_seconds(), custom.lag_threshold(), custom.starting_deadline()) == (
        60,
        120,
        60,
    )


def test_job_knobs() -> None:
    body = tablesync(
        job={
            "image": "registry.example/tablesync-job:1.2",
            "activeDeadlineSeconds": 600,
            "backoffLimit": 0,
            "resources": {"limits": {"memory": "2Gi", "cpu": 2}},
            "scratchSizeLimit": "20Gi",
            "memoryLimit": "1500MB",
        }
    )
    job = parse(body).spec.job
    assert job.image == "registry.example/tablesync-job:1.2"
    assert (job.active_deadline_seconds, job.backoff_limit) == (600, 0)
    assert job.resources == {"limits": {"memory": "2Gi", "cpu": "2"}}
    bad = tablesync(job={"resources": {"limits": {"memory": "lots"}}})
    assert "spec.job.resources.limits.memory" in problems(bad)


@pytest.mark.parametrize(
    ("quantity", "ok"),
    [("512Mi", True), ("2Gi", True), ("500m", True), ("0.5", True), ("1e3", True),
     ("1.5Gi", True), ("128974848", True), ("512mi", False), ("1ki", False), ("2ni", False),
     ("1.2.3", False), (".", False), ("1Ki5", False)],
)
def test_resource_quantities_are_what_the_api_server_accepts(quantity: str, ok: bool) -> None:
    """A value the CronJob cannot hold is a spec problem naming its field, not a CronJob the
    API server refuses on every reconcile."""
    body = tablesync(job={"resources": {"limits": {"memory": quantity}},
                          "scratchSizeLimit": quantity})
    found = problems(body) if not ok else {}
    if ok:
        parse(body)
    else:
        assert "spec.job.resources.limits.memory" in found
        assert "spec.job.scratchSizeLimit" in found


MEMORY_SIZES = {"2GB": True, "512MiB": True, "1.5 GB": True, "100B": True, "4gib": True,
                "lots": False, "-5GB": False, "none": False, "2": False, "0GB": False,
                "2G": False, "2 iB": False, "0.5B": False, "0.0001KB": False, "1.5B": True}


@pytest.mark.parametrize("value,good", sorted(MEMORY_SIZES.items()))
def test_memory_limit_is_a_positive_size_the_crd_and_the_job_accept(value: str, good: bool,
                                                                     ) -> None:
    """spec.job.memoryLimit: what the CRD's pattern admits (but zero) and the job reads as a
    size (tablesync_job.diff.check_memory_limit); DuckDB would read -5GB or none as no limit."""
    from tablesync_job.diff import check_memory_limit
    from tablesync_job.errors import InputError

    body = tablesync(job={"memoryLimit": value})
    if good:
        assert parse(body).spec.job.memory_limit == value
    else:
        assert "spec.job.memoryLimit" in problems(body)
    crd = yaml.safe_load((REPO_ROOT / "crds" / "tablesyncs.tablesync.dev.yaml").read_text())
    job_props = (crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
                 ["properties"]["job"]["properties"])
    pattern = job_props["memoryLimit"]["pattern"]
    if good:
        assert re.match(pattern, value)
        assert check_memory_limit(value, "TABLESYNC_MEMORY_LIMIT") == value
    elif value not in ("0GB", "0.5B", "0.0001KB"):  # the pattern admits these; under 1 byte
        assert not re.match(pattern, value)
    if not good:
        with pytest.raises(InputError):
            check_memory_limit(value, "TABLESYNC_MEMORY_LIMIT")
