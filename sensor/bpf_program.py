"""The sensor's BPF object: compile bpf/sensor_*.c with BCC, attach, read its ring buffer, detach."""
from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from sensor import cgroups, kernel_headers
from sensor.btf import BtfError, KernelBtf
from sensor.errors import BPFUnavailableError
from sensor.ring_reader import ItemConsumer, RecordDecoder, RingBufferError, RingReader

log = logging.getLogger(__name__)
RecordCallback = Callable[[bytes], None]
DEFAULT_RINGBUF_PAGES = 2048  # 8 MiB with 4 KiB pages
FOLD_ENTRIES = 8192  # keys one fold period can count repeats for (~1.5 MiB); more are sent unfolded
KERNEL_BTF = "/sys/kernel/btf/vmlinux"


def kernel_has_btf(btf_file: str = KERNEL_BTF) -> bool:
    """Whether the running kernel exposes BTF (the sensor then keeps per-thread syscall
    state in task storage; without it, in a hash map by thread id, which costs more)."""
    return os.path.exists(btf_file)


def bpf_source_dir() -> Path:
    """Where the BPF C sources live (NETVIGIL_BPF_DIR overrides the checkout's bpf/)."""
    override = os.environ.get("NETVIGIL_BPF_DIR")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "bpf"


# the program's sources, in the order they form one text: shared part, process hooks,
# then the network hooks of the chosen hook set
CORE_SOURCES = ("sensor_core.c", "sensor_process.c")
NET_SOURCES = {
    # cgroup sock_addr/sock programs, sock:inet_sock_set_state, a kprobe on packet_create
    "cgroup": ("sensor_net_cgroup.c",),
    # syscall tracepoints (every syscall on the node then takes the tracing slow path)
    "syscalls": ("sensor_sockets.c", "sensor_tcp.c", "sensor_udp.c"),
}
SENSOR_SOURCES = CORE_SOURCES + NET_SOURCES["syscalls"]
HOOK_SETS = ("auto", "cgroup", "syscalls")
"""sensor.hooks: auto (cgroup when the kernel allows it), cgroup, syscalls."""
DEFAULT_HOOKS = "auto"
"""The default hook set: cgroup where the kernel allows it (no syscall tracepoint, so the
node's syscalls keep their fast path), else syscalls (docs/operations.md compares them)."""
# syscall hooks for what sensor_process.c reads through BTF offsets, when those are unknown
PROCESS_SYSCALL_FALLBACK = "sensor_process_syscalls.c"
# kernel-internal members sensor_process.c reads, as -D name=offset (from the kernel's BTF)
BTF_OFFSETS = {
    "NV_OFF_TASK_MM": ("task_struct", "mm"),
    "NV_OFF_TASK_EXIT_CODE": ("task_struct", "exit_code"),
    "NV_OFF_MM_ARG_START": ("mm_struct", "arg_start"),
    "NV_OFF_MM_ARG_END": ("mm_struct", "arg_end"),
}
# members the cgroup hook set reads (sensor_net_cgroup.c; the stdio scan at exec)
NET_BTF_OFFSETS = {
    "NV_OFF_TASK_FILES": ("task_struct", "files"),
    "NV_OFF_FILES_FDT": ("files_struct", "fdt"),
    "NV_OFF_FDT_FD": ("fdtable", "fd"),
    "NV_OFF_FILE_F_INODE": ("file", "f_inode"),
    "NV_OFF_FILE_F_FLAGS": ("file", "f_flags"),
    "NV_OFF_FILE_PRIVATE_DATA": ("file", "private_data"),
    "NV_OFF_INODE_I_MODE": ("inode", "i_mode"),
    "NV_OFF_INODE_I_INO": ("inode", "i_ino"),
    "NV_OFF_NET_NS": ("net", "ns"),
    "NV_OFF_NS_COMMON_INUM": ("ns_common", "inum"),
    "NV_OFF_SOCKET_SK": ("socket", "sk"),
    "NV_OFF_SOCKET_TYPE": ("socket", "type"),
    "NV_OFF_SOCKET_FILE": ("socket", "file"),
    "NV_OFF_SK_SOCKET": ("sock", "sk_socket"),
    "NV_OFF_SK_ERR": ("sock", "sk_err"),
    "NV_OFF_SKC_FAMILY": ("sock_common", "skc_family"),
    "NV_OFF_SKC_NET": ("sock_common", "skc_net"),
    "NV_OFF_SKC_NUM": ("sock_common", "skc_num"),
    "NV_OFF_SKC_DPORT": ("sock_common", "skc_dport"),
    "NV_OFF_SKC_RCV_SADDR": ("sock_common", "skc_rcv_saddr"),
    "NV_OFF_SKC_DADDR": ("sock_common", "skc_daddr"),
    "NV_OFF_SKC_V6_RCV_SADDR": ("sock_common", "skc_v6_rcv_saddr"),
    "NV_OFF_SKC_V6_DADDR": ("sock_common", "skc_v6_daddr"),
}
# x86-64 only: the calling syscall's registers, for fd numbers in the cgroup hook set
SYSCALL_REGS_OFFSETS = {
    "NV_OFF_TASK_STACK": ("task_struct", "stack"),
    "NV_OFF_REGS_ORIG_AX": ("pt_regs", "orig_ax"),
    "NV_OFF_REGS_DI": ("pt_regs", "di"),
    "NV_OFF_REGS_SI": ("pt_regs", "si"),
}
# cgroup programs of the cgroup hook set: function -> (BCC program type name, attach type)
CGROUP_PROGRAMS = {
    "nv_connect4": ("CGROUP_SOCK_ADDR", 10),     # BPF_CGROUP_INET4_CONNECT
    "nv_connect6": ("CGROUP_SOCK_ADDR", 11),     # BPF_CGROUP_INET6_CONNECT
    "nv_post_bind4": ("CGROUP_SOCK", 12),        # BPF_CGROUP_INET4_POST_BIND
    "nv_post_bind6": ("CGROUP_SOCK", 13),        # BPF_CGROUP_INET6_POST_BIND
    "nv_sendmsg4": ("CGROUP_SOCK_ADDR", 14),     # BPF_CGROUP_UDP4_SENDMSG
    "nv_sendmsg6": ("CGROUP_SOCK_ADDR", 15),     # BPF_CGROUP_UDP6_SENDMSG
}
PACKET_KFUNC = "packet_create"   # fentry for AF_PACKET sockets (-DNV_PACKET_KFUNC)


