"""Source setups that broke the sync: column names the diff used itself, session settings and
encodings that change values in transit, keys and versions of unusual types."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from tablesync_job.postgres import LATIN1_IN_SQL_ASCII
from tests.integration.job.lane import JOB, Lane, load_prices


def _recreate(uri: str, encoding: str) -> None:
    base, name = uri.rsplit("/", 1)
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.execute(f"CREATE DATABASE \"{name}\" ENCODING '{encoding}' LC_COLLATE 'C' "
                     "LC_CTYPE 'C' TEMPLATE template0")


def test_a_key_column_named_op(lane: Lane) -> None:
    """The diff's own op column shared the name: every count came out 0, a silent NoChanges."""
    lane.both('CREATE TABLE prices ("op" int PRIMARY KEY, x text, updated_at timestamptz '
              "NOT NULL)")
    lane.src("INSERT INTO prices SELECT g, 'v' || g, now() - interval '1 hour' "
             "FROM generate_series(1, 40) g")
    lane.spec["spec"]["source"]["primaryKey"] = ["op"]
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET x = 'changed', updated_at = now() WHERE op <= 2")
    lane.src("DELETE FROM prices WHERE op = 40")
    lane.src("INSERT INTO prices VALUES (41, 'new', now())")
    result = lane.run("run")
    assert result.code == 0, result.stderr
    assert result.report["delta"] == {"insert": 1, "update": 2, "delete": 1}
    assert lane.table_text("destination", order="op") == lane.table_text("source", order="op")


def test_a_column_with_the_reserved_prefix(lane: Lane) -> None:
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, _tablesync_op text, "
              "updated_at timestamptz NOT NULL)")
    result = lane.run("run")
    assert result.code == 2
    assert "_tablesync_op" in result.error_line and "reserves" in result.error_line


def test_floats_inside_text_values_keep_every_digit_whatever_the_source_settings(
        lane: Lane) -> None:
    """extra_float_digits = 0 on the source database printed 0.30000000000000004 as 0.3."""
    name = lane.source.rsplit("/", 1)[1]
    lane.src(f'ALTER DATABASE "{name}" SET extra_float_digits = 0')
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, f float8[], r real[], p point, "
              "updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO prices VALUES (1, ARRAY[0.1::float8 + 0.2, pi()], "
             "ARRAY[1.1::real / 3], point(0.1::float8 + 0.2, pi()), now())")
    assert lane.run("run").code == 0
    with psycopg.connect(lane.source) as conn:  # compared at full precision on both sides
        conn.execute("SET extra_float_digits = 3")
        source = conn.execute("SELECT t::text FROM prices t").fetchall()
    with psycopg.connect(lane.destination) as conn:
        conn.execute("SET extra_float_digits = 3")
        destination = conn.execute("SELECT t::text FROM prices t").fetchall()
    assert destination == source
    assert "0.30000000000000004" in destination[0][0]


def test_databases_in_another_encoding(lane: Lane) -> None:
    """LATIN1 on both sides: the driver passed LATIN1 bytes to Arrow as if UTF-8."""
    _recreate(lane.source, "LATIN1")
    _recreate(lane.destination, "LATIN1")
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, t text, a text[], "
              "updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO prices VALUES (1, 'héllo ÿ', ARRAY['à', 'b'], now())")
    result = lane.run("run")
    assert result.code == 0, result.stderr
    assert lane.table_text("destination") == lane.table_text("source")


def test_bytes_that_are_not_utf8_in_a_sql_ascii_database(lane: Lane) -> None:
    """A SQL_ASCII database stores any bytes; sent as UTF-8 the server refuses them mid-read.
    That was 'a retry may help' (75), forever: it is the data, an input error naming the way
    out, and the view it suggests syncs the Latin-1 text."""
    _recreate(lane.source, "SQL_ASCII")
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, t text, updated_at timestamptz NOT NULL)")
    with psycopg.connect(lane.source) as conn:
        conn.execute("SET client_encoding = 'SQL_ASCII'")
        conn.execute("INSERT INTO prices VALUES (1, 'plain', now()), "
                     "(2, convert_from('\\x68e96c6c6f'::bytea, 'SQL_ASCII'), now())")

    result = lane.run("run")

    assert result.code == 2, result.stderr
    assert result.error_line.startswith(
        "tablesync-job: source database: reading public.prices failed: a text value cannot be "
        "read as UTF-8 (ERROR:  invalid byte sequence for encoding \"UTF8\": 0xe9 0x6c 0x6c")
    assert LATIN1_IN_SQL_ASCII in result.error_line
    assert "Traceback" not in result.stderr
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]
    assert lane.state() is None

    converting = LATIN1_IN_SQL_ASCII.replace("col", "t")
    lane.src(f"CREATE VIEW prices_text AS SELECT id, {converting} AS t, updated_at FROM prices")
    lane.spec["spec"]["source"]["table"] = "public.prices_text"
    converted = lane.run("run")
    assert converted.code == 0, converted.stderr
    assert lane.dst("SELECT t FROM prices ORDER BY id") == [("plain",), ("héllo",)]


