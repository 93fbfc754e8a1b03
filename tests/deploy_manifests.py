"""The rendered deploy/ manifests (`kubectl kustomize`), for the manifest and DaemonSet tests."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def render(path: str) -> list[dict[str, Any]]:
    """`kubectl kustomize PATH` (relative to the checkout) as a list of objects."""
    assert shutil.which("kubectl"), "kubectl (with kustomize) is needed to render deploy/"
    out = subprocess.run(["kubectl", "kustomize", str(REPO / path)], check=True,
                         capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one object of `kind`."""
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def agent_container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The DaemonSet's agent container."""
    return by_kind(objs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