def _resolve(btf: KernelBtf, wanted: dict[str, tuple[str, str]]) -> dict[str, int]:
    return {name: btf.offset(*member) for name, member in wanted.items()}


def kernel_offsets(use_btf: bool, btf_file: str = KERNEL_BTF) -> dict[str, int]:
    """BTF_OFFSETS resolved on the running kernel; empty without BTF or when one is missing
    (the program then takes exec arguments and exit codes from syscall hooks)."""
    if not use_btf:
        return {}
    try:
        return _resolve(KernelBtf.from_kernel(Path(btf_file)), BTF_OFFSETS)
    except BtfError as exc:
        log.warning("kernel BTF: %s; exec arguments and exit codes come from syscall hooks", exc)
        return {}


def net_offsets(btf_file: str = KERNEL_BTF) -> dict[str, int]:
    """NET_BTF_OFFSETS (and on x86-64 SYSCALL_REGS_OFFSETS with NV_SIZE_PT_REGS and the
    block of pt_regs holding the three registers, see regs_block) resolved on the running
    kernel; BtfError when one is missing."""
    btf = KernelBtf.from_kernel(Path(btf_file))
    offsets = _resolve(btf, NET_BTF_OFFSETS)
    if os.uname().machine == "x86_64":
        regs = _resolve(btf, SYSCALL_REGS_OFFSETS)
        block = regs_block(regs)
        if block is not None:   # else fd numbers stay unknown (-1)
            offsets |= regs | block
            offsets["NV_SIZE_PT_REGS"] = btf.size("pt_regs")
    return offsets


REGS_BLOCK_MAX = 64   # bytes of pt_regs read at once for orig_ax, di and si


