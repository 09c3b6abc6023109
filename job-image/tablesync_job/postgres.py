"""Postgres adapter: connections, catalog look-ups and error mapping, for source and destination.

The only module that opens database connections (psycopg for catalog queries, ADBC for Arrow
streams in and out). Errors become the job's family: wrong password, a missing database or
table is an InputError naming the variable or field; a refused connection or a serialization
failure is a TransientError. Messages never contain the URI or its password: ``pipeline``
registers every form of the password (:func:`uri_passwords`) with ``logs`` before anything
connects, and refuses a URI that parsers read differently (:func:`refuse_ambiguous_uri`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from .errors import InputError, TableSyncError, TransientError
from .logs import redact
from .spec import TableName

# SQLSTATE classes a retry may cure: connection, transaction rollback (serialization,
# deadlock), insufficient resources, operator intervention (shutdown), system error.
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")


def quote_ident(name: str) -> str:
    """An SQL identifier, double-quoted (Postgres and DuckDB rules)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def qualified(table: TableName) -> str:
    return f"{quote_ident(table.schema)}.{quote_ident(table.name)}"


_URI_PREFIXES = ("postgresql://", "postgres://")  # what libpq reads as a URI
_PASSWORD_KEYS = ("password", "sslpassword")  # libpq parameters that hold a secret
_URI_DELIMITERS = re.compile(r"[@#?/]")  # where some parser may end a password early


TEXT_ARRAYS = "\x00text arrays\x00"  # where with_text_arrays puts its placeholders


def with_text_arrays(query: str, count: int) -> str:
    """``query`` for psycopg with ``count`` ``%s::text[]`` placeholders where it says
    :data:`TEXT_ARRAYS`, and every other ``%`` (in an identifier: "order%lines") doubled, so
    psycopg takes it for itself, not for a placeholder."""
    return query.replace("%", "%%").replace(TEXT_ARRAYS, ", ".join(["%s::text[]"] * count))


def uri_passwords(conninfo: str) -> set[str]:
    """Every form in which a client library or an error message may show the password held
    by ``conninfo`` (a libpq URI or ``key=value`` string), for ``logs.register_secret``.

    libpq, urllib and ADBC disagree on malformed strings, so this collects: libpq's own
    reading (``conninfo_to_dict``, ``password`` and ``sslpassword``); for a URI, the password
    of the userinfo as urllib reads it (up to the *last* ``@`` of the netloc), as libpq reads
    it (up to the *first* ``@`` before any ``/``) and up to the first and last ``@`` before the
    query (a ``/`` in the password), each ``@``-separated piece of those,
    and ``password`` query parameters raw and decoded (``parse_qs``), with the query's pieces
    libpq names in its errors (:func:`_query_passwords`: a raw ``&``); for a ``key=value``
    string that libpq cannot parse (``password=two words``), the value and the stray words
    after it, which libpq names in its error. Each password also contributes its
    percent-decoded form and its pieces split at ``@ # ? /`` (a parser that stops there
    prints the first piece as a host or port). Returns an empty set when there is no password.
    """
    found: set[str] = set()
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        params = {}
    found.update(str(params.get(key) or "") for key in _PASSWORD_KEYS)
    if conninfo.startswith(_URI_PREFIXES):
        found.update(_uri_userinfo_passwords(conninfo))
        query = conninfo.partition("?")[2]
        found.update(_query_passwords(query))
        for key in _PASSWORD_KEYS:
            found.update(parse_qs(query).get(key, []))
    elif not params:
        found.update(_keyword_passwords(conninfo))
    forms: set[str] = set()
    for password in filter(None, found):
        forms.update({password, unquote(password), *_URI_DELIMITERS.split(password)})
    return {form for form in forms if form}


def _uri_userinfo_passwords(uri: str) -> set[str]:
    """The password of a URI's userinfo as urllib and as libpq read it, and its pieces."""
    rest = uri.partition("://")[2]
    userinfos: list[str] = []
    with suppress(ValueError):  # e.g. an unbalanced '[' in the netloc
        userinfos.append(urlsplit(uri).netloc.rpartition("@")[0])  # up to the last '@'
    if "@" in rest.partition("/")[0]:
        userinfos.append(rest.partition("@")[0])  # up to the first '@'
    # A '/' or '#' in the password ends the netloc for both, and libpq takes the start of the
    # password for a port: the userinfo then runs to an '@' in what they call the path.
    before_query = rest.partition("?")[0]
    if "@" in before_query:
        userinfos += [before_query.partition("@")[0], before_query.rpartition("@")[0]]
    found: set[str] = set()
    for userinfo in userinfos:
        password = userinfo.partition(":")[2]
        pieces = userinfo.split("@")
        found.update({password, pieces[0].partition(":")[2], *pieces[1:]})
    return found


