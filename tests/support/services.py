"""Real Postgres and MinIO servers on loopback, started and stopped by the test suites.

Called by ``tests/conftest.py`` (session fixtures), the e2e cluster harness and ``bench/``.
Nothing here is mocked: Postgres comes from Debian's packages (``.ci/run`` installs them),
MinIO is the Go-built binary cached by ``tests/e2e/cluster/install-binaries.sh``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_BINARIES = REPO_ROOT / "tests" / "e2e" / "cluster" / "install-binaries.sh"


class ServiceError(RuntimeError):
    """A test service could not be started; the message says what is missing."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cluster_bin_dir() -> Path:
    """Build (or reuse from the cache) the Go-built binaries and return their directory.

    The directory holds ``etcd``, ``kube-apiserver``, ``kube-controller-manager``, ``minio``
    and ``helm``. Raises ServiceError if the build fails.
    """
    override = os.environ.get("TABLESYNC_CLUSTER_BIN")
    if override:
        return Path(override)
    proc = subprocess.run(
        ["bash", str(INSTALL_BINARIES)], stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0:
        raise ServiceError(f"{INSTALL_BINARIES} failed with exit code {proc.returncode}")
    return Path(proc.stdout.strip().splitlines()[-1])


def postgres_bindir() -> Path:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise ServiceError(
        "PostgreSQL server binaries not found: install Debian's 'postgresql' package "
        "(.ci/run does this)"
    )


def _as_postgres_user() -> list[str]:
    """Postgres refuses to run as root: run its tools as the 'postgres' user then."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class PostgresServer:
    """A throwaway Postgres cluster. ``uri()`` gives a libpq URI for the superuser."""

    port: int
    data_dir: Path
    bindir: Path
    host: str = "127.0.0.1"
    user: str = "postgres"
    password: str = "postgres"

    def uri(self, dbname: str = "postgres", user: str | None = None,
            password: str | None = None) -> str:
        return (f"postgresql://{user or self.user}:{password or self.password}"
                f"@{self.host}:{self.port}/{dbname}")

    def create_database(self, name: str) -> str:
        """Create (or recreate) database ``name`` and return its URI."""
        import psycopg

        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def stop(self) -> None:
        subprocess.run(
            [*_as_postgres_user(), str(self.bindir / "pg_ctl"), "-D", str(self.data_dir),
             "-m", "immediate", "stop"],
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if self.data_dir.parent.name.startswith(_OWN_DIR):  # (_prepare_dir's, as root)
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)


_OWN_DIR = "tablesync-postgres-"


def _prepare_dir(base_dir: Path) -> Path:
    """The directory a server under ``base_dir`` keeps its files in: ``base_dir`` itself,
    or, as root (the server runs as the 'postgres' user), a directory of its own in the
    system's temporary directory, linked from ``base_dir / "server"``. pytest makes its
    own root (``/tmp/pytest-of-root``) private again whenever a session starts, which
    would lock a server of another, running session out of its own data directory."""
    base_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return base_dir
    work = Path(tempfile.mkdtemp(prefix=_OWN_DIR))
    shutil.chown(work, "postgres", "postgres")
    (base_dir / "server").symlink_to(work)
    return work


def _pg_ctl_start(bindir: Path, data_dir: Path, base_dir: Path, port: int,
                  settings: dict[str, str] | None) -> None:
    opts = (f"-c listen_addresses=127.0.0.1 -c port={port} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off "
            f"-c unix_socket_directories={base_dir} "
            "-c max_connections=200 -c shared_buffers=256MB -c max_wal_size=4GB")
    opts += "".join(f" -c {name}={value}" for name, value in (settings or {}).items())
    subprocess.run(
        [*_as_postgres_user(), str(bindir / "pg_ctl"), "-D", str(data_dir), "-o", opts,
         "-l", str(base_dir / "postgres.log"), "-w", "start"],
        check=True, stdout=subprocess.DEVNULL,
    )


def start_postgres(base_dir: Path, port: int | None = None,
                   settings: dict[str, str] | None = None) -> PostgresServer:
    """initdb a cluster under ``base_dir`` and start it on 127.0.0.1 (fsync off, for tests).

    ``settings``: more server settings (``-c name=value``), e.g. ``{"autovacuum": "off"}``.
    """
    bindir = postgres_bindir()
    base_dir = _prepare_dir(base_dir)
    data_dir = base_dir / "pgdata"
    pwfile = base_dir / "pwfile"
    pwfile.write_text("postgres\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    subprocess.run(
        [*_as_postgres_user(), str(bindir / "initdb"), "-D", str(data_dir), "-U", "postgres",
         "--pwfile", str(pwfile), "-A", "scram-sha-256", "-E", "UTF8", "--locale", "C.UTF-8"],
        check=True, stdout=subprocess.DEVNULL,
    )
    port = port or free_port()
    _pg_ctl_start(bindir, data_dir, base_dir, port, settings)
    return PostgresServer(port=port, data_dir=data_dir, bindir=bindir)


def start_standby(primary: PostgresServer, base_dir: Path,
                  settings: dict[str, str] | None = None) -> PostgresServer:
    """A hot standby of ``primary`` under ``base_dir``, streaming from it (a read replica).

    ``pg_basebackup --write-recovery-conf`` copies the primary's cluster and configures
    streaming replication (the primary's defaults allow it: ``wal_level=replica``, WAL
    senders, and initdb's ``host replication`` lines in pg_hba.conf). ``settings`` as for
    :func:`start_postgres`, e.g. ``{"max_standby_streaming_delay": "0"}``.
    """
    base_dir = _prepare_dir(base_dir)
    data_dir = base_dir / "pgdata"
    subprocess.run(
        [*_as_postgres_user(), str(primary.bindir / "pg_basebackup"), "-D", str(data_dir),
         "--write-recovery-conf", "--checkpoint=fast", "--wal-method=stream",
         "-d", primary.uri()],
        check=True, stdout=subprocess.DEVNULL,
    )
    port = free_port()
    _pg_ctl_start(primary.bindir, data_dir, base_dir, port, settings)
    return PostgresServer(port=port, data_dir=data_dir, bindir=primary.bindir)


@dataclass
class MinioServer:
    """A MinIO server on loopback. ``endpoint`` is ``http://127.0.0.1:PORT``."""

    endpoint: str
    data_dir: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    access_key: str = "minioadmin"
    secret_key: str = "minioadmin"

    def client(self) -> object:
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
        )

    def create_bucket(self, name: str) -> None:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):  # type: ignore[attr-defined]
            client.create_bucket(Bucket=name)  # type: ignore[attr-defined]

    def env(self) -> dict[str, str]:
        """The standard AWS variables a job needs to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_minio(base_dir: Path, minio_bin: Path | None = None,
                port: int | None = None) -> MinioServer:
    """Start MinIO serving ``base_dir/data`` on 127.0.0.1 and wait until it is live."""
    binary = minio_bin or cluster_bin_dir() / "minio"
    data_dir = base_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    console = free_port()
    env = {**os.environ, "MINIO_ROOT_USER": "minioadmin", "MINIO_ROOT_PASSWORD": "minioadmin",
           "MINIO_BROWSER": "off", "MINIO_UPDATE": "off"}
    log = (base_dir / "minio.log").open("ab")
    process = subprocess.Popen(
        [str(binary), "server", str(data_dir), "--address", f"127.0.0.1:{port}",
         "--console-address", f"127.0.0.1:{console}", "--quiet"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"minio exited with {process.returncode}; see {base_dir}/minio.log")
        try:
            with urllib.request.urlopen(f"{endpoint}/minio/health/live", timeout=1):
                return MinioServer(endpoint=endpoint, data_dir=data_dir, process=process)
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise ServiceError(f"minio did not become live in 60 s; see {base_dir}/minio.log")
