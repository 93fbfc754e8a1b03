"""Durable on-disk spool of one sink: append-only JSON-lines segments, read in order.

Layout (one directory per sink): segment files `<20-digit id>.jsonl`, read in id order;
`cursor.json` records how far each segment has been delivered. Appends always go to a
segment created by this process (never to one left by a previous run); a segment is
deleted once every record in it is delivered. Records that must go *before* everything
spooled (alerts still in memory at shutdown) are written to a new segment with a lower id.

Durability (`fsync` policy): "always" fsyncs every append; "interval" (default) fsyncs
at most every `fsync_interval_s` (call `sync_if_due`), and on rotation and close;
"never" leaves it to the kernel. Whatever policy, a process crash loses nothing that
`append` returned from (the data is in the kernel); only a power loss or kernel crash
can lose up to one interval. The cursor is saved at most every 0.5 s and on close: after
a crash, up to 0.5 s of already delivered records are delivered again (at-least-once;
receivers deduplicate on `uuid`).
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from alerts.errors import SpoolError, SpoolFullError

SUFFIX = ".jsonl"
FIRST_SEGMENT = 10**12
CURSOR_FILE = "cursor.json"
LOCK_FILE = "lock"
CURSOR_SAVE_INTERVAL_S = 0.5


@dataclasses.dataclass(frozen=True)
class SpoolRecord:
    """One spooled record and where it ends (for `ack`). `partial`: cut short by a crash."""

    data: bytes
    segment: int
    end: int
    partial: bool = False


class Spool:
    """Append-only FIFO of byte records on disk. Thread-safe."""

    def __init__(self, directory: Path, *, segment_bytes: int = 8 << 20, max_bytes: int = 256 << 20,
                 fsync: str = "interval", fsync_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self._segment_bytes = segment_bytes
        self._max_bytes = max_bytes
        self._fsync = fsync
        self._fsync_interval = fsync_interval_s
        self._clock = clock
        self._lock = threading.RLock()
        self._segments: list[int] = []
        self._sizes: dict[int, int] = {}
        self._offsets: dict[int, int] = {}
        self._pending = 0
        self._write_id: int | None = None
        self._write_fd: int | None = None
        self._dirty = False
        self._last_sync = clock()
        self._read_id: int | None = None
        self._read_fh = None
        self._cursor_dirty = False
        self._cursor_saved = clock()
        self._opened = False
        self._lock_fd: int | None = None

    # -- opening -------------------------------------------------------------------------
    def _path(self, seg: int) -> Path:
        return self.directory / f"{seg:020d}{SUFFIX}"

    def open(self) -> Spool:
        """Scan existing segments (a previous run's backlog) and the cursor."""
        with self._lock:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._take_lock()
                names = [p.name for p in self.directory.iterdir() if p.name.endswith(SUFFIX)]
            except OSError as exc:
                raise SpoolError(f"spool {self.directory}: {exc.strerror}") from None
            segs = sorted(int(n[: -len(SUFFIX)]) for n in names if n[: -len(SUFFIX)].isdigit())
            offsets = self._load_cursor()
            self._segments, self._sizes, self._offsets, self._pending = [], {}, {}, 0
            for seg in segs:
                path = self._path(seg)
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise SpoolError(f"spool {path}: {exc.strerror}") from None
                offset = min(offsets.get(seg, 0), len(data))
                if offset == len(data):
                    path.unlink(missing_ok=True)
                    continue
                rest = data[offset:]
                self._pending += rest.count(b"\n") + (0 if rest.endswith(b"\n") else 1)
                self._segments.append(seg)
                self._sizes[seg] = len(data)
                self._offsets[seg] = offset
            self._opened = True
            self._save_cursor()
            return self

    def _take_lock(self) -> None:
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError(f"spool {self.directory} is in use by another netvigil process") from None
        self._lock_fd = fd

    def _load_cursor(self) -> dict[int, int]:
        try:
            raw = json.loads((self.directory / CURSOR_FILE).read_text())
            return {int(k): int(v) for k, v in raw.get("offsets", {}).items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}  # unreadable cursor: deliver everything again (at-least-once)

    def _save_cursor(self) -> None:
        tmp = self.directory / (CURSOR_FILE + ".tmp")
        offsets = {str(s): o for s, o in self._offsets.items() if o}
        try:
            tmp.write_text(json.dumps({"offsets": offsets}))
            tmp.replace(self.directory / CURSOR_FILE)
        except OSError as exc:
            raise SpoolError(f"spool {self.directory}: cannot save cursor: {exc.strerror}") from None
        self._cursor_dirty = False
        self._cursor_saved = self._clock()

    # -- state ---------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Records spooled and not yet acknowledged."""
        return self._pending

    @property
    def size_bytes(self) -> int:
        """Bytes on disk in segment files."""
        return sum(self._sizes.values())

    # -- writing -------------------------------------------------------------------------
    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _new_segment(self, seg: int) -> int:
        fd = os.open(self._path(seg), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        if self._fsync != "never":
            self._sync_dir()
        return fd

    def append(self, record: bytes) -> None:
        """Append one record (must not contain a newline). Raises SpoolFullError at max size."""
        line = record + b"\n"
        with self._lock:
            if self.size_bytes + len(line) > self._max_bytes:
                raise SpoolFullError(f"spool {self.directory} is full ({self._max_bytes} bytes)")
            try:
                if self._write_fd is None or self._sizes.get(self._write_id, 0) >= self._segment_bytes:
                    self._close_writer()
                    seg = (self._segments[-1] + 1) if self._segments else FIRST_SEGMENT
                    self._write_fd = self._new_segment(seg)
                    self._write_id = seg
                    self._segments.append(seg)
                    self._sizes[seg] = 0
                    self._offsets[seg] = 0
                os.write(self._write_fd, line)
            except OSError as exc:
                raise SpoolError(f"spool {self.directory}: cannot write: {exc.strerror}") from None
            self._sizes[self._write_id] += len(line)  # type: ignore[index]
            self._pending += 1
            self._dirty = True
            if self._fsync == "always":
                os.fsync(self._write_fd)
                self._dirty = False

    def prepend(self, records: list[bytes]) -> None:
        """Write records that come before everything spooled so far (fsynced)."""
        if not records:
            return
        data = b"".join(r + b"\n" for r in records)
        with self._lock:
            seg = (self._segments[0] - 1) if self._segments else FIRST_SEGMENT
            try:
                fd = self._new_segment(seg)
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise SpoolError(f"spool {self.directory}: cannot write: {exc.strerror}") from None
            self._segments.insert(0, seg)
            self._sizes[seg] = len(data)
            self._offsets[seg] = 0
            self._pending += len(records)

    def _close_writer(self) -> None:
        if self._write_fd is not None:
            if self._fsync != "never" and self._dirty:
                os.fsync(self._write_fd)
            os.close(self._write_fd)
            self._write_fd = None
            self._dirty = False

    def sync_if_due(self) -> None:
        """fsync the active segment if the interval policy says so."""
        with self._lock:
            now = self._clock()
            if self._write_fd is not None and self._dirty and self._fsync == "interval" \
                    and now - self._last_sync >= self._fsync_interval:
                os.fsync(self._write_fd)
                self._dirty = False
                self._last_sync = now
            if self._cursor_dirty and now - self._cursor_saved >= CURSOR_SAVE_INTERVAL_S:
                self._save_cursor()

    # -- reading -------------------------------------------------------------------------
    def _reader(self, seg: int):
        if self._read_id != seg:
            if self._read_fh is not None:
                self._read_fh.close()
            self._read_fh = open(self._path(seg), "rb")  # noqa: SIM115 - kept open across peeks
            self._read_id = seg
        return self._read_fh

    def _drop_segment(self, seg: int) -> None:
        if self._read_id == seg and self._read_fh is not None:
            self._read_fh.close()
            self._read_fh, self._read_id = None, None
        self._segments.remove(seg)
        self._sizes.pop(seg, None)
        self._offsets.pop(seg, None)
        self._path(seg).unlink(missing_ok=True)
        self._cursor_dirty = True

    def peek(self, limit: int) -> list[SpoolRecord]:
        """Up to `limit` oldest unacknowledged records (not removed until `ack`)."""
        out: list[SpoolRecord] = []
        with self._lock:
            for seg in list(self._segments):
                offset = self._offsets.get(seg, 0)
                if offset >= self._sizes[seg]:
                    if seg != self._write_id:
                        self._drop_segment(seg)
                        continue
                    break
                fh = self._reader(seg)
                fh.seek(offset)
                while len(out) < limit and offset < self._sizes[seg]:
                    line = fh.readline()
                    if not line:
                        break
                    if not line.endswith(b"\n"):
                        if seg == self._write_id:
                            return out  # the writer is mid-line: read it next time
                        offset += len(line)
                        out.append(SpoolRecord(line, seg, offset, partial=True))
                        break
                    offset += len(line)
                    out.append(SpoolRecord(line[:-1], seg, offset))
                if len(out) >= limit or seg == self._write_id:
                    break
            return out

    def ack(self, records: list[SpoolRecord]) -> None:
        """Mark these records (a prefix of the last `peek`) delivered."""
        if not records:
            return
        with self._lock:
            for rec in records:
                if rec.segment in self._offsets:
                    self._offsets[rec.segment] = max(self._offsets[rec.segment], rec.end)
            last_seg = records[-1].segment
            for seg in list(self._segments):
                if seg >= last_seg:
                    break
                if seg != self._write_id:
                    self._drop_segment(seg)
            if last_seg in self._sizes and self._offsets.get(last_seg, 0) >= self._sizes[last_seg] \
                    and last_seg != self._write_id:
                self._drop_segment(last_seg)
            self._pending = max(0, self._pending - len(records))
            self._cursor_dirty = True
            if self._clock() - self._cursor_saved >= CURSOR_SAVE_INTERVAL_S:
                self._save_cursor()

    def close(self) -> None:
        """fsync and close the active segment, save the cursor."""
        with self._lock:
            self._close_writer()
            self._write_id = None
            if self._read_fh is not None:
                self._read_fh.close()
                self._read_fh, self._read_id = None, None
            if self._opened:
                self._save_cursor()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            self._opened = False
