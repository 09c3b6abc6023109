"""The TableSync manifest as the job reads it: parsing, defaults and validation.

Called by ``__main__`` with the manifest from ``--spec FILE`` or ``TABLESYNC_SPEC``; the shape is
DESIGN.md section 2 (the CRD in crds/ is the cluster-side twin of these rules). Every problem
raises :class:`~tablesync_job.errors.InputError` naming the field, e.g. ``spec.source.table``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import InputError

CompareMode = Literal["version", "content"]
DeleteMode = Literal["apply", "soft", "ignore"]
LostRowsMode = Literal["refill", "warn", "ignore"]
VersionKind = Literal["auto", "timestamp", "monotonic", "counter"]

_IDENT = re.compile(r"^[^\x00]{1,63}$")
_STORAGE_URL = re.compile(r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^?#]*)?|file:///[^?#]*[^/?#][^?#]*)$")


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


@dataclass(frozen=True)
class TableName:
    """A schema-qualified table; ``public`` when the manifest gives no schema."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class SourceSpec:
    table: TableName
    primary_key: tuple[str, ...]
    version_column: str
    compare: CompareMode = "version"
    # How versions order (DESIGN.md section 4, version-safe deletes): timestamp and
    # monotonic versions are compared to the snapshot's watermark, counters per row.
    # ``auto``: timestamp for date/time columns, counter otherwise.
    version_kind: VersionKind = "auto"


@dataclass(frozen=True)
class StorageSpec:
    url: str
    endpoint: str | None = None
    keep_snapshots: int = 3


@dataclass(frozen=True)
class DestinationSpec:
    table: TableName
    deletes: DeleteMode = "apply"
    # With ``deletes: soft``: the timestamptz column set to the snapshot's capturedAt.
    soft_delete_column: str = "deleted_at"
    # Rows the destination lost (or holds older) outside any delta, found by a sample each run
    # (pipeline.probe_destination): refill them, only warn, or do not look.
    lost_rows: LostRowsMode = "refill"


@dataclass(frozen=True)
class GuardSpec:
    # Refuse a delta whose deletes exceed this fraction of T-1's rows. Fraction, 0..1.
    max_delete_fraction: float = 0.05
    # Refuse a snapshot that has fewer than (1 - this) x T-1's rows. Fraction, 0..1.
    max_shrink_fraction: float = 0.5


@dataclass(frozen=True)
class JobSpec:
    """What one run needs to know about its TableSync."""

    name: str
    namespace: str
    source: SourceSpec
    storage: StorageSpec
    destination: DestinationSpec
    guards: GuardSpec = field(default_factory=GuardSpec)

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"


def load(path: str | None) -> JobSpec:
    """Read the manifest from ``path`` (YAML or JSON) or, without one, ``TABLESYNC_SPEC``."""
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise InputError(f"--spec {path}: cannot read the file ({err.strerror})") from None
        except UnicodeDecodeError as err:
            raise InputError(f"--spec {path}: not UTF-8 text (byte {err.start}); save the "
                             "manifest as UTF-8") from None
        origin = path
    else:
        text = os.environ.get("TABLESYNC_SPEC", "")
        origin = "TABLESYNC_SPEC"
        if not text.strip():
            raise InputError("no TableSync manifest: pass --spec FILE or set TABLESYNC_SPEC")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        # (on one line: the message quotes the offending line, with a caret under it)
        raise InputError(f"{origin}: not valid YAML/JSON ({' '.join(str(err).split())})"
                         ) from None
    return parse(doc, origin=origin)


