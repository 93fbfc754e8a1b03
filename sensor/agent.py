"""The live sensor: process table seeded from running processes, BPF program, decoder, consumers."""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rules.event import Event, stored
from sensor.bpf_program import DEFAULT_HOOKS, DEFAULT_RINGBUF_PAGES, FOLD_ENTRIES, SensorProgram
from sensor import cgroups, proc_sockets
from sensor.boottime import boot_ns, boot_to_wall_offset_ns
from sensor.container_identity import CgroupResolver, ProcIdentity
from sensor.decoding import EventDecoder
from sensor.process_table import ProcessRecord, ProcessTable
from sensor.procfs import ProcReader, read_boot_id

if TYPE_CHECKING:
    from sensor.k8s.enrich import K8sEnricher

log = logging.getLogger(__name__)
EventConsumer = Callable[[dict[str, Any]], None]


@dataclass
class SensorOptions:
    """Knobs of the live sensor."""

    ringbuf_pages: int = DEFAULT_RINGBUF_PAGES
    hooks: str = DEFAULT_HOOKS  # network hook set (bpf_program.HOOK_SETS)
    proc_root: str = "/proc"
    exited_retention_s: float = 30.0
    fold_repeats_s: float = 0.0
    """sensor.fold_repeats: the fold period (0: every network event is sent)."""
    fold_entries: int = FOLD_ENTRIES
    """Keys one fold period counts repeats for; events of further keys are sent."""


@dataclass
class SensorStats:
    """Counters shown in the status line and on exit."""

    events: int = 0
    lost: int = 0
    decode_errors: int = 0
    processes: int = 0
    repeats_folded: int = 0   # network events counted in the kernel, reported in summaries


