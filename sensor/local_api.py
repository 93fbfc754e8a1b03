"""The agent's local API: a unix socket serving `netvigil observe` and `netvigil status`.

Protocol: the client sends one JSON line, the agent answers with JSON lines.

- `{"op": "status"}` -> one line, `sensor.agent_status.agent_status()`.
- `{"op": "observe", "filter": {...}, "events": true, "alerts": true, "last": N, "follow": bool}`
  -> `{"kind": "event", "event": {...}}` / `{"kind": "alert", "alert": {...}}` lines: the
  last N matching items of the recent history, then (with `follow`) everything new;
  `{"kind": "dropped", "count": TOTAL}` when this reader fell behind and items were
  dropped; `{"kind": "end"}` when a non-following answer is complete;
  `{"kind": "error", "error": "..."}` for a bad request.

Each observing client gets an `event_hub.Reader` (bounded queue) and its own thread,
which filters (`observe_filter`), serialises and sends. The hot path only appends to
the queue, or counts a drop: a slow or stopped client never slows the sensor. A
client that does not read for `SEND_TIMEOUT_S` is disconnected.

The socket is created owner-only (0600, root) under /run/netvigil/; with `api.group`
it is 0660 and owned by that group. It is bound in a private directory and renamed
into place, so it is never reachable with looser permissions.
"""
from __future__ import annotations

import grp
import json
import logging
import os
import select
import socket
import struct
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rules.event import expanded
from sensor.agent_parts import AgentParts
from sensor.agent_status import agent_status
from sensor.errors import SensorError
from sensor.event_hub import ALERT, EVENT, Reader
from sensor.observe_filter import FilterError, Predicate, compile_filter, prefilter_types

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 30.0
IDLE_SLEEP_S = 0.05
DEFAULT_LAST = 20       # `observe` without --follow and --last shows this many, as hubble does
MAX_REQUEST = 1 << 16


class LocalApiError(SensorError):
    """The local API socket cannot be served where configured."""


def encode(obj: Any) -> bytes:
    """One JSON line (values JSON lacks, e.g. bytes, as text)."""
    return (json.dumps(obj, default=str, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def alert_view(alert: Any) -> dict[str, Any]:
    """What observe filters see of an alert: its output fields, its time, its rule."""
    return {**alert.output_fields, "evt.time": alert.time_ns, "netvigil.rule": alert.rule}


def peer_name(conn: socket.socket) -> str:
    """`observe pid 1234 uid 0`: who is on the other end of a local API connection."""
    try:
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             struct.calcsize("3i")))
    except OSError:
        return ""
    return f"observe pid {pid} uid {uid}"


def _group_id(group: str) -> int:
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise LocalApiError(f"api.group: no group named {group!r}") from None


