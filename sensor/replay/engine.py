"""The replay engine: recorded segments back into full events, as the live sensor saw them.

Process records rebuild a ``ProcessTable``; each event's own fields are merged over its
process's cached fields (``{**proc_fields, **event_fields}``), so rules see exactly the
flat event the live sensor evaluated.
"""
from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sensor.process_table import ProcessRecord, ProcessTable
from sensor.recording.decoder import IT_ALERT, IT_EVENT, IT_VERDICT, SegmentDecoder
from sensor.recording.errors import SegmentFormatError
from sensor.recording.prefilter import MatchOracle
from sensor.recording.reader import Problem, SegmentReader
from sensor.replay.records import RecordStore
from sensor.replay.source import SegmentRef, discover

log = logging.getLogger(__name__)


def unwatched_types(ruleset: Any) -> Callable[[str], bool] | None:
    """Event types no loaded rule looks at: replay counts them without building them
    (as Falco only evaluates the syscalls its rules need). procexit is always built: it
    keeps the rebuilt process table in step."""
    candidates = getattr(ruleset, "candidates", None)
    if candidates is None:
        return None
    cache: dict[str, bool] = {}

    def unwatched(evt_type: str) -> bool:
        if evt_type not in cache:
            cache[evt_type] = evt_type != "procexit" and not candidates(evt_type)
        return cache[evt_type]

    return unwatched


def _min_time(a: int | None, b: Any) -> int | None:
    if not isinstance(b, int):
        return a
    return b if a is None or b < a else a


def _max_time(a: int | None, b: Any) -> int | None:
    if not isinstance(b, int):
        return a
    return b if a is None or b > a else a


def _event_time(item: tuple[str, Mapping[str, Any]]) -> int:
    t = item[1].get("evt.time")
    return t if isinstance(t, int) else 0

Predicate = Callable[[Mapping[str, Any]], bool]


