"""The main scenario (``scenario.py``) against the process-run operator: bootstrap 100k rows,
then a run that finds exactly the drift the event lane left behind."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from localcluster.testing import Cluster
from tests.e2e.operator.operator_kit import RESYNC_SECONDS, Lane, OperatorProcess
from tests.e2e.operator.scenario import bootstrap_then_exact_drift

pytestmark = pytest.mark.e2e


def test_bootstrap_then_exact_drift(
    cluster: Cluster, make_lane: Callable[[str], Lane], tablesync_operator: OperatorProcess
) -> None:
    bootstrap_then_exact_drift(
        cluster,
        make_lane("prices"),
        metrics_text=tablesync_operator.metrics_text,
        resync_seconds=RESYNC_SECONDS,
        acting_instance=tablesync_operator.name,
    )
