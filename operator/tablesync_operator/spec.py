"""A TableSync object parsed into typed, validated dataclasses.

Called by ``reconcile`` with the raw body kopf hands over; everything downstream
(``manifests``, ``status``) works on :class:`TableSync`. The rules repeat the CRD's admission
rules (objects may predate a CRD change) and add what admission cannot check: cron field
ranges, the IANA zone, Secret keys. Every problem is reported as a :class:`SpecProblem`
naming the field (``spec.source.table``) and what to do; :class:`SpecError` carries them all.
Contract: DESIGN.md section 2 and job-image/README.md (the job reads the same manifest).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from . import schedule as cron
from .names import ANNOTATION_APPROVE_DELTA, ANNOTATION_RUN_REQUESTED_AT

Compare = Literal["version", "content"]
Deletes = Literal["apply", "soft", "ignore"]
VersionKind = Literal["auto", "timestamp", "monotonic", "counter"]

# Mirrors the job's checks (job-image/tablesync_job/spec.py) so a manifest the operator
# accepts is one the job accepts.
_IDENT = re.compile(r"^[^\x00]{1,63}$")
_S3_OR_FILE = re.compile(r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^?#]*)?|file:///[^?#]*[^/?#][^?#]*)$")
_HTTP = re.compile(r"^https?://")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_DELTA_ID = re.compile(r"^[A-Za-z0-9_.:\-]+\.\.[A-Za-z0-9_.:\-]+$")
MAX_NAME_LENGTH = 52  # CronJob name limit; the CronJob has the TableSync's name


def s3_prefix_problem(url: str) -> str | None:
    """What S3 (or MinIO) would refuse in the object names under an ``s3://`` URL's prefix,
    as the rest of an error message; None when they are fine (and for ``file://``).

    Object keys are at most 1024 bytes of UTF-8 (the AWS S3 user guide, "Naming objects");
    MinIO also refuses empty, ``.`` and ``..`` path segments. The run adds up to about
    100 bytes under the prefix (``snapshots/<id>/part-00000.parquet``), so the prefix may
    have 900.
    """
    if not url.startswith("s3://"):
        return None
    prefix = url[len("s3://"):].partition("/")[2].rstrip("/")
    if not prefix:
        return None
    if any(segment in ("", ".", "..") for segment in prefix.split("/")):
        return "the prefix must not have empty, . or .. segments (// /./ /../)"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in prefix):
        return "the prefix must not have control characters"
    if len(prefix.encode()) > 900:
        return "the prefix must be at most 900 bytes (S3 object keys are at most 1024)"
    return None


def endpoint_problem(endpoint: str) -> str | None:
    """What the job refuses in ``spec.storage.endpoint``, as the rest of an error message;
    None when it takes it.

    Mirrors the job's check (job-image/tablesync_job/storage.py, ``_check_endpoint``, after
    it drops a ``user:password@``): http(s)://host[:port][/path], no whitespace anywhere
    (the job reads the value as written, untrimmed). Without it the TableSync was Ready and
    every run failed with exit 2 naming this field.
    """
    parts = urlsplit(endpoint)
    if "@" in parts.netloc:
        endpoint = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        parts = urlsplit(endpoint)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a port that is not a number, or above 65535
        port_ok = False
    if (parts.scheme not in ("http", "https") or not parts.hostname or not port_ok
            or any(c.isspace() for c in endpoint)):
        if "@" in endpoint:  # a password that a '/', '?' or '#' in it hid from urlsplit
            return ENDPOINT_WITH_PASSWORD
        return (f"{endpoint!r} is not an endpoint URL; use http(s)://host[:port], e.g. "
                "http://minio.storage:9000 (no spaces or line breaks)")
    return None


# What is said of an unusable endpoint with an '@' in it, which is not echoed: a '/', '?' or
# '#' in a password ends the host part early, so the '@' and the rest of the password are
# left where a host, port or path belongs (the job says the same)
ENDPOINT_WITH_PASSWORD = ("the URL holds an '@' outside its host part (a '/', '?' or '#' in "
                          "a password ends the host early); drop the user and password, "
                          "which S3 does not use: http(s)://host[:port], e.g. "
                          "http://minio.storage:9000")


@dataclass(frozen=True)
class SpecProblem:
    """One invalid field: ``path`` as in the manifest, ``message`` says what to do."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """The TableSync cannot be reconciled until the user fixes the fields listed."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


