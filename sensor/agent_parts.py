"""The running agent's components as its side threads see them (HTTP, local API, reload).

`netvigil run` fills one `AgentParts`; the metrics collector, /readyz, `status` and the
reloader read it. The rule set and the alert router are read through the pipeline,
because a reload swaps them there.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sensor import __version__
from sensor.event_hub import EventHub
from sensor.health import Heartbeat, Readiness


@dataclass
class ReloadStats:
    """Outcome of reloads so far (written by the reloader thread only)."""

    attempts: int = 0
    successes: int = 0
    failures: int = 0
    last_ok: bool = True
    last_time: float | None = None       # wall time of the last attempt
    last_success_time: float | None = None
    last_error: str | None = None


@dataclass
class AgentParts:
    """References to the live components (None where a component is not running)."""

    hub: EventHub
    heartbeat: Heartbeat
    readiness: Readiness = field(default_factory=Readiness)
    sensor: Any | None = None          # sensor.agent.Sensor
    pipeline: Any | None = None        # sensor.pipeline.Pipeline (ruleset, router)
    enforcement: Any | None = None     # sensor.enforcement.agent.Enforcement
    k8s_watcher: Any | None = None     # K8sWatcher: stats(), synced()
    enricher: Any | None = None        # K8sEnricher: stats().events_without_pod_metadata
    reload: ReloadStats = field(default_factory=ReloadStats)
    rule_sources: list[str] = field(default_factory=list)
    config_source: str = "<defaults>"
    version: str = __version__
    started: float = field(default_factory=time.time)
    extra_stats: dict[str, Callable[[], Any]] = field(default_factory=dict)

    @property
    def ruleset(self) -> Any | None:
        return getattr(self.pipeline, "ruleset", None)

    @property
    def router(self) -> Any | None:
        return getattr(self.pipeline, "router", None)
