"""metrics: series projected from the stored status; restart-safe counters."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from tablesync_operator import metrics
from tablesync_operator import status as st

from .samples import NOW
from .test_status import full_status


def scrape(store: metrics.MetricsStore) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.StatusCollector(store))
    text = generate_latest(registry).decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted({"namespace": "data", "name": "product-prices", **labels}.items())))


def test_series_carry_the_values_the_status_shows() -> None:
    status = full_status()
    store = metrics.MetricsStore(clock=lambda: NOW + timedelta(seconds=100))
    store.observe("data", "product-prices", status)
    got = scrape(store)
    assert (
        got[key("tablesync_drift_rows_total", op="inserted")] == status.drift.total_inserted == 10
    )
    assert got[key("tablesync_drift_rows_total", op="updated")] == status.drift.total_updated == 280
    assert got[key("tablesync_drift_rows_total", op="deleted")] == status.drift.total_deleted == 10
    assert got[key("tablesync_runs_total", result="succeeded")] == status.runs.succeeded == 2
    assert got[key("tablesync_runs_total", result="failed")] == 0
    assert got[key("tablesync_overruns_total")] == status.overrun.total_overruns == 2
    assert got[key("tablesync_run_duration_seconds", phase="dump")] == 1.2
    assert got[key("tablesync_run_duration_seconds", phase="apply")] == 0.8
    assert got[key("tablesync_run_duration_seconds", phase="total")] == 15.0
    # lag at scrape time: captured 10:59:58.123456, scraped at 11:01:40
    assert abs(got[key("tablesync_lag_seconds")] - 101.876544) < 1e-6
    assert got[key("tablesync_condition", type="Ready", status="True")] == 1


def test_restart_does_not_double_count() -> None:
    """A new operator process re-reads the status (and the same Jobs): same totals."""
    status = full_status()
    before = metrics.MetricsStore(clock=lambda: NOW)
    before.observe("data", "product-prices", status)
    after = metrics.MetricsStore(clock=lambda: NOW)
    restored = st.TableSyncStatus.from_dict(status.to_dict())
    after.observe("data", "product-prices", restored)
    after.observe("data", "product-prices", restored)
    assert scrape(before) == scrape(after)


def test_forget_drops_the_series() -> None:
    store = metrics.MetricsStore(clock=lambda: NOW)
    store.observe("data", "product-prices", full_status())
    store.forget("data", "product-prices")
    assert not any(name.startswith("tablesync_") for name, _ in scrape(store))


def test_health_and_metrics_endpoints() -> None:
    import urllib.error
    import urllib.request

    server = metrics.serve("127.0.0.1", 0)
    try:
        port = server.server_address[1]
        metrics.observe("data", "product-prices", full_status())
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert (
            'tablesync_runs_total{name="product-prices",namespace="data",result="succeeded"} 2.0'
            in body
        )
        metrics.HEARTBEAT.beat()
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").status == 200
        metrics.HEARTBEAT._last -= 3600
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz")
            raise AssertionError("a stalled loop must fail the liveness check")
        except urllib.error.HTTPError as err:
            assert err.code == 503
    finally:
        metrics.HEARTBEAT.beat()
        metrics.forget("data", "product-prices")
        server.shutdown()


def test_the_readmes_name_every_metric_served() -> None:
    """The main and chart READMEs listed five of the eight metrics: someone alerting from
    them would not know the Ready or Lagging series (tablesync_condition) exist."""
    from tests.support.services import REPO_ROOT

    store = metrics.MetricsStore(clock=lambda: NOW + timedelta(seconds=100))
    store.observe("data", "product-prices", full_status())
    served = {name.removesuffix("_total") for name, _ in scrape(store)}
    for readme in ("README.md", "charts/tablesync/README.md", "operator/README.md"):
        text = (REPO_ROOT / readme).read_text()
        missing = sorted(n for n in served if f"`{n}" not in text)
        assert not missing, f"{readme} does not name {missing}"
