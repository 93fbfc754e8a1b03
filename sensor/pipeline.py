"""The hot path after decoding: record, evaluate rules, hand alerts and enforcement on.

One thread runs it; nothing here blocks: the alert router queues alerts for its sinks,
the recorder buffers, and each match's enforcement request is offered to a bounded
queue whose worker talks to the enforcement manager (a full queue drops and counts).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from alerts import Alert
from rules.enforcement import EnforcementRequest

log = logging.getLogger(__name__)


class EventRecorder(Protocol):
    """What the pipeline needs from the recorder."""

    def event(self, event: Mapping[str, Any]) -> None: ...
    def alert(self, alert: Mapping[str, Any]) -> None: ...


class EnforcementIntake(Protocol):
    """Where enforcement requests go: a non-blocking offer (False = dropped, counted there)."""

    def offer(self, req: EnforcementRequest) -> bool: ...


class Pipeline:
    """Consumes enriched events: recorder, optional event printer, rules, alerts."""

    def __init__(
        self,
        *,
        hostname: str,
        ruleset: Any | None = None,
        router: Any | None = None,
        recorder: EventRecorder | None = None,
        on_event: Callable[[Mapping[str, Any]], None] | None = None,
        k8s: Any | None = None,
        enforcement: EnforcementIntake | None = None,
        on_alert: Callable[[Alert], None] | None = None,
    ) -> None:
        self.hostname = hostname
        self.ruleset = ruleset
        self.router = router
        self.recorder = recorder
        self.on_event = on_event
        self.enforcement = enforcement
        self.on_alert = on_alert
        """Sees every alert (the event hub: match counters, `observe --alerts`)."""
        self.k8s = k8s
        """sensor.k8s.enrich.K8sEnricher: the hold queue (peer fields come with the decoder's
        events: `Sensor.attach_enricher`)."""
        self.alerts = 0
        self.enforcement_requests = 0

    def __call__(self, event: dict[str, Any]) -> None:
        k8s = self.k8s
        if k8s is not None and k8s.pending and k8s.hold(event):
            return  # held until its pod's metadata arrives (released by tick())
        if self.recorder is not None:
            self.recorder.event(event)
        if self.on_event is not None:
            self.on_event(event)
        if self.ruleset is None:
            return
        for match in self.ruleset.evaluate(event):
            self.alerts += 1
            if self.router is not None or self.recorder is not None or self.on_alert is not None:
                alert = Alert.from_match(match, self.hostname)
                if self.on_alert is not None:
                    self.on_alert(alert)
                if self.recorder is not None:
                    self.recorder.alert(alert.to_dict())
                if self.router is not None:
                    self.router.submit(alert)
            if match.enforcement is not None:
                self.enforcement_requests += 1
                if self.enforcement is not None:
                    self.enforcement.offer(match.enforcement)

    def tick(self) -> int:
        """From the poll loop: release held events that may go on; returns how many."""
        return self.k8s.tick(self) if self.k8s is not None else 0

    def flush(self) -> int:
        """Release every held event now (before stopping)."""
        return self.k8s.flush(self) if self.k8s is not None else 0
