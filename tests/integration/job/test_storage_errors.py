"""Storage: credentials from boto3's chain, and what a broken store or endpoint tells the user.

Each failure is one line naming what is wrong (exit 2, a report on stdout), never a traceback.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.integration.job.lane import PRICES_DDL, Lane, _exec, load_prices
from tests.support.services import MinioServer, PostgresServer

NO_STATIC_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def _without_static_keys(lane: Lane, **extra: str) -> None:
    lane.env = {k: v for k, v in lane.env.items() if k not in NO_STATIC_KEYS}
    lane.env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/nonexistent",
                    AWS_SHARED_CREDENTIALS_FILE="/nonexistent", **extra)


def test_ambient_credentials_from_a_shared_file_are_used(s3_lane: Lane) -> None:
    load_prices(s3_lane, 10)
    creds = s3_lane.work / "aws-credentials"
    creds.write_text("[default]\naws_access_key_id = minioadmin\n"
                     "aws_secret_access_key = minioadmin\n")
    _without_static_keys(s3_lane)
    s3_lane.env["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)

    result = s3_lane.run("run")

    assert result.code == 0, result.stderr


def test_no_credentials_at_all_is_an_input_error(s3_lane: Lane) -> None:
    load_prices(s3_lane, 10)
    _without_static_keys(s3_lane)

    result = s3_lane.run("run")

    assert result.code == 2, result.stderr
    assert "no S3 credentials found" in result.error_line
    assert "spec.storage.credentialsSecretRef" in result.error_line
    # a hand run reads no Secret: it said only to set credentialsSecretRef, already set
    assert "run by hand, export the two variables" in result.error_line
    assert "(spec.job.serviceAccountName)" in result.error_line
    assert "Traceback" not in result.stderr


def test_a_profile_the_aws_config_lacks_is_an_input_error(s3_lane: Lane) -> None:
    """Before, botocore's ProfileNotFound escaped: a traceback, exit 1 and no report."""
    load_prices(s3_lane, 10)
    config = s3_lane.work / "aws-config"
    config.write_text("[profile other]\nregion = us-east-1\n")
    s3_lane.env.update(AWS_PROFILE="nope", AWS_CONFIG_FILE=str(config),
                       AWS_SHARED_CREDENTIALS_FILE="/nonexistent")

    result = s3_lane.run("run")

    assert result.code == 2, result.stderr
    assert result.error_line.startswith("tablesync-job: AWS_PROFILE: 'nope'"), result.stderr
    assert result.report["reason"] == "InputError"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("variable", "value", "named"),
                         [("AWS_CONFIG_FILE", "{work}/aws-config", "Unable to parse config file"),
                          ("AWS_DEFAULTS_MODE", "fastest", "invalid defaults mode: fastest")],
                         ids=["unparseable-config-file", "defaults-mode"])
def test_an_aws_configuration_botocore_refuses_is_an_input_error(
        s3_lane: Lane, variable: str, value: str, named: str) -> None:
    """Before, botocore's ConfigParseError or InvalidDefaultsMode escaped: a traceback,
    exit 1 (no documented code) and no report for the operator."""
    load_prices(s3_lane, 10)
    (s3_lane.work / "aws-config").write_text("region = us-east-1\n")  # no [section]
    s3_lane.env[variable] = value.format(work=s3_lane.work)

    result = s3_lane.run("run")

    assert result.code == 2, result.stderr
    assert "the AWS configuration" in result.error_line and named in result.error_line
    assert result.report["reason"] == "InputError"
    assert "Traceback" not in result.stderr


def test_credentials_that_may_not_write_are_an_input_error(s3_lane: Lane,
                                                           minio: MinioServer) -> None:
    load_prices(s3_lane, 10)
    sts = boto3.client("sts", endpoint_url=minio.endpoint, aws_access_key_id=minio.access_key,
                       aws_secret_access_key=minio.secret_key, region_name="us-east-1")
    read_only = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": [
        "s3:ListBucket", "s3:GetObject", "s3:GetBucketLocation"],
        "Resource": ["arn:aws:s3:::*"]}]}
    creds = sts.assume_role(RoleArn="arn:xxx:xxx:xxx:xxxx", RoleSessionName="read-only",
                            Policy=json.dumps(read_only))["Credentials"]

    result = s3_lane.run("run", env={"AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
                                     "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
                                     "AWS_SESSION_TOKEN": creds["SessionToken"]})

    assert result.code == 2, result.stderr
    assert "access to bucket" in result.error_line and "denied" in result.error_line


