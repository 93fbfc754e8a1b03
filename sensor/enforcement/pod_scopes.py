"""Enforcement scopes `pod`, `workload` and `namespace`, resolved to the pods' cgroups.

A deny entry's scope is a cgroup id; the datapath matches the calling task's cgroup and
its ancestors, so an entry on a pod's cgroup (`<root>/kubepods/<qos>/pod<uid>`) covers
every container of the pod. A workload or namespace scope is the set of the pod cgroups
of its pods on this node *and of those that start later*: a request with such a scope
is remembered until it expires, and `PodScopes.started()` turns every new pod that
matches (seen by the pod watch or by its first process) into a request for that pod's
cgroup, with the time the original entry has left. Manual blocks of `netvigil enforce
block --workload/--namespace/--selector` are such groups too (`remember()`, fed from the
stored scope records by sensor.enforcement.scope_records).
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sensor import cgroups
from sensor.enforcement.errors import InvalidEntryError
from rules.enforcement import EnforcementRequest

log = logging.getLogger(__name__)

GROUP_SCOPES = ("workload", "namespace")
RETRY_S = 30.0
"""How long a new pod whose cgroup does not exist yet is looked for again."""


@dataclass(frozen=True)
class PodIdentity:
    """What a scope selects pods by."""

    uid: str
    namespace: str
    workload_kind: str = ""
    workload_name: str = ""
    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Selector:
    """The pods a scope names: a namespace, and optionally a workload (kind, name) or labels."""

    namespace: str
    workload_kind: str = ""
    workload_name: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    pod_name: str = ""

    def matches(self, pod: PodIdentity) -> bool:
        """True when the pod is one the selector names."""
        if self.namespace and pod.namespace != self.namespace:
            return False
        if self.pod_name and pod.name != self.pod_name:
            return False
        if self.workload_name and (pod.workload_name != self.workload_name
                                   or (self.workload_kind and pod.workload_kind != self.workload_kind)):
            return False
        return all(pod.labels.get(k) == v for k, v in self.labels)

    def describe(self) -> str:
        """`ns/Kind/name`, `ns`, `ns/pod`, or `ns{k=v,...}` for messages."""
        text = self.namespace or "*"
        if self.pod_name:
            text += "/" + self.pod_name
        if self.workload_name:
            text += f"/{self.workload_kind or '*'}/{self.workload_name}"
        if self.labels:
            text += "{" + ",".join(f"{k}={v}" for k, v in self.labels) + "}"
        return text


def selector_of(scope: str, event: Mapping[str, Any]) -> Selector:
    """The pods a matched event's `workload` or `namespace` scope names."""
    ns = event.get("k8s.ns.name")
    if not isinstance(ns, str) or not ns:
        raise InvalidEntryError(f"scope {scope}: the event has no k8s.ns.name (not a pod's event)")
    if scope == "namespace":
        return Selector(ns)
    name = event.get("k8s.workload.name")
    if not isinstance(name, str) or not name:
        raise InvalidEntryError("scope workload: the event has no k8s.workload.name "
                                "(pod metadata from the API server is needed)")
    kind = event.get("k8s.workload.kind")
    return Selector(ns, kind if isinstance(kind, str) else "", name)


_SYSTEMD_UID = re.compile(r"pod([0-9a-f_]{36})\.slice$")


def find_pod_cgroup(uid: str, mount: Path | None) -> Path | None:
    """The cgroup directory of a pod (kubelet's cgroupfs `pod<uid>` or systemd
    `kubepods-<qos>-pod<uid_>.slice`), searched under every `kubepods*` directory."""
    if mount is None:
        return None
    names = {f"pod{uid}", f"pod{uid.replace('-', '_')}"}
    for dirpath, dirs, _files in os.walk(mount):
        for d in dirs:
            if d in names or (d.endswith(".slice") and _SYSTEMD_UID.search(d)
                              and d.rsplit("pod", 1)[1][:-6].replace("_", "-") == uid):
                return Path(dirpath) / d
        # prune: below a pod directory there are only its containers
        dirs[:] = [d for d in dirs if "pod" not in d or "kubepods" in d]
    return None


@dataclass
class _Group:
    selector: Selector
    request: EnforcementRequest
    expires: float            # monotonic
    covered: set[str] = field(default_factory=set)   # pod uids with entries
    key: str = ""             # a stored record's key, or "rule:" and what the request names
    origin: int | None = None  # the entries' origin (None: the manager's default)


