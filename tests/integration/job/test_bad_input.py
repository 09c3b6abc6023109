"""Bad input: one clear line naming what is wrong, exit 2, destination and state unchanged."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.integration.job.lane import PRICES_DDL, Lane, _exec, load_prices
from tests.support.services import free_port, start_postgres


def _wrong_password(uri: str) -> str:
    parts = urlsplit(uri)
    netloc = parts.netloc.replace(":postgres@", ":not-the-password@")
    return urlunsplit(parts._replace(netloc=netloc))


def assert_untouched(lane: Lane, rows: int = 0) -> None:
    assert lane.dst("SELECT count(*) FROM prices") == [(rows,)]
    assert lane.state() is None


def test_wrong_destination_password(lane: Lane) -> None:
    load_prices(lane, 10)
    bad = _wrong_password(lane.destination)
    result = lane.run("run", env={"TABLESYNC_DESTINATION_URI": bad})
    assert result.code == 2
    assert "TABLESYNC_DESTINATION_URI" in result.error_line
    assert "password" in result.error_line
    assert "not-the-password" not in result.stdout + result.stderr
    assert_untouched(lane)


def test_wrong_source_password(lane: Lane) -> None:
    load_prices(lane, 10)
    result = lane.run("run", env={"TABLESYNC_SOURCE_URI": _wrong_password(lane.source)})
    assert result.code == 2
    assert "TABLESYNC_SOURCE_URI" in result.error_line
    assert "not-the-password" not in result.stdout + result.stderr
    assert_untouched(lane)


def test_wrong_source_password_on_one_host_of_several(lane: Lane) -> None:
    """A URI with several hosts (a replica set, target_session_attrs): the client reports
    each host's failure on a line of its own, the last host's first. The first host refused
    the password and the second was down, so the run exited 75, "a retry may help", run
    after run, though only fixing the password does."""
    load_prices(lane, 10)
    parts = urlsplit(_wrong_password(lane.source))
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    uri = urlunsplit(parts._replace(netloc=f"{parts.netloc},{down}"))
    result = lane.run("run", env={"TABLESYNC_SOURCE_URI": uri})
    assert result.code == 2, result.stderr[-3000:]
    assert result.error_line.startswith("tablesync-job: source database refused the login")
    assert "password authentication failed" in result.error_line
    assert "TABLESYNC_SOURCE_URI" in result.error_line
    assert "not-the-password" not in result.stdout + result.stderr
    assert_untouched(lane)


def test_a_source_whose_pg_hba_conf_rejects_the_connection(lane: Lane,
                                                          tmp_path: Path) -> None:
    """The source's pg_hba.conf has no entry that lets the user in (a replica's that lacks
    the job pods' network, or holds hostssl entries alone): the run exited 75, "a retry may
    help", run after run, though only the server's pg_hba.conf or the URI can change that."""
    load_prices(lane, 10)
    server = start_postgres(tmp_path / "walled")
    try:
        _exec(server.uri(), "CREATE ROLE walled LOGIN PASSWORD 'walled-pw'")
        hba = server.data_dir / "pg_hba.conf"
        hba.write_text("host all walled 127.0.0.1/32 reject\n" + hba.read_text())
        _exec(server.uri(), "SELECT pg_reload_conf()")
        time.sleep(0.5)
        result = lane.run("run", env={"TABLESYNC_SOURCE_URI": server.uri("postgres", "walled",
                                                                         "walled-pw")})
    finally:
        server.stop()
    assert result.code == 2, result.stderr[-3000:]
    assert result.error_line.startswith("tablesync-job: source database refused the "
                                        "connection (")
    assert "pg_hba.conf" in result.error_line and "TABLESYNC_SOURCE_URI" in result.error_line
    assert_untouched(lane)


def test_missing_table(lane: Lane) -> None:
    lane.dst("CREATE TABLE prices (id int PRIMARY KEY, updated_at timestamptz)")
    result = lane.run("run")
    assert result.code == 2
    assert "spec.source.table" in result.error_line
    assert "public.prices does not exist" in result.error_line
    assert_untouched(lane)


