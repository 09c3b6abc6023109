"""settings: environment variables, defaults and validation."""

from __future__ import annotations

import pytest

from tablesync_operator.settings import DEFAULT_JOB_IMAGE, Settings, SettingsError


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.clusterwide and s.namespaces == ()
    assert (s.metrics_port, s.resync_interval_seconds, s.leader_election) == (8080, 30.0, True)
    assert s.job_image == DEFAULT_JOB_IMAGE and DEFAULT_JOB_IMAGE.startswith("tablesync/job:")
    assert s.lease_namespace == "default"  # no POD_NAMESPACE, no service account file here
    assert s.identity != Settings.from_env({}).identity  # unique per process start


def test_environment_overrides() -> None:
    s = Settings.from_env(
        {
            "TABLESYNC_OPERATOR_NAMESPACES": "data, analytics",
            "TABLESYNC_OPERATOR_METRICS_PORT": "9000",
            "TABLESYNC_OPERATOR_RESYNC_INTERVAL_SECONDS": "5",
            "TABLESYNC_OPERATOR_LEADER_ELECTION": "false",
            "TABLESYNC_OPERATOR_JOB_SERVICE_ACCOUNT": "tablesync-job",
            "POD_NAME": "op-0",
            "POD_NAMESPACE": "tablesync-system",
        }
    )
    assert s.namespaces == ("data", "analytics") and not s.clusterwide
    assert (s.metrics_port, s.resync_interval_seconds, s.leader_election) == (9000, 5.0, False)
    assert s.job_service_account == "tablesync-job"
    assert s.lease_namespace == "tablesync-system"
    assert s.identity.startswith("op-0-")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TABLESYNC_OPERATOR_METRICS_PORT", "eighty"),
        ("TABLESYNC_OPERATOR_LEADER_ELECTION", "maybe"),
        ("TABLESYNC_OPERATOR_RENEW_DEADLINE_SECONDS", "20"),
        ("TABLESYNC_OPERATOR_LOG_FORMAT", "xml"),
        # 0: a finished Job is removed before the operator reads it (the run never counts);
        # below 0 the API server refuses every CronJob, and each TableSync stalls instead
        ("TABLESYNC_OPERATOR_SUCCESSFUL_JOBS_HISTORY", "0"),
        ("TABLESYNC_OPERATOR_FAILED_JOBS_HISTORY", "-1"),
        ("TABLESYNC_OPERATOR_DEFAULT_BACKOFF_LIMIT", "-1"),
        ("TABLESYNC_OPERATOR_DEFAULT_ACTIVE_DEADLINE_SECONDS", "0"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name.removeprefix("TABLESYNC_OPERATOR_")):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("raw", "patterns", "served", "not_served"),
    [
        ("team-*,!team-test", ["team-*,!team-test"], ["team-a"], ["team-test", "other"]),
        ("!kube-system", ["!kube-system"], ["team-a", "other"], ["kube-system"]),
        ("a,b", ["a", "b"], ["a", "b"], ["c"]),
        ("x-*,!x-1,y", ["x-*,!x-1", "y"], ["x-2", "y"], ["x-1", "z"]),
    ],
)
def test_namespace_patterns_follow_kopf(
    raw: str, patterns: list[str], served: list[str], not_served: list[str]
) -> None:
    """A ``!glob`` entry narrows the entry before it; kopf alone would read a separate
    ``!team-test`` pattern as "every namespace but team-test" and serve the union."""
    settings = Settings.from_env({"TABLESYNC_OPERATOR_NAMESPACES": raw})
    assert settings.kopf_namespaces() == patterns
    assert all(settings.watches(ns) for ns in served)
    assert not any(settings.watches(ns) for ns in not_served)
    assert settings.exact_namespaces() == (["a", "b"] if raw == "a,b" else None)


def test_the_whole_cluster_when_no_namespace_is_named() -> None:
    settings = Settings.from_env({})
    assert settings.clusterwide and settings.watches("anything")
    assert settings.kopf_namespaces() == []


def test_watches_agrees_with_kopf_on_every_pattern() -> None:
    """``Settings.watches`` mirrors kopf's private ``match_namespace`` (the resync must serve
    exactly the namespaces kopf serves); this fails if a kopf release changes the rule."""
    from kopf._cogs.structs.references import NamespaceName, match_namespace

    names = ["team-a", "team-test", "team-pr-1", "other-pr-1", "other", "kube-system", "x-1",
             "x-2", "y"]
    for raw in ["team-*", "team-*,!team-test", "!kube-system", "a,b", "x-*,!x-1,y",
                "team-*,!*-pr-*,*pr-1", "!team-*,team-a", "?-1"]:
        settings = Settings.from_env({"TABLESYNC_OPERATOR_NAMESPACES": raw})
        for name in names:
            expected = any(
                match_namespace(NamespaceName(name), p) for p in settings.kopf_namespaces()
            )
            assert settings.watches(name) == expected, (raw, name)
