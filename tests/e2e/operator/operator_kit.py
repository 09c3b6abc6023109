"""Helpers of the operator's e2e tests: the operator process, a sync lane, status waits.

Used by ``conftest.py`` and the ``test_operator_*`` modules beside it. The operator runs as
its real entry point (``tablesync-operator``, a separate process) with the credentials of a
ServiceAccount bound to exactly the rules in ``operator/RBAC.md`` (parsed from that page), so
every e2e test also proves the documented RBAC sufficient. Pods (the job) are local processes
of the harness; Postgres and MinIO are real servers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from localcluster.testing import Cluster, PostgresAccess, wait_for
from tests.support.services import free_port

REPO = Path(__file__).resolve().parents[3]
RBAC_DOC = REPO / "operator" / "RBAC.md"
CRD = REPO / "crds" / "tablesyncs.tablesync.dev.yaml"
OPERATOR_BIN = Path(sys.executable).parent / "tablesync-operator"
SYSTEM_NAMESPACE = "tablesync-system"
SERVICE_ACCOUNT = "tablesync-operator"
# The operator watches only namespaces with this prefix (a kopf glob), so it never touches
# TableSyncs of other suites (e.g. the chart's operator in its own test namespace).
NAMESPACE_PREFIX = "tso-"
RESYNC_SECONDS = 3
JsonDict = dict[str, Any]


def rbac_manifests(namespace: str) -> list[JsonDict]:
    """The YAML block of operator/RBAC.md ("As a manifest"), bound to our ServiceAccount."""
    text = RBAC_DOC.read_text()
    block = re.search(r"## As a manifest\s+```yaml\n(.*?)```", text, re.S)
    assert block, "operator/RBAC.md has no 'As a manifest' YAML block"
    docs: list[JsonDict] = [d for d in yaml.safe_load_all(block.group(1)) if d]
    subject = {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}
    out: list[JsonDict] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace},
        },
    ]
    for doc in docs:
        doc["metadata"]["name"] = f"e2e-{doc['metadata']['name']}"
        if doc["kind"] == "Role":
            doc["metadata"]["namespace"] = namespace
            out.append(doc)
            out.append(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": doc["metadata"]["name"], "namespace": namespace},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": doc["metadata"]["name"],
                    },
                    "subjects": [subject],
                }
            )
        else:
            out.append(doc)
            out.append(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": doc["metadata"]["name"]},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": doc["metadata"]["name"],
                    },
                    "subjects": [subject],
                }
            )
    return out


def install_crd(cluster: Cluster) -> None:
    """Apply crds/ server-side and wait until the TableSync CRD is Established."""
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=tablesync-e2e",
        "-f",
        str(CRD),
    )
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/tablesyncs.tablesync.dev"
    )


def restricted_kubeconfig(cluster: Cluster, path: Path) -> Path:
    """A kubeconfig for the operator's ServiceAccount (a TokenRequest token, 1 day)."""
    token = cluster.core.create_namespaced_service_account_token(
        SERVICE_ACCOUNT, SYSTEM_NAMESPACE, {"spec": {"expirationSeconds": 86400}}
    ).status.token
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    kube_cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": kube_cluster}],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "e2e", "user": SERVICE_ACCOUNT}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class OperatorProcess:
    """One ``tablesync-operator`` process (a replica); restartable."""

    kubeconfig: Path
    log_path: Path
    name: str = "operator-1"
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
        env.update(
            {
                "KUBECONFIG": str(self.kubeconfig),
                "POD_NAME": self.name,
                "TABLESYNC_OPERATOR_NAMESPACES": f"{NAMESPACE_PREFIX}*",
                "TABLESYNC_OPERATOR_METRICS_HOST": "127.0.0.1",
                "TABLESYNC_OPERATOR_METRICS_PORT": str(self.metrics_port),
                "TABLESYNC_OPERATOR_RESYNC_INTERVAL_SECONDS": str(RESYNC_SECONDS),
                "TABLESYNC_OPERATOR_LEASE_NAMESPACE": SYSTEM_NAMESPACE,
                "TABLESYNC_OPERATOR_DEFAULT_BACKOFF_LIMIT": "0",
                "TABLESYNC_OPERATOR_DEFAULT_ACTIVE_DEADLINE_SECONDS": "300",
                "TABLESYNC_OPERATOR_VERBOSE": "true",
                "TABLESYNC_OPERATOR_LOG_FORMAT": "full",  # timestamps, to read a failure by
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, wait_leading: bool = True) -> None:
        assert not self.running(), "already running"
        log = self.log_path.open("ab")
        log.write(f"\n===== start {self.name} {time.strftime('%H:%M:%S')} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [str(OPERATOR_BIN)],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(self.healthy, 30, f"{self.name} /healthz")
        if wait_leading:
            self.wait_leading()

    def wait_leading(self, timeout_seconds: float = 60) -> None:
        wait_for(
            lambda: "leading: Lease" in self.current_log(),
            timeout_seconds,
            f"{self.name} to acquire the Lease (log: {self.log_path})",
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def current_log(self) -> str:
        """The log since the last start."""
        return self.log_path.read_text(errors="replace").rsplit("===== start", 1)[-1]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def metrics_text(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as response:
            return str(response.read().decode())

    def stop(self, sig: int = signal.SIGTERM, timeout_seconds: float = 30) -> None:
        """Stop this process (by its pid), SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


def log_tail(path: Path, lines: int = 80, width: int = 300) -> str:
    """The last ``lines`` lines of a log, each cut to ``width`` characters (kopf logs whole
    objects on one line), for a failure report."""
    if not path.exists():
        return f"(no log at {path})"
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(line if len(line) <= width else line[:width] + " …" for line in tail)


def metric_value(text: str, metric: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text format, or None if absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


# ------------------------------------------------------------------------------------------
# A sync lane: source and destination databases, a bucket, Secrets, a TableSync.

PRICES_DDL = (
    "CREATE TABLE public.prices (product_id bigint PRIMARY KEY, sku text NOT NULL, "
    "price numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL)"
)


@dataclass
class Lane:
    """One TableSync and the real databases and bucket behind it."""

    cluster: Cluster
    pg: PostgresAccess
    namespace: str
    name: str
    source_db: str
    destination_db: str
    bucket: str

    # -- data ------------------------------------------------------------------------------
    def src(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return _sql(self.pg.uri(self.source_db), sql, params)

    def dst(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return _sql(self.pg.uri(self.destination_db), sql, params)

    def load(self, rows: int) -> None:
        """Create the prices table in both databases and fill the source with ``rows`` rows."""
        self.src(PRICES_DDL)
        self.dst(PRICES_DDL)
        self.src(
            "INSERT INTO public.prices SELECT g, 'sku-' || g, (g % 1000) + 0.99, "
            f"now() - interval '1 day' FROM generate_series(1, {rows}) g"
        )

    def table(self, db: str) -> list[tuple[Any, ...]]:
        return _sql(
            self.pg.uri(db),
            "SELECT product_id, sku, price, updated_at FROM public.prices ORDER BY product_id",
        )

    # -- cluster objects -------------------------------------------------------------------
    def secrets(self, destination_password: str | None = None) -> None:
        """The three Secrets the spec references (URIs for pods; MinIO keys)."""
        destination = self.pg.in_cluster_uri(self.destination_db)
        if destination_password is not None:
            destination = destination.replace(f":{self.pg.password}@", f":{destination_password}@")
        minio = self.cluster.minio
        for name, data in (
            ("replica", {"uri": self.pg.in_cluster_uri(self.source_db)}),
            ("warehouse", {"uri": destination}),
            (
                "s3",
                {"AWS_ACCESS_KEY_ID": minio.access_key, "AWS_SECRET_ACCESS_KEY": minio.secret_key},
            ),
        ):
            self.cluster.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": self.namespace},
                    "stringData": data,
                }
            )

    def manifest(self, **spec: Any) -> JsonDict:
        body: JsonDict = {
            "apiVersion": "tablesync.dev/v1alpha1",
            "kind": "TableSync",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "schedule": "0 3 * * *",
                "source": {
                    "uriSecretRef": {"name": "replica", "key": "uri"},
                    "table": "public.prices",
                    "primaryKey": ["product_id"],
                    "versionColumn": "updated_at",
                },
                "storage": {
                    "url": f"s3://{self.bucket}/prices",
                    "endpoint": self.cluster.minio.in_cluster_endpoint,
                    "credentialsSecretRef": {"name": "s3"},
                    "keepSnapshots": 3,
                },
                "destination": {
                    "uriSecretRef": {"name": "warehouse", "key": "uri"},
                    "table": "public.prices",
                },
            },
        }
        body["spec"].update(spec)
        return body

    def create(self, **spec: Any) -> JsonDict:
        self.cluster.apply(self.manifest(**spec))
        return self.get()

    def get(self) -> JsonDict:
        return self.get_object("tablesync", self.name)

    def get_object(self, kind: str, name: str) -> JsonDict:
        out: JsonDict = json.loads(
            self.cluster.kubectl("get", kind, name, "-n", self.namespace, "-o", "json").stdout
        )
        return out

    def status(self) -> JsonDict:
        status: JsonDict = self.get().get("status") or {}
        return status

    def condition(self, kind: str) -> JsonDict:
        for cond in self.status().get("conditions") or []:
            if cond["type"] == kind:
                return dict(cond)
        return {}

    def wait_condition(
        self, kind: str, status: str, reason: str | None = None, timeout_seconds: float = 60
    ) -> JsonDict:
        def check() -> JsonDict | None:
            cond = self.condition(kind)
            ok = cond.get("status") == status and (reason is None or cond.get("reason") == reason)
            return cond if ok else None

        return wait_for(
            check,
            timeout_seconds,
            f"{self.name}: {kind}={status}{f' ({reason})' if reason else ''}; "
            f"conditions now {self.status().get('conditions')}",
        )

    def annotate(self, key: str, value: str) -> None:
        self.cluster.kubectl(
            "annotate",
            "--overwrite",
            "-n",
            self.namespace,
            f"tablesync/{self.name}",
            f"{key}={value}",
        )

    def run(self, timeout_seconds: float = 240) -> JsonDict:
        """Request a run (the annotation) and return status.lastRun once that run finished."""
        before = (self.status().get("lastRun") or {}).get("jobName")
        self.annotate("tablesync.dev/run-requested-at", uuid.uuid4().hex)

        def finished() -> JsonDict | None:
            last = self.status().get("lastRun") or {}
            return last if last.get("jobName") and last.get("jobName") != before else None

        return wait_for(
            finished,
            timeout_seconds,
            f"a requested run of {self.name} to finish",
            interval_seconds=1,
        )

    def jobs(self) -> list[JsonDict]:
        items = self.cluster.batch.list_namespaced_job(
            self.namespace, label_selector=f"tablesync.dev/name={self.name}"
        ).items
        return [self.cluster.api_client.sanitize_for_serialization(j) for j in items]

    def cronjobs(self) -> list[JsonDict]:
        items = self.cluster.batch.list_namespaced_cron_job(self.namespace).items
        return [self.cluster.api_client.sanitize_for_serialization(c) for c in items]

    def events(self) -> list[JsonDict]:
        items = self.cluster.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={self.name}"
        ).items
        return [self.cluster.api_client.sanitize_for_serialization(e) for e in items]


def _sql(uri: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(uri, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []


@contextmanager
def lane(cluster: Cluster, pg: PostgresAccess, namespace: str, name: str) -> Iterator[Lane]:
    """Fresh databases and bucket for one TableSync in ``namespace``."""
    suffix = uuid.uuid4().hex[:8]
    source_db, destination_db, bucket = f"src_{suffix}", f"dst_{suffix}", f"tso-{suffix}"
    pg.create_database(source_db)
    pg.create_database(destination_db)
    cluster.minio.create_bucket(bucket)
    yield Lane(cluster, pg, namespace, name, source_db, destination_db, bucket)