@dataclass(frozen=True)
class SecretKeyRef:
    """``{name, key}`` of a Secret in the TableSync's namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class SourceSpec:
    uri_secret_ref: SecretKeyRef
    table: str
    primary_key: tuple[str, ...]
    version_column: str
    compare: Compare = "version"
    version_kind: VersionKind = "auto"


@dataclass(frozen=True)
class StorageSpec:
    url: str
    endpoint: str | None = None
    credentials_secret: str | None = None
    """Secret with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (None: ambient creds)."""
    keep_snapshots: int = 3


@dataclass(frozen=True)
class DestinationSpec:
    uri_secret_ref: SecretKeyRef
    table: str
    deletes: Deletes = "apply"
    soft_delete_column: str | None = None


@dataclass(frozen=True)
class GuardsSpec:
    max_delete_fraction: float = 0.05
    """Refuse a delta deleting more than this fraction of T-1's rows. Fraction, 0..1."""
    max_shrink_fraction: float = 0.5
    """Refuse a snapshot more than this fraction smaller than T-1. Fraction, 0..1."""


@dataclass(frozen=True)
class JobSpec:
    """Knobs of the run's Job and pod (``spec.job``); None means the operator's default."""

    image: str | None = None
    active_deadline_seconds: int | None = None
    backoff_limit: int | None = None
    service_account_name: str | None = None
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    scratch_size_limit: str | None = None
    memory_limit: str | None = None
    """DuckDB memory limit passed as TABLESYNC_MEMORY_LIMIT (e.g. ``2GB``)."""


@dataclass(frozen=True)
class TableSyncSpec:
    schedule: str
    source: SourceSpec
    storage: StorageSpec
    destination: DestinationSpec
    time_zone: str | None = None
    suspend: bool = False
    guards: GuardsSpec = field(default_factory=GuardsSpec)
    job: JobSpec = field(default_factory=JobSpec)
    lag_threshold_seconds: int | None = None
    overrun_budget_seconds: int | None = None
    starting_deadline_seconds: int | None = None

    def secret_refs(self) -> list[tuple[str, SecretKeyRef]]:
        """Every Secret key the pod needs, with the field that names it, in spec order."""
        refs = [
            ("spec.source.uriSecretRef", self.source.uri_secret_ref),
            ("spec.destination.uriSecretRef", self.destination.uri_secret_ref),
        ]
        if self.storage.credentials_secret:
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                refs.append(
                    (
                        "spec.storage.credentialsSecretRef",
                        SecretKeyRef(self.storage.credentials_secret, key),
                    )
                )
        return refs

    def budget_seconds(self) -> int:
        """Overrun budget: ``overrunBudgetSeconds`` or half the shortest schedule interval."""
        if self.overrun_budget_seconds is not None:
            return self.overrun_budget_seconds
        return cron.default_budget_seconds(self.schedule, self.time_zone)

    def lag_threshold(self) -> int:
        """Lag threshold: ``lagThresholdSeconds`` or two of the longest schedule intervals."""
        if self.lag_threshold_seconds is not None:
            return self.lag_threshold_seconds
        return cron.default_lag_threshold_seconds(self.schedule, self.time_zone)

    def starting_deadline(self) -> int:
        """CronJob ``startingDeadlineSeconds``: the spec's, else derived from the budget."""
        if self.starting_deadline_seconds is not None:
            return self.starting_deadline_seconds
        return cron.default_starting_deadline_seconds(self.budget_seconds())


