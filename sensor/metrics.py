"""Prometheus metrics of the agent, read from the components' own counters at scrape time.

Nothing on the hot path calls into prometheus-client: `AgentCollector.collect()` reads
`AgentParts` (event hub counters, sensor, router, enforcement, Kubernetes stats) when
/metrics is scraped. Each agent has its own `CollectorRegistry` (`build_registry`), so
nothing is global. Names follow Prometheus conventions: `netvigil_*`, counters end in
`_total`, sizes in bytes, times in seconds. docs/operations.md lists every metric.
"""
from __future__ import annotations

import dataclasses
import logging
import platform
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from sensor.agent_parts import AgentParts
from sensor.procfs import process_usage

log = logging.getLogger(__name__)

SINK_COUNTERS = ("delivered", "failed", "retries", "spooled", "dead_lettered", "lost", "filtered")
ENFORCEMENT_REQUESTS = ("submitted", "installed", "refreshed", "expired", "rejected_safety",
                        "rejected_cap", "rejected_full", "rejected_invalid", "errors")
K8S_COUNTERS = (("events", "k8s_watch_events_total", "Watch events received"),
                ("errors", "k8s_watch_errors_total", "List/watch errors"),
                ("relists", "k8s_relists_total", "Relists (after 410 Gone or a broken watch)"),
                ("lists", "k8s_lists_total", "List calls"),
                ("bookmarks", "k8s_watch_bookmarks_total", "Bookmark events received"))