def test_missing_version_column(lane: Lane) -> None:
    load_prices(lane, 10)
    lane.spec["spec"]["source"]["versionColumn"] = "modified"
    result = lane.run("run")
    assert result.code == 2
    assert "spec.source.versionColumn" in result.error_line
    assert "'modified'" in result.error_line
    assert_untouched(lane)


def test_duplicate_key(lane: Lane) -> None:
    lane.src("CREATE TABLE prices (id int, updated_at timestamptz NOT NULL)")
    lane.dst("CREATE TABLE prices (id int PRIMARY KEY, updated_at timestamptz)")
    lane.src("INSERT INTO prices VALUES (1, now()), (2, now()), (2, now())")
    result = lane.run("run")
    assert result.code == 2
    assert "id=2" in result.error_line and "2 times" in result.error_line
    assert_untouched(lane)
    assert not list((lane.work / "store").rglob("manifest.json"))  # nothing stored


def test_null_key(lane: Lane) -> None:
    lane.src("CREATE TABLE prices (id int, updated_at timestamptz NOT NULL)")
    lane.dst("CREATE TABLE prices (id int PRIMARY KEY, updated_at timestamptz)")
    lane.src("INSERT INTO prices VALUES (1, now()), (NULL, now())")
    result = lane.run("run")
    assert result.code == 2
    assert "spec.source.primaryKey" in result.error_line and "NULL" in result.error_line
    assert_untouched(lane)


def test_destination_missing_a_column(lane: Lane) -> None:
    load_prices(lane, 10)
    lane.dst("ALTER TABLE prices DROP COLUMN title")
    result = lane.run("run")
    assert result.code == 2
    assert "spec.destination.table" in result.error_line and "title" in result.error_line
    assert lane.state() is None


def test_unknown_field_values_name_the_field(lane: Lane) -> None:
    lane.spec["spec"]["destination"]["deletes"] = "sometimes"
    result = lane.run("run")
    assert result.code == 2
    assert "spec.destination.deletes" in result.stderr


def test_missing_variable(lane: Lane) -> None:
    load_prices(lane, 10)
    result = lane.run("run", env={"TABLESYNC_SOURCE_URI": ""})
    assert result.code == 2
    assert "TABLESYNC_SOURCE_URI is not set" in result.error_line


def test_uris_from_secret_files_that_end_in_a_line_break_work(lane: Lane) -> None:
    """``kubectl create secret --from-file`` keeps the file's last line break: libpq read it
    into the database name and every run failed as transient ("a retry may help")."""
    load_prices(lane, 10)
    result = lane.run("run", env={"TABLESYNC_SOURCE_URI": lane.source + "\n",
                                  "TABLESYNC_DESTINATION_URI": lane.destination + "\r\n"})
    assert result.code == 0, result.stderr
    assert lane.dst("SELECT count(*) FROM prices") == [(10,)]


def test_unreachable_source_is_transient(lane: Lane) -> None:
    load_prices(lane, 10)
    result = lane.run("run", env={"TABLESYNC_SOURCE_URI":
                                  "postgresql://u:secretpw@127.0.0.1:1/db"})
    assert result.code == 75
    assert "retry" in result.error_line
    assert "secretpw" not in result.stdout + result.stderr


def test_destination_column_that_would_round_values(lane: Lane) -> None:
    load_prices(lane, 10)
    lane.dst("ALTER TABLE prices ALTER COLUMN price TYPE integer")
    result = lane.run("run")
    assert result.code == 2
    assert "'price' is numeric(12,2) in the source but integer" in result.error_line
    assert_untouched(lane)


