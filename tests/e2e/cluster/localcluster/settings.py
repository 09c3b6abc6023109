"""Paths and defaults of the local cluster; every other module takes them from here.

Environment variables (all optional):

* ``TABLESYNC_CLUSTER_STATE`` — state directory of ``python -m localcluster``
  (default ``<repo>/.cluster``).
* ``TABLESYNC_CLUSTER_BIN`` — directory holding the Go-built binaries (default: whatever
  ``tests/e2e/cluster/install-binaries.sh`` prints, see ``tests.support.services``).
* ``TABLESYNC_IMAGE_COMMANDS`` — a YAML/JSON file with extra image → command entries
  (see ``images``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[4]
"""The repository checkout (``/work/main`` on the build machines)."""

if str(REPO_ROOT) not in sys.path:  # ``tests.support.services`` is imported from the repo root
    sys.path.insert(0, str(REPO_ROOT))

PACKAGE_PARENT = Path(__file__).resolve().parents[1]
"""``tests/e2e/cluster``: what must be on PYTHONPATH for ``python -m localcluster``."""

VENV = REPO_ROOT / ".venv"
KUBECTL = VENV / "bin" / "kubectl"
NODE_NAME = "local-runner"
KUBERNETES_VERSION = "v1.36.3"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
"""First address of SERVICE_CIDR: the ``kubernetes`` Service. Nothing routes it here."""


def default_state_dir() -> Path:
    """``$TABLESYNC_CLUSTER_STATE`` or ``<repo>/.cluster`` (gitignored)."""
    return Path(os.environ.get("TABLESYNC_CLUSTER_STATE", str(REPO_ROOT / ".cluster"))).resolve()


@dataclass(frozen=True)
class Timeouts:
    """How long ``up`` waits for each component. Measured in seconds."""

    etcd_seconds: float = 30.0
    apiserver_seconds: float = 90.0
    controllers_seconds: float = 60.0
    runner_seconds: float = 30.0
