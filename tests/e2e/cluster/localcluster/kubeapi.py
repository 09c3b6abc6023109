"""A small JSON client for the API server: plain dicts in, plain dicts out.

Used by ``controlplane`` (readiness checks) and the pod runner, which talk to the local API
server with the admin token. Tests use the official ``kubernetes`` client instead (it reads any
kubeconfig, also kind's); this one exists because the runner wants raw dicts and streaming
watches without model (de)serialisation.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import urllib3

JsonDict = dict[str, Any]

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}


class ApiError(RuntimeError):
    """The API server answered with an error status. ``status`` is the HTTP code."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.status = status
        self.body = body
        message = body
        with contextlib.suppress(ValueError):
            message = str(json.loads(body).get("message", body))
        super().__init__(f"{method} {path}: HTTP {status}: {message[:500]}")


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to authenticate: a bearer token and a CA file."""

    server: str
    token: str
    ca_file: str


class KubeApi:
    """Thread-safe: one urllib3 pool shared by all threads."""

    def __init__(self, creds: Credentials, timeout_seconds: float = 30.0,
                 pool_size: int = 32) -> None:
        self.creds = creds
        self.timeout_seconds = timeout_seconds
        self._http = urllib3.PoolManager(
            num_pools=4, maxsize=pool_size, block=False, cert_reqs="CERT_REQUIRED",
            ca_certs=creds.ca_file, retries=False,
        )

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.creds.token}", "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        url = self.creds.server.rstrip("/") + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        return url

    def request(self, method: str, path: str, body: Any = None,
                query: Mapping[str, Any] | None = None, content_type: str = "application/json",
                timeout_seconds: float | None = None) -> JsonDict:
        """Send one request; return the decoded JSON body. Raises ApiError on HTTP >= 400."""
        data = None if body is None else json.dumps(body).encode()
        resp = self._http.request(
            method, self.url(path, query), body=data,
            headers=self._headers(content_type if data is not None else None),
            timeout=timeout_seconds or self.timeout_seconds,
        )
        text = resp.data.decode("utf-8", "replace")
        if resp.status >= 400:
            raise ApiError(method, path, resp.status, text)
        if not text:
            return {}
        decoded = json.loads(text)
        return decoded if isinstance(decoded, dict) else {"value": decoded}

    def get(self, path: str, **query: Any) -> JsonDict:
        return self.request("GET", path, query=query)

    def get_or_none(self, path: str) -> JsonDict | None:
        """GET, or None on 404."""
        try:
            return self.get(path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def create(self, path: str, body: JsonDict, exist_ok: bool = False) -> JsonDict:
        """POST ``body`` to the collection ``path``; with ``exist_ok`` a 409 returns {}."""
        try:
            return self.request("POST", path, body)
        except ApiError as err:
            if exist_ok and err.status == 409:
                return {}
            raise

    def patch(self, path: str, body: Any, patch_type: str = "merge") -> JsonDict:
        return self.request("PATCH", path, body, content_type=PATCH_TYPES[patch_type])

    def delete(self, path: str, body: JsonDict | None = None, missing_ok: bool = True) -> JsonDict:
        """DELETE ``path`` (``body``: DeleteOptions); a 404 is fine unless ``missing_ok=False``."""
        try:
            return self.request("DELETE", path, body)
        except ApiError as err:
            if missing_ok and err.status == 404:
                return {}
            raise

    def text(self, path: str, timeout_seconds: float = 5.0) -> tuple[int, str]:
        """GET a non-JSON endpoint such as /readyz: (status, body). Never raises ApiError."""
        resp = self._http.request("GET", self.url(path), headers=self._headers(),
                                  timeout=timeout_seconds)
        return resp.status, resp.data.decode("utf-8", "replace")

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 300,
              **query: Any) -> Iterator[JsonDict]:
        """Stream watch events ({type, object}) of collection ``path`` from ``resource_version``.

        Ends when the server closes the stream (after about ``timeout_seconds``). An ERROR
        event (e.g. 410 Gone: the version is too old) is yielded like any other; the caller
        relists.
        """
        params = {"watch": "1", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds), **query}
        resp = self._http.request(
            "GET", self.url(path, params), headers=self._headers(), preload_content=False,
            timeout=urllib3.Timeout(connect=10, read=timeout_seconds + 30),
        )
        try:
            if resp.status >= 400:
                raise ApiError("WATCH", path, resp.status, resp.read().decode("utf-8", "replace"))
            buffer = b""
            for chunk in resp.stream(65536, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release_conn()