def regs_block(regs: dict[str, int]) -> dict[str, int] | None:
    """NV_REGS_LO/NV_REGS_BLOCK: where the 8-byte registers orig_ax, di and si lie in
    pt_regs, so the programs read them in one probe read (x86-64: si, di, orig_ax are
    adjacent, 24 bytes); None when they are not aligned or not close together."""
    at = [regs[name] for name in ("NV_OFF_REGS_ORIG_AX", "NV_OFF_REGS_DI", "NV_OFF_REGS_SI")]
    low, size = min(at), max(at) + 8 - min(at)
    if size > REGS_BLOCK_MAX or any(off % 8 for off in at):
        return None
    return {"NV_REGS_LO": low, "NV_REGS_BLOCK": size}


ROOT_CGROUP_ID = 1   # the cgroup2 root directory's inode number (its cgroup id)


def is_root_cgroup(path: Path) -> bool:
    """Whether `path` is the node's cgroup2 root (not a cgroup namespace's view of a subtree)."""
    try:
        return os.stat(path).st_ino == ROOT_CGROUP_ID
    except OSError:
        return False


@dataclass(frozen=True)
class HookChoice:
    """Which network hook set the sensor attaches, and why."""

    hooks: str                      # "cgroup" or "syscalls"
    reason: str
    cgroup_root: Path | None = None
    offsets: dict[str, int] = field(default_factory=dict)   # NET_BTF_OFFSETS when cgroup


def choose_hooks(requested: str, process_offsets: dict[str, int], cgroup_root: Path | None,
                 btf_file: str = KERNEL_BTF) -> HookChoice:
    """The hook set for sensor.hooks = requested: "cgroup" needs the cgroup2 root and the
    kernel's BTF offsets (auto falls back to "syscalls" without them; "cgroup" is an error)."""
    if requested not in HOOK_SETS:
        raise BPFUnavailableError(f"sensor.hooks: {requested!r} is not one of {', '.join(HOOK_SETS)}")
    if requested == "syscalls":
        return HookChoice("syscalls", "sensor.hooks is syscalls")
    missing = None
    offsets: dict[str, int] = {}
    if cgroup_root is None:
        missing = "no cgroup2 filesystem is mounted"
    elif not is_root_cgroup(cgroup_root):
        missing = (f"the cgroup2 mount {cgroup_root} is not the root cgroup (a cgroup namespace: "
                   "programs there would see only its subtree; mount the host's cgroup2 root)")
    elif not process_offsets:
        missing = "the kernel has no usable BTF"
    else:
        try:
            offsets = net_offsets(btf_file)
        except BtfError as exc:
            missing = f"kernel BTF: {exc}"
    if missing is None:
        return HookChoice("cgroup", f"cgroup programs on {cgroup_root}, sock and sched tracepoints",
                          cgroup_root, offsets)
    if requested == "cgroup":
        raise BPFUnavailableError(f"sensor.hooks is cgroup but {missing} (try `netvigil doctor`)")
    return HookChoice("syscalls", f"{missing}: network events come from syscall tracepoints")


def fentry_allowed(bpf_cls: type, function: str) -> bool:
    """Whether an fentry program on `function` loads here (BCC's kfunc support, the symbol,
    and a trial load: a locked-down kernel refuses tracing programs with EPERM)."""
    # BCC's support_kfunc(), without its str-for-bytes deprecation warning
    if os.uname().machine != "x86_64" or not kernel_has_btf():
        return False
    if bpf_cls.ksymname(b"bpf_trampoline_link_prog") == -1 or bpf_cls.ksymname(function.encode()) == -1:
        return False
    saved = os.dup(2)   # libbpf writes the refusal to fd 2 itself: keep it off the agent's stderr
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        bpf_cls(text=f"KFUNC_PROBE({function}) {{ return 0; }}".encode()).cleanup()
    except Exception:  # BCC raises bare Exception when the load is refused
        return False
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return True


def sensor_sources(offsets: dict[str, int], hooks: str = "syscalls") -> tuple[str, ...]:
    """The source files of the program, in text order, for these BTF offsets and hook set."""
    core, process = CORE_SOURCES
    return (core, *(() if offsets else (PROCESS_SYSCALL_FALLBACK,)), process, *NET_SOURCES[hooks])


