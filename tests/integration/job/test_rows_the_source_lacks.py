"""Rows the destination holds and the source lacks, found by a bootstrap or a refill and
deleted by the next run once its snapshot lacks them too.

Deletes no delta carries: made at the source before the first snapshot and lost by the event
lane, or brought back by a restore from an older backup. Before, a bootstrap and a refill
only upserted, so such rows stayed for good. Deleting them in the same run is not safe: a
row the event lane inserted around T (a source transaction that began before the dump and
committed after it, or a date version) looks the same, so the next snapshot confirms them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.job.lane import JobResult, Lane, load_prices
from tests.integration.job.test_destination_lost_rows import partitioned_destination


def destination_with_extra_rows(lane: Lane, rows: int = 100, extra: int = 3) -> None:
    """The source's rows, and ``extra`` more in the destination only (ids from 1001),
    as old as the source's: the event lane lost their deletes."""
    load_prices(lane, rows)
    lane.dst(f"INSERT INTO prices SELECT g, 'sku-' || g, 1, 'EUR', 'gone', "
             f"now() - interval '2 days' FROM generate_series(1001, {1000 + extra}) g")


@pytest.mark.parametrize("setting", ["deletes: apply", "deletes: soft", "versionKind: counter"])
def test_a_bootstrap_keeps_the_rows_the_source_lacks_and_the_next_run_deletes_them(
        lane: Lane, setting: str) -> None:
    destination_with_extra_rows(lane)
    if setting == "deletes: soft":
        lane.dst("ALTER TABLE prices ADD COLUMN deleted_at timestamptz")
        lane.spec["spec"]["destination"].update(deletes="soft", softDeleteColumn="deleted_at")
    if setting == "versionKind: counter":
        lane.both("ALTER TABLE prices ADD COLUMN v bigint NOT NULL DEFAULT 1")
        lane.spec["spec"]["source"].update(versionColumn="v", versionKind="counter")

    first = lane.run("run")

    assert first.code == 0, first.stderr
    assert first.report["reason"] == "Bootstrapped"
    assert first.report["apply"]["deleted"] == 0  # not yet: T+1 must lack them too
    assert first.report["apply"]["pendingDeletes"] == 3
    assert "; 3 rows the destination holds and" in first.report["message"]
    assert lane.dst("SELECT count(*) FROM prices WHERE id > 1000") == [(3,)]
    assert (lane.state() or {})["pending_deletes"] == 3

    second = lane.run("run")

    assert second.code == 0, second.stderr
    assert second.report["apply"]["deleted"] == 3
    assert second.report["delta"]["delete"] == 3
    assert "pendingDeletes" not in second.report["apply"]
    if setting == "deletes: soft":  # stamped, not removed
        assert lane.dst("SELECT count(*) FROM prices WHERE id > 1000 AND deleted_at IS NOT "
                        "NULL") == [(3,)]
    else:
        assert lane.table_text("destination") == lane.table_text("source")
    assert (lane.state() or {})["pending_deletes"] == 0


def test_with_deletes_ignore_they_are_not_looked_for(lane: Lane) -> None:
    destination_with_extra_rows(lane)
    lane.spec["spec"]["destination"]["deletes"] = "ignore"

    results = [lane.run("run"), lane.run("run")]

    assert [r.code for r in results] == [0, 0], results[-1].stderr
    assert (lane.state() or {})["pending_deletes"] == 0
    assert lane.dst("SELECT count(*) FROM prices WHERE id > 1000") == [(3,)]


def _ignore_then_source_deletes(lane: Lane) -> None:
    """A lane run under deletes: ignore, whose source then deleted ids 1-3 (kept in the
    destination, as ignore says), with a run applied since: T-1 lacks them too."""
    load_prices(lane, 100)
    lane.spec["spec"]["destination"]["deletes"] = "ignore"
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id <= 3")
    assert lane.run("run").code == 0
    assert lane.dst("SELECT count(*) FROM prices WHERE id <= 3") == [(3,)]


def test_switching_deletes_on_after_ignore_finds_the_rows_deleted_meanwhile(
        lane: Lane) -> None:
    """Under ``deletes: ignore`` the source's deletes are passed over; once ``apply``, those
    rows are in no delta (T-1 lacks them too), so the first run takes every row of T to
    find them and the run after deletes them."""
    _ignore_then_source_deletes(lane)
    lane.spec["spec"]["destination"]["deletes"] = "apply"

    switched = lane.run("run")
    after = lane.run("run")
    then = lane.run("run")

    assert switched.code == 0, switched.stderr
    assert switched.report["reason"] == "Refilled"
    assert "deletes was ignore at the last apply" in switched.report["message"]
    assert after.code == 0, after.stderr
    assert after.report["apply"]["deleted"] == 3
    assert lane.table_text("destination") == lane.table_text("source")
    assert then.report["reason"] == "NoChanges"  # once: the state says apply now


