"""Reading segments back and verifying the hash chain (the plain path).

Each block of records (one writer flush) is checked against its checkpoint with one
hash over the block's bytes. Only when that fails, or the bytes stop parsing, does the
repair side (sensor/recording/repair.py) consult the per-record tags, to say which
record was changed, removed or moved, and to keep the records that are sound.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

from sensor.recording import chain
from sensor.recording import format as fmt
from sensor.recording.errors import SegmentFormatError
from sensor.recording.repair import SegmentRepair
from sensor.recording.segment_parts import (
    UNPACK_ERRORS as _UNPACK_ERRORS, Block, Problem, is_seal as _is_seal, pack as _pack,
    unpacker as _unpacker,
)

class SegmentReader(SegmentRepair):
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
