"""Helpers and fixtures for the sync engine's integration tests: a source and a destination
database on the session's real Postgres, storage on disk or in the session's real MinIO, and the
``tablesync-job`` command run as a real process (so a crash can be injected with SIGKILL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.support.services import MinioServer, PostgresServer

JOB = str(Path(sys.executable).parent / "tablesync-job")


@dataclass
class JobResult:
    code: int
    report: dict[str, Any]
    stdout: str
    stderr: str

    @property
    def error_line(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.startswith("tablesync-job:")]
        return lines[-1] if lines else ""


@dataclass
class Lane:
    """One TableSync's worth of test setup: databases, storage, spec, and a runner."""

    source: str
    destination: str
    storage_url: str
    work: Path
    env: dict[str, str]
    spec: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def at(cls, source: str, destination: str, tmp_path: Path,
           read_source: str | None = None) -> Lane:
        """A lane on these databases with file:// storage under ``tmp_path``; the job reads
        the source at ``read_source`` when given (a standby, a subscriber), the tests write
        it at ``source``."""
        url = f"file://{tmp_path}/store"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TABLESYNC_", "AWS_"))}
        env.update({"TABLESYNC_SOURCE_URI": read_source or source,
                    "TABLESYNC_DESTINATION_URI": destination,
                    "TABLESYNC_WORK_DIR": str(tmp_path / "work")})
        return cls(source=source, destination=destination, storage_url=url, work=tmp_path,
                   env=env, spec=base_spec(url))

    def spec_path(self) -> Path:
        path = self.work / "tablesync.yaml"
        path.write_text(yaml.safe_dump(self.spec))
        return path

    def run(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = 600) -> JobResult:
        cmd = [JOB, *(args or ("run",)), "--spec", str(self.spec_path())]
        proc = subprocess.run(cmd, env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout, check=False)
        report: dict[str, Any] = {}
        for line in reversed(proc.stdout.strip().splitlines()):
            if line.startswith("{") and line.endswith("}"):  # not a dry run's indented report
                report = json.loads(line)
                break
        if not report and proc.stdout.strip().startswith("{"):
            report = json.loads(proc.stdout)
        return JobResult(proc.returncode, report, proc.stdout, proc.stderr)

    def src(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return _exec(self.source, sql, params)

    def dst(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return _exec(self.destination, sql, params)

    def set_for_database(self, which: str, setting: str, value: str) -> None:
        """``ALTER DATABASE <the source's or destination's> SET setting = 'value'``: what new
        sessions there get (a DBA's statement_timeout for the applications, ...)."""
        run = self.src if which == "source" else self.dst
        database = str(run("SELECT current_database()")[0][0]).replace('"', '""')
        quoted = value.replace("'", "''")
        run(f"ALTER DATABASE \"{database}\" SET {setting} = '{quoted}'")

    def both(self, sql: str) -> None:
        self.src(sql)
        self.dst(sql)

    def state(self) -> dict[str, Any] | None:
        if self.storage_url.startswith("file://"):
            path = Path(self.storage_url[len("file://"):]) / "state.json"
            return json.loads(path.read_text()) if path.exists() else None
        raise NotImplementedError("state() reads file:// storage only")

    def put_state(self, state: dict[str, Any]) -> None:
        """Overwrite state.json (file:// storage only), as an earlier build or a hand would."""
        if not self.storage_url.startswith("file://"):
            raise NotImplementedError("put_state() writes file:// storage only")
        (Path(self.storage_url[len("file://"):]) / "state.json").write_text(json.dumps(state))

    def snapshot_manifest(self, snapshot_id: str) -> dict[str, Any]:
        """A stored snapshot's manifest.json (file:// storage only)."""
        if not self.storage_url.startswith("file://"):
            raise NotImplementedError("snapshot_manifest() reads file:// storage only")
        root = Path(self.storage_url[len("file://"):])
        return dict(json.loads((root / "snapshots" / snapshot_id / "manifest.json").read_text()))

    def table_text(self, which: str, table: str = "prices", order: str = "id") -> list[str]:
        """Every row rendered by Postgres itself, for byte-exact comparison."""
        rows = (self.src if which == "source" else self.dst)(
            f"SELECT t::text FROM {table} t ORDER BY {order}")
        return [r[0] for r in rows]


def _exec(uri: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(uri, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def base_spec(storage_url: str, **source: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tablesync.dev/v1alpha1", "kind": "TableSync",
        "metadata": {"name": "prices", "namespace": "test"},
        "spec": {
            "schedule": "*/30 * * * *",
            "source": {"uriSecretRef": {"name": "replica", "key": "uri"},
                       "table": "public.prices", "primaryKey": ["id"],
                       "versionColumn": "updated_at", **source},
            "storage": {"url": storage_url, "keepSnapshots": 3},
            "destination": {"uriSecretRef": {"name": "warehouse", "key": "uri"},
                            "table": "public.prices", "deletes": "apply"},
        },
    }


@pytest.fixture
def lane(postgres: PostgresServer, tmp_path: Path) -> Iterator[Lane]:
    """Fresh source and destination databases and file:// storage for one test."""
    tag = uuid.uuid4().hex[:8]
    yield Lane.at(postgres.create_database(f"src_{tag}"),
                  postgres.create_database(f"dst_{tag}"), tmp_path)


@pytest.fixture
def s3_lane(lane: Lane, minio: MinioServer) -> Lane:
    """The same, with storage in a fresh MinIO bucket."""
    bucket = f"ts-{uuid.uuid4().hex[:10]}"
    minio.create_bucket(bucket)
    lane.storage_url = f"s3://{bucket}/prices"
    lane.spec["spec"]["storage"]["url"] = lane.storage_url
    lane.env.update(minio.env())
    return lane


PRICES_DDL = ("CREATE TABLE prices (id bigint PRIMARY KEY, sku text NOT NULL, "
              "price numeric(12,2), currency char(3), title text, "
              "updated_at timestamptz NOT NULL)")


def load_prices(lane: Lane, rows: int) -> None:
    lane.both(PRICES_DDL)
    lane.src(f"INSERT INTO prices SELECT g, 'sku-' || g, (g % 1000) + 0.99, 'EUR', "
             f"'product ' || g, now() - interval '1 day' FROM generate_series(1, {rows}) g")


Runner = Callable[..., JobResult]
