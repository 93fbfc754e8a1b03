"""Reload rules and sinks without a restart: on SIGHUP, and when a watched file changes.

The watched files are the config file and every rules file (directories are walked).
A file is identified by its resolved path, inode, mtime and size, so a kubelet
ConfigMap update (the `..data` symlink swapped to a new timestamped directory) is a
change even when the new file's mtime is older. Checks poll every `reload.interval`
(no inotify dependency); SIGHUP only sets an event the reload thread waits on.

Loading happens on the reloader's thread; the hot path only sees the pipeline's
`ruleset` (and `router`) reference replaced. A config or rule set that does not load is
refused: the error (file:line) goes to the log, `netvigil_reload_failures_total` counts
it, and the running rules and sinks stay. Enforcement entries and the spools are not
touched. Sinks are rebuilt only when the `alerts:` section changed; the old router is
stopped (its queue goes to the spool) before the new one opens the same spools, and
alerts raised meanwhile wait in memory and are handed to the new router.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sensor.agent_parts import AgentParts

log = logging.getLogger(__name__)

RULE_SUFFIXES = (".yaml", ".yml")
#: Sections whose changes take effect only at the next start.
RESTART_SECTIONS = ("sensor", "record", "enforce", "kubernetes", "http", "api", "log")

FileState = tuple[str, int, int, int]


def file_states(paths: Iterable[str | Path]) -> frozenset[FileState]:
    """(resolved path, inode, mtime ns, size) of every file under paths (missing: left out)."""
    out: set[FileState] = set()
    for path in paths:
        p = Path(path)
        files = sorted(q for q in p.rglob("*") if q.suffix in RULE_SUFFIXES and not _hidden(q, p)) \
            if p.is_dir() else [p]
        for f in files:
            try:
                st = os.stat(f)
            except OSError:
                continue
            out.add((os.path.realpath(f), st.st_ino, st.st_mtime_ns, st.st_size))
    return frozenset(out)


def _hidden(path: Path, root: Path) -> bool:
    """Inside a ConfigMap's `..2026_...` / `..data` directories (reached via the visible links)."""
    return any(part.startswith("..") for part in path.relative_to(root).parts)


@dataclass
class ReloadSource:
    """How to load what a reload replaces (given by `netvigil run`)."""

    load_config: Callable[[], Any]                 # -> AgentConfig (raises a user error)
    load_ruleset: Callable[[Any], Any]             # AgentConfig -> RuleSet
    parse_alerts: Callable[[Any], Any]             # AgentConfig -> AlertsConfig (validates)
    build_router: Callable[[Any], Any]             # AlertsConfig -> a started AlertRouter
    watched_paths: Callable[[Any], list[str]]      # AgentConfig -> config file + rules paths
    user_errors: tuple[type[BaseException], ...] = (Exception,)


class _HeldAlerts:
    """Stands in for the router while sinks are swapped: holds alerts, then hands them on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[Any] = []
        self._target: Any | None = None

    def submit(self, alert: Any) -> None:
        with self._lock:
            if self._target is None:
                self._held.append(alert)
                return
        self._target.submit(alert)

    def hand_to(self, router: Any) -> None:
        with self._lock:
            for alert in self._held:
                router.submit(alert)
            self._held.clear()
            self._target = router

    def stats(self) -> dict[str, Any]:
        return {}

    def noise_stats(self) -> dict[str, int]:
        return {}


class Reloader:
    """The reload thread."""

    def __init__(self, parts: AgentParts, source: ReloadSource, config: Any, *, watch: bool,
                 interval_s: float) -> None:
        self.parts = parts
        self.source = source
        self.config = config
        self.watch = watch
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._states = file_states(source.watched_paths(config))
        self._alerts = source.parse_alerts(config)
        self._thread = threading.Thread(target=self._loop, name="netvigil-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        """Reload soon (safe from a signal handler: sets an event)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            asked = self._wake.wait(self.interval_s if self.watch else None)
            self._wake.clear()
            if self._stopped.is_set():
                return
            if asked:
                self.reload("SIGHUP")
            elif self.watch:
                states = file_states(self.source.watched_paths(self.config))
                if states != self._states:
                    self.reload("files changed")

    def reload(self, why: str) -> bool:
        """Load config, rules and sinks' settings; swap them in if all load. True when swapped."""
        with self._lock:
            stats = self.parts.reload
            stats.attempts += 1
            stats.last_time = time.time()
            self._states = file_states(self.source.watched_paths(self.config))
            try:
                cfg = self.source.load_config()
                self._states = file_states(self.source.watched_paths(cfg))
                ruleset = self.source.load_ruleset(cfg)
                alerts = self.source.parse_alerts(cfg)   # validated before anything is swapped
            except self.source.user_errors as exc:
                return self._refused(why, exc)
            self._warn_restart_only(cfg)
            new_sinks = cfg.alerts != self.config.alerts
            self.parts.pipeline.ruleset = ruleset
            if new_sinks:
                try:
                    self._swap_router(alerts)
                except self.source.user_errors as exc:
                    self.config = cfg
                    return self._refused(why, exc, "rules reloaded, sinks")
            self._alerts = alerts
            self.config = cfg
            stats.successes += 1
            stats.last_ok = True
            stats.last_error = None
            stats.last_success_time = time.time()
            log.info("reload (%s): %d rules%s", why, len(ruleset.rules), ", sinks rebuilt" if new_sinks else "")
            return True

    def _refused(self, why: str, exc: BaseException, what: str = "") -> bool:
        stats = self.parts.reload
        stats.failures += 1
        stats.last_ok = False
        stats.last_error = str(exc)
        log.error("reload (%s) refused, the running %s stay: %s", why, what or "rules and sinks", exc)
        return False

    def _swap_router(self, alerts: Any) -> None:
        pipeline = self.parts.pipeline
        old = pipeline.router
        holder = _HeldAlerts()
        pipeline.router = holder
        try:
            if old is not None:
                old.stop(5.0)   # what it still holds goes to its spools, which it releases
            router = self.source.build_router(alerts)
        except BaseException:
            # the old sinks are stopped: bring them back up from their settings
            router = self.source.build_router(self._alerts)
            holder.hand_to(router)
            pipeline.router = router
            raise
        holder.hand_to(router)
        pipeline.router = router

    def _warn_restart_only(self, cfg: Any) -> None:
        for name in RESTART_SECTIONS:
            if getattr(cfg, name, None) != getattr(self.config, name, None):
                log.warning("reload: the %s: section changed; it takes effect at the next restart", name)
