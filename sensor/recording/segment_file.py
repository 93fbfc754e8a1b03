"""One segment file being written: record tags, hash chain, checkpoints, footer."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgpack

from sensor.recording import chain
from sensor.recording import format as fmt
from sensor.recording.errors import RecordingError

_pack = msgpack.Packer(use_bin_type=True).pack


class SegmentFile:
    """Appends blocks of encoded records to a new segment file and seals them."""

    def __init__(self, path: Path, header: dict[str, Any], key: bytes | None,
                 fsync: bool = False) -> None:
        self.path = path
        self._key = key
        self._fsync = fsync
        header_bytes = _pack([fmt.K_HEADER, header])
        self.root = chain.root_hash(header_bytes, key)
        self.chain = self.root
        self.count = 0
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
                               | os.O_CLOEXEC, 0o640)
        except FileExistsError as exc:
            raise RecordingError(f"{path}: segment already exists (another recorder "
                                 f"writing to this directory?)") from exc
        except OSError as exc:
            raise RecordingError(f"{path}: cannot create segment: {exc.strerror}") from exc
        self.size = 0
        try:
            self._write(fmt.MAGIC + header_bytes)
        except OSError as exc:
            self.abandon()
            raise RecordingError(f"{path}: cannot write segment header: {exc.strerror}") from exc

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.size += len(data)
        if self._fsync:
            os.fsync(self._fd)

    def append_block(self, bodies: list[bytes]) -> None:
        """Tag each untagged record body, chain the block and write it with a checkpoint."""
        if not bodies:
            return
        root = self.root
        tag_of = chain.record_tag
        prefix = fmt.TAG_PREFIX
        parts: list[bytes] = []
        idx = self.count
        for body in bodies:
            head = body[0]
            if not 0x90 <= head < 0x9F:
                raise RecordingError("internal: record is not a short array")
            pre = bytes((head + 1,)) + body[1:]
            parts.append(pre)
            parts.append(prefix + tag_of(root, idx, pre))
            idx += 1
        block = b"".join(parts)
        self.chain = chain.block_hash(self.chain, block, self._key)
        self.count = idx
        self._write(block + _pack([fmt.K_CHECK, fmt.CHECK_MAGIC, self.count, self.chain]))

    def close(self, first_ns: int | None, last_ns: int | None,
              counts: dict[str, int]) -> None:
        """Write the footer (time range, counts, final chain hash) and close the file."""
        try:
            fields = [self.count, first_ns, last_ns, counts]
            tag = chain.footer_tag(self.chain, _pack(fields), self._key)
            self._write(_pack([fmt.K_FOOTER, fmt.FOOTER_MAGIC, self.count, self.chain,
                               first_ns, last_ns, counts, tag]))
            os.fsync(self._fd)
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Close the file descriptor without a footer (after a write error)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
