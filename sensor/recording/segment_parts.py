"""What reading a segment yields: findings (Problem), blocks of sound records, and the
msgpack framing both the plain reader and the repair walk use."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from sensor.recording import format as fmt

pack = msgpack.Packer(use_bin_type=True).pack
TAG_SEARCH = 64  # how far (in records) a displaced record's tag is searched for
# what msgpack raises on damaged bytes (TypeError: e.g. a list where a map key must be)
UNPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)


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
    _reader: Any = field(default=None, repr=False)

    def position(self, i: int) -> tuple[int, int | None]:
        """(record index, byte offset) of the i-th record of this block."""
        if self.indices is not None and self.offsets is not None:
            return self.indices[i], self.offsets[i]
        if self.offsets is None and self._reader is not None:
            self.offsets = self._reader.record_offsets(self.start, len(self.records))
        off = self.offsets[i] if self.offsets and i < len(self.offsets) else None
        return self.base + i, off


def is_seal(obj: Any) -> bool:
    return (type(obj) is list and len(obj) >= 4 and (obj[0] == fmt.K_CHECK or obj[0] == fmt.K_FOOTER)
            and (obj[1] == fmt.CHECK_MAGIC or obj[1] == fmt.FOOTER_MAGIC))


def unpacker(size: int) -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(size, 1 << 20))