def test_a_source_whose_wal_position_functions_fail(lane: Lane) -> None:
    """A server may not offer the WAL position functions (a managed service): the dump goes on
    without the position (a savepoint keeps its transaction usable), and a snapshot behind is
    told by capturedAt. Here a function earlier on the database's search_path shadows it."""
    load_prices(lane, 10)
    lane.src("CREATE SCHEMA shadow; CREATE FUNCTION shadow.pg_current_wal_flush_lsn() "
             "RETURNS pg_lsn LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'not offered here'; "
             "END$$")
    database = lane.source.rsplit("/", 1)[1]
    lane.src(f'ALTER DATABASE "{database}" SET search_path = shadow, pg_catalog, public')

    first = lane.run("run")

    assert first.code == 0, first.stderr
    assert "pg_current_wal_flush_lsn() or pg_control_system() failed (" in first.stderr
    assert "not offered here" in first.stderr
    manifest = lane.snapshot_manifest(first.report["snapshotId"])
    assert manifest["lsn"] is None and manifest["rows"] == 10
    lane.src("UPDATE prices SET price = 1, updated_at = now() WHERE id = 1")
    second = lane.run("run")
    assert second.code == 0, second.stderr
    assert second.report["apply"]["updated"] == 1
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_json_key(lane: Lane) -> None:
    """The upsert ordered by the staged key, which is json (no ordering operator)."""
    lane.both("CREATE TABLE prices (id jsonb PRIMARY KEY, x int, updated_at timestamptz "
              "NOT NULL)")
    lane.src("""INSERT INTO prices VALUES ('{"a": 1}', 1, now()), ('[1, 2]', 2, now())""")
    result = lane.run("run")
    assert result.code == 0, result.stderr
    assert lane.table_text("destination", order="x") == lane.table_text("source", order="x")


@pytest.mark.parametrize(("pg_type", "value", "why"), [
    ("uuid", "gen_random_uuid()", "does not order changes"),
    ("boolean", "true", "does not order changes"),
    ("jsonb", "'1'", "does not order changes"),
    # no < operator: the apply's version guard failed, after the dump and diff were stored
    ("point", "point(1, 2)", "Postgres cannot order"),
    ("xml", "'<a/>'", "Postgres cannot order"),
    # no < either, and the dump's min/max failed first: an internal error, exit 75, each run
    ("json", "'1'", "Postgres cannot order"),
])
def test_a_version_that_does_not_order_is_refused_before_the_dump(
        lane: Lane, pg_type: str, value: str, why: str) -> None:
    lane.both(f"CREATE TABLE prices (id int PRIMARY KEY, rev {pg_type} NOT NULL)")
    lane.src(f"INSERT INTO prices VALUES (1, {value})")
    lane.spec["spec"]["source"]["versionColumn"] = "rev"
    result = lane.run("run")
    assert result.code == 2, result.stderr
    assert result.error_line.startswith(
        f"tablesync-job: spec.source.versionColumn: 'rev' is {pg_type}, which"), \
        result.error_line
    assert why in result.error_line
    assert lane.state() is None and not (lane.work / "store" / "snapshots").exists()


def test_a_seconds_precision_version_is_not_rounded_past_the_snapshot(lane: Lane) -> None:
    """The delete watermark was cast to timestamp(0), which rounds up: an event-lane write
    just after T counted as older and its row was deleted."""
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, v timestamp(0) NOT NULL)")
    lane.src("INSERT INTO prices SELECT g, localtimestamp - interval '1 hour' "
             "FROM generate_series(1, 40) g")
    lane.spec["spec"]["source"]["versionColumn"] = "v"
    assert lane.run("run").code == 0
    lane.src("DELETE FROM prices WHERE id = 5")
    assert lane.run("dump").code == 0
    diffed = lane.run("diff")
    assert diffed.code == 0, diffed.stderr
    root = Path(lane.storage_url[len("file://"):]) / "deltas" / diffed.report["deltaId"]
    watermark = json.loads((root / "manifest.json").read_text())["watermark"]
    # the event lane re-inserts row 5 after T, in the same second, rounded up as stored
    lane.dst("UPDATE prices SET v = date_trunc('second', %s::timestamp) + interval '1 second' "
             "WHERE id = 5", (watermark,))

    applied = lane.run("apply")

    assert applied.code == 0, applied.stderr
    assert lane.dst("SELECT count(*) FROM prices WHERE id = 5") == [(1,)]
    assert applied.report["apply"]["staleSkipped"] == 1


