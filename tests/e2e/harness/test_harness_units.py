"""Pure parts of the harness, without a cluster: image map, $(VAR) expansion, env resolution,
the Job built from a CronJob."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localcluster.cronjobs import INSTANTIATE_ANNOTATION, job_from_cronjob
from localcluster.images import ImageEntry, container_argv, load_image_commands, lookup
from localcluster.runner.podenv import ConfigError, expand, resolve_env
from localcluster.settings import VENV


def test_default_image_map_matches_any_tag_registry_or_dashed_name() -> None:
    commands = load_image_commands()
    job = [str(VENV / "bin" / "tablesync-job")]
    for image in ("tablesync/job", "tablesync/job:dev", "registry.local:5000/tablesync/job:1",
                  "ghcr.io/acme/tablesync-job:0.1.0", "tablesync/job@sha256:abcd"):
        entry = lookup(commands, image)
        assert entry is not None and entry.entrypoint == job, image
    operator = lookup(commands, "ghcr.io/acme/tablesync-operator:0.1.0")
    assert operator is not None
    assert operator.entrypoint == [str(VENV / "bin" / "tablesync-operator")]
    assert lookup(commands, "example.com/unknown:1") is None


def test_image_map_file_adds_entries(tmp_path: Path) -> None:
    extra = tmp_path / "images.yaml"
    extra.write_text("example/tool:2: {entrypoint: [/bin/tool], cmd: [--help]}\n"
                     "other: [/bin/other, -v]\n")
    commands = load_image_commands(extra)
    assert commands["example/tool"] == ImageEntry(["/bin/tool"], ["--help"])
    assert lookup(commands, "other:latest") == ImageEntry(["/bin/other", "-v"])


def test_command_and_args_combine_like_entrypoint_and_cmd() -> None:
    entry = ImageEntry(["/bin/tool"], ["--default"])
    assert container_argv(entry, [], []) == ["/bin/tool", "--default"]
    assert container_argv(entry, [], ["--x"]) == ["/bin/tool", "--x"]
    assert container_argv(entry, ["sh"], []) == ["sh"]
    assert container_argv(entry, ["sh"], ["-c", "true"]) == ["sh", "-c", "true"]
    assert container_argv(None, [], ["--x"]) == []


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$$(A) $(C) $$ $x $(", env) == "$(A) $(C) $ $x $("


class Objects:
    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return {"data": {"k": "dmFsdWU="}} if name == "s" else None

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return {"data": {"X": "1", "bad-name!": "2"}} if name == "c" else None


def test_resolve_env_orders_env_from_before_env_and_expands() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "b"}},
           "spec": {"containers": []}}
    container = {"envFrom": [{"configMapRef": {"name": "c"}}, {"secretRef": {"name": "s"}}],
                 "env": [{"name": "X", "value": "override-$(X)"},
                         {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                         {"name": "L", "valueFrom": {"fieldRef": {
                             "fieldPath": "metadata.labels['a']"}}},
                         {"name": "CPU", "valueFrom": {"resourceFieldRef": {
                             "resource": "limits.cpu", "divisor": "1m"}}}],
                 "resources": {"limits": {"cpu": "250m"}}}
    env = resolve_env(pod, container, Objects(), {"BASE": "yes"})
    assert env == {"BASE": "yes", "X": "override-1", "k": "value", "S": "value", "L": "b",
                   "CPU": "250"}


def test_resolve_env_missing_secret_is_a_config_error() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": []}}
    container = {"env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "gone",
                                                                      "key": "k"}}}]}
    try:
        resolve_env(pod, container, Objects(), {})
    except ConfigError as err:
        assert 'secret "gone" not found' in str(err)
    else:
        raise AssertionError("expected ConfigError")


def test_job_from_cronjob_copies_template_and_marks_manual() -> None:
    cronjob = {"metadata": {"name": "c", "namespace": "ns", "uid": "u-1"},
               "spec": {"jobTemplate": {"metadata": {"labels": {"l": "1"}},
                                        "spec": {"backoffLimit": 0, "template": {}}}}}
    job = job_from_cronjob(cronjob, "c-now")
    assert job["metadata"] == {
        "name": "c-now", "namespace": "ns", "labels": {"l": "1"},
        "annotations": {INSTANTIATE_ANNOTATION: "manual"},
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "c",
                             "uid": "u-1", "controller": True}]}
    assert job["spec"] == {"backoffLimit": 0, "template": {}}
