"""Destination setups a data engineer meets: triggers, constraints, keys, privileges.

Each either works, or fails before anything is applied with one line naming the fix (exit 2);
never a silent divergence, and never a transient error that retries forever.
"""

from __future__ import annotations

import pytest

from tests.integration.job.lane import PRICES_DDL, JobResult, Lane, load_prices

TOUCH = ("CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS "
         "$$ BEGIN NEW.updated_at = clock_timestamp(); RETURN NEW; END $$")


def refused_until_disabled(lane: Lane, change: str, message: str, disable: str) -> JobResult:
    """Make ``change`` at the source; the run is refused (exit 2) with ``message`` and the
    destination left as it was; after ``disable`` (in the destination) the run applies."""
    lane.src(change)
    before = lane.table_text("destination")

    result = lane.run("run")

    assert result.code == 2, result.stderr
    assert message in result.error_line
    assert lane.table_text("destination") == before
    lane.dst(disable)
    applied = lane.run("run")
    assert applied.code == 0, applied.stderr
    return applied


def test_a_trigger_that_rewrites_the_version_is_refused_not_silently_obeyed(
        lane: Lane) -> None:
    """A BEFORE UPDATE 'touch' trigger sets updated_at (the version) to the apply's clock: the
    guard would then skip a later source change with an earlier version, and report Applied."""
    load_prices(lane, 10)
    lane.dst(TOUCH)
    lane.dst("CREATE TRIGGER touch BEFORE UPDATE ON prices FOR EACH ROW "
             "EXECUTE FUNCTION touch()")
    assert lane.run("run").code == 0  # bootstrap inserts: the trigger is on UPDATE only
    refused_until_disabled(
        lane, "UPDATE prices SET title = 'second', updated_at = now() WHERE id <= 3",
        "a trigger on public.prices changed updated_at in 3 of the rows",
        "ALTER TABLE prices DISABLE TRIGGER touch")
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_trigger_that_leaves_the_version_alone_is_fine(lane: Lane) -> None:
    load_prices(lane, 10)
    lane.dst("ALTER TABLE prices ADD COLUMN loaded_at timestamptz")
    lane.dst("CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS "
             "$$ BEGIN NEW.loaded_at = clock_timestamp(); RETURN NEW; END $$")
    lane.dst("CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON prices FOR EACH ROW "
             "EXECUTE FUNCTION stamp()")
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET title = 'second', updated_at = now() WHERE id <= 3")
    result = lane.run("run")
    assert result.code == 0, result.stderr
    assert result.report["apply"]["updated"] == 3
    assert lane.dst("SELECT count(*) FROM prices WHERE loaded_at IS NULL") == [(0,)]


def test_a_trigger_that_skips_rows_is_refused_not_silently_obeyed(lane: Lane) -> None:
    """A BEFORE UPDATE trigger that returns NULL for some rows (rows frozen for an audit):
    the source's newer values never arrive, and the outcome counts lost the row (4 of 5
    changes accounted for), with the run reported Applied."""
    load_prices(lane, 10)
    lane.dst("CREATE FUNCTION hold_frozen() RETURNS trigger LANGUAGE plpgsql AS "
             "$$ BEGIN IF OLD.id = 3 THEN RETURN NULL; END IF; RETURN NEW; END $$")
    lane.dst("CREATE TRIGGER hold_frozen BEFORE UPDATE ON prices FOR EACH ROW "
             "EXECUTE FUNCTION hold_frozen()")
    assert lane.run("run").code == 0
    refused_until_disabled(
        lane, "UPDATE prices SET title = 'second', updated_at = now() WHERE id <= 5",
        "a trigger on public.prices skipped 1 of the rows the apply wrote",
        "DROP TRIGGER hold_frozen ON prices")
    assert lane.table_text("destination") == lane.table_text("source")


