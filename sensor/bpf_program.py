"""The sensor's BPF object: compile bpf/sensor_*.c with BCC, attach, read its ring buffer, detach."""
from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable
from pathlib import Path

from sensor.btf import BtfError, KernelBtf
from sensor.errors import BPFUnavailableError
from sensor.ring_reader import ItemConsumer, RecordDecoder, RingBufferError, RingReader

log = logging.getLogger(__name__)
RecordCallback = Callable[[bytes], None]
DEFAULT_RINGBUF_PAGES = 2048  # 8 MiB with 4 KiB pages
KERNEL_BTF = "/sys/kernel/btf/vmlinux"


def kernel_has_btf(btf_file: str = KERNEL_BTF) -> bool:
    """Whether the running kernel exposes BTF (the sensor then keeps per-thread syscall
    state in task storage; without it, in a hash map by thread id, which costs more)."""
    return os.path.exists(btf_file)


def bpf_source_dir() -> Path:
    """Where the BPF C sources live (NETVIGIL_BPF_DIR overrides the checkout's bpf/)."""
    override = os.environ.get("NETVIGIL_BPF_DIR")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "bpf"


# the program's sources, in the order they form one text: shared part, then hook families
SENSOR_SOURCES = ("sensor_core.c", "sensor_process.c", "sensor_sockets.c", "sensor_tcp.c", "sensor_udp.c")
# syscall hooks for what sensor_process.c reads through BTF offsets, when those are unknown
PROCESS_SYSCALL_FALLBACK = "sensor_process_syscalls.c"
# kernel-internal members sensor_process.c reads, as -D name=offset (from the kernel's BTF)
BTF_OFFSETS = {
    "NV_OFF_TASK_MM": ("task_struct", "mm"),
    "NV_OFF_TASK_EXIT_CODE": ("task_struct", "exit_code"),
    "NV_OFF_MM_ARG_START": ("mm_struct", "arg_start"),
    "NV_OFF_MM_ARG_END": ("mm_struct", "arg_end"),
}


def kernel_offsets(use_btf: bool, btf_file: str = KERNEL_BTF) -> dict[str, int]:
    """BTF_OFFSETS resolved on the running kernel; empty without BTF or when one is missing
    (the program then takes exec arguments and exit codes from syscall hooks)."""
    if not use_btf:
        return {}
    try:
        btf = KernelBtf.from_kernel(Path(btf_file))
        return {name: btf.offset(*member) for name, member in BTF_OFFSETS.items()}
    except BtfError as exc:
        log.warning("kernel BTF: %s; exec arguments and exit codes come from syscall hooks", exc)
        return {}


def sensor_sources(offsets: dict[str, int]) -> tuple[str, ...]:
    """The source files of the program, in text order, for these BTF offsets."""
    core, *families = SENSOR_SOURCES
    return (core, *(() if offsets else (PROCESS_SYSCALL_FALLBACK,)), *families)


def sensor_program_text(src_dir: Path | None = None, offsets: dict[str, int] | None = None) -> str:
    """The sensor's BPF C as one text: sensor_sources(offsets) concatenated, each after a
    comment naming its file.

    One text rather than #include: BCC rewrites map declarations and calls
    (`events.ringbuf_reserve`) only in its main file, and it decides what that is by the
    presumed location, so a `#line "file"` directive breaks it too.
    """
    src_dir = src_dir or bpf_source_dir()
    parts = []
    for name in sensor_sources(offsets or {}):
        path = src_dir / name
        try:
            parts.append(f"/* ==== {name} ==== */\n" + path.read_text())
        except OSError as exc:
            raise BPFUnavailableError(f"BPF source not readable: {path}: {exc.strerror}") from exc
    return "".join(parts)


def sensor_cflags(ringbuf_pages: int, *, use_btf: bool, src_dir: Path | None = None,
                  offsets: dict[str, int] | None = None) -> list[str]:
    """Compiler flags for the sensor program (header directory, ring size, BTF fallback,
    kernel offsets)."""
    cflags = [f"-I{src_dir or bpf_source_dir()}", f"-DNV_RINGBUF_PAGES={ringbuf_pages}", "-Wno-macro-redefined"]
    cflags += [f"-D{name}={value}" for name, value in sorted((offsets or {}).items())]
    if not use_btf:
        cflags.append("-DNV_NO_BTF")
    return cflags


def load_bcc() -> type:
    """BCC's BPF class, or a clear error saying how to get it."""
    try:
        from bcc import BPF  # noqa: PLC0415 (optional system package)
    except ImportError as exc:
        raise BPFUnavailableError(
            "BCC's Python bindings are missing: install Debian's python3-bpfcc and use a "
            "venv made with --system-site-packages (run `make run` or scripts/bootstrap.sh)"
        ) from exc
    return BPF


_COMPILER_LIBS = ("libLLVM", "libclang")
_MADV_DONTNEED = 4


