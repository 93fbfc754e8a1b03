"""The side services of `netvigil run`: HTTP endpoint, local API socket, reloader.

A context manager: entering starts the HTTP endpoint (so probes answer while the BPF
programs compile) and registers the readiness conditions; `sensor_started()` marks the
programs attached; leaving stops every service.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from sensor.agent_parts import AgentParts
from sensor.config import AgentConfig
from sensor.endpoint_config import with_http_override
from sensor.reload import Reloader, ReloadSource

log = logging.getLogger(__name__)


class AgentServices:
    """Starts and stops the agent's side threads around the poll loop."""

    def __init__(self, parts: AgentParts, cfg: AgentConfig, args: argparse.Namespace,
                 reload_source: ReloadSource | None = None) -> None:
        self.parts = parts
        self.cfg = cfg
        self.args = args
        self.http_cfg = with_http_override(cfg.http, getattr(args, "http", None), getattr(args, "no_http", False))
        self.http: Any | None = None
        self.reloader: Reloader | None = None
        self.api: Any | None = None
        self._reload_source = reload_source
        self._rules_loaded = parts.ruleset is not None
        self._first_router = parts.router

    def __enter__(self) -> AgentServices:
        parts = self.parts
        parts.readiness.set("programs", False, "BPF programs not attached yet")
        if self._rules_loaded:
            parts.readiness.add("rules", self._rules_ready)
        else:
            parts.readiness.set("rules", True, "no rules (--no-rules)")
        if parts.k8s_watcher is not None:
            parts.readiness.add("kubernetes", self._k8s_ready)
        if self.http_cfg.enabled:
            from sensor.http_endpoint import HttpEndpoint  # noqa: PLC0415

            self.http = HttpEndpoint(parts, self.http_cfg.address, self.http_cfg.port)
            self.http.start()
        if self.cfg.api.enabled and not getattr(self.args, "no_api", False):
            from sensor.local_api import LocalApiServer  # noqa: PLC0415

            path = Path(getattr(self.args, "api_socket", None) or self.cfg.api.socket)
            self.api = LocalApiServer(parts, path, group=self.cfg.api.group,
                                      reader_queue=self.cfg.api.reader_queue)
            try:
                self.api.start()
            except BaseException:
                self.__exit__()
                raise
        if self._reload_source is not None:
            self.reloader = Reloader(parts, self._reload_source, self.cfg, watch=self.cfg.reload.watch,
                                     interval_s=self.cfg.reload.interval_s)
            self.reloader.start()
        return self

    def _rules_ready(self) -> tuple[bool, str]:
        ruleset = self.parts.ruleset
        if ruleset is None:
            return False, "no rule set loaded"
        return True, f"{len(ruleset.rules)} rules"

    def _k8s_ready(self) -> tuple[bool, str]:
        return self.parts.k8s_watcher.readiness()

    def sensor_started(self) -> None:
        """The BPF programs are loaded and attached."""
        self.parts.readiness.set("programs", True, "attached")

    def request_reload(self, _signum: int = 0, _frame: object = None) -> None:
        """SIGHUP: reload rules and sinks (on the reloader's thread)."""
        if self.reloader is not None:
            self.reloader.request()

    def __exit__(self, *_exc: object) -> None:
        if self.reloader is not None:
            self.reloader.stop()
            router = self.parts.router
            if router is not None and router is not self._first_router:
                router.stop(5.0)   # a reload's router; `run` stops the first one
        if self.api is not None:
            self.api.stop()
        if self.http is not None:
            self.http.stop()
