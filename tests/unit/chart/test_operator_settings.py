"""Chart values reach the operator: the Deployment's environment, read by the operator's own
``Settings.from_env``, gives exactly the settings the values ask for."""

from __future__ import annotations

import dataclasses
from typing import Any

from tablesync_operator.settings import ENV_PREFIX, Settings
from tests.unit.chart.helm import NAMESPACE, Manifest, only, render

NON_DEFAULT_VALUES: dict[str, Any] = {
    "operator": {
        "watchNamespaces": ["data", "etl"],
        "resyncIntervalSeconds": 12.5,
        "workers": 3,
        "logFormat": "json",
        "verbose": True,
        "leaderElection": {"enabled": True, "leaseName": "ts-lease",
                           "leaseDurationSeconds": 20, "renewDeadlineSeconds": 12,
                           "retryPeriodSeconds": 3},
    },
    "job": {
        "image": {"repository": "registry.example/tablesync-job", "tag": "9.9.9",
                  "pullPolicy": "Always"},
        "serviceAccount": {"name": "etl-runner"},
        "userId": 1234,
        "activeDeadlineSeconds": 1000000,
        "backoffLimit": 5,
        "successfulJobsHistoryLimit": 7,
        "failedJobsHistoryLimit": 9,
    },
    "metrics": {"port": 9102},
}


def operator_env(objects: list[Manifest]) -> dict[str, str]:
    """The container's environment as the kubelet would set it (downward API resolved)."""
    pod = only(objects, "Deployment", "tablesync-operator")["spec"]["template"]
    downward = {"metadata.name": "tablesync-operator-abc12", "metadata.namespace": NAMESPACE}
    env: dict[str, str] = {}
    for entry in pod["spec"]["containers"][0]["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            env[entry["name"]] = downward[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def test_every_operator_variable_the_chart_sets_changes_a_setting() -> None:
    """Drop one variable at a time: the settings must change, so none is ignored (misspelt)."""
    values = {**NON_DEFAULT_VALUES,
              "operator": {**NON_DEFAULT_VALUES["operator"],
                           "leaderElection": {**NON_DEFAULT_VALUES["operator"]["leaderElection"],
                                              "enabled": False}}}
    # POD_NAMESPACE elsewhere, so that dropping LEASE_NAMESPACE shows.
    env = {**operator_env(render(values)), "POD_NAMESPACE": "elsewhere"}

    def comparable(settings: Settings) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(settings).items() if k != "identity"}

    full = comparable(Settings.from_env(env))
    names = sorted(name for name in env if name.startswith(ENV_PREFIX))
    assert len(names) >= 19
    for name in names:
        dropped = comparable(Settings.from_env({k: v for k, v in env.items() if k != name}))
        assert dropped != full, f"the operator ignores {name}"


def test_values_map_onto_the_operator_settings() -> None:
    settings = Settings.from_env(operator_env(render(NON_DEFAULT_VALUES)))
    expected = {
        "namespaces": ("data", "etl"),
        "metrics_port": 9102,
        "resync_interval_seconds": 12.5,
        "workers": 3,
        "log_format": "json",
        "verbose": True,
        "leader_election": True,
        "lease_name": "ts-lease",
        "lease_namespace": NAMESPACE,
        "lease_duration_seconds": 20.0,
        "renew_deadline_seconds": 12.0,
        "retry_period_seconds": 3.0,
        "job_image": "registry.example/tablesync-job:9.9.9",
        "job_image_pull_policy": "Always",
        "job_service_account": "etl-runner",
        "job_user_id": 1234,
        "default_active_deadline_seconds": 1000000,
        "default_backoff_limit": 5,
        "successful_jobs_history_limit": 7,
        "failed_jobs_history_limit": 9,
    }
    got = {key: getattr(settings, key) for key in expected}
    assert got == expected
    assert settings.identity.startswith("tablesync-operator-abc12-")


def test_defaults_give_a_clusterwide_operator_with_the_chart_job_account() -> None:
    settings = Settings.from_env(operator_env(render()))
    assert settings.clusterwide
    assert settings.metrics_port == 8080
    assert settings.job_image == "tablesync/job:0.1.0"
    assert settings.job_service_account == "tablesync-job"
    assert settings.lease_namespace == NAMESPACE
    assert settings.leader_election is True


def test_chart_defaults_match_the_operator_defaults_where_the_chart_has_no_reason_to_differ(
) -> None:
    settings = Settings.from_env(operator_env(render()))
    defaults = Settings()
    same = ("resync_interval_seconds", "workers", "log_format", "verbose", "metrics_port",
            "lease_duration_seconds", "renew_deadline_seconds", "retry_period_seconds",
            "job_image_pull_policy", "job_user_id", "default_active_deadline_seconds",
            "default_backoff_limit", "successful_jobs_history_limit",
            "failed_jobs_history_limit", "job_image")
    assert {k: getattr(settings, k) for k in same} == {
        k: getattr(defaults, k) for k in same
    }
