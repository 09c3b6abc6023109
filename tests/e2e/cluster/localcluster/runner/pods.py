"""One pod on the local node, from binding to its terminal phase: the kubelet's job, in small.

``PodWorker`` is created by ``loop.Runner`` for every pod that is unbound (there is no
kube-scheduler) or bound to our node, and lives in its own thread:

1. bind the pod to the node (``pods/binding``); set ``startTime``;
2. materialise its volumes (``volumes``); a missing Secret/ConfigMap keeps it Pending with the
   kubelet's waiting reasons and is retried;
3. run ``initContainers`` one after another, then all ``containers`` at once (``containers``),
   reporting ``Running`` and every container's state through ``pods/status``;
4. restart containers per ``restartPolicy`` (Always / OnFailure, in place, with back-off);
5. finish with phase Succeeded / Failed and each container's terminated state (exit code,
   reason, termination message).

At any point a ``deletionTimestamp`` stops the containers (SIGTERM, SIGKILL after the grace
period), writes the final status and removes the pod with ``gracePeriodSeconds: 0``;
``activeDeadlineSeconds`` stops them and fails the pod with reason ``DeadlineExceeded``.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..images import ImageEntry, container_argv, lookup
from ..kubeapi import ApiError, KubeApi
from .containers import ContainerRun, Mount, Terminated, now_rfc3339, start_container
from .podenv import HOST_IP, POD_IP, ConfigError, UnsupportedError, expand, resolve_env
from .volumes import mount_source, prepare_volumes

JsonDict = dict[str, Any]
POLL_SECONDS = 0.2
CONFIG_RETRY_SECONDS = 2.0
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 20.0
DEFAULT_GRACE_SECONDS = 30
SHUTDOWN_GRACE_SECONDS = 2.0
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


@dataclass
class RunnerContext:
    """What every pod worker shares: API access, where files go, how to run images."""

    api: KubeApi
    node_name: str
    pods_dir: Path
    claims_dir: Path
    image_commands: dict[str, ImageEntry]
    base_env: dict[str, str]
    log: logging.Logger


class _Stop(Exception):
    """The worker is done: the pod was deleted or the runner is shutting down."""


class ApiObjects:
    """``podenv.ObjectSource`` over the API server."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    def secret(self, namespace: str, name: str) -> JsonDict | None:
        return self.api.get_or_none(f"/api/v1/namespaces/{namespace}/secrets/{name}")

    def config_map(self, namespace: str, name: str) -> JsonDict | None:
        return self.api.get_or_none(f"/api/v1/namespaces/{namespace}/configmaps/{name}")


@dataclass
class ContainerStatus:
    """Our record of one container, rendered as a Kubernetes ``ContainerStatus``."""

    spec: JsonDict
    init: bool
    state: JsonDict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: JsonDict = field(default_factory=dict)
    restart_count: int = 0
    run: ContainerRun | None = None
    restart_at: float | None = None
    """monotonic time of the next (re)start attempt; None when nothing is scheduled."""
    exit_code: int | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return "running" in self.state

    def render(self) -> JsonDict:
        status: JsonDict = {
            "name": self.name, "image": self.spec.get("image", ""),
            "imageID": f"local://{self.spec.get('image', '')}",
            "ready": self.running and not self.init, "started": self.running,
            "restartCount": self.restart_count, "state": self.state,
            "lastState": self.last_state,
        }
        if self.run is not None:
            status["containerID"] = self.run.container_id
        return status


def _wait(message: str | None, reason: str) -> JsonDict:
    waiting: JsonDict = {"reason": reason}
    if message:
        waiting["message"] = message
    return {"waiting": waiting}


