"""The main e2e scenario (issue 4), shared by every way the operator is deployed.

``bootstrap_then_exact_drift`` bootstraps a 100k-row table, then finds exactly the drift the
event lane left behind; the status, the conditions, ``kubectl wait``, the Events, the printer
columns and the metrics all agree. It runs against whichever operator watches the lane's
namespace: the process-run operator (``test_operator_sync.py``) or the chart's operator pod
(``tests/e2e/chart/test_chart_main_scenario.py``). It only talks to that operator through the
API server, plus ``metrics_text`` for its ``/metrics`` endpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from localcluster.testing import Cluster
from tests.e2e.operator.operator_kit import Lane, metric_value

ROWS = 100_000


def bootstrap_then_exact_drift(
    cluster: Cluster,
    lane: Lane,
    *,
    metrics_text: Callable[[], str],
    resync_seconds: float,
    acting_instance: str,
) -> None:
    """The scenario on a fresh ``lane``; ``acting_instance`` is the POD_NAME of the operator
    expected to act (every Event on the TableSync must come from it, none from another)."""
    lane.load(ROWS)
    lane.secrets()
    lane.create()
    lane.wait_condition("Ready", "True", "Reconciled")

    # Run 1: no T-1 yet, the whole snapshot is applied and reported as bootstrap.
    first = lane.run()
    assert (first["result"], first["reason"], first["bootstrap"]) == (
        "Succeeded",
        "Bootstrapped",
        True,
    ), first
    assert first["rows"] == ROWS and first["apply"]["inserted"] == ROWS
    assert first["driftRows"] == 0
    lane.wait_condition("Drifted", "False", "Bootstrapped")
    assert lane.dst("SELECT count(*) FROM public.prices") == [(ROWS,)]
    assert lane.status()["appliedSnapshot"]["snapshotId"] == first["snapshotId"]

    # 1,000 source changes; the event lane delivers 700 of them, 50 with a newer version.
    lane.src(
        "UPDATE public.prices SET price = price + 1, updated_at = now() WHERE product_id <= 1000"
    )
    delivered = lane.src(
        "SELECT product_id, price, updated_at FROM public.prices "
        "WHERE product_id <= 700 ORDER BY product_id"
    )
    with (
        psycopg.connect(lane.pg.uri(lane.destination_db), autocommit=True) as conn,
        conn.cursor() as cur,
    ):
        cur.executemany(
            "UPDATE public.prices SET price = %s, updated_at = %s WHERE product_id = %s",
            [(price, version, key) for key, price, version in delivered if key <= 650],
        )
        cur.executemany(
            "UPDATE public.prices SET price = 0, updated_at = %s + interval '1 hour' "
            "WHERE product_id = %s",
            [(version, key) for key, _, version in delivered if key > 650],
        )

    # Run 2: exactly the 300 undelivered rows are drift.
    second = lane.run()
    assert second["result"] == "Succeeded", second
    assert second["bootstrap"] is False
    assert second["delta"] == {"insert": 0, "update": 1000, "delete": 0}
    assert second["apply"] == {
        "inserted": 0,
        "updated": 300,
        "deleted": 0,
        "alreadyCurrent": 650,
        "staleSkipped": 50,
    }
    assert second["driftRows"] == 300
    assert second["fromSnapshotId"] == first["snapshotId"]
    status = lane.status()
    assert status["drift"]["lastRunRows"] == 300
    assert status["drift"]["lastRunFraction"] == 0.3
    assert status["drift"]["totalRows"] == 300
    assert status["lastSuccessfulRun"] == status["lastRun"]
    assert status["runs"]["succeeded"] == 2
    drifted = lane.wait_condition("Drifted", "True", "DriftCorrected")
    assert "corrected 300 rows" in drifted["message"]
    assert "650 already current" in drifted["message"]
    assert "50 stale-skipped" in drifted["message"]

    # The destination equals the source except the 50 rows the event lane made newer.
    source = {row[0]: row for row in lane.table(lane.source_db)}
    destination = {row[0]: row for row in lane.table(lane.destination_db)}
    assert source.keys() == destination.keys()
    differing = {key for key in source if source[key] != destination[key]}
    assert differing == set(range(651, 701))

    # kubectl wait reads the condition.
    for condition in ("LastRunSucceeded", "Ready"):
        cluster.kubectl(
            "wait",
            f"--for=condition={condition}",
            f"tablesync/{lane.name}",
            "-n",
            lane.namespace,
            "--timeout=30s",
        )

    # Events on transitions, all from the one operator expected to act.
    events = [e for e in lane.events() if e["involvedObject"]["kind"] == "TableSync"]
    reasons = [e["reason"] for e in events]
    assert reasons.count("RunSucceeded") == 2 and reasons.count("DriftFound") == 1
    instances = {e.get("reportingInstance") or "" for e in events}
    assert all(i.startswith(f"{acting_instance}-") for i in instances), instances

    # The printer columns show the figures.
    table = cluster.kubectl("get", "ts", lane.name, "-n", lane.namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "READY", "SCHEDULE", "LAG", "DRIFT"]
    assert "True" in row and " 300 " in row

    # The metrics endpoint serves the same values as the status.
    status = lane.status()
    text = metrics_text()
    labels = {"namespace": lane.namespace, "name": lane.name}  # metric_value(**labels)
    assert metric_value(text, "tablesync_drift_rows_total", op="updated", **labels) == 300
    assert metric_value(text, "tablesync_drift_rows_total", op="inserted", **labels) == 0
    assert (
        metric_value(text, "tablesync_runs_total", result="succeeded", **labels)
        == status["runs"]["succeeded"]
        == 2
    )
    assert metric_value(text, "tablesync_runs_total", result="failed", **labels) == 0
    assert (
        metric_value(text, "tablesync_overruns_total", **labels)
        == status["overrun"]["totalOverruns"]
    )
    for phase in ("dump", "diff", "apply"):
        assert metric_value(
            text, "tablesync_run_duration_seconds", phase=phase, **labels
        ) == pytest.approx(status["lastRun"]["phaseSeconds"][phase])
    assert metric_value(
        text, "tablesync_run_duration_seconds", phase="total", **labels
    ) == pytest.approx(status["lastRun"]["cycleSeconds"])
    lag = metric_value(text, "tablesync_lag_seconds", **labels)
    assert lag is not None
    assert abs(lag - status["lagSeconds"]) <= 2 * resync_seconds + 5
