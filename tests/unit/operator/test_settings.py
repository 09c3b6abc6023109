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
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name.removeprefix("TABLESYNC_OPERATOR_")):
        Settings.from_env({name: value})
