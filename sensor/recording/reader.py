"""Reading segments back, verifying the hash chain and locating any damage.

Each block of records (one writer flush) is checked against its checkpoint with one
hash over the block's bytes. Only when that fails are the per-record tags consulted, to
say which record was changed, removed or moved, and to keep the records that are sound.
"""
from __future__ import annotations

import io
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
# what msgpack raises on damaged bytes (TypeError: e.g. a list where a map key must be)
_UNPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)


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
                 data: bytes | None = None, live: bool = False) -> None:
        """``live``: the segment is being written by a running recorder (the newest of
        its directory, no footer, the directory's lock held): an incomplete record at
        its end is the write in progress, reported as a note, not as a torn tail."""
        self.path = Path(path)
        self.live = live
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
        except (StopIteration, *_UNPACK_ERRORS) as exc:
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
        """Blocks of sound records in order; findings accumulate in ``self.problems``.

        Fast path: parse a block, check it against its checkpoint with one hash. Where
        the bytes stop parsing (damage, or a crash's torn tail), ``_walk`` takes over
        record by record until the next checkpoint, then the fast path resumes.
        """
        if self._done:
            raise SegmentFormatError(f"{self.path}: blocks() can be iterated once")
        self._done = True
        n = len(self._data)
        pos = self.header_end
        prev_candidates: tuple[bytes, ...] = (self.root,)
        index = 0
        while pos < n:
            u = _unpacker(n)
            u.feed(self._view[pos:])
            recs: list[list] = []
            blk_start = pos
            append = recs.append
            try:
                for obj in u:
                    if type(obj) is list and obj and (obj[0] == 2 or obj[0] == 3) \
                            and _is_seal(obj):  # fmt.K_CHECK, fmt.K_FOOTER
                        end = pos + u.tell()
                        seal_start = end - len(_pack(obj))
                        blk = self._seal(blk_start, seal_start, recs, index, prev_candidates, obj)
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
                        append = recs.append
                        blk_start = end
                    else:
                        append(obj)
            except _UNPACK_ERRORS:
                pass
            # no checkpoint after blk_start: unsealed tail, torn tail, or damaged bytes
            walked = self._walk(blk_start, index, prev_candidates)
            blk, pos, index, prev_candidates, ended = walked
            if blk is not None:
                self.records_read += len(blk.records)
                yield blk
            if ended:
                return

    def _walk(self, start: int, base: int, prev: tuple[bytes, ...]
              ) -> tuple[Block | None, int, int, tuple[bytes, ...], bool]:
        """Read record by record from ``start`` up to and including the next checkpoint.

        Returns (sound records, where to resume, next record index, chain candidates,
        whether the file ended). Records are kept when their tag verifies; unparseable
        or unverifiable bytes are skipped to the next verifying record or checkpoint.
        """
        data = self._data
        n = len(data)
        bio = io.BytesIO(self._view)
        found: list[tuple[int, int, list]] = []
        lost: set[int] = set()
        problems: list[Problem] = []
        pos, idx = start, base
        seal: list | None = None
        seal_end = n
        while pos < n:
            obj, size = self._parse_at(bio, pos, n)
            if _is_seal(obj):
                seal, seal_end = obj, pos + size
                if isinstance(obj[2], int) and obj[2] > idx:
                    problems.append(Problem(
                        self.path, f"{obj[2] - idx} record(s) lost before this checkpoint "
                        f"(records {idx}..{obj[2] - 1})", record=idx, offset=pos))
                    lost.update(range(idx, obj[2]))
                    idx = obj[2]
                break
            match = None
            if type(obj) is list and size > 3 and data[pos + size - 3] == 0xCD:
                match = (self._tag_index(data[pos:pos + size - 3],
                                         data[pos + size - 2:pos + size], idx, base)
                         if self.verify else idx)
            if match is not None:
                found.append((match, pos, obj))
                pos += size
                idx = match + 1
                continue
            # cannot use the bytes here: find where sound records (or a checkpoint) resume
            nxt_seal = self._find_seal(pos + 1)
            res = self._resync_by_tags(pos, nxt_seal if nxt_seal is not None else n, idx) \
                if self.verify else None
            if res is None and nxt_seal is None:
                if obj is None and self.live:
                    problems.append(Problem(
                        self.path, f"still being written: the last {n - pos} bytes (a record "
                        f"being written) are not read yet, "
                        f"{self.records_read + len(found)} complete records read",
                        record=idx, offset=pos, kind="unclosed"))
                elif obj is None:
                    problems.append(Problem(
                        self.path, f"torn tail at byte {pos}: {n - pos} bytes of an incomplete "
                        f"record (crash while writing?), "
                        f"{self.records_read + len(found)} complete records read",
                        record=idx, offset=pos, kind="torn"))
                else:
                    problems.append(Problem(
                        self.path, f"unreadable bytes from here to the end of the file "
                        f"({n - pos} bytes), {self.records_read + len(found)} complete "
                        f"records read", record=idx, offset=pos))
                pos = n
                break
            if res is None:
                problems.append(Problem(
                    self.path, f"damaged bytes {pos}..{nxt_seal} cannot be parsed; reading "
                    f"resumes at the next checkpoint", record=idx, offset=pos))
                pos = nxt_seal
                continue
            o, k = res
            if obj is not None and pos + size == o and k == idx + 1:
                problems.append(Problem(self.path, "record does not match its hash tag "
                                        "(changed or corrupted); skipped", record=idx,
                                        offset=pos))
            else:
                problems.append(Problem(
                    self.path, f"damaged bytes {pos}..{o} cannot be parsed: {k - idx} "
                    f"record(s) lost (records {idx}..{k - 1}); reading resumes at record {k}",
                    record=idx, offset=pos))
            lost.update(range(idx, k))
            pos, idx = o, k
        problems += self._order_problems(found, lost, base, idx, pos)
        self.problems.extend(problems)
        blk = None
        if found:
            found.sort(key=lambda t: t[0])
            blk = Block(base, [r for _, _, r in found], start,
                        indices=[o for o, _, _ in found], offsets=[off for _, off, _ in found])
        if seal is None:
            self._unclosed(n)
            return blk, n, idx, prev, True
        stored = seal[3] if isinstance(seal[3], bytes) else None
        new_prev = (stored,) if stored else prev
        if stored:
            self.final_hash = stored
        self.sealed_count = idx
        if seal[0] == fmt.K_FOOTER:
            self._footer(seal, seal_end)
            return blk, n, idx, new_prev, True
        return blk, seal_end, idx, new_prev, False

    def _order_problems(self, found: list[tuple[int, int, list]], lost: set[int], base: int,
                        expected_end: int, end_offset: int) -> list[Problem]:
        """Removed and reordered records among the verified ones of a walk."""
        problems = []
        found_set = {orig for orig, _, _ in found}
        expect = base
        for orig, off, _ in found:
            if orig > expect:
                missing = sum(1 for k in range(expect, orig)
                              if k not in found_set and k not in lost)
                if missing > 0:
                    problems.append(Problem(
                        self.path, f"{missing} record(s) before this one are missing "
                        f"(removed): hash chain broken", record=orig, offset=off))
            elif orig < expect:
                problems.append(Problem(
                    self.path, f"record {orig} found after record {expect - 1}: records "
                    f"reordered; replayed in their original order", record=orig, offset=off))
            expect = max(expect, orig + 1)
        tail = sum(1 for k in range(expect, expected_end) if k not in lost)
        if tail > 0:
            problems.append(Problem(
                self.path, f"{tail} record(s) at the end of the block are missing (removed)",
                record=expect, offset=end_offset))
        return problems

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
        except _UNPACK_ERRORS:
            pass
        return offs

    def _resync_by_tags(self, start: int, limit: int, index: int) -> tuple[int, int] | None:
        """First offset in (start, limit) where records with valid tags begin again.

        Returns (offset, record index). Candidates are short arrays whose first element is
        a data record kind; the index is searched from ``index`` on, widening with the
        distance from ``start`` (a record takes at least 6 bytes). A candidate is accepted
        when the record after it verifies too (or a checkpoint or the limit follows), so a
        chance match of a 16-bit tag does not resync onto garbage.
        """
        data = self._data
        bio = io.BytesIO(self._view)
        kinds = fmt.DATA_KINDS
        o = start + 1
        while o < limit - 3:
            head = data[o]
            if 0x92 <= head <= 0x9E and data[o + 1] in kinds:
                obj, size = self._parse_at(bio, o, limit)
                if type(obj) is list and size > 3 and data[o + size - 3] == 0xCD:
                    body, tag = data[o:o + size - 3], data[o + size - 2:o + size]
                    for k in range(index, index + (o - start) // 6 + 4):
                        if chain.record_tag(self.root, k, body) == tag \
                                and self._confirms(bio, o + size, limit, k + 1):
                            return o, k
            o += 1
        return None

    def _confirms(self, bio: io.BytesIO, pos: int, limit: int, k: int) -> bool:
        """True if the record at ``pos`` verifies as record ``k`` (or nothing follows)."""
        if pos >= limit:
            return True
        obj, size = self._parse_at(bio, pos, len(self._data))
        if _is_seal(obj):
            return True
        if type(obj) is not list or size <= 3 or self._data[pos + size - 3] != 0xCD:
            return False
        data = self._data
        return chain.record_tag(self.root, k, data[pos:pos + size - 3]) == data[pos + size - 2:pos + size]

    def _find_seal(self, start: int) -> int | None:
        d = self._data
        cands = [i - 4 for i in (d.find(fmt.CHECK_PATTERN[4:], start),
                                 d.find(fmt.FOOTER_PATTERN[4:], start)) if i >= 4]
        cands = [c for c in cands if c >= start and d[c:c + 4] in
                 (fmt.CHECK_PATTERN[:4], fmt.FOOTER_PATTERN[:4])]
        return min(cands) if cands else None

    def _seal(self, blk_start: int, blk_end: int, recs: list, index: int,
              prev_candidates: tuple[bytes, ...], seal: list) -> Block | None:
        count, stored = seal[2], seal[3]
        if not recs:
            if blk_end != blk_start:
                self.problems.append(Problem(self.path, "unparsed bytes before checkpoint",
                                             record=index, offset=blk_start))
            return None
        if not self.verify:
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
        if index == 0 and self._header_suspect(recs):
            return Block(index, recs, blk_start, _reader=self)
        return self._verify_by_tags(blk_start, blk_end, recs, index, expected_end, checked=True)

    def _header_suspect(self, recs: list) -> bool:
        """First block: if no record tag verifies at all, the chain root (header) is wrong.

        Then nothing in the segment can be verified: say so once and read unverified.
        """
        probe = recs[:8]
        if not probe or any(type(r) is not list for r in probe):
            return False
        offsets = self.record_offsets(self.header_end, len(probe) + 1)
        data = self._data
        for i, off in enumerate(offsets[:len(probe)]):
            end = offsets[i + 1] if i + 1 < len(offsets) else off + len(_pack(probe[i]))
            if end - off > 3 and data[end - 3] == 0xCD and self._tag_index(
                    data[off:end - 3], data[end - 2:end], i, 0) is not None:
                return False
        self.verify = False
        self.problems.append(Problem(
            self.path, "segment header altered (or a different key): no record verifies "
            "against it, so nothing in this segment can be verified; read unverified",
            offset=len(fmt.MAGIC)))
        return True

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

    def _parse_at(self, bio: io.BytesIO, pos: int, end: int) -> tuple[Any, int]:
        """(object, size) of the msgpack object at ``pos``, or (None, 0) if none ends < end."""
        bio.seek(pos)
        u = msgpack.Unpacker(bio, raw=False, strict_map_key=False, read_size=1024,
                             max_buffer_size=max(len(self._data), 1 << 20))
        try:
            obj = next(u)
        except (StopIteration, *_UNPACK_ERRORS):
            return None, 0
        size = u.tell()
        return (obj, size) if pos + size <= end else (None, 0)

    def _tag_index(self, body: bytes, tag: bytes, guess: int, base: int) -> int | None:
        """The record index (near ``guess``) whose tag ``tag`` is, or None."""
        root = self.root
        for d in range(0, _TAG_SEARCH + 1):
            for k in ((guess,) if d == 0 else (guess + d, guess - d)):
                if k >= base and chain.record_tag(root, k, body) == tag:
                    return k
        return None

    def _verify_by_tags(self, start: int, end: int, recs: list, base: int, expected_end: int,
                        checked: bool = False) -> Block | None:
        """Walk [start, end) (a block that failed its checkpoint) record by record.

        A record whose tag matches another index nearby was moved (or records before it
        were removed); a record that verifies nowhere was changed; bytes that do not parse
        into verifiable records are skipped up to the next record whose tag verifies.
        """
        if start >= end:
            return None
        data = self._data
        bio = io.BytesIO(self._view)
        found: list[tuple[int, int, list]] = []
        lost: set[int] = set()
        problems: list[Problem] = []
        pos, idx = start, base
        while pos < end:
            obj, size = self._parse_at(bio, pos, end)
            if _is_seal(obj):  # a checkpoint inside the region: its count is authoritative
                if isinstance(obj[2], int) and obj[2] > idx:
                    lost.update(range(idx, obj[2]))
                    problems.append(Problem(
                        self.path, f"{obj[2] - idx} record(s) lost before this checkpoint "
                        f"(records {idx}..{obj[2] - 1})", record=idx, offset=pos))
                    idx = obj[2]
                pos += size
                continue
            match = None
            if type(obj) is list and size > 3 and data[pos + size - 3] == 0xCD:
                match = self._tag_index(data[pos:pos + size - 3],
                                        data[pos + size - 2:pos + size], idx, base)
            if match is not None:
                found.append((match, pos, obj))
                pos += size
                idx = match + 1
                continue
            res = self._resync_by_tags(pos, end, idx)
            o, k = res if res is not None else (end, max(idx + 1, expected_end))
            if obj is not None and pos + size == o and k == idx + 1:
                problems.append(Problem(self.path, "record does not match its hash tag "
                                        "(changed or corrupted); skipped", record=idx,
                                        offset=pos))
            elif k > idx:
                problems.append(Problem(
                    self.path, f"damaged bytes {pos}..{o} cannot be parsed: {k - idx} "
                    f"record(s) lost (records {idx}..{k - 1})", record=idx, offset=pos))
            else:
                problems.append(Problem(self.path, f"damaged bytes {pos}..{o} skipped",
                                        record=idx, offset=pos))
            lost.update(range(idx, k))
            pos, idx = o, k
        problems += self._order_problems(found, lost, base, expected_end, end)
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
                     offsets=[off for _, off, _ in found])

    def _footer(self, obj: list, end: int) -> None:
        footer = _footer_dict(obj, self._key if self.verify else None, self.verify)
        if footer is None:
            self.problems.append(Problem(self.path, "footer altered: its time range and "
                                         "counts are not trusted", offset=end))
        self.footer = footer
        if end < len(self._data):
            self.problems.append(Problem(self.path, f"{len(self._data) - end} unexpected "
                                         "bytes after the footer (ignored)", offset=end))

    def _unclosed(self, n: int) -> None:
        if self.live:
            self.problems.append(Problem(
                self.path, "no footer yet: segment being written by a running recorder; "
                "read up to here", kind="unclosed", offset=n))
            return
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


