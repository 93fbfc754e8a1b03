"""This node's pods: API Pod objects stripped to `PodMeta`, indexed by uid, IP and container.

One writer at a time (the watcher's threads, serialised by a write lock), lock-free
readers: every index is a plain dict whose values are immutable `PodMeta`s, replaced
whole on change, so a hot-path lookup is one ``dict.get``. Deleted pods stay resolvable
(``deleted=True``) for late events, bounded by count and age.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from sensor.k8s.model import EMPTY, PodMeta

PodListener = Callable[[PodMeta | None, PodMeta | None], None]
TERMINAL_PHASES = ("Succeeded", "Failed")


class MalformedObjectError(ValueError):
    """An API object lacks a field its kind always has (the message names the object)."""


def object_name(obj: Any, kind: str = "object") -> str:
    """``Kind ns/name`` of an API object for messages, whatever shape it is in (list items
    come without ``kind``: ``kind`` names it then)."""
    if not isinstance(obj, dict):
        return f"<{type(obj).__name__}>"
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    kind = obj.get("kind") or kind
    ns = meta.get("namespace")
    return f"{kind} {ns + '/' if ns else ''}{meta.get('name', '<no name>')}"


def _labels(value: Any) -> Mapping[str, str]:
    if not value:
        return EMPTY
    if not isinstance(value, dict):
        raise TypeError("labels must be a mapping")
    return MappingProxyType({sys.intern(str(k)): sys.intern(str(v)) for k, v in value.items()})


def _container_id(raw: Any) -> str | None:
    """12-character id from ``containerd://<64 hex>`` (or cri-o://, docker://)."""
    if not raw or not isinstance(raw, str):
        return None
    return raw.rpartition("://")[2][:12] or None


def workload_of(name: str, labels: Mapping[str, str],
                owners: Any) -> tuple[str, str, str | None]:
    """(workload kind, workload name, replicaset name) from the controller owner reference.

    A ReplicaSet whose name ends in the pod's ``pod-template-hash`` belongs to the
    Deployment of the remaining name; a Job named ``<name>-<8+ digits>`` (the schedule
    minute CronJob appends) to that CronJob.
    """
    controller = None
    for ref in owners or ():
        if isinstance(ref, dict) and ref.get("controller"):
            controller = ref
            break
    if controller is None:
        return "Pod", name, None
    kind, owner = str(controller.get("kind", "")), str(controller.get("name", ""))
    if kind == "ReplicaSet":
        pth = labels.get("pod-template-hash")
        if pth and owner.endswith("-" + pth):
            return "Deployment", owner[: -len(pth) - 1], owner
        return "ReplicaSet", owner, owner
    if kind == "Job":
        base, _, suffix = owner.rpartition("-")
        if base and suffix.isdigit() and len(suffix) >= 8:
            return "CronJob", base, None
    return kind or "Pod", owner or name, None


def pod_meta(obj: dict[str, Any], namespace_labels: Mapping[str, str] = EMPTY) -> PodMeta:
    """Strip an API Pod (JSON as served) to what rules need. Raises MalformedObjectError."""
    try:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        status = obj.get("status") or {}
        uid, name, ns = meta["uid"], meta["name"], meta["namespace"]
        if not (isinstance(uid, str) and isinstance(name, str) and isinstance(ns, str)):
            raise TypeError("metadata uid/name/namespace must be strings")
        labels = _labels(meta.get("labels"))
        kind, workload, rs = workload_of(name, labels, meta.get("ownerReferences"))
        specs = [c for key in ("initContainers", "containers", "ephemeralContainers")
                 for c in spec.get(key) or ()]
        images = {c["name"]: c.get("image", "") for c in specs}
        ports = frozenset((sys.intern(str(p.get("protocol") or "TCP")), int(p["containerPort"]))
                          for c in specs for p in c.get("ports") or ())
        containers = {}
        for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
            for cs in status.get(key) or ():
                cid = _container_id(cs.get("containerID"))
                if cid:
                    cname = cs["name"]
                    containers[cid] = (cname, images.get(cname) or cs.get("image", ""))
        ips = tuple(str(p["ip"]) for p in status.get("podIPs") or () if p.get("ip"))
        if not ips and status.get("podIP"):
            ips = (str(status["podIP"]),)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedObjectError(f"{object_name(obj, 'Pod')}: malformed pod ({type(exc).__name__}: {exc})") from None
    return PodMeta(
        uid=uid, name=name, namespace=sys.intern(ns), labels=labels,
        namespace_labels=namespace_labels, workload_kind=sys.intern(kind),
        workload_name=sys.intern(workload), replicaset=rs,
        service_account=sys.intern(str(spec.get("serviceAccountName") or "default")),
        ips=ips, container_ports=ports, node_name=sys.intern(str(spec.get("nodeName") or "")),
        containers=MappingProxyType(containers) if containers else EMPTY,
        host_network=bool(spec.get("hostNetwork")))


