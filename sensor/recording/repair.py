"""Damage repair of a segment: where a block fails its checkpoint or its bytes stop
parsing, walk record by record, verify each record's tag, resynchronise past damaged
bytes, and say which records were changed, removed or moved (SegmentReader's other half).
"""
from __future__ import annotations

import io
from typing import Any

import msgpack

from sensor.recording import chain
from sensor.recording import format as fmt
from sensor.recording.segment_parts import (
    TAG_SEARCH as _TAG_SEARCH, UNPACK_ERRORS as _UNPACK_ERRORS, Block, Problem,
    is_seal as _is_seal, pack as _pack,
)


class SegmentRepair:
    """Repair walk over ``self._data`` (mixed into SegmentReader, which sets the state:
    ``path``, ``_data``, ``_view``, ``root``, ``_key``, ``verify``, ``problems``,
    ``records_read``, ``final_hash``, ``sealed_count``, ``live``, ``header_end``)."""

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

