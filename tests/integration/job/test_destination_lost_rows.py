"""Rows the destination lost outside any delta are found by a sample of keys on each run.

A delta brings across what changed between T-1 and T. Before this, a destination emptied,
dropped and created again, or cut by a stray DELETE got the delta alone, with exit 0, and the
other rows never came back; one restored from an older backup kept the older rows. Now each
run looks up random keys of T that T-1 had too; those the destination lacks and the source
still has, or holds older than T-1 while the source does not, are lost, and the delta then
takes every row of T (a refill), unless ``spec.destination.lostRows`` says warn or ignore.
"""

from __future__ import annotations

import json

import pytest

from tablesync_job import pipeline, spec
from tablesync_job.postgres import quote_ident
from tests.integration.job.lane import PRICES_DDL, Lane, load_prices


def first_run_then_changes(lane: Lane) -> None:
    load_prices(lane, 2000)
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET price = price + 1, updated_at = now() WHERE id % 10 = 0")
    lane.src("DELETE FROM prices WHERE id % 97 = 0")
    lane.src("INSERT INTO prices SELECT g, 'new-' || g, 5, 'USD', 'new', now() "
             "FROM generate_series(3001, 3010) g")


def probe_after_a_change_at_both(lane: Lane, monkeypatch: pytest.MonkeyPatch,
                                 change: str) -> dict[str, int]:
    """After a first run, one in-process run up to the look-up, with ``change`` made at the
    source and delivered by the event lane between the dump and the look-up; asserts that
    no refill follows and returns the report's lostRows."""
    load_prices(lane, 2000)
    assert lane.run("run").code == 0
    for name, value in lane.env.items():
        monkeypatch.setenv(name, value)
    ctx = pipeline.make_context(spec.parse(lane.spec))
    try:
        pipeline.preflight(ctx)
        snap, parts = pipeline.phase_dump(ctx)
        for run_sql in (lane.src, lane.dst):
            run_sql(change)
        delta, delta_parts = pipeline.phase_diff(ctx, snap, parts, store=False)
        checked, _ = pipeline.probe_destination(ctx, snap, parts, delta, delta_parts)
    finally:
        pipeline.cleanup(ctx)
    assert checked is delta and checked.refills == 0
    assert ctx.report.lost_rows is not None
    return ctx.report.lost_rows


def test_an_emptied_destination_gets_every_row_back_as_drift(lane: Lane) -> None:
    first_run_then_changes(lane)
    lane.dst("TRUNCATE prices")
    rows = lane.src("SELECT count(*) FROM prices")[0][0]

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["reason"] == "Refilled"
    assert result.report["bootstrap"] is False  # the operator counts these rows as drift
    assert result.report["apply"]["inserted"] == rows
    assert result.report["delta"]["refill"] > 0
    assert '"missingSampled": 1000' in result.stderr
    assert lane.table_text("destination") == lane.table_text("source")
    assert lane.run("run").report["reason"] == "NoChanges"


def test_a_re_created_destination_the_event_lane_already_writes_to(lane: Lane) -> None:
    first_run_then_changes(lane)
    lane.dst("DROP TABLE prices")
    lane.dst(PRICES_DDL)
    # the event lane goes on delivering into the new, empty table
    for row in lane.src("SELECT * FROM prices WHERE id IN (3001, 3002)"):
        lane.dst("INSERT INTO prices VALUES (%s, %s, %s, %s, %s, %s)", row)

    result = lane.run("run")

    assert result.code == 0 and result.report["reason"] == "Refilled", result.stderr
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_refill_still_deletes_what_the_source_deleted(lane: Lane) -> None:
    """Half the destination restored from nowhere: the refill brings the other half back,
    and the rows deleted at the source since T-1 still go (a load of T alone would keep
    them for good)."""
    first_run_then_changes(lane)
    lane.dst("DELETE FROM prices WHERE id % 2 = 1")

    result = lane.run("run")

    assert result.code == 0 and result.report["reason"] == "Refilled", result.stderr
    assert result.report["apply"]["deleted"] == lane.src(
        "SELECT count(*) FROM generate_series(1, 2000) g WHERE g % 97 = 0 AND g % 2 = 0")[0][0]
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_few_lost_rows_refill_too_and_warn_says_so_instead(lane: Lane) -> None:
    first_run_then_changes(lane)
    lane.dst("DELETE FROM prices WHERE id BETWEEN 1001 AND 1100")
    lane.spec["spec"]["destination"]["lostRows"] = "warn"

    warned = lane.run("run")

    assert warned.code == 0 and warned.report["reason"] == "Applied", warned.stderr
    assert "lostRows: warn" in warned.stderr
    assert "sampled rows were lost outside any delta and stay lost" in warned.report["message"]
    lost = warned.report["lostRows"]
    assert lost["lost"] == lost["missing"] > 0 and lost["sampled"] > 900
    assert lane.dst("SELECT count(*) FROM prices WHERE id BETWEEN 1001 AND 1100") == [(10,)]

    lane.spec["spec"]["destination"]["lostRows"] = "refill"
    refilled = lane.run("run")
    assert refilled.code == 0 and refilled.report["reason"] == "Refilled", refilled.stderr
    assert lane.table_text("destination") == lane.table_text("source")


