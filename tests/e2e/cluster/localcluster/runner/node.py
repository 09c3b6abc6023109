"""The runner's Node object: registration, Ready status and the heartbeat Lease.

Called by ``loop.Runner`` at start and then every ``HEARTBEAT_SECONDS`` from a thread. The Node
advertises InternalIP 127.0.0.1 and the runner's log endpoint as its kubelet port, so the API
server's ``pods/log`` (``kubectl logs``) reaches ``logserver``. The ``not-ready`` taint that
admission puts on a new Node is removed (no node-lifecycle controller runs to do it).
"""

from __future__ import annotations

import platform
from datetime import UTC, datetime

from ..kubeapi import ApiError, KubeApi
from ..settings import KUBERNETES_VERSION
from .podenv import HOST_IP, node_capacity

HEARTBEAT_SECONDS = 10
LEASE_DURATION_SECONDS = 40


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def node_status(log_port: int) -> dict[str, object]:
    """The Node's status: Ready, loopback address, this machine's capacity, our log port."""
    now = _now()
    capacity = node_capacity()
    resources = {"cpu": str(int(capacity["cpu"])), "memory": f"{int(capacity['memory']) // 1024}Ki",
                 "pods": "250", "ephemeral-storage": f"{int(capacity['ephemeral-storage'])}"}

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {"type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": now}

    return {
        "conditions": [
            condition("Ready", "True", "KubeletReady", "local pod runner is ready"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
        ],
        "addresses": [{"type": "InternalIP", "address": HOST_IP},
                      {"type": "Hostname", "address": platform.node() or "localhost"}],
        "capacity": resources,
        "allocatable": resources,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": log_port}},
        "nodeInfo": {
            "machineID": "local", "systemUUID": "local", "bootID": "local",
            "kernelVersion": platform.release(), "osImage": "local processes",
            "containerRuntimeVersion": "local://tablesync-pod-runner",
            "kubeletVersion": KUBERNETES_VERSION, "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": _arch(),
        },
    }


def register_node(api: KubeApi, name: str, log_port: int) -> None:
    """Create (or take over) Node ``name``, drop its taints and mark it Ready."""
    body = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": _arch(), "tablesync.dev/local-runner": "true"}},
    }
    api.create("/api/v1/nodes", body, exist_ok=True)
    api.patch(f"/api/v1/nodes/{name}", {"spec": {"taints": None}})
    heartbeat(api, name, log_port)


def heartbeat(api: KubeApi, name: str, log_port: int) -> None:
    """Renew the node Lease and re-post the Ready status."""
    api.patch(f"/api/v1/nodes/{name}/status", {"status": node_status(log_port)}, "strategic")
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
    spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": _micro_now()}
    try:
        api.patch(lease_path, {"spec": spec})
    except ApiError as err:
        if err.status != 404:
            raise
        node = api.get(f"/api/v1/nodes/{name}")
        api.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": [{
                "apiVersion": "v1", "kind": "Node", "name": name,
                "uid": node["metadata"]["uid"]}]},
            "spec": spec,
        }, exist_ok=True)
