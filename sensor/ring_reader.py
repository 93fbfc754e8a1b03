"""Reading a BPF ring buffer map through its memory mapping, without a callback per record.

The kernel exposes a `BPF_MAP_TYPE_RINGBUF` map to user space as two mappings of the
map fd (the layout libbpf uses):

- offset 0, one page, read-write: the consumer page; its first u64 is `consumer_pos`,
  which user space advances to give space back to the producer;
- offset PAGE_SIZE, read-only: the producer page (first u64: `producer_pos`) followed by
  the data pages, mapped twice in a row so a record that wraps around the end of the
  ring is contiguous in memory.

Each record starts with an 8-byte header: a u32 length carrying the BUSY bit (1 << 31:
reserved, not yet committed) and the DISCARD bit (1 << 30: skip it), then a u32 page
offset the consumer does not need. Records are 8-byte aligned.

`RingReader.drain` walks the committed records and hands each one to a `decode`
function as (buffer, offset, length), and what `decode` returns (unless None) to a
`consume` function: two Python calls per record, no ctypes trampoline, no copy of the
record. `consumer_pos` is stored after each batch of records, and before any exception
raised by `decode` or `consume` propagates, so no record is delivered twice.

Memory ordering: a record is read only after its header shows it committed. On x86-64
(total store order) that is enough; on weakly ordered CPUs the loads are separated by
the interpreter's own work, the same assumption any pure-Python reader makes.
"""
from __future__ import annotations

import mmap
import select
import time
from collections.abc import Callable, Sequence
from typing import Any

from sensor.errors import SensorError

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
DEFAULT_BATCH_BYTES = 64 * 1024
"""Bytes of records walked between two stores of `consumer_pos` (space handed back)."""
MAX_SIZE = 1 << 29
"""Largest data area supported: record lengths stay below the DISCARD bit."""

RecordDecoder = Callable[[memoryview, int, int], Any]
"""decode(buffer, offset, length): the record's bytes are buffer[offset:offset + length]."""
ItemConsumer = Callable[[Any], None]