class PodWorker:
    """Runs one pod (identified by uid) until it is terminal or deleted. Thread-safe API:
    ``update`` (new pod version from the watch), ``deleted``, ``shutdown``."""

    def __init__(self, ctx: RunnerContext, pod: JsonDict) -> None:
        self.ctx = ctx
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._gone = False
        self._shutdown = False
        self.finished = False
        self.pod_dir = ctx.pods_dir / f"{self.namespace}_{self.name}"
        spec = pod["spec"]
        self.init_statuses = [ContainerStatus(c, True) for c in spec.get("initContainers") or []]
        self.statuses = [ContainerStatus(c, False) for c in spec["containers"]]
        for status in self.init_statuses:
            status.state = _wait(None, "PodInitializing")
        for status in self.statuses:
            status.state = _wait(None, "PodInitializing" if self.init_statuses
                                 else "ContainerCreating")
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time: str | None = None
        self._started_monotonic: float | None = None
        self.conditions: dict[str, JsonDict] = {}
        self._volumes: dict[str, Path] | None = None
        self._last_sent: str = ""
        self.thread = threading.Thread(target=self._main, name=f"pod {self.namespace}/{self.name}",
                                       daemon=True)

    # --- called from other threads -------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def update(self, pod: JsonDict) -> None:
        with self._lock:
            self._pod = pod
        self._wake.set()

    def deleted(self) -> None:
        self._gone = True
        self._wake.set()

    def shutdown(self) -> None:
        self._shutdown = True
        self._wake.set()

    def log_path(self, container: str) -> Path:
        return self.pod_dir / f"{container}.log"

    def container_running(self, container: str) -> bool:
        return any(s.name == container and (s.running or s.restart_at is not None)
                   for s in [*self.init_statuses, *self.statuses]) and not self.finished

    # --- the worker thread -----------------------------------------------------------------
    @property
    def pod(self) -> JsonDict:
        with self._lock:
            return self._pod

    @property
    def api_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    def _main(self) -> None:
        try:
            self._run()
        except _Stop:
            pass
        except Exception as err:
            self.ctx.log.exception("pod %s/%s: runner error", self.namespace, self.name)
            try:
                self._kill_all(SHUTDOWN_GRACE_SECONDS)
                self._fail("RunnerError", f"pod runner error: {err}")
            except Exception:
                self.ctx.log.exception("pod %s/%s: could not report the error",
                                       self.namespace, self.name)
        finally:
            self.finished = True
            if self._gone:
                self.cleanup()

    def _run(self) -> None:
        if not self.pod["spec"].get("nodeName"):
            self._bind()
        self._setup_pod_dir()
        self.start_time = self.pod.get("status", {}).get("startTime") or now_rfc3339()
        self._started_monotonic = time.monotonic()
        self._prepare_volumes()
        restart_policy = self.pod["spec"].get("restartPolicy", "Always")
        for status in self.init_statuses:
            status.restart_at = time.monotonic()
            while True:
                self._step_container(status, restart_policy)
                if status.exit_code == 0 and status.restart_at is None:
                    break
                if status.exit_code not in (None, 0) and status.restart_at is None:
                    self._finish()
                    return
                self._checkpoint()
        self._set_condition("Initialized", True)
        for status in self.statuses:
            status.restart_at = time.monotonic()
        while True:
            for status in self.statuses:
                self._step_container(status, restart_policy)
            if all(s.exit_code is not None and s.restart_at is None for s in self.statuses):
                self._finish()
                return
            self._report()
            self._checkpoint()

    def _bind(self) -> None:
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.ctx.node_name}}
        try:
            self.ctx.api.create(f"{self.api_path}/binding", body)
        except ApiError as err:
            if err.status == 404:
                raise _Stop() from err
            current = self.ctx.api.get_or_none(self.api_path)
            if current is None or current["spec"].get("nodeName") != self.ctx.node_name:
                raise _Stop() from err
        self.ctx.log.info("pod %s/%s: bound to %s", self.namespace, self.name,
                          self.ctx.node_name)

    def _setup_pod_dir(self) -> None:
        uid_file = self.pod_dir / "uid"
        if uid_file.exists() and uid_file.read_text() != self.uid:
            old = uid_file.read_text()
            target = self.pod_dir.with_name(f"{self.pod_dir.name}.{old[:8]}")
            shutil.rmtree(target, ignore_errors=True)
            self.pod_dir.rename(target)
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        uid_file.write_text(self.uid)

    def _prepare_volumes(self) -> None:
        def issue_token(audience: str | None, expiration_seconds: int) -> str:
            spec = self.pod["spec"]
            account = spec.get("serviceAccountName") or "default"
            body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"audiences": [audience] if audience else [],
                             "expirationSeconds": expiration_seconds,
                             "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                                "name": self.name, "uid": self.uid}}}
            path = f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token"
            try:
                response = self.ctx.api.create(path, body)
            except ApiError as err:
                raise ConfigError(f"token for service account {account}: {err}") from err
            return str(response["status"]["token"])

        while True:
            try:
                self._volumes = prepare_volumes(self.pod, self.pod_dir, self.ctx.claims_dir,
                                                ApiObjects(self.ctx.api), issue_token)
                break
            except ConfigError as err:
                for status in [*self.init_statuses, *self.statuses]:
                    status.state = _wait(f"MountVolume.SetUp failed: {err}", "ContainerCreating")
                self._report()
                self._checkpoint(CONFIG_RETRY_SECONDS)
            except UnsupportedError as err:
                self._fail("Unsupported", str(err))
                raise _Stop() from err
        self._set_condition("PodReadyToStartContainers", True)
        self._set_condition("Initialized", not self.init_statuses,
                            None if not self.init_statuses else "ContainersNotInitialized")

    def _step_container(self, status: ContainerStatus, restart_policy: str) -> None:
        """Advance one container: notice its exit, decide on a restart, (re)start it when due."""
        run = status.run
        if run is not None and status.running:
            code = run.poll()
            if code is not None:
                self._record_exit(status, run.result(code))
                if status.init:  # init containers are retried only after a failure
                    restart = restart_policy != "Never" and code != 0
                else:
                    restart = restart_policy == "Always" or (restart_policy == "OnFailure"
                                                             and code != 0)
                if restart:
                    delay = min(BACKOFF_BASE_SECONDS * 2 ** status.restart_count,
                                BACKOFF_MAX_SECONDS)
                    status.restart_at = time.monotonic() + delay
                    status.last_state = status.state
                    status.state = _wait(f"back-off restarting failed container {status.name}",
                                         "CrashLoopBackOff")
                self._report()
        if status.restart_at is not None and time.monotonic() >= status.restart_at:
            self._start(status)

    def _start(self, status: ContainerStatus) -> None:
        spec, pod = status.spec, self.pod
        entry = lookup(self.ctx.image_commands, spec.get("image", ""))
        try:
            env = resolve_env(pod, spec, ApiObjects(self.ctx.api), self.ctx.base_env)
        except ConfigError as err:
            status.state = _wait(str(err), "CreateContainerConfigError")
            status.restart_at = time.monotonic() + CONFIG_RETRY_SECONDS
            self._report()
            return
        except UnsupportedError as err:
            self._fail("Unsupported", str(err))
            raise _Stop() from err
        hostname = (pod["spec"].get("hostname") or self.name)[:63].rstrip("-.")
        env.setdefault("HOSTNAME", hostname)
        command = [expand(x, env) for x in spec.get("command") or []]
        args = [expand(x, env) for x in spec.get("args") or []]
        argv = container_argv(entry, command, args)
        if not argv:
            message = (f"container {status.name}: image {spec.get('image')!r} has no entry in the "
                       "image command map and the container gives no command "
                       "(see tests/e2e/cluster/localcluster/images.py)")
            self._record_exit(status, Terminated(128, "StartError", message, now_rfc3339(),
                                                 now_rfc3339(), ""))
            status.restart_at = None
            return
        assert self._volumes is not None
        mounts = []
        try:
            for mount in spec.get("volumeMounts") or []:
                source = mount_source(self._volumes, mount, env)
                mounts.append(Mount(str(source), mount["mountPath"], bool(mount.get("readOnly"))))
        except UnsupportedError as err:
            self._fail("Unsupported", str(err))
            raise _Stop() from err
        if status.run is not None:
            status.restart_count += 1
        run = start_container(
            f"{self.namespace}/{self.name}/{status.name}", self.pod_dir / "run" / status.name,
            self.log_path(status.name), argv, env, mounts, spec.get("workingDir") or "/",
            spec.get("terminationMessagePath") or "/dev/termination-log",
            spec.get("terminationMessagePolicy") or "File", hostname,
        )
        status.run = run
        status.restart_at = None
        status.exit_code = None
        status.state = {"running": {"startedAt": run.started_at}}
        self.ctx.log.info("pod %s/%s: container %s started (pid %d): %s", self.namespace,
                          self.name, status.name, run.process.pid, json.dumps(argv)[:300])
        if not status.init:
            self.phase = "Running"
        self._report()

    def _record_exit(self, status: ContainerStatus, result: Terminated) -> None:
        status.exit_code = result.exit_code
        status.state = {"terminated": result.to_status()}
        self.ctx.log.info("pod %s/%s: container %s exited %d (%s)", self.namespace, self.name,
                          status.name, result.exit_code, result.reason)

    def _kill_all(self, grace_seconds: float) -> None:
        """Stop every running container: SIGTERM at once, SIGKILL after the shared grace."""
        running = [s for s in [*self.init_statuses, *self.statuses]
                   if s.run is not None and s.running]
        for status in running:
            assert status.run is not None
            status.run.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + max(grace_seconds, 0.0)
        while running and time.monotonic() < deadline:
            running = [s for s in running if s.run is not None and s.run.poll() is None]
            time.sleep(0.05)
        for status in running:
            assert status.run is not None
            status.run.signal_group(signal.SIGKILL)
        for status in [*self.init_statuses, *self.statuses]:
            status.restart_at = None
            if status.run is not None and status.running:
                status.run.process.wait()
                code = status.run.poll()
                self._record_exit(status, status.run.result(137 if code is None else code))
            elif "terminated" not in status.state:
                status.state = _wait(None, "ContainerStatusUnknown")

    def _checkpoint(self, wait_seconds: float = POLL_SECONDS) -> None:
        """Between steps: react to runner shutdown, pod deletion and activeDeadlineSeconds."""
        self._wake.wait(wait_seconds)
        self._wake.clear()
        if self._shutdown or self._gone:
            self._kill_all(SHUTDOWN_GRACE_SECONDS if self._shutdown else 1.0)
            raise _Stop()
        pod = self.pod
        meta, spec = pod["metadata"], pod["spec"]
        if meta.get("deletionTimestamp"):
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
            self.ctx.log.info("pod %s/%s: deleted, stopping containers (grace %ss)",
                              self.namespace, self.name, grace)
            self._kill_all(float(grace))
            self._finish(report_only=True)
            self._remove_pod()
            raise _Stop()
        deadline = spec.get("activeDeadlineSeconds")
        if (deadline is not None and self._started_monotonic is not None
                and time.monotonic() - self._started_monotonic >= float(deadline)):
            self.ctx.log.info("pod %s/%s: activeDeadlineSeconds %s exceeded", self.namespace,
                              self.name, deadline)
            self._kill_all(float(spec.get("terminationGracePeriodSeconds",
                                          DEFAULT_GRACE_SECONDS)))
            self._fail("DeadlineExceeded", DEADLINE_MESSAGE)
            raise _Stop()

    def _remove_pod(self) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": self.uid}}
        try:
            self.ctx.api.delete(self.api_path, body)
        except ApiError as err:
            if err.status != 409:  # 409: a newer pod took the name; ours is gone
                raise

    # --- status ---------------------------------------------------------------------------
    def _set_condition(self, kind: str, value: bool, reason: str | None = None,
                       message: str | None = None) -> None:
        current = self.conditions.get(kind)
        status = "True" if value else "False"
        if (current is not None and current["status"] == status
                and current.get("reason") == reason and current.get("message") == message):
            return
        changed = current is None or current["status"] != status
        self.conditions[kind] = {
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": now_rfc3339() if changed or current is None
            else current["lastTransitionTime"],
        }

    def _update_conditions(self) -> None:
        terminal = self.phase in ("Succeeded", "Failed")
        unready = [s.name for s in self.statuses if not s.running]
        if terminal:
            self._set_condition("ContainersReady", False, "PodCompleted")
            self._set_condition("Ready", False, "PodCompleted")
            self._set_condition("PodReadyToStartContainers", False)
        elif unready:
            message = f"containers with unready status: [{' '.join(unready)}]"
            self._set_condition("ContainersReady", False, "ContainersNotReady", message)
            self._set_condition("Ready", False, "ContainersNotReady", message)
        else:
            self._set_condition("ContainersReady", True)
            self._set_condition("Ready", True)
        pending = [s.name for s in self.init_statuses if s.exit_code != 0]
        if self.init_statuses and pending and "Initialized" in self.conditions:
            self._set_condition("Initialized", False, "ContainersNotInitialized",
                                f"containers with incomplete status: [{' '.join(pending)}]")

    def _report(self) -> None:
        """Send our view of the pod's status (strategic merge patch), if it changed."""
        self._update_conditions()
        status: JsonDict = {
            "phase": self.phase,
            "hostIP": HOST_IP, "hostIPs": [{"ip": HOST_IP}],
            "podIP": POD_IP, "podIPs": [{"ip": POD_IP}],
            "conditions": list(self.conditions.values()),
            "containerStatuses": [s.render() for s in self.statuses],
        }
        if self.start_time:
            status["startTime"] = self.start_time
        if self.init_statuses:
            status["initContainerStatuses"] = [s.render() for s in self.init_statuses]
        if self.reason:
            status["reason"] = self.reason
            status["message"] = self.message
        encoded = json.dumps(status, sort_keys=True)
        if encoded == self._last_sent:
            return
        try:
            self.ctx.api.patch(f"{self.api_path}/status", {"status": status}, "strategic")
            self._last_sent = encoded
        except ApiError as err:
            if err.status == 404:
                self._gone = True
                return
            self.ctx.log.warning("pod %s/%s: status update failed: %s", self.namespace,
                                 self.name, err)

    def _finish(self, report_only: bool = False) -> None:
        """Set the terminal phase from the containers' exit codes and report it."""
        codes = [s.exit_code for s in self.statuses]
        init_failed = any(s.exit_code not in (None, 0) for s in self.init_statuses)
        succeeded = not init_failed and all(code == 0 for code in codes)
        self.phase = "Succeeded" if succeeded else "Failed"
        self._report()
        if not report_only:
            self.ctx.log.info("pod %s/%s: %s", self.namespace, self.name, self.phase)

    def _fail(self, reason: str, message: str) -> None:
        self.reason, self.message = reason, message
        self.phase = "Failed"
        self._report()
        self.ctx.log.info("pod %s/%s: Failed (%s): %s", self.namespace, self.name, reason, message)

    def cleanup(self) -> None:
        """The pod object is gone: drop its volumes (Secrets on disk), keep the logs."""
        shutil.rmtree(self.pod_dir / "volumes", ignore_errors=True)
        shutil.rmtree(self.pod_dir / "run", ignore_errors=True)