def test_lost_rows_ignore_does_not_look(lane: Lane) -> None:
    """For a destination that holds a subset on purpose (old partitions dropped, a trigger
    that filters): a refill would bring the rest back on every run."""
    first_run_then_changes(lane)
    lane.dst("TRUNCATE prices")
    lane.spec["spec"]["destination"]["lostRows"] = "ignore"

    result = lane.run("run")

    assert result.code == 0 and result.report["reason"] == "Applied", result.stderr
    assert "lostRows" not in result.report and "missingSampled" not in result.stderr


def partitioned_destination(lane: Lane) -> None:
    """1,000 source rows; the destination partitioned by id, ids below 500 in prices_old."""
    lane.src(PRICES_DDL)
    lane.dst(PRICES_DDL.replace("updated_at timestamptz NOT NULL)",
                                "updated_at timestamptz NOT NULL) PARTITION BY RANGE (id)"))
    lane.dst("CREATE TABLE prices_old PARTITION OF prices FOR VALUES FROM (0) TO (500)")
    lane.dst("CREATE TABLE prices_new PARTITION OF prices FOR VALUES FROM (500) TO (MAXVALUE)")
    lane.src("INSERT INTO prices SELECT g, 'sku-' || g, 1, 'EUR', 't', now() - interval '1h' "
             "FROM generate_series(1, 1000) g")


def test_a_refill_the_destination_refuses_names_lost_rows_ignore(lane: Lane) -> None:
    """Old partitions dropped at the destination on purpose: the refill cannot put their
    rows back, and the error says how to keep the destination a subset."""
    partitioned_destination(lane)
    assert lane.run("run").code == 0
    lane.dst("DROP TABLE prices_old")

    refused = lane.run("run")

    assert refused.code == 2, refused.stderr
    assert "spec.destination.lostRows: ignore" in refused.error_line
    lane.spec["spec"]["destination"]["lostRows"] = "ignore"
    assert lane.run("run").code == 0


def test_rows_the_source_deleted_after_the_snapshot_are_not_taken_for_lost(
        lane: Lane, monkeypatch: pytest.MonkeyPatch) -> None:
    """A purge at the source that the event lane delivers between the dump and the look-up:
    those rows are missing from the destination, but the source no longer has them either.
    Taken for lost, the refill put them back (and the next runs' delete guard kept them)."""
    # the purge, and the event lane delivering it
    lost = probe_after_a_change_at_both(lane, monkeypatch, "DELETE FROM prices WHERE id % 5 = 0")

    assert lost["missing"] > 100 and lost["lost"] == 0


