"""Where a container's output is kept, and reading it back.

The pod runner appends each container's stdout and stderr (every run, restarts included) to
``<state>/pods/<namespace>_<pod>/<container>.log``; the directory of an older pod that had the
same name is renamed ``<namespace>_<pod>.<uid prefix>``. Used by the ``cluster`` fixture and
``python -m localcluster logs``.
"""

from __future__ import annotations

from pathlib import Path


def container_log_path(state_dir: Path, namespace: str, pod: str, container: str) -> Path:
    """The log file of ``container`` in pod ``namespace/pod``."""
    return state_dir / "pods" / f"{namespace}_{pod}" / f"{container}.log"


def read_container_log(state_dir: Path, namespace: str, pod: str, container: str) -> str:
    """The whole log as text ("" if the container has not started). Bytes that are not UTF-8
    are replaced."""
    path = container_log_path(state_dir, namespace, pod, container)
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