def test_switching_deletes_on_is_seen_by_the_one_phase_commands_too(lane: Lane) -> None:
    """dump, diff and apply by hand: the diff takes every row of T, and until a delta that
    does is applied, state.json keeps saying ignore."""
    _ignore_then_source_deletes(lane)
    lane.spec["spec"]["destination"]["deletes"] = "apply"

    steps = [lane.run("dump"), lane.run("diff"), lane.run("apply")]

    assert [r.code for r in steps] == [0, 0, 0], steps[-1].stderr
    assert steps[-1].report["reason"] == "Refilled"
    assert (lane.state() or {})["pending_deletes"] == 3
    assert (lane.state() or {})["deletes"] == "apply"
    assert lane.run("run").report["apply"]["deleted"] == 3
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_state_without_the_deletes_it_was_applied_under_is_not_taken_for_ignore(
        lane: Lane) -> None:
    """state.json from an earlier build does not say: a normal run, not every row of T."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    state = lane.state() or {}
    assert state.pop("deletes") == "apply"
    lane.put_state(state)

    assert lane.run("run").report["reason"] == "NoChanges"


def test_a_row_the_source_has_again_by_the_next_snapshot_stays(lane: Lane) -> None:
    """The source inserted the row (again) after T; T+1 has it: an upsert, not a delete."""
    destination_with_extra_rows(lane)
    assert lane.run("run").code == 0
    lane.src("INSERT INTO prices VALUES (1002, 'sku-1002', 7, 'EUR', 'back', now())")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["deleted"] == 2
    assert lane.table_text("destination") == lane.table_text("source")
    assert lane.dst("SELECT title FROM prices WHERE id = 1002") == [("back",)]


def test_a_row_changed_in_the_destination_since_stays_for_another_look(lane: Lane) -> None:
    """Its version went up after T (newer than T+1 too): not the row T lacked; kept, and asked
    again by the run after."""
    destination_with_extra_rows(lane)
    assert lane.run("run").code == 0
    lane.dst("UPDATE prices SET title = 'touched', updated_at = now() + interval '1 hour' "
             "WHERE id = 1001")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["deleted"] == 2
    assert result.report["apply"]["staleSkipped"] == 1
    assert lane.dst("SELECT title FROM prices WHERE id > 1000") == [("touched",)]
    assert (lane.state() or {})["pending_deletes"] == 1


def test_every_key_type_is_matched_exactly(lane: Lane) -> None:
    """A composite key of types that travel natively, as decimal and as text (char(n) keeps
    its padding in Arrow, inet and unconstrained numeric come as text): the rows the source
    lacks are deleted, none of those it has."""
    lane.both("CREATE TABLE prices (u uuid, b bytea, ts timestamptz, n numeric(12,2), "
              "c char(4), ip inet, nu numeric, t text, d date, "
              "updated_at timestamptz NOT NULL, PRIMARY KEY (u, b, ts, n, c, ip, nu, t, d))")
    rows = ("SELECT md5(g::text)::uuid, decode(lpad(to_hex(g), 4, '0'), 'hex'), "
            "'2026-01-01 00:00:00.000001+00'::timestamptz + g * interval '1 second', g + 0.5, "
            "'c' || (g % 3), ('10.0.0.' || g)::inet, g * 1.25, 'täxt ' || g, "
            "'2026-01-01'::date + g, now() - interval '1 day' FROM generate_series(1, 40) g")
    lane.src(f"INSERT INTO prices {rows}")
    lane.dst(f"INSERT INTO prices {rows}")
    # the same keys with one part different: rows the source lacks
    lane.dst("INSERT INTO prices SELECT u, b, ts, n, c, ip, nu, t || '!', d, updated_at "
             "FROM prices WHERE nu < 3")  # ids 1 and 2: nu 1.25 and 2.50
    lane.dst("INSERT INTO prices SELECT u, b, ts + interval '1 microsecond', n, c, ip, nu, t, "
             "d, updated_at FROM prices WHERE n = 5.5")
    lane.dst("INSERT INTO prices SELECT u, b, ts, n, 'c9', ip, 2.5000, t, d, updated_at FROM "
             "prices WHERE n = 6.5")
    lane.spec["spec"]["source"]["primaryKey"] = ["u", "b", "ts", "n", "c", "ip", "nu", "t", "d"]
    lane.spec["spec"]["guards"] = {"maxDeleteFraction": 0.5}
    order = "u, b, ts, n, c, ip, nu, t, d"

    assert lane.run("run").code == 0
    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["deleted"] == 4
    assert lane.table_text("destination", order=order) == lane.table_text("source", order=order)


def test_key_types_that_differ_in_the_destination_are_not_looked_for(lane: Lane) -> None:
    """A key widened in the destination (integer -> bigint): read in T's type, one key could
    look like another, so the rows stay and a warning says why."""
    lane.src("CREATE TABLE prices (id integer PRIMARY KEY, updated_at timestamptz NOT NULL)")
    lane.dst("CREATE TABLE prices (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO prices SELECT g, now() - interval '1 day' FROM generate_series(1, 50) g")
    lane.dst("INSERT INTO prices SELECT g, now() - interval '1 day' FROM generate_series(1, 51) g")

    first = lane.run("run")
    second = lane.run("run")

    assert (first.code, second.code) == (0, 0), first.stderr + second.stderr
    assert "id (integer in T, bigint in public.prices) differ in type" in first.stderr
    assert lane.dst("SELECT count(*) FROM prices") == [(51,)]


def test_too_many_trip_the_delete_guard_at_the_next_run_until_approved(lane: Lane) -> None:
    """A truncated first dump, or a destination far from the source: the deletes are the next
    run's, under its guard, shown by its dry run."""
    destination_with_extra_rows(lane, rows=100, extra=20)  # 20 of 100: 20% > 5%
    assert lane.run("run").code == 0
    before = lane.table_text("destination")

    dry = lane.run("run", "--dry-run")
    tripped = lane.run("run")

    assert dry.code == 0, dry.stderr
    message = json.loads(dry.stdout)["message"]
    assert "A run would stop at DeleteGuardTripped (exit 3)" in message
    assert "20 of them rows the destination held and" in message
    assert tripped.code == 3, tripped.stderr
    assert tripped.report["reason"] == "DeleteGuardTripped"
    assert lane.table_text("destination") == before

    approved = lane.run("run", "--approve", tripped.report["deltaId"])

    assert approved.code == 0, approved.stderr
    assert approved.report["apply"]["deleted"] == 20
    assert lane.table_text("destination") == lane.table_text("source")