class LocalApiServer:
    """Accepts clients on the socket until `stop()`."""

    def __init__(self, parts: AgentParts, path: Path, *, group: str | None = None,
                 reader_queue: int = 8192) -> None:
        self.parts = parts
        self.path = path
        self.group = group
        self.reader_queue = reader_queue
        self.disconnected_slow = 0
        self._sock: socket.socket | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="netvigil-api", daemon=True)

    # -- socket ---------------------------------------------------------------------
    def start(self) -> None:
        """Bind the socket (refusing if another agent serves it) and start accepting."""
        gid = _group_id(self.group) if self.group is not None else None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as exc:
            raise LocalApiError(f"api.socket: cannot create {self.path.parent}: {exc.strerror}") from None
        self._refuse_if_served()
        private = Path(tempfile.mkdtemp(prefix=".netvigil-api-", dir=self.path.parent))  # mode 0700
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            tmp = private / "sock"
            sock.bind(str(tmp))
            os.chmod(tmp, 0o600 if gid is None else 0o660)
            if gid is not None:
                os.chown(tmp, -1, gid)
            sock.listen(64)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise LocalApiError(f"api.socket: cannot serve {self.path}: {exc.strerror}") from None
        finally:
            try:
                private.rmdir()
            except OSError:
                pass
        self._sock = sock
        self._thread.start()
        log.info("local API on %s (%s)", self.path, "root only" if gid is None else f"group {self.group}")

    def _refuse_if_served(self) -> None:
        if not self.path.exists() and not self.path.is_symlink():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)   # a stale socket of an agent that is gone
            return
        finally:
            probe.close()
        raise LocalApiError(f"api.socket: another agent is serving {self.path} "
                            f"(stop it, or set api.socket / --api-socket)")

    def stop(self) -> None:
        """Stop accepting, disconnect readers, remove the socket."""
        self._stopped.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        try:
            self.path.unlink()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="netvigil-api-client",
                             daemon=True).start()

    # -- one client -----------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5.0)
            request = self._read_request(conn)
            conn.settimeout(SEND_TIMEOUT_S)
            op = request.get("op")
            if op == "status":
                conn.sendall(encode(agent_status(self.parts)))
            elif op == "observe":
                self._observe(conn, request)
            else:
                conn.sendall(encode({"kind": "error", "error": f"unknown op {op!r}: status or observe"}))
        except (FilterError, ValueError) as exc:
            self._send_quietly(conn, {"kind": "error", "error": str(exc)})
        except socket.timeout:
            self.disconnected_slow += 1
            log.info("local API: disconnected a reader that stopped reading")
        except OSError:
            pass   # the client went away
        except Exception:  # noqa: BLE001 - one client's failure must not reach the agent
            log.exception("local API: request failed")
        finally:
            conn.close()

    @staticmethod
    def _send_quietly(conn: socket.socket, obj: Mapping[str, Any]) -> None:
        try:
            conn.sendall(encode(obj))
        except OSError:
            pass

    @staticmethod
    def _read_request(conn: socket.socket) -> dict[str, Any]:
        data = b""
        while b"\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REQUEST:
                raise ValueError("request too long")
        try:
            request = json.loads(data.split(b"\n", 1)[0] or b"{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"request is not JSON: {exc}") from None
        if not isinstance(request, dict):
            raise ValueError("request must be a JSON object")
        return request

    def _observe(self, conn: socket.socket, request: Mapping[str, Any]) -> None:
        spec = request.get("filter") or {}
        pred = compile_filter(spec)
        want_events, want_alerts = bool(request.get("events", True)), bool(request.get("alerts", True))
        follow = bool(request.get("follow", False))
        last = request.get("last")
        last = int(last) if last is not None else (0 if follow else DEFAULT_LAST)
        hub = self.parts.hub
        reader = Reader(self.reader_queue, types=prefilter_types(spec), events=want_events,
                        alerts=want_alerts, name=peer_name(conn))
        if follow:
            hub.attach(reader)   # before the history is read: nothing falls in between
        try:
            seen_num, seen_alerts = self._send_history(conn, pred, want_events, want_alerts, last)
            if not follow:
                conn.sendall(encode({"kind": "end"}))
                return
            self._stream(conn, reader, pred, seen_num, seen_alerts)
        finally:
            if follow:
                hub.detach(reader)

    def _send_history(self, conn: socket.socket, pred: Predicate, want_events: bool, want_alerts: bool,
                      last: int) -> tuple[int, set[str]]:
        hub = self.parts.hub
        items: list[tuple[int, bytes]] = []
        max_num = 0
        events = hub.recent(EVENT) if want_events else []
        for e in events:
            num = e.get("evt.num")
            if isinstance(num, int):
                max_num = max(max_num, num)
        alerts = hub.recent(ALERT) if want_alerts else []
        sent_alerts = {a.uuid for a in alerts}
        if last > 0:
            for e in events:
                if pred(e):
                    items.append((e.get("evt.time") or 0, encode({"kind": EVENT, "event": expanded(e)})))
            for a in alerts:
                if pred(alert_view(a)):
                    items.append((a.time_ns, encode({"kind": ALERT, "alert": a.to_dict()})))
            items.sort(key=lambda t: t[0])
            if items[-last:]:
                conn.sendall(b"".join(line for _, line in items[-last:]))
        return max_num, sent_alerts

    def _stream(self, conn: socket.socket, reader: Reader, pred: Predicate, seen_num: int,
                seen_alerts: set[str]) -> None:
        reported = 0
        while not self._stopped.is_set():
            batch = reader.take()
            if not batch:
                readable, _, _ = select.select([conn], [], [], IDLE_SLEEP_S)
                if readable and not conn.recv(1, socket.MSG_PEEK):
                    return   # the client closed its end
                continue
            out = []
            for kind, item in batch:
                if kind == EVENT:
                    num = item.get("evt.num")
                    if isinstance(num, int) and num <= seen_num:
                        continue
                    if pred(item):
                        out.append(encode({"kind": EVENT, "event": expanded(item)}))
                elif item.uuid not in seen_alerts and pred(alert_view(item)):
                    out.append(encode({"kind": ALERT, "alert": item.to_dict()}))
            if reader.dropped > reported:
                reported = reader.dropped
                out.append(encode({"kind": "dropped", "count": reported}))
            if out:
                conn.sendall(b"".join(out))

