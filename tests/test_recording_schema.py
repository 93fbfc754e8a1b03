"""The recorder stores what the decoder stored: each fact once, no derived field."""
from __future__ import annotations

from pathlib import Path

import pytest

from rules.event import Event, stored
from rules.fields import DERIVATIONS
from sensor.recording import Recorder
from sensor.recording import encoder as enc
from sensor.recording import format as fmt
from sensor.recording.decoder import IT_EVENT, SegmentDecoder
from sensor.recording.format import list_segments
from sensor.recording.reader import SegmentReader

ACCEPT = Event({"evt.type": "accept4", "evt.time": 10, "evt.num": 1, "evt.res": "SUCCESS",
                "fd.typechar": "4", "fd.l4proto": "tcp", "fd.lip": "10.0.0.5", "fd.lport": 8080,
                "fd.rip": "10.0.9.9", "fd.rport": 50000, "proc.pid": 7, "thread.tid": 7})


def segment_records(directory: Path) -> tuple[dict, list[list]]:
    reader = SegmentReader(list_segments(directory)[0][1])
    records = [r for blk in reader.blocks() for r in blk.records]
    assert reader.problems == []
    return reader.header, records


def test_events_are_recorded_as_stored_and_replay_whole(tmp_path: Path) -> None:
    with Recorder(tmp_path, host="n", boot_id="b", version="v") as rec:
        rec.event(ACCEPT)
    header, records = segment_records(tmp_path)
    names = {r[2] for r in records if r[0] == fmt.K_FIELD}
    # evt.time is delta-coded, thread.tid (= the pid) a shape flag
    assert names == set(stored(ACCEPT)) - {"evt.time", "thread.tid"}
    assert not names & set(DERIVATIONS)
    shapes = [r for r in records if r[0] == fmt.K_SHAPE]
    assert {s[4] & ~enc.D_TID_PID for s in shapes} == {0}  # nothing folded
    dec = SegmentDecoder(header)
    [(_, _, ev)] = [x for x in dec.decode(records, lambda i, e: pytest.fail(str(e)))
                    if x[0] == IT_EVENT]
    assert isinstance(ev, Event) and stored(ev) == stored(ACCEPT) and ev == ACCEPT
    assert (ev["fd.cip"], ev["fd.sport"], ev["fd.name"]) == \
        ("10.0.9.9", 8080, "10.0.9.9:50000->10.0.0.5:8080")


def test_segments_of_earlier_versions_with_folded_fields_still_read() -> None:
    """Before events stored each fact once, the encoder folded fd.name and the copies
    between the ends; such segments come back as they were recorded."""
    flags = enc.D_FDNAME
    for target, source, flag in enc.COPY_DERIVATIONS:
        if (target, source) in (("fd.lip", "fd.cip"), ("fd.lport", "fd.cport"),
                                ("fd.rip", "fd.sip"), ("fd.rport", "fd.sport")):
            flags |= flag
    names = ["evt.type", "fd.cip", "fd.cport", "fd.sip", "fd.sport"]
    records = [[fmt.K_FIELD, i, n, 0] for i, n in enumerate(names)]
    records.append([fmt.K_SHAPE, 0, [[i, fmt.C_RAW] for i in range(1, 5)], [[0, "connect"]],
                    flags, 0, 0])
    records.append([fmt.K_EVENT, 0, None, None, ["10.0.0.5", 41000, "1.2.3.4", 443], 0])
    [(_, _, ev)] = SegmentDecoder({}).decode(records, lambda i, e: pytest.fail(str(e)))
    assert stored(ev) == {"evt.type": "connect", "fd.cip": "10.0.0.5", "fd.cport": 41000,
                          "fd.sip": "1.2.3.4", "fd.sport": 443, "fd.name": "10.0.0.5:41000->1.2.3.4:443",
                          "fd.lip": "10.0.0.5", "fd.lport": 41000, "fd.rip": "1.2.3.4", "fd.rport": 443}