def test_a_user_defined_type_made_differently_in_the_destination(lane: Lane) -> None:
    """Same type names, other definitions: the destination rounded 1.50 to 2 and swapped
    street and city, exit 0. Refused now, naming the column and both definitions."""
    lane.src("CREATE DOMAIN amount AS numeric(12,2); "
             "CREATE TYPE address AS (street text, city text)")
    lane.dst("CREATE DOMAIN amount AS numeric(12,0); "
             "CREATE TYPE address AS (city text, street text)")
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, updated_at timestamptz NOT NULL, "
              "price amount, shipping address, history address[])")
    lane.src("INSERT INTO prices VALUES (1, now(), 1.50, ('Main St', 'Springfield'), "
             "ARRAY[('Elm St', 'Shelbyville')::address])")

    result = lane.run("run")

    assert result.code == 2
    assert "'price' is amount in both" in result.error_line
    assert "(numeric(12,2)) in the source and (numeric(12,0))" in result.error_line
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]
    lane.dst("ALTER TABLE prices ALTER COLUMN price TYPE numeric; DROP DOMAIN amount; "
             "CREATE DOMAIN amount AS numeric(12,2); "
             "ALTER TABLE prices ALTER COLUMN price TYPE amount")
    result = lane.run("run")
    assert result.code == 2
    assert "'shipping' is address in both" in result.error_line
    assert "(street text, city text) in the source" in result.error_line
    lane.dst("ALTER TABLE prices DROP COLUMN shipping, DROP COLUMN history; DROP TYPE address; "
             "CREATE TYPE address AS (street text, city text); ALTER TABLE prices ADD COLUMN "
             "shipping address, ADD COLUMN history address[]")
    assert lane.run("run").code == 0
    order = "id"
    assert lane.table_text("destination", "prices", order) == lane.table_text(
        "source", "prices", order)


def test_destination_column_that_is_wider_is_fine(lane: Lane) -> None:
    load_prices(lane, 10)
    lane.dst("ALTER TABLE prices ALTER COLUMN price TYPE numeric(20,4)")
    assert lane.run("run").code == 0
    assert lane.dst("SELECT price::text FROM prices WHERE id = 1") == [("1.9900",)]


def test_timestamp_version_kind_on_a_number_column(lane: Lane) -> None:
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, v bigint NOT NULL)")
    lane.src("INSERT INTO prices SELECT g, 1 FROM generate_series(1, 10) g")
    lane.spec["spec"]["source"]["versionColumn"] = "v"
    lane.spec["spec"]["source"]["versionKind"] = "timestamp"
    result = lane.run("run")
    assert result.code == 2
    assert "spec.source.versionKind" in result.error_line
    assert "'v' is bigint" in result.error_line
    assert_untouched(lane)


@pytest.mark.parametrize("uri", ["not a uri", "postgresql://u@127.0.0.1:1/db?sslmode=bogus"])
def test_a_malformed_uri_is_an_input_error(lane: Lane, uri: str) -> None:
    load_prices(lane, 1)
    result = lane.run("run", env={"TABLESYNC_SOURCE_URI": uri})
    assert result.code == 2, result.error_line
    assert "TABLESYNC_SOURCE_URI is not a usable libpq URI" in result.error_line
    assert_untouched(lane)


def test_a_soft_delete_column_that_is_also_a_source_column(lane: Lane) -> None:
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, updated_at timestamptz NOT NULL, "
              "deleted_at timestamptz)")
    lane.src("INSERT INTO prices VALUES (1, now(), NULL)")
    lane.spec["spec"]["destination"]["deletes"] = "soft"
    result = lane.run("run")
    assert result.code == 2
    assert "spec.destination.softDeleteColumn: 'deleted_at' is also a source column" in \
        result.error_line
    assert_untouched(lane)


def test_columns_that_differ_only_in_case(lane: Lane) -> None:
    lane.both('CREATE TABLE prices (id int PRIMARY KEY, updated_at timestamptz NOT NULL, '
              '"Price" int, price int)')
    lane.src("INSERT INTO prices VALUES (1, now(), 1, 2)")
    result = lane.run("run")
    assert result.code == 2
    assert "'Price' and 'price'" in result.error_line and "spec.source.table" in \
        result.error_line
    assert_untouched(lane)


@pytest.mark.parametrize("limit", ["lots", "-5GB", "none", "0GB", "2"])
def test_a_memory_limit_that_is_not_a_positive_size(lane: Lane, limit: str) -> None:
    """DuckDB itself reads -5GB, none and -1 as "80 % of the machine", an OOM kill in a pod."""
    load_prices(lane, 10)
    result = lane.run("run", env={"TABLESYNC_MEMORY_LIMIT": limit})
    assert result.code == 2
    assert f"TABLESYNC_MEMORY_LIMIT={limit!r} is not a memory size" in result.error_line
    assert "spec.job.memoryLimit" in result.error_line
    assert result.report["reason"] == "InputError"
    assert_untouched(lane)


