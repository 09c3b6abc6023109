"""The Argo CD health check (charts/tablesync/docs/argocd-health.lua), run with lupa."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lupa import LuaRuntime

from tablesync_operator import status as st
from tablesync_operator.spec import ObjectRef

from .samples import NOW, TABLESYNC
from .test_status import ready

LUA = Path(__file__).resolve().parents[3] / "charts" / "tablesync" / "docs" / "argocd-health.lua"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(v) for v in value])
        return value

    lua.globals().obj = to_lua(obj)
    result = lua.execute(LUA.read_text())
    return str(result["status"]), str(result["message"])


def with_status(status: st.TableSyncStatus | None, generation: int = 3) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "product-prices", "generation": generation}}
    if status is not None:
        obj["status"] = status.to_dict()
    return obj


def test_ready_is_healthy() -> None:
    assert health(with_status(ready())) == (
        "Healthy",
        "CronJob product-prices runs on schedule '*/30 * * * *' (Etc/UTC)",
    )


def test_stalled_is_degraded_with_the_reason() -> None:
    stalled = st.mark_stalled(
        ready(),
        ObjectRef.of(TABLESYNC),
        "SecretNotFound",
        "Secret 'replica' ... does not exist",
        NOW,
    )
    assert health(with_status(stalled)) == ("Degraded", "Secret 'replica' ... does not exist")


def test_unobserved_generation_is_progressing() -> None:
    status, message = health(with_status(ready(), generation=4))
    assert status == "Progressing" and "generation 4" in message


@pytest.mark.parametrize(
    "obj", [{"metadata": {"generation": 1}}, {"metadata": {"generation": 1}, "status": {}}]
)
def test_no_status_yet_is_progressing(obj: dict[str, Any]) -> None:
    assert health(obj)[0] == "Progressing"


def test_reconciling_is_progressing() -> None:
    retrying = st.mark_reconciling(
        ready(), ObjectRef.of(TABLESYNC), "ApiError", "retrying after an API error: 503", NOW
    )
    assert health(with_status(retrying)) == ("Progressing", "retrying after an API error: 503")


def test_failed_last_run_stays_healthy_but_says_why() -> None:
    failed = st.set_condition(
        ready(), "LastRunSucceeded", "False", "DeleteGuardTripped", "delta deletes 50%", 3, NOW
    )
    status, message = health(with_status(failed))
    assert status == "Healthy"
    assert "last run failed (DeleteGuardTripped): delta deletes 50%" in message