def _terminal(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("phase") in TERMINAL_PHASES


@dataclass(frozen=True)
class PodCacheStats:
    """Counts for `status`/metrics."""

    pods: int
    deleted_kept: int
    ips: int
    containers: int
    updates: int
    deletes: int
    evicted: int
    synced: bool


class PodCache:
    """This node's pods by uid, IP and container id (see module docstring)."""

    def __init__(self, deleted_max: int = 512, deleted_age_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._by_uid: dict[str, PodMeta] = {}
        self._by_ip: dict[str, PodMeta] = {}
        self._by_container: dict[str, PodMeta] = {}
        self._routable: dict[str, bool] = {}  # uid -> its IPs belong to it (running, not hostNetwork)
        self._ns_labels: dict[str, Mapping[str, str]] = {}
        self._deleted: OrderedDict[str, float] = OrderedDict()
        self._deleted_max, self._deleted_age_s, self._clock = deleted_max, deleted_age_s, clock
        self._write = threading.Lock()
        self._listeners: list[PodListener] = []
        self.synced = threading.Event()
        self._updates = self._deletes = self._evicted = 0

    # -- hot-path reads (no locks) ---------------------------------------------------
    def by_uid(self, uid: str) -> PodMeta | None:
        """The pod with this uid (possibly ``deleted``), or None."""
        return self._by_uid.get(uid)

    def by_ip(self, ip: str) -> PodMeta | None:
        """The pod that has (or, deleted, last had) this IP; hostNetwork pods are not indexed."""
        return self._by_ip.get(ip)

    def by_container(self, container_id: str) -> PodMeta | None:
        """The pod whose ``containerStatuses`` list this 12-character container id."""
        return self._by_container.get(container_id)

    def pods(self) -> list[PodMeta]:
        """A snapshot of every known pod (live and deleted-but-kept)."""
        return list(self._by_uid.values())

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        """Labels of a namespace (empty when unknown)."""
        return self._ns_labels.get(namespace, EMPTY)

    # -- writer side -----------------------------------------------------------------
    def subscribe(self, listener: PodListener) -> None:
        """Call ``listener(old, new)`` on every change, from the writer thread (must not block).
        ``new`` is None when a pod is evicted for good; deletion gives ``new.deleted``."""
        self._listeners.append(listener)

    def upsert(self, obj: dict[str, Any]) -> str:
        """Add or replace a pod from its API object; returns its uid."""
        with self._write:
            new = pod_meta(obj)
            if new.namespace in self._ns_labels:
                new = replace(new, namespace_labels=self._ns_labels[new.namespace])
            uid = new.uid
            self._deleted.pop(uid, None)
            routable = not new.host_network and not _terminal(obj)
            self._put(new, routable)
            self._updates += 1
            self._expire_locked()
        return uid

    def delete(self, obj: dict[str, Any]) -> None:
        """Mark a pod deleted; it stays resolvable for a bounded time."""
        with self._write:
            uid = (obj.get("metadata") or {}).get("uid") if isinstance(obj, dict) else None
            if not isinstance(uid, str):
                raise MalformedObjectError(f"{object_name(obj, 'Pod')}: deleted pod without metadata.uid")
            self._mark_deleted(uid)
            self._expire_locked()

    def prune(self, keep: Iterable[str]) -> int:
        """After a full (re)list: mark deleted every live pod not in ``keep``; returns how many."""
        keep = set(keep)
        with self._write:
            gone = [uid for uid, pod in self._by_uid.items() if not pod.deleted and uid not in keep]
            for uid in gone:
                self._mark_deleted(uid)
            self._expire_locked()
        return len(gone)

    def set_namespace_labels(self, namespace: str, labels: Mapping[str, str] | None) -> None:
        """Namespace labels changed (None: namespace gone); its pods are rebuilt."""
        with self._write:
            value = _labels(dict(labels)) if labels else EMPTY
            if value == self._ns_labels.get(namespace, EMPTY):
                return
            if value:
                self._ns_labels[namespace] = value
            else:
                self._ns_labels.pop(namespace, None)
            for pod in [p for p in self._by_uid.values() if p.namespace == namespace]:
                self._put(replace(pod, namespace_labels=value), self._routable.get(pod.uid, False))

    def expire(self) -> None:
        """Forget deleted pods beyond the count or age bound."""
        with self._write:
            self._expire_locked()

    def stats(self) -> PodCacheStats:
        """Counts (cheap, lock-free)."""
        return PodCacheStats(pods=len(self._by_uid) - len(self._deleted), deleted_kept=len(self._deleted),
                             ips=len(self._by_ip), containers=len(self._by_container),
                             updates=self._updates, deletes=self._deletes, evicted=self._evicted,
                             synced=self.synced.is_set())

    # -- internals (write lock held) -------------------------------------------------
    def _put(self, new: PodMeta, routable: bool) -> None:
        old = self._by_uid.get(new.uid)
        self._by_uid[new.uid] = new
        self._routable[new.uid] = routable
        if old is not None:
            for cid in old.containers:
                if cid not in new.containers and self._by_container.get(cid) is old:
                    del self._by_container[cid]
            for ip in old.ips:
                if self._by_ip.get(ip) is old and (ip not in new.ips or not routable):
                    self._reassign_ip(ip, exclude=new.uid)
        for cid in new.containers:
            self._by_container[cid] = new
        if routable or new.deleted:
            for ip in new.ips:
                current = self._by_ip.get(ip)
                if routable or current is None or current is old:
                    self._by_ip[ip] = new
        for listener in self._listeners:
            listener(old, new)

    def _reassign_ip(self, ip: str, exclude: str) -> None:
        """``ip`` left its pod: give it to another live pod that has it, else drop it."""
        for uid, pod in self._by_uid.items():
            if uid != exclude and ip in pod.ips and self._routable.get(uid) and not pod.deleted:
                self._by_ip[ip] = pod
                return
        self._by_ip.pop(ip, None)

    def _mark_deleted(self, uid: str) -> None:
        pod = self._by_uid.get(uid)
        if pod is None or pod.deleted:
            return
        self._deleted[uid] = self._clock()
        self._deletes += 1
        # keeps its IP entries (late events) until a live pod claims the IP
        self._put(replace(pod, deleted=True), routable=False)

    def _expire_locked(self) -> None:
        horizon = self._clock() - self._deleted_age_s
        while self._deleted:
            uid, when = next(iter(self._deleted.items()))
            if len(self._deleted) <= self._deleted_max and when > horizon:
                break
            del self._deleted[uid]
            self._evict(uid)

    def _evict(self, uid: str) -> None:
        pod = self._by_uid.pop(uid, None)
        self._routable.pop(uid, None)
        if pod is None:
            return
        self._evicted += 1
        for ip in pod.ips:
            if self._by_ip.get(ip) is pod:
                self._reassign_ip(ip, exclude=uid)
        for cid in pod.containers:
            if self._by_container.get(cid) is pod:
                del self._by_container[cid]
        for listener in self._listeners:
            listener(pod, None)
