"""A container's environment, as the kubelet builds it: ``envFrom``, ``env``, fieldRefs.

Called by ``pods`` before each container start. Pure functions over the pod dict plus an
``ObjectSource`` that fetches Secrets and ConfigMaps. Rules follow the kubelet
(``pkg/kubelet/kubelet_pods.go: makeEnvironmentVariables``): ``envFrom`` first, then ``env``
in order, each value ``$(VAR)``-expanded against what is defined so far; a missing
non-optional Secret/ConfigMap or key raises ``ConfigError`` (the kubelet's
``CreateContainerConfigError``: the pod waits and the runner retries).
"""

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Mapping
from typing import Any, Protocol

JsonDict = dict[str, Any]
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
HOST_IP = "127.0.0.1"
POD_IP = "127.0.0.1"


class ConfigError(Exception):
    """A referenced Secret, ConfigMap or key is missing: the container cannot be configured yet."""


class UnsupportedError(Exception):
    """The pod asks for something the runner cannot do (the pod is failed with this message)."""


class ObjectSource(Protocol):
    """Fetches the objects env and volumes refer to. None means "not found"."""

    def secret(self, namespace: str, name: str) -> JsonDict | None: ...

    def config_map(self, namespace: str, name: str) -> JsonDict | None: ...


def secret_data(secret: JsonDict) -> dict[str, bytes]:
    """A Secret's ``data`` (base64-decoded) merged with its ``stringData``."""
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    data.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
    return data


def config_map_data(config_map: JsonDict) -> dict[str, bytes]:
    """A ConfigMap's ``data`` and ``binaryData`` as bytes."""
    data = {k: v.encode() for k, v in (config_map.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (config_map.get("binaryData") or {}).items()})
    return data


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, ``$$`` is a literal ``$``,
    anything else (undefined names, unclosed ``$(``) stays as written."""
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char != "$" or i + 1 >= len(value):
            out.append(char)
            i += 1
            continue
        nxt = value[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = value.find(")", i + 2)
            if end == -1:
                out.append(value[i:])
                break
            name = value[i + 2:end]
            out.append(env.get(name, f"$({name})"))
            i = end + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: JsonDict, field_path: str) -> str:
    """Value of a downward-API ``fieldRef.fieldPath`` for ``pod``. Raises UnsupportedError."""
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": HOST_IP,
        "status.hostIPs": HOST_IP,
        "status.podIP": POD_IP,
        "status.podIPs": POD_IP,
    }
    if field_path in simple:
        return str(simple[field_path])
    match = _SUBSCRIPT.match(field_path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    if field_path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(field_path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise UnsupportedError(f"fieldRef {field_path!r} is not supported by the pod runner")


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_quantity(text: str) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``128Mi``) as a float. Raises ValueError."""
    match = _QUANTITY.match(str(text).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"unsupported quantity {text!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def node_capacity() -> dict[str, float]:
    """What the Node reports: this machine's cores and memory (bytes)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": float(os.cpu_count() or 1), "memory": float(memory),
            "ephemeral-storage": float(100 * 2**30)}


def resource_value(container: JsonDict, resource: str, divisor: str | None) -> str:
    """``resourceFieldRef``: a container's request/limit, limits defaulting to the node's size."""
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None:
        raw = (resources.get("limits") or {}).get(name) if kind == "requests" else None
    value = parse_quantity(raw) if raw is not None else (
        node_capacity().get(name, 0.0) if kind == "limits" else 0.0)
    return str(math.ceil(value / parse_quantity(divisor or "1")))


def _key_ref(namespace: str, ref: JsonDict, kind: str, source: ObjectSource) -> str | None:
    name, key, optional = ref.get("name", ""), ref["key"], bool(ref.get("optional"))
    obj = source.secret(namespace, name) if kind == "secret" else source.config_map(namespace, name)
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind} "{name}" not found')
    data = secret_data(obj) if kind == "secret" else config_map_data(obj)
    if key not in data:
        if optional:
            return None
        label = "secret" if kind == "secret" else "configmap"
        raise ConfigError(f'couldn\'t find key {key} in {label.capitalize()} {namespace}/{name}')
    return data[key].decode("utf-8", "replace")


def resolve_env(pod: JsonDict, container: JsonDict, source: ObjectSource,
                base: Mapping[str, str]) -> dict[str, str]:
    """The full environment of ``container``: ``base`` (PATH, KUBERNETES_SERVICE_*, …), then
    ``envFrom``, then ``env``. Raises ConfigError or UnsupportedError."""
    namespace = pod["metadata"]["namespace"]
    env = dict(base)
    for env_from in container.get("envFrom") or []:
        prefix = env_from.get("prefix", "")
        for kind, field in (("secret", "secretRef"), ("configmap", "configMapRef")):
            ref = env_from.get(field)
            if ref is None:
                continue
            name = ref.get("name", "")
            obj = source.secret(namespace, name) if kind == "secret" else source.config_map(
                namespace, name)
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind} "{name}" not found')
            data = secret_data(obj) if kind == "secret" else {
                k: v.encode() for k, v in (obj.get("data") or {}).items()}
            for key, raw in data.items():
                if ENV_NAME.match(prefix + key):
                    env[prefix + key] = raw.decode("utf-8", "replace")
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        value_from = var["valueFrom"]
        value: str | None
        if "secretKeyRef" in value_from:
            value = _key_ref(namespace, value_from["secretKeyRef"], "secret", source)
        elif "configMapKeyRef" in value_from:
            value = _key_ref(namespace, value_from["configMapKeyRef"], "configmap", source)
        elif "fieldRef" in value_from:
            value = field_value(pod, value_from["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in value_from:
            ref = value_from["resourceFieldRef"]
            target = container
            if ref.get("containerName"):
                all_containers = [*(pod["spec"].get("initContainers") or []),
                                  *pod["spec"]["containers"]]
                target = next((c for c in all_containers if c["name"] == ref["containerName"]),
                              container)
            value = resource_value(target, ref["resource"], ref.get("divisor"))
        else:
            raise UnsupportedError(f"env {name}: unsupported valueFrom {sorted(value_from)}")
        if value is not None:
            env[name] = value
    return env