@cache
def _libpq_keywords() -> frozenset[str]:
    """The parameter names libpq knows (``PQconndefaults``)."""
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def _query_passwords(query: str) -> set[str]:
    """Password values of a URI's query string, raw, and the pieces libpq names in its error.

    libpq splits the query at every ``&``, so a raw ``&`` in a password
    (``password=Top&Secret``) ends it, and libpq names what follows as a bad parameter:
    ``Secret`` in full (no ``=``), or the key of ``Secret=x`` (not a libpq parameter). Such
    pieces after a password are taken for the rest of it. Any other piece without ``=`` is
    printed whole too (``u:Top@?Secret@host``: a raw ``@?`` in the password starts the query
    early), so it counts as well.
    """
    found: set[str] = set()
    password: str | None = None  # the password parameter the pieces seen belong to
    for pair in query.split("&"):
        key, equals, raw = pair.partition("=")
        if unquote(key) in _PASSWORD_KEYS:
            password = raw
            found.add(raw)
        elif not equals or (password is not None and unquote(key) not in _libpq_keywords()):
            found.update({pair, key})
            if password is not None:
                password += "&" + pair
                found.add(password)
        else:
            password = None
    return found


def _keyword_passwords(dsn: str) -> set[str]:
    """Password values of a ``key=value`` string libpq refused, and the stray words after
    one, which libpq names in its error: ``password=two words host=h`` gives ``two``,
    ``words``, ``two words``; a quoted one ended early by a raw quote
    (``password='it's' host=h``) gives ``it`` and ``s'``. A stray ``word=x`` or ``word = x``
    that is not a libpq parameter is named as an invalid option: its ``word`` counts too."""
    found: set[str] = set()
    for match in re.finditer(r"(?:^|\s)(?:ssl)?password\s*=\s*", dsn):
        rest = dsn[match.end():]
        if rest.startswith("'"):
            quoted = re.match(r"'((?:[^'\\]|\\.)*)'?", rest)
            value = quoted.group(1) if quoted else ""
            found.update({value, re.sub(r"\\(.)", r"\1", value)})
            stray = _stray_words(rest[quoted.end() if quoted else 0:].split())
            found.update({*stray, *(word.strip("'") for word in stray)})
            continue
        words = rest.split()
        if not words:
            continue
        stray = _stray_words(words[1:])
        found.update({words[0], re.sub(r"\\(.)", r"\1", words[0]), *stray,
                      " ".join(words[:1 + len(stray)])})
    return found


def _stray_words(words: list[str]) -> list[str]:
    """The words after a password value that libpq reads as parameter names, up to the first
    libpq parameter: each word with neither ``=`` nor a following ``=`` (a name without a
    value), and then the name of a ``name=x`` or ``name = x`` that libpq does not know."""
    stray: list[str] = []
    for index, word in enumerate(words):
        following = words[index + 1] if index + 1 < len(words) else ""
        if "=" in word or following.startswith("="):
            name = word.partition("=")[0]
            if name not in _libpq_keywords():
                stray.append(name)
            break
        stray.append(word)
    return stray