def test_under_soft_deletes_only_live_rows_count(lane: Lane) -> None:
    """Starting over with deletes: soft onto a destination that keeps 2,000 stamped rows of
    old deletes, from a dump 20% short: the 20 live rows it lacks are 25% of its 80 rows,
    not 1% of the destination's 2,100, so the guard trips."""
    load_prices(lane, 0)
    lane.dst("ALTER TABLE prices ADD COLUMN deleted_at timestamptz")
    lane.spec["spec"]["destination"].update(deletes="soft", softDeleteColumn="deleted_at")
    lane.dst("INSERT INTO prices SELECT g, 'sku-' || g, 1, 'EUR', 'old', now() - interval "
             "'30 days', now() - interval '29 days' FROM generate_series(10001, 12000) g")
    lane.both("INSERT INTO prices SELECT g, 'sku-' || g, 1, 'EUR', 'live', now() - interval "
              "'1 day' FROM generate_series(1, 100) g")
    lane.src("DELETE FROM prices WHERE id > 80")  # the truncated dump

    first = lane.run("run")
    second = lane.run("run")

    assert first.code == 0, first.stderr
    assert (lane.state() or {})["pending_deletes"] == 20
    assert second.code == 3, second.report.get("message")
    assert second.report["reason"] == "DeleteGuardTripped"
    assert "would delete 20 of 80 rows" in second.error_line
    assert lane.dst("SELECT count(*) FROM prices WHERE deleted_at IS NULL") == [(100,)]


def test_an_empty_source_does_not_empty_the_destination_unguarded(lane: Lane) -> None:
    """A source table that is empty (newly created, wrongly named, truncated): T-1 has no
    rows, so every delete is more than maxDeleteFraction of them."""
    load_prices(lane, 0)
    lane.dst("INSERT INTO prices SELECT g, 'sku-' || g, 1, 'EUR', 'x', now() - interval "
             "'2 days' FROM generate_series(1, 1000) g")

    first = lane.run("run")
    second = lane.run("run")

    assert first.code == 0, first.stderr
    assert second.code == 3, second.report
    assert "would delete 1000 of 0 rows (all > spec.guards.maxDeleteFraction" in \
        second.error_line
    assert lane.dst("SELECT count(*) FROM prices") == [(1000,)]


def test_a_destination_row_with_a_null_key_is_not_noted(lane: Lane) -> None:
    """The destination's key is a UNIQUE index on a nullable column, and it holds a row of
    its own with a NULL key: no delete can match it."""
    lane.src("CREATE TABLE prices (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL)")
    lane.dst("CREATE TABLE prices (id bigint UNIQUE, updated_at timestamptz NOT NULL)")
    lane.both("INSERT INTO prices SELECT g, now() - interval '1 day' "
              "FROM generate_series(1, 100) g")
    lane.dst("INSERT INTO prices VALUES (NULL, now() - interval '2 days')")

    first = lane.run("run")
    second = lane.run("run")

    assert (first.code, second.code) == (0, 0), first.stderr + second.stderr
    assert (second.report["delta"]["delete"], second.report["apply"]["alreadyCurrent"]) == (0, 0)


