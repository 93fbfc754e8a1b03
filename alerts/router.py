"""AlertRouter: noise control, then fan-out to every sink whose route accepts the alert.

`submit()` is called from the sensor's hot path: it never waits on a sink (each sink has
its own worker thread and bounded queue, spilling to a disk spool).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from alerts.config import AlertsConfig, SinkConfig
from alerts.deadletter import DeadLetterFile
from alerts.errors import AlertsError
from alerts.model import Alert
from alerts.noise import NoiseController
from alerts.routing import RouteFilter
from alerts.secrets import Redactor
from alerts.sinks import Sink, build_sink
from alerts.spool import Spool
from alerts.worker import SinkWorker

log = logging.getLogger("alerts.router")
DEAD_LETTER_NAME = "dead-letter.jsonl"


class AlertRouter:
    """Routes alerts to the configured sinks with durable, at-least-once delivery."""

    def __init__(self, config: AlertsConfig, spool_dir: Path, *,
                 sinks: Mapping[str, Sink] | None = None,
                 clock: Callable[[], float] = time.monotonic, tick_s: float = 0.25) -> None:
        """`sinks` replaces the sinks built from the config, by name (tests, embedding)."""
        self.config = config
        self.spool_dir = Path(spool_dir)
        self.redactor = Redactor()
        self._clock = clock
        self._tick_s = tick_s
        self._noise = NoiseController(config.noise)
        self._workers: dict[str, SinkWorker] = {}
        self._filters: dict[str, RouteFilter] = {}
        self._filtered: dict[str, int] = {}
        self._stop_event = threading.Event()
        self._ticker: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self._lock = threading.Lock()
        for sc in config.sinks:
            if not sc.enabled:
                continue
            sink = (sinks or {}).get(sc.name) or build_sink(
                sc.name, sc.type, sc.settings, timeout_s=sc.delivery.timeout_s, redactor=self.redactor)
            self._add_worker(sc, sink)

    def _add_worker(self, sc: SinkConfig, sink: Sink) -> None:
        d = sc.delivery
        directory = self.spool_dir / sc.name
        spool = Spool(directory, segment_bytes=d.spool_segment_bytes, max_bytes=d.spool_max_bytes,
                      fsync=d.fsync, fsync_interval_s=d.fsync_interval_s)
        dead = DeadLetterFile(Path(sc.dead_letter_file) if sc.dead_letter_file
                              else directory / DEAD_LETTER_NAME, sc.name)
        self._workers[sc.name] = SinkWorker(sink, sc.type, d, spool, dead, redactor=self.redactor)
        self._filters[sc.name] = RouteFilter(sc.route)
        self._filtered[sc.name] = 0

    @property
    def sink_names(self) -> list[str]:
        """Names of the active (enabled) sinks, in config order."""
        return list(self._workers)

    def start(self) -> None:
        """Open every sink's spool and start the workers and the noise ticker."""
        if self._started:
            raise AlertsError("alert router already started")
        for worker in self._workers.values():
            worker.start()
        self._started = True
        self._ticker = threading.Thread(target=self._tick_loop, name="netvigil-alerts-ticker",
                                        daemon=True)
        self._ticker.start()

    def submit(self, alert: Alert) -> None:
        """Route one alert; never blocks on a sink."""
        for out in self._noise.process(alert, self._clock()):
            self._fan_out(out)

    def _fan_out(self, alert: Alert) -> None:
        for name, worker in self._workers.items():
            if self._filters[name].accepts(alert):
                worker.offer(alert)
            else:
                with self._lock:
                    self._filtered[name] += 1

    def _tick_loop(self) -> None:
        while not self._stop_event.wait(self._tick_s):
            for summary in self._noise.due(self._clock()):
                self._fan_out(summary)
            for worker in self._workers.values():
                worker.sync_spool()

    def stop(self, timeout: float = 5.0) -> None:
        """Flush noise summaries, let workers deliver what is queued until `timeout`, then
        persist everything left (in-memory queues included) to the spools."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_event.set()
        if self._ticker is not None:
            self._ticker.join()
        for summary in self._noise.flush_all(self._clock()):
            self._fan_out(summary)
        deadline = time.monotonic() + timeout
        for worker in self._workers.values():
            worker.request_stop()
        for worker in self._workers.values():
            if self._started:
                worker.finish(deadline)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per sink: delivered, failed, retries, spooled, dead_lettered, lost, queued,
        spool_pending, filtered, state, last_error."""
        out = {}
        for name, worker in self._workers.items():
            entry = worker.stats()
            with self._lock:
                entry["filtered"] = self._filtered[name]
            out[name] = entry
        return out

    def noise_stats(self) -> dict[str, int]:
        """Alerts received, aggregated, rate limited, and summaries emitted."""
        return self._noise.stats()

    def __enter__(self) -> AlertRouter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
