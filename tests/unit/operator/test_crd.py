"""The CRD: structural schema, printer columns, admission rules (checked statically)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

CRD_PATH = Path(__file__).resolve().parents[3] / "crds" / "tablesyncs.tablesync.dev.yaml"


@functools.lru_cache(maxsize=1)
def crd() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return doc


def version() -> dict[str, Any]:
    v: dict[str, Any] = crd()["spec"]["versions"][0]
    return v


def root_schema() -> dict[str, Any]:
    schema: dict[str, Any] = version()["schema"]["openAPIV3Schema"]
    return schema


def spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = root_schema()["properties"]["spec"]
    return schema


def status_schema() -> dict[str, Any]:
    schema: dict[str, Any] = root_schema()["properties"]["status"]
    return schema


def rules(schema: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = schema.get("x-kubernetes-validations", [])
    return found


def test_names_scope_and_status_subresource() -> None:
    doc = crd()
    assert doc["metadata"]["name"] == "tablesyncs.tablesync.dev"
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "TableSync",
        "tablesyncs",
        ["ts"],
    )
    assert doc["spec"]["scope"] == "Namespaced"
    assert version()["name"] == "v1alpha1" and version()["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in version()["additionalPrinterColumns"]}
    for name in ("Ready", "Schedule", "Lag", "Drift", "Last Sync", "Age"):
        assert name in columns
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Lag"]["jsonPath"] == ".status.lagSeconds"
    assert columns["Drift"]["jsonPath"] == ".status.drift.lastRunRows"
    assert columns["Last Sync"]["type"] == "date"
    # A failed run shows in the default view, not only in -o wide.
    assert columns["Last Run"]["jsonPath"] == ".status.lastRun.reason"
    assert columns["Last Run"].get("priority", 0) == 0


def test_schema_is_structural_without_preserve_unknown_fields() -> None:
    def walk(schema: dict[str, Any], path: str) -> None:
        assert "x-kubernetes-preserve-unknown-fields" not in schema, path
        if path not in ("", ".metadata"):
            assert "type" in schema or schema.get("x-kubernetes-int-or-string"), f"{path}: no type"
        if schema.get("type") == "object" and path != ".metadata":
            assert "properties" in schema or "additionalProperties" in schema, (
                f"{path}: open object"
            )
        for key, sub in (schema.get("properties") or {}).items():
            walk(sub, f"{path}.{key}")
        if isinstance(schema.get("additionalProperties"), dict):
            walk(schema["additionalProperties"], f"{path}.*")
        if "items" in schema:
            walk(schema["items"], f"{path}[]")

    walk(root_schema(), "")


def test_status_has_the_design_figures() -> None:
    props = status_schema()["properties"]
    for key in (
        "observedGeneration",
        "conditions",
        "lagSeconds",
        "lastRun",
        "lastSuccessfulRun",
        "drift",
        "overrun",
    ):
        assert key in props
    run = props["lastRun"]["properties"]
    for key in (
        "snapshotId",
        "capturedAt",
        "delta",
        "apply",
        "phaseSeconds",
        "bootstrap",
        "reason",
    ):
        assert key in run
    assert props["lastSuccessfulRun"] == props["lastRun"] | {
        "description": props["lastSuccessfulRun"]["description"]
    }
    assert set(props["overrun"]["properties"]) >= {
        "budgetSeconds",
        "consecutiveOverruns",
        "totalOverruns",
        "missedSchedules",
        "lastPhaseSeconds",
    }
    assert set(props["drift"]["properties"]) >= {"lastRunRows", "lastRunFraction", "totalRows"}
    cond = props["conditions"]
    assert cond["x-kubernetes-list-type"] == "map" and cond["x-kubernetes-list-map-keys"] == [
        "type"
    ]


def schedule_regex() -> str:
    rule = rules(spec_schema()["properties"]["schedule"])[0]["rule"]
    match = re.fullmatch(r"self\.matches\('(.*)'\)", rule)
    assert match is not None
    # The CEL string literal escapes \t; Python's re reads the same regex.
    return match.group(1).replace("\\t", "\t")


@pytest.mark.parametrize(
    ("schedule", "ok"),
    [
        ("*/30 * * * *", True),
        ("0 9,17 * * 1-5", True),
        ("@hourly", True),
        ("@weekly", True),
        ("* * * * * *", False),
        ("* * * *", False),
        ("@every 5m", False),
        ("CRON_TZ=UTC 0 * * * *", False),
        ("", False),
    ],
)
def test_schedule_rule_accepts_five_fields_or_a_macro(schedule: str, ok: bool) -> None:
    assert bool(re.match(schedule_regex(), schedule)) is ok
    assert "spec.schedule" in rules(spec_schema()["properties"]["schedule"])[0]["message"]


def test_key_and_version_rules_name_their_fields() -> None:
    source = spec_schema()["properties"]["source"]
    messages = {r["fieldPath"]: r["message"] for r in rules(source)}
    assert "spec.source.primaryKey" in messages[".primaryKey"]
    assert "spec.source.versionColumn" in messages[".versionColumn"]


def test_immutable_fields_use_transition_rules() -> None:
    pk = spec_schema()["properties"]["source"]["properties"]["primaryKey"]
    table = spec_schema()["properties"]["destination"]["properties"]["table"]
    for schema, field in ((pk, "spec.source.primaryKey"), (table, "spec.destination.table")):
        (rule,) = rules(schema)
        assert rule["rule"] == "self == oldSelf"
        assert field in rule["message"] and "immutable" in rule["message"]


def test_fractions_are_bounded() -> None:
    guards = spec_schema()["properties"]["guards"]["properties"]
    for name, default in (("maxDeleteFraction", 0.05), ("maxShrinkFraction", 0.5)):
        assert (guards[name]["minimum"], guards[name]["maximum"], guards[name]["default"]) == (
            0,
            1,
            default,
        )


def test_the_name_limit_matches_the_operator() -> None:
    from tablesync_operator.spec import MAX_NAME_LENGTH

    (rule,) = rules(root_schema())
    assert rule["rule"] == f"self.metadata.name.size() <= {MAX_NAME_LENGTH}"
