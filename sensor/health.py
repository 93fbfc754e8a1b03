"""Liveness and readiness of the agent, as /healthz, /readyz and `netvigil status` report them.

The poll loop beats the `Heartbeat` once per turn (one float store); the agent is
healthy while the last beat is fresher than the timeout. `Readiness` holds named
conditions that components register (programs attached, rules loaded, Kubernetes
caches synced, ...); the agent is ready when every one holds.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: A readiness condition: True/False, or (ok, detail) to say why.
Condition = Callable[[], "bool | tuple[bool, str]"]


class Heartbeat:
    """The poll loop's last turn (monotonic seconds)."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self.last = clock()

    def beat(self) -> None:
        """Called by the poll loop every turn."""
        self.last = self._clock()

    def age_s(self) -> float:
        """Seconds since the last beat."""
        return self._clock() - self.last

    def healthy(self) -> bool:
        """The loop turned within the timeout."""
        return self.age_s() <= self.timeout_s


@dataclass(frozen=True)
class CheckResult:
    """One readiness condition's state."""

    name: str
    ok: bool
    detail: str = ""


class Readiness:
    """Named readiness conditions; thread-safe to register and to check."""

    def __init__(self) -> None:
        self._conditions: dict[str, Condition] = {}
        self._lock = threading.Lock()

    def add(self, name: str, condition: Condition) -> None:
        """Register (or replace) a condition."""
        with self._lock:
            self._conditions[name] = condition

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        """Register a fixed state (e.g. `programs` once they are attached)."""
        self.add(name, lambda: (ok, detail))

    def check(self) -> list[CheckResult]:
        """Every condition's state, in registration order (a raising condition is not ok)."""
        with self._lock:
            items = list(self._conditions.items())
        out = []
        for name, condition in items:
            try:
                value = condition()
            except Exception as exc:  # noqa: BLE001 - a broken check means not ready, never a crash
                out.append(CheckResult(name, False, f"check failed: {exc}"))
                continue
            ok, detail = value if isinstance(value, tuple) else (bool(value), "")
            out.append(CheckResult(name, bool(ok), detail))
        return out

    def ready(self) -> bool:
        """All conditions hold (and at least one is registered)."""
        results = self.check()
        return bool(results) and all(r.ok for r in results)