def sensor_program_text(src_dir: Path | None = None, offsets: dict[str, int] | None = None,
                        hooks: str = "syscalls") -> str:
    """The sensor's BPF C as one text: sensor_sources(offsets, hooks) concatenated, each
    after a comment naming its file.

    One text rather than #include: BCC rewrites map declarations and calls
    (`events.ringbuf_reserve`) only in its main file, and it decides what that is by the
    presumed location, so a `#line "file"` directive breaks it too.
    """
    src_dir = src_dir or bpf_source_dir()
    parts = []
    for name in sensor_sources(offsets or {}, hooks):
        path = src_dir / name
        try:
            parts.append(f"/* ==== {name} ==== */\n" + path.read_text())
        except OSError as exc:
            raise BPFUnavailableError(f"BPF source not readable: {path}: {exc.strerror}") from exc
    return "".join(parts)


def sensor_cflags(ringbuf_pages: int, *, use_btf: bool, src_dir: Path | None = None,
                  offsets: dict[str, int] | None = None, net_offsets: dict[str, int] | None = None,
                  fold_entries: int = 0) -> list[str]:
    """Compiler flags for the sensor program (header directory, ring size, BTF fallback,
    kernel offsets; with `net_offsets`, the cgroup hook set's and the stdio scan at exec;
    with `fold_entries`, repeat folding and the size of its map)."""
    cflags = [f"-I{src_dir or bpf_source_dir()}", f"-DNV_RINGBUF_PAGES={ringbuf_pages}", "-Wno-macro-redefined"]
    if fold_entries:
        cflags.append(f"-DNV_FOLD_ENTRIES={fold_entries}")
    every = {**(offsets or {}), **(net_offsets or {})}
    cflags += [f"-D{name}={value}" for name, value in sorted(every.items())]
    if net_offsets:
        cflags.append("-DNV_STDIO_AT_EXEC")
    if not use_btf:
        cflags.append("-DNV_NO_BTF")
    return cflags


def attach_cgroup_programs(bpf: object, bpf_cls: type, root: Path) -> list[int]:
    """Load CGROUP_PROGRAMS from a compiled BCC object and link them to the cgroup `root`
    (BPF links: multi-attach beside enforcement's legacy attachments, detached when the
    returned link fds are closed, so they never outlive the process)."""
    from sensor.enforcement import bpfsys  # noqa: PLC0415 (the bpf(2) wrappers)

    try:
        cg_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise BPFUnavailableError(f"cannot open the cgroup2 root {root}: {exc.strerror}") from exc
    links: list[int] = []
    try:
        for func, (prog_type, attach_type) in CGROUP_PROGRAMS.items():
            fn = bpf.load_func(func.encode(), getattr(bpf_cls, prog_type), attach_type=attach_type)  # type: ignore[attr-defined]
            links.append(bpfsys.link_create(fn.fd, cg_fd, attach_type))
    except Exception as exc:  # BCC raises bare Exception; BPFSyscallError from the link
        for fd in links:
            os.close(fd)
        raise BPFUnavailableError(f"cannot attach the cgroup programs to {root}: {exc} "
                                  "(sensor.hooks: syscalls uses none)") from exc
    finally:
        os.close(cg_fd)
    return links


def load_bcc() -> type:
    """BCC's BPF class (headers chosen: sensor.kernel_headers), or a clear error saying how to get it."""
    kernel_headers.use()
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


