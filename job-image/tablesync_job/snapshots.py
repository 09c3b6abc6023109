"""The storage layout of one TableSync (DESIGN.md section 5) and the records kept in it.

::

    <url>/snapshots/<snapshot-id>/part-*.parquet + manifest.json
    <url>/snapshots/<snapshot-id>/pending-deletes.parquet   # see State.pending_deletes
    <url>/snapshots/<snapshot-id>/absent-candidates.parquet # see pipeline.probe_absent
    <url>/deltas/<from-id>..<to-id>/part-*.parquet + manifest.json
    <url>/runs/<run-id>.json
    <url>/state.json            # last applied snapshot id and its watermark

A snapshot or delta exists only once its ``manifest.json`` exists: parts go up first, the
manifest last. ``state.json`` is written only after the destination committed. Snapshot ids
sort by time (``YYYYmmddTHHMMSS.ffffffZ``). Used by ``pipeline`` and the stages.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import START_OVER, InputError
from .storage import Storage

BOOTSTRAP = "bootstrap"  # the FROM of the first delta, which has no T-1
PENDING_DELETES = "pending-deletes.parquet"
ABSENT_CANDIDATES = "absent-candidates.parquet"


SNAPSHOT_ID = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{4}")


def new_snapshot_id(now: datetime | None = None) -> str:
    """A time-sortable id, e.g. ``20261121T110000.123456Z-3fa2``."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S.%f}Z-{secrets.token_hex(2)}"


def delta_id(from_id: str | None, to_id: str) -> str:
    return f"{from_id or BOOTSTRAP}..{to_id}"


def parse_delta_id(value: str, field_name: str) -> tuple[str | None, str]:
    """Split ``FROM..TO``; FROM is None for a bootstrap delta. Raises InputError naming field."""
    parts = value.split("..")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise InputError(f"{field_name}: {value!r} is not FROM..TO (e.g. as printed by a guard)")
    return (None if parts[0] == BOOTSTRAP else parts[0]), parts[1]


@dataclass
class Column:
    """One column of a snapshot: name, Postgres type as ``format_type`` prints it, Arrow type."""

    name: str
    pg_type: str
    arrow_type: str


@dataclass
class Snapshot:
    """Snapshot T: a consistent read of the source table (written by ``dump``)."""

    id: str
    table: str
    captured_at: str  # ISO 8601 with offset: the source's as-of time
    in_recovery: bool  # dumped from a standby
    rows: int
    bytes: int
    columns: list[Column]
    primary_key: list[str]
    version_column: str
    version_kind: str  # timestamp | monotonic | counter (resolved, never auto)
    # in Postgres's order (dump.version_extremes); None for a version T holds as text other
    # than numeric (pg_lsn, a domain), whose text does not order as its values
    min_version: str | None
    max_version: str | None
    watermark: str | None  # version-typed literal; deletes compare against it (DESIGN.md 4)
    parts: list[str] = field(default_factory=list)
    dump_seconds: float = 0.0
    # Where in the source's WAL the data is: on a primary its flushed position, on a standby
    # the position replayed, each read right after the transaction's snapshot was fixed.
    # Comparable across a primary and its replicas (one system_identifier), unlike capturedAt
    # when the source has been idle. None when the source's role may not read them.
    lsn: str | None = None  # pg_lsn text, e.g. "0/3000148"
    system_identifier: str | None = None  # pg_control_system(): the cluster's identity
    # The dump session's settings that shape the text of values travelling as text (a
    # tstzrange key, a bytea[]) beyond those it sets itself: TimeZone, bytea_output. None in
    # a snapshot an earlier build stored.
    text_settings: dict[str, str] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        data = dict(data)
        data["columns"] = [Column(**c) for c in data["columns"]]
        return cls(**data)


@dataclass
class Delta:
    """The fat delta from T-1 (None on bootstrap) to T: op, full new row, old version."""

    from_id: str | None
    to_id: str
    inserts: int
    updates: int
    deletes: int
    from_rows: int  # rows in T-1 (0 on bootstrap)
    to_rows: int
    version_kind: str  # timestamp | monotonic | counter, as resolved by dump
    watermark: str | None  # version-typed literal deletes compare against; None for counter
    captured_at: str  # T's capturedAt: soft deletes stamp it
    parts: list[str] = field(default_factory=list)
    diff_seconds: float = 0.0
    # of ``deletes``: keys the last apply kept (the destination was newer, or a bootstrap or
    # refill found the row there and not in its snapshot), still absent at the source in T,
    # asked again (their old version is the destination's then)
    pending_deletes: int = 0
    # ``compare: version`` only: columns T-1 lacked. Their values are written at an equal
    # version too (the version did not change when the column was added at the source).
    added_columns: list[str] = field(default_factory=list)
    # Rows of T unchanged since T-1, added because the destination had lost rows that no
    # delta would bring back (pipeline.probe_destination): upserted like updates.
    refills: int = 0
    # why the delta takes every row of T (``refills``), for the run's message; None in a
    # delta an earlier build stored (then it was rows the destination had lost)
    refill_reason: str | None = None

    @property
    def id(self) -> str:
        return delta_id(self.from_id, self.to_id)

    @property
    def bootstrap(self) -> bool:
        return self.from_id is None

    @property
    def changes(self) -> int:
        return self.inserts + self.updates + self.deletes

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Delta:
        return cls(**data)