def test_storage_keys_from_secret_files_that_end_in_a_line_break_work(s3_lane: Lane) -> None:
    """``kubectl create secret --from-file`` keeps the file's last line break: the access key's
    made every run fail as "storage ... unreachable ... a retry may help" (exit 75)."""
    load_prices(s3_lane, 10)
    env = {name: s3_lane.env[name] + "\n" for name in ("AWS_ACCESS_KEY_ID",
                                                       "AWS_SECRET_ACCESS_KEY")}
    result = s3_lane.run("run", env=env)
    assert result.code == 0, result.stderr
    assert s3_lane.dst("SELECT count(*) FROM prices") == [(10,)]


def test_a_malformed_endpoint_is_named(s3_lane: Lane) -> None:
    load_prices(s3_lane, 10)
    for endpoint in ("http://minio .local:9000", "http://127.0.0.1:90o0"):
        s3_lane.spec["spec"]["storage"]["endpoint"] = endpoint

        result = s3_lane.run("run")

        assert result.code == 2, result.stderr
        assert result.error_line.startswith("tablesync-job: spec.storage.endpoint:")
        assert result.report["reason"] == "InputError"
        assert "Traceback" not in result.stderr


def test_a_malformed_region_is_named_not_the_endpoint(s3_lane: Lane) -> None:
    """Before, it said "AWS_ENDPOINT_URL: Provided region_name ... ; use
    http(s)://host[:port]": the endpoint was fine, the region (a value with a space or an
    underscore, a trailing newline from a Secret) was not."""
    load_prices(s3_lane, 10)
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        result = s3_lane.run("run", env={"AWS_REGION": "", name: "eu_west_1"})

        assert result.code == 2, result.stderr
        assert result.error_line.startswith(f"tablesync-job: {name}: 'eu_west_1' is not"), \
            result.error_line
        assert "ENDPOINT" not in result.error_line
        assert result.report["reason"] == "InputError"


def test_a_password_in_the_endpoint_is_dropped_and_never_printed(s3_lane: Lane,
                                                                  minio: MinioServer) -> None:
    """S3 never reads it (requests are signed with the access keys); before, a failure message
    printed the endpoint, password and all, and the stored run record's spec still holds it."""
    load_prices(s3_lane, 10)
    port = s3_lane.env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]
    s3_lane.spec["spec"]["storage"]["endpoint"] = f"http://admin:Sup3rS3cret@127.0.0.1:{port}"

    result = s3_lane.run("run")

    assert result.code == 0, result.stderr
    assert "user and password in the endpoint are ignored" in result.stderr
    assert "Sup3rS3cret" not in result.stdout + result.stderr
    bucket, _, prefix = s3_lane.storage_url[len("s3://"):].partition("/")
    client: Any = minio.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/runs/")["Contents"]
    records = [client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().decode()
               for o in listed]
    assert len(records) == 1 and '"spec"' in records[0]
    assert "Sup3rS3cret" not in records[0]

    s3_lane.spec["spec"]["storage"]["endpoint"] = "http://admin:Sup3rS3cret@127.0.0.1:9"
    unreachable = s3_lane.run("run", env={"AWS_MAX_ATTEMPTS": "1"})

    assert unreachable.code == 75, unreachable.stderr
    assert "unreachable" in unreachable.error_line
    assert "Sup3rS3cret" not in unreachable.stdout + unreachable.stderr


def _drop_a_part_of_the_last_applied_snapshot(lane: Lane, minio: MinioServer | None) -> None:
    state = _state(lane, minio)
    snap = f"snapshots/{state['last_applied_snapshot_id']}/part-00000.parquet"
    if minio is None:
        (Path(lane.storage_url[len("file://"):]) / snap).unlink()
    else:
        bucket, _, prefix = lane.storage_url[len("s3://"):].partition("/")
        client: Any = minio.client()
        client.delete_object(Bucket=bucket, Key=f"{prefix}/{snap}")


def _state(lane: Lane, minio: MinioServer | None) -> dict[str, Any]:
    if minio is None:
        state = lane.state()
        assert state is not None
        return state
    bucket, _, prefix = lane.storage_url[len("s3://"):].partition("/")
    client: Any = minio.client()
    body = client.get_object(Bucket=bucket, Key=f"{prefix}/state.json")["Body"].read()
    return dict(json.loads(body))


def test_a_part_missing_from_the_last_applied_snapshot_is_named(lane: Lane) -> None:
    load_prices(lane, 10)
    assert lane.run("run").code == 0
    _drop_a_part_of_the_last_applied_snapshot(lane, None)

    result = lane.run("run")

    assert result.code == 2, result.stderr
    assert "part-00000.parquet is missing" in result.error_line
    assert "delete state.json" in result.error_line


def test_a_part_missing_in_minio_is_named_not_the_bucket(s3_lane: Lane,
                                                          minio: MinioServer) -> None:
    load_prices(s3_lane, 10)
    assert s3_lane.run("run").code == 0
    _drop_a_part_of_the_last_applied_snapshot(s3_lane, minio)

    result = s3_lane.run("run")

    assert result.code == 2, result.stderr
    assert "part-00000.parquet is missing" in result.error_line
    assert "does not exist" not in result.error_line


