"""One run of the lane: preflight -> dump -> diff -> guards -> apply -> state -> retention.

Called by ``__main__`` (``run`` and the one-phase subcommands). Each phase function takes a
:class:`RunContext` and returns the stage's noun (Snapshot, Delta, ApplyResult). Crash safety:
snapshots and deltas are stored before anything is applied; ``state.json`` advances only after
the destination committed; a crash at any point leaves a state from which the next run
recomputes the delta against the last *applied* snapshot and re-applies idempotently. A
crash between the commit and the advance would leave T-1 behind the destination (a row T
inserted and T' deleted would be in neither, and never deleted), so ``state.json`` names the
delta being applied (``applying``) and its destination transaction before the transaction can
commit, and the next run asks the destination whether it did (:func:`resume_interrupted`).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import logs
from .apply import (
    ApplyResult,
    Probed,
    SampledRows,
    Transaction,
    TransactionStatus,
    _fault,
    apply,
    check_destination,
    missing_keys,
    notable,
    sample_destination,
    transaction_status,
)
from .diff import (
    OP,
    SAMPLED_VERSION,
    absent_from,
    check_memory_limit,
    diff,
    open_duckdb,
    out_of_memory,
    probe,
    versions_order,
)
from .dump import (
    SourceTable,
    absent_at_source,
    check_source,
    dump,
    present_at_source,
    replayed_before,
)
from .errors import START_OVER, GuardTripped, InputError, TableSyncError, TransientError
from .postgres import RunLock, TableInfo, refuse_ambiguous_uri, uri_passwords
from .report import Report, now_iso
from .snapshots import (
    PENDING_DELETES,
    Delta,
    Layout,
    Snapshot,
    State,
    new_snapshot_id,
    parse_delta_id,
)
from .spec import JobSpec
from .storage import open_storage

log = logs.get("tablesync_job.pipeline")

# Keys of T (that T-1 had too) looked up in the destination on each run (probe_destination).
PROBE_ROWS = 1000
# The count of pending deletes in the marker's applying_result (beside ApplyResult's) and in
# the report's apply counts (when any): rows left for the next run to delete if its
# snapshot lacks them too.
PENDING_COUNT = "pendingDeletes"
# Why a delta takes every row of T (Delta.refill_reason), as the run's message says it.
LOST_ROWS = "the destination had lost rows"
ABSENT_ROWS = "the destination holds rows the source lacks"
DELETES_SWITCHED_ON = ("spec.destination.deletes was {was} at the last apply, so the rows "
                       "the destination holds and the snapshot lacks are noted for the next "
                       "run")


def require_env(name: str) -> str:
    """The connection string in env variable ``name``, its password registered as a secret
    in every form (``postgres.uri_passwords``) before anything can print it.

    InputError naming ``name`` if it is unset or holds more than one '@' before its host
    (``postgres.refuse_ambiguous_uri``). Line breaks at the end are dropped: a Secret made
    from a file (``kubectl create secret --from-file``, ``echo`` without ``-n``) ends in one,
    which libpq read into a URI's database name ("database ... does not exist", reported as
    transient, so every run failed and was retried); a URI cannot end in a raw line break and
    a ``key=value`` string ignores it.
    """
    value = os.environ.get(name, "").rstrip("\r\n")
    if not value:
        raise InputError(f"{name} is not set: it must hold the libpq URI "
                         "(in the cluster it comes from the TableSync's uriSecretRef)")
    logs.register_secret(value)
    for password in uri_passwords(value):
        logs.register_secret(password)
    refuse_ambiguous_uri(value, name)
    return value


@dataclass
class RunContext:
    spec: JobSpec
    run_id: str
    work_dir: Path
    memory_limit: str
    report: Report
    layout: Layout = field(init=False)
    _source: SourceTable | None = None
    # the destination as checked for each list of columns (the source's now, a stored
    # delta's from before a migration)
    _dests: dict[tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]], TableInfo] = \
        field(default_factory=dict)
    _lock: RunLock | None = None
    resumed: ApplyResult | None = None  # the interrupted apply this run finished first
    resumed_delta: Delta | None = None  # and its delta

    def __post_init__(self) -> None:
        # from a Secret made from a file, like the URIs (require_env): boto3 sent the line
        # break in the access key's header, and the run failed as "storage unreachable"
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            if (value := os.environ.get(name)) and value != value.rstrip("\r\n"):
                os.environ[name] = value.rstrip("\r\n")
        logs.register_secret(os.environ.get("AWS_SECRET_ACCESS_KEY"))
        self.layout = Layout(open_storage(self.spec.storage.url, self.spec.storage.endpoint))

    @property
    def source_uri(self) -> str:
        return require_env("TABLESYNC_SOURCE_URI")

    @property
    def destination_uri(self) -> str:
        return require_env("TABLESYNC_DESTINATION_URI")

    def source(self) -> SourceTable:
        if self._source is None:
            self._source = check_source(self.spec, self.source_uri)
        return self._source

    def destination(self, columns: list[tuple[str, str]],
                    definitions: dict[str, str] | None = None) -> TableInfo:
        """The destination table, checked to take ``columns`` ((name, pg type) pairs) and,
        given their ``definitions`` (the source's user-defined types, by column), those."""
        key = (tuple(columns), tuple(sorted((definitions or {}).items())))
        if key not in self._dests:
            self._dests[key] = check_destination(self.spec, self.destination_uri, columns,
                                                 definitions)
        return self._dests[key]


def scratch_full(err: BaseException, work_dir: Path) -> TransientError | None:
    """A TransientError naming the scratch space if ``err`` is it filling up, else None.

    The scratch directory holds the snapshot's Parquet parts, T-1's, the delta and DuckDB's
    spill files. Full shows as ENOSPC (an OSError from pyarrow or the standard library, a
    DuckDB IOException saying "No space left on device") or as DuckDB's out-of-memory error
    when its spill hits ``max_temp_directory_size`` (by default the free space of the disk).
    A retry runs in a new pod, maybe on a node with more room; the lasting fix is more space.
    Storage writes on a full ``file://`` disk are told apart by ``storage`` before this.
    """
    if isinstance(err, TableSyncError):
        return None  # already says what is wrong (storage tells its own full disk apart)
    text = str(err)
    if not ((isinstance(err, OSError) and err.errno == errno.ENOSPC)
            or "No space left on device" in text or "max_temp_directory_size" in text):
        return None
    first = logs.redact((text.strip().splitlines() or [type(err).__name__])[0])
    return TransientError(f"the run's scratch space under {work_dir.parent} is full ({first}): "
                          "give the run more (spec.job.scratchSizeLimit for the pod's scratch "
                          "volume, or TABLESYNC_WORK_DIR on a bigger disk); a retry may help")


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def make_context(spec: JobSpec, run_id: str | None = None) -> RunContext:
    run_id = run_id or os.environ.get("TABLESYNC_RUN_ID") or new_snapshot_id()
    if not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        # it names runs/<run-id>.json: '../state' wrote the run record over state.json
        raise InputError(f"TABLESYNC_RUN_ID={run_id!r} is not a run id: use letters, digits, "
                         "'.', '_' and '-' (at most 200; the operator sets the Job's name)")
    logs.set_context(tablesync=spec.label, runId=run_id)
    memory_limit = check_memory_limit(os.environ.get("TABLESYNC_MEMORY_LIMIT") or "1GB",
                                      "TABLESYNC_MEMORY_LIMIT")
    base = os.environ.get("TABLESYNC_WORK_DIR") or tempfile.gettempdir()
    try:
        Path(base).mkdir(parents=True, exist_ok=True)
        work_dir = Path(tempfile.mkdtemp(prefix="tablesync-", dir=base))
    except OSError as err:
        raise InputError(f"TABLESYNC_WORK_DIR={base!r} cannot hold the run's scratch files "
                         f"({err.strerror or err}): point it at a writable directory (in a pod: "
                         "the scratch volume)") from None
    return RunContext(spec=spec, run_id=run_id, work_dir=work_dir, memory_limit=memory_limit,
                      report=Report(run_id=run_id))


def cleanup(ctx: RunContext) -> None:
    if ctx._lock is not None:
        ctx._lock.release()
    shutil.rmtree(ctx.work_dir, ignore_errors=True)


def preflight(ctx: RunContext, lock: bool = True) -> None:
    """Check storage, source and destination before anything is read or written, and take
    the run lock (one run per destination table at a time)."""
    logs.set_context(phase="preflight")
    ctx.layout.storage.check()
    check_owner(ctx)
    source = ctx.source()
    ctx.destination([(c.name, c.pg_type) for c in source.info.columns],
                    {c.name: c.definition for c in source.info.columns if c.definition})
    if lock and ctx._lock is None:
        ctx._lock = RunLock(ctx.destination_uri, ctx.spec.destination.table)
        ctx._lock.acquire()


def check_owner(ctx: RunContext) -> None:
    """InputError naming spec.storage.url if its state.json was written by another TableSync.

    One prefix serves one TableSync (DESIGN.md section 5). Two that share one (a manifest
    copied for a second destination, its storage.url left as it was) each diffed against the
    other's last applied snapshot: the changes between the two were applied to one
    destination only, and the other's run said NoChanges (exit 0), its rows stale for good.
    """
    state = ctx.layout.get_state()
    if state is None or state.tablesync is None or state.tablesync == ctx.spec.label:
        return
    raise InputError(f"spec.storage.url: {ctx.spec.storage.url} holds the state of TableSync "
                     f"{state.tablesync}, not of {ctx.spec.label}, and each TableSync needs "
                     "a prefix of its own: give this one its own storage.url (if it took "
                     f"over that prefix on purpose, set \"tablesync\" in its state.json to "
                     f"{ctx.spec.label!r})")


# phases -------------------------------------------------------------------------------------

def phase_dump(ctx: RunContext, store: bool = True,
               refuse_behind: bool = False) -> tuple[Snapshot, list[Path]]:
    """Dump T; store it unless ``store`` is False. With ``refuse_behind``, a T older than the
    last applied snapshot is refused before it is stored (:func:`check_not_behind`)."""
    logs.set_context(phase="dump")
    started = time.monotonic()
    snap, parts = dump(ctx.spec, ctx.source_uri, ctx.source(), ctx.work_dir, new_snapshot_id(),
                       ctx.memory_limit)
    if refuse_behind:
        check_not_behind(ctx, snap)
    if store:
        ctx.layout.put_snapshot(snap, parts)
    ctx.report.phase_seconds["dump"] = round(time.monotonic() - started, 3)
    ctx.report.snapshot_id, ctx.report.captured_at, ctx.report.rows = (
        snap.id, snap.captured_at, snap.rows)
    return snap, parts


def check_not_behind(ctx: RunContext, snap: Snapshot, stored: str | None = None) -> None:
    """TransientError if T holds less of the source's history than the last applied snapshot.
    With ``stored`` (the option that named an already stored T: ``diff --snapshot``),
    InputError naming it: the source is not read again, so no retry helps.

    A source behind the destination's last applied state (a replica that lags more than the
    one read last time, as a reader endpoint balancing over replicas can hand out, or a
    restored copy) would undo newer changes: rows deleted since T reappear as inserts, and
    with counter versions rows inserted since T are deleted. Versions guard updates, not
    these. A later run, from a caught-up source, goes on; nothing is stored meanwhile.

    Compared by WAL position (``Snapshot.lsn``) when both snapshots come from one cluster
    (the same ``system_identifier``: a primary and its streaming replicas): on a primary the
    position flushed, on a standby the position replayed, so a caught-up standby is never
    behind its primary, however long the primary has been idle. (A record that crosses into a
    WAL page the primary has not flushed yet can hold a standby just short of the primary's
    flushed position until the next flush, at the latest the next checkpoint.) Otherwise by
    capturedAt, which comes from one clock, the primary's (its now(), or the commit time a
    standby replayed last); an idle primary's standby then looks behind until the next commit.
    """
    state = ctx.layout.get_state()
    if state is None or not state.captured_at:
        return
    prev = (ctx.layout.get_snapshot(state.last_applied_snapshot_id)
            if state.last_applied_snapshot_id else None)
    source = "the source (a standby)" if snap.in_recovery else "the source"
    undo = ("applying it would undo newer changes, so nothing was applied or stored. A later run "
            "goes on once the source has caught up (or point TABLESYNC_SOURCE_URI at a caught-up "
            "replica; to go back on purpose: " + START_OVER + ")")
    if (prev is not None and prev.lsn and snap.lsn and prev.system_identifier
            and prev.system_identifier == snap.system_identifier):
        if lsn_bytes(snap.lsn) >= lsn_bytes(prev.lsn):
            return
        behind = (f"snapshot {snap.id} holds its WAL up to {snap.lsn} (capturedAt "
                  f"{snap.captured_at}), short of {prev.lsn} of the last applied snapshot "
                  f"{prev.id}")
    elif datetime.fromisoformat(snap.captured_at) >= datetime.fromisoformat(state.captured_at):
        return
    else:
        behind = (f"snapshot {snap.id} is as of {snap.captured_at}, older than the last "
                  f"applied snapshot {state.last_applied_snapshot_id} ({state.captured_at})")
    if stored:
        raise InputError(f"{stored}: {behind}; a delta from it would undo newer changes, so "
                         "none was stored: diff a newer snapshot (without --snapshot: the "
                         "newest), or store a new one with 'tablesync-job dump'")
    raise TransientError(f"{source} is behind: {behind}; {undo}")


def lsn_bytes(lsn: str) -> int:
    """A pg_lsn's text form ("16/B374D848": two hexadecimal halves) as a byte position."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def last_applied(ctx: RunContext, state: State | None = None) -> Snapshot | None:
    """T-1: the snapshot named by state.json (None before the first apply); ``state`` if the
    caller has read it already."""
    state = state or ctx.layout.get_state()
    if state is None or state.last_applied_snapshot_id is None:
        return None
    prev = ctx.layout.get_snapshot(state.last_applied_snapshot_id)
    if prev is None:
        raise InputError(f"state.json names snapshot {state.last_applied_snapshot_id} but it is "
                         f"missing from {ctx.spec.storage.url}; {START_OVER}")
    return prev


def phase_diff(ctx: RunContext, snap: Snapshot, parts: list[Path], store: bool = True,
               refill: str | None = None) -> tuple[Delta, list[Path]]:
    """Diff T against T-1 (from state.json); store the delta unless ``store`` is False.

    ``refill``: why the delta takes every row of T (``diff.diff``): :func:`probe_destination`
    found rows missing (``LOST_ROWS``), or rows the source lacks (``ABSENT_ROWS``). Without
    one, the diff takes every row of T when ``deletes`` removes more than at the last apply
    (:func:`deletes_switched_on`); the reason is kept in ``Delta.refill_reason``.
    """
    logs.set_context(phase="diff")
    started = time.monotonic()
    state = ctx.layout.get_state()
    prev = last_applied(ctx, state)
    if refill is None and prev is not None and deletes_switched_on(ctx.spec, state):
        now, was = ctx.spec.destination.deletes, state.deletes if state else None
        fields = {"deletesWere": was}
        if ctx.spec.destination.lost_rows == "refill":
            log.info(f"spec.destination.deletes is {now} now and was {was} at the last apply: "
                     "this delta takes every row of the new snapshot, to find the rows "
                     "deleted at the source meanwhile", extra={"fields": fields})
            refill = DELETES_SWITCHED_ON.format(was=was)
        else:
            log.warning(f"spec.destination.deletes is {now} now and was {was} at the last "
                        f"apply: the rows deleted at the source meanwhile stay "
                        f"(spec.destination.lostRows: {ctx.spec.destination.lost_rows} keeps "
                        "the run from taking every row of the snapshot to find them)",
                        extra={"fields": fields})
    prev_parts: list[Path] = []
    pending: list[Path] = []
    if prev is not None:
        prev_parts = ctx.layout.fetch(ctx.layout.snapshot_prefix(prev.id), prev.parts,
                                      ctx.work_dir / "previous" / prev.id)
        if state is not None and state.pending_deletes:
            pending = ctx.layout.fetch(ctx.layout.snapshot_prefix(prev.id), [PENDING_DELETES],
                                       ctx.work_dir / "previous-pending" / prev.id)
    delta, delta_parts = diff(ctx.spec, snap, parts, prev, prev_parts, ctx.work_dir,
                              ctx.memory_limit, pending, refill=refill is not None)
    delta.refill_reason = refill
    if store:
        ctx.layout.put_delta(delta, delta_parts)
    seconds = ctx.report.phase_seconds.get("diff", 0.0) if refill else 0.0
    ctx.report.phase_seconds["diff"] = round(seconds + time.monotonic() - started, 3)
    describe_delta(ctx, delta)
    return delta, delta_parts


# spec.destination.deletes, from keeping the most of what the source deleted to the least
_DELETES_ORDER = ("ignore", "soft", "apply")


def deletes_switched_on(spec: JobSpec, state: State | None) -> bool:
    """Whether ``spec.destination.deletes`` removes more than at the last apply
    (``State.deletes``): ``ignore`` to ``soft`` or ``apply``, ``soft`` to ``apply``. The rows
    deleted at the source meanwhile (kept, or stamped) are in no delta, so with
    ``lostRows: refill`` the next delta takes every row of T, whose apply notes them
    (``apply._absent_rows``) for the run after."""
    was = state.deletes if state is not None else None
    return was in _DELETES_ORDER and \
        _DELETES_ORDER.index(spec.destination.deletes) > _DELETES_ORDER.index(str(was))


def probe_destination(ctx: RunContext, snap: Snapshot, parts: list[Path], delta: Delta,
                      delta_parts: list[Path], store: bool = True) -> tuple[Delta, list[Path]]:
    """The delta to apply: ``delta``, or a refill of it if the destination lost rows, or
    holds rows the source lacks. ``store``: whether what is to be looked at again next run
    may be stored (not in a dry run).

    A delta brings across what changed between T-1 and T. A row the destination lost
    otherwise (the table emptied, dropped and created again, a stray DELETE, or with
    ``deletes: soft`` a wrong stamp), or set back to an older version (restored from a
    backup, an event replayed out of order), is in no delta, and stayed so for good with
    exit 0. So each run looks up :data:`PROBE_ROWS` random keys of T that T-1 had too: the
    last apply left each of them in the destination at T-1's version or a newer one. One the
    destination lacks is lost if the source still has it (else the event lane delivered its
    delete since T); one it holds older, if the source's is not older too. Rows the
    destination holds and the source lacks are in no delta either, when no snapshot had
    them (:func:`probe_absent`). With either and ``spec.destination.lostRows: refill`` the
    diff runs again with ``refill`` and the delta takes every row of T (its deletes
    unchanged, guarded as always; the upsert's version guard writes only the rows the
    destination holds older; the apply notes the rows T lacks for the next run); the rows
    the apply writes count as drift. ``warn`` logs them; ``ignore`` does not look. The
    figures go into the report (``lostRows``, ``absentRows``).
    """
    mode = ctx.spec.destination.lost_rows
    if delta.bootstrap or mode == "ignore" or delta.refill_reason is not None:
        return delta, delta_parts  # (a delta with every row of T already)
    started = time.monotonic()
    prev = ctx.layout.get_snapshot(delta.from_id) if delta.from_id else None
    if prev is None:
        return delta, delta_parts
    sample = probe(ctx.spec, snap, prev, parts, delta_parts, ctx.work_dir, ctx.memory_limit,
                   PROBE_ROWS)
    found = Probed([], [], 0)
    if sample is not None:
        dest = ctx.destination([(c.name, c.pg_type) for c in snap.columns])
        found = missing_keys(ctx.spec, ctx.destination_uri, dest, snap.captured_at, sample)
        sampled_at = datetime.now(UTC)  # (after the sample: it found them missing by then)
        replayed = (replayed_before(ctx.source_uri, sampled_at)
                    if found.missing or found.behind else None)
        if replayed is not None:
            # a standby that lags may still have a row whose delete the event lane delivered
            log.info(f"of {found.probed} sampled rows, {len(found.missing)} are missing from "
                     f"{ctx.spec.destination.table} and {len(found.behind)} older there than "
                     "the last apply left them; the source, a standby, has replayed the "
                     f"primary's commits up to {replayed} only, before the sample, so it may "
                     "lack the event lane's changes to them: the next run looks again",
                     extra={"fields": {"lostRowsLookedUp": False}})
            found = Probed([], [], found.probed)
    lost = 0
    for keys, versioned in ((found.missing, False), (found.behind, True)):
        if keys:
            present = present_at_source(ctx.spec, ctx.source_uri, ctx.source(), keys, versioned)
            lost += len(keys) if present is None else present
    absent = probe_absent(ctx, snap, parts, delta_parts, prev.id, store)
    ctx.report.phase_seconds["diff"] = round(
        ctx.report.phase_seconds.get("diff", 0.0) + time.monotonic() - started, 3)
    table = ctx.spec.destination.table
    refill: str | None = None
    if found.missing or found.behind:
        missing, behind, probed = len(found.missing), len(found.behind), found.probed
        ctx.report.lost_rows = {"sampled": probed, "missing": missing, "behind": behind,
                                "lost": lost}
        fields = {"sampled": probed, "missingSampled": missing, "behindSampled": behind,
                  "lostSampled": lost}
        found_text = " and ".join(text for n, text in (
            (missing, f"{missing} are missing from {table}"),
            (behind, f"{behind} are older there than the last apply left them")) if n)
        lost_text = (f"of {probed} sampled rows, {found_text} (emptied, re-created, restored "
                     f"from a backup, changed outside the sync?); {lost} of them the source "
                     "still has as the last apply left them, or newer")
        if not lost:
            log.info(f"of {probed} sampled rows, {found_text}; the source deleted or set back "
                     "each of them too since the snapshot (the event lane's changes)",
                     extra={"fields": fields})
        elif mode == "warn":
            ctx.report.lost_rows_kept = True
            log.warning(f"{lost_text}; no delta brings them back (spec.destination.lostRows: "
                        "warn; refill applies every row of the snapshot)",
                        extra={"fields": fields})
        else:
            log.warning(f"{lost_text}: this run applies every row of the new snapshot",
                        extra={"fields": fields})
            refill = LOST_ROWS
    if absent is not None:
        ctx.report.absent_rows = absent
        fields = {"sampledRows": absent["sampled"], "absentSampled": absent["absent"]}
        absent_text = (f"of {absent['sampled']} sampled rows of {table}, {absent['absent']} "
                       f"have a key the source and snapshot {snap.id} lack (deletes the event "
                       "lane lost, rows written into the destination alone?)")
        if mode == "warn":
            ctx.report.absent_rows_kept = True
            log.warning(f"{absent_text}; no delta deletes them (spec.destination.lostRows: "
                        "warn; refill applies every row of the snapshot and notes them)",
                        extra={"fields": fields})
        else:
            log.warning(f"{absent_text}: this run applies every row of the new snapshot and "
                        "notes them; the next run deletes those its snapshot lacks too",
                        extra={"fields": fields})
            refill = refill or ABSENT_ROWS
    if refill is None:
        return delta, delta_parts
    return phase_diff(ctx, snap, parts, store=False, refill=refill)


def probe_absent(ctx: RunContext, snap: Snapshot, parts: list[Path], delta_parts: list[Path],
                 prev_id: str, store: bool) -> dict[str, int] | None:
    """``sampled`` and ``absent``: of :data:`PROBE_ROWS` random rows of the destination,
    those whose key T lacks and the delta does not delete, at a version below T's highest
    (``diff.absent_from``), that the source lacks now (``dump.absent_at_source``) and a
    refill would note (``apply.notable``: no foreign key references them), asked in that
    order, cheapest first; None when there is none.

    Such a row is in no delta: no snapshot had it. A delete the event lane lost for a row
    inserted and deleted between two snapshots, a dual write whose source side rolled back,
    a row written into the destination alone. A bootstrap or refill notes them all
    (``apply._absent_rows``); this finds them in steady state, when there are enough of
    them for a sample to hit. None are looked for under ``deletes: ignore``.

    Where versions do not order across rows (``diff.versions_order``: per-row counters, a
    version T holds as text) no bound tells such a row from the event lane's insert that a
    lagging replica lacks yet, so a row counts when seen twice: the rows a run finds are
    stored with T (``absent-candidates.parquet``, if ``store``), with when they were seen,
    and ``absent`` counts those of the last applied snapshot's (``prev_id``) seen by T's
    capturedAt (a replica that has replayed up to then has the event lane's insert, however
    far it lags) that the destination still holds at the same version, and T, the source
    and the references still lack (:func:`_seen_again`); those seen after it wait.
    A look that fails is a warning: the run goes on.
    """
    if ctx.spec.destination.deletes == "ignore" or not parts:
        return None
    try:
        return _probe_absent(ctx, snap, parts, delta_parts, prev_id, store)
    except (InputError, TransientError, pa.ArrowInvalid) as err:
        # a look that fails (a lock held, a table it cannot read) must not stop the sync
        log.warning(f"rows of {ctx.spec.destination.table} whose key the source lacks were "
                    f"not looked for this run: {err}", extra={"fields": {
                        "absentRowsLookedFor": False}})
        return None


def _probe_absent(ctx: RunContext, snap: Snapshot, parts: list[Path], delta_parts: list[Path],
                  prev_id: str, store: bool) -> dict[str, int] | None:
    schema = pq.read_schema(parts[0])
    ordered = versions_order(snap.version_kind,
                             schema.field(ctx.spec.source.version_column).type)
    dest = ctx.destination([(c.name, c.pg_type) for c in snap.columns])
    sampled = sample_destination(ctx.spec, ctx.destination_uri, dest, snap, schema,
                                 PROBE_ROWS)
    seen_at = datetime.now(UTC)  # (after the sample: the rows it found were there by then)
    if sampled is None:
        return None
    found = _absent(ctx, parts, delta_parts, dest, sampled, below_highest=ordered)
    absent = found.num_rows
    if not ordered:
        again, waiting = _seen_again(ctx, parts, delta_parts, dest, prev_id, schema,
                                     datetime.fromisoformat(snap.captured_at))
        absent = 0 if again is None else again.num_rows
        # a row found again at the same version keeps when it was first seen: a replica
        # lagging more than a cycle is never past the latest sighting
        keys = len(ctx.spec.source.primary_key)
        carried = [table for table in (again, waiting) if table is not None]
        first_seen = {row: at for table in carried for row, at in zip(
            _text_rows(table, keys + 1), table.column(_SEEN_AT).to_pylist(), strict=True)}
        found = found.append_column(_SEEN_AT, pa.array(
            [first_seen.get(row, seen_at) for row in _text_rows(found, keys + 1)], SEEN_AT))
        # still absent (looked at again next run too, under warn), or not looked at yet
        for more in carried:
            known = set(_text_rows(found, keys))
            fresh = [key not in known for key in _text_rows(more, keys)]
            found = pa.concat_tables([found, more.filter(pa.array(fresh, pa.bool_()))
                                      .cast(found.schema)])
        if found.num_rows and store:
            sink = pa.BufferOutputStream()
            pq.write_table(found, sink, compression="zstd")
            ctx.layout.storage.put_bytes(ctx.layout.absent_candidates_key(snap.id),
                                         sink.getvalue().to_pybytes())
            log.info(f"{found.num_rows} sampled row(s) of {ctx.spec.destination.table} have a "
                     f"key the source and snapshot {snap.id} lack; the next run looks at them "
                     "again (a lagging replica's rows would be there by then)",
                     extra={"fields": {"absentCandidates": found.num_rows}})
    if not absent:
        return None
    return {"sampled": sampled.rows.num_rows, "absent": absent}


# the Postgres text of each key column, then of the version, in absent-candidates.parquet
_TEXT = "_tablesync_text_{}"
# then when the destination was seen holding the row (by the sample that first found it)
_SEEN_AT = "_tablesync_seen_at"
SEEN_AT = pa.timestamp("us", tz="UTC")


def _text_rows(table: pa.Table, count: int) -> list[tuple[str, ...]]:
    """The first ``count`` :data:`_TEXT` columns of ``table`` (the key's, then the
    version's), row by row."""
    return list(zip(*(table.column(_TEXT.format(i)).to_pylist() for i in range(count)),
                    strict=True))


def _absent(ctx: RunContext, parts: list[Path], delta_parts: list[Path], dest: TableInfo,
            sampled: SampledRows, below_highest: bool) -> pa.Table:
    """The rows of ``sampled`` T lacks and the delta does not delete (with the version bound
    if ``below_highest``), the source lacks, and a refill would note (their versions
    unchanged since they were sampled), asked cheapest first: T, here; then the source; then
    what references them in the destination. As ``sampled.rows``, with the text of their keys
    and version (:data:`_TEXT`)."""
    texts = [(*key, version) for key, version in zip(sampled.texts, sampled.versions,
                                                      strict=True)]
    rows = sampled.rows.append_column("_tablesync_at", pa.array(range(len(texts)), pa.int64()))
    kept = absent_from(ctx.spec, parts, delta_parts, sampled.rows, ctx.work_dir,
                       ctx.memory_limit, below_highest) if texts else []
    if kept:
        at = absent_at_source(ctx.spec, ctx.source_uri, ctx.source(),
                              [texts[i][:-1] for i in kept])
        kept = [kept[i] for i in at or []]
    if kept:
        kept = [kept[i] for i in notable(ctx.spec, ctx.destination_uri, dest,
                                         [texts[i][:-1] for i in kept],
                                         [texts[i][-1] for i in kept])]
    found = rows.take(pa.array(kept, pa.int64())).drop_columns(["_tablesync_at"])
    # (the columns even when nothing was sampled: _probe_absent reads them)
    for i in range(len(ctx.spec.source.primary_key) + 1):
        found = found.append_column(_TEXT.format(i), pa.array([texts[k][i] for k in kept],
                                                              pa.string()))
    return found


def _seen_again(ctx: RunContext, parts: list[Path], delta_parts: list[Path], dest: TableInfo,
                prev_id: str, schema: pa.Schema, captured_at: datetime
                ) -> tuple[pa.Table | None, pa.Table | None]:
    """Of the rows the last run found absent (stored with ``prev_id``, the last applied
    snapshot, by :func:`_probe_absent`): those seen by ``captured_at`` (T's) that are
    absent still, at the same version (:func:`_absent`); and those seen after it, not looked
    at yet, as a replica lagging further than that may lack the event lane's insert still.
    Both as stored, each row with when it was first seen; (None, None) when it found none,
    or T holds a key or the version in another type since."""
    raw = ctx.layout.storage.get_bytes(ctx.layout.absent_candidates_key(prev_id))
    if raw is None:
        return None, None
    stored = pq.read_table(pa.BufferReader(raw))
    keys = list(ctx.spec.source.primary_key)
    ver = ctx.spec.source.version_column
    wanted = [*(schema.field(k) for k in keys), pa.field(SAMPLED_VERSION,
                                                         schema.field(ver).type)]
    if stored.schema.names[:len(wanted)] != [f.name for f in wanted] or any(
            stored.schema.field(f.name).type != f.type for f in wanted) or \
            _SEEN_AT not in stored.schema.names:
        return None, None
    ripe = pc.less_equal(stored.column(_SEEN_AT).cast(SEEN_AT),
                         pa.scalar(captured_at, SEEN_AT))
    waiting = stored.filter(pc.invert(ripe))
    stored = stored.filter(ripe)
    rows = _text_rows(stored, len(keys) + 1)
    seen = SampledRows(stored.select([f.name for f in wanted]),
                       [row[:-1] for row in rows], [row[-1] for row in rows])
    again = _absent(ctx, parts, delta_parts, dest, seen, below_highest=False)
    first_seen = dict(zip(rows, stored.column(_SEEN_AT).to_pylist(), strict=True))
    again = again.append_column(_SEEN_AT, pa.array(
        [first_seen[row] for row in _text_rows(again, len(keys) + 1)], SEEN_AT))
    return again, waiting


def describe_delta(ctx: RunContext, delta: Delta) -> None:
    ctx.report.delta_id = delta.id
    ctx.report.from_snapshot_id = delta.from_id
    ctx.report.bootstrap = delta.bootstrap
    ctx.report.delta = {"insert": delta.inserts, "update": delta.updates,
                        "delete": delta.deletes}
    if delta.refills:
        ctx.report.delta["refill"] = delta.refills


def check_guards(spec: JobSpec, delta: Delta, approved: str | None) -> None:
    """Refuse a delta that looks like a truncated dump (DESIGN.md section 4, Guards).

    Raises GuardTripped (exit 3) unless ``approved`` equals ``delta.id``.
    """
    if delta.bootstrap or approved == delta.id:
        return
    # T-1 empty: deletes are those of rows the destination held and its bootstrap noted
    # (apply._absent_rows), any number of them more than a fraction of none
    fraction = delta.deletes / delta.from_rows if delta.from_rows else float(delta.deletes > 0)
    if spec.destination.deletes != "ignore" and fraction > spec.guards.max_delete_fraction:
        again = ""
        if delta.pending_deletes:
            again = (f", {delta.pending_deletes} of them rows the destination held and "
                     f"{delta.from_id} lacked too")
        share = f"{fraction:.1%}" if delta.from_rows else "all"
        finding = (f"delta {delta.id} would delete {delta.deletes} of {delta.from_rows} rows "
                   f"({share} > spec.guards.maxDeleteFraction "
                   f"{spec.guards.max_delete_fraction:.1%}{again})")
        raise GuardTripped(
            f"{finding}; nothing applied. If the source really lost these rows, approve with "
            f"--approve {delta.id} (annotation tablesync.dev/approve-delta)",
            reason="DeleteGuardTripped", delta_id=delta.id, finding=finding)
    # (rows lost over rows, like the deletes: 1 - 95/100 is above 0.05 in floating point)
    shrink = (delta.from_rows - delta.to_rows) / delta.from_rows if delta.from_rows else 0.0
    if shrink > spec.guards.max_shrink_fraction:
        finding = (f"snapshot {delta.to_id} has {delta.to_rows} rows, {shrink:.1%} fewer than "
                   f"the {delta.from_rows} of {delta.from_id} (> spec.guards.maxShrinkFraction "
                   f"{spec.guards.max_shrink_fraction:.1%})")
        raise GuardTripped(
            f"{finding}; nothing applied. Approve with --approve {delta.id} if this is real",
            reason="ShrinkGuardTripped", delta_id=delta.id, finding=finding)


def phase_apply(ctx: RunContext, delta: Delta, parts: list[Path]) -> ApplyResult:
    """Apply, then advance state.json (only after the commit), then retention."""
    logs.set_context(phase="apply")
    started = time.monotonic()
    snap = ctx.layout.get_snapshot(delta.to_id)
    if snap is None:
        raise InputError(f"delta {delta.id}: snapshot {delta.to_id} is missing from storage")
    dest = ctx.destination([(c.name, c.pg_type) for c in snap.columns])
    state = ctx.layout.get_state()

    # A resumed delta keeps the marker of the transaction it was first applied in: that
    # one may have committed.
    ours = state is None or state.applying != delta.id
    marker = replace(state or State(None, None, None, None), applying=delta.id,
                     tablesync=ctx.spec.label)

    def began(transaction: Transaction) -> None:
        # before the transaction writes, so before it can commit
        nonlocal marker
        if ctx._lock is not None:
            ctx._lock.check()  # another run may be under way: write nothing
        marker = replace(marker, applying_xid=transaction.xid,
                         applying_system=transaction.system)
        if ours:
            ctx.layout.put_state(marker)

    # a delta with every row of T: the destination's rows T lacks are kept for the next
    # run, which deletes those its own snapshot lacks too (apply._absent_rows)
    full = delta.bootstrap or delta.refills > 0 or delta.refill_reason is not None
    deletes: str = ctx.spec.destination.deletes
    if state is not None and deletes_switched_on(ctx.spec, state) and not full \
            and ctx.spec.destination.lost_rows == "refill":
        # (an approved delta from before, a one-phase apply): not seen yet, the next diff is
        deletes = str(state.deletes)

    def committing(result: ApplyResult) -> None:
        # what a run that finds it committed needs to advance (advance_committed)
        if ctx._lock is not None:
            ctx._lock.check()  # lost meanwhile: roll back rather than race another run
        pending = result.pending_deletes
        if pending is not None:
            local = ctx.work_dir / "pending" / PENDING_DELETES
            local.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pending, local, compression="zstd")
            ctx.layout.storage.upload_file(local, ctx.layout.pending_deletes_key(delta.to_id))
            log.info("deletes kept for the next run", extra={"fields": {
                "pendingDeletes": pending.num_rows}})
        if ours:
            # with the count of pending deletes: a file from an earlier, aborted attempt at
            # this delta may lie where this one stored none
            kept = 0 if pending is None else pending.num_rows
            ctx.layout.put_state(replace(marker, applying_deletes=deletes, applying_result={
                **result.as_report(), PENDING_COUNT: kept}))

    try:
        result = apply(ctx.spec, ctx.destination_uri, dest, delta, parts, began=began,
                       committing=committing, absent_from=snap if full else None,
                       kept_at=state.applied_at if state is not None else None)
    except InputError:
        # a statement or the commit failed: rolled back, nothing to resume (the next run
        # diffs afresh, and sees a fixed source); after a TransientError (the connection may
        # have dropped in the commit) or anything unforeseen, the marker stays
        ctx.layout.put_state(state)
        raise
    _fault("after-commit")
    pending = result.pending_deletes
    ctx.layout.put_state(State(last_applied_snapshot_id=delta.to_id,
                               captured_at=delta.captured_at, applied_at=now_iso("microseconds"),
                               delta_id=delta.id,
                               pending_deletes=0 if pending is None else pending.num_rows,
                               deletes=deletes, tablesync=ctx.spec.label))
    ctx.report.phase_seconds["apply"] = round(time.monotonic() - started, 3)
    # A run that first finished an interrupted apply reports both: its drift is both's.
    ctx.report.apply = (result if ctx.resumed is None or ctx.resumed is result
                        else result.plus(ctx.resumed)).as_report()
    if pending is not None:  # what this apply left for the next one (the resumed one's went)
        ctx.report.apply[PENDING_COUNT] = pending.num_rows
    ctx.report.snapshot_id, ctx.report.captured_at = snap.id, snap.captured_at
    ctx.report.rows = snap.rows
    retention(ctx, delta.to_id)
    return result


def retention(ctx: RunContext, last_applied: str | None) -> None:
    """Keep the newest ``keepSnapshots`` snapshots and ``last_applied``; log what went.

    A failure is a warning: it comes after the commit (or a guard), whose outcome the run
    reports; a failed retention reported as a failed run hid the drift it had corrected.
    """
    try:
        removed = ctx.layout.apply_retention(ctx.spec.storage.keep_snapshots, last_applied)
    except TableSyncError as err:
        log.warning(f"retention failed, old snapshots stay until a later run removes them: "
                    f"{err.message}", extra={"fields": {"retentionFailed": True}})
        return
    if removed:
        log.info("retention", extra={"fields": {"removedSnapshots": removed}})


def resume_interrupted(ctx: RunContext) -> None:
    """Settle the apply a dead run left in ``state.json`` (``applying``), if any.

    The destination says what became of that run's transaction (``pg_xact_status``, see
    :func:`apply.transaction_status`), so T-1 ends up the snapshot the destination holds:

    * aborted: nothing was applied; the marker goes and the run goes on from T-1, so a delta
      the destination now refuses is not applied again run after run;
    * committed: the state advances as the dead run would have (:func:`advance_committed`);
    * in progress: the dead run's session has not ended yet; TransientError;
    * unknown (a marker without its transaction id, an id older than the commit log keeps,
      another cluster): the delta is applied again before anything else, idempotent either
      way. Its guards were passed (or it was approved) before it was first applied. The id
      is dropped from the marker first: here it may name another transaction later.

    Sets ``ctx.resumed_delta`` (and ``ctx.resumed``) when the delta is in the destination.
    Call after ``preflight``, which takes the run lock: no live run can be applying.
    InputError when the outcome is unknown and the delta is gone or refused.
    """
    state = ctx.layout.get_state()
    if state is None or state.applying is None:
        return
    status, unknown = interrupted_status(ctx, state)
    fields = {"delta": state.applying, "transaction": state.applying_xid}
    if status == "aborted":
        log.info("an interrupted apply did not commit; the run goes on from the last applied "
                 "snapshot", extra={"fields": fields})
        cleared = replace(state, applying=None, applying_xid=None, applying_system=None,
                          applying_result=None, applying_deletes=None)
        ctx.layout.put_state(cleared if state.last_applied_snapshot_id is not None else None)
        return
    if status == "in progress":
        raise TransientError(f"the apply of delta {state.applying} that a run was killed in is "
                             f"still running in the destination (transaction "
                             f"{state.applying_xid}); this run will be retried once it ends "
                             "(pg_stat_activity shows its session, pg_terminate_backend ends "
                             "it)")
    delta = ctx.layout.get_delta(state.applying)
    if status == "committed":
        ctx.resumed = advance_committed(ctx, state)
        ctx.resumed_delta = delta
        log.info("an interrupted apply had committed; the state advances past it",
                 extra={"fields": {**fields, **ctx.resumed.as_report()}})
        return
    if delta is None:
        raise InputError(f"state.json: an apply of delta {state.applying} was interrupted and "
                         f"the delta is missing from {ctx.spec.storage.url}; whether it "
                         f"committed is unknown ({unknown}); {START_OVER}")
    if state.applying_xid is not None:
        ctx.layout.put_state(replace(state, applying_xid=None, applying_system=None))
    parts = ctx.layout.fetch(ctx.layout.delta_prefix(delta.id), delta.parts,
                             ctx.work_dir / "interrupted")
    log.info("resuming an interrupted apply", extra={"fields": fields})
    # (phase_apply checks the destination against the delta's columns, not those of the
    # source now: a column dropped since is an InputError naming it)
    try:
        ctx.resumed = phase_apply(ctx, delta, parts)
    except InputError as err:
        raise InputError(f"{err.message}. This is the apply of delta {delta.id} a run was "
                         f"killed in, and whether it committed is unknown ({unknown}), so "
                         f"every run applies it again first: make the destination accept "
                         f"it, or {START_OVER}") from None
    ctx.resumed_delta = delta
    log.info("resumed", extra={"fields": {"delta": delta.id, **ctx.resumed.as_report()}})


def interrupted_status(ctx: RunContext, state: State) -> tuple[TransactionStatus | None, str]:
    """What the destination says of the marked apply's transaction, and, when it cannot
    tell, why. Waits up to 5 s for one still in progress: a killed run's session ends as
    soon as Postgres notices the closed connection, at the latest after its statement."""
    if state.applying_xid is None:
        return None, "the marker in state.json names no transaction"
    transaction = Transaction(state.applying_xid, state.applying_system)
    deadline = time.monotonic() + 5
    while True:
        status = transaction_status(ctx.destination_uri, transaction)
        if status != "in progress" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return status, (f"the destination does not know transaction {transaction.xid}: older "
                    "than its commit log keeps, or another cluster")


def advance_committed(ctx: RunContext, state: State) -> ApplyResult:
    """Advance ``state.json`` past the marked delta, whose transaction committed, as the run
    that died would have; return that apply's counts, stored in the marker just before its
    commit. The deletes it kept for the next run were stored then too. InputError if the
    delta's snapshot is gone."""
    delta_id = str(state.applying)
    _, to_id = parse_delta_id(delta_id, "state.json applying")
    snap = ctx.layout.get_snapshot(to_id)
    if snap is None:
        raise InputError(f"state.json: the apply of delta {delta_id} committed, but snapshot "
                         f"{to_id} is missing from {ctx.spec.storage.url}; {START_OVER}")
    counts = state.applying_result or {}
    pending = counts.get(PENDING_COUNT)
    if pending is None:  # a marker an earlier build wrote
        raw = ctx.layout.storage.get_bytes(ctx.layout.pending_deletes_key(to_id))
        pending = 0 if raw is None else pq.read_metadata(pa.BufferReader(raw)).num_rows
    ctx.layout.put_state(State(last_applied_snapshot_id=to_id, captured_at=snap.captured_at,
                               applied_at=now_iso("microseconds"), delta_id=delta_id,
                               pending_deletes=pending,
                               deletes=state.applying_deletes or state.deletes,
                               tablesync=ctx.spec.label))
    result = ApplyResult.from_report(counts)
    # as phase_apply reports (a later apply of this run adds its own)
    ctx.report.apply = result.as_report()
    if pending:
        ctx.report.apply[PENDING_COUNT] = pending
    ctx.report.snapshot_id, ctx.report.captured_at = snap.id, snap.captured_at
    ctx.report.rows = snap.rows
    return result


def stored_delta(ctx: RunContext, delta_ref: str, field_name: str) -> tuple[Delta, list[Path]]:
    """A stored delta that starts at the last applied snapshot, and that the destination
    can take (:func:`check_delta_columns`); InputError otherwise."""
    from_id, _ = parse_delta_id(delta_ref, field_name)
    delta = ctx.layout.get_delta(delta_ref)
    if delta is None:
        raise InputError(f"{field_name}: no delta {delta_ref} in {ctx.spec.storage.url}")
    state = ctx.layout.get_state()
    current = state.last_applied_snapshot_id if state else None
    if from_id != current:
        raise InputError(f"{field_name}: delta {delta_ref} starts at {from_id or 'bootstrap'} "
                         f"but the destination is at {current or 'bootstrap'}; it is stale, "
                         "let the next run compute a fresh delta")
    check_delta_columns(ctx, delta, field_name)
    parts = ctx.layout.fetch(ctx.layout.delta_prefix(delta.id), delta.parts,
                             ctx.work_dir / "delta-in")
    return delta, parts


def check_delta_columns(ctx: RunContext, delta: Delta, field_name: str) -> None:
    """InputError naming ``field_name`` if the destination cannot take the columns of the
    stored ``delta``'s snapshot: a delta stored before a migration (a guard tripped on it,
    and the table changed before it was approved) may hold a column dropped since. Before,
    that was an internal error (exit 75) on every run."""
    snap = ctx.layout.get_snapshot(delta.to_id)
    if snap is None:
        return  # phase_apply names it
    try:
        ctx.destination([(c.name, c.pg_type) for c in snap.columns])
    except InputError as err:
        raise InputError(f"{field_name}: delta {delta.id} cannot be applied: {err.message} "
                         f"(the delta holds the columns of snapshot {snap.id}, from before "
                         "the table changed); let a run compute a fresh delta, and approve "
                         "that one if a guard stops it") from None


# the whole run --------------------------------------------------------------------------------

def run(ctx: RunContext, dry_run: bool = False, approve: str | None = None,
        standing: str | None = None) -> Report:
    """dump -> diff -> guards -> apply. With ``approve`` (``FROM..TO``) apply that stored delta.

    ``standing`` is the operator's approval (``TABLESYNC_APPROVE_DELTA``), which stays in the
    CronJob until the operator has seen a run apply it: used like ``approve`` while it starts
    at the last applied snapshot, ignored (with a warning) once it no longer does, so a run
    after the approved one is a normal run. ``approve`` itself is strict: stale, it is an
    InputError. Returns the report; raises the job's errors (the caller fills the report
    from them).
    """
    report = ctx.report
    preflight(ctx)
    if not dry_run:
        resume_interrupted(ctx)
        done = ctx.resumed_delta
        if done is not None and done.id in (approve, standing):
            # the approved delta's own run was killed after it began to apply (a retried pod)
            describe_delta(ctx, done)
            return succeeded(report, done, ctx.resumed or ApplyResult(), approved=True)
    if standing and not approve:
        state = ctx.layout.get_state()
        current = state.last_applied_snapshot_id if state else None
        if parse_delta_id(standing, "TABLESYNC_APPROVE_DELTA")[0] != current:
            log.warning("approval no longer applies", extra={"fields": {
                "approved": standing, "lastApplied": current}})
        elif (approved := ctx.layout.get_delta(standing)) is None:
            # gone (retention of later tripped runs): a normal run computes a fresh delta,
            # which trips again and names itself, instead of every run failing on this one
            log.warning(f"approved delta {standing} (TABLESYNC_APPROVE_DELTA) is no longer "
                        "stored; approve the delta this run names instead",
                        extra={"fields": {"approved": standing, "lastApplied": current}})
        else:
            try:
                check_delta_columns(ctx, approved, "TABLESYNC_APPROVE_DELTA")
            except InputError as err:
                # the table changed since (a column dropped): likewise a normal run
                log.warning(f"{err.message}; this run goes on without the approval",
                            extra={"fields": {"approved": standing, "lastApplied": current}})
            else:
                approve = standing
    if approve:
        delta, parts = stored_delta(ctx, approve, "--approve")
        describe_delta(ctx, delta)
        if dry_run:  # what the approval would apply (it was ignored: a new delta tripped)
            return _dry_run(ctx, delta, parts, None, approved=True)
        result = phase_apply(ctx, delta, parts)
        return note_resumed(ctx, succeeded(report, delta, result, approved=True))
    last_applied(ctx)  # a state.json naming a missing T-1 fails before a dump is stored
    snap, parts = phase_dump(ctx, store=not dry_run, refuse_behind=True)
    _fault("after-dump")
    delta, delta_parts = phase_diff(ctx, snap, parts, store=False)
    delta, delta_parts = probe_destination(ctx, snap, parts, delta, delta_parts,
                                           store=not dry_run)
    if not dry_run:
        ctx.layout.put_delta(delta, delta_parts)
    _fault("after-diff")
    tripped = None
    try:
        check_guards(ctx.spec, delta, approve)
    except GuardTripped as err:
        if not dry_run:  # a guard that trips run after run must not pile up snapshots
            state = ctx.layout.get_state()
            retention(ctx, state.last_applied_snapshot_id if state else None)
            raise
        tripped = err
    if dry_run:
        return _dry_run(ctx, delta, delta_parts, tripped)
    try:
        result = phase_apply(ctx, delta, delta_parts)
    except InputError as err:
        if not delta.refills:
            raise
        # a destination that holds a subset on purpose (old partitions dropped) refuses them
        why = ("of rows the destination lacks" if delta.refill_reason in (None, LOST_ROWS)
               else "to find the rows the destination holds and the source lacks"
               if delta.refill_reason == ABSENT_ROWS
               else "to find the rows deleted at the source while spec.destination.deletes "
               "kept them")
        raise InputError(f"{err.message} (this run applied every row of the snapshot, {why}: "
                         "if the destination holds a subset of the source on purpose, set "
                         "spec.destination.lostRows: ignore)") from None
    return note_resumed(ctx, succeeded(report, delta, result, approved=False))


def note_resumed(ctx: RunContext, report: Report) -> Report:
    """``report`` with the interrupted apply this run finished first (``ctx.resumed``), if
    it was another delta than the one the report names, in its message: that apply's counts
    are in the report's (``phase_apply`` adds them up), and a run that was "NoChanges"
    while its counts said rows were corrected had the status contradict itself."""
    done, counts = ctx.resumed_delta, ctx.resumed
    if counts is None or (done is not None and done.id == report.delta_id):
        return report
    which = f"delta {done.id}" if done is not None else "a delta"
    report.message += (f"; first it finished the apply of {which} that a killed run had "
                       f"committed or begun: {counts.drift} rows corrected (drift), "
                       f"{counts.already_current} already current, {counts.stale_skipped} "
                       "stale skipped, counted in this run's apply too")
    return report


def _dry_run(ctx: RunContext, delta: Delta, delta_parts: list[Path],
             tripped: GuardTripped | None, approved: bool = False) -> Report:
    """The dry run's report: ``delta``'s counts and a sample, and the guard it would trip.
    A guard is part of what the dry run shows; its delta is not stored, so there is nothing
    to --approve yet: a run stores it and names it. ``approved``: the stored delta an
    approval names, which a run would apply whatever the guards."""
    report = ctx.report
    report.result, report.reason = "DryRun", "DryRun"
    refills = f", {delta.refills} refills" if delta.refills else ""
    which = "approved delta" if approved else "delta"
    report.message = (f"dry run: {which} {delta.id} has {delta.inserts} inserts, "
                      f"{delta.updates} updates, {delta.deletes} deletes{refills}; nothing "
                      "applied")
    if tripped is not None:
        report.message += (f". A run would stop at {tripped.reason} (exit 3): "
                           f"{tripped.finding}; it stores its own delta and names it for "
                           "--approve")
    report.sample = sample(ctx, delta_parts)
    return report


def succeeded(report: Report, delta: Delta, result: ApplyResult, approved: bool) -> Report:
    report.result = "Succeeded"
    if delta.bootstrap:
        report.reason = "Bootstrapped"
        report.message = f"bootstrap: {result.inserted + result.updated} rows upserted"
    elif delta.refills or delta.refill_reason is not None:
        report.reason = "Refilled"
        report.message = (f"applied {delta.id} with every row of {delta.to_id}, as "
                          f"{delta.refill_reason or LOST_ROWS}: {result.drift} rows corrected "
                          "(drift), "
                          f"{result.already_current} already current, {result.stale_skipped} "
                          "stale skipped")
    elif delta.changes == 0:
        report.reason, report.message = "NoChanges", "no changes since the last applied snapshot"
    else:
        report.reason = "Applied"
        report.message = (f"applied {delta.id}{' (approved)' if approved else ''}: "
                          f"{result.drift} rows corrected (drift), {result.already_current} "
                          f"already current, {result.stale_skipped} stale skipped")
    if result.absent:
        report.message += (f"; {result.absent} rows the destination holds and {delta.to_id} "
                           "lacks are noted: the next run deletes those its snapshot lacks too")
    lost = report.lost_rows
    if lost and report.lost_rows_kept:
        # in the message, the status's LastRunSucceeded shows it (the pod's log goes)
        report.message += (f"; {lost['lost']} of {lost['sampled']} sampled rows were lost "
                           "outside any delta and stay lost (spec.destination.lostRows: warn)")
    absent = report.absent_rows
    if absent and report.absent_rows_kept:
        report.message += (f"; {absent['absent']} of {absent['sampled']} sampled rows of the "
                           "destination have a key the source lacks and stay "
                           "(spec.destination.lostRows: warn)")
    return report


def sample(ctx: RunContext, parts: list[Path], per_op: int = 3) -> list[dict[str, Any]]:
    """A few delta rows per op, for ``--dry-run`` output."""
    with out_of_memory(ctx.memory_limit):
        con = open_duckdb(ctx.work_dir, ctx.memory_limit)
        try:
            rel = con.execute(
                f"SELECT COLUMNS(*)::VARCHAR FROM read_parquet($files) QUALIFY row_number() "
                f"OVER (PARTITION BY {OP}) <= {per_op}", {"files": [str(p) for p in parts]})
            names = [d[0] for d in rel.description]
            return [dict(zip(names, row, strict=True)) for row in rel.fetchall()]
        finally:
            con.close()


def run_record(ctx: RunContext, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's record for ``runs/<run-id>.json``: its report and spec, redacted like every
    output (``logs.redact_values``): the spec's ``storage.endpoint`` may hold a password."""
    return dict(logs.redact_values({"report": ctx.report.compact(), "spec": asdict(ctx.spec),
                                    **(extra or {})}))