@dataclass
class State:
    """``state.json``: the last snapshot whose delta the destination committed.

    ``applying`` names the delta an apply is under way for: written once the destination
    transaction has begun and before it can commit, with that transaction's id
    (``applying_xid``, ``pg_current_xact_id()``) and the cluster's ``system_identifier``
    (``applying_system``); cleared together with the advance after the commit. Found set by
    the next run, it means a run died in between; that run asks the destination what became
    of the transaction (``pipeline.resume_interrupted``), so T-1 is the snapshot the
    destination really holds. All fields but ``applying*`` are None until the first apply
    committed.
    """

    last_applied_snapshot_id: str | None
    captured_at: str | None
    # when the state was written, to the microsecond (earlier builds: the second); a delete
    # asked again compares it with T's capturedAt (apply._delete)
    applied_at: str | None
    delta_id: str | None
    applying: str | None = None
    applying_xid: str | None = None  # None in a marker an earlier build wrote
    applying_system: str | None = None
    # the apply's counts (``ApplyResult.as_report``), written just before its commit
    applying_result: dict[str, int] | None = None
    # and the ``deletes`` the state records once it advances past it
    applying_deletes: str | None = None
    # Deletes the apply kept because the destination's row was newer (stale-skipped), and
    # the destination's rows a bootstrap or refill found its snapshot lacks
    # (``apply._absent_rows``), stored as key and destination version in
    # ``snapshots/<last applied>/pending-deletes.parquet``; the next diff deletes those still
    # absent from the source (DESIGN.md section 4 says a newer row survives; a row the event
    # lane updated and then lost the delete of would otherwise survive for good).
    pending_deletes: int = 0
    # ``spec.destination.deletes`` at the apply that advanced the state (None: an earlier
    # build's state): after ``ignore``, the rows deleted at the source meanwhile are in no
    # delta, so the first run under ``apply`` or ``soft`` takes every row of T to find them
    deletes: str | None = None
    # ``namespace/name`` of the TableSync whose apply wrote it (None: an earlier build's
    # state); a run of another one refuses the prefix (``pipeline.check_owner``)
    tablesync: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        state = cls(**data)
        if state.last_applied_snapshot_id is not None and \
                not isinstance(state.last_applied_snapshot_id, str):
            raise ValueError("last_applied_snapshot_id is not a string")
        return state


