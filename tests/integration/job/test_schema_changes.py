"""The source's columns changed between two runs (ALTER TABLE on both sides, as a migration
does): retyped, added, renamed. The delta carries T's values exactly, in T's types, or the run
stops with exit 2 naming the field and the way out; never a value rounded on the way."""

from __future__ import annotations

import pytest

from tests.integration.job.lane import Lane, load_prices


def _versioned(lane: Lane, columns: str, rows: str) -> None:
    lane.both(f"CREATE TABLE prices (id int PRIMARY KEY, {columns}, v bigint NOT NULL)")
    lane.src(f"INSERT INTO prices VALUES {rows}")
    lane.spec["spec"]["source"]["versionColumn"] = "v"
    lane.spec["spec"]["guards"] = {"maxDeleteFraction": 1, "maxShrinkFraction": 1}
    assert lane.run("run").code == 0


def test_a_retyped_numeric_column_keeps_its_scale_beside_a_delete(lane: Lane) -> None:
    """DuckDB's UNION gave DECIMAL(38,10) and DECIMAL(38,0) the type DECIMAL(38,0): T's value
    arrived rounded, exit 0, and no later run found a difference."""
    _versioned(lane, "x numeric(38,0), f float8", "(1, NULL, NULL, 1), (2, NULL, NULL, 1)")
    lane.both("ALTER TABLE prices ALTER COLUMN x TYPE numeric(38,10), "
              "ALTER COLUMN f TYPE numeric(38,10)")
    lane.src("UPDATE prices SET x = 1234567890123456789.0123456789, "
             "f = 1234567890123456789.0123456789, v = 2 WHERE id = 1")
    lane.src("DELETE FROM prices WHERE id = 2")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["updated"] == 1 and result.report["apply"]["deleted"] == 1
    assert lane.table_text("destination") == lane.table_text("source") == [
        "(1,1234567890123456789.0123456789,1234567890123456789.0123456789,2)"]


def test_a_column_retyped_to_a_type_without_a_cast_beside_a_delete(lane: Lane) -> None:
    """int to date has no cast in DuckDB: it was an internal error (exit 75) on every run."""
    _versioned(lane, "x int", "(1, 1, 1), (2, 2, 1)")
    lane.both("ALTER TABLE prices ALTER COLUMN x TYPE date USING date '2026-01-01' + x")
    lane.src("UPDATE prices SET x = date '2030-05-06', v = 2 WHERE id = 1")
    lane.src("DELETE FROM prices WHERE id = 2")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert lane.table_text("destination") == lane.table_text("source") == ["(1,2030-05-06,2)"]


def test_a_key_widened_from_int_to_bigint_still_deletes(lane: Lane) -> None:
    _versioned(lane, "x text", "(1, 'a', 1), (2, 'b', 1), (3, 'c', 1)")
    lane.both("ALTER TABLE prices ALTER COLUMN id TYPE bigint")
    lane.src("DELETE FROM prices WHERE id = 2")
    lane.src("INSERT INTO prices VALUES (5000000000, 'big', 1)")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["deleted"] == 1 and result.report["apply"]["inserted"] == 1
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_key_narrowed_so_deleted_keys_change_value_stops_the_run(lane: Lane) -> None:
    """numeric(12,2) 1.50 is 2 as numeric(10,0): deleting "2" could delete another row, so the
    run stops rather than guess."""
    lane.both("CREATE TABLE prices (id numeric(12,2) PRIMARY KEY, v bigint NOT NULL)")
    lane.src("INSERT INTO prices VALUES (1.50, 1), (3, 1)")
    lane.spec["spec"]["source"]["versionColumn"] = "v"
    lane.spec["spec"]["guards"] = {"maxDeleteFraction": 1, "maxShrinkFraction": 1}
    assert lane.run("run").code == 0
    lane.both("ALTER TABLE prices ALTER COLUMN id TYPE numeric(10,0)")  # 1.50 becomes 2
    before = lane.table_text("destination")

    result = lane.run("run")

    assert result.code == 2, result.stderr
    assert "spec.source.primaryKey: key column id changed type" in result.error_line
    assert "delete state.json" in result.error_line and "deletes nothing" in result.error_line
    assert lane.table_text("destination") == before


def test_a_key_retyped_beyond_comparison_says_how_to_start_over(lane: Lane) -> None:
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO prices SELECT g, now() FROM generate_series(1, 10) g")
    assert lane.run("run").code == 0
    lane.both("ALTER TABLE prices ALTER COLUMN id TYPE text")
    result = lane.run("run")
    assert result.code == 2, result.stderr
    assert "key or version column(s) id (int32 -> string) changed type" in result.error_line
    assert "delete state.json" in result.error_line


def test_array_columns_widened_in_the_destination_first_take_the_sources_values(
        lane: Lane) -> None:
    """Widening the destination before the source (the safe order) works for arrays as for
    their elements: integer[] into bigint[], varchar(10)[] into varchar(50)[] and text[],
    numeric(10,2)[] into numeric(12,2)[]. Before, each was refused on every run, telling the
    user to make the column integer[] "(or wider)", as it was."""
    _versioned(lane, "a int[], b varchar(10)[], c varchar(10)[], d numeric(10,2)[]",
               "(1, '{1,NULL}', '{x}', '{y,NULL}', '{1.50}', 1), (2, NULL, NULL, NULL, NULL, 1)")
    lane.dst("ALTER TABLE prices ALTER COLUMN a TYPE bigint[], ALTER COLUMN b TYPE "
             "varchar(50)[], ALTER COLUMN c TYPE text[], ALTER COLUMN d TYPE numeric(12,2)[]")
    lane.src("UPDATE prices SET a = '{2147483647,-1}', b = '{abcdefghij}', c = '{z}', "
             "d = '{12345678.90,0.00}', v = 2 WHERE id = 2")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["updated"] == 1
    assert lane.table_text("destination") == lane.table_text("source") == [
        "(1,\"{1,NULL}\",{x},\"{y,NULL}\",{1.50},1)",
        "(2,\"{2147483647,-1}\",{abcdefghij},{z},\"{12345678.90,0.00}\",2)"]


