"""values.schema.json: strict at every level, and ``helm template`` enforces it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.chart.helm import CHART, HelmFailed, render

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def object_schemas(node: Any, path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every sub-schema that describes an object, with a JSON-path-like location."""
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from object_schemas(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from object_schemas(value, f"{path}[{index}]")


def test_every_object_in_the_schema_is_closed() -> None:
    """additionalProperties: false wherever keys are named; the only open objects are maps
    whose values must be strings (or quantities), never free-form."""
    checked = 0
    for path, schema in object_schemas(SCHEMA):
        checked += 1
        assert "additionalProperties" in schema, f"{path} accepts any key"
        extra = schema["additionalProperties"]
        if "properties" in schema:
            assert extra is False, f"{path} names its keys but allows others"
        else:
            assert isinstance(extra, dict) and extra.get("type") in (
                "string", ["string", "number"]
            ), f"{path} is an open object with untyped values"
    assert checked > 30


def test_schema_covers_every_key_of_values_yaml() -> None:
    import yaml

    def walk(values: Any, schema: dict[str, Any], path: str) -> None:
        if "$ref" in schema:
            schema = SCHEMA["definitions"][schema["$ref"].rsplit("/", 1)[1]]
        if isinstance(values, dict) and "properties" in schema:
            for key, value in values.items():
                assert key in schema["properties"], f"values.yaml {path}.{key} not in schema"
                walk(value, schema["properties"][key], f"{path}.{key}")

    walk(yaml.safe_load((CHART / "values.yaml").read_text()), SCHEMA, "")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"operator": {"watchNamspaces": ["data"]}}, "'watchNamspaces' not allowed"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "'enable' not allowed"),
        ({"job": {"image": {"repository": "x", "tag": "1", "pullPolicy": "Always",
                            "digest": "sha256:0"}}}, "'digest' not allowed"),
    ],
    ids=["top-level", "nested", "deeply-nested", "image"],
)
def test_unknown_keys_fail_helm_template(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmFailed) as err:
        render(values)
    assert "values don't meet the specifications of the schema" in err.value.stderr
    assert message in err.value.stderr


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"operator": {"workers": "eight"}}, "/operator/workers"),
        ({"operator": {"watchNamespaces": "data"}}, "/operator/watchNamespaces"),
        ({"metrics": {"serviceMonitor": {"enabled": "yes"}}}, "/metrics/serviceMonitor/enabled"),
        ({"metrics": {"port": 70000}}, "/metrics/port"),
        ({"image": {"repository": "x", "tag": "1", "pullPolicy": "Sometimes"}},
         "/image/pullPolicy"),
        ({"job": {"activeDeadlineSeconds": 1.5}}, "/job/activeDeadlineSeconds"),
        ({"podAnnotations": {"a": 1}}, "/podAnnotations/a"),
        ({"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
        ({"job": {"successfulJobsHistoryLimit": 0}}, "/job/successfulJobsHistoryLimit"),
    ],
    ids=["int-as-string", "list-as-string", "bool-as-string", "port-range", "enum",
         "int-as-float", "map-value-type", "log-format", "history-limit"],
)
def test_wrong_types_fail_helm_template(values: dict[str, Any], where: str) -> None:
    with pytest.raises(HelmFailed) as err:
        render(values)
    assert "values don't meet the specifications of the schema" in err.value.stderr
    assert f"at '{where}'" in err.value.stderr