def release_compiler_pages(smaps_file: str = "/proc/self/smaps") -> int:
    """Drop the clean read-only pages of LLVM/clang that compiling touched; returns bytes.

    Only mappings with no dirty or anonymous pages qualify (so relocated RELRO data is
    never touched): they are re-read from the page cache if a later compile needs them,
    so this only shrinks the agent's resident set.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    try:
        with open(smaps_file, encoding="ascii", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return 0
    candidates: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    dirty = 0
    for line in lines + ["0-0 ---- 0 0 0 [end]\n"]:
        parts = line.split()
        if parts and "-" in parts[0] and len(parts) >= 5:  # a mapping header line
            if current is not None and dirty == 0:
                candidates.append(current)
            current, dirty = None, 0
            if len(parts) >= 6 and "w" not in parts[1] and any(lib in parts[5] for lib in _COMPILER_LIBS):
                start, end = (int(x, 16) for x in parts[0].split("-"))
                current = (start, end)
        elif current is not None and parts and parts[0] in ("Private_Dirty:", "Shared_Dirty:", "Anonymous:"):
            dirty += int(parts[1])
    released = 0
    for start, end in candidates:
        if libc.madvise(start, end - start, _MADV_DONTNEED) == 0:
            released += end - start
    return released


class SensorProgram:
    """Compiled and attached tracepoint programs plus their ring buffer.

    BCC compiles, loads and attaches; records are read through `RingReader`, which maps
    the ring buffer itself (no ctypes callback per record). What `poll()`/`consume()`
    deliver is set by `set_sink(decode, consume)`: `decode(buffer, offset, length)`
    turns a record into an item (None: nothing to deliver) and `consume(item)` takes it.
    With only `on_record` given, each record is delivered as a `bytes` copy. Exceptions
    raised by either function propagate from `poll()`/`consume()`, the record consumed.
    """

    def __init__(self, on_record: RecordCallback | None = None,
                 ringbuf_pages: int = DEFAULT_RINGBUF_PAGES, *, use_btf: bool | None = None) -> None:
        if ringbuf_pages < 1 or ringbuf_pages & (ringbuf_pages - 1):
            raise ValueError("ringbuf_pages must be a power of two")
        bpf_cls = load_bcc()
        src_dir = bpf_source_dir()
        self.uses_btf = kernel_has_btf() if use_btf is None else use_btf
        self.offsets = kernel_offsets(self.uses_btf)
        text = sensor_program_text(src_dir, self.offsets)
        cflags = sensor_cflags(ringbuf_pages, use_btf=self.uses_btf, src_dir=src_dir, offsets=self.offsets)
        try:
            self.bpf = bpf_cls(text=text.encode(), cflags=cflags)
        except Exception as exc:  # BCC raises bare Exception for compile/load failures
            raise BPFUnavailableError(f"cannot load the sensor program from {src_dir}: {exc} "
                                      "(try `netvigil doctor`)") from exc
        try:  # from here on, any failure detaches what was attached
            table = self.bpf[b"events"]
            self.reader = RingReader.open_map(table.map_fd, int(table.max_entries))
            self._lost = self.bpf[b"lost"]
            self.bpf.free_bcc_memory()  # the compiler's heap is not needed once loaded
            release_compiler_pages()
        except BaseException as exc:
            reader = getattr(self, "reader", None)
            if reader is not None:
                reader.close()
            self.bpf.cleanup()
            if isinstance(exc, RingBufferError):
                raise BPFUnavailableError(f"{exc} (try `netvigil doctor`)") from exc
            raise
        self._decode: RecordDecoder = copy_record
        self._consume: ItemConsumer = on_record if on_record is not None else _ignore
        self.closed = False

    def set_sink(self, decode: RecordDecoder, consume: ItemConsumer) -> None:
        """Deliver consume(decode(buffer, offset, length)) for every record from now on."""
        self._decode, self._consume = decode, consume

    def poll(self, timeout_ms: int = 100) -> int:
        """Wait up to timeout_ms for data, then deliver every record; returns how many.

        The kernel side wakes the consumer at most once per 10 ms per CPU, so records
        submitted without a wakeup are collected here after the wait.
        """
        self.reader.wait(timeout_ms)
        return self.reader.drain(self._decode, self._consume)

    def consume(self) -> int:
        """Deliver every record already in the ring buffer, without waiting."""
        return self.reader.drain(self._decode, self._consume)

    def lost_events(self) -> int:
        """Records the kernel could not put in the ring buffer (summed over CPUs)."""
        return sum(int(getattr(v, "value", v)) for v in self._lost[ctypes.c_int(0)])

    def close(self) -> None:
        """Unmap the ring buffer, detach every program and free the maps (idempotent)."""
        if not self.closed:
            self.closed = True
            try:
                self.reader.close()
            finally:
                self.bpf.cleanup()


def copy_record(buffer: memoryview, offset: int, length: int) -> bytes:
    """A record's bytes, copied out of the ring buffer."""
    return bytes(buffer[offset : offset + length])


def _ignore(_item: object) -> None:
    return None
