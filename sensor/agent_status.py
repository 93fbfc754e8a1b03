"""What `netvigil status` reports: one JSON-able snapshot of the running agent."""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from sensor.agent_parts import AgentParts
from sensor.procfs import process_usage


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def agent_status(parts: AgentParts) -> dict[str, Any]:
    """Health, CPU and memory, programs, rules, sinks, Kubernetes caches, losses, enforcement, readers, reloads."""
    checks = parts.readiness.check()
    out: dict[str, Any] = {
        "version": parts.version, "pid": os.getpid(), "config": parts.config_source,
        "uptime_s": round(time.time() - parts.started, 1),
        "healthy": parts.heartbeat.healthy(), "heartbeat_age_s": round(parts.heartbeat.age_s(), 3),
        "ready": bool(checks) and all(c.ok for c in checks),
        "readiness": [dataclasses.asdict(c) for c in checks],
    }
    usage = process_usage()
    out["resources"] = {"cpu_user_s": round(usage.cpu_user_s, 2), "cpu_system_s": round(usage.cpu_system_s, 2),
                        "rss_bytes": usage.rss_bytes, "threads": usage.threads}
    sensor = parts.sensor
    by_type, _ = parts.hub.counts()
    if sensor is not None:
        st = sensor.stats()
        program = sensor.program
        reader = getattr(program, "reader", None)
        attached = program is not None and not getattr(program, "closed", True)
        out["programs"] = {"attached": attached,
                           "ring_buffer_bytes": reader.size if reader is not None else 0,
                           "ring_buffer_pending": reader.pending_bytes() if reader is not None and attached else 0}
        out["events"] = {"total": st.events, "lost": st.lost, "decode_errors": st.decode_errors,
                         "repeats_folded": st.repeats_folded,
                         "by_type": {str(k): v for k, v in sorted(by_type.items(), key=lambda kv: str(kv[0]))}}
        out["processes"] = st.processes
    ruleset = parts.ruleset
    out["rules"] = None if ruleset is None else {
        "loaded": len(ruleset.rules), "enabled": sum(1 for r in ruleset.rules if r.enabled),
        "skipped": len(ruleset.skipped), "files": sorted({r.file for r in ruleset.rules if r.file})}
    router = parts.router
    out["alerts"] = {"raised": getattr(parts.pipeline, "alerts", 0),
                     "sinks": router.stats() if router is not None else {}}
    watcher = parts.k8s_watcher
    out["kubernetes"] = {"status": "not used (no API access configured)"} if watcher is None else \
        {**_plain(watcher.stats()), "synced": bool(watcher.synced())}
    if parts.enricher is not None:
        out["pod_metadata"] = _plain(parts.enricher.stats())
    enf = parts.enforcement
    if enf is None:
        out["enforcement"] = None
    else:
        stats = enf.stats()
        out["enforcement"] = {"entries": stats.get("entries", 0),
                              "entries_per_rule": stats.get("entries_per_rule", {}),
                              "kernel": stats.get("kernel", {})}
    hub = parts.hub
    readers = hub.readers
    out["api"] = {"readers": len(readers), "readers_total": hub.readers_total, "dropped": hub.dropped(),
                  "reader_queues": [{"name": r.name, "queued": len(r.queue), "capacity": r.capacity,
                                     "offered": r.offered, "dropped": r.dropped} for r in readers]}
    out["reload"] = dataclasses.asdict(parts.reload)
    return out