def test_a_refill_keeps_each_pending_delete_once(lane: Lane) -> None:
    """A refill whose delete the destination holds newer: kept by the delete, not noted again
    as a row the snapshot lacks."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id = 5")
    lane.dst("UPDATE prices SET title = 'newer', updated_at = now() + interval '1 hour' "
             "WHERE id = 5")  # the event lane's write after the source's delete
    lane.dst("DELETE FROM prices WHERE id BETWEEN 50 AND 59")  # lost rows: this run refills

    refilled = lane.run("run")

    assert refilled.code == 0, refilled.stderr
    assert refilled.report["reason"] == "Refilled"
    assert (lane.state() or {})["pending_deletes"] == 1
    assert refilled.report["apply"]["pendingDeletes"] == 1


def test_a_refill_keeps_the_rows_a_restored_backup_brought_back(lane: Lane) -> None:
    """The destination restored from a backup: it lacks rows (which makes the run refill)
    and holds rows deleted at the source since the backup; the run after deletes those."""
    load_prices(lane, 1000)
    assert lane.run("run").code == 0
    lane.both("DELETE FROM prices WHERE id > 990")  # the event lane delivered these deletes
    assert lane.run("run").code == 0
    lane.dst("DELETE FROM prices")  # the restore: what the backup held
    lane.dst("INSERT INTO prices SELECT g, 'sku-' || g, (g % 1000) + 0.99, 'EUR', "
             "'product ' || g, now() - interval '3 days' FROM generate_series(51, 1000) g")

    refilled = lane.run("run")
    after = lane.run("run")

    assert refilled.code == 0, refilled.stderr
    assert refilled.report["reason"] == "Refilled"
    assert after.code == 0, after.stderr
    assert after.report["apply"]["deleted"] == 10
    assert lane.table_text("destination") == lane.table_text("source")


def test_kept_by_a_bootstrap_killed_after_its_commit(lane: Lane) -> None:
    """The rows are stored with the pending deletes before the commit: the run that settles
    the committed bootstrap goes on and deletes them."""
    destination_with_extra_rows(lane)
    killed = lane.run("run", env={"TABLESYNC_FAULT_INJECT": "after-commit"})
    assert killed.code == -9

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["deleted"] == 3
    assert lane.table_text("destination") == lane.table_text("source")


def test_an_approved_apply_killed_after_its_commit_reports_what_it_left(lane: Lane) -> None:
    """The rerun of an approved delta whose apply committed before the pod died settles it
    and reports the deletes it kept for the next run, from the marker."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id <= 20")  # 20%: the delete guard trips
    lane.dst("UPDATE prices SET updated_at = now() + interval '1 hour' WHERE id = 1")
    tripped = lane.run("run")
    assert tripped.code == 3, tripped.stderr
    delta_id = tripped.report["deltaId"]
    killed = lane.run("run", "--approve", delta_id,
                      env={"TABLESYNC_FAULT_INJECT": "after-commit"})
    assert killed.code == -9

    settled = lane.run("run", "--approve", delta_id)

    assert settled.code == 0, settled.stderr
    assert (settled.report["apply"]["deleted"], settled.report["apply"]["pendingDeletes"]) \
        == (19, 1)


def test_an_approved_delta_stored_under_ignore_does_not_end_the_switch(lane: Lane) -> None:
    """A delta stored under deletes: ignore (here: it tripped the shrink guard), approved
    after the switch to apply: a plain delta, so state.json keeps saying ignore and the next
    run takes every row of T."""
    _ignore_then_source_deletes(lane)
    lane.spec["spec"]["guards"] = {"maxDeleteFraction": 0.5}
    lane.src("DELETE FROM prices WHERE id > 40")  # 60% fewer: ShrinkGuardTripped
    tripped = lane.run("run")
    assert tripped.code == 3, tripped.stderr
    delta_id = tripped.report["deltaId"]
    lane.spec["spec"]["destination"]["deletes"] = "apply"

    approved = lane.run("run", "--approve", delta_id)
    runs = [lane.run("run"), lane.run("run")]

    assert approved.code == 0, approved.stderr
    assert [r.code for r in runs] == [0, 0], runs[-1].stderr
    assert lane.dst("SELECT count(*) FROM prices WHERE id <= 3") == [(0,)]