class PodScopes:
    """Pods on this node by identity, their cgroups, and the group scopes in force.

    `note()` is fed with every pod the agent learns of (pod watch, first process; any
    thread); `resolve()` is called by the manager while it submits (under its lock);
    `remember()`/`drop_group()` keep a stored manual block's group; `started()` is called
    from the enforcement agent's pod thread and returns the requests to submit (with their
    origin) for pods that started after their group's entry was made.
    """

    def __init__(self, mount: Path | None = None,
                 find_cgroup: Callable[[str, Path | None], Path | None] = find_pod_cgroup,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mount = mount if mount is not None else cgroups.find_mount()
        self._find = find_cgroup
        self._clock = clock
        self._pods: dict[str, PodIdentity] = {}
        self._cgroups: dict[str, Path] = {}
        self._new: dict[str, float] = {}      # uid -> give up looking for its cgroup at
        self._groups: list[_Group] = []
        self._lock = threading.Lock()
        self.wakeup = threading.Event()
        """Set when a pod is noted (the enforcement agent's pod thread waits on it)."""

    # ---------------------------------------------------------------- pods
    def note(self, pod: PodIdentity, cgroup: Path | None = None) -> None:
        """A pod exists (or changed); `cgroup` when already known (its first process)."""
        with self._lock:
            old = self._pods.get(pod.uid)
            if old is not None and old.workload_name and not pod.workload_name:
                pod = replace(pod, workload_kind=old.workload_kind, workload_name=old.workload_name,
                              labels=pod.labels or old.labels)   # runtime-only news: keep the API's
            self._pods[pod.uid] = pod
            if cgroup is not None:
                self._cgroups[pod.uid] = cgroup
            if old is None or old != pod or cgroup is not None:
                self._new.setdefault(pod.uid, self._clock() + RETRY_S)
                self.wakeup.set()

    def note_fields(self, fields: Mapping[str, Any], container_cgroup: Path | None = None) -> None:
        """A pod seen through one of its processes (record fields; the pod's cgroup is the
        parent of the container's)."""
        pod = identity_from_fields(fields)
        if pod is not None:
            self.note(pod, container_cgroup.parent if container_cgroup is not None else None)

    def forget(self, uid: str) -> None:
        """A pod is gone for good."""
        with self._lock:
            self._pods.pop(uid, None)
            self._cgroups.pop(uid, None)
            self._new.pop(uid, None)

    def pods(self, selector: Selector) -> list[PodIdentity]:
        """Known pods the selector names."""
        with self._lock:
            return [p for p in self._pods.values() if selector.matches(p)]

    def cgroup_of(self, uid: str) -> Path | None:
        """The pod's cgroup directory, found once and cached while it exists."""
        known = self._cgroups.get(uid)
        if known is not None and known.is_dir():
            return known
        found = self._find(uid, self.mount)
        if found is not None:
            self._cgroups[uid] = found
        return found

    # ---------------------------------------------------------------- scopes
    def resolve(self, req: EnforcementRequest, selector: Selector | None = None) -> list[int]:
        """Cgroup ids of the pods a workload/namespace request names now; the request is
        remembered so that pods of it starting later get the same entries."""
        if selector is None:
            if req.event is None:
                raise InvalidEntryError(f"rule {req.rule!r}: scope {req.scope} needs an event")
            selector = selector_of(req.scope, req.event)
        ids: list[int] = []
        key = "rule:" + repr((selector, req.rule, req.cidrs, req.ports, req.target))
        group = _Group(selector, req, self._clock() + req.ttl_s, key=key)
        for pod in self.pods(selector):
            path = self.cgroup_of(pod.uid)
            if path is None:
                continue
            try:
                ids.append(cgroups.cgroup_id(path))
            except cgroups.CgroupError:
                continue
            group.covered.add(pod.uid)
        with self._lock:
            self._groups = [g for g in self._groups if g.key != key and g.expires > self._clock()]
            self._groups.append(group)
        if not ids:
            log.info("enforcement: %s scope %s has no pod with a cgroup yet; pods that start "
                     "later are covered", req.scope, selector.describe())
        return ids

    def remember(self, key: str, selector: Selector, request: EnforcementRequest,
                 origin: int | None = None) -> None:
        """Keep a group under `key` (replacing one of that key) for `request.ttl_s` (inf:
        forever); the pods it names now are covered by the next `started()` too."""
        with self._lock:
            now = self._clock()
            self._groups = [g for g in self._groups if g.key != key and g.expires > now]
            self._groups.append(_Group(selector, request, now + request.ttl_s, key=key, origin=origin))
            for uid, pod in self._pods.items():
                if selector.matches(pod):
                    self._new.setdefault(uid, now + RETRY_S)
        self.wakeup.set()

    def drop_group(self, key: str) -> None:
        """Forget the group kept under `key` (its entries stay until removed or expired)."""
        with self._lock:
            self._groups = [g for g in self._groups if g.key != key]

    def started(self) -> list[tuple[EnforcementRequest, int | None]]:
        """(request, origin) for pods that appeared since their group's entry was made, and
        for the pods a newly remembered group names (pod thread)."""
        now = self._clock()
        with self._lock:
            self._groups = [g for g in self._groups if g.expires > now]
            if not self._groups or not self._new:
                if not self._groups:
                    self._new.clear()
                return []
            new = list(self._new.items())
            groups = list(self._groups)
        out: list[tuple[EnforcementRequest, int | None]] = []
        for uid, give_up in new:
            pod = self._pods.get(uid)
            wanted = [g for g in groups if pod is not None and uid not in g.covered
                      and g.selector.matches(pod)]
            if not wanted:
                with self._lock:
                    self._new.pop(uid, None)
                continue
            path = self.cgroup_of(uid)
            if path is None:
                if now >= give_up:
                    with self._lock:
                        self._new.pop(uid, None)
                continue
            for g in wanted:
                g.covered.add(uid)
                out.append((replace(g.request, cgroups=(str(path),), ttl_s=max(1.0, g.expires - now)),
                            g.origin))
            with self._lock:
                self._new.pop(uid, None)
        return out

    def groups(self) -> list[tuple[str, str, float]]:
        """(rule, selector, seconds left) of the group scopes in force."""
        now = self._clock()
        return [(g.request.rule, g.selector.describe(), g.expires - now) for g in self._groups
                if g.expires > now]


def identity_from_fields(fields: Mapping[str, Any]) -> PodIdentity | None:
    """A PodIdentity from event/record fields (k8s.pod.uid, k8s.ns.name, ...), if a pod's."""
    uid, ns = fields.get("k8s.pod.uid"), fields.get("k8s.ns.name")
    if not isinstance(uid, str) or not uid or not isinstance(ns, str) or not ns:
        return None
    labels = fields.get("k8s.pod.labels")
    return PodIdentity(uid, ns, str(fields.get("k8s.workload.kind") or ""),
                       str(fields.get("k8s.workload.name") or ""), str(fields.get("k8s.pod.name") or ""),
                       dict(labels) if isinstance(labels, Mapping) else {})


def identity_from_pod(pod: Any) -> PodIdentity:
    """A PodIdentity from a sensor.k8s.model.PodMeta."""
    return PodIdentity(pod.uid, pod.namespace, pod.workload_kind, pod.workload_name or pod.name,
                       pod.name, dict(pod.labels))


def notes_from(pods: Iterable[Any]) -> list[PodIdentity]:
    """PodIdentities of many PodMetas (a CLI's one-shot list)."""
    return [identity_from_pod(p) for p in pods]


def parse_selector(kind: str, text: str) -> Selector:
    """A CLI selector: `--pod NS/NAME`, `--workload NS/[KIND/]NAME`, `--namespace NS`,
    `--selector [NS/]KEY=VALUE[,KEY=VALUE]`. InvalidEntryError names the bad value."""
    if kind == "namespace":
        if not text or "/" in text:
            raise InvalidEntryError(f"--namespace {text!r}: a namespace name")
        return Selector(text)
    if kind == "pod":
        ns, _, name = text.partition("/")
        if not ns or not name or "/" in name:
            raise InvalidEntryError(f"--pod {text!r}: expected NAMESPACE/NAME")
        return Selector(ns, pod_name=name)
    if kind == "workload":
        parts = text.split("/")
        if len(parts) == 2 and all(parts):
            return Selector(parts[0], workload_name=parts[1])
        if len(parts) == 3 and all(parts):
            return Selector(parts[0], parts[1], parts[2])
        raise InvalidEntryError(f"--workload {text!r}: expected NAMESPACE/NAME or NAMESPACE/KIND/NAME")
    ns, _, labels = text.rpartition("/")
    pairs = []
    for item in labels.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise InvalidEntryError(f"--selector {text!r}: expected [NAMESPACE/]KEY=VALUE[,KEY=VALUE]")
        pairs.append((key.strip(), value.strip()))
    return Selector(ns, labels=tuple(pairs))


def pods_on_node(runtime_prefix: str = "", api: Callable[[], Iterable[Any]] | None = None) -> list[PodIdentity]:
    """Every pod on this node: from the runtimes' bundles (uid, name, namespace, CRI-O labels)
    and, when `api` gives them, the API server's PodMetas (workloads, labels)."""
    from sensor.k8s.runtime import RuntimeMetadata, RuntimeRoots  # noqa: PLC0415

    found: dict[str, PodIdentity] = {}
    for meta in RuntimeMetadata(RuntimeRoots(prefix=runtime_prefix)).all():
        if meta.pod_uid and meta.pod_namespace and meta.pod_uid not in found:
            found[meta.pod_uid] = PodIdentity(meta.pod_uid, meta.pod_namespace, "", "", meta.pod_name,
                                              dict(meta.labels))
    if api is not None:
        for pod in api():
            found[pod.uid] = identity_from_pod(pod)
    return list(found.values())


def feed(scopes: PodScopes, enricher: Any, pods: Any | None) -> None:
    """Keep `scopes` told of this node's pods: from the enricher (a pod's first process, any
    runtime) and from the pod cache (the API's view, incl. pods whose processes have not
    started yet)."""
    enricher.pod_listeners.append(lambda fields, _cgid: scopes.note_fields(fields))
    if pods is None:
        return

    def changed(old: Any, new: Any) -> None:
        if new is None:
            if old is not None:
                scopes.forget(old.uid)
        elif not new.deleted:
            scopes.note(identity_from_pod(new))
    pods.subscribe(changed)
    for pod in pods.pods():   # listed before we subscribed
        if not pod.deleted:
            scopes.note(identity_from_pod(pod))
