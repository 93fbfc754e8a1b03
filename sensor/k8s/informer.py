"""List+watch of one resource with informer semantics the `kubernetes` client lacks.

List (paginated with ``limit``/``continue``), then watch from the list's
resourceVersion with bookmarks; bookmarks and events advance the resourceVersion; a
``410 Gone`` (HTTP status, or an ERROR event carrying a Status with code 410) relists
and reconciles (objects missing from the relist are deleted); a dropped or cut stream
reconnects from the last resourceVersion after a jittered exponential backoff; every
watch request has ``timeoutSeconds``. JSON is parsed here (``_preload_content=False``),
never into the client's model classes, and each object is handed to a `Handler` that
strips it. Garbage from the server is counted and logged with the object's name.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sensor.k8s.pods import MalformedObjectError, object_name

log = logging.getLogger("netvigil.k8s")

WATCH_READ_SLACK_S = 30.0  # read timeout beyond timeoutSeconds before a silent stream is dead
CONNECT_TIMEOUT_S = 10.0


class GoneError(Exception):
    """The resourceVersion (or continue token) expired: relist."""


class StreamError(Exception):
    """The watch stream ended badly (cut mid-event, unparseable line, ERROR event)."""


@dataclass
class Handler:
    """Where an informer's objects go; ``upsert`` returns the object's key."""

    upsert: Callable[[dict[str, Any]], Hashable]
    delete: Callable[[dict[str, Any]], None]
    prune: Callable[[set[Hashable]], int]
    synced: threading.Event = field(default_factory=threading.Event)


@dataclass
class InformerStats:
    """Counters of one informer (`K8sWatcher.stats()` gathers them by resource)."""

    lists: int = 0
    relists: int = 0
    pages: int = 0
    watches: int = 0
    events: int = 0
    added: int = 0
    modified: int = 0
    deleted: int = 0
    bookmarks: int = 0
    pruned: int = 0
    errors: int = 0
    malformed: int = 0
    stream_cuts: int = 0
    resource_version: str = ""
    state: str = "not started"
    http_status: int | None = None


class Backoff:
    """Jittered exponential backoff: initial, doubling up to a maximum, ±25% jitter."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self._next = initial_s
        self._rng = rng or random.Random()

    def reset(self) -> None:
        self._next = self.initial_s

    def next(self) -> float:
        """The delay before the next attempt; grows the one after."""
        delay = self._next * self._rng.uniform(0.75, 1.25)
        self._next = min(self._next * 2, self.max_s)
        return min(delay, self.max_s)