def test_a_committed_apply_settled_later_records_the_deletes_it_ran_under(lane: Lane) -> None:
    """An apply under ignore, killed after its commit and settled by a run that dies before
    its own apply: the state says ignore, as the marker recorded, so the switch back to
    apply is seen."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0  # state: deletes apply
    lane.spec["spec"]["destination"]["deletes"] = "ignore"
    lane.src("DELETE FROM prices WHERE id <= 3")
    killed = lane.run("run", env={"TABLESYNC_FAULT_INJECT": "after-commit"})
    assert killed.code == -9
    settled = lane.run("run", env={"TABLESYNC_FAULT_INJECT": "after-dump"})
    assert settled.code == -9

    assert (lane.state() or {}).get("deletes") == "ignore"  # the committed apply's
    lane.spec["spec"]["destination"]["deletes"] = "apply"
    runs = [lane.run("run"), lane.run("run")]
    assert [r.code for r in runs] == [0, 0], runs[-1].stderr
    assert lane.dst("SELECT count(*) FROM prices WHERE id <= 3") == [(0,)]


def test_no_switch_refill_of_a_subset_destination_under_lost_rows_ignore(
        lane: Lane) -> None:
    """lostRows: ignore, old partitions dropped at the destination on purpose: the switch
    from deletes: ignore does not write every row of T (which it would refuse, run after
    run); a warning says the rows deleted meanwhile stay."""
    partitioned_destination(lane)
    lane.spec["spec"]["destination"].update(deletes="ignore", lostRows="ignore")
    assert lane.run("run").code == 0
    lane.dst("DROP TABLE prices_old")
    assert lane.run("run").code == 0  # a subset on purpose: lostRows ignore
    lane.spec["spec"]["destination"]["deletes"] = "apply"

    runs = [lane.run("run"), lane.run("run")]

    assert [r.code for r in runs] == [0, 0], runs[-1].error_line
    assert "the rows deleted at the source meanwhile stay (spec.destination.lostRows: " \
        "ignore keeps" in runs[0].stderr
    assert "meanwhile stay" not in runs[1].stderr  # said once: the state says apply now


def test_no_switch_refill_brings_back_rows_lost_rows_ignore_keeps_out(lane: Lane) -> None:
    """lostRows: ignore (a destination that holds a subset on purpose): the switch from
    deletes: ignore does not write the rows it dropped on purpose back."""
    load_prices(lane, 100)
    lane.spec["spec"]["destination"].update(deletes="ignore", lostRows="ignore")
    assert lane.run("run").code == 0
    lane.dst("DELETE FROM prices WHERE id > 50")  # the subset kept on purpose
    assert lane.run("run").code == 0
    lane.spec["spec"]["destination"]["deletes"] = "apply"

    switched = lane.run("run")

    assert switched.code == 0, switched.stderr
    assert lane.dst("SELECT count(*) FROM prices") == [(50,)]


def test_a_pending_delete_skipped_for_an_upserted_key_is_not_stale_skipped(lane: Lane) -> None:
    """A noted row whose key the source inserts again with another text (numeric 500.00 vs
    500.0): asked again by DuckDB's text match, skipped under Postgres's equality, as the
    delta's upsert writes it: already current, not stale skipped, not kept again."""
    lane.both("CREATE TABLE prices (id numeric PRIMARY KEY, title text, "
              "updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO prices SELECT g, 't', now() - interval '1 day' "
             "FROM generate_series(1, 100) g")
    lane.dst("INSERT INTO prices SELECT g, 't', now() - interval '1 day' "
             "FROM generate_series(1, 100) g")
    lane.dst("INSERT INTO prices VALUES (500.0, 'gone', now() - interval '2 days')")
    assert lane.run("run").code == 0
    assert (lane.state() or {})["pending_deletes"] == 1
    lane.src("INSERT INTO prices VALUES (500.00, 'back', now())")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert lane.dst("SELECT title FROM prices WHERE id = 500") == [("back",)]
    assert (lane.state() or {})["pending_deletes"] == 0
    apply = result.report["apply"]
    assert apply["staleSkipped"] == 0, apply


def test_switching_soft_to_apply_deletes_the_stamped_rows(lane: Lane) -> None:
    """Rows stamped under deletes: soft are the source's deletes; switched to apply, the
    first run takes every row of T and notes them, the run after deletes them."""
    load_prices(lane, 100)
    lane.dst("ALTER TABLE prices ADD COLUMN deleted_at timestamptz")
    lane.spec["spec"]["destination"].update(deletes="soft", softDeleteColumn="deleted_at")
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id <= 3")
    assert lane.run("run").code == 0
    assert lane.dst("SELECT count(*) FROM prices WHERE deleted_at IS NOT NULL") == [(3,)]
    lane.spec["spec"]["destination"]["deletes"] = "apply"

    runs = [lane.run("run"), lane.run("run")]

    assert [r.code for r in runs] == [0, 0], runs[-1].stderr
    assert lane.dst("SELECT count(*) FROM prices WHERE id <= 3") == [(0,)]


