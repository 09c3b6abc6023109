"""spec.parse: defaults, and errors that name the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tablesync_job.__main__ import main
from tablesync_job.errors import InputError
from tablesync_job.spec import parse

MANIFEST: dict[str, Any] = {
    "apiVersion": "tablesync.dev/v1alpha1", "kind": "TableSync",
    "metadata": {"name": "product-prices", "namespace": "data"},
    "spec": {
        "schedule": "*/30 * * * *",
        "source": {"uriSecretRef": {"name": "replica", "key": "uri"}, "table": "public.prices",
                   "primaryKey": ["product_id"], "versionColumn": "updated_at"},
        "storage": {"url": "s3://tablesync/prices", "endpoint": "http://minio.minio:9000"},
        "destination": {"uriSecretRef": {"name": "warehouse", "key": "uri"},
                        "table": "prices"},
    },
}


def test_defaults_follow_the_design() -> None:
    spec = parse(MANIFEST)
    assert spec.label == "data/product-prices"
    assert str(spec.source.table) == "public.prices"
    assert str(spec.destination.table) == "public.prices"
    assert spec.source.compare == "version" and spec.source.version_kind == "auto"
    assert spec.destination.deletes == "apply" and spec.destination.lost_rows == "refill"
    assert spec.guards.max_delete_fraction == 0.05
    assert spec.guards.max_shrink_fraction == 0.5
    assert spec.storage.keep_snapshots == 3


def test_a_bare_spec_is_accepted() -> None:
    assert parse(MANIFEST["spec"]).name == "tablesync"


@pytest.mark.parametrize(("path", "value", "named"), [
    (("source", "primaryKey"), [], "spec.source.primaryKey"),
    # the CRD wants a list: a manifest run by hand must be one the cluster accepts
    (("source", "primaryKey"), "product_id", "primaryKey: [product_id]"),
    (("source", "versionColumn"), None, "spec.source.versionColumn"),
    (("source", "versionColumn"), "product_id", "spec.source.versionColumn"),
    (("source", "table"), "a.b.c", "spec.source.table"),
    (("source", "compare"), "hash", "spec.source.compare"),
    (("storage", "url"), "http://bucket/x", "spec.storage.url"),
    # urlsplit drops these: two TableSyncs (x#one, x#two) shared the prefix x and its state
    (("storage", "url"), "s3://bucket/x#one", "spec.storage.url"),
    (("storage", "url"), "s3://bucket/x?two", "spec.storage.url"),
    (("storage", "url"), "file:///srv/sync#orders", "spec.storage.url"),
    (("storage", "url"), "file:///", "spec.storage.url"),  # was the working directory
    # object names S3 or MinIO refuse: the run failed with exit 75 (a retry never helps)
    (("storage", "url"), "s3://bucket/a//b", "empty, . or .. segments"),
    (("storage", "url"), "s3://bucket/a/../b", "empty, . or .. segments"),
    (("storage", "url"), "s3://bucket/a\x01b", "control characters"),
    (("storage", "url"), "s3://bucket/" + "x" * 901, "at most 900 bytes"),
    (("storage", "keepSnapshots"), 0, "spec.storage.keepSnapshots"),
    (("destination", "deletes"), "maybe", "spec.destination.deletes"),
    (("destination", "lostRows"), "repair", "spec.destination.lostRows"),
    (("guards",), {"maxDeleteFraction": 1.5}, "spec.guards.maxDeleteFraction"),
    (("guards",), {"maxShrinkFraction": -0.1}, "spec.guards.maxShrinkFraction"),
])
def test_bad_fields_are_named(path: tuple[str, ...], value: Any, named: str) -> None:
    doc = copy.deepcopy(MANIFEST)
    target = doc["spec"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InputError) as err:
        parse(doc)
    assert named in err.value.message


def test_missing_sections_are_named() -> None:
    doc = copy.deepcopy(MANIFEST)
    del doc["spec"]["destination"]
    with pytest.raises(InputError, match=r"spec\.destination: is required"):
        parse(doc)


def test_metadata_that_is_not_an_object_is_named() -> None:
    with pytest.raises(InputError, match=r"metadata: must be an object"):
        parse({**MANIFEST, "metadata": "x"})


def test_wrong_kind_is_refused() -> None:
    with pytest.raises(InputError, match="kind is 'CronJob'"):
        parse({**MANIFEST, "kind": "CronJob"})


@pytest.mark.parametrize(("source", "dest", "ok"), [
    ("integer", "integer", True),
    ("integer", "bigint", True),
    ("bigint", "integer", False),
    ("integer", "numeric", True),
    ("integer", "numeric(12,2)", True),
    ("bigint", "numeric(12,2)", False),
    ("numeric(12,2)", "numeric(14,2)", True),
    ("numeric(12,2)", "numeric(12,3)", False),  # one integer digit fewer
    ("numeric(12,2)", "numeric(12,1)", False),  # would round
    ("numeric(12,2)", "numeric", True),
    ("numeric", "numeric(12,2)", False),
    ("numeric(12,2)", "integer", False),
    ("character varying(10)", "character varying(20)", True),
    ("character varying(20)", "character varying(10)", False),
    ("character varying(10)", "text", True),
    ("text", "character varying(10)", False),
    ("real", "double precision", True),
    ("double precision", "real", False),
    ("json", "jsonb", True),
    ("timestamp with time zone", "timestamp without time zone", False),
    ("timestamp(3) with time zone", "timestamp with time zone", True),  # 3 digits into 6
    ("timestamp with time zone", "timestamp(3) with time zone", False),  # would round
    ("timestamp(0) without time zone", "timestamp(3) without time zone", True),
    ("timestamp(3) without time zone", "timestamp with time zone", False),
    ("time(2) without time zone", "time without time zone", True),
    ("time without time zone", "time with time zone", False),
    ("integer[]", "bigint[]", True),  # arrays as their elements
    ("bigint[]", "integer[]", False),
    ("character varying(10)[]", "text[]", True),
    ("numeric(12,2)[]", "numeric(12,1)[]", False),
    ("integer[]", "bigint", False),
    ("integer", "bigint[]", False),
    ("integer", "numeric(12,2)[]", False),  # was a ValueError (an internal error)
])
def test_only_lossless_destination_types_are_accepted(source: str, dest: str, ok: bool) -> None:
    from tablesync_job.apply import lossless

    assert lossless(source, dest) is ok


@pytest.mark.parametrize(
    ("content", "named"),
    [(b"\xff\xfe spec: {}", "not UTF-8 text (byte 0); save the manifest as UTF-8"),
     (b"spec: !!python/object:os.system ls\n", "not valid YAML/JSON (could not determine")],
    ids=["not-utf8", "yaml-error"])
def test_a_spec_file_it_cannot_read_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, named: str) -> None:
    """A manifest saved as UTF-16 (or Latin-1) escaped as UnicodeDecodeError: a traceback and
    exit 1, no report; a YAML error spread over four lines, quoting the file."""
    spec_file = tmp_path / "tablesync.yaml"
    spec_file.write_bytes(content)

    code = main(["run", "--spec", str(spec_file)])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and named in err[0], err