def test_a_diff_that_needs_more_memory_than_the_limit(lane: Lane) -> None:
    """Past memory_limit DuckDB spills what it can; what must fit and does not is an input
    error naming the setting to raise, and nothing is applied."""
    load_prices(lane, 20_000)
    assert lane.run("run").code == 0
    lane.src("UPDATE prices SET price = price + 1, updated_at = now() WHERE id % 3 = 0")
    state = lane.state()
    result = lane.run("run", env={"TABLESYNC_MEMORY_LIMIT": "1MB"})
    assert result.code == 2, result.stderr
    assert "the diff needs more memory than memory_limit=1MB" in result.report["error"]
    assert "raise spec.job.memoryLimit (TABLESYNC_MEMORY_LIMIT)" in result.report["error"]
    assert "Traceback" not in result.stderr
    assert lane.state() == state
    assert lane.table_text("destination") != lane.table_text("source")
    assert lane.run("run").code == 0
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_work_dir_that_cannot_be_created(lane: Lane) -> None:
    load_prices(lane, 10)
    result = lane.run("run", env={"TABLESYNC_WORK_DIR": "/proc/tablesync-scratch"})
    assert result.code == 2
    assert "TABLESYNC_WORK_DIR='/proc/tablesync-scratch' cannot hold" in result.error_line
    assert "Traceback" not in result.stderr
    assert_untouched(lane)


def test_a_work_dir_with_a_quote_in_its_path_works(lane: Lane) -> None:
    """The diff writes its delta under it with DuckDB's COPY ... TO '<path>': a quote there
    ended the literal, and every run failed as an internal error."""
    load_prices(lane, 10)
    work = str(lane.work / "o'brien")
    assert lane.run("run", env={"TABLESYNC_WORK_DIR": work}).code == 0
    lane.src("UPDATE prices SET price = 1, updated_at = now() WHERE id = 1")
    result = lane.run("run", env={"TABLESYNC_WORK_DIR": work})
    assert result.code == 0, result.stderr
    assert result.report["apply"]["updated"] == 1


def test_a_generated_version_column_in_the_destination(lane: Lane) -> None:
    load_prices(lane, 10)
    lane.dst("DROP TABLE prices")
    lane.dst("CREATE TABLE prices (id bigint PRIMARY KEY, sku text NOT NULL, "
             "price numeric(12,2), currency char(3), title text, updated_at timestamptz "
             "GENERATED ALWAYS AS ('2026-01-01 00:00+00'::timestamptz) STORED)")
    result = lane.run("run")
    assert result.code == 2
    assert "spec.destination.table: column 'updated_at'" in result.error_line
    assert "GENERATED ALWAYS AS (...) STORED" in result.error_line
    assert_untouched(lane)


def test_an_always_identity_outside_the_key_names_the_fix(lane: Lane) -> None:
    """An UPDATE may not set a GENERATED ALWAYS identity column: say how to change it."""
    lane.both("CREATE TABLE prices (id bigint PRIMARY KEY, "
              "seq bigint GENERATED ALWAYS AS IDENTITY, updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO prices (id, updated_at) VALUES (1, now())")
    result = lane.run("run")
    assert result.code == 2
    assert "column 'seq' of public.prices is GENERATED ALWAYS AS IDENTITY" in result.error_line
    assert 'ALTER COLUMN "seq" SET GENERATED BY DEFAULT' in result.error_line
    assert_untouched(lane)


def test_the_identity_fix_quotes_a_table_name_in_capitals(lane: Lane) -> None:
    """The ALTER TABLE it advises names the table as Postgres reads it: unquoted, Prices is
    prices, another table (or none)."""
    lane.both('CREATE TABLE "Prices" (id bigint PRIMARY KEY, '
              "seq bigint GENERATED ALWAYS AS IDENTITY, updated_at timestamptz NOT NULL)")
    lane.src('INSERT INTO "Prices" (id, updated_at) VALUES (1, now())')
    lane.spec["spec"]["source"]["table"] = lane.spec["spec"]["destination"]["table"] = "Prices"
    result = lane.run("run")
    assert result.code == 2
    assert ('ALTER TABLE "public"."Prices" ALTER COLUMN "seq" SET GENERATED BY DEFAULT'
            in result.error_line)
    assert lane.dst('SELECT count(*) FROM "Prices"') == [(0,)]


