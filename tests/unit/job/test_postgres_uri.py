"""Connection strings: every form of their password is registered as a secret, and a URI that
parsers read differently (more than one '@' before the host) is refused before connecting.

The connection attempts are real libpq/ADBC ones to a closed port: no server is needed."""

from __future__ import annotations

import pytest

from tablesync_job import logs
from tablesync_job.errors import EXIT_INPUT, InputError, TableSyncError
from tablesync_job.pipeline import require_env
from tablesync_job.postgres import adbc_connect, connect, refuse_ambiguous_uri, uri_passwords


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_SECRETS", set())


def test_a_plain_uri_registers_its_password_only() -> None:
    assert uri_passwords("postgresql://app:pw123@db.example:5432/prices?sslmode=require") == {
        "pw123"}
    assert uri_passwords("postgresql://app@db.example/prices") == set()
    assert uri_passwords("postgresql://db.example:5432/prices?sslmode=require") == set()
    assert uri_passwords("host=db port=5432 dbname=prices") == set()
    assert uri_passwords("host=db dbname=prices user=app password=pw123") == {"pw123"}
    # libpq's parameters after a password parameter are no part of it
    assert uri_passwords("postgresql://app@db/prices?password=pw123&sslmode=require") == {
        "pw123"}


@pytest.mark.parametrize("uri,forms", [
    # libpq splits the userinfo on the first '@', urllib on the last
    ("postgresql://u:TopSecretA1@TopSecretB2@127.0.0.1:1/db",
     {"TopSecretA1", "TopSecretB2", "TopSecretA1@TopSecretB2"}),
    # a password in a query parameter, with and without valid percent-encoding
    ("postgresql://u@127.0.0.1:1/db?password=TopSecret%zzB2", {"TopSecret%zzB2"}),
    ("postgresql://u@127.0.0.1:1/db?sslmode=disable&password=Top%20Secret",
     {"Top%20Secret", "Top Secret"}),
    ("postgresql://u:Top%20Secret@127.0.0.1:1/db", {"Top%20Secret", "Top Secret"}),
    # '#' and '?' end urllib's netloc but not libpq's userinfo
    ("postgresql://u:TopSecretA1#TopSecretB2@127.0.0.1:1/db",
     {"TopSecretA1#TopSecretB2", "TopSecretA1", "TopSecretB2"}),
    # '/' ends both readings of the netloc; libpq reads the password's start as a port
    ("postgresql://u:TopSecretA1/TopSecretB2@127.0.0.1:1/db",
     {"TopSecretA1/TopSecretB2", "TopSecretA1", "TopSecretB2"}),
    # key=value strings, quoted, escaped and (wrongly) unquoted with a space
    ("host=127.0.0.1 port=1 password='TopSecret B2' dbname=db", {"TopSecret B2"}),
    (r"host=127.0.0.1 password = 'Top\'Secret' dbname=db", {"Top'Secret"}),
    ("host=127.0.0.1 port=1 password=TopSecretA1 TopSecretB2 dbname=db",
     {"TopSecretA1", "TopSecretB2"}),
    ("postgresql://u@127.0.0.1:1/db?sslpassword=TopSecretKey", {"TopSecretKey"}),
])
def test_every_form_of_the_password_is_found(uri: str, forms: set[str]) -> None:
    assert forms <= uri_passwords(uri)


@pytest.mark.parametrize("uri", [
    "postgresql://u:TopSecretA1@TopSecretB2@127.0.0.1:1/db",
    "postgres://u@TopSecretB2@127.0.0.1:1/db",
    "postgresql://u:TopSecretA1?x@TopSecretB2@127.0.0.1:1/db",
])
def test_more_than_one_at_sign_before_the_host_is_refused(
        uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABLESYNC_DESTINATION_URI", uri)
    with pytest.raises(InputError) as err:
        require_env("TABLESYNC_DESTINATION_URI")
    assert err.value.exit_code == EXIT_INPUT
    assert "TABLESYNC_DESTINATION_URI" in err.value.message
    assert "%40" in err.value.message
    assert "TopSecret" not in err.value.message
    assert "127.0.0.1" not in err.value.message  # the URI is not echoed
    # and its pieces are registered even so
    assert "TopSecret" not in logs.redact(f"could not resolve {uri}")


@pytest.mark.parametrize("uri", [
    "postgresql://u:p%40ss@127.0.0.1:1/db",
    "postgresql://u:pass@127.0.0.1:1/db?options=-c%20x%3Dy@z",
    "postgresql://u:pass@h1:1,h2:2/db",
    "host=127.0.0.1 password=a@b@c",
])
def test_uris_libpq_reads_one_way_are_accepted(uri: str) -> None:
    refuse_ambiguous_uri(uri, "TABLESYNC_SOURCE_URI")


def test_an_at_sign_after_a_slash_is_refused_as_a_raw_slash_in_the_password() -> None:
    with pytest.raises(InputError) as err:
        refuse_ambiguous_uri("postgresql://u:TopSecretA1/TopSecretB2@127.0.0.1:1/db",
                             "TABLESYNC_SOURCE_URI")
    assert err.value.exit_code == EXIT_INPUT
    assert "%2F" in err.value.message and "TopSecret" not in err.value.message


@pytest.mark.parametrize("uri", [
    "postgresql://u@127.0.0.1:1/db?password=TopSecret%zzB2",
    "postgresql://u:TopSecret%zzB2@127.0.0.1:1/db",
    "host=127.0.0.1 port=1 user=u password=TopSecretA1 TopSecretB2 dbname=db",
    "host=127.0.0.1 port=1 user=u password='TopSecret B2' dbname=db sslmode=bogus",
    # a raw quote ends a quoted password, a raw space an unquoted one: libpq names the rest
    "host=127.0.0.1 port=1 user=u password='TopSecretA1'TopSecretB2' dbname=db",
    "host=127.0.0.1 port=1 user=u password=TopSecretA1 TopSecretB2=x dbname=db",
    "postgresql://u:TopSecretA1#TopSecretB2@127.0.0.1:1/db",
    "postgresql://u:TopSecretA1?TopSecretB2@127.0.0.1:1/db",
    # a raw '&' ends a password parameter: libpq names the rest as a parameter of its own
    "postgresql://u@127.0.0.1:1/db?password=TopSecretA1&TopSecretB2",
    "postgresql://u@127.0.0.1:1/db?sslmode=disable&password=TopSecretA1&TopSecretB2=x",
    # a raw '@?' in the password: libpq's userinfo ends at the '@', its query starts at '?'
    "postgresql://u:TopSecretA1@?TopSecretB2@127.0.0.1:1/db",
])
def test_connection_errors_never_show_the_password(
        uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABLESYNC_SOURCE_URI", uri)
    value = require_env("TABLESYNC_SOURCE_URI")
    with pytest.raises(TableSyncError) as err, connect(value, "source"):
        pass
    assert "TopSecret" not in err.value.message
    with pytest.raises(TableSyncError) as err:
        adbc_connect(value, "source", autocommit=True)
    assert "TopSecret" not in err.value.message
