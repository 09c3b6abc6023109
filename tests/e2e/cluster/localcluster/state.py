"""``state.json``: what ``up`` started and where it listens.

Written by ``controlplane.up``; read by ``down``, ``status``, the pod runner, the pytest fixture
(also when ``TABLESYNC_KUBECONFIG`` points at a running local cluster: the state file sits next
to the kubeconfig) and the log helpers. Layout of a state directory::

    state.json  kubeconfig  admin.token  tokens.csv  pki/  etcd/  minio/
    logs/{etcd,kube-apiserver,kube-controller-manager,runner}.log
    pods/<namespace>_<pod>/<container>.log      # container stdout+stderr
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kubeapi import Credentials, KubeApi
from .procs import ProcessRecord

STATE_FILE = "state.json"
STOPPED_STATE_FILE = "state.stopped.json"
"""What ``down`` renames ``state.json`` to: the record of a stopped cluster."""


@dataclass
class MinioInfo:
    """The MinIO server started beside the cluster. Pods reach it at the same endpoint."""

    endpoint: str
    access_key: str
    secret_key: str
    data_dir: str


@dataclass
class ClusterState:
    """Everything ``down``/``status`` and the tests need to find the cluster again."""

    state_dir: str
    apiserver_url: str
    apiserver_port: int
    etcd_url: str
    kubeconfig: str
    ca_file: str
    admin_token: str
    bin_dir: str
    runner_log_port: int = 0
    minio: MinioInfo | None = None
    processes: list[ProcessRecord] = field(default_factory=list)
    owner_pid: int = 0
    """pid of the process that ran ``up`` in pytest mode (0: started by the CLI)."""
    owner_start_ticks: int = 0
    startup_seconds: float = 0.0

    @property
    def pods_dir(self) -> Path:
        return Path(self.state_dir) / "pods"

    def credentials(self) -> Credentials:
        return Credentials(server=self.apiserver_url, token=self.admin_token,
                           ca_file=self.ca_file)

    def api(self) -> KubeApi:
        return KubeApi(self.credentials())

    def save(self) -> None:
        data: dict[str, Any] = {
            k: v for k, v in self.__dict__.items() if k not in ("minio", "processes")
        }
        data["minio"] = None if self.minio is None else self.minio.__dict__
        data["processes"] = [p.to_json() for p in self.processes]
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.chmod(0o600)
        os.replace(tmp, path)

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState:
        """Read ``state_dir/state.json``. Raises FileNotFoundError if there is none."""
        return cls.load_from(state_dir / STATE_FILE)

    @classmethod
    def load_from(cls, path: Path) -> ClusterState:
        """Read a state file."""
        data = json.loads(path.read_text())
        minio = data.pop("minio", None)
        processes = data.pop("processes", [])
        known = set(cls.__dataclass_fields__)
        state = cls(**{k: v for k, v in data.items() if k in known})
        state.minio = MinioInfo(**minio) if minio else None
        state.processes = [ProcessRecord.from_json(p) for p in processes]
        return state

    @classmethod
    def load_any(cls, state_dir: Path) -> ClusterState:
        """``state.json``, or after ``down`` the ``state.stopped.json`` it was renamed to."""
        if (state_dir / STATE_FILE).exists():
            return cls.load(state_dir)
        stopped = cls.load_from(state_dir / STOPPED_STATE_FILE)
        return stopped

    @classmethod
    def find_for_kubeconfig(cls, kubeconfig: Path) -> ClusterState | None:
        """The local cluster whose kubeconfig is ``kubeconfig``, or None (e.g. a kind cluster)."""
        candidate = kubeconfig.resolve().parent
        if (candidate / STATE_FILE).exists():
            state = cls.load(candidate)
            if Path(state.kubeconfig).resolve() == kubeconfig.resolve():
                return state
        return None