def test_a_destination_only_not_null_column_without_default(lane: Lane) -> None:
    load_prices(lane, 10)
    lane.dst("ALTER TABLE prices ADD COLUMN loaded_by text NOT NULL")
    result = lane.run("run")
    assert result.code == 2
    assert "NOT NULL column(s) loaded_by without a default" in result.error_line
    assert_untouched(lane)


def test_a_schema_the_source_role_may_not_use_names_the_grant(lane: Lane) -> None:
    """A server's own refusal (SQLSTATE 42501) is a missing grant, not a malformed URI: psycopg
    raises it as a ProgrammingError, which the URI check took for libpq's."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    database = lane.source.rsplit("/", 1)[1]
    lane.both("CREATE SCHEMA shop")
    lane.both(PRICES_DDL.replace("prices", "shop.prices"))
    lane.src(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-7c2b'")
    lane.src(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
    lane.spec["spec"]["source"]["table"] = "shop.prices"
    lane.spec["spec"]["destination"]["table"] = "shop.prices"
    try:
        result = lane.run("run", env={"TABLESYNC_SOURCE_URI": lane.source.replace(
            "postgres:postgres@", f"{role}:pw-7c2b@")})
    finally:
        lane.src(f"DROP OWNED BY {role}; DROP ROLE {role}")
    assert result.code == 2
    assert "permission denied for schema shop" in result.error_line
    assert "grant the role of TABLESYNC_SOURCE_URI" in result.error_line
    assert "libpq URI" not in result.error_line
    assert lane.state() is None


def test_an_enum_label_the_destination_lacks_names_the_statement_that_adds_it(
        lane: Lane) -> None:
    """The apply failed with Postgres's 'invalid input value for enum mood' alone: no word
    of which side lacks what, nor how to add it."""
    lane.src("CREATE TYPE mood AS ENUM ('happy', 'sad', 'it''s ok')")
    lane.dst("CREATE TYPE mood AS ENUM ('happy')")
    lane.both("CREATE TABLE prices (id int PRIMARY KEY, m mood, updated_at timestamptz NOT NULL)")
    lane.src("INSERT INTO prices VALUES (1, 'happy', now()), (2, 'sad', now())")

    result = lane.run("run")

    assert result.code == 2, result.stderr
    assert "the destination's enum type mood lacks a label" in result.error_line
    assert "ALTER TYPE mood ADD VALUE 'sad'" in result.error_line
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]
    lane.dst("ALTER TYPE mood ADD VALUE 'sad'")
    lane.src("INSERT INTO prices VALUES (3, 'it''s ok', now())")
    result = lane.run("run")
    assert "ALTER TYPE mood ADD VALUE 'it''s ok'" in result.error_line
    lane.dst("ALTER TYPE mood ADD VALUE 'it''s ok'")
    assert lane.run("run").code == 0
    assert lane.table_text("destination") == lane.table_text("source")


def test_a_not_null_destination_column_the_source_leaves_null_names_the_fix(
        lane: Lane) -> None:
    """Postgres's 'null value in column "title" ... violates not-null constraint' alone: it
    named the column, not which side to change nor how."""
    load_prices(lane, 10)
    lane.dst("ALTER TABLE prices ALTER COLUMN title SET NOT NULL")
    lane.src("UPDATE prices SET title = NULL WHERE id = 3")

    result = lane.run("run")

    assert result.code == 2, result.stderr
    assert 'the destination\'s column "title" is NOT NULL where the source holds NULL' \
        in result.error_line
    assert lane.dst("SELECT count(*) FROM prices") == [(0,)]
    lane.dst("ALTER TABLE prices ALTER COLUMN title DROP NOT NULL")
    assert lane.run("run").code == 0
    assert lane.table_text("destination") == lane.table_text("source")