def release_free_heap() -> bool:
    """Hand the malloc heap's free pages back to the kernel (glibc's malloc_trim): what
    compiling freed stays resident otherwise, about 45 MB here. False where the C
    library has no malloc_trim (musl)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim(0)
    return True


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
                 ringbuf_pages: int = DEFAULT_RINGBUF_PAGES, *, use_btf: bool | None = None,
                 hooks: str = DEFAULT_HOOKS, fold_entries: int = 0) -> None:
        if ringbuf_pages < 1 or ringbuf_pages & (ringbuf_pages - 1):
            raise ValueError("ringbuf_pages must be a power of two")
        bpf_cls = load_bcc()
        src_dir = bpf_source_dir()
        self.uses_btf = kernel_has_btf() if use_btf is None else use_btf
        self.offsets = kernel_offsets(self.uses_btf)
        self.hooks = choose_hooks(hooks, self.offsets, cgroups.find_mount())
        """The network hook set attached (HookChoice: "cgroup" or "syscalls", and why)."""
        self._links: list[int] = []
        self.fold_entries = fold_entries
        """Size of the repeat-folding map (0: every event is sent; see collect_repeats)."""
        try:
            self._load(bpf_cls, src_dir, ringbuf_pages)
        except BPFUnavailableError as exc:
            if hooks != "auto" or self.hooks.hooks != "cgroup":
                raise
            # e.g. a container without the privilege cgroup programs need for probe reads
            log.warning("network hooks: the cgroup set does not load here (%s); using syscall "
                        "tracepoints", exc)
            self.hooks = HookChoice("syscalls", f"the cgroup programs did not load ({exc}): "
                                                "network events come from syscall tracepoints")
            self._load(bpf_cls, src_dir, ringbuf_pages)
        self._decode: RecordDecoder = copy_record
        self._consume: ItemConsumer = on_record if on_record is not None else _ignore
        self.closed = False

    def _load(self, bpf_cls: type, src_dir: Path, ringbuf_pages: int) -> None:
        """Compile, load and attach the programs of self.hooks; on failure nothing stays attached."""
        log.info("network hooks: %s (%s)", self.hooks.hooks, self.hooks.reason)
        text = sensor_program_text(src_dir, self.offsets, self.hooks.hooks)
        cflags = sensor_cflags(ringbuf_pages, use_btf=self.uses_btf, src_dir=src_dir, offsets=self.offsets,
                               net_offsets=self.hooks.offsets, fold_entries=self.fold_entries)
        self.packet_hook = self.hooks.hooks == "syscalls" or fentry_allowed(bpf_cls, PACKET_KFUNC)
        """Whether AF_PACKET socket creation is hooked (cgroup set: only through fentry)."""
        if not self.packet_hook:
            log.info("the kernel refuses fentry programs: AF_PACKET sockets come from a /proc "
                     "scan (sensor.hooks: syscalls sees them at socket())")
        elif self.hooks.hooks == "cgroup":
            cflags.append("-DNV_PACKET_KFUNC")
        try:
            self.bpf = bpf_cls(text=text.encode(), cflags=cflags)
        except Exception as exc:  # BCC raises bare Exception for compile/load failures
            raise BPFUnavailableError(f"cannot load the sensor program from {src_dir}: {exc} "
                                      "(try `netvigil doctor`)") from exc
        try:  # from here on, any failure detaches what was attached
            if self.hooks.hooks == "cgroup":
                assert self.hooks.cgroup_root is not None
                self._links = attach_cgroup_programs(self.bpf, bpf_cls, self.hooks.cgroup_root)
            table = self.bpf[b"events"]
            self.reader = RingReader.open_map(table.map_fd, int(table.max_entries))
            self._lost = self.bpf[b"lost"]
            self._folds = self.bpf[b"folds"] if self.fold_entries else None
            self.bpf.free_bcc_memory()  # the compiler's heap is not needed once loaded
            release_compiler_pages()
            release_free_heap()
        except BaseException as exc:
            reader = self.__dict__.pop("reader", None)
            if reader is not None:
                reader.close()
            self._detach_links()
            self.bpf.cleanup()
            if isinstance(exc, RingBufferError):
                raise BPFUnavailableError(f"{exc} (try `netvigil doctor`)") from exc
            raise

    def _detach_links(self) -> None:
        links, self._links = self._links, []
        for fd in links:
            os.close(fd)

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

    def collect_repeats(self) -> list[FoldedRepeats]:
        """Empty the repeat-folding map: each key that counted repeats since the last call,
        as (the record that was sent, how many like it were counted, boot ns of the last)."""
        if self._folds is None:
            return []
        try:
            items = list(self._folds.items_lookup_and_delete_batch())
        except Exception as exc:  # BCC raises bare Exception; the counts stay for the next call
            log.warning("cannot collect the folded repeats (tried again next period): %s", exc)
            return []
        return [FoldedRepeats(bytes(v.ev), int(v.count), int(v.last)) for _k, v in items if v.count]

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
                self._detach_links()
                self.bpf.cleanup()


class FoldedRepeats(NamedTuple):
    """Network events the kernel counted instead of sending, like `record` (the one it sent)."""

    record: bytes
    count: int
    last_boot_ns: int


def copy_record(buffer: memoryview, offset: int, length: int) -> bytes:
    """A record's bytes, copied out of the ring buffer."""
    return bytes(buffer[offset : offset + length])


def _ignore(_item: object) -> None:
    return None
