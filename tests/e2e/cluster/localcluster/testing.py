"""What e2e tests get from the ``cluster`` fixture: a ``Cluster`` handle and its helpers.

Used by ``tests/e2e/conftest.py``. A ``Cluster`` is either one this session started (local:
the state directory is known, container logs are files) or an existing cluster named by
``TABLESYNC_KUBECONFIG`` — a local one started with ``python -m localcluster up`` (found by
its ``state.json`` next to the kubeconfig) or any other, e.g. kind (logs come from the API;
MinIO and Postgres from the ``TABLESYNC_E2E_*`` variables that ``tests/e2e/kind/run.sh``
exports).

Endpoints come in pairs: what the test process uses, and what pods use ("in cluster"). On
the local cluster pods are local processes, so both are the same.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config

from .cronjobs import trigger_cronjob
from .logs import container_log_path, read_container_log
from .settings import KUBECTL
from .state import ClusterState

T = TypeVar("T")
JsonDict = dict[str, Any]


class HarnessError(RuntimeError):
    """The e2e harness is missing something it needs; the message says what to set."""


def wait_for(check: Callable[[], T | None], timeout_seconds: float, what: str,
             interval_seconds: float = 0.25) -> T:
    """Call ``check`` until it returns something truthy and return that; raise AssertionError
    naming ``what`` (and the last exception, if any) after ``timeout_seconds``."""
    deadline = time.monotonic() + timeout_seconds
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as err:
            last_error = err
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout_seconds:.0f} s waiting for "
                                 f"{what}{detail}")
        time.sleep(interval_seconds)


@dataclass(frozen=True)
class S3Access:
    """An S3 endpoint (MinIO) and its credentials."""

    endpoint: str
    """Reachable from the test process."""
    in_cluster_endpoint: str
    """Reachable from pods."""
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def env(self, in_cluster: bool = True) -> dict[str, str]:
        """The standard AWS variables (for a pod by default)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.in_cluster_endpoint if in_cluster else self.endpoint,
            "AWS_REGION": self.region,
        }

    def client(self) -> Any:
        """A boto3 S3 client for the test process."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def create_bucket(self, name: str) -> None:
        s3 = self.client()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)


def _require_env(name: str, purpose: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise HarnessError(f"{name} is not set: {purpose} (tests/e2e/kind/run.sh exports it)")
    return value


@dataclass
class Cluster:
    """A running cluster as the e2e tests see it. Build it with ``Cluster.connect``."""

    kubeconfig: Path
    api_client: Any
    """A ``kubernetes.client.ApiClient`` with admin rights."""
    state: ClusterState | None = None
    """The local cluster's state (None for a cluster the harness did not start, e.g. kind)."""
    _namespaces: list[str] = field(default_factory=list)

    @classmethod
    def connect(cls, kubeconfig: Path) -> Cluster:
        """A handle for the cluster of ``kubeconfig`` (local if a state.json sits beside it)."""
        if not kubeconfig.exists():
            raise HarnessError(f"kubeconfig {kubeconfig} does not exist")
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        return cls(kubeconfig=kubeconfig, api_client=api_client,
                   state=ClusterState.find_for_kubeconfig(kubeconfig))

    @property
    def local(self) -> bool:
        """True on the process-based local cluster (pods are local processes)."""
        return self.state is not None

    @property
    def preinstalled_release(self) -> tuple[str, str] | None:
        """(namespace, name) of a tablesync chart release that is already installed
        (``TABLESYNC_E2E_RELEASE``, set by tests/e2e/kind/run.sh), or None."""
        value = os.environ.get("TABLESYNC_E2E_RELEASE", "")
        namespace, _, name = value.partition("/")
        return (namespace, name) if namespace and name else None

    @property
    def core(self) -> Any:
        return client.CoreV1Api(self.api_client)

    @property
    def batch(self) -> Any:
        return client.BatchV1Api(self.api_client)

    @property
    def minio(self) -> S3Access:
        """MinIO: the local cluster's own, or the one ``TABLESYNC_E2E_MINIO_*`` describes."""
        if self.state is not None and self.state.minio is not None:
            m = self.state.minio
            return S3Access(m.endpoint, m.endpoint, m.access_key, m.secret_key)
        purpose = "the MinIO endpoint for a cluster the harness did not start"
        return S3Access(
            endpoint=_require_env("TABLESYNC_E2E_MINIO_ENDPOINT", purpose),
            in_cluster_endpoint=_require_env("TABLESYNC_E2E_MINIO_IN_CLUSTER_ENDPOINT", purpose),
            access_key=os.environ.get("TABLESYNC_E2E_MINIO_ACCESS_KEY", "minioadmin"),
            secret_key=os.environ.get("TABLESYNC_E2E_MINIO_SECRET_KEY", "minioadmin"),
        )

    # --- objects ---------------------------------------------------------------------------
    def kubectl(self, *args: str, input_text: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl --kubeconfig … ARGS``; with ``check`` a non-zero exit raises
        AssertionError carrying stderr."""
        proc = subprocess.run([str(KUBECTL), "--kubeconfig", str(self.kubeconfig), *args],
                              input=input_text, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): "
                                 f"{proc.stderr.strip()}")
        return proc

    def apply(self, manifests: JsonDict | list[JsonDict] | str,
              namespace: str | None = None) -> subprocess.CompletedProcess[str]:
        """``kubectl apply`` of manifest dicts or YAML text."""
        if isinstance(manifests, str):
            text = manifests
        else:
            items = manifests if isinstance(manifests, list) else [manifests]
            text = yaml.safe_dump_all(items)
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self.kubectl(*args, input_text=text)

    def create_namespace(self, prefix: str = "e2e") -> str:
        """Create a namespace ``<prefix>-<random>`` and wait until pods can run in it (its
        ``default`` ServiceAccount and ``kube-root-ca.crt`` exist). Returns its name."""
        name = f"{prefix[:50].rstrip('-')}-{secrets.token_hex(3)}"
        self.core.create_namespace({"metadata": {"name": name,
                                                 "labels": {"tablesync.dev/e2e": "true"}}})
        self._namespaces.append(name)
        wait_for(lambda: self.core.read_namespaced_service_account("default", name), 30,
                 f"ServiceAccount default in {name}")
        wait_for(lambda: self.core.read_namespaced_config_map("kube-root-ca.crt", name), 30,
                 f"ConfigMap kube-root-ca.crt in {name}")
        return name

    def delete_namespace(self, name: str, wait_seconds: float = 0) -> None:
        """Delete ``name`` (and everything in it); optionally wait until it is gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.delete_namespace(name)
        except ApiException as err:
            if err.status != 404:
                raise
        if wait_seconds:
            def gone() -> bool:
                try:
                    self.core.read_namespace(name)
                except ApiException as err:
                    return bool(err.status == 404)
                return False

            wait_for(gone, wait_seconds, f"namespace {name} to be deleted")

    # --- runs ------------------------------------------------------------------------------
    def trigger_cronjob(self, namespace: str, name: str, job_name: str | None = None) -> JsonDict:
        """Start CronJob ``name``'s Job now (``kubectl create job --from=cronjob/NAME``)."""
        return trigger_cronjob(self.api_client, namespace, name, job_name)

    def run_pod(self, namespace: str, name: str, image: str, command: list[str] | None = None,
                args: list[str] | None = None, env: Mapping[str, str] | None = None,
                restart_policy: str = "Never", **spec: Any) -> JsonDict:
        """Create a one-container pod (container name = pod name). ``command`` may be omitted
        for images in the image command map (e.g. ``tablesync/job:dev``). Extra keyword
        arguments go into the pod spec (``volumes=…``, ``serviceAccountName=…``)."""
        container: JsonDict = {"name": name, "image": image}
        if command:
            container["command"] = command
        if args:
            container["args"] = args
        if env:
            container["env"] = [{"name": k, "value": v} for k, v in env.items()]
        if "volumeMounts" in spec:
            container["volumeMounts"] = spec.pop("volumeMounts")
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace},
               "spec": {"restartPolicy": restart_policy, "containers": [container], **spec}}
        created: JsonDict = self.api_client.sanitize_for_serialization(
            self.core.create_namespaced_pod(namespace, pod))
        return created

    def pod(self, namespace: str, name: str) -> JsonDict:
        """The pod as a camelCase dict."""
        result: JsonDict = self.api_client.sanitize_for_serialization(
            self.core.read_namespaced_pod(name, namespace))
        return result

    def wait_pod_phase(self, namespace: str, name: str, phases: tuple[str, ...] = (
            "Succeeded", "Failed"), timeout_seconds: float = 60) -> JsonDict:
        """Wait until the pod's phase is one of ``phases``; return the pod dict."""
        def check() -> JsonDict | None:
            pod = self.pod(namespace, name)
            return pod if pod.get("status", {}).get("phase") in phases else None

        return wait_for(check, timeout_seconds, f"pod {namespace}/{name} to reach {phases}")

    def wait_job_finished(self, namespace: str, name: str,
                          timeout_seconds: float = 120) -> JsonDict:
        """Wait for a Job's Complete or Failed condition; return the Job dict."""
        def check() -> JsonDict | None:
            job: JsonDict = self.api_client.sanitize_for_serialization(
                self.batch.read_namespaced_job(name, namespace))
            for condition in job.get("status", {}).get("conditions") or []:
                if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
                    return job
            return None

        return wait_for(check, timeout_seconds, f"job {namespace}/{name} to finish")

    def job_pods(self, namespace: str, job_name: str) -> list[JsonDict]:
        """The Job's pods (by the ``job-name`` label), oldest first."""
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}")
        items: list[JsonDict] = [self.api_client.sanitize_for_serialization(p) for p in pods.items]
        return sorted(items, key=lambda p: p["metadata"]["creationTimestamp"])

    def container_log(self, namespace: str, pod: str, container: str | None = None) -> str:
        """A container's stdout+stderr: the runner's log file on the local cluster (kept after
        the pod is deleted), ``pods/log`` elsewhere. ``container`` defaults to the only one."""
        if container is None and self.state is not None:  # works after the pod is deleted, too
            logs = sorted(container_log_path(Path(self.state.state_dir), namespace, pod, "-")
                          .parent.glob("*.log"))
            if len(logs) == 1:
                container = logs[0].stem
        if container is None:
            spec = self.pod(namespace, pod)["spec"]
            names = [c["name"] for c in spec["containers"]]
            if len(names) != 1:
                raise ValueError(f"pod {namespace}/{pod} has containers {names}: name one")
            container = names[0]
        if self.state is not None:
            return read_container_log(Path(self.state.state_dir), namespace, pod, container)
        # kubernetes-client 36 returns the repr of the bytes for text responses
        # (kubernetes-client/python#2596): read the raw body instead.
        response = self.core.read_namespaced_pod_log(pod, namespace, container=container,
                                                     _preload_content=False)
        return str(response.data.decode("utf-8", "replace"))

    def termination_message(self, pod: JsonDict, container: str | None = None) -> str:
        """The terminated state's ``message`` of ``container`` (default: the first)."""
        statuses = pod.get("status", {}).get("containerStatuses") or []
        for status in statuses:
            if container is None or status["name"] == container:
                return str(status.get("state", {}).get("terminated", {}).get("message", ""))
        return ""

    def cleanup_namespaces(self) -> None:
        """Delete every namespace ``create_namespace`` made (end of session)."""
        for name in self._namespaces:
            self.delete_namespace(name)
        self._namespaces.clear()