@pytest.mark.parametrize("part", ["part-00000.parquet", "part-00000.parquet.tmp"])
def test_leftovers_of_a_run_that_died_while_uploading_are_removed(lane: Lane, part: str) -> None:
    """``.tmp``: killed while copying a part into file:// storage. Before, such a folder was
    never removed (the listing hid the file, so retention never saw the folder)."""
    load_prices(lane, 10)
    store = Path(lane.storage_url[len("file://"):])
    old = "20200101T000000.000000Z-0000"
    for folder in (f"snapshots/{old}", f"deltas/bootstrap..{old}", "snapshots/not-ours"):
        (store / folder).mkdir(parents=True)
        (store / folder / part).write_bytes(b"partial")

    assert lane.run("run").code == 0

    assert not (store / "snapshots" / old).exists()
    assert not (store / "deltas" / f"bootstrap..{old}").exists()
    assert (store / "snapshots" / "not-ours").exists()  # not named like ours: left alone


def test_a_spec_error_still_leaves_a_report(lane: Lane) -> None:
    lane.spec["spec"]["storage"]["url"] = "ftp://nowhere/x"
    result = lane.run("run")
    assert result.code == 2
    assert result.report["result"] == "Failed" and result.report["reason"] == "InputError"
    assert "spec.storage.url" in result.report["message"]


def _file_root(lane: Lane) -> Path:
    root = Path(lane.storage_url[len("file://"):])
    root.mkdir(parents=True, exist_ok=True)
    return root


def test_a_full_file_storage_is_transient_and_applies_nothing(lane: Lane) -> None:
    """state.json goes up through state.json.tmp; pointed at /dev/full, the write fails with a
    real ENOSPC. The run stops before the destination's transaction writes (the state names the
    delta first), exits 75 naming the storage, and the next run, with space, applies it all."""
    load_prices(lane, 100)
    root = _file_root(lane)
    os.symlink("/dev/full", root / "state.json.tmp")
    result = lane.run()
    assert result.code == 75, result.stderr
    assert result.error_line == (f"tablesync-job: file storage {root} is full (No space left on "
                                 "device) writing state.json: free space there or move "
                                 "spec.storage.url; a retry may help")
    assert "Traceback" not in result.stderr
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]
    assert not (root / "state.json").exists()
    os.unlink(root / "state.json.tmp")
    assert lane.run().code == 0
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_path_in_the_way_of_file_storage_is_an_input_error(lane: Lane) -> None:
    load_prices(lane, 100)
    root = _file_root(lane)
    (root / "state.json.tmp").mkdir()
    result = lane.run()
    assert result.code == 2, result.stderr
    assert result.error_line.startswith(
        f"tablesync-job: spec.storage.url: cannot write {root / 'state.json'} (Is a directory)")
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]
    assert not (root / "state.json").exists()


def _applied_once(lane: Lane) -> dict[str, Any]:
    load_prices(lane, 20)
    assert lane.run("run").code == 0
    state = lane.state()
    assert state is not None
    return state


def test_an_empty_state_json_is_named_not_taken_for_a_first_run(lane: Lane) -> None:
    """Empty (a truncated write) it read as "no state": the run bootstrapped, exit 0, and the
    rows deleted at the source meanwhile stayed in the destination for good."""
    _applied_once(lane)
    lane.src("DELETE FROM prices WHERE id = 1")
    state_file = lane.work / "store" / "state.json"
    for damaged in (b"", b'{"last_applied_snapshot_id": "2026', b"[]", b"null"):
        state_file.write_bytes(damaged)

        result = lane.run("run")

        assert result.code == 2, (damaged, result.stderr)
        assert "state.json is damaged" in result.error_line and "Traceback" not in result.stderr
    assert lane.dst("SELECT count(*) FROM prices") == [(20,)]


def test_a_state_field_a_newer_version_wrote_is_left_alone(lane: Lane) -> None:
    """A rolled-back image reads the state a newer one wrote (it was an internal error)."""
    state = _applied_once(lane)
    (lane.work / "store" / "state.json").write_text(json.dumps({**state, "future": 1}))
    lane.src("DELETE FROM prices WHERE id = 1")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["deleted"] == 1


def test_a_run_id_that_is_a_path_is_refused(lane: Lane) -> None:
    """TABLESYNC_RUN_ID=../state wrote the run record over state.json."""
    state = _applied_once(lane)

    result = lane.run("run", env={"TABLESYNC_RUN_ID": "../state"})

    assert result.code == 2
    assert result.error_line.startswith("tablesync-job: TABLESYNC_RUN_ID='../state' is not")
    assert lane.state() == state


