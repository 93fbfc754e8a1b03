"""Container metadata from the container runtime's own files (no API call).

A CRI runtime writes a container's OCI bundle `config.json` before its first process
runs, and the kubelet's CRI annotations in it name the pod, its namespace and uid, the
container and its image:

- containerd: `<containerd root>/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`
  with `io.kubernetes.cri.{sandbox-name,sandbox-namespace,sandbox-uid,container-name,
  image-name,container-type,sandbox-id}`;
- CRI-O: `<storage root>/overlay-containers/<id>/userdata/config.json` with
  `io.kubernetes.pod.{name,namespace,uid}`, `io.kubernetes.container.name`,
  `io.kubernetes.cri-o.ImageName`, `io.kubernetes.cri-o.Labels`.

Events name a container by the first 12 characters of its id; bundles are named by the
full id. `RuntimeMetadata` keeps a listing of the bundle directories (short id -> bundle
file), refreshed when an id is missing from it (at most once per interval per id), and a
per-container cache of what was read; `forget()` drops a container whose cgroup is gone.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

CONTAINERD_ROOT = "/run/containerd"
CRIO_ROOT = "/run/containers/storage"
CONTAINERD_TASKS = "io.containerd.runtime.v2.task"
SHORT_ID = 12
_CRI = "io.kubernetes.cri."
_CRIO = "io.kubernetes.cri-o."


@dataclass(frozen=True)
class RuntimeRoots:
    """Where the runtimes keep their bundles; `prefix` is prepended to both (a DaemonSet
    mounts the host's /run under e.g. /host)."""

    containerd: str = CONTAINERD_ROOT
    crio: str = CRIO_ROOT
    prefix: str = ""

    def containerd_tasks(self) -> str:
        """The containerd v2 task directory (one subdirectory per containerd namespace)."""
        return _join(self.prefix, self.containerd, CONTAINERD_TASKS)

    def crio_containers(self) -> str:
        """CRI-O's per-container storage directory."""
        return _join(self.prefix, self.crio, "overlay-containers")


def _join(prefix: str, path: str, *rest: str) -> str:
    return os.path.join(prefix + path if prefix else path, *rest)


def split_image(image: str) -> tuple[str, str]:
    """`registry:5000/repo/name:tag@sha256:...` -> (repository, tag); tag "" when absent."""
    ref = image.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, ""


@dataclass(frozen=True)
class ContainerMeta:
    """What a bundle's annotations say about one container."""

    container_id: str
    runtime: str
    name: str = ""
    image: str = ""
    pod_name: str = ""
    pod_namespace: str = ""
    pod_uid: str = ""
    sandbox_id: str = ""
    container_type: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Pod labels the runtime knows (CRI-O's Labels annotation, kubelet's own keys removed)."""

    @property
    def is_sandbox(self) -> bool:
        """The pod's sandbox (pause) container rather than one of its app containers."""
        return self.container_type == "sandbox"

    def fields(self) -> dict[str, Any]:
        """The event fields this metadata sets (absent values are left out)."""
        repo, tag = split_image(self.image) if self.image else ("", "")
        out: dict[str, Any] = {
            "container.name": self.name, "container.image": self.image,
            "container.image.repository": repo, "container.image.tag": tag,
            "k8s.pod.name": self.pod_name, "k8s.ns.name": self.pod_namespace,
            "k8s.pod.uid": self.pod_uid,
        }
        out = {k: v for k, v in out.items() if v}
        if self.labels:
            out["k8s.pod.labels"] = dict(self.labels)
        return out


def _str(annotations: Mapping[str, Any], key: str) -> str:
    value = annotations.get(key)
    return value if isinstance(value, str) else ""


def meta_from_config(container_id: str, config: Mapping[str, Any]) -> ContainerMeta | None:
    """ContainerMeta from a parsed OCI config.json (None when it carries no CRI annotations)."""
    ann = config.get("annotations")
    if not isinstance(ann, Mapping):
        return None
    if _CRI + "container-type" in ann or _CRI + "sandbox-uid" in ann:
        return ContainerMeta(
            container_id, "containerd",
            name=_str(ann, _CRI + "container-name"), image=_str(ann, _CRI + "image-name"),
            pod_name=_str(ann, _CRI + "sandbox-name"),
            pod_namespace=_str(ann, _CRI + "sandbox-namespace"),
            pod_uid=_str(ann, _CRI + "sandbox-uid"), sandbox_id=_str(ann, _CRI + "sandbox-id"),
            container_type=_str(ann, _CRI + "container-type"))
    if "io.kubernetes.pod.uid" in ann or _CRIO + "ContainerType" in ann:
        labels: dict[str, str] = {}
        raw = ann.get(_CRIO + "Labels")
        if isinstance(raw, str) and raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = {}
            if isinstance(parsed, Mapping):
                labels = {str(k): str(v) for k, v in parsed.items()
                          if not str(k).startswith("io.kubernetes.")}
        return ContainerMeta(
            container_id, "cri-o",
            name=_str(ann, "io.kubernetes.container.name"),
            image=_str(ann, _CRIO + "ImageName") or _str(ann, _CRIO + "Image"),
            pod_name=_str(ann, "io.kubernetes.pod.name"),
            pod_namespace=_str(ann, "io.kubernetes.pod.namespace"),
            pod_uid=_str(ann, "io.kubernetes.pod.uid"),
            sandbox_id=_str(ann, _CRIO + "SandboxID"),
            container_type=_str(ann, _CRIO + "ContainerType"), labels=labels)
    return None


class RuntimeMetadata:
    """Container id (12 or 64 characters) -> ContainerMeta, from the runtimes' bundles.

    Lookups are dictionary hits once a container is known; a miss refreshes the bundle
    listing (a few `listdir` calls), at most once per `rescan_interval_s` per id.
    """

    def __init__(self, roots: RuntimeRoots | None = None, rescan_interval_s: float = 1.0) -> None:
        self.roots = roots or RuntimeRoots()
        self._interval = rescan_interval_s
        self._bundles: dict[str, tuple[str, str, str]] = {}   # short id -> (full id, runtime, config path)
        self._cache: dict[str, ContainerMeta | None] = {}
        self._missed: dict[str, float] = {}
        self.scans = 0
        self.read_errors = 0

    def _scan(self) -> None:
        """Refresh the short id -> bundle listing of both runtimes."""
        self.scans += 1
        bundles: dict[str, tuple[str, str, str]] = {}
        tasks = self.roots.containerd_tasks()
        for ns in _listdir(tasks):
            ns_dir = os.path.join(tasks, ns)
            for cid in _listdir(ns_dir):
                bundles[cid[:SHORT_ID]] = (cid, "containerd", os.path.join(ns_dir, cid, "config.json"))
        crio = self.roots.crio_containers()
        for cid in _listdir(crio):
            bundles.setdefault(cid[:SHORT_ID], (cid, "cri-o", os.path.join(crio, cid, "userdata", "config.json")))
        self._bundles = bundles

    def _bundle(self, short: str) -> tuple[str, str, str] | None:
        found = self._bundles.get(short)
        if found is None:
            now = time.monotonic()
            if now - self._missed.get(short, -self._interval) >= self._interval:
                if len(self._missed) > 4096:
                    self._missed.clear()
                self._missed[short] = now
                self._scan()
                found = self._bundles.get(short)
        return found

    def lookup(self, container_id: str) -> ContainerMeta | None:
        """Metadata of a container, or None when no runtime bundle names it (yet)."""
        short = container_id[:SHORT_ID]
        if short in self._cache:
            return self._cache[short]
        bundle = self._bundle(short)
        if bundle is None:
            return None
        full, _runtime, path = bundle
        meta = self._read(full, path)
        self._cache[short] = meta
        self._missed.pop(short, None)
        return meta

    def _read(self, full_id: str, path: str) -> ContainerMeta | None:
        try:
            with open(path, encoding="utf-8") as fh:
                config = json.load(fh)
        except (OSError, ValueError) as exc:
            self.read_errors += 1
            log.debug("cannot read runtime bundle %s: %s", path, exc)
            return None
        if not isinstance(config, Mapping):
            self.read_errors += 1
            return None
        meta = meta_from_config(full_id, config)
        if meta is not None and not meta.labels and meta.sandbox_id and meta.sandbox_id != full_id:
            sandbox = self.lookup(meta.sandbox_id)   # CRI-O keeps the pod's labels on the sandbox
            if sandbox is not None and sandbox.labels:
                meta = ContainerMeta(**{**meta.__dict__, "labels": sandbox.labels})
        return meta

    def forget(self, container_id: str) -> None:
        """Drop what is cached for a container (its cgroup went away)."""
        short = container_id[:SHORT_ID]
        self._cache.pop(short, None)
        self._bundles.pop(short, None)
        self._missed.pop(short, None)

    def all(self) -> list[ContainerMeta]:
        """Metadata of every container the runtimes have a bundle for (rescans now)."""
        self._scan()
        found = (self.lookup(short) for short in list(self._bundles))
        return [m for m in found if m is not None]

    def cached(self) -> list[str]:
        """Short ids of the containers whose metadata is cached."""
        return list(self._cache)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
