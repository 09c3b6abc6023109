"""The pod runner's main loop: watch all pods, hand each of ours to a ``PodWorker``.

Started by ``python -m localcluster.runner`` (which ``controlplane.up`` spawns). Registers the
Node, keeps it Ready (``node.heartbeat``), serves container logs (``logserver``), lists and
watches pods (relisting after errors or 410 Gone) and dispatches: an unbound pod without
scheduling gates, or one bound to our node, gets a worker; a DELETED event stops it. On
SIGTERM every container is stopped before the runner exits, so ``down`` leaves no process.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ..images import ImageEntry
from ..kubeapi import ApiError, KubeApi
from ..settings import NODE_NAME, VENV
from ..state import ClusterState
from .logserver import serve_logs
from .node import HEARTBEAT_SECONDS, heartbeat, register_node
from .pods import PodWorker, RunnerContext

JsonDict = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")


def base_environment(apiserver_port: int) -> dict[str, str]:
    """What every container starts from: the project's venv on PATH and the in-cluster API."""
    port = str(apiserver_port)
    return {
        "PATH": f"{VENV / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "VIRTUAL_ENV": str(VENV),
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
        "KUBERNETES_PORT_443_TCP": f"tcp://127.0.0.1:{port}",
        "KUBERNETES_PORT_443_TCP_ADDR": "127.0.0.1",
        "KUBERNETES_PORT_443_TCP_PORT": port,
        "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    }


class Runner:
    """One per cluster. ``run()`` blocks until SIGTERM/SIGINT."""

    def __init__(self, state: ClusterState, image_commands: dict[str, ImageEntry],
                 node_name: str = NODE_NAME) -> None:
        self.state = state
        self.api = KubeApi(state.credentials())
        self.log = logging.getLogger("runner")
        self.node_name = node_name
        self.ctx = RunnerContext(
            api=self.api, node_name=node_name, pods_dir=state.pods_dir,
            claims_dir=Path(state.state_dir) / "claims", image_commands=image_commands,
            base_env=base_environment(state.apiserver_port), log=self.log,
        )
        self.workers: dict[str, PodWorker] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # --- lookups for the log endpoint ----------------------------------------------------------
    def find_log(self, namespace: str, pod: str, container: str) -> tuple[Path, bool] | None:
        with self._lock:
            workers = [w for w in self.workers.values()
                       if w.namespace == namespace and w.name == pod]
        if workers:
            worker = workers[-1]
            return worker.log_path(container), worker.container_running(container)
        path = self.state.pods_dir / f"{namespace}_{pod}" / f"{container}.log"
        return (path, False) if path.exists() else None

    # --- dispatch ------------------------------------------------------------------------------
    def _ours(self, pod: JsonDict) -> bool:
        spec = pod.get("spec", {})
        node = spec.get("nodeName")
        if node == self.node_name:
            return True
        return not node and not spec.get("schedulingGates")

    def dispatch(self, kind: str, pod: JsonDict) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self.workers.get(uid)
            if kind == "DELETED":
                if worker is not None:
                    del self.workers[uid]
                    worker.deleted()
                    if worker.finished:
                        worker.cleanup()
                return
            if worker is not None:
                worker.update(pod)
                if worker.finished and pod["metadata"].get("deletionTimestamp"):
                    self._force_delete(pod)
                return
            if not self._ours(pod):
                return
            phase = pod.get("status", {}).get("phase")
            if pod["metadata"].get("deletionTimestamp"):
                if pod["spec"].get("nodeName") == self.node_name:
                    self._force_delete(pod)  # nothing of it runs here (e.g. runner restarted)
                return
            if phase in TERMINAL:
                return
            started = [s for s in pod.get("status", {}).get("containerStatuses") or []
                       if "running" in s.get("state", {}) or "terminated" in s.get("state", {})]
            if started:  # a pod from before a runner restart: its processes are gone
                self._fail_orphan(pod)
                return
            worker = PodWorker(self.ctx, pod)
            self.workers[uid] = worker
            worker.start()

    def _force_delete(self, pod: JsonDict) -> None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        try:
            self.api.delete(path, {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
        except ApiError as err:
            self.log.warning("force-deleting %s: %s", path, err)

    def _fail_orphan(self, pod: JsonDict) -> None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        try:
            self.api.patch(path, {"status": {
                "phase": "Failed", "reason": "RunnerRestarted",
                "message": "the pod runner restarted and lost this pod's processes"}},
                "strategic")
        except ApiError as err:
            self.log.warning("failing orphan %s: %s", path, err)

    # --- threads --------------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.api.get("/api/v1/pods")
                seen = set()
                for pod in listing.get("items", []):
                    seen.add(pod["metadata"]["uid"])
                    self.dispatch("ADDED", pod)
                with self._lock:
                    vanished = [w for uid, w in self.workers.items() if uid not in seen]
                for worker in vanished:
                    self.dispatch("DELETED", {"metadata": {"uid": worker.uid}})
                version = listing["metadata"]["resourceVersion"]
                while not self._stop.is_set():
                    relist = False
                    for event in self.api.watch("/api/v1/pods", version, timeout_seconds=290):
                        kind, obj = event["type"], event["object"]
                        if kind == "ERROR":
                            relist = True
                            break
                        version = obj["metadata"].get("resourceVersion", version)
                        if kind != "BOOKMARK":
                            self.dispatch(kind, obj)
                    if relist:
                        break
            except Exception as err:
                if self._stop.is_set():
                    return
                self.log.warning("pod watch failed (%s); relisting in 1 s", err)
                time.sleep(1)

    def _heartbeat_loop(self, log_port: int) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                heartbeat(self.api, self.node_name, log_port)
            except Exception as err:
                self.log.warning("node heartbeat failed: %s", err)

    def run(self) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        pki = Path(self.state.state_dir) / "pki"
        server = serve_logs(self.state.runner_log_port, pki / "runner.crt", pki / "runner.key",
                            self.find_log)
        register_node(self.api, self.node_name, self.state.runner_log_port)
        self.log.info("node %s registered and Ready", self.node_name)
        threading.Thread(target=self._heartbeat_loop, args=(self.state.runner_log_port,),
                         name="heartbeat", daemon=True).start()
        threading.Thread(target=self._watch_loop, name="watch", daemon=True).start()
        self._stop.wait()
        self.log.info("stopping: killing every container")
        with self._lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.shutdown()
        for worker in workers:
            worker.thread.join(timeout=15)
        server.shutdown()
        self.log.info("stopped")
