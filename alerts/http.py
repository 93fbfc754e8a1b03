"""Minimal keep-alive HTTP(S) POST client for the HTTP sinks (standard library only).

Classifies responses the way delivery needs: 2xx ok; 408, 429 and 5xx retryable
(Retry-After honoured); other 4xx and 3xx permanent. Error messages name the sink and
`scheme://host:port` only: URL paths and queries (where webhook tokens live) never appear.
"""
from __future__ import annotations

import dataclasses
import email.utils
import http.client
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping

from alerts.errors import AlertsConfigError, PermanentDeliveryError, RetryableDeliveryError
from alerts.secrets import Redactor

USER_AGENT = "netvigil/0.1"
_BODY_EXCERPT = 200


@dataclasses.dataclass(frozen=True)
class TLSOptions:
    """TLS settings of an HTTPS sink."""

    ca_file: str | None = None
    insecure_skip_verify: bool = False
    cert_file: str | None = None
    key_file: str | None = None

    def ssl_context(self, where: str) -> ssl.SSLContext:
        """An SSL context for these options (errors name `where`)."""
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.insecure_skip_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if self.cert_file:
                ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise AlertsConfigError(f"{where}: bad TLS settings: {exc}") from None
        return ctx


@dataclasses.dataclass(frozen=True)
class HttpResponse:
    """Status, headers (lower-case names) and the start of the body of a response."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def safe_origin(url: str) -> str:
    """`scheme://host:port` of a URL: what may appear in logs and errors."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{host}:{port}"


def validate_url(url: str, where: str) -> None:
    """Refuse anything but an absolute http(s) URL (the message never shows the URL).

    Control characters and spaces are refused before splitting: urlsplit strips CR, LF
    and TAB, so a URL carrying them would pass and then inject headers."""
    bad = next((ch for ch in url if ord(ch) < 0x21 or 0x7F <= ord(ch) <= 0x9F), None)
    if bad is not None:
        raise AlertsConfigError(f"{where}: the URL contains a control character or space "
                                f"(U+{ord(bad):04X}); percent-encode it")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise AlertsConfigError(f"{where}: the URL is malformed") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AlertsConfigError(f"{where}: the URL must be an absolute http:// or https:// URL")


class HttpPoster:
    """POSTs bodies to one URL over a kept-alive connection; thread-confined except abort()."""

    def __init__(self, url: str, *, sink: str, timeout_s: float, tls: TLSOptions | None = None,
                 redactor: Redactor | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout_s
        self._sink = sink
        self._origin = safe_origin(url)
        self._redact = redactor or Redactor()
        self._redact.add(self._path if self._path != "/" else "")
        self._ctx = (tls or TLSOptions()).ssl_context(f"sink '{sink}'") if self._https else None
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    @property
    def origin(self) -> str:
        """`scheme://host:port` (safe to show)."""
        return self._origin

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._ctx)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def post(self, body: bytes, headers: Mapping[str, str]) -> HttpResponse:
        """POST `body`; returns the response or raises RetryableDeliveryError on I/O failure."""
        all_headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                       "Content-Length": str(len(body)), **headers}
        for attempt in (0, 1):
            reused = self._conn is not None
            try:
                if self._conn is None:
                    with self._lock:
                        self._conn = self._connect()
                conn = self._conn
                conn.request("POST", self._path, body=body, headers=all_headers)
                resp = conn.getresponse()
                data = resp.read()
                result = HttpResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
                if resp.will_close:
                    self.close()
                return result
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused and attempt == 0:
                    continue  # the receiver closed an idle kept-alive connection: reconnect once
                raise self._io_error(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._io_error(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _io_error(self, exc: BaseException) -> RetryableDeliveryError:
        kind = "timed out" if isinstance(exc, (socket.timeout, TimeoutError)) else type(exc).__name__
        detail = self._redact(str(exc))
        msg = f"sink '{self._sink}': POST to {self._origin} failed: {kind}"
        return RetryableDeliveryError(f"{msg} ({detail})" if detail and detail != kind else msg)

    def check(self, resp: HttpResponse) -> None:
        """Raise the delivery error matching a non-2xx response."""
        if 200 <= resp.status < 300:
            return
        excerpt = self._redact(resp.body[:_BODY_EXCERPT].decode("utf-8", "replace").strip())
        msg = f"sink '{self._sink}': {self._origin} answered HTTP {resp.status}"
        if excerpt:
            msg += f": {excerpt}"
        if resp.status in (408, 429) or resp.status >= 500:
            raise RetryableDeliveryError(msg, parse_retry_after(resp.headers.get("retry-after")))
        raise PermanentDeliveryError(msg)

    def close(self) -> None:
        """Close the kept-alive connection (a new one is opened on the next post)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def abort(self) -> None:
        """From another thread: unblock a request stuck on a hanging receiver."""
        conn = self._conn
        sock = getattr(conn, "sock", None) if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
