"""Prometheus metrics, projected from each TableSync's stored status; plus /healthz.

``reconcile`` calls :func:`observe` after every status read or write and :func:`forget`
when a TableSync is gone; ``__main__`` starts :func:`serve`. Counters are *not* incremented
in memory: their values are the totals the status holds (``status.runs``,
``status.drift``, ``status.overrun``), which count each Job once (``lastProcessedJob``).
A restarted operator therefore serves the same totals as before, never double counts, and a
standby replica serves nothing until it leads. Series are labelled by namespace and name.

| metric | type | source |
|---|---|---|
| tablesync_lag_seconds | gauge | now - appliedSnapshot.capturedAt (computed at scrape) |
| tablesync_lag_threshold_seconds | gauge | status.lagThresholdSeconds |
| tablesync_drift_rows_total{op} | counter | status.drift.total{Inserted,Updated,Deleted} |
| tablesync_runs_total{result} | counter | status.runs |
| tablesync_run_duration_seconds{phase} | gauge | last run: dump, diff, apply, total (cycle) |
| tablesync_overruns_total | counter | status.overrun.totalOverruns |
| tablesync_missed_schedules_total | counter | status.overrun.missedSchedules |
| tablesync_condition{type,status} | gauge | 1 for each condition's current status |
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .results import parse_time
from .status import TableSyncStatus

logger = logging.getLogger(__name__)

LABELS = ["namespace", "name"]
PHASES = ("dump", "diff", "apply")


@dataclass
class MetricsStore:
    """Latest known status per TableSync, read by the collector at scrape time."""

    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _entries: dict[tuple[str, str], TableSyncStatus] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, namespace: str, name: str, status: TableSyncStatus) -> None:
        with self._lock:
            self._entries[(namespace, name)] = status

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._entries.pop((namespace, name), None)

    def snapshot(self) -> list[tuple[tuple[str, str], TableSyncStatus]]:
        with self._lock:
            return sorted(self._entries.items(), key=lambda item: item[0])


class StatusCollector(Collector):
    """Yields the metric families from a MetricsStore."""

    def __init__(self, store: MetricsStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        now = self.store.clock()
        lag = GaugeMetricFamily(
            "tablesync_lag_seconds",
            "Seconds since the capturedAt of the last applied snapshot.",
            labels=LABELS,
        )
        threshold = GaugeMetricFamily(
            "tablesync_lag_threshold_seconds", "Lag above which Lagging turns True.", labels=LABELS
        )
        drift = CounterMetricFamily(
            "tablesync_drift_rows",
            "Rows the applies changed because the event lane had not delivered them.",
            labels=[*LABELS, "op"],
        )
        runs = CounterMetricFamily(
            "tablesync_runs", "Finished runs by result.", labels=[*LABELS, "result"]
        )
        duration = GaugeMetricFamily(
            "tablesync_run_duration_seconds",
            "Duration of the last run per phase (dump, diff, apply) and in total (Job start-end).",
            labels=[*LABELS, "phase"],
        )
        overruns = CounterMetricFamily(
            "tablesync_overruns", "Runs that took longer than their budget.", labels=LABELS
        )
        missed = CounterMetricFamily(
            "tablesync_missed_schedules", "Scheduled runs that fired no Job.", labels=LABELS
        )
        condition = GaugeMetricFamily(
            "tablesync_condition",
            "1 for the current status of each condition.",
            labels=[*LABELS, "type", "status"],
        )
        for (namespace, name), st in self.store.snapshot():
            key = [namespace, name]
            applied = st.applied_snapshot
            captured = parse_time(applied.captured_at) if applied else None
            if captured is not None:
                lag.add_metric(key, max(0.0, (now - captured).total_seconds()))
            if st.lag_threshold_seconds is not None:
                threshold.add_metric(key, float(st.lag_threshold_seconds))
            drift.add_metric([*key, "inserted"], float(st.drift.total_inserted))
            drift.add_metric([*key, "updated"], float(st.drift.total_updated))
            drift.add_metric([*key, "deleted"], float(st.drift.total_deleted))
            runs.add_metric([*key, "succeeded"], float(st.runs.succeeded))
            runs.add_metric([*key, "failed"], float(st.runs.failed))
            runs.add_metric([*key, "guard_tripped"], float(st.runs.guard_tripped))
            runs.add_metric([*key, "dry_run"], float(st.runs.dry_run))
            last = st.last_run
            if last is not None:
                for phase in PHASES:
                    if phase in last.phase_seconds:
                        duration.add_metric([*key, phase], last.phase_seconds[phase])
                if last.cycle_seconds is not None:
                    duration.add_metric([*key, "total"], last.cycle_seconds)
            overruns.add_metric(key, float(st.overrun.total_overruns))
            missed.add_metric(key, float(st.overrun.missed_schedules))
            for cond in st.conditions:
                condition.add_metric([*key, cond.type, cond.status], 1.0)
        yield from (lag, threshold, drift, runs, duration, overruns, missed, condition)


STORE = MetricsStore()
REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(StatusCollector(STORE))


def observe(namespace: str, name: str, status: TableSyncStatus) -> None:
    """Record the latest status of a TableSync for the next scrape."""
    STORE.observe(namespace, name, status)


def forget(namespace: str, name: str) -> None:
    """Drop a deleted TableSync's series."""
    STORE.forget(namespace, name)


class Heartbeat:
    """Liveness: the operator's event loop beats; /healthz fails once it stops beating."""

    def __init__(self, stale_after_seconds: float = 60.0) -> None:
        self.stale_after_seconds = stale_after_seconds
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._last < self.stale_after_seconds


HEARTBEAT = Heartbeat()


def render() -> bytes:
    """The exposition text of all series."""
    return generate_latest(REGISTRY)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, render(), "text/plain; version=0.0.4; charset=utf-8")
        elif path in ("/healthz", "/livez"):
            if HEARTBEAT.alive():
                self._send(200, b"ok\n", "text/plain")
            else:
                self._send(503, b"event loop stalled\n", "text/plain")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("http: " + format, *args)


def serve(host: str, port: int) -> ThreadingHTTPServer:
    """Start the /metrics and /healthz server in a daemon thread and return it."""
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    logger.info("serving /metrics and /healthz on %s:%d", host, server.server_address[1])
    return server