def segment_chain_id(path: Path) -> str | None:
    """The chain id in a segment's header (None when unreadable or written before chains)."""
    try:
        header, _ = read_footer(path)
    except SegmentFormatError:
        return None
    value = header.get("chain")
    return value if isinstance(value, str) else None


def read_footer(path: Path, key: bytes | str | None = None
                ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(header, footer) of a segment without reading it all.

    The footer is None when missing, or when its tag does not verify (then the segment
    must be read to know its time range).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 1024))
            tail = f.read()
    except OSError as exc:
        raise SegmentFormatError(f"{path}: cannot read: {exc.strerror}") from exc
    r = SegmentReader(path, data=head, key=key)
    i = tail.rfind(fmt.FOOTER_PATTERN)
    footer = None
    if i >= 0:
        try:
            obj = msgpack.unpackb(tail[i:], raw=False, strict_map_key=False)
        except _UNPACK_ERRORS:
            obj = None
        footer = _footer_dict(obj, r._key, r.verify)
    return r.header, footer


def _footer_dict(obj: Any, key: bytes | None, verify: bool) -> dict[str, Any] | None:
    """The footer as a dict if well-formed and its tag verifies (when verifiable)."""
    if not (_is_seal(obj) and len(obj) == len(fmt.FOOTER_KEYS) and obj[0] == fmt.K_FOOTER):
        return None
    footer = dict(zip(fmt.FOOTER_KEYS, obj))
    if not isinstance(footer["chain_hash"], bytes):
        return None
    if verify:
        fields = _pack([footer["count"], footer["first_ns"], footer["last_ns"], footer["counts"]])
        if chain.footer_tag(footer["chain_hash"], fields, key) != footer["tag"]:
            return None
    elif not isinstance(footer.get("counts"), dict):
        return None
    return footer