@dataclass(frozen=True)
class TableSync:
    """The parts of a TableSync object the operator acts on."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: TableSyncSpec
    raw_spec: Mapping[str, Any]
    """The spec exactly as stored (with API defaults), handed to the job as the manifest."""
    run_requested_at: str | None = None
    approve_delta: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ObjectRef:
    """Identity of a TableSync even when its spec does not parse."""

    namespace: str
    name: str
    uid: str
    generation: int

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ObjectRef:
        meta = body.get("metadata") or {}
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
        )


def parse(body: Mapping[str, Any]) -> TableSync:
    """Parse a TableSync object (as the API returns it) into :class:`TableSync`.

    Raises SpecError with every problem found, each naming its field.
    """
    ref = ObjectRef.of(body)
    meta = body.get("metadata") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    raw_spec = body.get("spec")
    r = _Reader()
    if len(ref.name) > MAX_NAME_LENGTH:
        r.problem(
            "metadata.name", f"must be at most {MAX_NAME_LENGTH} characters: it names the CronJob"
        )
    spec = parse_spec(raw_spec, r)
    approve = annotations.get(ANNOTATION_APPROVE_DELTA)
    if approve is not None:
        approve = approve.strip()
        # as the job splits it (snapshots.parse_delta_id): 'A..BA..B' (pasted twice) matches
        # the pattern, and every run it reached failed on it (exit 2)
        if not _DELTA_ID.match(approve) or len(approve.split("..")) != 2:
            r.problem(
                f"metadata.annotations[{ANNOTATION_APPROVE_DELTA}]",
                f"{approve!r} is not FROM..TO; copy the delta id from status.lastRun.deltaId",
            )
    r.raise_if_any()
    assert spec is not None and isinstance(raw_spec, Mapping)
    requested = annotations.get(ANNOTATION_RUN_REQUESTED_AT)
    return TableSync(
        namespace=ref.namespace,
        name=ref.name,
        uid=ref.uid,
        generation=ref.generation,
        spec=spec,
        raw_spec=raw_spec,
        run_requested_at=requested.strip() if requested and requested.strip() else None,
        approve_delta=approve or None,
    )


def parse_spec(raw: Any, r: _Reader | None = None) -> TableSyncSpec | None:
    """Parse ``spec``. With a reader, collects problems in it and returns None on failure;
    without one, raises SpecError."""
    own = r is None
    reader = r or _Reader()
    spec = _parse_spec(raw, reader)
    if own:
        reader.raise_if_any()
    return spec if not reader.problems else None


def _parse_spec(raw: Any, r: _Reader) -> TableSyncSpec | None:
    s = r.obj(raw, "spec")
    if s is None:
        return None

    schedule = r.string(
        s.get("schedule"), "spec.schedule", "a 5-field cron expression such as '*/30 * * * *'"
    )
    time_zone = r.optional_string(s.get("timeZone"), "spec.timeZone")
    if schedule is not None:
        try:
            cron.normalize(schedule)
        except cron.ScheduleError as err:
            r.problem("spec.schedule", str(err))
            schedule = None
    if time_zone is not None:
        try:
            cron.zone(time_zone)
        except cron.ScheduleError as err:
            r.problem("spec.timeZone", str(err))
    suspend = r.boolean(s.get("suspend", False), "spec.suspend")

    src = r.obj(s.get("source"), "spec.source") or {}
    source_ref = r.secret_key_ref(src.get("uriSecretRef"), "spec.source.uriSecretRef")
    source_table = r.table(src.get("table"), "spec.source.table")
    pk_raw = src.get("primaryKey")
    primary_key: tuple[str, ...] = ()
    if not isinstance(pk_raw, list) or not pk_raw:
        r.problem("spec.source.primaryKey", "must list one or more key columns")
    else:
        primary_key = tuple(
            r.ident(c, f"spec.source.primaryKey[{i}]") or "" for i, c in enumerate(pk_raw)
        )
        if len(set(primary_key)) != len(primary_key):
            r.problem("spec.source.primaryKey", "names a column twice")
    version_column = r.ident(src.get("versionColumn"), "spec.source.versionColumn")
    if version_column and version_column in primary_key:
        r.problem("spec.source.versionColumn", "must not be a primary key column")
    compare = r.choice(src.get("compare", "version"), "spec.source.compare", ("version", "content"))
    version_kind = r.choice(
        src.get("versionKind", "auto"),
        "spec.source.versionKind",
        ("auto", "timestamp", "monotonic", "counter"),
    )

    sto = r.obj(s.get("storage"), "spec.storage") or {}
    url = sto.get("url")
    if not isinstance(url, str) or not _S3_OR_FILE.match(url):
        r.problem("spec.storage.url",
                  "must be s3://bucket/prefix or file:///absolute/path, without ? or #")
        url = None
    elif url.startswith("file://"):
        # for runs by hand (DESIGN.md section 2): a job pod has a read-only root and mounts
        # only its scratch volume, which goes with the pod, so every run bootstrapped anew
        r.problem("spec.storage.url", "file:// storage is for runs by hand (tablesync-job "
                  "run); a job pod's files go with it, so a TableSync needs s3://bucket/prefix")
        url = None
    elif (problem := s3_prefix_problem(url)) is not None:
        r.problem("spec.storage.url", problem)
        url = None
    endpoint = r.optional_string(sto.get("endpoint"), "spec.storage.endpoint")
    if endpoint is not None and not _HTTP.match(endpoint):
        r.problem("spec.storage.endpoint", "must be an http:// or https:// URL")
    elif endpoint is not None and (problem := endpoint_problem(sto["endpoint"])) is not None:
        r.problem("spec.storage.endpoint", problem)
    credentials = sto.get("credentialsSecretRef")
    credentials_secret: str | None = None
    if credentials is not None:
        cred = r.obj(credentials, "spec.storage.credentialsSecretRef") or {}
        credentials_secret = r.secret_name(
            cred.get("name"), "spec.storage.credentialsSecretRef.name"
        )
    keep = r.integer(sto.get("keepSnapshots", 3), "spec.storage.keepSnapshots", minimum=1)

    dst = r.obj(s.get("destination"), "spec.destination") or {}
    destination_ref = r.secret_key_ref(dst.get("uriSecretRef"), "spec.destination.uriSecretRef")
    destination_table = r.table(dst.get("table"), "spec.destination.table")
    deletes = r.choice(
        dst.get("deletes", "apply"), "spec.destination.deletes", ("apply", "soft", "ignore")
    )
    soft_column = dst.get("softDeleteColumn")
    if soft_column is not None:
        soft_column = r.ident(soft_column, "spec.destination.softDeleteColumn")

    grd = r.obj(s.get("guards") or {}, "spec.guards") or {}
    max_delete = r.fraction(grd.get("maxDeleteFraction", 0.05), "spec.guards.maxDeleteFraction")
    max_shrink = r.fraction(grd.get("maxShrinkFraction", 0.5), "spec.guards.maxShrinkFraction")

    job = _parse_job(s.get("job"), r)
    lag = s.get("lagThresholdSeconds")
    lag_threshold = None if lag is None else r.integer(lag, "spec.lagThresholdSeconds", minimum=1)
    budget = s.get("overrunBudgetSeconds")
    budget_seconds = (
        None if budget is None else r.integer(budget, "spec.overrunBudgetSeconds", minimum=1)
    )
    deadline = s.get("startingDeadlineSeconds")
    starting_deadline = (
        None
        if deadline is None
        else r.integer(deadline, "spec.startingDeadlineSeconds", minimum=10)
    )

    if r.problems:
        return None
    assert schedule and source_ref and source_table and version_column and url
    assert destination_ref and destination_table and keep is not None and job is not None
    return TableSyncSpec(
        schedule=schedule,
        time_zone=time_zone,
        suspend=bool(suspend),
        source=SourceSpec(
            uri_secret_ref=source_ref,
            table=source_table,
            primary_key=primary_key,
            version_column=version_column,
            compare=compare,  # type: ignore[arg-type]
            version_kind=version_kind,  # type: ignore[arg-type]
        ),
        storage=StorageSpec(
            url=url, endpoint=endpoint, credentials_secret=credentials_secret, keep_snapshots=keep
        ),
        destination=DestinationSpec(
            uri_secret_ref=destination_ref,
            table=destination_table,
            deletes=deletes,  # type: ignore[arg-type]
            soft_delete_column=soft_column,
        ),
        guards=GuardsSpec(
            max_delete_fraction=float(max_delete or 0), max_shrink_fraction=float(max_shrink or 0)
        ),
        job=job,
        lag_threshold_seconds=lag_threshold,
        overrun_budget_seconds=budget_seconds,
        starting_deadline_seconds=starting_deadline,
    )


# A Kubernetes quantity (apimachinery resource.ParseQuantity): a number, then a decimal SI
# suffix (n u m k M G T P E), a binary one (Ki Mi Gi Ti Pi Ei) or an exponent. The API server
# cannot decode a CronJob holding anything else (512mi, 1.2.3), so a looser check here left
# the TableSync retrying that apply forever instead of Stalled naming the field.
_QUANTITY = re.compile(
    r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([numkMGTPE]|[KMGTPE]i|[eE][-+]?[0-9]+)?$"
)
# spec.job.memoryLimit: the CRD's pattern; the job reads it as DuckDB does (diff.size_bytes)
_MEMORY_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?) ?(?:([kKmMgGtT])([iI]?))?[bB]$")


def _memory_bytes(size: re.Match[str]) -> int:
    """Whole bytes of a ``_MEMORY_SIZE`` match, as the job's ``diff.size_bytes`` counts them.

    The job refuses a size under one byte (``0.5B``), so the operator does too.
    """
    number, prefix, binary = size.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** " KMGT".index((prefix or " ").upper()))


def _parse_job(raw: Any, r: _Reader) -> JobSpec | None:
    if raw is None:
        return JobSpec()
    j = r.obj(raw, "spec.job")
    if j is None:
        return None
    image = r.optional_string(j.get("image"), "spec.job.image")
    deadline = j.get("activeDeadlineSeconds")
    backoff = j.get("backoffLimit")
    sa = j.get("serviceAccountName")
    resources: dict[str, dict[str, str]] = {}
    raw_res = j.get("resources")
    if raw_res is not None:
        res = r.obj(raw_res, "spec.job.resources") or {}
        for part in ("requests", "limits"):
            values = res.get(part)
            if values is None:
                continue
            amounts = r.obj(values, f"spec.job.resources.{part}") or {}
            resources[part] = {}
            for resource, amount in amounts.items():
                text = str(amount)
                if not _QUANTITY.match(text):
                    r.problem(
                        f"spec.job.resources.{part}.{resource}", f"{text!r} is not a quantity"
                    )
                resources[part][str(resource)] = text
    scratch = r.optional_string(j.get("scratchSizeLimit"), "spec.job.scratchSizeLimit")
    if scratch is not None and not _QUANTITY.match(scratch):
        r.problem("spec.job.scratchSizeLimit", f"{scratch!r} is not a quantity such as 10Gi")
    memory = r.optional_string(j.get("memoryLimit"), "spec.job.memoryLimit")
    size = _MEMORY_SIZE.match(memory) if memory is not None else None
    if memory is not None and (size is None or _memory_bytes(size) <= 0):
        r.problem("spec.job.memoryLimit", f"{memory!r} is not a positive memory size such as "
                  "2GB or 512MiB")
    return JobSpec(
        image=image,
        active_deadline_seconds=(
            None
            if deadline is None
            else r.integer(deadline, "spec.job.activeDeadlineSeconds", minimum=1)
        ),
        backoff_limit=None
        if backoff is None
        else r.integer(backoff, "spec.job.backoffLimit", minimum=0),
        service_account_name=None
        if sa is None
        else r.secret_name(sa, "spec.job.serviceAccountName", kind="ServiceAccount"),
        resources=resources,
        scratch_size_limit=scratch,
        memory_limit=memory,
    )


class _Reader:
    """Field checks that record a SpecProblem naming the field and return None on failure."""

    def __init__(self) -> None:
        self.problems: list[SpecProblem] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(SpecProblem(path, message))

    def raise_if_any(self) -> None:
        if self.problems:
            raise SpecError(self.problems)

    def obj(self, value: Any, path: str) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.problem(path, "is required and must be an object")
            return None
        return value

    def string(self, value: Any, path: str, what: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.problem(path, f"is required: {what}")
            return None
        return value.strip()

    def optional_string(self, value: Any, path: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(path, "must be a non-empty string when given")
            return None
        return value.strip()

    def boolean(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.problem(path, "must be true or false")
            return None
        return value

    def integer(self, value: Any, path: str, minimum: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.problem(path, f"is {value!r}; use a whole number >= {minimum}")
            return None
        return value

    def fraction(self, value: Any, path: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            self.problem(path, f"is {value!r}; use a fraction from 0 to 1")
            return None
        return float(value)

    def choice(self, value: Any, path: str, options: tuple[str, ...]) -> str:
        if value not in options:
            self.problem(path, f"is {value!r}; use one of {', '.join(options)}")
            return options[0]
        return str(value)

    def ident(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not _IDENT.match(value):
            self.problem(path, "is required: a column name of 1 to 63 characters")
            return None
        return value

    def table(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.problem(path, "is required: a table name such as public.prices")
            return None
        parts = value.split(".")
        if len(parts) > 2 or not all(parts):
            self.problem(path, f"{value!r} is not 'table' or 'schema.table'")
            return None
        return value

    def secret_name(self, value: Any, path: str, kind: str = "Secret") -> str | None:
        """A Secret's (or, with ``kind``, another object's) name: a DNS subdomain."""
        if value is None:
            self.problem(path, f"is required: the name of a {kind} in the TableSync's namespace")
            return None
        if not isinstance(value, str) or not _DNS_SUBDOMAIN.match(value):
            self.problem(path, f"{value!r} is not a {kind} name: use lowercase letters, digits, "
                               "'-' and '.' (at most 253), as the object in the TableSync's "
                               "namespace is named")
            return None
        return value

    def secret_key_ref(self, value: Any, path: str) -> SecretKeyRef | None:
        ref = self.obj(value, path)
        if ref is None:
            return None
        name = self.secret_name(ref.get("name"), f"{path}.name")
        key = ref.get("key")
        if not isinstance(key, str) or not _SECRET_KEY.match(key):
            self.problem(f"{path}.key", "is required: a key of the Secret, e.g. uri")
            return None
        return SecretKeyRef(name, key) if name else None