@pytest.mark.parametrize("key", ["bigint", "tstzrange"])
def test_a_source_time_zone_the_destination_lacks_does_not_fail_the_apply(
        lane: Lane, key: str) -> None:
    """A zone name the destination's Postgres does not know (another tzdata release; here a
    manifest edited as the source would record it): a bigint key travels natively and needs
    no TimeZone; a tstzrange key does, so the look-up is skipped with a warning. Either way
    the bootstrap applies."""
    lane.both(f"CREATE TABLE prices (k {key} PRIMARY KEY, updated_at timestamptz NOT NULL)")
    value = "g" if key == "bigint" else "tstzrange(now() + g * interval '1 h', NULL)"
    lane.src(f"INSERT INTO prices SELECT {value}, now() - interval '1 day' "
             "FROM generate_series(1, 10) g")
    lane.spec["spec"]["source"]["primaryKey"] = ["k"]
    dumped = lane.run("dump")
    assert dumped.code == 0, dumped.stderr
    snap_id = dumped.report["snapshotId"]
    manifest = Path(lane.storage_url[len("file://"):]) / "snapshots" / snap_id / "manifest.json"
    data = json.loads(manifest.read_text())
    assert data["text_settings"]["TimeZone"]
    data["text_settings"]["TimeZone"] = "Europe/Nowhere_New"
    manifest.write_text(json.dumps(data))
    assert lane.run("diff").code == 0

    applied = lane.run("apply")

    assert applied.code == 0, applied.error_line
    assert lane.table_text("destination", order="k") == lane.table_text("source", order="k")
    said = "does not know the source's TimeZone 'Europe/Nowhere_New'" in applied.stderr
    assert said == (key == "tstzrange")


@pytest.mark.parametrize("deferrable", ["", " DEFERRABLE INITIALLY IMMEDIATE"])
def test_a_row_a_foreign_key_holds_is_not_noted(lane: Lane, deferrable: str) -> None:
    """Row 1001, lost at the source long ago, is referenced from a destination-only table
    (NO ACTION): its delete would fail the next run's whole apply, and every run after. It
    is not noted; the others are, and the runs after apply."""
    destination_with_extra_rows(lane)
    lane.dst(f"CREATE TABLE orders (id int PRIMARY KEY, price_id bigint REFERENCES prices"
             f"{deferrable})")
    lane.dst("INSERT INTO orders VALUES (1, 1001)")
    assert lane.run("run").code == 0
    assert (lane.state() or {})["pending_deletes"] == 2
    lane.src("UPDATE prices SET title = 'changed', updated_at = now() WHERE id = 1")

    runs = [lane.run("run"), lane.run("run")]

    assert [r.code for r in runs] == [0, 0], runs[-1].error_line
    assert runs[0].report["apply"]["deleted"] == 2
    assert lane.dst("SELECT title FROM prices WHERE id = 1") == [("changed",)]
    assert lane.dst("SELECT id FROM prices WHERE id > 1000") == [(1001,)]


def test_a_float_version_is_read_back_exactly(lane: Lane) -> None:
    """extra_float_digits = 0 in the destination would print 0.30000000000000004 as 0.3,
    a bound the row's version is not below: kept and asked again forever."""
    lane.dst(f"ALTER DATABASE {lane.destination.rsplit('/', 1)[1].split('?')[0]} "
             "SET extra_float_digits = 0")
    lane.both("CREATE TABLE prices (id bigint PRIMARY KEY, v float8 NOT NULL)")
    lane.both("INSERT INTO prices SELECT g, 1.5 FROM generate_series(1, 100) g")
    lane.dst("INSERT INTO prices VALUES (1001, 0.1::float8 + 0.2::float8)")
    lane.spec["spec"]["source"].update(versionColumn="v", versionKind="monotonic")

    first = lane.run("run")
    second = lane.run("run")

    assert (first.code, second.code) == (0, 0), first.stderr + second.stderr
    assert second.report["apply"]["deleted"] == 1, second.report["apply"]
    assert lane.dst("SELECT count(*) FROM prices") == [(100,)]


@pytest.mark.parametrize("version", ["'1900-01-01 00:00:00+00'", "'-infinity'"])
def test_a_version_arrow_reads_only_natively_costs_no_noted_row(lane: Lane, version: str) -> None:
    """A version whose text Arrow cannot parse (a local mean time offset, +00:19:32 in
    Amsterdam in 1900; -infinity): the versions are read natively, as the dump reads them,
    so every row is noted."""
    lane.dst(f"ALTER DATABASE {lane.destination.rsplit('/', 1)[1].split('?')[0]} "
             "SET TimeZone = 'Europe/Amsterdam'")
    destination_with_extra_rows(lane)
    lane.dst(f"UPDATE prices SET updated_at = {version} WHERE id = 1003")

    first = lane.run("run")

    assert first.code == 0, first.stderr
    assert (lane.state() or {})["pending_deletes"] == 3, first.stderr
    second = lane.run("run")
    assert second.report["apply"]["deleted"] == 3, second.report["apply"]


