"""The enforcement side of the agent: one object the run loop starts, feeds and stops."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from sensor import cgroups
from sensor.enforcement.config import EnforcementConfig
from sensor.enforcement.datapath import EnforcementDatapath, InstallReport
from sensor.enforcement.layout import PinLayout
from sensor.enforcement.manager import EnforcementManager, Request, ScopeResolver, SubmitResult
from sensor.enforcement.pod_scopes import PodScopes
from sensor.enforcement.request_queue import RequestQueue
from sensor.enforcement.scope_records import RecordSync

log = logging.getLogger(__name__)


class Enforcement:
    """Datapath + manager wired from an EnforcementConfig.

    Usage by the run loop::

        enf = Enforcement(cfg)
        enf.start(ruleset.static_enforcements(), known_rules=[...])
        enf.open_verdicts(handle_event)       # netvigil_verdict events
        ... enf.offer(match.enforcement); enf.poll(0) in the loop ...
        enf.stop()                            # enforcement stays in force (cfg.persist)
    """

    def __init__(self, config: EnforcementConfig) -> None:
        self.config = config
        self.datapath = EnforcementDatapath(PinLayout(config.pin_path))
        self.manager: EnforcementManager | None = None
        self.queue = RequestQueue(self.submit)
        self.pod_scopes = PodScopes()
        self._stop_pods = threading.Event()
        self._pod_thread: threading.Thread | None = None
        """Pods on this node, for the pod/workload/namespace scopes (fed by the k8s enrichment)."""
        self.records: RecordSync | None = None
        """The stored manual blocks of `netvigil enforce block --workload/...` (pod thread)."""

    def start(self, static_requests: Iterable[Request] = (),
              known_rules: Iterable[str] | None = None) -> InstallReport:
        """Load (or adopt) the programs, reconcile entries, start the TTL sweeper."""
        maps = self.datapath.load()
        cgroup = cgroups.resolve(self.config.cgroup) if self.config.cgroup else cgroups.mount()
        report = self.datapath.install(cgroup, self.config.interfaces)
        self.manager = EnforcementManager(maps, self.config.safety_list(),
                                          mode_override=self.config.mode,
                                          max_total=self.config.max_entries,
                                          resolver=ScopeResolver(pod_scopes=self.pod_scopes))
        summary = self.manager.reconcile(static_requests, known_rules)
        log.info("enforcement: attached=%d adopted=%d replaced=%d; entries %s",
                 len(report.attached), len(report.adopted), len(report.replaced), summary)
        self.manager.start_sweeper(self.config.sweep_interval_s)
        self.records = RecordSync(maps, self.pod_scopes)
        self.queue.start()
        self._stop_pods.clear()
        self._pod_thread = threading.Thread(target=self._cover_later_pods, daemon=True,
                                            name="netvigil-enforce-pods")
        self._pod_thread.start()
        return report

    def offer(self, req: Request) -> bool:
        """Queue a matched rule's request for the worker (never blocks; False when dropped)."""
        return self.queue.offer(req)

    def submit(self, req: Request) -> SubmitResult:
        """Install the entries of a matched rule now, on the calling thread."""
        if self.manager is None:
            raise RuntimeError("Enforcement.start() was not called")
        return self.manager.submit(req)

    def open_verdicts(self, callback: Callable[[dict], None]) -> None:
        """Deliver netvigil_verdict events to callback (during poll())."""
        self.datapath.open_verdicts(callback)

    def poll(self, timeout_ms: int = 0) -> None:
        """Consume pending verdicts."""
        self.datapath.poll(timeout_ms)

    def _cover_later_pods(self) -> None:
        """Thread: pods that start after a workload/namespace entry (a rule's, or a stored
        manual block's) get its entries."""
        while not self._stop_pods.is_set():
            if self.manager is None:
                self._stop_pods.wait(0.5)
                continue
            try:
                if self.records is not None:
                    self.records.poll()
                for req, origin in self.pod_scopes.started():
                    self.manager.submit(req, origin=origin)
            except Exception:  # a defect here must not end the thread
                log.exception("enforcement: covering a new pod failed")
            self.pod_scopes.wakeup.wait(0.5)
            self.pod_scopes.wakeup.clear()

    def stats(self) -> dict[str, Any]:
        """Manager stats (kernel counters, latency percentiles) and the request queue's."""
        base = self.manager.stats() if self.manager else {"kernel": self.datapath.counters()}
        return {**base, "queue": self.queue.stats()}

    def stop(self) -> None:
        """Stop the queue and the sweeper; keep enforcement in force unless config.persist is false."""
        self.queue.stop()
        self._stop_pod_thread()
        if self.manager is not None:
            self.manager.stop()
        if self.config.persist:
            self.datapath.close()
        else:
            self.datapath.cleanup()

    def _stop_pod_thread(self) -> None:
        self._stop_pods.set()
        self.pod_scopes.wakeup.set()
        if self._pod_thread is not None:
            self._pod_thread.join(timeout=5)
            self._pod_thread = None

    def cleanup(self) -> list[str]:
        """Remove every attachment and pin (`netvigil run --cleanup`)."""
        self.queue.stop()
        self._stop_pod_thread()
        if self.manager is not None:
            self.manager.stop()
        return self.datapath.cleanup()