def refuse_ambiguous_uri(conninfo: str, var: str) -> None:
    """InputError naming ``var`` if ``conninfo`` is a URI with more than one ``@`` before the
    end of its host list, checked before anything connects.

    libpq ends the userinfo at the first ``@`` (and its host list at ``/`` or ``?``), urllib at
    the last one of the netloc, so an unencoded ``@`` in a password makes them disagree and
    libpq's errors print the rest of the password as a host name. RFC 3986 section 3.2.1: the
    userinfo cannot hold a raw ``@``. Likewise an ``@`` after the first ``/`` (a raw ``/`` in
    the password ends the host part). The message does not echo the URI.
    """
    if not conninfo.startswith(_URI_PREFIXES):
        return
    rest = conninfo.partition("://")[2]
    hosts = ""  # libpq's host list, after the userinfo
    if "@" in rest.partition("/")[0]:
        hosts = re.split(r"[/?]", rest.partition("@")[2], maxsplit=1)[0]
    try:
        netloc_ats = urlsplit(conninfo).netloc.count("@")
    except ValueError:
        netloc_ats = 0
    if "@" in hosts or netloc_ats > 1:
        raise InputError(f"{var} has more than one '@' before its host, so the password's end "
                         "is ambiguous: percent-encode each '@' in the user name or password "
                         "as %40 (postgresql://user:p%40ss@host:5432/dbname)")
    netloc, slash, path = rest.partition("?")[0].partition("/")
    if slash and "@" not in netloc and "@" in path:
        # a '/' in the password ended the host part: libpq would look up a host named after
        # the start of the password, and report that lookup as a (transient) network failure
        raise InputError(f"{var} has an '@' after a '/', so the password's end is ambiguous: "
                         "percent-encode each '/' in the user name or password as %2F "
                         "(postgresql://user:p%2Fss@host:5432/dbname)")


def map_error(err: Exception, role: str, what: str,
              kept: str | None = None) -> TableSyncError:
    """Turn a psycopg/ADBC error into InputError or TransientError.

    ``role`` is ``source`` or ``destination`` (names the env variable), ``what`` says what
    was being done, e.g. ``reading public.prices``. ``kept``: advice added to a unique or
    exclusion violation, where the destination keeps rows the source deleted (``apply``).
    """
    var = f"TABLESYNC_{role.upper()}_URI"
    text = redact(_server_message(err))
    sqlstate = getattr(err, "sqlstate", None) or ""
    if not sqlstate:
        # A URI with several hosts: the client reports each host's failure on a line of its
        # own, and the first line is one host's (psycopg's last, ADBC's first), e.g. a host
        # that is down. One that refused the login or lacks the database is what to fix.
        refused = next((line.strip().lstrip("- ") for line in str(err).splitlines()
                        if _REFUSED_LOGIN.search(line)), None)
        text = redact(refused) if refused else text
    lowered = text.lower()
    if "pg_hba.conf" in lowered:  # 28000, which a failed connection does not carry
        return InputError(f"{role} database refused the connection ({text}): no entry of its "
                          "pg_hba.conf lets this user connect to this database from the job's "
                          f"address (over this encryption); add one there, or fix {var} "
                          "(sslmode=require where the entries are hostssl)")
    if "password authentication failed" in lowered or sqlstate.startswith("28"):
        return InputError(f"{role} database refused the login ({text}): fix the user or "
                          f"password in {var}")
    if sqlstate == "3D000" or ("database" in lowered and "does not exist" in lowered):
        return InputError(f"{role} database does not exist ({text}): fix {var}")
    if not sqlstate and (isinstance(err, psycopg.ProgrammingError) or "invalid " in lowered):
        # libpq could not read the URI, or refused one of its options (sslmode=bogus); the
        # server's own refusals are ProgrammingErrors to psycopg too (42501, 42703), with a
        # SQLSTATE
        return InputError(f"{var} is not a usable libpq URI ({text}): fix it, e.g. "
                          "postgresql://user:password@host:5432/dbname?sslmode=require")
    if "permission denied" in lowered:  # the driver reports some without a SQLSTATE
        return InputError(f"{role} database: {what} failed ({text}): grant the role of {var} "
                          "what it lacks")
    if sqlstate[:2] in _TRANSIENT_CLASSES or not sqlstate:
        return TransientError(f"{role} database: {what} failed ({text}); a retry may help")
    if sqlstate == "55P03":  # lock_not_available: another session held a row or the table
        return TransientError(f"{role} database: {what} failed ({text}): another session held "
                              "a row or table it needed for longer than lock_timeout (the "
                              "role's or database's setting) allows; a retry may help")
    if sqlstate == "21000":  # ON CONFLICT DO UPDATE command cannot affect row a second time
        return InputError(f"{role} database: {what} failed ({text}): two rows of the delta have "
                          "keys the destination finds equal though the source's snapshot does "
                          "not (numeric 1.0 and 1.00, a case-insensitive collation, a source "
                          "without a unique key); check spec.source.primaryKey and the key "
                          "columns' types and collations on both sides")
    if sqlstate == "23502" and role == "destination":  # not_null_violation
        column = _NULL_COLUMN.search(text)
        named = f"column {column.group(1)}" if column else "a column"
        return InputError(f"{role} database: {what} failed ({text}): the destination's "
                          f"{named} is NOT NULL where the source holds NULL; drop NOT NULL "
                          "there (ALTER TABLE ... ALTER COLUMN ... DROP NOT NULL), or fill "
                          "the source's NULLs, and the next run applies the rows")
    enum = _ENUM_LABEL.search(text) if sqlstate == "22P02" else None
    if enum is not None:  # the source's enum has a label the destination's type lacks
        return InputError(f"{role} database: {what} failed ({text}): the destination's enum "
                          f"type {enum.group(1)} lacks a label the source's has; add it there "
                          f"(ALTER TYPE {enum.group(1)} ADD VALUE "
                          f"'{enum.group(2).replace(chr(39), chr(39) * 2)}', in the "
                          "source's order) and the next run applies the rows")
    if sqlstate in _CONSTRAINT_STATES:
        also = f"; {kept}" if kept and sqlstate != "23503" else ""
        return InputError(f"{role} database: {what} failed ({text}) [SQLSTATE {sqlstate}]: the "
                          "apply writes row by row in key order, deletes first, and defers "
                          "every DEFERRABLE constraint to its commit; make this constraint "
                          f"DEFERRABLE if the source's rows only satisfy it all together{also}")
    return InputError(f"{role} database: {what} failed ({text}) [SQLSTATE {sqlstate}]")


