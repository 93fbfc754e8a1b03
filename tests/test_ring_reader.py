"""RingReader over a fake ring buffer laid out like the kernel's BPF ring buffer mapping.

The fake keeps the kernel's layout: a consumer page, then a producer page followed by
the data area mapped twice (here: written twice), 8-byte record headers with the BUSY
and DISCARD bits, records padded to 8 bytes.
"""
from __future__ import annotations

import mmap
import struct
import tempfile

import pytest

from sensor.ring_reader import BUSY_BIT, DISCARD_BIT, RingBufferError, RingReader

PAGE = 4096


class FakeRing:
    """The producer side: reserve, commit and discard records like the kernel does."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.consumer = bytearray(PAGE)
        self.producer = bytearray(PAGE + 2 * size)
        self.ring = bytearray(size)
        self.prod_pos = 0

    def _write(self, pos: int, data: bytes) -> None:
        for i, byte in enumerate(data):
            self.ring[(pos + i) % self.size] = byte
        base = PAGE
        self.producer[base : base + self.size] = self.ring
        self.producer[base + self.size : base + 2 * self.size] = self.ring

    @property
    def consumer_pos(self) -> int:
        return struct.unpack_from("<Q", self.consumer)[0]

    def reserve(self, length: int) -> int:
        """Reserve a record of `length` bytes (BUSY until committed); returns its position."""
        pos = self.prod_pos
        assert pos + length + 8 - self.consumer_pos <= self.size, "fake ring full"
        self._write(pos, struct.pack("<II", length | BUSY_BIT, 0))
        self.prod_pos += (length + 8 + 7) & ~7
        struct.pack_into("<Q", self.producer, 0, self.prod_pos)
        return pos

    def commit(self, pos: int, payload: bytes, *, discard: bool = False) -> None:
        self._write(pos + 8, payload)
        self._write(pos, struct.pack("<II", len(payload) | (DISCARD_BIT if discard else 0), 0))

    def submit(self, payload: bytes) -> int:
        pos = self.reserve(len(payload))
        self.commit(pos, payload)
        return pos

    def reader(self, **kwargs: int) -> RingReader:
        return RingReader(self.consumer, self.producer, self.size, page_size=PAGE, **kwargs)


def collect(reader: RingReader) -> list[bytes]:
    out: list[bytes] = []
    reader.drain(lambda buf, off, n: bytes(buf[off : off + n]), out.append)
    return out


def test_records_are_delivered_in_order_and_space_handed_back() -> None:
    ring = FakeRing(1024)
    payloads = [b"a" * 5, b"bb" * 8, b"c" * 27]
    for p in payloads:
        ring.submit(p)
    reader = ring.reader()
    assert collect(reader) == payloads
    assert ring.consumer_pos == ring.prod_pos == 8 + 8 + 8 + 16 + 8 + 32
    assert collect(reader) == []


def test_record_wrapping_past_the_end_is_read_whole() -> None:
    ring = FakeRing(256)
    reader = ring.reader()
    ring.submit(b"x" * 200)
    assert collect(reader) == [b"x" * 200]
    wrapped = bytes(range(100))  # starts at 208, ends past 256: contiguous thanks to the double map
    ring.submit(wrapped)
    assert collect(reader) == [wrapped]
    assert ring.consumer_pos == 208 + 112


def test_discarded_records_are_skipped_and_counted() -> None:
    ring = FakeRing(1024)
    ring.submit(b"first")
    pos = ring.reserve(40)
    ring.commit(pos, b"d" * 40, discard=True)
    ring.submit(b"last")
    reader = ring.reader()
    assert collect(reader) == [b"first", b"last"]
    assert reader.discarded == 1
    assert ring.consumer_pos == ring.prod_pos


def test_busy_record_stops_the_walk_until_committed() -> None:
    ring = FakeRing(1024)
    ring.submit(b"one")
    busy = ring.reserve(10)
    ring.submit(b"three")  # committed, but behind a record still being written
    reader = ring.reader()
    assert collect(reader) == [b"one"]
    assert ring.consumer_pos == busy
    assert reader.pending_bytes() > 0
    ring.commit(busy, b"two" * 3 + b"!")
    assert collect(reader) == [b"two" * 3 + b"!", b"three"]
    assert ring.consumer_pos == ring.prod_pos


def test_space_is_handed_back_after_each_batch() -> None:
    ring = FakeRing(4096)
    positions = [ring.submit(bytes([i]) * 24) for i in range(10)]
    reader = ring.reader(batch_bytes=64)  # two 32-byte records per batch
    seen_consumer_pos: list[int] = []
    reader.drain(lambda buf, off, n: buf[off], lambda _item: seen_consumer_pos.append(ring.consumer_pos))
    assert seen_consumer_pos == [positions[i - i % 2] for i in range(10)]
    assert ring.consumer_pos == ring.prod_pos


def test_items_decoded_as_none_are_not_consumed() -> None:
    ring = FakeRing(1024)
    for p in (b"keep", b"skip", b"keep"):
        ring.submit(p)
    got: list[bytes] = []
    ring.reader().drain(lambda buf, off, n: None if buf[off] == ord("s") else bytes(buf[off : off + n]),
                        got.append)
    assert got == [b"keep", b"keep"]


def test_consumer_error_propagates_without_redelivery() -> None:
    ring = FakeRing(1024)
    for p in (b"ok", b"boom", b"after"):
        ring.submit(p)
    reader = ring.reader()
    got: list[bytes] = []

    def consume(item: bytes) -> None:
        if item == b"boom":
            raise KeyError("consumer failed")
        got.append(item)

    with pytest.raises(KeyError):
        reader.drain(lambda buf, off, n: bytes(buf[off : off + n]), consume)
    assert got == [b"ok"]
    reader.drain(lambda buf, off, n: bytes(buf[off : off + n]), consume)
    assert got == [b"ok", b"after"]


def test_impossible_record_length_is_an_error() -> None:
    ring = FakeRing(256)
    ring.submit(b"x" * 8)
    ring._write(0, struct.pack("<II", 100_000, 0))
    with pytest.raises(RingBufferError, match="100000 bytes"):
        collect(ring.reader())


def test_wait_reports_pending_data_at_once() -> None:
    ring = FakeRing(1024)
    reader = ring.reader()
    assert reader.wait(0) is False
    ring.submit(b"x")
    assert reader.wait(10_000) is True


def test_wait_does_not_report_a_record_still_being_written() -> None:
    """Otherwise the run loop would spin: wait says data, drain finds nothing committed."""
    ring = FakeRing(1024)
    reader = ring.reader()
    busy = ring.reserve(10)
    assert reader.pending_bytes() > 0
    assert reader.wait(5) is False
    ring.commit(busy, b"0123456789")
    assert reader.wait(5) is True


def test_close_survives_a_buffer_exported_by_a_decoder() -> None:
    import pickle

    ring = FakeRing(1024)
    ring.submit(b"hello")
    reader = ring.reader()
    exported: list[pickle.PickleBuffer] = []  # a decoder keeping a buffer export of the data
    reader.drain(lambda buf, off, n: pickle.PickleBuffer(buf), exported.append)
    reader.close()  # must neither raise nor stop before the rest is released
    assert bytes(exported[0].raw()[8:13]) == b"hello"


def test_bad_layouts_are_rejected() -> None:
    with pytest.raises(RingBufferError, match="power of two"):
        RingReader(bytearray(PAGE), bytearray(PAGE + 2 * 1000), 1000, page_size=PAGE)
    with pytest.raises(RingBufferError, match="writable"):
        RingReader(bytes(PAGE), bytearray(PAGE + 2 * 1024), 1024, page_size=PAGE)
    with pytest.raises(RingBufferError, match="shorter"):
        RingReader(bytearray(PAGE), bytearray(PAGE + 1024), 1024, page_size=PAGE)


def test_mapping_something_that_is_not_a_ring_buffer_fails_clearly() -> None:
    with tempfile.TemporaryFile() as fh, pytest.raises(RingBufferError, match="cannot map"):
        RingReader.open_map(fh.fileno(), 1 << 20)


def test_close_releases_the_buffers() -> None:
    ring = FakeRing(1024)
    reader = ring.reader()
    reader.close()
    reader.close()
    ring.consumer.extend(b"x")  # resizable again: no view of it is left


def test_close_unmaps_even_when_a_decoder_kept_a_slice() -> None:
    size = PAGE
    with tempfile.TemporaryFile() as fh:
        fh.write(bytes(PAGE + PAGE + 2 * size))
        fh.flush()
        consumer = mmap.mmap(fh.fileno(), PAGE)
        producer = mmap.mmap(fh.fileno(), PAGE + 2 * size, offset=PAGE)
        struct.pack_into("<Q", producer, 0, 16)  # one committed 5-byte record at 0
        producer[PAGE : PAGE + 13] = struct.pack("<II", 5, 0) + b"hello"
        reader = RingReader(consumer, producer, size, page_size=PAGE, owned=(consumer, producer))
        kept: list[memoryview] = []
        reader.drain(lambda buf, off, n: buf[off : off + n], kept.append)
        reader.close()
        assert consumer.closed
        assert bytes(kept[0]) == b"hello"  # still readable: unmapped once the slice goes


def test_one_drain_walks_at_most_one_ring_of_records() -> None:
    ring = FakeRing(256)
    reader = ring.reader(batch_bytes=64)
    got: list[bytes] = []

    def consume_and_produce(item: bytes) -> None:  # a producer as fast as the consumer
        got.append(item)
        ring.submit(b"more" * 6)

    ring.submit(b"more" * 6)
    reader.drain(lambda buf, off, n: bytes(buf[off : off + n]), consume_and_produce)
    assert len(got) == 256 // 32
    assert reader.pending_bytes() == 32