class Layout:
    """Reads and writes the records above under one TableSync's prefix."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    # snapshots -------------------------------------------------------------------------
    def snapshot_prefix(self, snapshot_id: str) -> str:
        return f"snapshots/{snapshot_id}"

    def put_snapshot(self, snap: Snapshot, local_parts: list[Path]) -> None:
        prefix = self.snapshot_prefix(snap.id)
        for part in local_parts:
            self.storage.upload_file(part, f"{prefix}/{part.name}")
        snap.parts = [p.name for p in local_parts]
        self.storage.put_bytes(f"{prefix}/manifest.json", _dump_json(asdict(snap)))

    def get_snapshot(self, snapshot_id: str) -> Snapshot | None:
        key = f"{self.snapshot_prefix(snapshot_id)}/manifest.json"
        data = self._read_json(key)
        return None if data is None else _record(Snapshot, data, key, self.storage.url)

    def pending_deletes_key(self, snapshot_id: str) -> str:
        return f"{self.snapshot_prefix(snapshot_id)}/{PENDING_DELETES}"

    def absent_candidates_key(self, snapshot_id: str) -> str:
        return f"{self.snapshot_prefix(snapshot_id)}/{ABSENT_CANDIDATES}"

    def snapshot_ids(self) -> list[str]:
        # at this depth only: another TableSync's prefix may lie under ours (url/snapshots)
        return sorted({k.split("/")[1] for k in self.storage.list("snapshots/")
                       if k.endswith("/manifest.json") and k.count("/") == 2})

    # deltas ----------------------------------------------------------------------------
    def delta_prefix(self, delta: str) -> str:
        return f"deltas/{delta}"

    def put_delta(self, delta: Delta, local_parts: list[Path]) -> None:
        prefix = self.delta_prefix(delta.id)
        for part in local_parts:
            self.storage.upload_file(part, f"{prefix}/{part.name}")
        delta.parts = [p.name for p in local_parts]
        self.storage.put_bytes(f"{prefix}/manifest.json", _dump_json(asdict(delta)))

    def get_delta(self, delta: str) -> Delta | None:
        key = f"{self.delta_prefix(delta)}/manifest.json"
        data = self._read_json(key)
        return None if data is None else _record(Delta, data, key, self.storage.url)

    def delta_ids(self) -> list[str]:
        return sorted({k.split("/")[1] for k in self.storage.list("deltas/")
                       if k.endswith("/manifest.json") and k.count("/") == 2})

    def fetch(self, prefix: str, parts: list[str], into: Path) -> list[Path]:
        """Local paths of ``parts``: in place for file://, else downloaded ``into``; a part
        already there (the same run fetched it before: a refill diffs T-1 again) is reused,
        so ``into`` must be named for what it holds."""
        local = []
        for part in parts:
            in_place = self.storage.local_path(f"{prefix}/{part}")
            if in_place is not None:
                if not in_place.is_file():
                    raise InputError(f"spec.storage.url: {self.storage.url}/{prefix}/{part} is "
                                     "missing; the stored snapshot or delta is incomplete; "
                                     f"{START_OVER}")
                local.append(in_place)
                continue
            into.mkdir(parents=True, exist_ok=True)
            target = into / part
            if not target.is_file():  # downloads land complete or not at all
                self.storage.download_file(f"{prefix}/{part}", target)
            local.append(target)
        return local

    # state and runs --------------------------------------------------------------------
    def get_state(self) -> State | None:
        data = self._read_json("state.json")
        return None if data is None else _record(State, data, "state.json", self.storage.url)

    def _read_json(self, key: str) -> dict[str, Any] | None:
        """A stored JSON object; None if the key does not exist. InputError naming the file
        when it is empty (a truncated write) or not a JSON object: a damaged record must stop
        the run, not pass for a missing one (an empty state.json bootstrapped, exit 0)."""
        raw = self.storage.get_bytes(key)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            data, why = None, f"not JSON ({err})" if raw.strip() else "empty"
        else:
            why = f"a JSON {type(data).__name__}, not an object"
        if not isinstance(data, dict):
            raise InputError(f"spec.storage.url: {self.storage.url}/{key} is damaged ({why}); "
                             f"restore it, or {START_OVER}")
        return data

    def put_state(self, state: State | None) -> None:
        """Write ``state.json``; None deletes it (no apply committed yet)."""
        if state is None:
            self.storage.delete("state.json")
        else:
            self.storage.put_bytes("state.json", _dump_json(asdict(state)))

    def put_run(self, run_id: str, record: dict[str, Any]) -> None:
        self.storage.put_bytes(f"runs/{run_id}.json", _dump_json(record))

    # retention -------------------------------------------------------------------------
    def apply_retention(self, keep_snapshots: int, last_applied: str | None) -> list[str]:
        """Delete all but the newest ``keep_snapshots`` snapshots, never ``last_applied``.

        Deltas that start or end at a deleted snapshot go too, and so do the leftovers of
        runs that died while uploading: snapshot and delta folders without a manifest, older
        than the newest snapshot (only one run at a time writes, under the run lock).
        Returns the deleted snapshot ids.
        """
        ids = self.snapshot_ids()
        keep = set(ids[-keep_snapshots:])
        if last_applied:
            keep.add(last_applied)
        doomed = [i for i in ids if i not in keep]
        newest = ids[-1] if ids else ""
        complete = set(self.delta_ids())
        for delta in self._folders("deltas/"):
            try:
                src, dst = parse_delta_id(delta, "deltas/")
            except InputError:
                continue  # not ours
            partial = delta not in complete and dst < newest and SNAPSHOT_ID.fullmatch(dst)
            if (src and src in doomed) or dst in doomed or dst not in ids or partial:
                self.storage.delete_prefix(self.delta_prefix(delta) + "/")
        partial_snaps = [i for i in self._folders("snapshots/")
                         if i not in ids and i < newest and SNAPSHOT_ID.fullmatch(i)]
        for snap_id in doomed + partial_snaps:
            self.storage.delete_prefix(self.snapshot_prefix(snap_id) + "/")
        return doomed + partial_snaps

    def _folders(self, prefix: str) -> list[str]:
        """The names of the folders under ``prefix`` that hold any file."""
        return sorted({k.split("/")[1] for k in self.storage.list(prefix) if k.count("/") >= 2})


def _record(kind: Any, data: dict[str, Any], key: str, url: str) -> Any:
    """``kind`` (Snapshot, Delta or State) from its stored JSON; fields a newer version wrote
    are left out (a rolled-back image still reads them). InputError naming the file when a
    field is missing or of the wrong shape."""
    known = {f.name for f in fields(kind)}
    try:
        return kind.from_json({k: v for k, v in data.items() if k in known})
    except (TypeError, ValueError, KeyError) as err:
        raise InputError(f"spec.storage.url: {url}/{key} is damaged ({err}); restore it, or "
                         f"{START_OVER}") from None


def _dump_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=1, default=str).encode()