@dataclass(frozen=True)
class PostgresAccess:
    """A Postgres superuser account: ``uri`` from the test process, ``in_cluster_uri`` for pods."""

    host: str
    port: int
    in_cluster_host: str
    in_cluster_port: int
    user: str = "postgres"
    password: str = "postgres"

    def uri(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def in_cluster_uri(self, dbname: str = "postgres") -> str:
        return (f"postgresql://{self.user}:{self.password}@{self.in_cluster_host}:"
                f"{self.in_cluster_port}/{dbname}")

    def create_database(self, name: str) -> str:
        """(Re)create database ``name``; return its URI for the test process."""
        import psycopg

        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    @classmethod
    def from_env(cls) -> PostgresAccess:
        """The Postgres ``tests/e2e/kind/run.sh`` installed (``TABLESYNC_E2E_POSTGRES_*``)."""
        purpose = "the Postgres endpoint for a cluster the harness did not start"
        host, _, port = _require_env("TABLESYNC_E2E_POSTGRES_HOSTPORT", purpose).rpartition(":")
        in_host, _, in_port = _require_env("TABLESYNC_E2E_POSTGRES_IN_CLUSTER_HOSTPORT",
                                           purpose).rpartition(":")
        return cls(host, int(port), in_host, int(in_port),
                   password=os.environ.get("TABLESYNC_E2E_POSTGRES_PASSWORD", "postgres"))

