"""The HTTP(S) POST client of the HTTP sinks: one `requests.Session` per sink.

Keep-alive pooling, connect/read timeouts, a forward proxy (the environment's
HTTPS_PROXY/HTTP_PROXY/ALL_PROXY with NO_PROXY, or the sink's own `proxy`), a CA bundle
and a client certificate (mTLS) per sink. Classifies responses the way delivery needs:
2xx ok; 408, 429 and 5xx retryable (Retry-After honoured); other 4xx and 3xx permanent
(redirects are not followed); a proxy's 407 is retryable. Error messages name the sink
and `scheme://host:port` only: URL paths and queries (where webhook tokens live) and
proxy credentials never appear.
"""
from __future__ import annotations

import dataclasses
import email.utils
import http.client
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

import requests
import requests.adapters
import requests.utils
import urllib3
import urllib3.connectionpool

from alerts.errors import AlertsConfigError, PermanentDeliveryError, RetryableDeliveryError
from alerts.secrets import Redactor, Secret

USER_AGENT = "netvigil/0.1"
_BODY_EXCERPT = 200
#: Errors of a kept-alive connection the receiver closed while we sent on it: resent once.
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


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
class ProxyOptions:
    """The forward proxy of an HTTP sink: by default the environment's (read once when
    the sink starts, NO_PROXY honoured); `url` gives the sink its own; `direct` ignores
    the environment."""

    url: Secret | None = None
    direct: bool = False


@dataclasses.dataclass(frozen=True)
class HttpResponse:
    """Status, headers (case-insensitive names) and the body of a response."""

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


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost error under requests' and urllib3's wrappers (whose own messages
    carry the URL path); stops at a cycle."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "reason", None)  # urllib3 MaxRetryError
        if not isinstance(inner, BaseException):
            inner = next((a for a in getattr(exc, "args", ()) if isinstance(a, BaseException)),
                         None)
        inner = inner or exc.__cause__
        if inner is None:
            return exc
        exc = inner
    return exc


def _tls_hint(root: BaseException, client_cert: bool) -> str:
    """What to change in the sink's `tls:` settings for this TLS failure, or ""."""
    if isinstance(root, ssl.SSLCertVerificationError):
        return ("; the receiver's certificate is not trusted: set tls.ca_file to the CA that "
                "signed it")
    if "CERTIFICATE_REQUIRED" in str(getattr(root, "reason", "") or ""):
        return "; the receiver requires a client certificate: set tls.cert_file and tls.key_file"
    if not client_cert and isinstance(root, (ssl.SSLEOFError, ConnectionResetError)):
        return ("; the receiver closed the TLS connection: if it requires a client certificate, "
                "set tls.cert_file and tls.key_file")
    return ""


class _ScrubRequestLog(logging.Filter):
    """urllib3 logs request lines with the URL path (where webhook tokens live) at
    DEBUG: within a sink's POST, that sink's redactor scrubs them."""

    current = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        redact = getattr(self.current, "redact", None)
        if redact is not None:
            record.msg, record.args = redact(record.getMessage()), ()
        return True


_SCRUB = _ScrubRequestLog()
for _name in ("urllib3.connectionpool", "urllib3.connection", "urllib3.poolmanager",
              "urllib3.util.retry"):
    logging.getLogger(_name).addFilter(_SCRUB)


class _Tracked:
    """Pool mixin: remembers the connection in use, so `abort()` can shut its socket."""

    in_use: Any = None

    def _get_conn(self, timeout: float | None = None) -> Any:
        self.in_use = conn = super()._get_conn(timeout)  # type: ignore[misc]
        return conn


class _TrackedPool(_Tracked, urllib3.connectionpool.HTTPConnectionPool):
    pass


class _TrackedHTTPSPool(_Tracked, urllib3.connectionpool.HTTPSConnectionPool):
    pass


_POOL_CLASSES = {"http": _TrackedPool, "https": _TrackedHTTPSPool}


