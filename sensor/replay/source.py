"""Which segments a replay reads, in which order, and what is missing between them."""
from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sensor.recording import format as fmt
from sensor.recording.errors import SegmentFormatError
from sensor.recording.reader import Problem, read_footer
from sensor.replay.errors import ReplayError
from sensor.replay.timespec import format_ns


@dataclass
class SegmentRef:
    """One segment file found on the command line, with its header and footer."""

    path: Path
    header: dict[str, Any]
    footer: dict[str, Any] | None
    size: int
    live: bool = False  # being written now by a running recorder

    @property
    def seq(self) -> int:
        seq = self.header.get("seq")
        return seq if isinstance(seq, int) else (fmt.segment_seq(self.path) or 0)

    @property
    def host(self) -> str:
        return str(self.header.get("host", "?"))

    @property
    def first_ns(self) -> int | None:
        v = self.footer.get("first_ns") if self.footer else None
        return v if isinstance(v, int) else None

    @property
    def last_ns(self) -> int | None:
        v = self.footer.get("last_ns") if self.footer else None
        return v if isinstance(v, int) else None

    @property
    def start_ns(self) -> int:
        """Sort key: first event time, else creation time."""
        first = self.first_ns
        if first is not None:
            return first
        created = self.header.get("created_ns")
        return created if isinstance(created, int) else 0


def _candidates(paths: Sequence[str | Path]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = [path for _, path in fmt.list_segments(p)]
            if not found:
                raise ReplayError(f"{p}: no recording segments (seg-*.nvseg) in this directory")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise ReplayError(f"{p}: no such file or directory")
    seen = set()
    unique = []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


LIVE_MTIME_S = 5.0
"""Without access to a directory's lock: an unclosed newest segment modified this
recently counts as being written."""


def _mark_live(refs: list[SegmentRef]) -> None:
    """Flag the segments a running recorder is writing: the newest of their directory,
    without a footer, while a recorder holds the directory's lock."""
    from sensor.recording.recorder import writer_active  # noqa: PLC0415

    by_dir: dict[Path, list[SegmentRef]] = {}
    for ref in refs:
        if ref.footer is None:
            by_dir.setdefault(ref.path.resolve().parent, []).append(ref)
    for directory, unclosed in by_dir.items():
        newest = fmt.list_segments(directory)
        if not newest:
            continue
        newest_path = newest[-1][1].resolve()
        for ref in unclosed:
            if ref.path.resolve() != newest_path:
                continue
            active = writer_active(directory)
            if active is None:
                try:
                    active = time.time() - ref.path.stat().st_mtime < LIVE_MTIME_S
                except OSError:
                    active = False
            ref.live = active


def discover(paths: Sequence[str | Path], report: Callable[[Problem], None],
             key: bytes | str | None = None) -> list[SegmentRef]:
    """Segments under ``paths`` in replay order; gaps in a host's sequence are reported."""
    refs: list[SegmentRef] = []
    for path in _candidates(paths):
        try:
            header, footer = read_footer(path, key)
        except SegmentFormatError as exc:
            report(Problem(path, str(exc).removeprefix(f"{path}: "), kind="format"))
            continue
        refs.append(SegmentRef(path, header, footer, path.stat().st_size))
    _mark_live(refs)
    by_host: dict[str, list[SegmentRef]] = {}
    for ref in refs:
        by_host.setdefault(ref.host, []).append(ref)
    for host_refs in by_host.values():
        host_refs.sort(key=lambda r: r.seq)
        for a, b in zip(host_refs, host_refs[1:]):
            if b.seq > a.seq + 1:
                first, last = a.seq + 1, b.seq - 1
                names = (fmt.segment_name(first) if first == last
                         else f"{fmt.segment_name(first)} .. {fmt.segment_name(last)}")
                report(Problem(b.path, f"missing segment(s) {names} between {a.path.name} "
                               f"and {b.path.name}: history from {format_ns(a.last_ns)} to "
                               f"{format_ns(b.first_ns)} is not in this recording",
                               kind="missing"))
    # each host in sequence order; hosts interleaved by segment start time
    return list(heapq.merge(*by_host.values(), key=lambda r: r.start_ns))