@pytest.mark.parametrize("deletes", ["apply", "soft"])
def test_a_trigger_that_skips_deletes_is_refused_not_counted_stale(lane: Lane,
                                                                   deletes: str) -> None:
    """A BEFORE DELETE trigger (or, for soft deletes, a BEFORE UPDATE one) that returns NULL
    for some rows (rows held for an audit): the row deleted at the source stayed, reported
    as stale-skipped and kept as a pending delete, as if the event lane held it newer; asked
    again every run, it stayed for good."""
    load_prices(lane, 100)
    event = "DELETE" if deletes == "apply" else "UPDATE"
    if deletes == "soft":
        lane.dst("ALTER TABLE prices ADD COLUMN deleted_at timestamptz")
        lane.spec["spec"]["destination"]["deletes"] = "soft"
    lane.dst("CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS "
             "$$ BEGIN IF OLD.id = 3 THEN RETURN NULL; END IF; "
             f"RETURN {'OLD' if event == 'DELETE' else 'NEW'}; END $$")
    lane.dst(f"CREATE TRIGGER hold BEFORE {event} ON prices FOR EACH ROW "
             "EXECUTE FUNCTION hold()")
    assert lane.run("run").code == 0
    applied = refused_until_disabled(lane, "DELETE FROM prices WHERE id IN (2, 3)",
                                     "a trigger on public.prices skipped 1 of the",
                                     "DROP TRIGGER hold ON prices")
    assert applied.report["apply"]["deleted"] == 2
    assert applied.report["apply"]["staleSkipped"] == 0


def test_a_destination_only_not_null_column_a_trigger_fills_is_fine(lane: Lane) -> None:
    """NOT NULL is checked after BEFORE INSERT triggers: a column without a default that a
    trigger fills (an audit stamp, a tenant id) takes every inserted row, so the table is not
    refused as one no row could be inserted into."""
    load_prices(lane, 10)
    lane.dst("ALTER TABLE prices ADD COLUMN loaded_at timestamptz NOT NULL")
    lane.dst("CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS "
             "$$ BEGIN NEW.loaded_at = clock_timestamp(); RETURN NEW; END $$")
    lane.dst("CREATE TRIGGER stamp BEFORE INSERT ON prices FOR EACH ROW "
             "EXECUTE FUNCTION stamp()")
    result = lane.run("run")
    assert result.code == 0, result.error_line
    assert lane.dst("SELECT count(*) FROM prices WHERE loaded_at IS NOT NULL") == [(10,)]
    lane.dst("DROP TRIGGER stamp ON prices")
    lane.src("INSERT INTO prices VALUES (11, 'sku-11', 1, 'EUR', 'new', now())")
    result = lane.run("run")
    assert result.code == 2
    assert "NOT NULL column(s) loaded_at without a default" in result.error_line


def test_deferrable_constraints_are_checked_at_commit(lane: Lane) -> None:
    """Two rows swap a unique value, and a parent is deleted while its child moves to another
    parent: each step alone breaks a constraint, the source's rows together do not."""
    ddl = ("CREATE TABLE prices (id int PRIMARY KEY, sku text NOT NULL UNIQUE DEFERRABLE, "
           "parent int REFERENCES prices (id) DEFERRABLE, updated_at timestamptz NOT NULL)")
    lane.both(ddl)
    lane.src("INSERT INTO prices VALUES (1, 'a', NULL, now()), (2, 'b', NULL, now()), "
             "(3, 'c', 1, now())")
    assert lane.run("run").code == 0
    lane.src("BEGIN; UPDATE prices SET sku = 'tmp', updated_at = now() WHERE id = 1; "
             "UPDATE prices SET sku = 'a', updated_at = now() WHERE id = 2; "
             "UPDATE prices SET sku = 'b', updated_at = now() WHERE id = 1; "
             "UPDATE prices SET parent = 2, updated_at = now() WHERE id = 3; "
             "DELETE FROM prices WHERE id = 1; COMMIT")
    lane.spec["spec"]["guards"] = {"maxDeleteFraction": 0.5}
    result = lane.run("run")
    assert result.code == 0, result.stderr
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_constraint_that_is_not_deferrable_is_named_with_its_detail(lane: Lane) -> None:
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, sku text NOT NULL UNIQUE, "
              "updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO prices VALUES (1, 'a', now()), (2, 'b', now())")
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET sku = 'c', updated_at = now() WHERE id = 2")
    lane.src("UPDATE prices SET sku = 'b', updated_at = now() WHERE id = 1")
    result = lane.run("run")
    assert result.code == 2
    line = result.error_line
    assert 'duplicate key value violates unique constraint "prices_sku_key"' in line
    assert "DETAIL: Key (sku)=(b) already exists." in line
    assert "make this constraint DEFERRABLE" in line
    assert "[libpq]" not in line