# not_null_violation: 'null value in column "title" of relation "prices" violates ...'
_NULL_COLUMN = re.compile(r'null value in column ("(?:[^"]|"")*")')
# a host's refusal of the password or connection, or its lack of the database, as a
# line of text
_REFUSED_LOGIN = re.compile(r"password authentication failed|pg_hba\.conf|"
                            r'database ".*" does not exist')
# invalid_text_representation of an enum: 'invalid input value for enum mood: "sad"'
_ENUM_LABEL = re.compile(r'invalid input value for enum (\S+): "(.*?)"')
# unique, exclusion and foreign key violations
_CONSTRAINT_STATES = {"23505", "23P01", "23503"}


def _server_message(err: Exception) -> str:
    """One line: the server's message with its DETAIL and HINT (from psycopg's ``diag`` or
    ADBC's ``details``), else the error's first line; never the driver's framing."""
    primary = detail = hint = None
    diag = getattr(err, "diag", None)
    if diag is not None:
        primary, detail, hint = diag.message_primary, diag.message_detail, diag.message_hint
    for key, value in getattr(err, "details", None) or []:
        name = key.decode() if isinstance(key, bytes) else str(key)
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        if name == "PG_DIAG_MESSAGE_PRIMARY":
            primary = text
        elif name == "PG_DIAG_MESSAGE_DETAIL":
            detail = text
        elif name == "PG_DIAG_MESSAGE_HINT":
            hint = text
    if not primary:
        lines = str(err).strip().splitlines()
        return lines[0] if lines else type(err).__name__
    parts = [primary] + [f"{label}: {value}" for label, value in (("DETAIL", detail),
                                                                  ("HINT", hint)) if value]
    return " ".join("; ".join(parts).split())


# text of a SQL_ASCII database that holds Latin-1 bytes, as UTF-8 (the bytes as they are,
# recoded, back to text: convert_from to the database's own encoding changes nothing)
LATIN1_IN_SQL_ASCII = ("convert_from(convert(convert_to(col, 'SQL_ASCII'), 'LATIN1', 'UTF8'), "
                       "'SQL_ASCII')")