def _as_dict(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value if isinstance(value, Mapping) else {}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class AgentCollector(Collector):
    """Yields every `netvigil_*` family from the live components."""

    def __init__(self, parts: AgentParts) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in (self._agent, self._events, self._rules, self._alerts, self._enforcement,
                     self._kubernetes, self._api, self._reload):
            try:
                yield from part()
            except Exception:  # noqa: BLE001 - one broken component must not hide the others
                log.exception("metrics: %s failed", part.__name__)

    # -- families ---------------------------------------------------------------------
    def _agent(self) -> Iterator[Metric]:
        p = self.parts
        info = InfoMetricFamily("netvigil_build", "Version of the running agent")
        info.add_metric([], {"version": p.version, "python": platform.python_version(),
                             "kernel": platform.release()})
        yield info
        yield GaugeMetricFamily("netvigil_start_time_seconds", "Agent start (Unix time)", value=p.started)
        yield GaugeMetricFamily("netvigil_heartbeat_age_seconds",
                                "Seconds since the poll loop last turned", value=p.heartbeat.age_s())
        yield GaugeMetricFamily("netvigil_ready", "1 when every readiness condition holds",
                                value=1.0 if p.readiness.ready() else 0.0)
        usage = process_usage()
        c = CounterMetricFamily("netvigil_agent_cpu_seconds_total", "CPU time of the agent process",
                                labels=["mode"])
        c.add_metric(["user"], usage.cpu_user_s)
        c.add_metric(["system"], usage.cpu_system_s)
        yield c
        yield GaugeMetricFamily("netvigil_agent_resident_memory_bytes", "RSS of the agent process",
                                value=usage.rss_bytes)
        yield GaugeMetricFamily("netvigil_agent_threads", "Threads of the agent process", value=usage.threads)

    def _events(self) -> Iterator[Metric]:
        by_type, _ = self.parts.hub.counts()
        c = CounterMetricFamily("netvigil_events_total", "Events through the pipeline, by evt.type",
                                labels=["type"])
        for etype, n in sorted(by_type.items(), key=lambda kv: str(kv[0])):
            c.add_metric([str(etype)], n)
        yield c
        sensor = self.parts.sensor
        if sensor is None:
            return
        st = sensor.stats()
        yield CounterMetricFamily("netvigil_events_lost_total",
                                  "Events the kernel could not put in the ring buffer", value=st.lost)
        yield CounterMetricFamily("netvigil_decode_errors_total", "Ring buffer records that did not decode",
                                  value=st.decode_errors)
        yield CounterMetricFamily("netvigil_events_folded_total", "Network events counted in the kernel "
                                  "instead of sent (sensor.fold_repeats), reported in summary events",
                                  value=st.repeats_folded)
        yield GaugeMetricFamily("netvigil_processes", "Live processes in the process table", value=st.processes)
        reader = getattr(sensor.program, "reader", None)
        if reader is not None and not getattr(sensor.program, "closed", False):
            pending, size = reader.pending_bytes(), reader.size
            yield GaugeMetricFamily("netvigil_ring_buffer_size_bytes", "Ring buffer data size", value=size)
            yield GaugeMetricFamily("netvigil_ring_buffer_pending_bytes",
                                    "Bytes written by the kernel, not yet read", value=pending)
            yield GaugeMetricFamily("netvigil_ring_buffer_fill_ratio", "pending / size",
                                    value=pending / size if size else 0.0)
        enricher = _as_dict(self.parts.enricher.stats()) if self.parts.enricher is not None else {}
        if "events_without_pod_metadata" in enricher:
            yield CounterMetricFamily("netvigil_events_without_pod_metadata_total",
                                      "Events of pod containers that went on without pod metadata",
                                      value=enricher["events_without_pod_metadata"])
        if "events_held" in enricher:
            yield CounterMetricFamily("netvigil_events_held_total",
                                      "Events held back until their pod's metadata arrived",
                                      value=enricher["events_held"])

    def _rules(self) -> Iterator[Metric]:
        _, matches = self.parts.hub.counts()
        c = CounterMetricFamily("netvigil_rule_matches_total", "Rule matches, by rule and priority",
                                labels=["rule", "priority"])
        for (rule, priority), n in sorted(matches.items()):
            c.add_metric([rule, priority], n)
        yield c
        ruleset = self.parts.ruleset
        if ruleset is not None:
            yield GaugeMetricFamily("netvigil_rules_loaded", "Rules in the running rule set",
                                    value=len(ruleset.rules))
            yield GaugeMetricFamily("netvigil_rules_skipped", "Rules skipped (unsupported fields)",
                                    value=len(ruleset.skipped))

    def _alerts(self) -> Iterator[Metric]:
        router = self.parts.router
        if router is None:
            return
        stats = router.stats()
        families = {k: CounterMetricFamily(f"netvigil_alerts_{k}_total", f"Alerts {k.replace('_', ' ')}, per sink",
                                           labels=["sink"]) for k in SINK_COUNTERS}
        queued = GaugeMetricFamily("netvigil_alerts_queued", "Alerts in a sink's memory queue", labels=["sink"])
        spool = GaugeMetricFamily("netvigil_alerts_spool_pending", "Alerts in a sink's disk spool", labels=["sink"])
        up = GaugeMetricFamily("netvigil_sink_up", "1 while a sink delivers, 0 while it fails", labels=["sink"])
        for sink, entry in sorted(stats.items()):
            for key, fam in families.items():
                fam.add_metric([sink], entry.get(key, 0) or 0)
            queued.add_metric([sink], entry.get("queued", 0) or 0)
            spool.add_metric([sink], entry.get("spool_pending", 0) or 0)
            up.add_metric([sink], 1.0 if entry.get("state") == "ok" else 0.0)
        yield from families.values()
        yield from (queued, spool, up)

    def _enforcement(self) -> Iterator[Metric]:
        enf = self.parts.enforcement
        if enf is None:
            return
        stats = enf.stats()
        kernel = stats.get("kernel", {})
        v = CounterMetricFamily("netvigil_enforcement_verdicts_total",
                                "Connections the datapath matched against a deny entry, by mode",
                                labels=["mode"])
        v.add_metric(["enforce"], kernel.get("denied", 0))
        v.add_metric(["audit"], kernel.get("audited", 0))
        yield v
        yield CounterMetricFamily("netvigil_enforcement_verdicts_lost_total",
                                  "Verdict events the kernel could not report", value=kernel.get("verdicts_lost", 0))
        yield CounterMetricFamily("netvigil_enforcement_safety_overrides_total",
                                  "Deny entries not applied because the safety list covers them",
                                  value=kernel.get("safety_overrides", 0))
        if "entries" in stats:
            entries = GaugeMetricFamily("netvigil_enforcement_entries", "Live deny entries, by rule",
                                        labels=["rule"])
            for rule, n in sorted(stats.get("entries_per_rule", {}).items()):
                entries.add_metric([rule], n)
            yield entries
            yield GaugeMetricFamily("netvigil_enforcement_live_entries", "Live deny entries (all rules)",
                                    value=stats["entries"])
            req = CounterMetricFamily("netvigil_enforcement_requests_total",
                                      "Enforcement requests, by outcome", labels=["outcome"])
            for key in ENFORCEMENT_REQUESTS:
                req.add_metric([key], stats.get(key, 0))
            yield req

    def _kubernetes(self) -> Iterator[Metric]:
        watcher = self.parts.k8s_watcher
        if watcher is None:
            return
        stats = _as_dict(watcher.stats())
        resources = stats.get("resources", {}) or {}
        for key, name, doc in K8S_COUNTERS:
            fam = CounterMetricFamily(f"netvigil_{name}", doc, labels=["resource"])
            for resource, entry in sorted(resources.items()):
                fam.add_metric([resource], _num(_as_dict(entry).get(key)) or 0)
            yield fam
        yield GaugeMetricFamily("netvigil_k8s_synced", "1 when every Kubernetes cache has synced",
                                value=1.0 if watcher.synced() else 0.0)
        cache = GaugeMetricFamily("netvigil_k8s_cache_objects", "Objects in the Kubernetes caches",
                                  labels=["cache"])
        for group in ("pods", "peers"):
            for key, value in sorted(_as_dict(stats.get(group)).items()):
                if _num(value) is not None:
                    cache.add_metric([f"{group}.{key}"], value)
        yield cache

    def _api(self) -> Iterator[Metric]:
        hub = self.parts.hub
        yield GaugeMetricFamily("netvigil_api_readers", "Readers connected to the local API",
                                value=len(hub.readers))
        yield CounterMetricFamily("netvigil_api_reader_dropped_total",
                                  "Items dropped because a reader's queue was full", value=hub.dropped())

    def _reload(self) -> Iterator[Metric]:
        r = self.parts.reload
        yield CounterMetricFamily("netvigil_reloads_total", "Reload attempts", value=r.attempts)
        yield CounterMetricFamily("netvigil_reload_failures_total",
                                  "Reloads refused (the running rules and sinks stayed)", value=r.failures)
        yield GaugeMetricFamily("netvigil_reload_last_success", "1 if the last reload succeeded",
                                value=1.0 if r.last_ok else 0.0)
        if r.last_success_time is not None:
            yield GaugeMetricFamily("netvigil_reload_last_success_timestamp_seconds",
                                    "Unix time of the last successful reload", value=r.last_success_time)


def build_registry(parts: AgentParts) -> CollectorRegistry:
    """A registry of this agent's metrics only (no process-global collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(parts))
    return registry