def test_a_renamed_version_column_names_the_field(lane: Lane) -> None:
    """It was an internal error (a DuckDB binder message), exit 75, on every run."""
    _versioned(lane, "x text", "(1, 'a', 1), (2, 'b', 1)")
    lane.both("ALTER TABLE prices RENAME COLUMN v TO ver")
    lane.spec["spec"]["source"]["versionColumn"] = "ver"
    state = lane.state()

    result = lane.run("run")

    assert result.code == 2, result.stderr
    assert result.error_line.startswith(
        "tablesync-job: spec.source.versionColumn: column(s) ver are not in the last applied "
        "snapshot"), result.error_line
    assert "Traceback" not in result.stderr
    assert lane.state() == state


def test_a_column_added_at_the_source_is_backfilled_with_compare_version(lane: Lane) -> None:
    """Adding a column keeps every version: the diff saw no change and the destination kept
    NULL in it for good (``compare: content`` found it)."""
    _versioned(lane, "x text", "(1, 'a', 1), (2, 'b', 1), (3, 'c', 1)")
    lane.src("ALTER TABLE prices ADD COLUMN color text NOT NULL DEFAULT 'red'")
    lane.dst("ALTER TABLE prices ADD COLUMN color text")
    lane.src("UPDATE prices SET color = 'blue' WHERE id = 2")
    lane.dst("UPDATE prices SET color = 'red' WHERE id = 3")  # the event lane has it already
    lane.src("UPDATE prices SET x = 'a2', v = 2 WHERE id = 1")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["updated"] == 2 and result.report["apply"]["alreadyCurrent"] == 1
    assert lane.table_text("destination") == lane.table_text("source")
    assert lane.run("run").report["reason"] == "NoChanges"


@pytest.mark.parametrize("compare", ["version", "content"])
@pytest.mark.parametrize("how", ["dropped at the source first", "destination ahead"])
def test_a_column_added_at_the_source_as_null_clears_the_destinations_values(
        lane: Lane, compare: str, how: str) -> None:
    """The column added at the source holds NULL where the destination holds a value: one
    the destination kept when the source dropped the column (a later migration added it
    again), or its own default (it was migrated first). Only rows where T has a value were
    compared, so the destination kept values the source does not have, for good, exit 0."""
    _versioned(lane, "x text", "(1, 'a', 1), (2, 'b', 1), (3, 'c', 1)")
    lane.spec["spec"]["source"]["compare"] = compare
    if how == "dropped at the source first":
        lane.src("ALTER TABLE prices DROP COLUMN x")
        assert lane.run("run").code == 0
        lane.src("ALTER TABLE prices ADD COLUMN x text")
        lane.src("UPDATE prices SET x = 'c' WHERE id = 3")  # as the destination kept it
    else:
        lane.dst("ALTER TABLE prices ADD COLUMN color text DEFAULT 'red'")
        assert lane.run("run").code == 0
        lane.src("ALTER TABLE prices ADD COLUMN color text")
        lane.src("UPDATE prices SET color = 'red' WHERE id = 3")

    result = lane.run("run")

    assert result.code == 0, result.stderr
    assert result.report["apply"]["updated"] == 2 and result.report["apply"]["alreadyCurrent"] == 1
    assert lane.dst("SELECT id, v FROM prices ORDER BY id") == [(1, 1), (2, 1), (3, 1)]
    columns = "id, x, v" if how == "dropped at the source first" else "*"
    assert lane.dst(f"SELECT {columns} FROM prices ORDER BY id") == lane.src(
        f"SELECT {columns} FROM prices ORDER BY id")
    assert lane.run("run").report["reason"] == "NoChanges"


@pytest.mark.parametrize("how", ["--approve", "TABLESYNC_APPROVE_DELTA", "apply --delta"])
def test_a_column_dropped_after_a_guard_tripped_is_named_when_its_delta_is_approved(
        lane: Lane, how: str) -> None:
    """The tripped delta holds a column dropped since (on both sides). Before, applying it
    was an internal error (an AssertionError, exit 75, "a retry may help"), and under the
    operator's standing approval every later run failed so, naming nothing to do."""
    load_prices(lane, 100)
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id <= 50")
    tripped = lane.run("run")
    assert tripped.code == 3, tripped.stderr
    delta = tripped.report["deltaId"]
    state = lane.state()
    lane.both("ALTER TABLE prices DROP COLUMN title")

    if how == "--approve":
        result = lane.run("run", "--approve", delta)
    elif how == "apply --delta":
        result = lane.run("apply", "--delta", delta, "--approve", delta)
    else:
        result = lane.run("run", env={"TABLESYNC_APPROVE_DELTA": delta})

    assert "Traceback" not in result.stderr
    if how != "TABLESYNC_APPROVE_DELTA":
        assert result.code == 2, result.stderr
        assert "title" in result.error_line and delta in result.error_line
        assert lane.state() == state
        return
    # like a standing approval whose delta is gone: a normal run, which names a fresh delta
    assert result.code == 3, result.stderr
    assert result.report["deltaId"] != delta
    assert "title" in result.stderr
    fresh = lane.run("run", env={"TABLESYNC_APPROVE_DELTA": result.report["deltaId"]})
    assert fresh.code == 0, fresh.stderr
    assert lane.table_text("destination") == lane.table_text("source")
