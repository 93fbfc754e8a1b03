"""Shared helpers of the Kubernetes API tests and bench: a watcher on a FakeApiServer."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from k8s_apiserver import FakeApiServer
from sensor.k8s.config import K8sConfig
from sensor.k8s.watcher import K8sWatcher

FAST = K8sConfig(node_name="node-1", backoff_initial_s=0.05, backoff_max_s=0.3, watch_timeout_s=30.0)


def eventually(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy; its value, or AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def watcher_for(api: FakeApiServer, tmp_path: Path, **overrides: Any) -> K8sWatcher:
    """A started watcher on ``api`` through a kubeconfig (node-1, fast backoff)."""
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    watcher = K8sWatcher(replace(FAST, kubeconfig=str(kubeconfig), **overrides), env={"HOME": "/nonexistent"})
    assert watcher.start(), watcher.status
    return watcher