def test_a_key_duplicated_across_inherited_child_tables_is_named(lane: Lane) -> None:
    """Partitioning the old way (INHERITS): reading the parent reads its children, and its
    primary key does not span them; the duplicate failed the apply instead (SQLSTATE 21000),
    after the snapshot was stored."""
    load_prices(lane, 10)
    lane.src("CREATE TABLE prices_2025 () INHERITS (prices)")
    lane.src("INSERT INTO prices_2025 SELECT * FROM prices WHERE id = 7")
    result = lane.run("run")
    assert result.code == 2, result.stderr
    assert "spec.source.primaryKey: key (id=7) appears 2 times" in result.error_line
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]


def test_keys_only_postgres_finds_equal_name_the_key(lane: Lane) -> None:
    """A view has no unique index; DuckDB finds 1.0 and 1.00 different, Postgres equal."""
    lane.src("CREATE TABLE base (id numeric, updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO base VALUES (1.0, now()), (1.00, now()), (2, now())")
    lane.src("CREATE VIEW prices AS SELECT * FROM base")
    lane.dst("CREATE TABLE prices (id numeric PRIMARY KEY, updated_at timestamptz NOT NULL)")
    result = lane.run("run")
    assert result.code == 2
    assert "check spec.source.primaryKey" in result.error_line
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]


def test_a_date_version_warns_that_same_day_changes_wait_under_compare_version(
        lane: Lane) -> None:
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, title text, changed_on date NOT NULL)")
    lane.src("INSERT INTO prices VALUES (1, 'a', current_date)")
    lane.spec["spec"]["source"]["versionColumn"] = "changed_on"

    warned = lane.run("run")

    assert warned.code == 0, warned.stderr
    assert '"coarseVersion": "changed_on"' in warned.stderr
    assert "compare: content" in warned.stderr
    lane.spec["spec"]["source"]["compare"] = "content"
    quiet = lane.run("run")
    assert quiet.code == 0 and "coarseVersion" not in quiet.stderr


def test_the_duplicate_key_check_of_a_view_stays_within_memory_limit(lane: Lane) -> None:
    """A view has no unique index, so the dump groups every key to find a duplicate. DuckDB
    ran that with its own defaults: 80 % of the node's memory, no spill directory of the
    run's, so a large source got the pod OOMKilled whatever TABLESYNC_MEMORY_LIMIT said.
    3M keys of 66 characters: about 670 MB at peak before, some 260 MB now (the dump's own
    Arrow batches and Parquet writer included)."""
    lane.src("CREATE TABLE base (id text NOT NULL, updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO base SELECT 'k-' || md5(g::text) || md5((g + 1)::text), now() "
             "FROM generate_series(1, 3000000) g")
    lane.src("CREATE VIEW prices AS SELECT * FROM base")
    lane.dst("CREATE TABLE prices (id text PRIMARY KEY, updated_at timestamptz NOT NULL)")
    env = {**lane.env, "TABLESYNC_MEMORY_LIMIT": "64MB"}
    child = subprocess.Popen([JOB, "dump", "--spec", str(lane.spec_path())], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert child.stderr is not None
    stderr = child.stderr.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)

    assert child.returncode == 0, stderr
    assert usage.ru_maxrss < 400 * 1024, f"peak RSS {usage.ru_maxrss // 1024} MiB"


def test_a_statement_timeout_of_the_source_does_not_cancel_the_dump(lane: Lane) -> None:
    """A replica's database (or role) with a statement_timeout for its applications' queries:
    the dump, one statement over the whole table, was cancelled run after run, each time
    saying a retry may help."""
    lane.dst("CREATE TABLE prices (id int PRIMARY KEY, updated_at timestamptz NOT NULL)")
    lane.src("CREATE TABLE base (id int PRIMARY KEY, updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO base SELECT g, now() FROM generate_series(1, 100) g")
    # 100 rows at 10 ms each: a read of about a second
    lane.src("CREATE FUNCTION slow(id int) RETURNS int LANGUAGE sql AS "
             "'SELECT id FROM pg_sleep(0.01)'")
    lane.src("CREATE VIEW prices AS SELECT slow(id) AS id, updated_at FROM base")
    lane.set_for_database("source", "statement_timeout", "300ms")

    result = lane.run("run")

    assert result.code == 0, result.error_line
    assert lane.dst("SELECT count(*) FROM prices") == [(100,)]
