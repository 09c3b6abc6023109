"""The operator's only Kubernetes API I/O: small, retry-safe calls on raw JSON objects.

Called by ``reconcile``, ``status`` (the status write) and ``leader`` (the Lease). Built on
the official client's ApiClient, but every call goes through one ``_request`` that returns
plain dicts exactly as the API server sends them. Reruns are safe by construction: a 404 on
read is "absent" (None), a 409 on create is "already there", a 409 on an update with a
resourceVersion is reported as :data:`CONFLICT` so the caller re-reads. Everything else is
a :class:`KubeError`, which handlers turn into a retry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from .names import FIELD_MANAGER, GROUP, PLURAL, VERSION

logger = logging.getLogger(__name__)


class _Conflict:
    def __repr__(self) -> str:
        return "CONFLICT"


CONFLICT: Final = _Conflict()
"""Returned by updates whose resourceVersion precondition failed (HTTP 409)."""


class KubeError(Exception):
    """An API call failed in a way a retry may fix (or RBAC must): status and reason kept."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


Obj = dict[str, Any]


def _ns_path(api: str, namespace: str, plural: str, name: str | None = None) -> str:
    path = f"{api}/namespaces/{quote(namespace)}/{plural}"
    return f"{path}/{quote(name)}" if name else path


_CORE = "/api/v1"
_BATCH = "/apis/batch/v1"
_COORD = "/apis/coordination.k8s.io/v1"
_TS = f"/apis/{GROUP}/{VERSION}"