def parse(doc: Any, origin: str = "manifest") -> JobSpec:
    """Validate a manifest (a TableSync object, or just its ``spec``) into a JobSpec."""
    if not isinstance(doc, dict):
        raise InputError(f"{origin}: expected a TableSync object, got {type(doc).__name__}")
    if "spec" in doc:
        kind = doc.get("kind", "TableSync")
        if kind != "TableSync":
            raise InputError(f"{origin}: kind is {kind!r}, expected TableSync")
        meta = doc.get("metadata") or {}
        spec = doc["spec"]
    else:
        meta, spec = {}, doc
    r = _Reader(origin)
    if not isinstance(meta, dict):
        raise r.error("metadata", "must be an object (name, namespace)")
    spec = r.obj(spec, "spec")
    name = str(meta.get("name") or "tablesync")
    namespace = str(meta.get("namespace") or "default")

    src = r.obj(spec.get("source"), "spec.source")
    pk_raw = src.get("primaryKey")
    if isinstance(pk_raw, str):  # the CRD wants a list, so the cluster would refuse this manifest
        raise r.error("spec.source.primaryKey", f"must be a list of key columns, e.g. "
                      f"primaryKey: [{pk_raw}]")
    if not isinstance(pk_raw, list) or not pk_raw:
        raise r.error("spec.source.primaryKey", "must list one or more key columns")
    primary_key = tuple(r.ident(c, f"spec.source.primaryKey[{i}]") for i, c in enumerate(pk_raw))
    if len(set(primary_key)) != len(primary_key):
        raise r.error("spec.source.primaryKey", "names a column twice")
    version_column = r.ident(src.get("versionColumn"), "spec.source.versionColumn")
    if version_column in primary_key:
        raise r.error("spec.source.versionColumn", "must not be a primary key column")
    source = SourceSpec(
        table=r.table(src.get("table"), "spec.source.table"),
        primary_key=primary_key,
        version_column=version_column,
        compare=r.choice(src.get("compare", "version"), "spec.source.compare",
                         ("version", "content")),  # type: ignore[arg-type]
        version_kind=r.choice(src.get("versionKind", "auto"), "spec.source.versionKind",
                              ("auto", "timestamp", "monotonic", "counter")),  # type: ignore[arg-type]
    )

    sto = r.obj(spec.get("storage"), "spec.storage")
    url = sto.get("url")
    if not isinstance(url, str) or not _STORAGE_URL.match(url):
        raise r.error("spec.storage.url",
                      "must be s3://bucket/prefix or file:///absolute/path, without ? or #")
    if (problem := s3_prefix_problem(url)) is not None:
        raise r.error("spec.storage.url", problem)
    keep = sto.get("keepSnapshots", 3)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise r.error("spec.storage.keepSnapshots", "must be a whole number >= 1")
    endpoint = sto.get("endpoint")
    if endpoint is not None and (not isinstance(endpoint, str)
                                 or not re.match(r"^https?://", endpoint)):
        raise r.error("spec.storage.endpoint", "must be an http:// or https:// URL")
    storage = StorageSpec(url=url.rstrip("/"), endpoint=endpoint, keep_snapshots=keep)

    dst = r.obj(spec.get("destination"), "spec.destination")
    destination = DestinationSpec(
        table=r.table(dst.get("table"), "spec.destination.table"),
        deletes=r.choice(dst.get("deletes", "apply"), "spec.destination.deletes",
                         ("apply", "soft", "ignore")),  # type: ignore[arg-type]
        soft_delete_column=r.ident(dst.get("softDeleteColumn", "deleted_at"),
                                   "spec.destination.softDeleteColumn"),
        lost_rows=r.choice(dst.get("lostRows", "refill"), "spec.destination.lostRows",
                           ("refill", "warn", "ignore")),  # type: ignore[arg-type]
    )

    grd = r.obj(spec.get("guards") or {}, "spec.guards")
    guards = GuardSpec(
        max_delete_fraction=r.fraction(grd.get("maxDeleteFraction", 0.05),
                                       "spec.guards.maxDeleteFraction"),
        max_shrink_fraction=r.fraction(grd.get("maxShrinkFraction", 0.5),
                                       "spec.guards.maxShrinkFraction"),
    )
    return JobSpec(name=name, namespace=namespace, source=source, storage=storage,
                   destination=destination, guards=guards)


class _Reader:
    """Field checks that raise InputError naming the field and what to do."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def error(self, path: str, problem: str) -> InputError:
        return InputError(f"{path}: {problem} (in {self.origin})")

    def obj(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, "is required and must be an object")
        return value

    def ident(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not _IDENT.match(value):
            raise self.error(path, "is required: a column name of 1 to 63 characters")
        return value

    def table(self, value: Any, path: str) -> TableName:
        if not isinstance(value, str) or not value.strip():
            raise self.error(path, "is required: a table name such as public.prices")
        parts = value.split(".")
        if len(parts) == 1:
            return TableName("public", parts[0])
        if len(parts) == 2 and all(parts):
            return TableName(parts[0], parts[1])
        raise self.error(path, f"{value!r} is not 'table' or 'schema.table'")

    def choice(self, value: Any, path: str, options: tuple[str, ...]) -> str:
        if value not in options:
            raise self.error(path, f"is {value!r}; use one of {', '.join(options)}")
        return str(value)

    def fraction(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise self.error(path, f"is {value!r}; use a fraction from 0 to 1")
        return float(value)