class Informer:
    """One resource's list+watch loop on a daemon thread (see module docstring).

    ``list_call`` is a bound list method of the client (e.g.
    ``CoreV1Api.list_pod_for_all_namespaces``); ``field_selector`` restricts it.
    """

    def __init__(self, resource: str, list_call: Callable[..., Any], handler: Handler, *,
                 field_selector: str | None = None, page_size: int = 500,
                 watch_timeout_s: float = 300.0, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0, resync_s: float = 0.0,
                 on_state: Callable[[Informer], None] | None = None) -> None:
        self.resource, self._call, self.handler = resource, list_call, handler
        self._selector, self._page_size = field_selector, page_size
        self._watch_timeout_s, self._resync_s = watch_timeout_s, resync_s
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self._on_state = on_state
        self.stats = InformerStats()
        self._stop = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self._logged_state: str | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the loop on a daemon thread."""
        self._thread = threading.Thread(target=self.run, name=f"k8s-{self.resource}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the loop to end (returns at once; `stop` also cuts the stream and waits)."""
        self._stop.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the loop to end, cut its open stream, and wait up to ``timeout``."""
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:  # noqa: BLE001 - best effort on a stream being torn down
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """List, then watch, until stopped; never raises."""
        need_list, listed_at = True, 0.0
        while not self._stop.is_set():
            try:
                if need_list or (self._resync_s and time.monotonic() - listed_at >= self._resync_s):
                    self._list()
                    need_list, listed_at = False, time.monotonic()
                    self._backoff.reset()
                self._watch(self.stats.resource_version)
            except GoneError as exc:
                self.stats.relists += 1
                log.info("k8s %s: %s; relisting", self.resource, exc)
                if need_list or time.monotonic() - listed_at < 1.0:  # Gone again at once: back off
                    self._stop.wait(self._backoff.next())
                need_list = True
            except Exception as exc:  # noqa: BLE001 - every failure is counted, logged, retried
                if self._stop.is_set():
                    break
                self.stats.errors += 1
                self._failed(exc)
                self._stop.wait(self._backoff.next())
        self._set_state("stopped")

    # -- list ------------------------------------------------------------------------------
    def _list(self) -> str:  # noqa: C901 - one paginated loop
        """Full paginated list; upserts every object, prunes the rest; returns the list RV."""
        self._set_state("listing")
        keep: set[Hashable] = set()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self._page_size}
            if token:
                kwargs["_continue"] = token
            body = self._request(kwargs, (CONNECT_TIMEOUT_S, 60.0))
            self.stats.pages += 1
            if not isinstance(body, dict) or not isinstance(body.get("items", []), list):
                raise StreamError(f"list {self.resource}: response is not a List object")
            for obj in body.get("items") or ():
                key = self._apply(self.handler.upsert, obj)
                if key is not None:
                    keep.add(key)
            meta = body.get("metadata") or {}
            token = meta.get("continue") or None
            if token is None:
                rv = str(meta.get("resourceVersion") or "")
                break
        self.stats.pruned += self.handler.prune(keep)
        self.stats.lists += 1
        self.stats.resource_version = rv
        self.handler.synced.set()
        self._set_state("synced")
        return rv

    def _request(self, kwargs: dict[str, Any], timeout: tuple[float, float]) -> Any:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        if self._selector:
            kwargs["field_selector"] = self._selector
        try:
            response = self._call(_preload_content=False, _request_timeout=timeout, **kwargs)
        except ApiException as exc:
            self.stats.http_status = exc.status
            if exc.status == 410:
                raise GoneError(f"HTTP 410 Gone ({_status_message(exc.body)})") from None
            raise
        self.stats.http_status = response.status
        if kwargs.get("watch"):
            return response
        try:
            return json.loads(response.data)
        except ValueError as exc:
            raise StreamError(f"list {self.resource}: response is not JSON ({exc})") from None
        finally:
            response.release_conn()

    # -- watch -----------------------------------------------------------------------------
    def _watch(self, rv: str) -> str:
        """One watch request from ``rv``; returns the RV reached when the server ends it."""
        timeout = int(self._watch_timeout_s * random.uniform(1.0, 2.0)) or 1
        response = self._request({"watch": True, "allow_watch_bookmarks": True,
                                  "resource_version": rv, "timeout_seconds": timeout},
                                 (CONNECT_TIMEOUT_S, timeout + WATCH_READ_SLACK_S))
        self.stats.watches += 1
        self._response = response
        if self._stop.is_set():  # stop() ran before the response was published: it cannot cut it
            response.close()
            return rv
        self._set_state("watching")
        from urllib3.exceptions import HTTPError  # noqa: PLC0415

        try:
            for line in self._lines(response):
                rv = self._event(line, rv)
                self._backoff.reset()
        except HTTPError as exc:
            if self._stop.is_set():
                return rv
            self.stats.stream_cuts += 1
            raise StreamError(f"watch {self.resource}: stream dropped ({type(exc).__name__})") from None
        finally:
            self._response = None
            response.close()  # a watch connection is never reused: it may hold an unread tail
            response.release_conn()
        return rv

    def _lines(self, response: Any) -> Iterator[bytes]:
        """Complete JSON lines of a chunked stream; a line cut off at the end is an error."""
        buf = b""
        for chunk in response.stream(65536, decode_content=True):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    yield line
        if buf.strip() and not self._stop.is_set():
            self.stats.stream_cuts += 1
            raise StreamError(f"watch {self.resource}: stream cut mid-event "
                              f"({len(buf)} bytes of an incomplete event dropped)")

    def _event(self, line: bytes, rv: str) -> str:
        try:
            event = json.loads(line)
            kind, obj = event["type"], event["object"]
            if not isinstance(obj, dict):
                raise TypeError("object is not a mapping")
        except (ValueError, KeyError, TypeError) as exc:
            self.stats.malformed += 1
            raise StreamError(f"watch {self.resource}: unparseable event ({exc}): "
                              f"{line[:120]!r}") from None
        self.stats.events += 1
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise GoneError(f"watch ERROR 410 ({obj.get('message', 'resourceVersion expired')})")
            raise StreamError(f"watch {self.resource}: ERROR event {code}: {obj.get('message', obj)}")
        new_rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            self.stats.bookmarks += 1
        elif kind in ("ADDED", "MODIFIED"):
            self.stats.added += kind == "ADDED"
            self.stats.modified += kind == "MODIFIED"
            self._apply(self.handler.upsert, obj)
        elif kind == "DELETED":
            self.stats.deleted += 1
            self._apply(self.handler.delete, obj)
        else:
            self.stats.malformed += 1
            log.warning("k8s %s: ignored watch event of unknown type %r for %s",
                        self.resource, kind, object_name(obj))
        if isinstance(new_rv, str) and new_rv:
            rv = self.stats.resource_version = new_rv
        return rv

    def _apply(self, fn: Callable[[dict[str, Any]], Any], obj: Any) -> Any:
        """Hand one object to the handler; a malformed one is counted and logged, not fatal."""
        try:
            if not isinstance(obj, dict):
                raise MalformedObjectError(f"{object_name(obj)}: not an object")
            return fn(obj)
        except MalformedObjectError as exc:
            self.stats.malformed += 1
            log.warning("k8s %s: skipped malformed object: %s", self.resource, exc)
            return None

    # -- state ---------------------------------------------------------------------------
    def _failed(self, exc: Exception) -> None:
        status = getattr(exc, "status", None)
        if isinstance(exc, StreamError):
            log.warning("k8s %s: %s; reconnecting", self.resource, exc)
            self._set_state(f"reconnecting: {exc}")
        elif status in (401, 403):
            reason = "unauthorized (401)" if status == 401 else "forbidden by RBAC (403)"
            self._set_state(f"no API access: list/watch {self.resource} {reason}: "
                            f"{_status_message(getattr(exc, 'body', None))}")
        elif status:
            self._set_state(f"API error: HTTP {status} {_status_message(getattr(exc, 'body', None))}")
        else:
            self._set_state(f"API unreachable: {type(exc).__name__}: {str(exc)[:200]}")

    def _set_state(self, state: str) -> None:
        self.stats.state = state
        logged_kind = state.split(":", 1)[0]
        if state in ("listing", "watching"):  # transient: a failure repeating across them logs once
            log.debug("k8s %s: %s", self.resource, state)
        elif logged_kind != self._logged_state:
            self._logged_state = logged_kind
            level = logging.WARNING if state.startswith(("no API", "API ")) else logging.INFO
            log.log(level, "k8s %s: %s", self.resource, state)
        if self._on_state is not None:
            self._on_state(self)


def _status_message(body: Any) -> str:
    """The ``message`` of a Status body, or the body itself (short)."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body) if isinstance(body, str) else body
        if isinstance(parsed, dict) and parsed.get("message"):
            return str(parsed["message"])[:300]
    except ValueError:
        pass
    return str(body or "")[:300]