def test_a_unique_value_a_soft_deleted_row_keeps_is_named_as_such(lane: Lane) -> None:
    """Under deletes: soft a product deleted at the source stays, stamped, with its sku; the
    same sku created again under a new id breaks UNIQUE (sku) at every run. DEFERRABLE would
    not help (the two rows conflict at the commit too): the fix is a constraint that leaves
    stamped rows out."""
    load_prices(lane, 100)
    lane.dst("ALTER TABLE prices ADD COLUMN deleted_at timestamptz, ADD UNIQUE (sku)")
    lane.spec["spec"]["destination"]["deletes"] = "soft"
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id = 5")
    lane.src("INSERT INTO prices VALUES (1005, 'sku-5', 1, 'EUR', 'again', now())")

    result = lane.run("run")

    assert result.code == 2
    assert 'violates unique constraint "prices_sku_key"' in result.error_line
    assert ("as spec.destination.deletes is soft, a row deleted at the source stays stamped"
            in result.error_line)
    assert 'unique index ... WHERE "deleted_at" IS NULL' in result.error_line
    lane.dst("ALTER TABLE prices DROP CONSTRAINT prices_sku_key; "
             "CREATE UNIQUE INDEX ON prices (sku) WHERE deleted_at IS NULL")
    assert lane.run("run").code == 0
    assert lane.dst("SELECT id, deleted_at IS NULL FROM prices WHERE sku = 'sku-5' "
                    "ORDER BY id") == [(5, False), (1005, True)]


def test_keys_the_upsert_cannot_use_are_refused_up_front(lane: Lane) -> None:
    load_prices(lane, 5)
    for ddl, expected in (
            (f"{PRICES_DDL.replace('PRIMARY KEY', '')[:-1]}, PRIMARY KEY (id) DEFERRABLE)",
             "is DEFERRABLE, which ON CONFLICT cannot use"),
            (PRICES_DDL.replace("id bigint PRIMARY KEY", "id bigint") + "; "
             "CREATE UNIQUE INDEX ON prices (id, lower(sku))",
             "has no primary key or unique index on (id)"),
            (PRICES_DDL.replace("id bigint PRIMARY KEY", "id bigint") + "; "
             "CREATE UNIQUE INDEX ON prices (sku) INCLUDE (id)",
             "has no primary key or unique index on (id)")):
        lane.dst("DROP TABLE prices")
        lane.dst(ddl)
        result = lane.run("run")
        assert result.code == 2, ddl
        assert expected in result.error_line, (ddl, result.error_line)
    lane.dst("DROP TABLE prices")
    lane.dst(PRICES_DDL.replace("id bigint PRIMARY KEY", "id bigint") + "; "
             "ALTER TABLE prices ADD PRIMARY KEY (id) INCLUDE (updated_at)")
    assert lane.run("run").code == 0  # INCLUDE columns are not part of the key


def test_a_deferrable_key_is_refused_naming_a_fix_postgres_accepts(lane: Lane) -> None:
    """A DEFERRABLE key was refused with "ALTER CONSTRAINT ... NOT DEFERRABLE or add a plain
    unique index": Postgres refuses the first for a unique key ("is not a foreign key
    constraint"), and with the second beside it the run passed the check and failed in the
    apply (ON CONFLICT takes the deferrable key as an arbiter too). Both are refused up front
    now, naming the fix that works: drop the key and add it again."""
    load_prices(lane, 5)
    lane.dst("DROP TABLE prices")
    lane.dst(f"{PRICES_DDL.replace('PRIMARY KEY', '')[:-1]}, "
             "CONSTRAINT prices_pkey PRIMARY KEY (id) DEFERRABLE)")
    for extra in ("", "CREATE UNIQUE INDEX plain ON prices (id)"):
        if extra:
            lane.dst(extra)
        result = lane.run("run")
        assert result.code == 2
        assert "is DEFERRABLE, which ON CONFLICT cannot use" in result.error_line, extra
        assert "ALTER CONSTRAINT" not in result.error_line
        assert ('ALTER TABLE "public"."prices" DROP CONSTRAINT <its name>, ADD PRIMARY KEY '
                '("id")') in result.error_line
        assert lane.dst("SELECT count(*) FROM prices") == [(0,)]

    lane.dst("DROP INDEX plain")
    lane.dst('ALTER TABLE "public"."prices" DROP CONSTRAINT prices_pkey, ADD PRIMARY KEY ("id")')
    applied = lane.run("run")
    assert applied.code == 0, applied.error_line
    assert lane.table_text("destination") == lane.table_text("source")


