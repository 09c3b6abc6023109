"""Start, inspect and stop the local cluster: etcd, kube-apiserver, kube-controller-manager,
MinIO and the pod runner, all on 127.0.0.1 and free ports.

Called by ``python -m localcluster up|down|status`` (the Makefile's cluster-up/cluster-down)
and by the ``cluster`` fixture in ``tests/e2e/conftest.py``. ``up`` writes the state directory
(see ``state``) as it goes, so ``down`` can stop whatever was started even after a failed
``up``. Every process runs in its own session and is stopped by its recorded pid (pinned by
start time), never by name.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.support.services import (
    MinioServer,
    ServiceError,
    cluster_bin_dir,
    free_port,
    start_minio,
)

from .images import dump_image_commands, load_image_commands
from .kubeapi import ApiError, KubeApi
from .pki import Pki, PkiError, make_pki
from .procs import ProcessRecord, process_start_ticks, spawn, stop
from .settings import (
    NODE_NAME,
    PACKAGE_PARENT,
    REPO_ROOT,
    SERVICE_CIDR,
    SERVICE_IP,
    Timeouts,
)
from .state import STATE_FILE, STOPPED_STATE_FILE, ClusterState, MinioInfo

MARKER = ".localcluster-state"
ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTROLLERS = [
    "cronjob-controller", "job-controller", "garbage-collector-controller",
    "namespace-controller", "serviceaccount-controller", "serviceaccount-token-controller",
    "ttl-after-finished-controller", "deployment-controller", "replicaset-controller",
    "root-ca-certificate-publisher-controller", "pod-garbage-collector-controller",
    "clusterrole-aggregation-controller",
]
"""kube-controller-manager ``--controllers`` (1.36 names; the short 1.2x aliases are gone)."""
STOP_ORDER = ["runner", "kube-controller-manager", "kube-apiserver", "minio", "etcd",
              "supervisor"]
"""``supervisor``: the process that ran ``up`` for the CLI; it only reaps the others and exits
once they are gone."""

Progress = Callable[[str], None]


class ClusterError(RuntimeError):
    """The cluster could not be started or stopped; the message names the log to read."""


def _stderr(message: str) -> None:
    print(f"[localcluster] {message}", file=sys.stderr, flush=True)


def _mountpoints_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve()).rstrip("/") + "/"
    with open("/proc/self/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]


def reset_state_dir(state_dir: Path) -> None:
    """Empty ``state_dir`` for a new cluster. Refuses a directory that is not ours or that has
    anything mounted inside it (never delete through a bind mount)."""
    if state_dir.exists() and any(state_dir.iterdir()):
        if not (state_dir / MARKER).exists():
            raise ClusterError(f"{state_dir} is not empty and is not a localcluster state "
                               f"directory (no {MARKER}); choose another --state")
        mounted = _mountpoints_under(state_dir)
        if mounted:
            raise ClusterError(f"refusing to clear {state_dir}: mounted inside: {mounted[:3]}")
        for child in state_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / MARKER).write_text("state directory of tests/e2e/cluster/localcluster\n")


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str, user: str) -> None:
    """A kubeconfig with absolute paths and an inline token (kopf reads both)."""
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "tablesync-local",
                      "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "tablesync-local",
                      "context": {"cluster": "tablesync-local", "user": user,
                                  "namespace": "default"}}],
        "current-context": "tablesync-local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _wait(what: str, check: Callable[[], bool], timeout_seconds: float,
          processes: list[tuple[str, subprocess.Popen[bytes], str]]) -> None:
    """Poll ``check`` until it is true; fail early if one of ``processes`` exits."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        for name, proc, log in processes:
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited with {proc.returncode} while waiting for "
                                   f"{what}; see {log}:\n{_tail(Path(log))}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    logs = ", ".join(log for _, _, log in processes)
    raise ClusterError(f"timed out after {timeout_seconds:.0f} s waiting for {what}; see {logs}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _start_minio_async(state_dir: Path, bin_dir: Path) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []

    def target() -> None:
        try:
            result.append(start_minio(state_dir / "minio", minio_bin=bin_dir / "minio"))
        except Exception as err:
            result.append(err)

    thread = threading.Thread(target=target, name="minio-start", daemon=True)
    thread.start()
    return thread, result


PORT_RACE_ATTEMPTS = 3


def up(state_dir: Path, owner_pid: int = 0, image_commands_file: Path | None = None,
       timeouts: Timeouts | None = None, progress: Progress = _stderr) -> ClusterState:
    """Start the whole cluster in ``state_dir`` (cleared first) and wait until it is usable:
    API server ready, the Node Ready, the ``default`` ServiceAccount and ``kube-root-ca.crt``
    published. ``owner_pid`` marks a cluster that belongs to that process (pytest).

    Ports are picked free just before use; if another process grabs one first, the start is
    retried (up to PORT_RACE_ATTEMPTS times). On failure everything started so far is stopped
    and ClusterError is raised.
    """
    for attempt in range(1, PORT_RACE_ATTEMPTS + 1):
        try:
            return _up_once(state_dir, owner_pid, image_commands_file, timeouts, progress)
        except ClusterError as err:
            if "address already in use" not in str(err) or attempt == PORT_RACE_ATTEMPTS:
                raise
            progress("a port was taken by another process meanwhile; starting again")
    raise AssertionError("unreachable")


def _up_once(state_dir: Path, owner_pid: int, image_commands_file: Path | None,
             timeouts: Timeouts | None, progress: Progress) -> ClusterState:
    timeouts = timeouts or Timeouts()
    began = time.monotonic()
    state_dir = state_dir.resolve()
    if (state_dir / STATE_FILE).exists():
        down(state_dir, progress=progress)
    reset_state_dir(state_dir)
    logs = state_dir / "logs"
    logs.mkdir()
    try:
        bin_dir = cluster_bin_dir()
    except ServiceError as err:
        raise ClusterError(str(err)) from err
    for binary in ("etcd", "kube-apiserver", "kube-controller-manager", "minio"):
        if not (bin_dir / binary).exists():
            raise ClusterError(f"{bin_dir / binary} is missing: run "
                               "bash tests/e2e/cluster/install-binaries.sh")
    (state_dir / "image-commands.json").write_text(
        dump_image_commands(load_image_commands(image_commands_file)))

    etcd_port, etcd_peer, api_port, log_port = (free_port() for _ in range(4))
    admin_token, kcm_token = secrets.token_hex(24), secrets.token_hex(24)
    state = ClusterState(
        state_dir=str(state_dir), apiserver_url=f"https://127.0.0.1:{api_port}",
        apiserver_port=api_port, etcd_url=f"http://127.0.0.1:{etcd_port}",
        kubeconfig=str(state_dir / "kubeconfig"), ca_file=str(state_dir / "pki" / "ca.crt"),
        admin_token=admin_token, bin_dir=str(bin_dir), runner_log_port=log_port,
        owner_pid=owner_pid,
        owner_start_ticks=(process_start_ticks(owner_pid) or 0) if owner_pid else 0,
    )
    state.save()
    popens: dict[str, tuple[str, subprocess.Popen[bytes], str]] = {}

    def launch(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        proc, record = spawn(name, argv, logs / f"{name}.log", env=env, cwd=REPO_ROOT)
        state.processes.append(record)
        state.save()
        popens[name] = (name, proc, record.log)

    minio_thread, minio_result = _start_minio_async(state_dir, bin_dir)
    try:
        progress(f"starting etcd on 127.0.0.1:{etcd_port}")
        launch("etcd", [
            str(bin_dir / "etcd"), "--name", "local", "--data-dir", str(state_dir / "etcd"),
            "--listen-client-urls", state.etcd_url, "--advertise-client-urls", state.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"local=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        pki = make_pki(state_dir / "pki", SERVICE_IP)
        tokens = state_dir / "tokens.csv"
        tokens.write_text(f'{admin_token},admin,admin,"system:masters"\n'
                          f"{kcm_token},system:kube-controller-manager,kube-controller-manager\n")
        tokens.chmod(0o600)
        write_kubeconfig(Path(state.kubeconfig), state.apiserver_url, pki.ca_cert, admin_token,
                         "admin")
        write_kubeconfig(state_dir / "kube-controller-manager.kubeconfig", state.apiserver_url,
                         pki.ca_cert, kcm_token, "kube-controller-manager")
        _wait("etcd", lambda: _http_ok(f"{state.etcd_url}/health"), timeouts.etcd_seconds,
              [popens["etcd"]])

        progress(f"starting kube-apiserver on {state.apiserver_url}")
        launch("kube-apiserver", _apiserver_argv(bin_dir, state, pki, tokens))
        api = state.api()
        _wait("kube-apiserver /readyz", lambda: api.text("/readyz")[0] == 200,
              timeouts.apiserver_seconds, [popens["kube-apiserver"], popens["etcd"]])

        progress("starting kube-controller-manager and the pod runner")
        launch("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"),
            "--kubeconfig", str(state_dir / "kube-controller-manager.kubeconfig"),
            "--leader-elect=false", "--secure-port=0", "--controllers", ",".join(CONTROLLERS),
            "--root-ca-file", str(pki.ca_cert),
            "--service-account-private-key-file", str(pki.service_account_key),
            "--use-service-account-credentials=true",
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--concurrent-cron-job-syncs=5", "--concurrent-job-syncs=5",
            "--concurrent-gc-syncs=10", "--v=1",
        ])
        launch("runner", [sys.executable, "-m", "localcluster.runner", "--state", str(state_dir)],
               env={**os.environ, "PYTHONPATH": str(PACKAGE_PARENT), "PYTHONUNBUFFERED": "1"})
        waiting = [popens["kube-controller-manager"], popens["runner"], popens["kube-apiserver"]]
        _wait(f"node {NODE_NAME} Ready", lambda: _node_ready(api), timeouts.runner_seconds,
              waiting)
        _wait("the default ServiceAccount and kube-root-ca.crt (controller-manager)",
              lambda: _namespace_ready(api, "default"), timeouts.controllers_seconds, waiting)

        minio_thread.join(timeout=60)
        minio = minio_result[0] if minio_result else ClusterError("MinIO did not start in 60 s")
        if isinstance(minio, BaseException):
            raise ClusterError(f"MinIO: {minio}") from minio
        assert isinstance(minio, MinioServer)
        record = ProcessRecord("minio", minio.process.pid,
                               process_start_ticks(minio.process.pid) or -1,
                               str(state_dir / "minio" / "minio.log"))
        state.processes.append(record)
        state.minio = MinioInfo(endpoint=minio.endpoint, access_key=minio.access_key,
                                secret_key=minio.secret_key, data_dir=str(minio.data_dir))
        state.startup_seconds = round(time.monotonic() - began, 1)
        state.save()
    except BaseException as err:
        minio_thread.join(timeout=60)
        for item in minio_result:
            if isinstance(item, MinioServer) and state.minio is None:
                item.stop()
        down(state_dir, progress=progress)
        if isinstance(err, (PkiError, ApiError, OSError)):
            raise ClusterError(f"{err.__class__.__name__}: {err}") from err
        raise
    progress(f"cluster up in {state.startup_seconds} s")
    return state


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def _node_ready(api: KubeApi) -> bool:
    node = api.get_or_none(f"/api/v1/nodes/{NODE_NAME}")
    conditions = (node or {}).get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _namespace_ready(api: KubeApi, namespace: str) -> bool:
    """The ServiceAccount admission needs ``default``; projected tokens need the CA ConfigMap."""
    return (api.get_or_none(f"/api/v1/namespaces/{namespace}/serviceaccounts/default") is not None
            and api.get_or_none(f"/api/v1/namespaces/{namespace}/configmaps/kube-root-ca.crt")
            is not None)


def _apiserver_argv(bin_dir: Path, state: ClusterState, pki: Pki, tokens: Path) -> list[str]:
    return [
        str(bin_dir / "kube-apiserver"),
        "--etcd-servers", state.etcd_url,
        "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
        "--secure-port", str(state.apiserver_port),
        "--tls-cert-file", str(pki.apiserver_cert),
        "--tls-private-key-file", str(pki.apiserver_key),
        "--client-ca-file", str(pki.ca_cert),
        "--token-auth-file", str(tokens),
        "--authorization-mode", "Node,RBAC",
        "--service-account-issuer", ISSUER,
        "--service-account-key-file", str(pki.service_account_pub),
        "--service-account-signing-key-file", str(pki.service_account_key),
        "--service-cluster-ip-range", SERVICE_CIDR,
        "--kubelet-certificate-authority", str(pki.ca_cert),
        "--kubelet-preferred-address-types", "InternalIP",
        "--allow-privileged=true",
        "--endpoint-reconciler-type=none",  # 127.0.0.1 may not be a Service endpoint
        "--cert-dir", str(Path(state.state_dir) / "pki" / "apiserver-generated"),
        "--profiling=false",
        "--v=1",
    ]


def down(state_dir: Path, grace_seconds: float = 10.0, progress: Progress = _stderr) -> list[str]:
    """Stop everything ``up`` started in ``state_dir`` (runner first, so it stops the pods'
    processes; then leftovers from pod records). Returns what could not be stopped."""
    state_dir = state_dir.resolve()
    failed: list[str] = []
    records: list[ProcessRecord] = []
    if (state_dir / STATE_FILE).exists():
        records = ClusterState.load(state_dir).processes
    order = {name: index for index, name in enumerate(STOP_ORDER)}
    for record in sorted(records, key=lambda r: order.get(r.name, len(order))):
        if record.alive():
            progress(f"stopping {record.name} (pid {record.pid})")
        if not stop(record, grace_seconds=grace_seconds if record.name != "runner" else 30):
            failed.append(f"{record.name} (pid {record.pid})")
    for process_file in sorted((state_dir / "pods").glob("*/run/*/process.json")):
        record = ProcessRecord.from_json(json.loads(process_file.read_text()))
        if record.alive():
            progress(f"stopping leftover container {record.name} (pid {record.pid})")
            if not stop(record, grace_seconds=2):
                failed.append(f"{record.name} (pid {record.pid})")
    for volumes in (state_dir / "pods").glob("*/volumes"):
        if not _mountpoints_under(volumes):
            shutil.rmtree(volumes, ignore_errors=True)
    if not failed and (state_dir / STATE_FILE).exists():
        (state_dir / STATE_FILE).rename(state_dir / STOPPED_STATE_FILE)
    return failed


def status(state_dir: Path) -> tuple[bool, list[str]]:
    """(every process alive and the API server ready, human-readable lines)."""
    state_dir = state_dir.resolve()
    if not (state_dir / STATE_FILE).exists():
        return False, [f"no cluster running in {state_dir}"]
    state = ClusterState.load(state_dir)
    lines = [f"state dir:   {state_dir}", f"kubeconfig:  {state.kubeconfig}",
             f"API server:  {state.apiserver_url}"]
    healthy = True
    for record in state.processes:
        alive = record.alive()
        healthy &= alive
        lines.append(f"  {record.name:<24} pid {record.pid:<8} "
                     f"{'running' if alive else 'NOT RUNNING'}  log {record.log}")
    try:
        code, body = state.api().text("/readyz")
        lines.append(f"/readyz:     {code} {body.strip()[:60]}")
        healthy &= code == 200
    except Exception as err:
        lines.append(f"/readyz:     unreachable ({err.__class__.__name__})")
        healthy = False
    if state.minio:
        lines.append(f"MinIO:       {state.minio.endpoint} "
                     f"({state.minio.access_key}/{state.minio.secret_key})")
    return healthy, lines


def is_owner_alive(state: ClusterState) -> bool:
    """Whether the process that owns a pytest-started cluster still runs."""
    if not state.owner_pid:
        return True
    return process_start_ticks(state.owner_pid) == state.owner_start_ticks


def reap_stale(parent: Path, progress: Progress = _stderr) -> None:
    """Stop clusters under ``parent`` whose owning pytest process is gone (killed sessions)."""
    for state_file in parent.glob(f"*/{STATE_FILE}"):
        try:
            state = ClusterState.load(state_file.parent)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if state.owner_pid and not is_owner_alive(state):
            progress(f"stopping stale cluster {state_file.parent} (owner pid {state.owner_pid})")
            down(state_file.parent, progress=progress)


__all__ = ["ApiError", "ClusterError", "down", "reap_stale", "status", "up"]
