"""The kubelet's ``/containerLogs`` endpoint, so ``kubectl logs`` and ``pods/log`` work.

Started by ``loop.Runner`` on the port the Node advertises (``daemonEndpoints``); the API
server proxies ``GET pods/log`` here over TLS (it verifies our certificate against the
cluster CA). Serves ``<state>/pods/<ns>_<pod>/<container>.log`` with ``tailLines``,
``limitBytes`` and ``follow``; ``previous`` and ``timestamps`` are not supported (one file per
container holds every run). Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

LogLookup = Callable[[str, str, str], tuple[Path, bool] | None]
"""(namespace, pod, container) → (log file, still running), or None if unknown."""

_PATH = re.compile(r"^/containerLogs/([^/]+)/([^/]+)/([^/]+)$")


def serve_logs(port: int, cert: Path, key: Path, lookup: LogLookup) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread and return the server (``shutdown()`` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            url = urlparse(self.path)
            match = _PATH.match(url.path)
            if url.path == "/healthz":
                self._send(200, b"ok")
                return
            if not match:
                self._send(404, b"not found")
                return
            found = lookup(match.group(1), match.group(2), match.group(3))
            if found is None:
                self._send(404, b"container not found on this node")
                return
            path, _ = found
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            data = path.read_bytes() if path.exists() else b""
            if "tailLines" in query:
                lines = int(query["tailLines"])
                parts = data.splitlines(keepends=True)
                data = b"".join(parts[-lines:]) if lines > 0 else b""
            limit = int(query["limitBytes"]) if "limitBytes" in query else None
            if limit is not None:
                data = data[:limit]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            if query.get("follow") != "true" or limit is not None:
                return
            offset = path.stat().st_size if path.exists() else 0
            while True:
                found = lookup(match.group(1), match.group(2), match.group(3))
                running = found is not None and found[1]
                size = path.stat().st_size if path.exists() else 0
                if size > offset:
                    with path.open("rb") as handle:
                        handle.seek(offset)
                        chunk = handle.read(size - offset)
                    offset = size
                    try:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    except OSError:
                        return
                elif not running:
                    return
                time.sleep(0.2)

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name="logserver", daemon=True).start()
    return server