class RingBufferError(SensorError):
    """The ring buffer cannot be mapped, or holds a record no kernel would write."""


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class RingReader:
    """Consumer side of one BPF ring buffer, over its consumer page and its data.

    `consumer` is the writable consumer page (>= 8 bytes); `producer` the producer page
    followed by the data area mapped twice (`page_size + 2 * size` bytes). `open_map`
    builds both from a map fd; tests hand in plain buffers laid out the same way.
    `close()` unmaps the mappings listed in `owned`.
    """

    def __init__(
        self,
        consumer: Any,
        producer: Any,
        size: int,
        *,
        page_size: int = mmap.PAGESIZE,
        wait_fd: int | None = None,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        owned: Sequence[mmap.mmap] = (),
    ) -> None:
        if not _power_of_two(size) or size > MAX_SIZE:
            raise RingBufferError(f"ring buffer size {size} is not a power of two up to {MAX_SIZE}")
        if batch_bytes < HEADER_SIZE:
            raise ValueError("batch_bytes must hold at least one record header")
        self._mappings = list(owned)
        cons = memoryview(consumer)
        prod = memoryview(producer)
        if cons.readonly or cons.nbytes < 8:
            raise RingBufferError("the consumer page must be writable and hold consumer_pos")
        if prod.nbytes < page_size + 2 * size:
            raise RingBufferError(f"producer mapping of {prod.nbytes} bytes is shorter than "
                                  f"one page plus the data area twice ({page_size + 2 * size})")
        self.size = size
        self.batch_bytes = batch_bytes
        self._cons_pos = cons[:8].cast("Q")
        self._prod_pos = prod[:8].cast("Q")
        self._data = prod[page_size : page_size + 2 * size]
        self._words = self._data.cast("I")
        self._views = [cons, prod, self._cons_pos, self._prod_pos, self._data, self._words]
        self._poller: select.poll | None = None
        if wait_fd is not None:
            self._poller = select.poll()
            self._poller.register(wait_fd, select.POLLIN)
        self.bytes_read = 0
        """Bytes of records (headers and padding included) handed back to the kernel."""
        self.discarded = 0
        """Records the kernel marked DISCARD, skipped."""

    @classmethod
    def open_map(cls, map_fd: int, size: int, *, batch_bytes: int = DEFAULT_BATCH_BYTES) -> RingReader:
        """Map the ring buffer map `map_fd` of `size` data bytes (its max_entries)."""
        page = mmap.PAGESIZE
        try:
            consumer = mmap.mmap(map_fd, page, flags=mmap.MAP_SHARED,
                                 prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        except (OSError, ValueError) as exc:
            raise RingBufferError(f"cannot map the ring buffer's consumer page: {exc}") from exc
        try:
            producer = mmap.mmap(map_fd, page + 2 * size, flags=mmap.MAP_SHARED,
                                 prot=mmap.PROT_READ, offset=page)
        except (OSError, ValueError) as exc:
            consumer.close()
            raise RingBufferError(f"cannot map the ring buffer's data ({size} bytes): {exc}") from exc
        return cls(consumer, producer, size, page_size=page, wait_fd=map_fd, batch_bytes=batch_bytes,
                   owned=(consumer, producer))

    def pending_bytes(self) -> int:
        """Bytes between the consumer and the producer position (records not yet walked)."""
        return self._prod_pos[0] - self._cons_pos[0]

    def _head_committed(self) -> bool:
        """Whether the record at the consumer position is there and committed."""
        cons = self._cons_pos[0]
        if cons >= self._prod_pos[0]:
            return False
        return not self._words[(cons & (self.size - 1)) >> 2] & BUSY_BIT

    def wait(self, timeout_ms: int) -> bool:
        """Wait up to timeout_ms until the kernel reports data; True when it did.

        poll(2) on a ring buffer fd checks for unconsumed data on every call, so data
        already there returns at once; data the kernel submitted without a wakeup is
        found by the next `drain` after the timeout.
        """
        if self.pending_bytes() > 0:
            if self._head_committed():
                return True
            # the next record is still being written: give its producer a moment instead
            # of returning at once (poll(2) would too) and spinning the caller
            time.sleep(min(timeout_ms, 1) / 1000)
            return self._head_committed()
        if self._poller is None:
            return False
        return bool(self._poller.poll(timeout_ms))

    def drain(self, decode: RecordDecoder, consume: ItemConsumer) -> int:
        """Walk every committed record: consume(decode(buffer, offset, length)).

        Stops at the first record still being written (BUSY), at the producer position
        once it stays put, or after one ring's worth of records (so a producer faster
        than the consumer cannot keep the caller in here forever). `consumer_pos` is
        stored after every `batch_bytes` of records. Returns the bytes walked (records,
        headers and padding).
        """
        cons_view = self._cons_pos
        prod_view = self._prod_pos
        words = self._words
        data = self._data
        size = self.size
        mask = size - 1
        batch_bytes = self.batch_bytes
        cons = start = cons_view[0]
        discarded = 0
        try:
            while True:
                prod = prod_view[0]
                if cons >= prod or cons - start >= size:  # caught up, or one ring's worth
                    break
                end = min(prod, cons + batch_bytes)
                while cons < end:
                    off = cons & mask
                    length = words[off >> 2]
                    if length > size:  # BUSY or DISCARD set (or a length no kernel writes)
                        if length & BUSY_BIT:
                            return cons - start
                        if not length & DISCARD_BIT or length & ~DISCARD_BIT > size:
                            raise RingBufferError(f"record of {length & ~DISCARD_BIT} bytes at position "
                                                  f"{cons} in a ring buffer of {size}")
                        cons += ((length & ~DISCARD_BIT) + 15) & ~7
                        discarded += 1
                        continue
                    cons += (length + 15) & ~7  # header, then the record padded to 8 bytes
                    item = decode(data, off + 8, length)
                    if item is not None:
                        consume(item)
                cons_view[0] = cons
        finally:
            cons_view[0] = cons
            self.bytes_read += cons - start
            self.discarded += discarded
        return cons - start

    def close(self) -> None:
        """Release the views and unmap (idempotent)."""
        for view in reversed(self._views):
            try:
                view.release()
            except BufferError:  # exported by a decode function (e.g. ctypes.from_buffer)
                pass
        self._views = []
        for mapping in self._mappings:
            try:
                mapping.close()
            except BufferError:  # a decode function kept a slice: unmapped when it goes
                pass
        self._mappings = []
        self._poller = None
