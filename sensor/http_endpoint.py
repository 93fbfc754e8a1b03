"""The agent's HTTP endpoint: /healthz, /readyz, /metrics, on its own thread.

- `/healthz`: 200 while the poll loop turns (heartbeat fresher than the timeout), else 503.
- `/readyz`: 200 when every readiness condition holds, else 503; the body lists them
  (`?verbose` is implied: one `[+]name` / `[-]name: detail` line each, as kube-apiserver does).
- `/metrics`: Prometheus text format from the agent's own registry.
"""
from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sensor.agent_parts import AgentParts
from sensor.errors import SensorError
from sensor.metrics import build_registry

log = logging.getLogger(__name__)


class EndpointError(SensorError):
    """The HTTP endpoint cannot listen where configured."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], parts: AgentParts) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.parts = parts
        self.registry = build_registry(parts)
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "netvigil"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        parts = self.server.parts
        if path == "/healthz":
            age = parts.heartbeat.age_s()
            ok = parts.heartbeat.healthy()
            self._reply(200 if ok else 503, f"{'ok' if ok else 'stalled'}: poll loop turned {age:.1f}s ago\n")
        elif path == "/readyz":
            results = parts.readiness.check()
            ok = bool(results) and all(r.ok for r in results)
            lines = [f"[{'+' if r.ok else '-'}]{r.name}{': ' + r.detail if r.detail else ''}" for r in results]
            lines.append("ready" if ok else "not ready")
            self._reply(200 if ok else 503, "\n".join(lines) + "\n")
        elif path == "/metrics":
            self._reply(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        else:
            self._reply(404, "not found: try /healthz, /readyz or /metrics\n")

    def _reply(self, code: int, body: str | bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("http %s - %s", self.address_string(), format % args)


class HttpEndpoint:
    """Serves the agent's probes and metrics until `stop()`."""

    def __init__(self, parts: AgentParts, address: str, port: int) -> None:
        try:
            self._server = _Server((address, port), parts)
        except OSError as exc:
            raise EndpointError(f"http: cannot listen on {address}:{port}: {exc.strerror} "
                                f"(set http.port, or http.enabled: false)") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="netvigil-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (port 0 picks a free one)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        log.info("http: serving /healthz /readyz /metrics on %s:%d", *self.address)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=2)
        self._server.server_close()