class Kube:
    """Thin API wrapper. Thread-safe (the kubernetes client pools connections)."""

    def __init__(self, api_client: client.ApiClient, timeout_seconds: float = 30.0) -> None:
        self.api = api_client
        self.timeout_seconds = timeout_seconds

    @classmethod
    def from_environment(cls) -> Kube:
        """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        return cls(client.ApiClient())

    # -- the one request path ------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        ok_missing: bool = True,
        conflict_ok: bool = False,
    ) -> Obj | _Conflict | None:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        # The client JSON-encodes the body itself (also for apply-patch+yaml: JSON is YAML).
        try:
            response = self.api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=self.timeout_seconds,
            )
        except ApiException as err:
            if err.status == 404 and ok_missing:
                return None
            if err.status == 409 and conflict_ok:
                return CONFLICT
            raise KubeError(_describe(method, path, err), err.status) from None
        except Exception as err:  # urllib3 / socket errors: the API server is unreachable
            raise KubeError(f"{method} {path}: {type(err).__name__}: {err}") from None
        data = response.data
        if not data:
            return {}
        parsed = json.loads(data)
        return parsed if isinstance(parsed, dict) else {}

    def _get(self, path: str, query: Mapping[str, str] | None = None) -> Obj | None:
        result = self._request("GET", path, query=query)
        assert not isinstance(result, _Conflict)
        return result

    # -- TableSyncs ----------------------------------------------------------------------

    def get_tablesync(self, namespace: str, name: str) -> Obj | None:
        return self._get(_ns_path(_TS, namespace, PLURAL, name))

    def list_tablesyncs(self, namespace: str | None) -> list[Obj]:
        """The TableSyncs of one namespace, or of every namespace (None)."""
        path = f"{_TS}/{PLURAL}" if namespace is None else _ns_path(_TS, namespace, PLURAL)
        return list((self._get(path) or {}).get("items") or [])

    def list_namespace_names(self) -> list[str]:
        found = self._get(f"{_CORE}/namespaces")
        return [str(ns["metadata"]["name"]) for ns in (found or {}).get("items") or []]

    def replace_tablesync_status(self, body: Mapping[str, Any]) -> Obj | _Conflict | None:
        """PUT the status subresource. ``body`` must carry metadata.resourceVersion: the write
        happens only if the object is unchanged since it was read (else CONFLICT)."""
        meta = body["metadata"]
        path = _ns_path(_TS, meta["namespace"], PLURAL, meta["name"]) + "/status"
        return self._request("PUT", path, body=body, conflict_ok=True)

    # -- Secrets (read to check that the referenced keys exist; values are never kept) ---

    def get_secret_keys(self, namespace: str, name: str) -> set[str] | None:
        """Key names of a Secret, or None if it does not exist."""
        secret = self._get(_ns_path(_CORE, namespace, "secrets", name))
        if secret is None:
            return None
        keys = set((secret.get("data") or {}).keys()) | set((secret.get("stringData") or {}).keys())
        secret.clear()
        return keys

    def service_account_exists(self, namespace: str, name: str) -> bool:
        """True if the ServiceAccount exists (job pods can only use one of their namespace)."""
        return self._get(_ns_path(_CORE, namespace, "serviceaccounts", name)) is not None

    # -- CronJobs and Jobs ---------------------------------------------------------------

    def get_cronjob(self, namespace: str, name: str) -> Obj | None:
        return self._get(_ns_path(_BATCH, namespace, "cronjobs", name))

    def apply_cronjob(self, manifest: Mapping[str, Any]) -> Obj:
        """Server-side apply (create or update) as field manager ``tablesync-operator``."""
        meta = manifest["metadata"]
        result = self._request(
            "PATCH",
            _ns_path(_BATCH, meta["namespace"], "cronjobs", meta["name"]),
            body=manifest,
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type="application/apply-patch+yaml",
            ok_missing=False,
        )
        assert isinstance(result, dict)
        return result

    def list_jobs(self, namespace: str, label_selector: str) -> list[Obj]:
        found = self._get(_ns_path(_BATCH, namespace, "jobs"), {"labelSelector": label_selector})
        return list((found or {}).get("items") or [])

    def create_job(self, manifest: Mapping[str, Any]) -> Obj | None:
        """Create a Job; None if one with that name already exists (a rerun)."""
        meta = manifest["metadata"]
        result = self._request(
            "POST",
            _ns_path(_BATCH, meta["namespace"], "jobs"),
            body=manifest,
            ok_missing=False,
            conflict_ok=True,
        )
        return None if isinstance(result, _Conflict) else result

    def list_pods(self, namespace: str, label_selector: str) -> list[Obj]:
        found = self._get(_ns_path(_CORE, namespace, "pods"), {"labelSelector": label_selector})
        return list((found or {}).get("items") or [])

    # -- Events (best effort: a lost Event must never fail a reconcile) ------------------

    def create_event(self, manifest: Mapping[str, Any]) -> None:
        try:
            self._request(
                "POST",
                _ns_path(_CORE, manifest["metadata"]["namespace"], "events"),
                body=manifest,
                conflict_ok=True,
            )
        except KubeError as err:
            logger.warning("could not post event %s: %s", manifest.get("reason"), err)

    # -- Leases (leader election) --------------------------------------------------------

    def get_lease(self, namespace: str, name: str) -> Obj | None:
        return self._get(_ns_path(_COORD, namespace, "leases", name))

    def create_lease(self, manifest: Mapping[str, Any]) -> Obj | None:
        """Create the Lease; None if another replica created it first."""
        result = self._request(
            "POST",
            _ns_path(_COORD, manifest["metadata"]["namespace"], "leases"),
            body=manifest,
            ok_missing=False,
            conflict_ok=True,
        )
        return None if isinstance(result, _Conflict) else result

    def replace_lease(self, manifest: Mapping[str, Any]) -> Obj | None:
        """PUT the Lease with its resourceVersion; None if it changed meanwhile (409)."""
        meta = manifest["metadata"]
        result = self._request(
            "PUT",
            _ns_path(_COORD, meta["namespace"], "leases", meta["name"]),
            body=manifest,
            ok_missing=False,
            conflict_ok=True,
        )
        return None if isinstance(result, _Conflict) else result


def _describe(method: str, path: str, err: ApiException) -> str:
    detail = err.reason or ""
    try:
        body = json.loads(err.body or "{}")
        detail = body.get("message") or detail
    except (TypeError, ValueError):
        pass
    return f"{method} {path}: {err.status} {detail}".strip()