def map_stream_error(err: Exception, role: str, what: str) -> Exception:
    """Map an error the driver's Arrow stream raised in the middle of a read.

    The ADBC stream interface carries a message only (pyarrow raises it as ``OSError``, with
    no SQLSTATE), so the driver's libpq errors are told apart by their text: every one is the
    server or the connection failing mid-read, a TransientError. A standby cancels a read that
    holds back its replay ("conflict with recovery", PostgreSQL docs, "Hot Standby", section
    "Handling Query Conflicts"); the message names the standby settings that prevent it. Text
    the server cannot send as UTF-8 (a SQL_ASCII database holds any bytes) is an InputError: a
    retry reads the same bytes. Any other error is returned unchanged.
    """
    lines = str(err).strip().splitlines()
    if not lines or not lines[0].startswith("[libpq]"):
        return err
    text = redact(lines[0].split("]: ", 1)[-1].strip())
    if ("invalid byte sequence for encoding" in text
            or "has no equivalent in encoding" in text):
        # the data, not the server: a SQL_ASCII database holds any bytes, and a retry reads
        # the same ones (SQLSTATE 22021 / 22P05 when sent as UTF-8, the sync's client_encoding)
        return InputError(
            f"{role} database: {what} failed: a text value cannot be read as UTF-8 ({text}); "
            "fix those values at the source, or point spec.source.table at a view that "
            f"converts the column (Latin-1 bytes in a SQL_ASCII database: {LATIN1_IN_SQL_ASCII})")
    if "conflict with recovery" in text.lower():
        return TransientError(
            f"{role} database: {what} was cancelled by the standby ({text}): replaying the "
            "primary's changes needed what this read held; on the standby set "
            "hot_standby_feedback = on, or raise max_standby_streaming_delay (and "
            "max_standby_archive_delay) above the dump's duration; a retry may help")
    return TransientError(f"{role} database: {what} failed mid-read ({text}); a retry may help")


def _numeric_scale(typmod: int) -> int:
    """The scale of ``numeric(p, s)`` from its typmod: 11 bits, signed since Postgres 15."""
    bits = (typmod - 4) & 0x7FF
    return (bits ^ 0x400) - 0x400