def test_a_destination_restored_from_an_older_backup_is_refilled(lane: Lane) -> None:
    """The destination restored from a backup taken before the last apply holds every key,
    some at the versions before it: no delta brings those changes again, and the rows kept
    the old prices for good."""
    load_prices(lane, 2000)
    assert lane.run("run").code == 0
    lane.dst("CREATE TABLE backup AS SELECT * FROM prices")
    lane.src("UPDATE prices SET price = price + 1, updated_at = now() WHERE id % 4 = 0")
    assert lane.run("run").report["apply"]["updated"] == 500
    lane.dst("TRUNCATE prices; INSERT INTO prices SELECT * FROM backup; DROP TABLE backup")
    lane.src("UPDATE prices SET title = 'changed', updated_at = now() WHERE id % 100 = 1")

    result = lane.run("run")

    assert result.code == 0 and result.report["reason"] == "Refilled", result.stderr
    found = result.report["lostRows"]
    assert found["missing"] == 0 and found["lost"] == found["behind"] > 100, found
    assert result.report["apply"]["updated"] == 500 + 20
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_version_the_source_set_back_too_is_not_taken_for_a_restore(
        lane: Lane, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows deleted and inserted again at the source after the dump, with a version counter
    that started over, and the event lane delivering them: the destination holds them older
    than the last apply left them, and so does the source. A refill would put T's older
    rows back over them."""
    lost = probe_after_a_change_at_both(
        lane, monkeypatch, "UPDATE prices SET price = 7, updated_at = updated_at - "
        "interval '2 days' WHERE id % 5 = 0")

    assert lost["behind"] > 100 and lost["lost"] == 0


def test_soft_deleted_stamps_the_snapshot_contradicts_are_lost_rows(lane: Lane) -> None:
    load_prices(lane, 500)
    lane.dst("ALTER TABLE prices ADD COLUMN deleted_at timestamptz")
    lane.spec["spec"]["destination"]["deletes"] = "soft"
    assert lane.run("run").code == 0
    lane.dst("UPDATE prices SET deleted_at = now() - interval '1 minute'")

    result = lane.run("run")

    assert result.code == 0 and result.report["reason"] == "Refilled", result.stderr
    assert lane.dst("SELECT count(*) FROM prices WHERE deleted_at IS NOT NULL") == [(0,)]


def test_the_delete_guard_still_holds_in_a_refill_and_approving_applies_it(
        lane: Lane) -> None:
    load_prices(lane, 2000)
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id % 10 = 0")
    lane.dst("TRUNCATE prices")

    tripped = lane.run("run")
    assert tripped.code == 3, tripped.stderr
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]

    approved = lane.run("run", "--approve", tripped.report["deltaId"])
    assert approved.code == 0 and approved.report["reason"] == "Refilled", approved.stderr
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_dry_run_says_so_and_changes_nothing(lane: Lane) -> None:
    first_run_then_changes(lane)
    lane.dst("TRUNCATE prices")
    state = lane.state()

    result = lane.run("run", "--dry-run")

    assert result.code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["result"] == "DryRun" and out["delta"]["refill"] > 0
    assert "refills" in out["message"]
    assert {row["_tablesync_op"] for row in out["sample"]} >= {"refill", "update", "delete"}
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]
    assert lane.state() == state


# Key columns whose text travels from the destination to the source for the look-up there:
# (source and destination DDL, rows, primaryKey).
KEY_CASES = {
    "composite, collation": (
        'CREATE TABLE k (a text COLLATE "C", b int, v timestamptz NOT NULL, PRIMARY KEY (a, b))',
        "INSERT INTO k SELECT chr(65 + g % 26) || g, g % 7, now() - interval '1h' "
        "FROM generate_series(1, 300) g", ["a", "b"]),
    "infinite timestamp and date": (
        "CREATE TABLE k (id int, a timestamp, d date, v timestamptz NOT NULL, "
        "PRIMARY KEY (id, a, d))",
        "INSERT INTO k SELECT g, CASE g % 3 WHEN 0 THEN 'infinity' WHEN 1 THEN '-infinity' "
        "ELSE '2020-01-01'::timestamp + g * interval '1.5 s' END, CASE WHEN g % 2 = 0 THEN "
        "'infinity'::date ELSE '2020-01-01'::date + g END, now() - interval '1h' "
        "FROM generate_series(1, 300) g", ["id", "a", "d"]),
    "bytea": (
        "CREATE TABLE k (a bytea PRIMARY KEY, v timestamptz NOT NULL)",
        "INSERT INTO k SELECT decode(md5(g::text), 'hex') || '\\x00'::bytea, "
        "now() - interval '1h' FROM generate_series(1, 300) g", ["a"]),
    "arrays with bounds": (
        "CREATE TABLE k (a int[] PRIMARY KEY, t text[], v timestamptz NOT NULL)",
        "INSERT INTO k SELECT CASE WHEN g % 2 = 0 THEN array[g, g + 1] ELSE "
        "('[0:1]={' || g || ',1}')::int[] END, array['a b', '', 'NULL'], "
        "now() - interval '1h' FROM generate_series(1, 300) g", ["a"]),
    "interval, domain and enum": (
        "CREATE DOMAIN dk AS text CHECK (VALUE <> ''); "
        "CREATE TYPE en AS ENUM ('a', 'b', 'c'); "
        "CREATE TABLE k (a dk, e en, i interval, v timestamptz NOT NULL, PRIMARY KEY (a, e, i))",
        "INSERT INTO k SELECT 'k' || g, (array['a', 'b', 'c'])[1 + g % 3]::en, "
        "g * interval '1 day 3 hours 1.5 s', now() - interval '1h' "
        "FROM generate_series(1, 300) g", ["a", "e", "i"]),
    "quoted names": (
        'CREATE TABLE k ("Id" int, "we""ird" text, v timestamptz NOT NULL, '
        'PRIMARY KEY ("Id", "we""ird"))',
        "INSERT INTO k SELECT g, 'w ' || g, now() - interval '1h' "
        "FROM generate_series(1, 300) g", ["Id", 'we"ird']),
}


@pytest.mark.parametrize("case", list(KEY_CASES))
def test_lost_rows_are_confirmed_at_the_source_whatever_the_key_type(
        lane: Lane, case: str) -> None:
    ddl, rows, key = KEY_CASES[case]
    lane.both(ddl)
    lane.src(rows)
    lane.spec["spec"]["source"].update(table="public.k", primaryKey=key, versionColumn="v")
    lane.spec["spec"]["destination"]["table"] = "public.k"
    assert lane.run("run").code == 0
    lane.src("UPDATE k SET v = now() WHERE ctid IN (SELECT ctid FROM k LIMIT 5)")
    healthy = lane.run("run")
    assert healthy.code == 0 and healthy.report["reason"] == "Applied", healthy.stderr
    assert "lostRows" not in healthy.report
    lane.dst("DELETE FROM k WHERE random() < 0.6")

    result = lane.run("run")

    assert result.code == 0 and result.report["reason"] == "Refilled", result.stderr
    assert result.report["lostRows"]["lost"] == result.report["lostRows"]["missing"]
    text = f"SELECT t::text FROM k t ORDER BY {', '.join(quote_ident(c) for c in key)}"
    assert lane.dst(text) == lane.src(text)
    assert "could not be looked up" not in result.stderr


# Version columns whose text travels from the destination to the source for the look-up
# of rows held older: (type, a version from g, the same version set back).
VERSION_CASES = {
    "bigint": ("bigint", "g * 10", "v - 1"),
    "numeric": ("numeric(20,3)", "g + 0.125", "v - 0.001"),
    "timestamp": ("timestamp(3)", "'2020-01-01'::timestamp + g * interval '1.5 s'",
                  "v - interval '1 ms'"),
    "date": ("date", "'2020-01-01'::date + g", "v - 1"),
    "text": ("text", "lpad(g::text, 6, '0')", "'0' || v"),
}


@pytest.mark.parametrize("case", list(VERSION_CASES))
def test_rows_held_older_are_confirmed_at_the_source_whatever_the_version_type(
        lane: Lane, case: str) -> None:
    pg_type, version, older = VERSION_CASES[case]
    lane.both(f"CREATE TABLE k (id int PRIMARY KEY, p text, v {pg_type} NOT NULL)")
    lane.src(f"INSERT INTO k SELECT g, 'p' || g, {version} FROM generate_series(1, 300) g")
    lane.spec["spec"]["source"].update(table="public.k", primaryKey=["id"], versionColumn="v")
    lane.spec["spec"]["destination"]["table"] = "public.k"
    assert lane.run("run").code == 0
    lane.dst(f"UPDATE k SET p = 'restored', v = {older} WHERE id % 3 = 0")

    result = lane.run("run")

    assert result.code == 0 and result.report["reason"] == "Refilled", result.stderr
    assert result.report["lostRows"] == {"sampled": 300, "missing": 0, "behind": 100,
                                         "lost": 100}
    assert lane.dst("SELECT k::text FROM k ORDER BY id") == lane.src(
        "SELECT k::text FROM k ORDER BY id")
    assert "could not be looked up" not in result.stderr


TOKYO = ("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L', "
         "current_database(), 'Asia/Tokyo'); END $$")


@pytest.mark.parametrize(("before", "after", "changed"), [
    # an unconstrained numeric travels as text: DuckDB refused to mix it with bigint
    ("bigint", "numeric", "v + 1000"),
    # T-1's naive versions read in DuckDB's zone (UTC), the servers' in theirs (Tokyo)
    ("timestamp", "timestamptz", "now()"),
])
def test_a_version_column_retyped_since_the_last_apply_is_no_lost_row(
        lane: Lane, before: str, after: str, changed: str) -> None:
    """The migration retypes the version column on both sides alike and some rows change
    afterwards: the delta's old versions are of the old type. Before, the run failed on every
    try (exit 75, a DuckDB error) or took every row for one restored from a backup."""
    lane.both(TOKYO)
    lane.both(f"CREATE TABLE k (id int PRIMARY KEY, p text, v {before} NOT NULL)")
    first = "g" if before == "bigint" else "'2024-01-01'::timestamp + g * interval '1 min'"
    lane.src(f"INSERT INTO k SELECT g, 'p' || g, {first} FROM generate_series(1, 300) g")
    lane.spec["spec"]["source"].update(table="public.k", primaryKey=["id"], versionColumn="v")
    lane.spec["spec"]["destination"]["table"] = "public.k"
    assert lane.run("run").code == 0
    lane.both(f"ALTER TABLE k ALTER COLUMN v TYPE {after}")
    lane.src(f"UPDATE k SET p = 'changed', v = {changed} WHERE id % 10 = 0")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["reason"] == "Applied" and "lostRows" not in result.report, result.report
    text = "SELECT k::text FROM k ORDER BY id"
    assert lane.dst(text) == lane.src(text)
