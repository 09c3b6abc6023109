"""Which snapshot counts as behind the last applied one (``pipeline.check_not_behind``): by WAL
position within one cluster, else by capturedAt. Against real file:// storage; the servers'
side (a standby and its idle primary) is in tests/integration/job/test_standby.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from tablesync_job.errors import TransientError
from tablesync_job.pipeline import RunContext, check_not_behind, lsn_bytes
from tablesync_job.snapshots import Layout, Snapshot, State
from tablesync_job.storage import open_storage

CLUSTER = "7710740221667035101"


def snapshot(snapshot_id: str, captured_at: str, lsn: str | None,
             system: str | None = CLUSTER, in_recovery: bool = True) -> Snapshot:
    return Snapshot(id=snapshot_id, table="public.prices", captured_at=captured_at,
                    in_recovery=in_recovery, rows=1, bytes=1, columns=[], primary_key=["id"],
                    version_column="updated_at", version_kind="timestamp", min_version=None,
                    max_version=None, watermark=captured_at, lsn=lsn, system_identifier=system)


def context(tmp_path: Path, applied: Snapshot) -> RunContext:
    layout = Layout(open_storage(f"file://{tmp_path}/store"))
    layout.put_snapshot(applied, [])
    layout.put_state(State(last_applied_snapshot_id=applied.id, captured_at=applied.captured_at,
                           applied_at=applied.captured_at, delta_id=None))
    return cast(RunContext, SimpleNamespace(layout=layout))


def test_lsn_text_orders_as_a_number() -> None:
    assert lsn_bytes("0/3000148") == 0x3000148
    assert lsn_bytes("16/B374D848") == (0x16 << 32) | 0xB374D848
    # as text "A/0" < "9/FFFFFFFF" would be wrong
    assert lsn_bytes("A/0") > lsn_bytes("9/FFFFFFFF")


def test_a_caught_up_standby_of_an_idle_primary_is_not_behind(tmp_path: Path) -> None:
    """The primary's last commit is older than the primary's own now() of the last run: by
    capturedAt the standby looks behind, by WAL position it holds everything."""
    on_primary = snapshot("s1", "2026-11-21T10:00:00+00:00", "0/5000060", in_recovery=False)
    ctx = context(tmp_path, on_primary)
    check_not_behind(ctx, snapshot("s2", "2026-11-21T09:00:00+00:00", "0/5000060"))
    check_not_behind(ctx, snapshot("s3", "2026-11-21T09:00:00+00:00", "1/0"))


def test_a_standby_short_of_the_applied_position_is_behind(tmp_path: Path) -> None:
    ctx = context(tmp_path, snapshot("s1", "2026-11-21T10:00:00+00:00", "A/10"))
    with pytest.raises(TransientError) as info:
        check_not_behind(ctx, snapshot("s2", "2026-11-21T11:00:00+00:00", "9/FFFFFFF0"))
    assert str(info.value).startswith(
        "the source (a standby) is behind: snapshot s2 holds its WAL up to 9/FFFFFFF0 "
        "(capturedAt 2026-11-21T11:00:00+00:00), short of A/10 of the last applied snapshot s1;")


@pytest.mark.parametrize("applied_lsn, applied_system, lsn, system", [
    (None, None, "0/10", CLUSTER),  # the last applied manifest predates WAL positions
    ("0/20", CLUSTER, None, None),  # this source's role may not read them
    ("0/20", CLUSTER, "0/10", "42"),  # another cluster: its positions are its own
])
def test_without_comparable_positions_capturedAt_decides(
        tmp_path: Path, applied_lsn: str | None, applied_system: str | None, lsn: str | None,
        system: str | None) -> None:
    ctx = context(tmp_path, snapshot("s1", "2026-11-21T10:00:00+00:00", applied_lsn,
                                     applied_system))
    check_not_behind(ctx, snapshot("s2", "2026-11-21T10:00:01+00:00", lsn, system))
    with pytest.raises(TransientError) as info:
        check_not_behind(ctx, snapshot("s3", "2026-11-21T09:59:59+00:00", lsn, system))
    assert "is as of 2026-11-21T09:59:59+00:00, older than the last applied snapshot s1" in str(
        info.value)
