"""Shared helpers for the alerts tests: loopback HTTP receivers, a forward proxy, a
private PKI, and match stand-ins.

(Named test_alerts_* to stay within the alerts test files; it holds no tests.)
"""
from __future__ import annotations

import base64
import dataclasses
import http.client
import http.server
import json
import select
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from alerts.config import parse_alerts_config
from alerts.model import Alert


@dataclasses.dataclass
class Received:
    """One request a receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    raw_headers: Any = None  # the server's case-insensitive header object

    def json(self) -> Any:
        return json.loads(self.body)


Responder = Callable[[Received], tuple[int, dict[str, str], bytes]]


def ok_responder(_req: Received) -> tuple[int, dict[str, str], bytes]:
    return 200, {}, b"ok"


def reply(handler: http.server.BaseHTTPRequestHandler, status: int,
          headers: Iterable[tuple[str, str]], payload: bytes) -> None:
    """Answer a request with `status`, `headers` and `payload` (with its Content-Length)."""
    handler.send_response(status)
    for k, v in headers:
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


class Receiver:
    """A real HTTP/1.1 server on 127.0.0.1 (ephemeral port) recording every request.

    `respond` decides the answer; `stop()` closes the port (the sink sees connection
    refused) and `restart()` listens on the same port again.
    """

    def __init__(self, respond: Responder = ok_responder, tls: ssl.SSLContext | None = None,
                 port: int = 0) -> None:
        self.requests: list[Received] = []
        self.respond = respond
        self._tls = tls
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self.arrival_times: list[float] = []
        self.connections: list[socket.socket] = []
        self._start(port)

    def _start(self, port: int) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                req = Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                               self.headers)
                status, headers, payload = receiver.respond(req)
                with receiver._arrived:
                    receiver.requests.append(req)
                    receiver.arrival_times.append(time.perf_counter())
                    receiver._arrived.notify_all()
                reply(self, status, headers.items(), payload)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

            def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
                receiver.connections.append(request)
                super().process_request(request, client_address)

        self.server = Server(("127.0.0.1", port), Handler)
        if self._tls is not None:
            self.server.socket = self._tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until `count` requests arrived (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"only {len(self.requests)} of {count} requests arrived")
                self._arrived.wait(left)
            return list(self.requests)

    def stop(self) -> None:
        """Close the port and every open (kept-alive) connection: the receiver is down."""
        self.server.shutdown()
        self.server.server_close()
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.connections.clear()
        self.thread.join()

    def restart(self) -> None:
        self._start(self.port)


class HangingReceiver:
    """Accepts TCP connections and reads, but never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self._closed = True
        self.sock.close()
        for c in self.conns:
            c.close()


@dataclasses.dataclass
class Proxied:
    """One request a forward proxy got: `target` is the absolute URI, or host:port for
    CONNECT."""

    method: str
    target: str
    headers: dict[str, str]


