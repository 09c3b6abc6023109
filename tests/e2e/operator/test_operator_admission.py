"""Admission: the real API server rejects each invalid TableSync with a message naming the
field (structural schema, CEL rules, transition rules). No operator needed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from localcluster.testing import Cluster

pytestmark = pytest.mark.e2e

VALID: dict[str, Any] = {
    "apiVersion": "tablesync.dev/v1alpha1",
    "kind": "TableSync",
    "metadata": {"name": "prices"},
    "spec": {
        "schedule": "*/30 * * * *",
        "source": {
            "uriSecretRef": {"name": "replica", "key": "uri"},
            "table": "public.prices",
            "primaryKey": ["product_id"],
            "versionColumn": "updated_at",
        },
        "storage": {"url": "s3://tablesync/prices"},
        "destination": {
            "uriSecretRef": {"name": "warehouse", "key": "uri"},
            "table": "public.prices",
        },
    },
}


def manifest(change: Any) -> dict[str, Any]:
    body = copy.deepcopy(VALID)
    change(body)
    return body


def rejected(cluster: Cluster, namespace: str, body: dict[str, Any]) -> str:
    import yaml

    proc = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(body), check=False
    )
    assert proc.returncode != 0, f"admitted: {body}"
    return proc.stderr


@pytest.mark.parametrize(
    ("case", "change", "expected"),
    [
        (
            "six-field schedule",
            lambda b: b["spec"].update(schedule="0 */5 * * * *"),
            "spec.schedule must be a 5-field cron expression",
        ),
        (
            "@every macro",
            lambda b: b["spec"].update(schedule="@every 5m"),
            "spec.schedule must be a 5-field cron expression",
        ),
        (
            "empty primaryKey",
            lambda b: b["spec"]["source"].update(primaryKey=[]),
            "spec.source.primaryKey must list at least one key column",
        ),
        (
            "missing versionColumn",
            lambda b: b["spec"]["source"].pop("versionColumn"),
            "spec.source.versionColumn is required",
        ),
        (
            "delete fraction above 1",
            lambda b: b["spec"].update(guards={"maxDeleteFraction": 1.5}),
            "spec.guards.maxDeleteFraction",
        ),
        (
            "shrink fraction below 0",
            lambda b: b["spec"].update(guards={"maxShrinkFraction": -0.1}),
            "spec.guards.maxShrinkFraction",
        ),
        (
            "name too long",
            lambda b: b["metadata"].update(name="x" * 53),
            "metadata.name must be at most 52 characters",
        ),
        (
            "storage url",
            lambda b: b["spec"]["storage"].update(url="https://example.com/x"),
            "spec.storage.url must be s3://bucket/prefix",
        ),
    ],
)
def test_invalid_manifest_is_rejected_with_its_field(
    cluster: Cluster, crd_installed: None, namespace: str, case: str, change: Any, expected: str
) -> None:
    stderr = rejected(cluster, namespace, manifest(change))
    assert expected in stderr, f"{case}: {stderr}"


def test_primary_key_and_destination_table_are_immutable(
    cluster: Cluster, crd_installed: None, namespace: str
) -> None:
    cluster.apply(VALID, namespace)
    stderr = rejected(
        cluster,
        namespace,
        manifest(lambda b: b["spec"]["source"].update(primaryKey=["product_id", "region"])),
    )
    assert "spec.source.primaryKey is immutable" in stderr
    stderr = rejected(
        cluster,
        namespace,
        manifest(lambda b: b["spec"]["destination"].update(table="public.prices_v2")),
    )
    assert "spec.destination.table is immutable" in stderr
    # Other fields stay editable.
    cluster.apply(manifest(lambda b: b["spec"].update(schedule="@hourly")), namespace)


def test_defaults_are_filled_in(cluster: Cluster, crd_installed: None, namespace: str) -> None:
    import json

    cluster.apply(VALID, namespace)
    spec = json.loads(cluster.kubectl("get", "ts", "prices", "-n", namespace, "-o", "json").stdout)[
        "spec"
    ]
    assert spec["suspend"] is False
    assert spec["source"]["compare"] == "version"
    assert spec["destination"]["deletes"] == "apply"
    assert spec["guards"] == {"maxDeleteFraction": 0.05, "maxShrinkFraction": 0.5}
    assert spec["storage"]["keepSnapshots"] == 3