def test_a_kept_delete_at_an_infinite_version_keeps_the_others(lane: Lane) -> None:
    """Deletes kept because the destination was newer, one of them at version 'infinity':
    read as the dump reads versions, every one is kept and asked again (its text made the
    whole set be dropped)."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    lane.dst("UPDATE prices SET updated_at = 'infinity' WHERE id = 5")
    lane.dst("UPDATE prices SET updated_at = now() + interval '1 hour' WHERE id = 6")
    lane.src("DELETE FROM prices WHERE id IN (5, 6)")

    kept = lane.run("run")

    assert kept.code == 0, kept.stderr
    assert kept.report["apply"]["staleSkipped"] == 2
    assert (lane.state() or {})["pending_deletes"] == 2
    assert lane.run("run").report["apply"]["deleted"] == 2
    assert lane.table_text("destination") == lane.table_text("source")


# The event lane around T ---------------------------------------------------------------------

def while_the_apply_waits(lane: Lane, deliver: Callable[[psycopg.Connection[Any]], None]
                          ) -> JobResult:
    """Run the job while a destination transaction holds the table; once the apply waits
    for it (T is dumped), ``deliver`` writes in that transaction (the event lane), which
    then commits and lets the apply go on."""
    holder = psycopg.connect(lane.destination)
    holder.execute("LOCK TABLE prices IN ACCESS EXCLUSIVE MODE")
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(lane.run, "run")
        try:
            waiting: list[tuple[Any, ...]] = []
            for _ in range(600):
                waiting = lane.dst("SELECT query FROM pg_stat_activity WHERE wait_event_type "
                                   "= 'Lock' AND datname = current_database()")
                if waiting:
                    break
                time.sleep(0.1)
            assert waiting and "_tablesync_stage" in waiting[0][0]  # the apply: T is dumped
            deliver(holder)
        finally:
            holder.commit()
            holder.close()
        return running.result()


def test_an_event_lane_insert_committed_after_the_snapshot_stays(lane: Lane) -> None:
    """A source transaction that began before the dump (its now() is older than capturedAt)
    commits after it; the event lane delivers its insert while the bootstrap applies. T lacks
    the row, the destination has it, and so does the source: it stays."""
    load_prices(lane, 100)
    writer = psycopg.connect(lane.source)  # a long transaction at the source, still open
    writer.execute("INSERT INTO prices VALUES (5000, 'sku-5000', 1, 'EUR', 'in flight', now())")
    time.sleep(0.2)

    def deliver(holder: psycopg.Connection[Any]) -> None:
        writer.commit()  # the row commits after T...
        version = lane.src("SELECT updated_at FROM prices WHERE id = 5000")[0][0]
        holder.execute("INSERT INTO prices VALUES (5000, 'sku-5000', 1, 'EUR', 'in flight', "
                       "%s)", (version,))  # ...and the event lane delivers it

    first = while_the_apply_waits(lane, deliver)
    writer.close()
    second = lane.run("run")

    assert (first.code, second.code) == (0, 0), first.stderr + second.stderr
    assert second.report["apply"]["deleted"] == 0
    assert lane.dst("SELECT title FROM prices WHERE id = 5000") == [("in flight",)]
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_key_the_source_inserts_again_after_the_next_snapshot_stays(lane: Lane) -> None:
    """Row 1001 is a lost delete (an old date version), noted by the bootstrap. The source
    inserts it again after T+1's dump, the same day, and the event lane delivers it (today's
    date, which T+1's watermark covers) before T+1 applies: not the version noted, so the
    row stays, and is asked again."""
    load_prices(lane, 100)
    lane.both("ALTER TABLE prices ADD COLUMN changed_on date NOT NULL DEFAULT current_date")
    lane.src("UPDATE prices SET changed_on = current_date - 3")
    lane.spec["spec"]["source"]["versionColumn"] = "changed_on"
    lane.dst("INSERT INTO prices VALUES (1001, 'sku-1001', 1, 'EUR', 'gone', now(), "
             "current_date - 10)")  # its delete was lost by the event lane
    assert lane.run("run").code == 0
    assert (lane.state() or {})["pending_deletes"] == 1
    insert = ("INSERT INTO prices VALUES (1001, 'sku-1001', 2, 'EUR', 'back', now(), "
              "current_date) ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, "
              "changed_on = EXCLUDED.changed_on")

    def deliver(holder: psycopg.Connection[Any]) -> None:
        lane.src(insert)  # at the source after T+1's dump...
        holder.execute(insert)  # ...and delivered by the event lane

    second = while_the_apply_waits(lane, deliver)

    assert second.code == 0, second.stderr
    assert second.report["apply"]["deleted"] == 0
    assert lane.dst("SELECT title FROM prices WHERE id = 1001") == [("back",)]
    assert (lane.state() or {})["pending_deletes"] == 1  # asked again by T+2, which has it
    third = lane.run("run")
    assert (third.code, third.report["apply"]["deleted"]) == (0, 0), third.stderr
    assert lane.dst("SELECT title FROM prices WHERE id = 1001") == [("back",)]


def test_a_range_key_is_read_in_the_dumps_time_zone(lane: Lane) -> None:
    """tstzrange travels as text, in the dump session's TimeZone: the destination's keys are
    read in it too. A row noted at T that the source has by T+1 is not asked again (else
    deleted and inserted again). Rows a foreign key references (ON DELETE CASCADE here) are
    not noted at all."""
    lane.dst(f"ALTER DATABASE {lane.destination.rsplit('/', 1)[1].split('?')[0]} "
             "SET TimeZone = 'Europe/Berlin'")
    ts = "('2026-01-01 00:00:00+00'::timestamptz + g * interval '1 hour')"
    key = f"tstzrange({ts}, {ts} + interval '1 hour')"
    lane.both("CREATE TABLE prices (k tstzrange PRIMARY KEY, updated_at timestamptz NOT NULL)")
    lane.dst("CREATE TABLE notes (k tstzrange REFERENCES prices ON DELETE CASCADE, note text)")
    lane.src(f"INSERT INTO prices SELECT {key}, now() - interval '1 day' "
             "FROM generate_series(1, 20) g")
    lane.dst(f"INSERT INTO prices SELECT {key}, now() - interval '1 day' "
             "FROM generate_series(1, 22) g")
    lane.dst(f"INSERT INTO notes SELECT {key}, 'kept' FROM generate_series(1, 20) g")
    lane.dst(f"INSERT INTO prices SELECT {key}, now() - interval '1 day' "
             "FROM generate_series(23, 23) g")
    lane.dst(f"INSERT INTO notes SELECT {key}, 'holds' FROM generate_series(23, 23) g")
    lane.spec["spec"]["source"]["primaryKey"] = ["k"]
    assert lane.run("run").code == 0
    assert (lane.state() or {})["pending_deletes"] == 2
    # the source has row 21 now, at the version the destination holds
    lane.src(f"INSERT INTO prices SELECT {key}, now() - interval '1 day' "
             "FROM generate_series(21, 21) g")

    second = lane.run("run")

    assert second.code == 0, second.stderr
    assert second.report["apply"]["deleted"] == 1  # row 22
    assert lane.dst("SELECT count(*) FROM notes") == [(21,)]
    assert lane.dst("SELECT count(*) FROM prices") == [(22,)]  # 1..21, and 23 held


def test_a_float_array_key_is_read_with_the_dumps_float_digits(lane: Lane) -> None:
    """float8[] travels as text; the destination's extra_float_digits = 0 would print
    0.30000000000000004 as 0.3, which matches no row when cast back."""
    lane.dst(f"ALTER DATABASE {lane.destination.rsplit('/', 1)[1].split('?')[0]} "
             "SET extra_float_digits = 0")
    lane.both("CREATE TABLE prices (k float8[] PRIMARY KEY, updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO prices VALUES (ARRAY[1.5], now() - interval '1 day')")
    lane.dst("INSERT INTO prices VALUES (ARRAY[1.5], now() - interval '1 day'), "
             "(ARRAY[0.1::float8 + 0.2::float8], now() - interval '1 day')")
    lane.spec["spec"]["source"]["primaryKey"] = ["k"]
    lane.spec["spec"]["guards"] = {"maxDeleteFraction": 1.0}

    assert lane.run("run").code == 0
    second = lane.run("run")

    assert second.code == 0, second.stderr
    assert second.report["apply"]["deleted"] == 1
    assert lane.dst("SELECT k FROM prices") == [([1.5],)]


def test_a_date_version_event_lane_insert_later_the_same_day_stays(lane: Lane) -> None:
    """versionKind timestamp on a date column: the watermark is T's day, so a row the event
    lane inserts after T on the same day is not newer than it; T+1 has it, so it stays."""
    load_prices(lane, 100)
    lane.both("ALTER TABLE prices ADD COLUMN changed_on date NOT NULL DEFAULT current_date")
    lane.spec["spec"]["source"]["versionColumn"] = "changed_on"
    insert = "INSERT INTO prices VALUES (5000, 'sku-5000', 1, 'EUR', 'new', now())"

    def deliver(holder: psycopg.Connection[Any]) -> None:
        lane.src(insert)  # inserted at the source after T...
        holder.execute(insert)  # ...and delivered by the event lane

    first = while_the_apply_waits(lane, deliver)
    second = lane.run("run")

    assert (first.code, second.code) == (0, 0), first.stderr + second.stderr
    assert lane.dst("SELECT title FROM prices WHERE id = 5000") == [("new",)]
    assert second.report["apply"]["deleted"] == 0