class Replayer:
    """Reads recordings under ``paths`` and yields the selected events, in order.

    ``report`` receives every integrity/format problem as it is found (reading goes on
    with what is sound). ``keep_records`` keeps, in ``records``, the process records the
    ancestry views may still ask for: the latest record of every process the rebuilt
    table holds, and of their ancestors (bounded, see sensor.replay.records);
    ``keep_alerts`` keeps the recorded alerts and verdicts in ``recorded_alerts`` /
    ``verdicts``.
    """

    def __init__(self, paths: Sequence[str | Path], *, key: bytes | str | None = None,
                 since_ns: int | None = None, until_ns: int | None = None,
                 where: Predicate | None = None,
                 report: Callable[[Problem], None] | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 keep_records: bool = False, keep_alerts: bool = False,
                 skip_event_type: Callable[[str], bool] | None = None,
                 prefilter: MatchOracle | None = None) -> None:
        self._key = key
        self.since_ns, self.until_ns = since_ns, until_ns
        self.where = where
        self.problems: list[Problem] = []
        self._report_cb = report
        self.progress = progress
        self.segments: list[SegmentRef] = discover(paths, self._report, key)
        self.table = ProcessTable()
        self.keep_records = keep_records
        self.keep_alerts = keep_alerts  # collect recorded alerts/verdicts (memory grows)
        self.skip_event_type = skip_event_type  # event types nobody needs: not built
        self.prefilter = prefilter  # rules: events none of them can match are not built
        # process records the views may still need (bounded, see sensor.replay.records)
        self.records = RecordStore()
        if keep_records:
            self.table.on_evict = self.records.forget
        self.recorded_alerts: list[dict[str, Any]] = []
        self.segment_info: list[dict[str, Any]] = []  # per segment read: range, counts
        self.verdicts: list[dict[str, Any]] = []
        self.host = "?"
        self.hosts: set[str] = set()
        self.stats = {"segments": 0, "segments_skipped": 0, "events_read": 0,
                      "events_selected": 0, "events_unwatched": 0,
                      "events_prefiltered": 0, "processes": 0,
                      "records": 0}
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self._done_bytes = 0

    def _report(self, problem: Problem) -> None:
        self.problems.append(problem)
        if self._report_cb is not None:
            self._report_cb(problem)

    @property
    def total_bytes(self) -> int:
        """Bytes of all segments to read (for progress)."""
        return sum(r.size for r in self.segments)

    def _skip(self, ref: SegmentRef) -> bool:
        if self.until_ns is not None and ref.first_ns is not None and ref.first_ns > self.until_ns:
            return True
        return (self.since_ns is not None and ref.last_ns is not None
                and ref.last_ns < self.since_ns)

    def events(self) -> Iterator[dict[str, Any]]:
        """The selected events, fully hydrated (proc.*, container.*, k8s.* fields).

        One host: its segments in sequence order. Several hosts (recordings of several
        nodes): each host's stream in order, merged by event time; ``self.host`` is the
        host of the event last yielded.
        """
        hosts: dict[str, list[SegmentRef]] = {}
        for ref in self.segments:
            hosts.setdefault(ref.host, []).append(ref)
        self._done_bytes = 0
        if len(hosts) <= 1:
            for batch in self._host_events(self.segments):
                yield from batch
            return
        streams = [self._tagged(host, refs) for host, refs in hosts.items()]
        for host, ev in heapq.merge(*streams, key=_event_time):
            self.host = host
            yield ev

    def _tagged(self, host: str, refs: list[SegmentRef]
                ) -> Iterator[tuple[str, dict[str, Any]]]:
        for batch in self._host_events(refs):
            for ev in batch:
                yield host, ev

    def _host_events(self, refs: list[SegmentRef]) -> Iterator[list[dict[str, Any]]]:
        """Batches of events of one host's segments, in order, checking their links."""
        last: tuple[SegmentRef, bytes | None] | None = None
        total = self.total_bytes
        for ref in refs:
            if self._skip(ref):
                self.stats["segments_skipped"] += 1
                last = (ref, ref.footer.get("chain_hash") if ref.footer else None)
                self._done_bytes += ref.size
                continue
            try:
                reader = SegmentReader(ref.path, key=self._key, live=ref.live)
            except SegmentFormatError as exc:
                self._report(Problem(ref.path, str(exc).removeprefix(f"{ref.path}: "),
                                     kind="format"))
                continue
            self._check_link(ref, last)
            self.host = ref.host
            self.hosts.add(ref.host)
            self.stats["segments"] += 1
            yield from self._segment_events(ref, reader)
            for p in reader.problems:
                self._report(p)
            last = (ref, reader.final_hash)
            self._done_bytes += ref.size
            if self.progress is not None:
                self.progress(self._done_bytes, total)

    def _check_link(self, ref: SegmentRef, prev: tuple[SegmentRef, bytes | None] | None) -> None:
        if prev is None:
            return
        pref, phash = prev
        link = ref.header.get("prev_hash")
        if pref.seq + 1 != ref.seq or link is None or phash is None:
            return
        if link != phash:
            self._report(Problem(ref.path, f"does not continue {pref.path.name} (link hash "
                                 f"mismatch): {pref.path.name} was replaced, or altered at "
                                 f"its end", kind="link"))

    def _span(self, *times: Any) -> None:
        """Widen first_ns/last_ns (tracked per block: events are nearly time-ordered)."""
        for t in times:
            if isinstance(t, int):
                if self.first_ns is None or t < self.first_ns:
                    self.first_ns = t
                if self.last_ns is None or t > self.last_ns:
                    self.last_ns = t

    def _exit(self, ev: Mapping[str, Any]) -> None:
        """Mirror the live table: an exited process stays resolvable for a while, then goes."""
        t, pid = ev.get("evt.time"), ev.get("proc.pid")
        if isinstance(pid, int) and isinstance(t, int):
            status = ev.get("evt.arg.status")
            self.table.exit(pid, t, status if isinstance(status, int) else None)

    def _add_process(self, d: dict[str, Any], path: Path) -> None:
        self.stats["processes"] += 1
        try:
            rec = ProcessRecord.from_dict(d)
            table = self.table
            prev = table.by_pid(rec.pid)
            if prev is not None and prev.exec_id != rec.exec_id and rec.exit_ns is None:
                # a new image (exec) or a reused pid: the old one is gone, as in the live
                # table, so it is forgotten after the retention period (bounded memory)
                table.exit(rec.pid, rec.start_ns, prev.exit_code)
            table.add(rec)
        except (TypeError, ValueError) as exc:
            self._report(Problem(path, f"bad process record {d.get('exec_id')!r}: {exc}"))
            return
        if self.keep_records:
            self.records.put(d)

    def _segment_events(self, ref: SegmentRef, reader: SegmentReader
                        ) -> Iterator[list[dict[str, Any]]]:
        acc: dict[str, Any] = {"events": 0, "lo": None, "hi": None}
        problems_before = len(self.problems)
        try:
            yield from self._segment_body(ref, reader, acc)
        finally:
            footer = reader.footer
            self.segment_info.append({
                "file": str(ref.path), "host": ref.host, "seq": ref.seq,
                "first": footer["first_ns"] if footer else acc["lo"],
                "last": footer["last_ns"] if footer else acc["hi"],
                "events": acc["events"], "records": reader.records_read,
                "closed": footer is not None,
                "problems": len(self.problems) - problems_before + len(reader.problems)})

    def _segment_body(self, ref: SegmentRef, reader: SegmentReader, acc: dict[str, Any]
                      ) -> Iterator[list[dict[str, Any]]]:
        """One batch of selected events per block (fewer generator hops per event)."""
        dec = SegmentDecoder(reader.header, self.skip_event_type, self.prefilter)
        table = self.table
        resolve = table.fields
        since, until, where = self.since_ns, self.until_ns, self.where
        stats = self.stats
        progress = self.progress
        def add_process(d: dict[str, Any], path: Path = ref.path) -> None:
            self._add_process(d, path)
        undecodable = [0]
        for blk in reader.blocks():
            def on_error(i: int, exc: Exception, blk=blk) -> None:
                undecodable[0] += 1
                if undecodable[0] > 1:
                    return
                index, offset = blk.position(i)
                self._report(Problem(ref.path, f"undecodable record ({type(exc).__name__}: "
                                     f"{exc}): it depends on a damaged or missing record; "
                                     f"skipped", record=index, offset=offset))
            skipped, prefiltered = dec.skipped, dec.prefiltered
            items = dec.decode(blk.records, on_error, resolve, add_process, self._exit)
            stats["records"] += len(blk.records)
            n_read = dec.skipped - skipped + dec.prefiltered - prefiltered
            n_sel = 0
            batch: list[dict[str, Any]] = []
            keep = batch.append
            filtered = since is not None or until is not None or where is not None
            lo = hi = None
            for item in items:
                kind = item[0]
                if kind is IT_EVENT:
                    n_read += 1
                    ev = item[2]
                    if filtered:
                        t = ev.get("evt.time")
                        if since is not None or until is not None:
                            if t is None or (since is not None and t < since) or (
                                    until is not None and t > until):
                                continue
                        if where is not None and not where(ev):
                            continue
                    n_sel += 1
                    if lo is None:
                        lo = ev
                    hi = ev
                    keep(ev)
                elif kind is IT_ALERT and self.keep_alerts:
                    self.recorded_alerts.append(item[1])
                elif kind is IT_VERDICT:
                    if self.keep_alerts:
                        self.verdicts.append(item[1])
            stats["events_read"] += n_read
            stats["events_selected"] += n_sel
            stats["events_unwatched"] += dec.skipped - skipped
            stats["events_prefiltered"] += dec.prefiltered - prefiltered
            acc["events"] += n_read
            if batch:
                yield batch
            if self.keep_records:
                self.records.collect()  # the batch was shown: forget what the table forgot
            if lo is not None:
                self._span(lo.get("evt.time"), hi.get("evt.time"))
            if items:
                for item in reversed(items):  # forget processes gone long enough ago
                    if item[0] is IT_EVENT and isinstance(item[2].get("evt.time"), int):
                        table.evict(item[2]["evt.time"])
                        break
                for item in items:
                    if item[0] is IT_EVENT:
                        acc["lo"] = _min_time(acc["lo"], item[2].get("evt.time"))
                        break
                for item in reversed(items):
                    if item[0] is IT_EVENT:
                        acc["hi"] = _max_time(acc["hi"], item[2].get("evt.time"))
                        break
            if progress is not None:
                progress(-1, 0)  # heartbeat: lets a progress bar refresh mid-segment
        if dec.orphans:
            self._report(Problem(ref.path, f"{dec.orphans} event(s) refer to a process record "
                                 f"that was lost: replayed without their process fields"))
        if undecodable[0] > 1:
            self._report(Problem(ref.path, f"{undecodable[0] - 1} more undecodable record(s) "
                                 f"in this segment skipped (they depend on damaged or missing "
                                 f"records)"))