class _SinkAdapter(requests.adapters.HTTPAdapter):
    """One sink's transport (it posts to one URL through one fixed proxy or none): our
    SSL context (CA file, client certificate, or no verification) instead of requests'
    certifi bundle; its pool and request target resolved once, not per POST; the
    connection in use tracked for abort()."""

    def __init__(self, ctx: ssl.SSLContext | None) -> None:
        self._ctx = ctx
        self._cert_reqs = "CERT_NONE" if ctx is not None and ctx.verify_mode == ssl.CERT_NONE \
            else "CERT_REQUIRED"
        self._pool: Any = None
        self._target: str | None = None
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager

    def build_connection_pool_key_attributes(self, request: Any, verify: Any,
                                             cert: Any = None) -> tuple[dict, dict]:
        host_params, _ = super().build_connection_pool_key_attributes(request, verify, cert)
        if self._ctx is None:
            return host_params, {}
        return host_params, {"ssl_context": self._ctx, "cert_reqs": self._cert_reqs}

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Nothing to set: the pool's SSL context carries CA, client certificate and mode."""

    def get_connection_with_tls_context(self, request: Any, verify: Any,
                                        proxies: Any = None, cert: Any = None) -> Any:
        if self._pool is None or self._pool.pool is None:  # first POST, or closed since
            self._pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
        return self._pool

    def request_url(self, request: Any, proxies: Any) -> str:
        if self._target is None:  # the path, or the absolute URI for an http proxy
            self._target = super().request_url(request, proxies)
        return self._target

    def build_response(self, req: Any, resp: Any) -> requests.Response:
        """The response without cookie parsing or charset sniffing (sinks use neither)."""
        response = requests.Response()
        response.status_code, response.reason = resp.status, resp.reason
        response.headers = resp.headers  # urllib3's case-insensitive header dict
        response.raw, response.url, response.request = resp, req.url, req
        response.connection = self
        return response

    def abort(self) -> None:
        """Shut the socket of the connection in use (another thread is blocked on it)."""
        sock = getattr(getattr(self._pool, "in_use", None), "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HttpPoster:
    """POSTs bodies to one URL on the sink's own `requests.Session`; thread-confined
    except abort()."""

    def __init__(self, url: str, *, sink: str, timeout_s: float, tls: TLSOptions | None = None,
                 proxy: ProxyOptions | None = None, redactor: Redactor | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self._sink = sink
        self._origin = safe_origin(url)
        self._redact = redactor or Redactor()
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._redact.add(path if path != "/" else "")
        tls = tls or TLSOptions()
        ctx = tls.ssl_context(f"sink '{sink}'") if parts.scheme == "https" else None
        self._client_cert = bool(tls.cert_file)
        proxy_url = self._proxy_url(url, proxy or ProxyOptions())
        self._proxies = {parts.scheme: proxy_url} if proxy_url else {}
        self._proxy_origin = safe_origin(proxy_url) if proxy_url else None
        if proxy_url:
            self._redact.add(proxy_url)
            pp = urllib.parse.urlsplit(proxy_url)
            for secret in (pp.password, urllib.parse.unquote(pp.password or "")):
                self._redact.add(secret or "")
        self._timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self._adapter = _SinkAdapter(ctx)
        self._session = requests.Session()
        self._session.trust_env = False  # the environment's proxy is read once, above
        self._session.mount("http://", self._adapter)
        self._session.mount("https://", self._adapter)
        # Prepared once, copied per POST: Session.prepare_request costs nearly as much as
        # the POST itself (header merging, URL parsing).
        self._template = self._session.prepare_request(requests.Request(
            "POST", url, headers={"User-Agent": USER_AGENT, "Content-Type": "application/json",
                                  "Accept-Encoding": "identity"}))
        del self._template.headers["Accept"]
        del self._template.headers["Connection"]
        self._warm = False  # a kept-alive connection answered before

    def _proxy_url(self, url: str, proxy: ProxyOptions) -> str | None:
        if proxy.url is not None:
            return proxy.url.reveal()
        if proxy.direct:
            return None
        found = requests.utils.get_environ_proxies(url)  # {} when NO_PROXY matches
        scheme = urllib.parse.urlsplit(url).scheme
        value = found.get(scheme) or found.get("all")
        if not value:
            return None
        value = requests.utils.prepend_scheme_if_needed(value, "http")
        validate_url(value, f"sink '{self._sink}': the proxy in the environment "
                            f"({scheme.upper()}_PROXY or ALL_PROXY)")
        return value

    @property
    def origin(self) -> str:
        """`scheme://host:port` (safe to show)."""
        return self._origin

    @property
    def display(self) -> str:
        """`scheme://host:port`, and `via proxy scheme://host:port` when proxied (safe to show)."""
        if self._proxy_origin is None:
            return self._origin
        return f"{self._origin} via proxy {self._proxy_origin}"

    def post(self, body: bytes, headers: Mapping[str, str]) -> HttpResponse:
        """POST `body`; returns the response or raises RetryableDeliveryError on I/O failure."""
        for attempt in (0, 1):
            request = self._template.copy()
            request.headers.update(headers)
            request.headers["Content-Length"] = str(len(body))
            request.body = body
            reused = self._warm
            _SCRUB.current.redact = self._redact
            try:
                # Straight to the session's adapter: Session.send would add cookies, hooks
                # and redirect handling, none of which a sink wants, at a cost per POST.
                resp = self._adapter.send(request, timeout=self._timeout, proxies=self._proxies)
                result = HttpResponse(resp.status_code, resp.headers, resp.content)
            except requests.RequestException as exc:
                self._warm = False
                if isinstance(exc, ValueError):
                    raise  # a bad header value, as before: the worker names the sink
                if reused and attempt == 0 and isinstance(_root_cause(exc), _STALE_CONNECTION):
                    continue  # the receiver closed an idle kept-alive connection: resend once
                raise self._io_error(exc) from None
            finally:
                _SCRUB.current.redact = None
            self._warm = True
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _io_error(self, exc: BaseException) -> RetryableDeliveryError:
        root = _root_cause(exc)
        timed_out = isinstance(exc, requests.Timeout) or isinstance(root, TimeoutError)
        kind = "timed out" if timed_out else type(root).__name__
        detail = self._redact(str(root))
        msg = f"sink '{self._sink}': POST to {self.display} failed: {kind}"
        if detail and detail != kind:
            msg += f" ({detail})"
        hint = _tls_hint(root, self._client_cert) if self._origin.startswith("https:") else ""
        if self._proxy_origin and "Tunnel connection failed: 407" in detail:
            hint = "; check the proxy's credentials"
        return RetryableDeliveryError(msg + hint)

    def check(self, resp: HttpResponse) -> None:
        """Raise the delivery error matching a non-2xx response."""
        if 200 <= resp.status < 300:
            return
        excerpt = self._redact(resp.body[:_BODY_EXCERPT].decode("utf-8", "replace").strip())
        proxy_refused = resp.status == 407 and self._proxy_origin is not None
        answered = f"the proxy {self._proxy_origin}" if proxy_refused else self._origin
        msg = f"sink '{self._sink}': {answered} answered HTTP {resp.status}"
        if excerpt:
            msg += f": {excerpt}"
        if proxy_refused:  # our proxy credentials, not the receiver refusing the alert
            raise RetryableDeliveryError(msg + "; check the proxy's credentials")
        if resp.status in (408, 429) or resp.status >= 500:
            raise RetryableDeliveryError(msg, parse_retry_after(resp.headers.get("retry-after")))
        raise PermanentDeliveryError(msg)

    def close(self) -> None:
        """Close the kept-alive connections (new ones are opened on the next post)."""
        self._warm = False
        self._session.close()

    def abort(self) -> None:
        """From another thread: unblock a request stuck on a hanging receiver."""
        self._adapter.abort()
