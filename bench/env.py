"""The benchmark's servers and scratch space: one real Postgres, one real MinIO, a work dir.

Called by ``__main__``, which opens one :class:`BenchEnv` for the whole run and closes it at
the end. The servers are the test suite's (``tests/support/services.py``): Postgres with fsync
off, on loopback, superuser ``postgres`` (the dump baseline's ``COPY ... TO '/dev/null'``
needs it). MinIO starts only when a benchmark asks for it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.support.services import MinioServer, PostgresServer, start_minio, start_postgres

T = TypeVar("T")


@dataclass
class BenchEnv:
    """Servers and directories shared by the benchmarks of one run."""

    root: Path
    keep: bool = False
    _postgres: PostgresServer | None = field(default=None, repr=False)
    _minio: MinioServer | None = field(default=None, repr=False)
    _failed: dict[str, Exception] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, base: Path | None, keep: bool) -> BenchEnv:
        """A fresh root directory under ``base`` (default: the system temp dir).

        Keep ``base`` short: Postgres puts its Unix socket under it, and a socket path may
        not exceed 107 bytes.
        """
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="tablesync-bench-", dir=base))
        return cls(root=root, keep=keep)

    @property
    def postgres(self) -> PostgresServer:
        """The server, started on first use (a failed start is not retried)."""
        if self._postgres is None:
            self._postgres = self._start("postgres", start_postgres)
        return self._postgres

    @property
    def minio(self) -> MinioServer:
        """The server, started on first use (a failed start is not retried)."""
        if self._minio is None:
            self._minio = self._start("minio", start_minio)
        return self._minio

    def _start(self, name: str, start: Callable[[Path], T]) -> T:
        if name in self._failed:
            raise RuntimeError(f"{name} did not start earlier in this run") from self._failed[name]
        try:
            return start(self.root / name)
        except Exception as err:
            self._failed[name] = err
            raise

    def database(self, name: str) -> str:
        """Create (or recreate) a database; its URI."""
        return self.postgres.create_database(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.postgres.uri(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def copy_database(self, template: str, name: str) -> str:
        """A file-level copy of database ``template`` (no sessions may be connected to it)."""
        import psycopg

        self.drop_database(name)
        with psycopg.connect(self.postgres.uri(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" '
                         "STRATEGY FILE_COPY")
        return self.postgres.uri(name)

    def dir(self, name: str) -> Path:
        """A fresh, empty directory ``root/name``."""
        path = self.root / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def close(self) -> None:
        if self._minio is not None:
            self._minio.stop()
        if self._postgres is not None:
            self._postgres.stop()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