@contextmanager
def connect(uri: str, role: str) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection (autocommit) with errors mapped by :func:`map_error`."""
    try:
        conn = psycopg.connect(uri, autocommit=True, connect_timeout=15,
                               application_name=f"tablesync-{role}", client_encoding="UTF8")
    except psycopg.Error as err:
        raise map_error(err, role, "connecting") from None
    try:
        yield conn
    except psycopg.Error as err:
        raise map_error(err, role, "a catalog query") from None
    finally:
        conn.close()


@contextmanager
def adbc_errors(role: str, what: str, kept: str | None = None) -> Iterator[None]:
    """Map ADBC driver errors raised inside the block with :func:`map_error`."""
    import adbc_driver_manager

    try:
        yield
    except adbc_driver_manager.Error as err:
        raise map_error(err, role, what, kept) from None


def adbc_connect(uri: str, role: str, autocommit: bool) -> Any:
    """An ADBC DB-API connection (Arrow-native COPY in and out)."""
    import adbc_driver_manager
    import adbc_driver_postgresql.dbapi as pgdb

    try:
        conn = pgdb.connect(uri, autocommit=autocommit)
    except adbc_driver_manager.Error as err:
        raise map_error(err, role, "connecting") from None
    try:
        # Arrow strings are UTF-8: the server converts from (and to) a database in another
        # encoding only when told the client's; the driver passes the bytes through as sent
        with conn.cursor() as cur:
            cur.execute("SET client_encoding = 'UTF8'")
    except adbc_driver_manager.Error as err:
        conn.close()
        raise map_error(err, role, "setting client_encoding") from None
    return conn


# libpq's TCP settings for the run lock's session, idle for the whole run: probes after 30 s
# idle keep a NAT's or firewall's state for it (one that drops it silently ends the lock
# unnoticed), and a dead peer ends it (and check()) within about a minute, not the kernel's
# 2 h idle and 15 min of retransmissions
LOCK_KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 30,
                                   "keepalives_interval": 10, "keepalives_count": 3,
                                   "tcp_user_timeout": 60_000}
# The same on the server's side of it (LOCK_KEEPALIVES sets the client's alone): the server
# probes the idle session too, so when the job's pod vanishes without closing it (its node
# lost or cut off) the lock goes within about a minute. Before, the server kept it for the
# kernel's 2 h idle and 11 min of probes, and every run meanwhile failed as "another run is
# applying". Settings a role may set for its own session; no-ops over a Unix socket.
LOCK_SERVER_KEEPALIVES = ("SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; "
                          "SET tcp_keepalives_count = 3")


class RunLock:
    """A session advisory lock on the destination, held for a whole run.

    The CronJob's ``concurrencyPolicy: Forbid`` does not cover a Job started on demand, so
    two runs of one TableSync could overlap; the second one exits with a TransientError
    instead of racing on ``state.json``. The key is derived from the destination table.
    The session sits idle for the whole run, so it turns ``idle_session_timeout`` off for
    itself (a destination that ends idle sessions released the lock unnoticed a second into
    the run), and :meth:`check` tells whether it still holds the lock before the run writes.
    """

    def __init__(self, uri: str, table: TableName) -> None:
        self._uri = uri
        self._key = f"tablesync:{table}"
        self._conn: psycopg.Connection[Any] | None = None

    def acquire(self) -> None:
        try:
            conn = psycopg.connect(self._uri, autocommit=True, connect_timeout=15,
                                   application_name="tablesync-lock", **LOCK_KEEPALIVES)
            if conn.info.server_version >= 140000:  # the setting is new in Postgres 14
                conn.execute("SET idle_session_timeout = 0")
            conn.execute(LOCK_SERVER_KEEPALIVES)
            if conn.info.server_version >= 120000:  # the setting is new in Postgres 12
                conn.execute("SET tcp_user_timeout = 60000")
            row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                               (self._key,)).fetchone()
        except psycopg.Error as err:
            raise map_error(err, "destination", "taking the run lock") from None
        if not row or not row[0]:
            conn.close()
            raise TransientError(f"another run is applying to {self._key[len('tablesync:'):]} "
                                 "right now; this run will be retried")
        self._conn = conn

    def check(self) -> None:
        """TransientError if the lock's session has ended (and the lock with it: terminated
        by an administrator or a reaper of idle sessions, or the connection dropped), so a
        second run may be under way; nothing is written after that."""
        if self._conn is None:
            return
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error as err:
            raise TransientError(
                f"the run lock on {self._key[len('tablesync:'):]} was lost: its session on the "
                f"destination ended ({redact(_server_message(err))}), so another run may be "
                "applying; nothing more was applied by this run, which will be retried"
            ) from None

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()  # closing the session releases the lock
            self._conn = None


@dataclass(frozen=True)
class ColumnInfo:
    """A table column from the catalog. ``pg_type`` is ``format_type()`` (e.g. numeric(12,2))."""

    name: str
    pg_type: str
    type_name: str  # pg_type.typname, e.g. numeric, _int4
    not_null: bool
    precision: int | None  # numeric(p, s) only
    scale: int | None
    generated: bool = False  # GENERATED ALWAYS AS (expr) STORED: the table computes it
    has_default: bool = False  # a DEFAULT (or identity) fills it when an INSERT leaves it out
    identity: str = ""  # attidentity: 'a' GENERATED ALWAYS, 'd' BY DEFAULT AS IDENTITY, or ''
    base_type: str = ""  # format_type() without the modifier: timestamp(0) -> timestamp ...
    # what a user-defined type (or an array of one) is made of, which its name does not say:
    # a domain's base type (numeric(12,2)), a composite type's attributes (name and type, in
    # order); empty for other types
    definition: str = ""


@dataclass(frozen=True)
class TableInfo:
    table: TableName
    columns: list[ColumnInfo]
    unique_keys: list[tuple[str, ...]]  # primary key and unique indexes, as column tuples
    estimated_rows: int
    partitioned: bool = False  # relkind 'p': RETURNING cannot read its system columns
    deferrable_keys: list[tuple[str, ...]] = field(default_factory=list)  # unique, DEFERRABLE
    kind: str = "r"  # pg_class.relkind: r table, p partitioned, v view, m matview, f foreign
    row_triggers: bool = False  # enabled BEFORE INSERT/UPDATE row triggers (or a partition's)
    insert_triggers: bool = False  # of them, BEFORE INSERT ones: they may fill any column
    delete_triggers: bool = False  # enabled BEFORE DELETE row triggers (or a partition's)
    # a table with child tables (INHERITS): reading it reads theirs, which its unique keys
    # do not span (pg_class.relhassubclass, which may outlive the last child)
    inherited: bool = False

    def has_unique(self, columns: tuple[str, ...], immediate: bool = False) -> bool:
        """Whether a unique key on exactly ``columns`` exists (``immediate``: one ON CONFLICT
        can use, not DEFERRABLE)."""
        keys = self.unique_keys if immediate else self.unique_keys + self.deferrable_keys
        return any(set(key) == set(columns) for key in keys)

    def column(self, name: str) -> ColumnInfo | None:
        return next((c for c in self.columns if c.name == name), None)



def describe_table(conn: psycopg.Connection[Any], table: TableName, role: str,
                   field: str) -> TableInfo:
    """Columns, unique keys and a row estimate; InputError naming ``field`` if it is missing."""
    row = conn.execute(
        "SELECT c.oid, c.reltuples::bigint, c.relkind::text, c.relkind = 'r' AND "
        "c.relhassubclass FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
        "AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        (table.schema, table.name),
    ).fetchone()
    if row is None:
        raise InputError(f"{field}: table {table} does not exist in the {role} database "
                         f"(check the name and TABLESYNC_{role.upper()}_URI)")
    oid, estimate, kind, inherited = row
    partitioned = kind == "p"
    columns = [
        ColumnInfo(name=name, pg_type=fmt, type_name=typname, not_null=notnull,
                   precision=((typmod - 4) >> 16) & 0xFFFF if typname == "numeric" and typmod > 0
                   else None,
                   scale=_numeric_scale(typmod) if typname == "numeric" and typmod > 0 else None,
                   generated=generated, identity=identity, has_default=has_default,
                   base_type=base, definition=definition or "")
        for name, fmt, typname, notnull, typmod, generated, identity, has_default, base,
        definition in conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, a.attnotnull, "
            "a.atttypmod, a.attgenerated <> '', a.attidentity::text, "
            "a.atthasdef OR a.attidentity <> '', format_type(a.atttypid, NULL), "
            "CASE e.typtype WHEN 'd' THEN format_type(e.typbasetype, e.typtypmod) "
            "WHEN 'c' THEN (SELECT string_agg(quote_ident(ea.attname) || ' ' || "
            "format_type(ea.atttypid, ea.atttypmod), ', ' ORDER BY ea.attnum) FROM pg_attribute "
            "ea WHERE ea.attrelid = e.typrelid AND ea.attnum > 0 AND NOT ea.attisdropped) END "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_type e ON e.oid = "
            "CASE WHEN t.typcategory = 'A' AND t.typelem <> 0 THEN t.typelem ELSE t.oid END "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (oid,),
        ).fetchall()
    ]
    # Unique keys ON CONFLICT can use: valid, on plain columns (no expression), key columns
    # only (not INCLUDE), no predicate; a deferrable one cannot arbitrate, but still says the
    # committed rows are unique (the source's duplicate check may rely on it).
    unique_keys: list[tuple[str, ...]] = []
    deferrable_keys: list[tuple[str, ...]] = []
    for cols, immediate in conn.execute(
            "SELECT array_agg(a.attname ORDER BY k.ord), bool_and(i.indimmediate) FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indpred IS NULL "
            "AND i.indexprs IS NULL AND k.ord <= i.indnkeyatts "
            "GROUP BY i.indexrelid", (oid,)).fetchall():
        (unique_keys if immediate else deferrable_keys).append(tuple(cols))
    # pg_trigger.tgtype bits: 1 ROW, 2 BEFORE, 4 INSERT, 8 DELETE, 16 UPDATE
    triggers = conn.execute(
        "SELECT count(*) FILTER (WHERE tgtype & 20 <> 0), count(*) FILTER (WHERE tgtype & 4 "
        "<> 0), count(*) FILTER (WHERE tgtype & 8 <> 0) FROM pg_trigger "
        "WHERE NOT tgisinternal AND tgenabled <> 'D' AND tgtype & 3 = 3 "
        "AND (tgrelid = %(t)s OR tgrelid IN (SELECT relid FROM pg_partition_tree(%(t)s)))",
        {"t": oid}).fetchone()
    return TableInfo(table=table, columns=columns, unique_keys=unique_keys,
                     estimated_rows=max(int(estimate), 0), partitioned=bool(partitioned),
                     deferrable_keys=deferrable_keys, kind=kind,
                     row_triggers=bool(triggers and triggers[0]),
                     insert_triggers=bool(triggers and triggers[1]),
                     delete_triggers=bool(triggers and triggers[2]),
                     inherited=bool(inherited))
