"""The Recorder: everything the sensor sees, appended to rotating msgpack segments.

Hot-path calls (``event``, ``alert``, ``verdict``) only append the object to an in-memory
inbox (no lock, no encoding); ``process`` also takes a snapshot of the record, which
changes later. A background thread encodes the inbox in batches (woken every
``WAKE_BATCH`` items); if it falls behind (``max_inbox`` items waiting) the caller encodes
the backlog itself, so memory stays bounded and nothing is dropped. The thread writes the encoded records to disk every ``flush_interval_s`` (so
a crash loses at most that much), seals each written block into the segment's hash
chain, rotates segments by size and age and prunes old ones.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sensor.recording import chain
from sensor.recording import format as fmt
from sensor.recording.encoder import SegmentEncoder
from sensor.recording.errors import RecorderClosedError, RecordingError
from sensor.recording.retention import prune
from sensor.recording.segment_file import SegmentFile

log = logging.getLogger(__name__)

MiB = 1 << 20
WAKE_BATCH = 2048
"""Inbox items that wake the writer thread to encode them (bounds the memory they hold)."""
# what encoding a malformed record can raise (bad keys, unpackable values, huge ints)
_ENCODE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, OverflowError,
                  RecursionError, RecordingError)


class _Item:
    """A non-event inbox item: process snapshot, alert or verdict."""

    __slots__ = ("kind", "obj")

    def __init__(self, kind: str, obj: Any) -> None:
        self.kind = kind
        self.obj = obj


@dataclass(frozen=True)
class _Open:
    seq: int
    header: dict[str, Any]


@dataclass(frozen=True)
class _Close:
    first_ns: int | None
    last_ns: int | None
    counts: dict[str, int]


def _copy(v: Any) -> Any:
    if type(v) is list:
        return [_copy(x) for x in v] if any(type(x) in (list, dict) for x in v) else list(v)
    if type(v) is dict:
        return {k: _copy(x) for k, x in v.items()}
    return v


def _as_dict(record: Any) -> dict[str, Any]:
    """A snapshot of a process record (ProcessRecord or mapping) as a plain dict.

    For slotted dataclasses this is ~10x cheaper than ``dataclasses.asdict``; lists and
    dicts are copied so later in-place changes to the record are seen as changes.
    """
    if isinstance(record, Mapping):
        return {k: _copy(v) for k, v in record.items()}
    slots = getattr(type(record), "__slots__", None)
    if slots:
        return {k: _copy(getattr(record, k)) for k in slots}
    to_dict = getattr(record, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    raise RecordingError(f"not a process record: {type(record).__name__}")


def writer_active(directory: Path) -> bool | None:
    """True if a recorder is writing to ``directory`` now (it holds the directory's lock),
    False if not, None if that cannot be told (e.g. no permission to open the lock)."""
    try:
        fd = os.open(Path(directory) / fmt.LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # also releases a shared lock we got
    return False


class Recorder:
    """Records process records, events, alerts and verdicts into ``directory``."""

    def __init__(self, directory: Path | str = fmt.DEFAULT_DIRECTORY, *, host: str,
                 boot_id: str, version: str, max_segment_bytes: int = 64 * MiB,
                 max_segment_age_s: float = 3600, max_total_bytes: int = 1024 * MiB,
                 flush_interval_s: float = 1.0, key: bytes | str | None = None,
                 fsync: bool = False, max_live_processes: int = 65536,
                 max_pending_bytes: int = 64 * MiB, max_inbox: int = 16384) -> None:
        self.directory = Path(directory)
        self._host, self._boot_id, self._version = host, boot_id, version
        self._max_segment_bytes = max_segment_bytes
        self._max_segment_age_s = max_segment_age_s
        self._max_total_bytes = max_total_bytes
        self._flush_interval_s = flush_interval_s
        self._key = chain.normalize_key(key)
        self._fsync = fsync
        self._max_live = max_live_processes
        self._max_pending = max_pending_bytes
        self._max_inbox = max_inbox
        self._inbox: deque[Any] = deque()  # events and _Items, in call order
        self._wake = threading.Event()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / fmt.LOCK_NAME, os.O_RDWR | os.O_CREAT
                                    | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise RecordingError(f"cannot use recording directory {self.directory}: "
                                 f"{exc.strerror}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise RecordingError(f"another recorder is writing to {self.directory}") from exc

        existing = fmt.list_segments(self.directory)
        self._seq = existing[-1][0] if existing else 0
        self._prev_hash: bytes | None = None
        self._prev_seq: int | None = None
        self._chain_id = chain.new_chain_id()
        if existing:
            from sensor.recording.reader import final_hash, segment_chain_id  # heavier imports
            self._prev_seq = existing[-1][0]
            self._prev_hash = final_hash(existing[-1][1], self._key)
            self._chain_id = segment_chain_id(existing[-1][1]) or self._chain_id

        self._lock = threading.Lock()      # encoder state and the pending queue
        self._io_lock = threading.Lock()   # file writes (background thread or flush())
        self._queue: list[Any] = []
        self._pending_bytes = 0
        self._live: OrderedDict[str, dict] = OrderedDict()
        self._closed = False
        self._need_rotate = False
        self._file: SegmentFile | None = None
        self._file_broken = False
        self._stats = {"events": 0, "processes": 0, "alerts": 0, "verdicts": 0,
                       "dropped_events": 0, "bytes_written": 0, "flushes": 0,
                       "segments_written": 0, "segments_pruned": 0, "write_errors": 0,
                       "encode_errors": 0, "inbox_full": 0}
        self._enc: SegmentEncoder
        self._seg_started = 0.0
        self._start_segment()
        # create the segment file now: from here on it, not a crashed predecessor's
        # unclosed segment, is the newest one in the directory (replay's live-segment test)
        self._drain()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netvigil-recorder",
                                        daemon=True)
        self._thread.start()

    # -- hot path (the sensor's thread): no encoding, no lock -----------------------------
    def process(self, record: Any) -> None:
        """Record a process record (ProcessRecord or its dict); unchanged ones are skipped.

        The record is copied now (it changes later, e.g. on exit)."""
        if self._closed:
            raise RecorderClosedError("recorder is closed")
        try:
            d = _as_dict(record)
        except _ENCODE_ERRORS as exc:
            self._encode_error("process record", exc)
            return
        self._put(_Item("p", d))

    def event(self, event: Mapping[str, Any]) -> None:
        """Record one event (a flat field dict).

        The dict is encoded later by the writer thread: do not change it after this call
        (the sensor builds a new dict per event)."""
        if self._closed:
            raise RecorderClosedError("recorder is closed")
        inbox = self._inbox
        if self._pending_bytes > self._max_pending:  # the disk does not keep up
            self._stats["dropped_events"] += 1
            return
        if len(inbox) >= self._max_inbox:  # the writer thread is behind: help it
            self._stats["inbox_full"] += 1
            self._encode_inbox()
        inbox.append(event)
        if len(inbox) % WAKE_BATCH == 0:
            self._wake.set()

    def alert(self, alert: Mapping[str, Any]) -> None:
        """Record an alert (Falco JSON dict, e.g. Alert.to_dict(), or an Alert)."""
        if self._closed:
            raise RecorderClosedError("recorder is closed")
        self._put(_Item("a", alert))

    def verdict(self, verdict: Mapping[str, Any]) -> None:
        """Record an enforcement verdict (mapping, dataclass or object with to_dict())."""
        if self._closed:
            raise RecorderClosedError("recorder is closed")
        self._put(_Item("v", verdict))

    def _put(self, item: _Item) -> None:
        inbox = self._inbox
        if len(inbox) >= self._max_inbox:
            self._stats["inbox_full"] += 1
            self._encode_inbox()
        inbox.append(item)
        if len(inbox) % WAKE_BATCH == 0:
            self._wake.set()

    # -- encoding (writer thread, or flush()/close()) ------------------------------------
    def _encode_inbox(self) -> None:
        """Encode what the inbox holds now, in call order (not what arrives meanwhile, so
        a producer as fast as the encoder cannot hold the writer past its flush time)."""
        inbox = self._inbox
        if not inbox:
            return
        pop = inbox.popleft
        with self._lock:
            try:
                for _ in range(len(inbox)):
                    x = pop()
                    if type(x) is _Item:
                        self._encode_item(x)
                    else:
                        self._encode_event(x)
            except IndexError:  # emptied by another caller meanwhile
                pass

    def _encode_event(self, event: Mapping[str, Any]) -> None:
        enc = self._enc
        try:
            exec_id = event.get("proc.exec_id")
            if exec_id is not None and exec_id not in enc.proc_refs:
                rec = self._live.get(exec_id)
                if rec is not None:
                    self._store_ancestors(rec)
                    enc.process(rec)
            enc.event(event)
        except _ENCODE_ERRORS as exc:
            self._encode_error("event", exc)
            return
        if enc.bytes >= self._max_segment_bytes:
            self._rotate()

    def _encode_item(self, item: _Item) -> None:
        kind, obj = item.kind, item.obj
        if kind == "p":
            try:
                exec_id = obj.get("exec_id")
                if not isinstance(exec_id, str):
                    raise ValueError("process record without a string exec_id")
                live = self._live
                live[exec_id] = obj
                live.move_to_end(exec_id)
                if len(live) > self._max_live:
                    live.popitem(last=False)
                self._store_ancestors(obj)
                self._enc.process(obj)
            except _ENCODE_ERRORS as exc:
                self._encode_error("process record", exc)
                return
            if self._enc.bytes >= self._max_segment_bytes:
                self._rotate()
        else:
            try:
                (self._enc.alert if kind == "a" else self._enc.verdict)(obj)
            except _ENCODE_ERRORS as exc:
                self._encode_error("alert" if kind == "a" else "verdict", exc)

    def _encode_error(self, what: str, exc: Exception) -> None:
        """Never let a malformed input stop the sensor: count it, log the first ones."""
        self._stats["encode_errors"] += 1
        if self._stats["encode_errors"] <= 5:
            log.warning("recording: cannot record %s (%s: %s); skipped", what,
                        type(exc).__name__, exc)

    # -- control --------------------------------------------------------------------
    def flush(self) -> None:
        """Encode and write everything recorded so far to disk now."""
        self._encode_inbox()
        self._drain()

    def close(self) -> None:
        """Flush, write the segment footer and stop the background writer."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._encode_inbox()
        with self._lock:
            self._queue.append(self._close_marker())
        self._drain()
        os.close(self._lock_fd)

    def stats(self) -> dict[str, Any]:
        """Counters: records, bytes written, flushes, segments, drops, errors."""
        with self._lock:
            out = dict(self._stats)
            for k, v in self._enc.counts.items():
                out[k] += v
            out["pending_bytes"] = self._pending_bytes
            out["inbox"] = len(self._inbox)
            out["segment"] = str(self.directory / fmt.segment_name(self._enc.seq))
            out["directory"] = str(self.directory)
            return out

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (call with self._lock held) ----------------------------------------
    def _emit(self, body: bytes) -> None:
        self._queue.append(body)
        self._pending_bytes += len(body)

    def _store_ancestors(self, rec: dict) -> None:
        """Write the missing ancestors of ``rec`` (oldest first) so a segment stands alone."""
        enc, live = self._enc, self._live
        chain_: list[dict] = []
        parent = rec.get("parent_exec_id")
        while parent and parent not in enc.proc_refs and len(chain_) < 64:
            prec = live.get(parent)
            if prec is None or prec in chain_:
                break
            chain_.append(prec)
            parent = prec.get("parent_exec_id")
        for prec in reversed(chain_):
            enc.process(prec)

    def _start_segment(self) -> None:
        self._seq += 1
        created = time.time_ns()
        header = {"format": fmt.FORMAT_VERSION, "host": self._host, "boot_id": self._boot_id,
                  "version": self._version, "created_ns": created, "seq": self._seq, "chain": self._chain_id,
                  "key_id": chain.key_fingerprint(self._key)}
        self._enc = SegmentEncoder(self._seq, created, self._emit)
        self._queue.append(_Open(self._seq, header))
        self._seg_started = time.monotonic()

    def _close_marker(self) -> _Close:
        enc = self._enc
        return _Close(enc.first_ns, enc.last_ns, dict(enc.counts))

    def _rotate(self) -> None:
        enc = self._enc
        for k, v in enc.counts.items():
            self._stats[k] += v
        self._queue.append(self._close_marker())
        self._start_segment()

    # -- background writer --------------------------------------------------------------
    def _run(self) -> None:
        """Encode the inbox whenever a batch is waiting; write, rotate, prune each interval."""
        next_write = time.monotonic() + self._flush_interval_s
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_write - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._encode_inbox()
                if time.monotonic() < next_write:
                    continue
                next_write = time.monotonic() + self._flush_interval_s
                with self._lock:
                    if not self._closed and (
                            self._need_rotate or (
                                self._enc.bytes > 0
                                and time.monotonic() - self._seg_started
                                >= self._max_segment_age_s)):
                        self._need_rotate = False
                        self._rotate()
                self._drain()
            except Exception:  # noqa: BLE001 - the writer thread must outlive any bug
                self._stats["write_errors"] += 1
                log.exception("recording: background writer failed; retrying next interval")

    def _drain(self) -> None:
        with self._io_lock:
            with self._lock:
                items, self._queue = self._queue, []
                self._pending_bytes = 0
            if items:
                self._write(items)

    def _write(self, items: list[Any]) -> None:
        block: list[bytes] = []
        for item in items:
            if type(item) is bytes:
                block.append(item)
                continue
            self._write_block(block)
            block = []
            if isinstance(item, _Close):
                self._close_file(item)
            elif isinstance(item, _Open):
                self._open_file(item)
        self._write_block(block)
        self._stats["flushes"] += 1

    def _write_block(self, block: list[bytes]) -> None:
        if not block or self._file is None or self._file_broken:
            return
        before = self._file.size
        try:
            self._file.append_block(block)
        except OSError as exc:
            self._fail(f"cannot write {self._file.path}: {exc.strerror}")
        self._stats["bytes_written"] += self._file.size - before

    def _open_file(self, item: _Open) -> None:
        header = dict(item.header)
        header["prev_seq"] = self._prev_seq
        header["prev_hash"] = self._prev_hash
        path = self.directory / fmt.segment_name(item.seq)
        self._file_broken = False
        try:
            self._file = SegmentFile(path, header, self._key, self._fsync)
        except RecordingError as exc:
            self._file = None
            self._fail(str(exc))
            return
        self._stats["bytes_written"] += self._file.size
        self._prune()

    def _close_file(self, item: _Close) -> None:
        f = self._file
        if f is None:
            return
        self._file = None
        if self._file_broken:
            f.abandon()
            self._prev_hash, self._prev_seq = None, None
            return
        try:
            before = f.size
            f.close(item.first_ns, item.last_ns, item.counts)
            self._stats["bytes_written"] += f.size - before
            self._stats["segments_written"] += 1
            self._prev_hash, self._prev_seq = f.chain, fmt.segment_seq(f.path)
        except OSError as exc:
            self._fail(f"cannot close {f.path}: {exc.strerror}")
            self._prev_hash, self._prev_seq = None, None

    def _prune(self) -> None:
        """Keep the directory under max_total_bytes, leaving room for the open segment."""
        keep = frozenset({self._file.path}) if self._file else frozenset()
        reserve = min(self._max_segment_bytes, self._max_total_bytes // 2) if self._file else 0
        removed = prune(self.directory, self._max_total_bytes - reserve, keep)
        self._stats["segments_pruned"] += len(removed)
        for path in removed:
            log.info("pruned %s (recording directory over %d bytes)", path,
                     self._max_total_bytes)

    def _fail(self, message: str) -> None:
        """A write failed: drop this segment's remaining records, start a new one soon."""
        self._stats["write_errors"] += 1
        log.warning("recording: %s; starting a new segment", message)
        self._file_broken = True
        self._need_rotate = True