def test_a_missing_last_applied_snapshot_fails_before_a_new_one_is_stored(lane: Lane) -> None:
    """Each run stored a whole new snapshot first, then failed (and ran no retention)."""
    state = _applied_once(lane)
    snapshots = lane.work / "store" / "snapshots"
    for folder in snapshots.iterdir():
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()

    result = lane.run("run")

    assert result.code == 2
    assert f"names snapshot {state['last_applied_snapshot_id']} but it is missing" in \
        result.error_line
    assert list(snapshots.iterdir()) == []


def test_retention_that_may_not_delete_warns_and_the_run_succeeds(s3_lane: Lane,
                                                                 minio: MinioServer) -> None:
    """delete_objects answers per key: the refusals were ignored, the log said the snapshots
    were removed, and they piled up. A failure there must not fail an apply that committed."""
    s3_lane.spec["spec"]["storage"]["keepSnapshots"] = 1
    load_prices(s3_lane, 10)
    sts = boto3.client("sts", endpoint_url=minio.endpoint, aws_access_key_id=minio.access_key,
                       aws_secret_access_key=minio.secret_key, region_name="us-east-1")
    no_delete = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": [
        "s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:GetBucketLocation"],
        "Resource": ["arn:aws:s3:::*"]}]}
    creds = sts.assume_role(RoleArn="arn:xxx:xxx:xxx:xxxx", RoleSessionName="no-delete",
                            Policy=json.dumps(no_delete))["Credentials"]
    env = {"AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
           "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
           "AWS_SESSION_TOKEN": creds["SessionToken"]}
    assert s3_lane.run("run", env=env).code == 0
    s3_lane.src("UPDATE prices SET updated_at = now() WHERE id = 1")

    result = s3_lane.run("run", env=env)

    assert result.code == 0, result.stderr
    assert result.report["apply"]["updated"] == 1
    warnings = [json.loads(line) for line in result.stderr.splitlines()
                if line.startswith("{") and '"retentionFailed"' in line]
    assert warnings and "s3:DeleteObject" in warnings[0]["msg"]
    assert '"removedSnapshots"' not in result.stderr


def test_a_prefix_under_another_ones_snapshots_folder_keeps_its_deltas(lane: Lane) -> None:
    """Ids were read at any depth: A (keepSnapshots 1) took C's folders, at url/snapshots/,
    for snapshots of its own and deleted C's deltas with them."""
    load_prices(lane, 10)
    outer = lane.storage_url
    lane.spec["spec"]["storage"]["keepSnapshots"] = 1
    lane.spec["spec"]["storage"]["url"] = outer + "/snapshots"  # C
    assert lane.run("run").code == 0
    inner = lane.work / "store" / "snapshots"
    deltas = sorted(p.name for p in (inner / "deltas").iterdir())
    lane.spec["spec"]["storage"]["url"] = outer  # A
    for _ in range(2):
        lane.src("UPDATE prices SET updated_at = now() WHERE id = 1")
        assert lane.run("run").code == 0

    assert sorted(p.name for p in (inner / "deltas").iterdir()) == deltas


def test_a_second_tablesync_on_the_same_prefix_is_refused(lane: Lane,
                                                          postgres: PostgresServer) -> None:
    """A manifest copied for a second destination with its storage.url left as it was: each
    TableSync diffed against the other's last applied snapshot, so A's destination missed
    the update and the delete B applied, and A's run said NoChanges, exit 0."""
    load_prices(lane, 5000)
    other = postgres.create_database(f"dst_copy_{lane.work.name[-12:].replace('-', '_')}")
    _exec(other, PRICES_DDL)
    first, copied = lane.spec, copy.deepcopy(lane.spec)
    copied["metadata"]["name"] = "prices-copy"
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET price = 7, updated_at = now() WHERE id = 5")
    lane.src("DELETE FROM prices WHERE id = 7")

    lane.spec = copied
    refused = lane.run("run", env={"TABLESYNC_DESTINATION_URI": other})
    lane.spec = first
    applied = lane.run("run")

    assert refused.code == 2, refused.stderr
    assert refused.error_line.startswith(
        f"tablesync-job: spec.storage.url: {lane.storage_url} holds the state of TableSync "
        "test/prices, not of test/prices-copy")
    assert _exec(other, "SELECT count(*) FROM prices") == [(0,)]
    assert applied.code == 0, applied.stderr
    assert applied.report["reason"] == "Applied"
    assert lane.table_text("destination") == lane.table_text("source")


def test_an_unreachable_endpoint_names_where_it_came_from(s3_lane: Lane) -> None:
    load_prices(s3_lane, 10)

    result = s3_lane.run("run", env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                                     "AWS_MAX_ATTEMPTS": "1"})

    assert result.code == 75, result.stderr
    assert "unreachable" in result.error_line and "check AWS_ENDPOINT_URL" in result.error_line