@pytest.mark.parametrize(
    ("granted", "without_temporary", "named"),
    [("SELECT, INSERT, UPDATE", True, ['GRANT DELETE ON "public"."prices" TO "applier"',
                                        'GRANT TEMPORARY ON DATABASE "{database}" TO "applier"']),
     # the upsert's version guard and the deletes read the destination's rows: without
     # SELECT the apply failed on every run, after a dump, with no grant named
     ("INSERT, UPDATE, DELETE", False, ['GRANT SELECT ON "public"."prices" TO "applier"'])],
    ids=["delete-and-temporary", "select"])
def test_missing_privileges_are_named_before_anything_runs(
        lane: Lane, granted: str, without_temporary: bool, named: list[str]) -> None:
    load_prices(lane, 5)
    database = lane.destination.rsplit("/", 1)[1]
    lane.dst(f"CREATE ROLE applier LOGIN PASSWORD 'pw-9f2c'; GRANT {granted} ON prices TO "
             "applier")
    if without_temporary:
        lane.dst(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
    grants = [g.format(database=database) for g in named]
    try:
        uri = lane.destination.replace("postgres:postgres@", "applier:pw-9f2c@")
        result = lane.run("run", env={"TABLESYNC_DESTINATION_URI": uri})
        assert result.code == 2
        assert "role applier may not apply to public.prices" in result.error_line
        for grant in grants:
            assert grant in result.error_line
        assert lane.state() is None
        assert lane.dst("SELECT count(*) FROM prices") == [(0,)]
        lane.dst("; ".join(grants))  # what it names is all it needs
        assert lane.run("run", env={"TABLESYNC_DESTINATION_URI": uri}).code == 0
        assert lane.table_text("destination") == lane.table_text("source")
    finally:
        lane.dst("DROP OWNED BY applier; DROP ROLE applier")


def test_a_soft_delete_column_that_cannot_hold_the_time_or_null(lane: Lane) -> None:
    load_prices(lane, 5)
    lane.spec["spec"]["destination"].update(deletes="soft", softDeleteColumn="is_deleted")
    lane.dst("ALTER TABLE prices ADD COLUMN is_deleted boolean")
    result = lane.run("run")
    assert result.code == 2
    assert "spec.destination.softDeleteColumn: 'is_deleted' of public.prices is boolean" in (
        result.error_line)
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]


def test_a_view_as_the_destination(lane: Lane) -> None:
    load_prices(lane, 5)
    lane.dst("ALTER TABLE prices RENAME TO prices_base")
    lane.dst("CREATE MATERIALIZED VIEW prices AS SELECT * FROM prices_base")
    result = lane.run("run")
    assert result.code == 2
    assert "public.prices is a materialized view; the destination must be a table" in (
        result.error_line)


def test_a_statement_timeout_of_the_destination_does_not_cancel_the_apply(
        lane: Lane) -> None:
    """A destination database (or role) with a statement_timeout for its applications'
    queries: the upsert, one statement over the whole delta, was cancelled run after run,
    each time saying a retry may help."""
    load_prices(lane, 100)
    # 100 rows at 10 ms each: an upsert of about a second
    lane.dst("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
             "$$ BEGIN PERFORM pg_sleep(0.01); RETURN NEW; END $$")
    lane.dst("CREATE TRIGGER slow BEFORE INSERT ON prices FOR EACH ROW EXECUTE FUNCTION slow()")
    lane.set_for_database("destination", "statement_timeout", "300ms")

    result = lane.run("run")

    assert result.code == 0, result.error_line
    assert lane.table_text("destination") == lane.table_text("source")
