"""Which segments a replay reads, in which order, and what is missing between them."""
from __future__ import annotations

import heapq
from collections import Counter
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
    def chain(self) -> str | None:
        """Id of the recording (chain of segments) this segment belongs to, if recorded."""
        value = self.header.get("chain")
        return value if isinstance(value, str) else None

    @property
    def identity(self) -> tuple:
        """What makes a segment itself (its header): two files with one identity are copies."""
        return tuple(sorted((str(k), repr(v)) for k, v in self.header.items()))

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
            try:
                found = [path for _, path in fmt.list_segments(p)]
            except OSError as exc:
                raise ReplayError(f"{p}: cannot read directory: {exc.strerror}") from None
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


def _place_in_chains(refs: list[SegmentRef], report: Callable[[Problem], None]
                     ) -> list[SegmentRef]:
    """Each segment where its header says it belongs; copies dropped, the rest reported.

    * a file whose header another file already has is a copy (same segment twice): it
      is reported and not read, so its history is played once;
    * a file whose name is not the segment number its header gives was renamed or
      reordered: reported, and played where its header puts it;
    * a segment whose chain id differs from its directory's recording (the chain of the
      most segments there) comes from another recording: reported, played once, apart.
    """
    kept: list[SegmentRef] = []
    seen: dict[tuple, SegmentRef] = {}
    by_name_first = sorted(refs, key=lambda r: (fmt.segment_seq(r.path) != r.seq, str(r.path)))
    for ref in by_name_first:
        first = seen.get(ref.identity)
        if first is not None:
            report(Problem(ref.path, f"duplicate of {first.path} (segment {ref.seq} of the same "
                           "recording, copied or renamed): not read again, its history is "
                           "played once", kind="duplicate"))
            continue
        seen[ref.identity] = ref
        kept.append(ref)
    chains: dict[Path, Counter[str]] = {}
    for ref in kept:
        if ref.chain is not None:
            chains.setdefault(ref.path.resolve().parent, Counter())[ref.chain] += 1
    directory_chain = {d: c.most_common(1)[0][0] for d, c in chains.items()}
    for ref in kept:
        named = fmt.segment_seq(ref.path)
        if named is not None and isinstance(ref.header.get("seq"), int) and named != ref.seq:
            report(Problem(ref.path, f"file name says segment {named} but its header says it is "
                           f"segment {ref.seq} of its recording (renamed or reordered): played "
                           "in recorded order", kind="order"))
        home = directory_chain.get(ref.path.resolve().parent)
        if ref.chain is not None and home is not None and ref.chain != home:
            report(Problem(ref.path, f"belongs to another recording (chain {ref.chain}; the rest "
                           f"of {ref.path.parent} is chain {home}): a foreign segment, played "
                           "once on its own", kind="foreign"))
    order = {id(r): i for i, r in enumerate(refs)}
    kept.sort(key=lambda r: order[id(r)])
    return kept


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
        try:
            size = path.stat().st_size
        except OSError as exc:
            report(Problem(path, f"cannot read: {exc.strerror}", kind="format"))
            continue
        refs.append(SegmentRef(path, header, footer, size))
    refs = _place_in_chains(refs, report)
    _mark_live(refs)
    by_host: dict[tuple[str, str | None], list[SegmentRef]] = {}
    for ref in refs:
        by_host.setdefault((ref.host, ref.chain), []).append(ref)
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