class ForwardProxy:
    """A real forward proxy on 127.0.0.1: absolute-URI requests for http targets are
    forwarded (keep-alive), CONNECT opens a tunnel (for https targets). With `auth`
    ("user:password") it answers 407 to requests without those Proxy-Authorization
    credentials."""

    def __init__(self, auth: str | None = None) -> None:
        self.requests: list[Proxied] = []
        proxy = self
        want = "Basic " + base64.b64encode(auth.encode()).decode() if auth else None

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _allowed(self) -> bool:
                proxy.requests.append(Proxied(self.command, self.path,
                                              {k.lower(): v for k, v in self.headers.items()}))
                if want is None or self.headers.get("Proxy-Authorization") == want:
                    return True
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_CONNECT(self) -> None:  # noqa: N802 - http.server API
                if not self._allowed():
                    return
                host, _, port = self.path.rpartition(":")
                upstream = socket.create_connection((host, int(port)), timeout=10)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                peers = {self.connection: upstream, upstream: self.connection}
                try:
                    while True:
                        ready, _, _ = select.select(list(peers), [], [], 10)
                        if not ready:
                            break
                        data = ready[0].recv(65536)
                        if not data:
                            break
                        peers[ready[0]].sendall(data)
                finally:
                    upstream.close()
                    self.close_connection = True

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self._allowed():
                    return
                url = urllib.parse.urlsplit(self.path)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-authorization", "proxy-connection")}
                upstream = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
                path = (url.path or "/") + (f"?{url.query}" if url.query else "")
                upstream.request(self.command, path, body=body, headers=headers)
                resp = upstream.getresponse()
                payload = resp.read()
                upstream.close()
                hop = ("content-length", "connection", "transfer-encoding")
                reply(self, resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in hop],
                      payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_pki(d: Path) -> Path:
    """A private CA in `d` and, signed by it, server and client certificates for
    127.0.0.1 (ca.crt, server.crt/.key, client.crt/.key), made with the openssl CLI."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", "san.ext")
    return d


def server_tls_context(pki: Path, require_client: bool) -> ssl.SSLContext:
    """The TLS context of a receiver serving `pki`'s server certificate; with
    `require_client`, it demands a client certificate signed by the CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.crt", pki / "server.key")
    if require_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki / "ca.crt")
    return ctx


@dataclasses.dataclass(frozen=True)
class FakeMatch:
    """Stand-in with exactly the RuleMatch attributes documented in interfaces.md."""

    rule: str = "Outbound connection to C2"
    priority: str = "Warning"
    output: str = "Outbound connection (proc=curl dest=203.0.113.7:4444)"
    output_fields: dict = dataclasses.field(default_factory=lambda: {
        "proc.name": "curl", "proc.exepath": "/usr/bin/curl", "proc.pid": 4242,
        "proc.cmdline": "curl http://203.0.113.7:4444/x", "fd.l4proto": "tcp",
        "fd.cip": "10.0.0.5", "fd.cport": 51514, "fd.sip": "203.0.113.7", "fd.sport": 4444,
        "fd.rip": "203.0.113.7", "fd.rport": 4444, "user.name": "root"})
    tags: tuple = ("network", "mitre_command_and_control")
    source: str = "syscall"
    time_ns: int = 1_763_700_000_123_456_789
    event: dict = dataclasses.field(default_factory=lambda: {
        "proc.exec_id": "b1d3-4242-99", "container.id": "3ad7b26ded6d",
        "container.name": "web", "container.image": "nginx:1.27", "k8s.ns.name": "shop",
        "k8s.pod.name": "web-7f9c", "evt.type": "connect"})
    enforcement: Any = None


def make_alert(i: int = 0, rule: str = "Outbound connection to C2", priority: str = "Warning",
               tags: tuple = ("network",), **fields: Any) -> Alert:
    """A distinct alert number `i` (distinct key fields, so noise control keeps it)."""
    base = FakeMatch()
    of = dict(base.output_fields, **{"fd.rport": 10000 + i}, **fields)
    return Alert.from_match(dataclasses.replace(base, rule=rule, priority=priority, tags=tags,
                                                output=f"{base.output} #{i}", output_fields=of,
                                                time_ns=base.time_ns + i), "node-1")


QUIET_NOISE = {"aggregate": {"enabled": False}, "rate_limit": {"enabled": False}}
FAST_DELIVERY = {"timeout": "0.5s", "backoff_initial": "20ms", "backoff_max": "100ms",
                 "fsync": "never"}


def config_for(sinks: dict[str, dict], env: dict[str, str] | None = None, noise: dict | None = None,
               delivery: dict | None = None):
    """An AlertsConfig for tests: fast retries, noise control off unless given."""
    return parse_alerts_config({"sinks": sinks, "noise": noise or QUIET_NOISE,
                                "delivery": {**FAST_DELIVERY, **(delivery or {})}},
                               "test.yaml", env=env or {})


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
