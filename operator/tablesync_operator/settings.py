"""Operator settings: one frozen dataclass, read once from the environment at start-up.

Called by ``__main__`` (which may override fields from the command line) and passed down to
``reconcile``, ``manifests`` and ``leader``. Every field documents its unit and the
environment variable that sets it; all variables share the ``TABLESYNC_OPERATOR_`` prefix so
they never mix with the job's own ``TABLESYNC_*`` variables.
"""

from __future__ import annotations

import fnmatch
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata

ENV_PREFIX = "TABLESYNC_OPERATOR_"


def _package_version() -> str:
    try:
        return metadata.version("tablesync-operator")
    except metadata.PackageNotFoundError:  # pragma: no cover - only in a source checkout
        return "0.0.0"


VERSION = _package_version()
DEFAULT_JOB_IMAGE = f"tablesync/job:{VERSION}"


class SettingsError(ValueError):
    """An environment variable or option has a value the operator cannot use; names it."""


@dataclass(frozen=True)
class Settings:
    """Everything the operator is configured with. Immutable once the operator runs."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means the whole cluster. Entries may be globs (``team-*``);
    an entry ``!glob`` excludes from the entries before it (``team-*,!team-test``), or from
    every namespace when it comes first. ``TABLESYNC_OPERATOR_NAMESPACES``
    (comma-separated)."""

    metrics_host: str = "0.0.0.0"
    """Address the metrics and health HTTP server binds to. ``TABLESYNC_OPERATOR_METRICS_HOST``."""

    metrics_port: int = 8080
    """TCP port of ``/metrics`` and ``/healthz``; 0 disables the server.
    ``TABLESYNC_OPERATOR_METRICS_PORT``."""

    resync_interval_seconds: float = 30.0
    """How often each TableSync is re-checked: lag refresh, missed schedules, Secrets that
    appeared, a CronJob deleted behind our back, and a TableSync the watch did not show (the
    resync lists them). Measured in seconds.
    ``TABLESYNC_OPERATOR_RESYNC_INTERVAL_SECONDS``."""

    job_image: str = DEFAULT_JOB_IMAGE
    """Image of the job pods when a TableSync does not set ``spec.job.image``.
    ``TABLESYNC_OPERATOR_JOB_IMAGE``."""

    job_image_pull_policy: str = "IfNotPresent"
    """``imagePullPolicy`` of the job container. ``TABLESYNC_OPERATOR_JOB_IMAGE_PULL_POLICY``."""

    job_service_account: str = ""
    """Service account of the job pods when a TableSync does not set
    ``spec.job.serviceAccountName``; empty means the namespace's ``default``. The pods never
    get an API token mounted. ``TABLESYNC_OPERATOR_JOB_SERVICE_ACCOUNT``."""

    job_user_id: int = 65532
    """UID and GID the job container runs as (non-root). ``TABLESYNC_OPERATOR_JOB_USER_ID``."""

    default_active_deadline_seconds: int = 3600
    """A run's ``activeDeadlineSeconds`` when the spec does not set ``spec.job``'s.
    Measured in seconds. ``TABLESYNC_OPERATOR_DEFAULT_ACTIVE_DEADLINE_SECONDS``."""

    default_backoff_limit: int = 2
    """A run's ``backoffLimit`` (retries of transient failures) when the spec does not set it.
    ``TABLESYNC_OPERATOR_DEFAULT_BACKOFF_LIMIT``."""

    successful_jobs_history_limit: int = 3
    """Successful Jobs each CronJob keeps, at least 1: the operator reads a finished Job's
    report before the CronJob's history removes it (with 0 it goes at once, and the run is
    never counted). ``TABLESYNC_OPERATOR_SUCCESSFUL_JOBS_HISTORY``."""

    failed_jobs_history_limit: int = 3
    """Failed Jobs each CronJob keeps, at least 1, likewise.
    ``TABLESYNC_OPERATOR_FAILED_JOBS_HISTORY``."""

    leader_election: bool = True
    """Hold a ``coordination.k8s.io`` Lease before acting, so that of several replicas only
    one ever reconciles. ``TABLESYNC_OPERATOR_LEADER_ELECTION`` (true/false)."""

    lease_name: str = "tablesync-operator"
    """Name of the Lease. ``TABLESYNC_OPERATOR_LEASE_NAME``."""

    lease_namespace: str = "default"
    """Namespace of the Lease; defaults to the pod's own namespace (``POD_NAMESPACE``, or the
    service account's namespace file). ``TABLESYNC_OPERATOR_LEASE_NAMESPACE``."""

    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}")
    """This replica's holder identity in the Lease; ``POD_NAME`` plus a random suffix."""

    lease_duration_seconds: float = 15.0
    """How long a Lease holder is trusted without renewing. Measured in seconds.
    ``TABLESYNC_OPERATOR_LEASE_DURATION_SECONDS``."""

    renew_deadline_seconds: float = 10.0
    """The leader exits if it could not renew for this long (must be below the lease
    duration). Measured in seconds. ``TABLESYNC_OPERATOR_RENEW_DEADLINE_SECONDS``."""

    retry_period_seconds: float = 2.0
    """Pause between Lease attempts. Measured in seconds.
    ``TABLESYNC_OPERATOR_RETRY_PERIOD_SECONDS``."""

    workers: int = 8
    """Threads that run the (synchronous) handlers. ``TABLESYNC_OPERATOR_WORKERS``."""

    log_format: str = "plain"
    """``plain``, ``full`` or ``json`` (kopf's formats). ``TABLESYNC_OPERATOR_LOG_FORMAT``."""

    verbose: bool = False
    """Debug logging. ``TABLESYNC_OPERATOR_VERBOSE`` (true/false)."""

    def __post_init__(self) -> None:
        if self.renew_deadline_seconds >= self.lease_duration_seconds:
            raise SettingsError(
                f"{ENV_PREFIX}RENEW_DEADLINE_SECONDS ({self.renew_deadline_seconds}) must be "
                f"below {ENV_PREFIX}LEASE_DURATION_SECONDS ({self.lease_duration_seconds})"
            )
        if self.retry_period_seconds <= 0 or self.resync_interval_seconds <= 0:
            raise SettingsError("intervals must be positive")
        for var, value in (("SUCCESSFUL_JOBS_HISTORY", self.successful_jobs_history_limit),
                           ("FAILED_JOBS_HISTORY", self.failed_jobs_history_limit)):
            if value < 1:
                raise SettingsError(
                    f"{ENV_PREFIX}{var}: {value} is below 1; the operator reads each finished "
                    "Job before the CronJob's history removes it, so keep at least one")
        if self.default_backoff_limit < 0 or self.default_active_deadline_seconds < 1:
            raise SettingsError(
                f"{ENV_PREFIX}DEFAULT_BACKOFF_LIMIT must be 0 or more and "
                f"{ENV_PREFIX}DEFAULT_ACTIVE_DEADLINE_SECONDS 1 or more")
        if not 0 <= self.metrics_port <= 65535:
            raise SettingsError(f"{ENV_PREFIX}METRICS_PORT: {self.metrics_port} is not a port")
        if self.log_format not in ("plain", "full", "json"):
            raise SettingsError(f"{ENV_PREFIX}LOG_FORMAT: use plain, full or json")

    @property
    def clusterwide(self) -> bool:
        """True when no namespaces are listed: watch every namespace."""
        return not self.namespaces

    def kopf_namespaces(self) -> list[str]:
        """``namespaces`` as kopf's namespace patterns: each ``!glob`` joins the pattern before
        it (kopf reads ``"team-*, !team-test"`` as one pattern, but a lone ``"!team-test"`` as
        "every namespace but team-test", and serves the union of its patterns)."""
        patterns: list[str] = []
        for entry in self.namespaces:
            if entry.startswith("!") and patterns:
                patterns[-1] = f"{patterns[-1]},{entry}"
            else:
                patterns.append(entry)
        return patterns

    def exact_namespaces(self) -> list[str] | None:
        """The watched namespaces when every entry is a plain name, else None (globs)."""
        if any(set(entry) & set("*?![,") for entry in self.namespaces):
            return None
        return list(self.namespaces)

    def watches(self, namespace: str) -> bool:
        """True if ``namespace`` is one the operator serves, by kopf's rule for the patterns
        of ``kopf_namespaces`` (each is a glob, or ``*`` when it starts with ``!``, followed
        only by ``!glob`` exclusions): any pattern whose glob matches and no exclusion does."""
        if self.clusterwide:
            return True
        for pattern in self.kopf_namespaces():
            include, *excludes = pattern.split(",")
            if include.startswith("!"):
                include, excludes = "*", [include, *excludes]
            if fnmatch.fnmatch(namespace, include) and not any(
                fnmatch.fnmatch(namespace, exclude[1:]) for exclude in excludes
            ):
                return True
        return False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from ``environ`` (default ``os.environ``).

        Raises SettingsError naming the variable when a value does not parse.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name)
            return value.strip() if value is not None and value.strip() != "" else None

        def as_int(name: str) -> int | None:
            raw = get(name)
            if raw is None:
                return None
            try:
                return int(raw)
            except ValueError:
                raise SettingsError(f"{ENV_PREFIX}{name}: {raw!r} is not a whole number") from None

        def as_float(name: str) -> float | None:
            raw = get(name)
            if raw is None:
                return None
            try:
                return float(raw)
            except ValueError:
                raise SettingsError(f"{ENV_PREFIX}{name}: {raw!r} is not a number") from None

        def as_bool(name: str) -> bool | None:
            raw = get(name)
            if raw is None:
                return None
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise SettingsError(f"{ENV_PREFIX}{name}: {raw!r} is not true or false")

        values: dict[str, object] = {}
        raw_ns = get("NAMESPACES")
        if raw_ns is not None:
            values["namespaces"] = tuple(n.strip() for n in raw_ns.split(",") if n.strip())
        for attr, name in (
            ("metrics_host", "METRICS_HOST"),
            ("job_image", "JOB_IMAGE"),
            ("job_image_pull_policy", "JOB_IMAGE_PULL_POLICY"),
            ("job_service_account", "JOB_SERVICE_ACCOUNT"),
            ("lease_name", "LEASE_NAME"),
            ("log_format", "LOG_FORMAT"),
        ):
            text = get(name)
            if text is not None:
                values[attr] = text
        for attr, name in (
            ("metrics_port", "METRICS_PORT"),
            ("job_user_id", "JOB_USER_ID"),
            ("default_active_deadline_seconds", "DEFAULT_ACTIVE_DEADLINE_SECONDS"),
            ("default_backoff_limit", "DEFAULT_BACKOFF_LIMIT"),
            ("successful_jobs_history_limit", "SUCCESSFUL_JOBS_HISTORY"),
            ("failed_jobs_history_limit", "FAILED_JOBS_HISTORY"),
            ("workers", "WORKERS"),
        ):
            number = as_int(name)
            if number is not None:
                values[attr] = number
        for attr, name in (
            ("resync_interval_seconds", "RESYNC_INTERVAL_SECONDS"),
            ("lease_duration_seconds", "LEASE_DURATION_SECONDS"),
            ("renew_deadline_seconds", "RENEW_DEADLINE_SECONDS"),
            ("retry_period_seconds", "RETRY_PERIOD_SECONDS"),
        ):
            seconds = as_float(name)
            if seconds is not None:
                values[attr] = seconds
        for attr, name in (("leader_election", "LEADER_ELECTION"), ("verbose", "VERBOSE")):
            flag = as_bool(name)
            if flag is not None:
                values[attr] = flag
        values["lease_namespace"] = get("LEASE_NAMESPACE") or _own_namespace(env)
        pod_name = env.get("POD_NAME") or socket.gethostname()
        values["identity"] = f"{pod_name}-{uuid.uuid4().hex[:8]}"
        return cls(**values)  # type: ignore[arg-type]


_SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _own_namespace(env: Mapping[str, str]) -> str:
    """The pod's namespace: ``POD_NAMESPACE``, else the service account file, else default."""
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    try:
        with open(_SA_NAMESPACE_FILE) as handle:
            return handle.read().strip() or "default"
    except OSError:
        return "default"
