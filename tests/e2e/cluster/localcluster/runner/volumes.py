"""A pod's volumes as host directories under ``<state>/pods/<ns>_<pod>/volumes/<name>``.

Called once per pod by ``pods`` before its first container starts; each container then
bind-mounts the directories it names in ``volumeMounts`` (see ``sandbox``). Supported:
emptyDir, hostPath, secret, configMap, downwardAPI, projected (serviceAccountToken via the
TokenRequest API, bound to the pod; configMap; secret; downwardAPI) and persistentVolumeClaim
(a directory per claim under ``<state>/claims``, kept across pods; no PV binding is simulated).
Contents are written once: later changes to a Secret or ConfigMap do not reach running pods.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .podenv import (
    ConfigError,
    ObjectSource,
    UnsupportedError,
    config_map_data,
    expand,
    field_value,
    resource_value,
    secret_data,
)

JsonDict = dict[str, Any]
TokenIssuer = Callable[[str | None, int], str]
"""(audience or None for the API server's, expirationSeconds) → a token bound to the pod."""


def _write(directory: Path, relative: str, content: bytes, mode: int) -> None:
    if relative.startswith("/") or ".." in Path(relative).parts:
        raise UnsupportedError(f"volume item path {relative!r} must be relative, without '..'")
    target = directory / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    target.chmod(mode)


def _project_items(directory: Path, data: dict[str, bytes], items: list[JsonDict] | None,
                   default_mode: int, what: str) -> None:
    if not items:
        for key, value in data.items():
            _write(directory, key, value, default_mode)
        return
    for item in items:
        if item["key"] not in data:
            raise ConfigError(f"{what}: key {item['key']!r} not found")
        _write(directory, item["path"], data[item["key"]], int(item.get("mode", default_mode)))


def _secret(directory: Path, namespace: str, source: JsonDict, objects: ObjectSource,
            default_mode: int) -> None:
    name = source.get("secretName") or source.get("name", "")
    secret = objects.secret(namespace, name)
    if secret is None:
        if source.get("optional"):
            return
        raise ConfigError(f'secret "{name}" not found')
    _project_items(directory, secret_data(secret), source.get("items"), default_mode,
                   f"secret {name}")


def _config_map(directory: Path, namespace: str, source: JsonDict, objects: ObjectSource,
                default_mode: int) -> None:
    name = source.get("name", "")
    config_map = objects.config_map(namespace, name)
    if config_map is None:
        if source.get("optional"):
            return
        raise ConfigError(f'configmap "{name}" not found')
    _project_items(directory, config_map_data(config_map), source.get("items"), default_mode,
                   f"configmap {name}")


def _downward(directory: Path, pod: JsonDict, items: list[JsonDict], default_mode: int) -> None:
    containers = [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]
    for item in items:
        if "fieldRef" in item:
            value = field_value(pod, item["fieldRef"]["fieldPath"])
        else:
            ref = item["resourceFieldRef"]
            container = next(c for c in containers if c["name"] == ref.get("containerName"))
            value = resource_value(container, ref["resource"], ref.get("divisor"))
        _write(directory, item["path"], value.encode(), int(item.get("mode", default_mode)))


def prepare_volumes(pod: JsonDict, pod_dir: Path, claims_dir: Path, objects: ObjectSource,
                    issue_token: TokenIssuer) -> dict[str, Path]:
    """Materialise every volume of ``pod``; return volume name → host path.

    Raises ConfigError (a referenced object is missing: retry later) or UnsupportedError.
    """
    namespace = pod["metadata"]["namespace"]
    paths: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        directory = pod_dir / "volumes" / name
        if "hostPath" in volume:
            host = Path(volume["hostPath"]["path"])
            kind = volume["hostPath"].get("type", "")
            if kind == "DirectoryOrCreate":
                host.mkdir(parents=True, exist_ok=True)
            elif kind == "FileOrCreate" and not host.exists():
                host.parent.mkdir(parents=True, exist_ok=True)
                host.touch()
            elif kind and not host.exists():
                raise ConfigError(f"hostPath {host} does not exist")
            paths[name] = host
            continue
        if "persistentVolumeClaim" in volume:
            claim = claims_dir / namespace / volume["persistentVolumeClaim"]["claimName"]
            claim.mkdir(parents=True, exist_ok=True)
            paths[name] = claim
            continue
        directory.mkdir(parents=True, exist_ok=True)
        paths[name] = directory
        if "emptyDir" in volume:
            directory.chmod(0o777)
        elif "secret" in volume:
            spec = volume["secret"]
            _secret(directory, namespace, spec, objects, int(spec.get("defaultMode", 0o644)))
        elif "configMap" in volume:
            spec = volume["configMap"]
            _config_map(directory, namespace, spec, objects, int(spec.get("defaultMode", 0o644)))
        elif "downwardAPI" in volume:
            spec = volume["downwardAPI"]
            _downward(directory, pod, spec.get("items") or [], int(spec.get("defaultMode", 0o644)))
        elif "projected" in volume:
            spec = volume["projected"]
            mode = int(spec.get("defaultMode", 0o644))
            for src in spec.get("sources") or []:
                if "serviceAccountToken" in src:
                    sat = src["serviceAccountToken"]
                    expiration = int(sat.get("expirationSeconds", 3600))
                    token = issue_token(sat.get("audience"), expiration)
                    _write(directory, sat["path"], token.encode(), 0o600 if mode == 0o644 else mode)
                elif "configMap" in src:
                    _config_map(directory, namespace, src["configMap"], objects, mode)
                elif "secret" in src:
                    _secret(directory, namespace, src["secret"], objects, mode)
                elif "downwardAPI" in src:
                    _downward(directory, pod, src["downwardAPI"].get("items") or [], mode)
                else:
                    raise UnsupportedError(f"volume {name}: projected source {sorted(src)} "
                                           "is not supported by the pod runner")
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise UnsupportedError(f"volume {name}: type {kinds} is not supported by the runner")
    return paths


def mount_source(volume_paths: dict[str, Path], mount: JsonDict, env: dict[str, str]) -> Path:
    """Host path for one ``volumeMounts`` entry, honouring ``subPath`` / ``subPathExpr``."""
    name = mount["name"]
    if name not in volume_paths:
        raise UnsupportedError(f"volumeMount {name!r} names no volume of the pod")
    base = volume_paths[name]
    sub = mount.get("subPath") or ""
    if mount.get("subPathExpr"):
        sub = expand(mount["subPathExpr"], env)
    if not sub:
        return base
    if sub.startswith("/") or ".." in Path(sub).parts:
        raise UnsupportedError(f"volumeMount {name}: subPath {sub!r} must be relative")
    target = base / sub
    if not target.exists():
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, 0o777)
    return target
