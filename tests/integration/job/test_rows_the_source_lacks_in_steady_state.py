"""Rows the destination holds and no snapshot had, found in steady state by a sample.

A bootstrap or refill notes every row of the destination whose key its snapshot lacks
(test_rows_the_source_lacks.py). Between those, such a row is in no delta: a delete the
event lane lost for a row inserted and deleted between two snapshots, a dual write whose
source side rolled back, a row written into the destination alone. Each run looks up a
sample of the destination's rows at the source and in T; with any the source lacks too, the
run refills (``lostRows: refill``), which notes them, and the run after deletes them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.integration.job.lane import PRICES_DDL, JobResult, Lane, load_prices
from tests.integration.job.test_destination_lost_rows import partitioned_destination

# rows no snapshot had, at an old version (the event lane's insert, its delete lost)
PHANTOMS = ("INSERT INTO prices SELECT g, 'sku-' || g, 1, 'EUR', 'phantom', "
            "now() - interval '2 days' FROM generate_series({first}, {last}) g")


def steady_with_phantoms(lane: Lane, rows: int = 1000, phantoms: int = 20) -> None:
    load_prices(lane, rows)
    assert lane.run("run").code == 0
    lane.dst(PHANTOMS.format(first=rows + 1, last=rows + phantoms))


def test_the_run_refills_and_the_next_deletes_them(lane: Lane) -> None:
    steady_with_phantoms(lane)

    refilled = lane.run("run")
    after = lane.run("run")

    assert refilled.code == 0, refilled.stderr
    assert refilled.report["reason"] == "Refilled"
    assert refilled.report["absentRows"] == {"sampled": 1020, "absent": 20}
    assert "as the destination holds rows the source lacks" in refilled.report["message"]
    assert refilled.report["apply"]["pendingDeletes"] == 20
    assert "have a key the source and snapshot" in refilled.stderr
    assert after.code == 0, after.stderr
    assert (after.report["reason"], after.report["apply"]["deleted"]) == ("Applied", 20)
    assert "absentRows" not in after.report
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_large_table_is_sampled(lane: Lane) -> None:
    """20,000 rows and 2,000 phantoms, together at the table's end: about 1,000 rows are
    sampled, by block (about 1 in 20), so a run misses the phantoms' 30-odd blocks about one
    time in five; the first run that hits them refills and notes all 2,000."""
    steady_with_phantoms(lane, rows=20_000, phantoms=2_000)
    lane.spec["spec"]["guards"] = {"maxDeleteFraction": 0.5}

    for _ in range(10):  # all miss once in 10**7
        refilled = lane.run("run")
        assert refilled.code == 0, refilled.stderr
        if refilled.report["reason"] != "NoChanges":
            break
    after = lane.run("run")

    assert refilled.report["reason"] == "Refilled"
    absent = refilled.report["absentRows"]
    assert 300 <= absent["sampled"] <= 2000 and 0 < absent["absent"] < absent["sampled"], absent
    assert refilled.report["apply"]["pendingDeletes"] == 2000
    assert (after.code, after.report["apply"]["deleted"]) == (0, 2000), after.stderr


def test_under_warn_they_are_reported_and_stay(lane: Lane) -> None:
    steady_with_phantoms(lane)
    lane.spec["spec"]["destination"]["lostRows"] = "warn"

    warned = lane.run("run")

    assert warned.code == 0, warned.stderr
    assert warned.report["reason"] == "NoChanges"
    assert warned.report["absentRows"] == {"sampled": 1020, "absent": 20}
    assert "20 of 1020 sampled rows of the destination have a key the source lacks and " \
        "stay (spec.destination.lostRows: warn)" in warned.report["message"]
    assert lane.dst("SELECT count(*) FROM prices") == [(1020,)]
    assert (lane.state() or {})["pending_deletes"] == 0


@pytest.mark.parametrize("setting", ["lostRows: ignore", "deletes: ignore"])
def test_they_are_not_looked_for(lane: Lane, setting: str) -> None:
    steady_with_phantoms(lane)
    key, value = setting.split(": ")
    lane.spec["spec"]["destination"][key] = value

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["reason"] == "NoChanges" and "absentRows" not in result.report


def test_rows_newer_than_the_snapshot_are_not_taken_for_them(lane: Lane) -> None:
    """A row at a version above T's highest may be the event lane's insert of a row a
    lagging replica (the source here) does not have yet: not a reason to refill."""
    load_prices(lane, 1000)
    assert lane.run("run").code == 0
    lane.dst("INSERT INTO prices VALUES (5001, 'sku-5001', 1, 'EUR', 'from the primary', "
             "now() + interval '1 minute')")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["reason"] == "NoChanges" and "absentRows" not in result.report


def test_rows_this_delta_deletes_or_asks_again_are_not_counted(lane: Lane) -> None:
    """Rows T-1 had and T lacks are this delta's deletes; a delete the last apply kept
    (the destination was newer) is asked again: neither makes the run refill."""
    load_prices(lane, 1000)
    assert lane.run("run").code == 0
    lane.both("UPDATE prices SET updated_at = now() WHERE id = 500")  # T's highest version
    lane.src("DELETE FROM prices WHERE id <= 10")
    lane.dst("UPDATE prices SET updated_at = now() + interval '1 hour' WHERE id = 1")
    kept = lane.run("run")
    assert (kept.code, kept.report["apply"]["pendingDeletes"]) == (0, 1), kept.stderr
    lane.dst("UPDATE prices SET updated_at = now() - interval '1 hour' WHERE id = 1")

    asked = lane.run("run")

    assert (kept.report["reason"], asked.report["reason"]) == ("Applied", "Applied")
    assert "absentRows" not in kept.report and "absentRows" not in asked.report
    assert asked.report["apply"]["deleted"] == 1


def test_a_row_a_foreign_key_holds_is_not_counted(lane: Lane) -> None:
    """A refill would not note it (its delete would fail the next apply), so it must not
    make every run refill."""
    steady_with_phantoms(lane, phantoms=1)
    lane.dst("CREATE TABLE orders (id int PRIMARY KEY, price_id bigint REFERENCES prices)")
    lane.dst("INSERT INTO orders VALUES (1, 1001)")

    runs = [lane.run("run"), lane.run("run")]

    assert [r.code for r in runs] == [0, 0], runs[-1].stderr
    assert [r.report["reason"] for r in runs] == ["NoChanges", "NoChanges"]
    assert lane.dst("SELECT count(*) FROM prices WHERE id = 1001") == [(1,)]


def test_under_soft_deletes_only_live_rows_count(lane: Lane) -> None:
    load_prices(lane, 1000)
    lane.dst("ALTER TABLE prices ADD COLUMN deleted_at timestamptz")
    lane.spec["spec"]["destination"].update(deletes="soft", softDeleteColumn="deleted_at")
    assert lane.run("run").code == 0
    lane.dst(PHANTOMS.format(first=1001, last=1005))
    lane.dst("UPDATE prices SET deleted_at = now() WHERE id > 1002")  # stamped already

    refilled = lane.run("run")
    after = lane.run("run")

    assert refilled.code == 0, refilled.stderr
    assert refilled.report["absentRows"] == {"sampled": 1002, "absent": 2}
    assert (after.code, after.report["apply"]["deleted"]) == (0, 2), after.stderr
    assert lane.dst("SELECT count(*) FROM prices WHERE id > 1000 AND deleted_at IS NULL") \
        == [(0,)]


def test_a_partitioned_destination_is_sampled(lane: Lane) -> None:
    partitioned_destination(lane)
    assert lane.run("run").code == 0
    lane.dst(PHANTOMS.format(first=1001, last=1010))

    refilled = lane.run("run")
    after = lane.run("run")

    assert refilled.code == 0, refilled.stderr
    assert refilled.report["absentRows"] == {"sampled": 1010, "absent": 10}
    assert (after.code, after.report["apply"]["deleted"]) == (0, 10), after.stderr


def runs(lane: Lane, count: int, env: dict[str, str] | None = None) -> list[JobResult]:
    """``count`` runs (with ``env`` added to the job's), each of which must exit 0."""
    results = []
    for _ in range(count):
        result = lane.run("run", env=env)
        assert result.code == 0, result.stderr[-3000:]
        results.append(result)
    return results


def sku_keyed(lane: Lane, source_key: str, destination_key: str) -> None:
    """300 rows keyed on sku ('sku-1'...) of type ``source_key`` and ``destination_key``,
    applied."""
    for db, key in ((lane.src, source_key), (lane.dst, destination_key)):
        db(f"CREATE TABLE prices (sku {key} PRIMARY KEY, title text, "
           "updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO prices SELECT 'sku-' || g, 't', now() - interval '1 day' "
             "+ g * interval '1 ms' FROM generate_series(1, 300) g")
    lane.spec["spec"]["source"]["primaryKey"] = ["sku"]
    assert lane.run("run").code == 0


# versions that do not order across rows: a per-row counter, and an unconstrained numeric,
# which T holds as text (whose order is not the values')
UNORDERED_VERSIONS = {"counter": ("bigint NOT NULL DEFAULT 1", "counter"),
                      "numeric as text": ("numeric NOT NULL DEFAULT 0", "monotonic")}


def unordered_version(lane: Lane, kind: str, rows: int = 300) -> None:
    """``rows`` rows with version column v of ``kind`` (:data:`UNORDERED_VERSIONS`), applied."""
    column, version_kind = UNORDERED_VERSIONS[kind]
    load_prices(lane, rows)
    lane.both(f"ALTER TABLE prices ADD COLUMN v {column}")
    lane.spec["spec"]["source"].update(versionColumn="v", versionKind=version_kind)
    assert lane.run("run").code == 0


@pytest.mark.parametrize("kind", UNORDERED_VERSIONS)
def test_the_event_lanes_inserts_a_lagging_replica_lacks_cost_no_refill(
        lane: Lane, kind: str) -> None:
    """Where versions do not order across rows, nothing tells a row no snapshot had from
    the event lane's insert that a lagging replica (the source here) lacks yet: with steady
    inserts, refilling at the first sight would refill every run (review). By the next run
    the replica has it."""
    unordered_version(lane, kind)

    reasons = []
    for i in range(3):
        new = f"({1001 + i}, 'sku-new', 1, 'EUR', 'new', '2026-01-01+00', 1)"
        lane.dst(f"INSERT INTO prices VALUES {new}")  # the event lane, from the primary
        reasons.append(runs(lane, 1)[0].report["reason"])
        lane.src(f"INSERT INTO prices VALUES {new}")  # the replica replays it

    assert reasons == ["NoChanges", "Applied", "Applied"], reasons
    assert lane.table_text("destination") == lane.table_text("source")


@pytest.mark.parametrize("kind", UNORDERED_VERSIONS)
def test_rows_seen_twice_are_refilled_and_deleted(lane: Lane, kind: str) -> None:
    """The first run that finds them stores them with its snapshot; the next one finds
    them still there at the same version, and T and the source still without them, and
    refills; the one after deletes them."""
    unordered_version(lane, kind, rows=1000)
    lane.dst(PHANTOMS.format(first=1001, last=1020).replace("days'", "days', 7"))

    seen, again, after = runs(lane, 3)

    assert (seen.report["reason"], "absentRows" in seen.report) == ("NoChanges", False)
    assert "20 sampled row(s) of public.prices have a key the source and snapshot" in seen.stderr
    assert again.report["reason"] == "Refilled", again.stderr[-3000:]
    assert again.report["absentRows"] == {"sampled": 1020, "absent": 20}
    assert again.report["apply"]["pendingDeletes"] == 20
    assert (after.report["reason"], after.report["apply"]["deleted"]) == ("Applied", 20)
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_row_changed_since_it_was_seen_is_not_counted(lane: Lane) -> None:
    """A row the event lane changed since the last run found it is the event lane's: the
    primary has it, whatever the replica lacks."""
    unordered_version(lane, "counter")
    lane.dst(PHANTOMS.format(first=301, last=305).replace("days'", "days', 1"))
    assert "5 sampled row(s)" in runs(lane, 1)[0].stderr
    lane.dst("UPDATE prices SET v = 2, title = 'changed' WHERE id > 300")

    result = runs(lane, 1)[0]

    assert result.report["reason"] == "NoChanges" and "absentRows" not in result.report


def test_under_warn_rows_seen_twice_are_reported_run_after_run(lane: Lane) -> None:
    unordered_version(lane, "counter")
    lane.spec["spec"]["destination"]["lostRows"] = "warn"
    lane.dst(PHANTOMS.format(first=301, last=305).replace("days'", "days', 1"))

    results = runs(lane, 3)

    assert [r.report.get("absentRows") for r in results] == [
        None, {"sampled": 305, "absent": 5}, {"sampled": 305, "absent": 5}]
    assert lane.dst("SELECT count(*) FROM prices") == [(305,)]


def test_a_dry_run_stores_nothing_to_look_at_again(lane: Lane) -> None:
    unordered_version(lane, "counter")
    lane.dst(PHANTOMS.format(first=301, last=305).replace("days'", "days', 1"))

    dry = lane.run("run", "--dry-run")
    stored = sorted(p.name for p in lane.work.rglob("absent-candidates.parquet"))
    first, second = runs(lane, 2)

    assert dry.code == 0, dry.stderr[-3000:]
    assert stored == []
    assert (first.report["reason"], second.report["reason"]) == ("NoChanges", "Refilled")


@pytest.fixture
def sync_role(lane: Lane) -> Iterator[dict[str, str]]:
    """A destination role with the grants a run needs on prices only; the env that makes a
    run use it."""
    database = lane.destination.rsplit("/", 1)[1]
    lane.dst("CREATE ROLE syncer LOGIN PASSWORD 'pw-5e1a'")
    lane.dst(f'GRANT TEMPORARY, CONNECT ON DATABASE "{database}" TO syncer')
    try:
        yield {"TABLESYNC_DESTINATION_URI":
               lane.destination.replace("postgres:postgres@", "syncer:pw-5e1a@")}
    finally:
        lane.dst("DROP OWNED BY syncer; DROP ROLE syncer")


def test_a_referencing_table_the_role_cannot_read_stops_no_run(
        lane: Lane, sync_role: dict[str, str]) -> None:
    """Another team's table references prices, with no grant to the sync role: rows the
    source lacks are not looked for (which rows it holds is unknown), and the runs go on,
    rather than fail on 'permission denied' (review)."""
    steady_with_phantoms(lane, rows=300, phantoms=1)
    lane.dst("GRANT SELECT, INSERT, UPDATE, DELETE ON prices TO syncer")
    lane.dst("CREATE TABLE orders (id int PRIMARY KEY, price_id bigint REFERENCES prices)")
    lane.dst("INSERT INTO orders VALUES (1, 7)")

    result = lane.run("run", env=sync_role)

    assert result.code == 0, result.stderr[-3000:]
    assert result.report["reason"] == "NoChanges"


def test_a_row_row_level_security_hides_the_reference_to_is_not_counted(
        lane: Lane, sync_role: dict[str, str]) -> None:
    """A referencing table whose policy shows the sync role none of its rows: its reference
    to the phantom is unseen, but the foreign key holds it; noted, its delete would fail
    every run after (review)."""
    steady_with_phantoms(lane, rows=300, phantoms=1)
    lane.dst("GRANT SELECT, INSERT, UPDATE, DELETE ON prices TO syncer")
    lane.dst("CREATE TABLE orders (id int PRIMARY KEY, price_id bigint REFERENCES prices, "
             "tenant text)")
    lane.dst("INSERT INTO orders VALUES (1, 301, 'acme')")
    lane.dst("GRANT SELECT ON orders TO syncer")
    lane.dst("ALTER TABLE orders ENABLE ROW LEVEL SECURITY")
    lane.dst("CREATE POLICY by_tenant ON orders TO syncer "
             "USING (tenant = current_setting('app.tenant', true))")

    runs(lane, 3, sync_role)  # (each must exit 0)

    assert lane.dst("SELECT count(*) FROM prices WHERE id = 301") == [(1,)]


def test_a_row_a_cascading_foreign_key_references_is_not_counted(lane: Lane) -> None:
    """orders references prices ON DELETE CASCADE, shipments references orders: the
    phantom's delete would cascade into orders and fail on shipments, every run after; and
    a guess should not delete rows of tables tablesync does not sync (review)."""
    steady_with_phantoms(lane, rows=300, phantoms=1)
    lane.dst("CREATE TABLE orders (id int PRIMARY KEY, "
             "price_id bigint REFERENCES prices ON DELETE CASCADE)")
    lane.dst("CREATE TABLE shipments (id int PRIMARY KEY, order_id int REFERENCES orders)")
    lane.dst("INSERT INTO orders VALUES (1, 301); INSERT INTO shipments VALUES (1, 1)")

    results = runs(lane, 3)  # (each must exit 0)

    assert [r.report["reason"] for r in results] == ["NoChanges"] * 3


def test_a_case_insensitive_destination_key_is_not_sampled(lane: Lane) -> None:
    """The destination's key has a nondeterministic collation: 'SKU-1' (a re-cased key the
    event lane upserted onto the old row) is absent at the source and in T byte for byte,
    but equals T's 'sku-1' there, so a refill would not note it: without the check every
    run would refill."""
    lane.dst("CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', "
             "deterministic = false)")
    sku_keyed(lane, "text", "text COLLATE ci")
    lane.dst("UPDATE prices SET sku = upper(sku) WHERE sku IN (SELECT 'sku-' || g "
             "FROM generate_series(1, 10) g)")

    results = runs(lane, 2)

    assert [r.report["reason"] for r in results] == ["NoChanges", "NoChanges"]
    assert "have a nondeterministic collation" in results[0].stderr


def test_a_row_a_foreign_key_onto_its_partition_holds_is_not_counted(lane: Lane) -> None:
    """A table of the destination's own references one partition (REFERENCES prices_new):
    the held row is neither counted nor noted, so no run fails on its delete."""
    partitioned_destination(lane)
    assert lane.run("run").code == 0
    lane.dst(PHANTOMS.format(first=1001, last=1010))
    lane.dst("CREATE TABLE orders (id int PRIMARY KEY, price_id bigint REFERENCES prices_new)")
    lane.dst("INSERT INTO orders VALUES (1, 1001)")

    refilled, after, quiet = runs(lane, 3)

    assert refilled.report["absentRows"]["absent"] == 9
    assert refilled.report["apply"]["pendingDeletes"] == 9
    assert (after.report["apply"]["deleted"], quiet.report["reason"]) == (9, "NoChanges")
    assert lane.dst("SELECT id FROM prices WHERE id > 1000") == [(1001,)]


def test_a_key_the_sources_type_refuses_is_one_the_source_lacks(lane: Lane) -> None:
    """A domain of the same name on both sides, stricter at the source: the destination's
    '-phantom' fails the cast (check_violation) in the look-up of all keys at once, so each
    is looked up alone, and that one counts as absent."""
    lane.src("CREATE DOMAIN sku_code AS text CHECK (VALUE ~ '^[a-z]')")
    lane.dst("CREATE DOMAIN sku_code AS text")
    sku_keyed(lane, "sku_code", "sku_code")
    lane.dst("INSERT INTO prices VALUES ('-phantom', 'p', now() - interval '2 days')")

    refilled, after = runs(lane, 2)

    assert refilled.report["absentRows"] == {"sampled": 301, "absent": 1}
    assert after.report["apply"]["deleted"] == 1
    assert lane.table_text("destination", order="sku") == lane.table_text("source", order="sku")


def test_a_composite_key_with_text_settings_of_its_own(lane: Lane) -> None:
    """A key of natively read and text-read types; the source's session prints bytea as
    escape, and the two TimeZones differ (helper review)."""
    src_db = lane.source.rsplit("/", 1)[1].split("?")[0]
    dst_db = lane.destination.rsplit("/", 1)[1].split("?")[0]
    lane.src(f"ALTER DATABASE {src_db} SET bytea_output = 'escape'")
    lane.src(f"ALTER DATABASE {src_db} SET TimeZone = 'America/Caracas'")
    lane.dst(f"ALTER DATABASE {dst_db} SET TimeZone = 'Asia/Kathmandu'")
    lane.both("CREATE TABLE prices (b bytea, ip inet, r tstzrange, ts timestamptz, nu numeric, "
              "f float4, updated_at timestamptz NOT NULL, PRIMARY KEY (b, ip, r, ts, nu, f))")
    rows = ("SELECT decode('5c' || lpad(to_hex(g), 4, '0') || 'ff', 'hex'), "
            "('10.0.0.' || (g % 250))::inet, tstzrange('2026-01-01+00'::timestamptz + g * "
            "interval '1 h', NULL), '2026-01-01+00'::timestamptz + g * interval '1 us', "
            "g * 1.25, (g + 0.1)::float4, now() - interval '{age}' + g * interval '1 ms' "
            "FROM generate_series({a}, {b}) g")
    lane.src(f"INSERT INTO prices {rows.format(a=1, b=300, age='1 day')}")
    lane.spec["spec"]["source"]["primaryKey"] = ["b", "ip", "r", "ts", "nu", "f"]
    assert lane.run("run").code == 0
    lane.dst(f"INSERT INTO prices {rows.format(a=301, b=310, age='2 days')}")

    refilled, after, quiet = runs(lane, 3)

    assert refilled.report["absentRows"] == {"sampled": 310, "absent": 10}
    assert after.report["apply"]["deleted"] == 10
    assert quiet.report["reason"] == "NoChanges"


def test_a_referencing_table_in_a_schema_the_role_cannot_use_stops_no_run(
        lane: Lane, sync_role: dict[str, str]) -> None:
    """Another team's table, in its own schema, references prices; its table grants SELECT
    to PUBLIC but its schema gives the sync role no USAGE. has_table_privilege() says yes,
    and the sample's NOT EXISTS on billing.orders failed with 'permission denied for
    schema', every run (third review)."""
    steady_with_phantoms(lane, rows=300, phantoms=1)
    lane.dst("GRANT SELECT, INSERT, UPDATE, DELETE ON prices TO syncer")
    lane.dst("CREATE SCHEMA billing")
    lane.dst("CREATE TABLE billing.orders (id int PRIMARY KEY, "
             "price_id bigint REFERENCES public.prices)")
    lane.dst("GRANT SELECT ON billing.orders TO PUBLIC")  # (no USAGE ON SCHEMA billing)
    lane.dst("INSERT INTO billing.orders VALUES (1, 7)")

    runs(lane, 2, sync_role)  # (each must exit 0)


def test_a_foreign_key_onto_the_partitioned_table_the_destination_is_a_partition_of(
        lane: Lane) -> None:
    """The destination is one partition (public.prices) of a partitioned table that another
    table references. The foreign key's pg_constraint row names the parent (conparentid 0);
    the one naming prices is a clone (conparentid <> 0), and pg_partition_tree(prices) goes
    down, not up: the referenced phantom was counted and noted, and its delete failed the
    next run and every run after (third review)."""
    lane.src(PRICES_DDL)
    lane.dst(PRICES_DDL.replace("CREATE TABLE prices", "CREATE TABLE prices_all")
             .replace("updated_at timestamptz NOT NULL)",
                      "updated_at timestamptz NOT NULL) PARTITION BY RANGE (id)"))
    lane.dst("CREATE TABLE prices PARTITION OF prices_all FOR VALUES FROM (0) TO (MAXVALUE)")
    lane.src("INSERT INTO prices SELECT g, 'sku-' || g, 1, 'EUR', 't', now() - interval '1h' "
             "FROM generate_series(1, 300) g")
    assert lane.run("run").code == 0
    lane.dst(PHANTOMS.format(first=301, last=305))
    lane.dst("CREATE TABLE orders (id int PRIMARY KEY, price_id bigint REFERENCES prices_all)")
    lane.dst("INSERT INTO orders VALUES (1, 301)")

    runs(lane, 3)  # (each must exit 0)

    assert lane.dst("SELECT id FROM prices WHERE id > 300") == [(301,)]


def test_a_referencing_column_of_another_collation_stops_no_run(lane: Lane) -> None:
    """orders.sku (an ICU collation) references prices.sku (COLLATE "C"): a valid foreign
    key, but _notable's `f.sku = d.sku` had two implicit collations ('could not determine
    which collation to use'): the sample failed every run, a bootstrap or refill too (third
    review). The comparison takes the referenced column's collation."""
    sku_keyed(lane, "text", 'text COLLATE "C"')
    lane.dst('CREATE TABLE orders (id int PRIMARY KEY, '
             'sku text COLLATE "und-x-icu" REFERENCES prices)')
    lane.dst("INSERT INTO orders VALUES (1, 'sku-7')")
    lane.dst("INSERT INTO prices VALUES ('phantom', 'p', now() - interval '2 days')")

    results = runs(lane, 3)  # (each must exit 0)

    assert [r.report["reason"] for r in results] == ["Refilled", "Applied", "NoChanges"]
    assert lane.table_text("destination", order="sku") == \
        lane.table_text("source", order="sku")


def test_a_bootstrap_with_a_referencing_column_of_another_collation(lane: Lane) -> None:
    """The same foreign key at a bootstrap: _absent_rows runs _notable's condition inside
    the apply's transaction, so the whole bootstrap failed."""
    for db, key in ((lane.src, "text"), (lane.dst, 'text COLLATE "C"')):
        db(f"CREATE TABLE prices (sku {key} PRIMARY KEY, title text, "
           "updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO prices SELECT 'sku-' || g, 't', now() - interval '1 day' "
             "FROM generate_series(1, 50) g")
    lane.spec["spec"]["source"]["primaryKey"] = ["sku"]
    lane.dst("INSERT INTO prices VALUES ('sku-7', 'old', now() - interval '2 days'), "
             "('phantom', 'p', now() - interval '2 days')")
    lane.dst('CREATE TABLE orders (id int PRIMARY KEY, '
             'sku text COLLATE "und-x-icu" REFERENCES prices)')
    lane.dst("INSERT INTO orders VALUES (1, 'sku-7')")

    result = lane.run("run")

    assert result.code == 0, result.stderr[-3000:]
    assert result.report["reason"] == "Bootstrapped"


def test_a_lock_on_a_referencing_table_does_not_hold_the_run_up(lane: Lane) -> None:
    """Another team's table that references prices, locked for a migration: the sample,
    which reads it, gives up after a moment (lock_timeout) and the run goes on without it,
    where it waited for the lock before."""
    steady_with_phantoms(lane, rows=300, phantoms=1)
    lane.dst("CREATE TABLE orders (id int PRIMARY KEY, price_id bigint REFERENCES prices)")
    with psycopg.connect(lane.destination) as migration:
        migration.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")

        result = lane.run("run", timeout=60)  # (it waited for the lock)

    assert result.code == 0, result.stderr[-3000:]
    assert result.report["reason"] == "NoChanges"
    assert "were not looked for this run" in result.stderr
    assert "lock timeout" in result.stderr


def _read_rows(lane: Lane, table: str) -> int:
    """Rows sequential and sample scans of ``table`` returned so far (pg_stat_user_tables;
    the job's sessions have ended, which flushes their counts)."""
    return _stats(lane, table)[0]


def _stats(lane: Lane, table: str) -> tuple[int, int]:
    """(seq_tup_read, seq_scan) of ``table``: rows returned by sequential and sample scans,
    and the number of sequential scans (a sample scan is not one)."""
    row = lane.dst("SELECT coalesce(seq_tup_read, 0), coalesce(seq_scan, 0) "
                   f"FROM pg_stat_user_tables WHERE relname = '{table}'")
    return int(row[0][0]), int(row[0][1])


def _settle(lane: Lane) -> None:
    time.sleep(1.5)  # backends flush their table counts at exit, at most a second late


def soft_deleted_history(lane: Lane) -> None:
    """1,000 live rows under ``deletes: soft``, and 300,000 the destination holds stamped."""
    load_prices(lane, 1000)
    lane.dst("ALTER TABLE prices ADD COLUMN deleted_at timestamptz")
    lane.spec["spec"]["destination"].update(deletes="soft", softDeleteColumn="deleted_at")
    lane.dst("INSERT INTO prices SELECT g, 'sku-' || g, 1, 'EUR', 'gone', "
             "now() - interval '30 days', now() - interval '29 days' "
             "FROM generate_series(100001, 400000) g")


def test_a_soft_deleted_history_is_not_read_whole_every_run(lane: Lane) -> None:
    """deletes: soft keeps every deleted row. 1,000 live rows (T) and 300,000 stamped ones:
    the sample's TABLESAMPLE percent came from T's row count (100 %), so every steady run,
    with nothing to do, read the whole destination, more as history grows (fourth review).
    It comes from the larger of T's rows and the destination's estimate now."""
    soft_deleted_history(lane)
    lane.dst("VACUUM ANALYZE prices")
    database = lane.destination.rsplit("/", 1)[1].split("?")[0]
    # (a scan's rows in parallel workers count as one scan each: the arithmetic below)
    lane.dst(f"ALTER DATABASE {database} SET max_parallel_workers_per_gather = 0")
    assert lane.run("run").code == 0
    _settle(lane)
    read_before, scans_before = _stats(lane, "prices")
    total = 301_000

    result = lane.run("run")
    _settle(lane)
    read_after, scans_after = _stats(lane, "prices")
    # (a sequential scan, none since the lost-rows probe looks keys up by index, would be
    # another's: test_a_steady_run_does_not_read_a_big_destination_whole)
    sampled = read_after - read_before - (scans_after - scans_before) * total

    assert result.code == 0, result.stderr[-3000:]
    assert result.report["reason"] == "NoChanges"
    assert sampled < 20_000, f"the sample read {sampled} of the {total} rows of prices"


def test_a_steady_run_does_not_read_a_referencing_table_whole(lane: Lane) -> None:
    """Another team's order lines reference prices, without an index on price_id (Postgres
    does not make one). Nothing is absent, yet each steady run's sample reads every row of
    order_lines for its NOT EXISTS (_notable), to filter 1,000 rows none of which the source
    lacks: a cost that grew with someone else's table, every run (fourth review). The
    references are looked up for the few rows T and the source lack only."""
    load_prices(lane, 1000)
    lane.dst("CREATE TABLE order_lines (id bigint PRIMARY KEY, "
             "price_id bigint REFERENCES prices)")
    assert lane.run("run").code == 0
    lane.dst("INSERT INTO order_lines SELECT g, 1 + g % 1000 FROM generate_series(1, 300000) g")
    lane.dst("VACUUM ANALYZE order_lines")
    _settle(lane)
    before = _read_rows(lane, "order_lines")

    result = lane.run("run")
    _settle(lane)
    read = _read_rows(lane, "order_lines") - before

    assert result.code == 0, result.stderr[-3000:]
    assert result.report["reason"] == "NoChanges"
    assert read == 0, f"a steady run read {read} rows of order_lines"


def test_the_source_is_asked_only_about_keys_t_lacks(lane: Lane) -> None:
    """The destination holds a row whose key the source's domain refuses ('-phantom'),
    written there at a version above T's highest (or kept under lostRows: warn): the sample
    draws it every run, the look-up of all ~1,000 sampled keys at once fails on it, and each
    run then looks every sampled key up alone at the source (a statement and a savepoint
    each, ~3,000 round trips), though T (local, checked after) has all but one of them
    (fourth review). T is asked first now. The count of key casts the source's domain check
    makes shows it."""
    lane.src("CREATE SEQUENCE casts")
    lane.src("CREATE FUNCTION counted(v text) RETURNS boolean LANGUAGE sql VOLATILE AS "
             "$$ SELECT nextval('casts') > 0 AND v ~ '^[a-z]' $$")
    lane.src("CREATE DOMAIN sku_code AS text CHECK (counted(VALUE))")
    lane.dst("CREATE DOMAIN sku_code AS text")
    for db in (lane.src, lane.dst):
        db("CREATE TABLE prices (sku sku_code PRIMARY KEY, title text, "
           "updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO prices SELECT 'sku-' || g, 't', now() - interval '1 day' "
             "+ g * interval '1 ms' FROM generate_series(1, 1000) g")
    lane.spec["spec"]["source"]["primaryKey"] = ["sku"]
    lane.spec["spec"]["destination"]["lostRows"] = "warn"
    assert lane.run("run").code == 0
    lane.dst("INSERT INTO prices VALUES ('-phantom', 'p', now() - interval '2 days')")
    assert lane.run("run").code == 0  # (warned: it stays)
    before = lane.src("SELECT last_value FROM casts")[0][0]

    result = lane.run("run")
    casts = lane.src("SELECT last_value FROM casts")[0][0] - before

    assert result.code == 0, result.stderr[-3000:]
    assert result.report["absentRows"] == {"sampled": 1001, "absent": 1}
    assert casts < 50, f"the source cast {casts} sampled keys"


@pytest.mark.parametrize("parallel", [0, 2])
def test_a_steady_run_does_not_read_a_big_destination_whole(lane: Lane, parallel: int) -> None:
    """1,000 live rows (T) and 300,000 soft-deleted ones, statistics fresh: a steady run with
    nothing to do must not read every row of the destination. With parallel query (the
    server default, 2 workers per gather) the lost-rows probe (apply.missing_keys) plans
    both its look-ups as a Gather over a Parallel Seq Scan of the destination (Materialized,
    joined onto the 1,000 staged keys): two whole reads every run, more as history grows
    (fifth review). missing_keys kept random_page_cost at the server's 4 (the apply caps it
    at 1.1); now it caps it too."""
    soft_deleted_history(lane)
    database = lane.destination.rsplit("/", 1)[1].split("?")[0]
    lane.dst(f"ALTER DATABASE {database} SET max_parallel_workers_per_gather = {parallel}")
    assert lane.run("run").code == 0
    lane.dst("VACUUM ANALYZE prices")  # (statistics with the 1,000 live rows)
    _settle(lane)
    read_before, scans_before = _stats(lane, "prices")

    result = lane.run("run")
    _settle(lane)
    read_after, scans_after = _stats(lane, "prices")

    assert result.code == 0, result.stderr[-3000:]
    assert result.report["reason"] == "NoChanges"
    scans, read = scans_after - scans_before, read_after - read_before
    assert scans == 0 and read < 20_000, f"{scans} sequential scans read {read} rows"


def test_a_referencing_table_with_a_percent_sign_in_its_name(lane: Lane) -> None:
    """Another team's table "order%lines" references prices (not the phantom). 17ec02a
    moved _notable's condition, which names that table, into a psycopg statement with
    parameters (apply.notable): psycopg read '%l' as a placeholder and refused the statement,
    so every run warned and the phantom was never found (fifth review)."""
    steady_with_phantoms(lane, rows=300, phantoms=1)
    lane.dst('CREATE TABLE "order%lines" (id int PRIMARY KEY, '
             'price_id bigint REFERENCES prices)')
    lane.dst('INSERT INTO "order%lines" VALUES (1, 7)')

    refilled, after = runs(lane, 2)

    assert "were not looked for this run" not in refilled.stderr, refilled.stderr[-2000:]
    assert refilled.report["reason"] == "Refilled"
    assert after.report["apply"]["deleted"] == 1


PERCENT_DDL = ('CREATE TABLE prices ("id%" bigint PRIMARY KEY, title text, '
               "updated_at timestamptz NOT NULL)")


def percent_keyed_and_applied(lane: Lane) -> None:
    """300 rows keyed on a column named "id%", applied."""
    lane.both(PERCENT_DDL)
    lane.src("INSERT INTO prices SELECT g, 't', now() - interval '1 day' "
             "FROM generate_series(1, 300) g")
    lane.spec["spec"]["source"]["primaryKey"] = ["id%"]
    assert lane.run("run").code == 0


def test_a_key_column_with_a_percent_sign_phantoms(lane: Lane) -> None:
    """A key column named "id%": dump.absent_at_source (psycopg, parameters) refused the
    statement on the '%"' in it, so the phantom was never found, with a warning every run
    (fifth review)."""
    percent_keyed_and_applied(lane)
    lane.dst("INSERT INTO prices VALUES (301, 'phantom', now() - interval '2 days')")

    refilled, after = runs(lane, 2)

    assert "were not looked for this run" not in refilled.stderr, refilled.stderr[-2000:]
    assert refilled.report["reason"] == "Refilled"
    assert after.report["apply"]["deleted"] == 1


def test_a_key_column_with_a_percent_sign_lost_rows(lane: Lane) -> None:
    """The same key column, and the destination lost rows: dump.present_at_source failed the
    same way, and nothing caught it there: every run failed (exit 2) instead of refilling
    (fifth review; older code)."""
    percent_keyed_and_applied(lane)
    lane.dst('DELETE FROM prices WHERE "id%" <= 100')

    refilled = lane.run("run")

    assert refilled.code == 0, refilled.stderr[-2000:]
    assert refilled.report["reason"] == "Refilled"
    assert lane.dst("SELECT count(*) FROM prices") == [(300,)]


def test_a_destination_emptied_after_rows_were_seen_is_refilled(lane: Lane) -> None:
    """The last run stored rows to look at again (absent-candidates.parquet); the destination
    is emptied since (TRUNCATE, or every row soft-deleted): the sample draws no row, and
    the run failed on the empty sample's missing key texts, every run, instead of refilling
    the lost rows (review)."""
    unordered_version(lane, "counter")
    lane.dst(PHANTOMS.format(first=301, last=305).replace("days'", "days', 1"))
    assert "5 sampled row(s)" in runs(lane, 1)[0].stderr
    lane.dst("TRUNCATE prices")

    result = lane.run("run")

    assert result.code == 0, result.stderr[-3000:]
    assert result.report["reason"] == "Refilled"
    assert lane.table_text("destination") == lane.table_text("source")