class Sensor:
    """Everything between the kernel and the first consumer of events.

    `start()` seeds the process table and loads the programs, `poll()` drains the ring
    buffer into `on_event`, `close()` detaches everything. Usable as a context manager.
    """

    def __init__(self, on_event: EventConsumer, options: SensorOptions | None = None,
                 enricher: K8sEnricher | None = None) -> None:
        self.options = options or SensorOptions()
        self._on_event = on_event
        self.boot_id = read_boot_id()
        self.boot_offset_ns = boot_to_wall_offset_ns()
        mount = cgroups.find_mount()
        self.cgroups = CgroupResolver(mount, hybrid=bool(cgroups.v1_hierarchies()))
        self.reader = ProcReader(self.boot_id, self.boot_offset_ns, self.options.proc_root,
                                 cgroups.pid_cgroup_id_reader(mount, self.options.proc_root))
        self.table = ProcessTable(self._load,
                                  exited_retention_ns=int(self.options.exited_retention_s * 1e9))
        self.decoder = EventDecoder(self.table, self.boot_id, self.boot_offset_ns, self.cgroups,
                                    self._container_of_pid, self._annotate)
        self._proc_identity = ProcIdentity(self.options.proc_root)
        self.program: SensorProgram | None = None
        self.enricher: K8sEnricher | None = None
        self._found: queue.SimpleQueue[proc_sockets.PacketSocket] = queue.SimpleQueue()
        self._stop_scan = threading.Event()
        self._scan_thread: threading.Thread | None = None
        self._next_fold_collect = 0.0
        self.repeats_folded = 0
        """Network events counted in the kernel instead of sent, reported in summaries."""
        if enricher is not None:
            self.attach_enricher(enricher)

    def attach_enricher(self, enricher: K8sEnricher | None) -> None:
        """Join process records with container/pod metadata from now on (None: stop)."""
        self.enricher = enricher
        self.decoder.peer_fields = (enricher.peer_fields_of if enricher is not None and enricher.peers is not None
                                    else None)
        self.decoder.forget_remote_addresses()
        if enricher is not None:
            enricher.records = lambda: iter(self.table)
            enricher.on_update = self._record_updated
            enricher.on_peers_changed = self.decoder.forget_remote_addresses
            enricher.cgroup_exists = lambda cgid: self.cgroups.full_path(cgid) is not None

    def _annotate(self, record: ProcessRecord) -> None:
        if self.enricher is not None:
            self.enricher.annotate(record)

    def _load(self, pid: int) -> ProcessRecord | None:
        record = self.reader.read(pid)
        if record is not None:
            self._annotate(record)
        return record

    def _record_updated(self, record: ProcessRecord) -> None:
        """A record's pod metadata changed: re-announce it, drop cached event fields."""
        self.table.add(record)
        self.decoder.invalidate_pid(record.pid)

    def _container_of_pid(self, pid: int) -> str:
        return self._proc_identity(pid).container_id

    def start(self) -> None:
        """Seed the process table from running processes, then load and attach the programs."""
        for record in self.reader.snapshot():
            self._annotate(record)
            self.table.add(record)
        log.debug("seeded %d processes", len(self.table))
        fold_entries = self.options.fold_entries if self.options.fold_repeats_s > 0 else 0
        self.program = SensorProgram(None, self.options.ringbuf_pages, hooks=self.options.hooks,
                                     fold_entries=fold_entries)
        self._next_fold_collect = time.monotonic() + self.options.fold_repeats_s
        # records go straight from the ring buffer to the decoder and on to the consumer
        self.program.set_sink(self.decoder.decode_at, self._on_event)
        if self.program.hooks.hooks == "cgroup":
            self.seed_listeners()
            if not self.program.packet_hook:
                self._start_packet_scan()

    def _start_packet_scan(self) -> None:
        """Cgroup hook set without fentry: AF_PACKET sockets come from a /proc scan."""
        scanner = proc_sockets.PacketSocketScanner(self.options.proc_root)
        scanner.scan()   # what is open already

        def run() -> None:
            while not self._stop_scan.wait(proc_sockets.SCAN_INTERVAL_S):
                try:
                    for sock in scanner.scan():
                        self._found.put(sock)
                except OSError as exc:   # /proc unreadable: say so, keep trying
                    log.warning("AF_PACKET socket scan of %s failed: %s", self.options.proc_root, exc)
        self._stop_scan.clear()
        self._scan_thread = threading.Thread(target=run, daemon=True, name="netvigil-packet-scan")
        self._scan_thread.start()

    def _deliver_found(self) -> None:
        """Hand the scanner's packet sockets to the decoder and the consumer (event thread)."""
        while True:
            try:
                sock = self._found.get_nowait()
            except queue.Empty:
                return
            record = self.table.by_pid(sock.pid)
            if record is None:
                continue   # gone already
            raw = proc_sockets.packet_socket_record(sock, record, boot_ns())
            event = self.decoder.decode_at(raw, 0, len(raw))
            if event is not None:
                self._on_event(event)

    def seed_listeners(self) -> int:
        """Cgroup hook set: tell the programs who owns the TCP listeners that were open
        before they were attached (they learn owners at listen()); returns how many."""
        assert self.program is not None, "start() first"
        try:
            found = proc_sockets.listening_sockets(self.options.proc_root)
        except OSError as exc:
            log.warning("cannot list the listening sockets under %s (%s): accepts on servers "
                        "started before the agent are reported once they listen again",
                        self.options.proc_root, exc)
            return 0
        return proc_sockets.seed(self.program.bpf[b"listeners"], found, self.table.by_pid)

    @property
    def on_event(self) -> EventConsumer:
        """The consumer every event is handed to (may be replaced while running)."""
        return self._on_event

    @on_event.setter
    def on_event(self, consumer: EventConsumer) -> None:
        self._on_event = consumer
        if self.program is not None:
            self.program.set_sink(self.decoder.decode_at, consumer)

    def enrich(self, event: dict[str, Any]) -> dict[str, Any]:
        """An event from elsewhere (e.g. an enforcement verdict) with its process fields (and
        the peer behind its fd.rip, as decoded events have)."""
        pid = event.get("proc.pid")
        if not isinstance(pid, int):
            return event
        out = Event({**self.decoder.fields_of_pid(pid), **stored(event)})
        rip, peer_fields = out.stored_get("fd.rip"), self.decoder.peer_fields
        if isinstance(rip, str) and peer_fields is not None:
            peer = peer_fields(rip, out.stored_get("fd.rport"))
            if peer is not None:
                out.update(peer)
        return out

    def poll(self, timeout_ms: int = 100) -> None:
        """Deliver pending events (waiting up to timeout_ms for the first)."""
        assert self.program is not None, "start() first"
        self.program.poll(timeout_ms)
        if self._scan_thread is not None:
            self._deliver_found()
        if self.program.fold_entries and time.monotonic() >= self._next_fold_collect:
            self.deliver_repeats()

    def drain(self) -> None:
        """Deliver every event already buffered, without waiting."""
        assert self.program is not None, "start() first"
        self.program.consume()
        if self._scan_thread is not None:
            self._deliver_found()

    def deliver_repeats(self) -> int:
        """End the fold period: one summary event per key whose repeats the kernel counted
        (the event it sent, with `evt.repeats` and the last one's time); returns how many."""
        assert self.program is not None, "start() first"
        self._next_fold_collect = time.monotonic() + self.options.fold_repeats_s
        folded = self.program.collect_repeats()
        self.program.consume()   # the events the summaries follow come first
        for repeats in folded:
            event = self.decoder.decode_at(repeats.record, 0, len(repeats.record))
            if event is None:
                continue
            event["evt.repeats"] = repeats.count
            event["evt.time"] = repeats.last_boot_ns + self.boot_offset_ns
            self.repeats_folded += repeats.count
            self._on_event(event)
        return len(folded)

    def stats(self) -> SensorStats:
        """Event, loss and process counters so far."""
        return SensorStats(
            events=self.decoder.events,
            lost=self.program.lost_events() if self.program else 0,
            decode_errors=self.decoder.decode_errors,
            processes=self.table.live_count,
            repeats_folded=self.repeats_folded,
        )

    def close(self) -> None:
        """Detach all programs (safe to call twice)."""
        self._stop_scan.set()
        if self._scan_thread is not None:
            self._scan_thread.join(timeout=5)
            self._scan_thread = None
        if self.program is not None:
            if not self.program.closed and self.program.fold_entries:
                self.deliver_repeats()   # the last period's counts
            self.program.close()

    def __enter__(self) -> Sensor:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
