"""Reading segments back, verifying the hash chain and locating any damage.

Each block of records (one writer flush) is checked against its checkpoint with one
hash over the block's bytes. Only when that fails are the per-record tags consulted, to
say which record was changed, removed or moved, and to keep the records that are sound.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from sensor.recording import chain
from sensor.recording import format as fmt
from sensor.recording.errors import SegmentFormatError

_pack = msgpack.Packer(use_bin_type=True).pack
_TAG_SEARCH = 64  # how far (in records) a displaced record's tag is searched for


@dataclass(frozen=True)
class Problem:
    """One integrity or format finding, with its position."""

    path: Path
    message: str
    record: int | None = None
    offset: int | None = None
    kind: str = "integrity"  # integrity | torn | unclosed | missing | link | format | key

    def __str__(self) -> str:
        where = str(self.path)
        if self.record is not None:
            where += f": record {self.record}"
        if self.offset is not None:
            where += f" (byte {self.offset})" if self.record is not None else f": byte {self.offset}"
        return f"{where}: {self.message}"


@dataclass
class Block:
    """Sound data records of one block, in writer order."""

    base: int                       # index of the first record
    records: list[list]
    start: int                      # byte offset of the first record
    indices: list[int] | None = None  # explicit indices when records were re-ordered
    offsets: list[int] | None = None  # explicit offsets (computed lazily otherwise)
    _reader: SegmentReader | None = field(default=None, repr=False)

    def position(self, i: int) -> tuple[int, int | None]:
        """(record index, byte offset) of the i-th record of this block."""
        if self.indices is not None and self.offsets is not None:
            return self.indices[i], self.offsets[i]
        if self.offsets is None and self._reader is not None:
            self.offsets = self._reader.record_offsets(self.start, len(self.records))
        off = self.offsets[i] if self.offsets and i < len(self.offsets) else None
        return self.base + i, off


def _is_seal(obj: Any) -> bool:
    return (type(obj) is list and len(obj) >= 4 and (obj[0] == fmt.K_CHECK or obj[0] == fmt.K_FOOTER)
            and (obj[1] == fmt.CHECK_MAGIC or obj[1] == fmt.FOOTER_MAGIC))


def _unpacker(size: int) -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(size, 1 << 20))


class SegmentReader:
    """Reads one segment file; ``blocks()`` yields its sound records, ``problems`` the rest."""

    def __init__(self, path: Path | str, *, key: bytes | str | None = None,
                 data: bytes | None = None) -> None:
        self.path = Path(path)
        if data is None:
            try:
                data = self.path.read_bytes()
            except OSError as exc:
                raise SegmentFormatError(f"{self.path}: cannot read: {exc.strerror}") from exc
        self._data = data
        self._view = memoryview(data)
        if not data.startswith(fmt.MAGIC):
            raise SegmentFormatError(f"{self.path}: not a netvigil segment (bad magic)")
        u = _unpacker(len(data))
        u.feed(data[len(fmt.MAGIC):len(fmt.MAGIC) + 65536])
        try:
            head = next(u)
        except (StopIteration, ValueError, msgpack.UnpackException) as exc:
            raise SegmentFormatError(f"{self.path}: corrupt segment header") from exc
        if not (type(head) is list and len(head) == 2 and head[0] == fmt.K_HEADER
                and isinstance(head[1], dict)):
            raise SegmentFormatError(f"{self.path}: corrupt segment header")
        self.header: dict[str, Any] = head[1]
        if self.header.get("format") != fmt.FORMAT_VERSION:
            raise SegmentFormatError(
                f"{self.path}: segment format {self.header.get('format')!r} is not supported "
                f"(this netvigil reads format {fmt.FORMAT_VERSION})")
        self.header_end = len(fmt.MAGIC) + u.tell()
        header_bytes = data[len(fmt.MAGIC):self.header_end]
        self.problems: list[Problem] = []
        self._key = chain.normalize_key(key)
        self.verify = True
        key_id = self.header.get("key_id")
        if key_id and self._key is None:
            self.verify = False
            self.problems.append(Problem(self.path, "segment is keyed (key id "
                                         f"{key_id}); integrity NOT checked without the key",
                                         kind="key"))
        elif self._key is not None and key_id != chain.key_fingerprint(self._key):
            self.verify = False
            self.problems.append(Problem(self.path, f"the given key does not match the "
                                         f"segment's key id {key_id!r}; integrity NOT checked",
                                         kind="key"))
        self.root = chain.root_hash(header_bytes, self._key)
        self.final_hash: bytes = self.root
        self.footer: dict[str, Any] | None = None
        self.records_read = 0
        self.sealed_count = 0
        self._done = False

    @property
    def size(self) -> int:
        """Size of the file in bytes."""
        return len(self._data)

    # -- public -----------------------------------------------------------------------
    def blocks(self) -> Iterator[Block]:
        """Blocks of sound records in order; findings accumulate in ``self.problems``."""
        if self._done:
            raise SegmentFormatError(f"{self.path}: blocks() can be iterated once")
        self._done = True
        data = self._data
        n = len(data)
        pos = self.header_end
        prev_candidates = (self.root,)
        index = 0
        adopt_next = False
        while pos < n:
            u = _unpacker(n)
            u.feed(self._view[pos:])
            recs: list[list] = []
            blk_start = pos
            seal_end = None
            try:
                for obj in u:
                    if type(obj) is list and obj and (obj[0] == fmt.K_CHECK or obj[0] == fmt.K_FOOTER) \
                            and _is_seal(obj):
                        end = pos + u.tell()
                        seal_start = end - len(_pack(obj))
                        if adopt_next and isinstance(obj[2], int) and obj[2] > index + len(recs):
                            self.problems.append(Problem(
                                self.path, f"{obj[2] - index - len(recs)} record(s) lost in "
                                f"the damaged bytes (records {index}..{obj[2] - len(recs) - 1})",
                                record=index, offset=blk_start))
                        blk = self._seal(blk_start, seal_start, recs, index, prev_candidates,
                                         obj, adopt_next)
                        adopt_next = False
                        if blk is not None:
                            self.records_read += len(blk.records)
                            yield blk
                        index, prev_candidates = self._after_seal(obj, index, len(recs),
                                                                  prev_candidates, blk_start,
                                                                  seal_start)
                        if obj[0] == fmt.K_FOOTER:
                            self._footer(obj, end)
                            return
                        recs = []
                        blk_start = end
                    else:
                        recs.append(obj)
                else:
                    seal_end = None
            except (ValueError, msgpack.UnpackException):
                seal_end = -1  # damaged framing
            # the loop ended without a seal after blk_start: end of data, torn or damaged
            good_end, recs = self._complete_records(blk_start, n)
            nxt = self._find_seal(good_end)
            if nxt is None:
                blk = self._verify_by_tags(blk_start, recs, index, index + len(recs))
                if blk is not None:
                    self.records_read += len(blk.records)
                    yield blk
                if good_end < n:
                    if seal_end == -1:
                        msg = (f"unreadable bytes from here to the end of the file "
                               f"({n - good_end} bytes), "
                               f"{self.records_read} complete records read")
                    else:
                        msg = (f"torn tail at byte {good_end}: {n - good_end} bytes of an "
                               f"incomplete record (crash while writing?), "
                               f"{self.records_read} complete records read")
                    self.problems.append(Problem(self.path, msg, record=index + len(recs),
                                                 offset=good_end, kind="torn"))
                self._unclosed(n)
                return
            # damaged bytes in the middle: keep what verifies, resync at the next seal
            blk = self._verify_by_tags(blk_start, recs, index, index + len(recs))
            if blk is not None:
                self.records_read += len(blk.records)
                yield blk
            self.problems.append(Problem(
                self.path, f"damaged bytes {good_end}..{nxt} cannot be parsed; records there "
                f"skipped, reading resumes at the next checkpoint", record=index + len(recs),
                offset=good_end))
            pos = nxt
            adopt_next = True
            index += len(recs)

    # -- internals ----------------------------------------------------------------------
    def record_offsets(self, start: int, count: int) -> list[int]:
        """Byte offsets of ``count`` consecutive records starting at ``start``."""
        u = _unpacker(len(self._data))
        u.feed(self._view[start:])
        offs = []
        cur = start
        try:
            for _ in u:
                offs.append(cur)
                cur = start + u.tell()
                if len(offs) >= count:
                    break
        except (ValueError, msgpack.UnpackException):
            pass
        return offs

    def _complete_records(self, start: int, end: int) -> tuple[int, list]:
        """Parse records one by one from ``start``: (end of the last complete one, records)."""
        u = _unpacker(end - start)
        u.feed(self._view[start:end])
        recs = []
        good = start
        try:
            for obj in u:
                if _is_seal(obj):
                    break
                recs.append(obj)
                good = start + u.tell()
        except (ValueError, msgpack.UnpackException):
            pass
        return good, recs

    def _find_seal(self, start: int) -> int | None:
        d = self._data
        cands = [i - 4 for i in (d.find(fmt.CHECK_PATTERN[4:], start),
                                 d.find(fmt.FOOTER_PATTERN[4:], start)) if i >= 4]
        cands = [c for c in cands if c >= start and d[c:c + 4] in
                 (fmt.CHECK_PATTERN[:4], fmt.FOOTER_PATTERN[:4])]
        return min(cands) if cands else None

    def _seal(self, blk_start: int, blk_end: int, recs: list, index: int,
              prev_candidates: tuple[bytes, ...], seal: list, adopt: bool) -> Block | None:
        count, stored = seal[2], seal[3]
        if not recs:
            if blk_end != blk_start:
                self.problems.append(Problem(self.path, "unparsed bytes before checkpoint",
                                             record=index, offset=blk_start))
            return None
        if not self.verify or adopt:
            if adopt and self.verify:
                return self._verify_by_tags(blk_start, recs, index, count
                                            if isinstance(count, int) else index + len(recs))
            return Block(index, recs, blk_start, _reader=self)
        block = self._view[blk_start:blk_end]
        for prev in prev_candidates:
            if chain.block_hash(prev, block, self._key) == stored:
                if count != index + len(recs):
                    self.problems.append(Problem(
                        self.path, f"checkpoint count {count!r} does not match the "
                        f"{len(recs)} records of its block (checkpoint altered)",
                        record=index, offset=blk_end))
                return Block(index, recs, blk_start, _reader=self)
        expected_end = count if isinstance(count, int) and count >= index else index + len(recs)
        blk = self._verify_by_tags(blk_start, recs, index, expected_end, checked=True,
                                   seal_offset=blk_end)
        return blk

    def _after_seal(self, seal: list, index: int, n: int, prev_candidates: tuple,
                    blk_start: int, blk_end: int) -> tuple[int, tuple[bytes, ...]]:
        count, stored = seal[2], seal[3]
        new_index = count if isinstance(count, int) and count >= index else index + n
        cands = [stored] if isinstance(stored, bytes) else []
        if self.verify and n:
            computed = chain.block_hash(prev_candidates[0], self._view[blk_start:blk_end],
                                        self._key)
            if computed not in cands:
                cands.append(computed)
        if not cands:
            cands = list(prev_candidates)
        self.final_hash = cands[0]
        self.sealed_count = new_index
        return new_index, tuple(cands)

    def _verify_by_tags(self, start: int, recs: list, base: int, expected_end: int,
                        checked: bool = False, seal_offset: int | None = None) -> Block | None:
        """Keep the records whose tag verifies, report the ones changed/removed/moved."""
        if not recs:
            return None
        if not self.verify:
            return Block(base, recs, start, _reader=self)
        offsets = self.record_offsets(start, len(recs))
        data = self._data
        root = self.root
        found: list[tuple[int, int, list]] = []  # (orig index, position, record)
        bad_positions = []
        for pos, rec in enumerate(recs):
            off = offsets[pos] if pos < len(offsets) else None
            nxt = offsets[pos + 1] if pos + 1 < len(offsets) else None
            if off is None:
                bad_positions.append(pos)
                continue
            if nxt is None:
                nxt = off + len(_pack(rec))
            raw = data[off:nxt]
            if len(raw) < 4 or raw[-3] != 0xCD:
                bad_positions.append(pos)
                continue
            body, tag = raw[:-3], raw[-2:]
            guess = base + pos
            match = None
            for d in range(0, _TAG_SEARCH + 1):
                for k in ((guess,) if d == 0 else (guess + d, guess - d)):
                    if k >= base and chain.record_tag(root, k, body) == tag:
                        match = k
                        break
                if match is not None:
                    break
            if match is None:
                bad_positions.append(pos)
            else:
                found.append((match, pos, rec))
        problems = []
        for pos in bad_positions:
            problems.append(Problem(self.path, "record does not match its hash tag "
                                    "(changed or corrupted); skipped",
                                    record=base + pos,
                                    offset=offsets[pos] if pos < len(offsets) else None))
        expect = base
        unverified_since = 0
        bad_set = set(bad_positions)
        found_set = {orig for orig, _, _ in found}
        last_pos = -1
        for orig, pos, _ in found:
            unverified_since = sum(1 for p in range(last_pos + 1, pos) if p in bad_set)
            last_pos = pos
            if orig > expect:
                missing = sum(1 for k in range(expect, orig) if k not in found_set) \
                    - unverified_since
                if missing > 0:
                    problems.append(Problem(
                        self.path, f"{missing} record(s) before this one are missing "
                        f"(removed): hash chain broken", record=orig, offset=offsets[pos]))
            elif orig < expect:
                problems.append(Problem(
                    self.path, f"record {orig} found after record {expect - 1}: records "
                    f"reordered; replayed in their original order", record=orig,
                    offset=offsets[pos]))
            expect = max(expect, orig + 1)
        tail_bad = sum(1 for p in bad_positions if p > last_pos)
        if expected_end - expect - tail_bad > 0:
            problems.append(Problem(
                self.path, f"{expected_end - expect - tail_bad} record(s) at the end of the "
                f"block are missing (removed)", record=expect, offset=seal_offset))
        if checked and not problems:
            problems.append(Problem(
                self.path, "block does not match its checkpoint hash (records or "
                f"checkpoint altered): records {base}..{expected_end - 1}", record=base,
                offset=start))
        self.problems.extend(problems)
        if not found:
            return None
        found.sort(key=lambda t: t[0])
        return Block(base, [r for _, _, r in found], start, indices=[o for o, _, _ in found],
                     offsets=[offsets[p] for _, p, _ in found])

    def _footer(self, obj: list, end: int) -> None:
        keys = ("kind", "magic", "count", "chain_hash", "first_ns", "last_ns", "counts")
        self.footer = dict(zip(keys, obj))
        if end < len(self._data):
            self.problems.append(Problem(self.path, f"{len(self._data) - end} unexpected "
                                         "bytes after the footer (ignored)", offset=end))

    def _unclosed(self, n: int) -> None:
        self.problems.append(Problem(
            self.path, "no footer: segment was not closed (crash, or still being "
            "written); time range derived from its records", kind="unclosed", offset=n))


def final_hash(path: Path, key: bytes | None) -> bytes | None:
    """Chain hash a following segment links to (last sealed state), or None if unreadable."""
    try:
        r = SegmentReader(path, key=key)
        for _ in r.blocks():
            pass
    except SegmentFormatError:
        return None
    return r.final_hash


def read_footer(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(header, footer or None) of a segment without reading it all (no verification)."""
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 1024))
            tail = f.read()
    except OSError as exc:
        raise SegmentFormatError(f"{path}: cannot read: {exc.strerror}") from exc
    r = SegmentReader(path, data=head)
    i = tail.rfind(fmt.FOOTER_PATTERN)
    footer = None
    if i >= 0:
        try:
            obj = msgpack.unpackb(tail[i:], raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException):
            obj = None
        if _is_seal(obj) and len(obj) == 7:
            keys = ("kind", "magic", "count", "chain_hash", "first_ns", "last_ns", "counts")
            footer = dict(zip(keys, obj))
    return r.header, footer
