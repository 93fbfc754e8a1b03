"""Joining processes and events with container, pod and peer identity.

Two halves, both cheap on the hot path:

- process side (`annotate`, called when the decoder or the /proc loader makes a process
  record): the container's runtime metadata (`sensor.k8s.runtime`) and, when the pod is
  known, its API metadata are written into the record's `meta`. They become part of the
  process's cached event fields, so an event pays nothing for them, and they are
  recorded with the process record (replay resolves them as live did). When pod
  metadata arrives or changes later (`tick`, from the poll loop) the records of that
  pod are updated and re-announced through `on_update`.
- event side, nothing per event unless there is something to add: the peer behind
  `fd.rip` (`peer_fields_of`, asked by the decoder only for a remote address it has not
  cached: `sensor.decoding.EventDecoder.peer_fields`; `tick` has it forget its caches
  when the peer index changes); the hold queue (`pending`, `hold`, the
  pipeline tests `pending` per event): an event from a pod the API cache does not know
  yet waits up to `hold_s` (released by `tick`, in order per pod, never on the hot
  thread), then goes on with what is known and is counted in
  `stats().events_without_pod_metadata`. `k8s.pod.lport_declared` is derived where
  read (`rules.fields`), from the record's `k8s.pod.ports` and the event's fd.lport.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sensor.container_identity import HOST
from sensor.k8s.runtime import RuntimeMetadata, split_image

if TYPE_CHECKING:
    from sensor.k8s.model import PeerMeta, PodMeta
    from sensor.process_table import ProcessRecord

log = logging.getLogger(__name__)

DEFAULT_HOLD_S = 1.0
_get = dict.get
WORKLOAD_FIELDS = {
    "Deployment": "k8s.deployment.name", "StatefulSet": "k8s.statefulset.name",
    "DaemonSet": "k8s.daemonset.name", "Job": "k8s.job.name", "CronJob": "k8s.cronjob.name",
    "ReplicaSet": "k8s.rs.name",
}
POD_KEYS = ("k8s.pod.labels", "k8s.pod.ip", "k8s.pod.ips", "k8s.ns.labels", "k8s.workload.kind",
            "k8s.workload.name", "k8s.sa.name", "k8s.pod.ports", "k8s.rs.name",
            *WORKLOAD_FIELDS.values())
"""Process-level fields that come from the API (replaced together on every update)."""
PEER_KEYS = ("k8s.peer.kind", "k8s.peer.name", "k8s.peer.ns.name", "k8s.peer.svc.name",
             "k8s.peer.svc.ns.name", "k8s.peer.pod.name", "k8s.peer.workload.kind",
             "k8s.peer.workload.name")


class PodSource(Protocol):
    """What the enricher reads from the pod cache (sensor.k8s.pods.PodCache)."""

    def by_uid(self, uid: str) -> PodMeta | None: ...
    def by_container(self, container_id: str) -> PodMeta | None: ...
    def subscribe(self, listener: Callable[[PodMeta | None, PodMeta | None], None]) -> None: ...


class PeerSource(Protocol):
    """What the enricher reads from the peer index (sensor.k8s.peers.PeerIndex)."""

    def lookup(self, ip: str, port: int | None = None) -> PeerMeta | None: ...


def pod_fields(pod: PodMeta) -> dict[str, Any]:
    """Event fields of a pod's API metadata (Falco's classic names, plus netvigil's
    k8s.workload.*, k8s.pod.ports and k8s.ns.labels)."""
    out: dict[str, Any] = {
        "k8s.pod.name": pod.name, "k8s.ns.name": pod.namespace, "k8s.pod.uid": pod.uid,
        "k8s.pod.labels": dict(pod.labels), "k8s.ns.labels": dict(pod.namespace_labels),
        "k8s.workload.kind": pod.workload_kind, "k8s.workload.name": pod.workload_name or pod.name,
        "k8s.sa.name": pod.service_account,
        "k8s.pod.ports": sorted({port for _proto, port in pod.container_ports}),
    }
    if pod.ips:
        out["k8s.pod.ip"] = pod.ips[0]
        out["k8s.pod.ips"] = list(pod.ips)
    owner_field = WORKLOAD_FIELDS.get(pod.workload_kind)
    if owner_field is not None:
        out[owner_field] = pod.workload_name
    if pod.replicaset:
        out["k8s.rs.name"] = pod.replicaset
    return out


def peer_fields(peer: PeerMeta) -> dict[str, Any]:
    """Event fields of the peer behind a remote address (netvigil extensions)."""
    out: dict[str, Any] = {"k8s.peer.kind": peer.kind, "k8s.peer.name": peer.name,
                           "k8s.peer.ns.name": peer.namespace}
    if peer.svc_name:
        out["k8s.peer.svc.name"] = peer.svc_name
        out["k8s.peer.svc.ns.name"] = peer.svc_namespace or peer.namespace
    if peer.kind == "pod":
        out["k8s.peer.pod.name"] = peer.name
    if peer.workload_name:
        out["k8s.peer.workload.kind"] = peer.workload_kind or ""
        out["k8s.peer.workload.name"] = peer.workload_name
    return out


@dataclass(frozen=True)
class EnricherStats:
    """Counters for `status`, metrics and the exit line."""

    containers: int
    pods_with_processes: int
    held_now: int
    events_held: int
    events_without_pod_metadata: int
    pod_updates_applied: int
    runtime_misses: int


class K8sEnricher:
    """Joins records and events with runtime, pod and peer metadata (see module docstring)."""

    def __init__(
        self,
        runtime: RuntimeMetadata | None = None,
        pods: PodSource | None = None,
        peers: PeerSource | None = None,
        *,
        hold_s: float = DEFAULT_HOLD_S,
        api_expected: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runtime = runtime
        self.pods = pods
        self.peers = peers
        self.on_peers_changed: Callable[[], None] | None = None
        """Called (poll thread) when the peer index changed (the decoder forgets what it
        cached about remote addresses)."""
        self._peer_generation = -1
        self.hold_s = hold_s
        self._api_expected = api_expected or (lambda: pods is not None)
        self._clock = clock
        self.on_update: Callable[[ProcessRecord], None] | None = None
        """Called on the poll thread with every record whose metadata changed."""
        self.records: Callable[[], Iterable[ProcessRecord]] | None = None
        """The process table's records (live and recently exited), for updates."""
        self.pod_listeners: list[Callable[[Mapping[str, Any], int], None]] = []
        """Called (poll thread) with a record's fields and cgroup id when a pod is first seen
        here or its metadata changed (the enforcement pod scopes listen)."""
        self.cgroup_exists: Callable[[int], bool] | None = None
        """cgroup id -> whether its directory still exists (the sensor's cgroup index)."""
        self.sweep_interval_s = 10.0
        self._next_sweep = clock() + self.sweep_interval_s
        self._seen: set[str] = set()                      # pod uids with processes here
        self._containers: dict[str, int] = {}             # container id -> cgroup id
        self._applied: dict[str, PodMeta | None] = {}      # pod uid -> PodMeta applied to its records
        self._pod_fields: dict[str, tuple[PodMeta, dict[str, Any]]] = {}
        self._peer_fields: dict[PeerMeta, dict[str, Any]] = {}
        self._changed: deque[str] = deque()
        self.pending: dict[str, float] = {}
        """Pod uids whose events are held, with their release deadline (read by the pipeline)."""
        self._held: dict[str, list[dict[str, Any]]] = {}
        self._given_up: set[str] = set()
        self._events_held = 0
        self._without_meta = 0
        self._updates = 0
        self._runtime_misses = 0
        if pods is not None:
            pods.subscribe(self._pod_changed)

    # ---------------------------------------------------------------- process side
    def _fields_of_pod(self, pod: PodMeta) -> dict[str, Any]:
        cached = self._pod_fields.get(pod.uid)
        if cached is not None and cached[0] is pod:
            return cached[1]
        fields = pod_fields(pod)
        self._pod_fields[pod.uid] = (pod, fields)
        return fields

    def annotate(self, record: ProcessRecord) -> None:
        """Add container and pod metadata to a new process record (in place)."""
        cid = record.container_id
        meta = record.meta
        if cid != HOST and cid:
            if cid not in self._containers:
                self._containers[cid] = record.cgroup_id
            runtime = self.runtime.lookup(cid) if self.runtime is not None else None
            if runtime is not None:
                meta.update(runtime.fields())
            else:
                self._runtime_misses += 1
        uid = meta.get("k8s.pod.uid")
        pod = None
        if self.pods is not None:
            if uid:
                pod = self.pods.by_uid(uid)
            if pod is None and cid != HOST:
                pod = self.pods.by_container(cid)
                if pod is not None:
                    uid = pod.uid
        if not uid:
            return
        first = uid not in self._seen
        if first:
            if len(self._seen) > 65536:
                self._seen.clear()
            self._seen.add(uid)
        if pod is not None:
            self._apply_pod(meta, pod, cid)
            self._applied.setdefault(uid, pod)
        if first and cid != HOST:
            self._tell(meta, record.cgroup_id)
        if (pod is None and self.pods is not None and uid not in self.pending
                and uid not in self._given_up and self._api_expected()):
            self.pending[uid] = self._clock() + self.hold_s

    def _apply_pod(self, meta: dict[str, Any], pod: PodMeta, cid: str) -> None:
        for key in POD_KEYS:
            meta.pop(key, None)
        meta.update(self._fields_of_pod(pod))
        known = pod.containers.get(cid) if cid != HOST else None
        if known is not None:   # the API names a container the runtime files did not
            name, image = known
            if name and "container.name" not in meta:
                meta["container.name"] = name
            if image and "container.image" not in meta:
                repo, tag = split_image(image)
                meta.update({"container.image": image, "container.image.repository": repo,
                             "container.image.tag": tag})

    def _pod_changed(self, _old: PodMeta | None, new: PodMeta | None) -> None:
        """PodCache listener (writer thread): note the uid, the poll thread applies it."""
        pod = new or _old
        if pod is not None and pod.uid in self._seen:
            self._changed.append(pod.uid)

    # ---------------------------------------------------------------- event side
    def hold(self, event: dict[str, Any]) -> bool:
        """Take an event into the hold queue when its pod is pending (the pipeline calls
        this only while `pending` is not empty); True when taken."""
        uid = _get(event, "k8s.pod.uid")   # dict's own get: events may be rules.event.Events
        if uid is not None and uid in self.pending:
            self._held.setdefault(uid, []).append(event)
            self._events_held += 1
            return True
        return False

    def peer_fields_of(self, rip: str, rport: int | None = None) -> dict[str, Any] | None:
        """The k8s.peer.* fields of the peer behind `rip` (and `rport`), or None (hot thread;
        the returned dict is shared: copy it into the event, do not change it)."""
        peer = self.peers.lookup(rip, rport) if self.peers is not None else None
        if peer is None:
            return None
        fields = self._peer_fields.get(peer)
        if fields is None:
            if len(self._peer_fields) > 65536:
                self._peer_fields.clear()
            fields = self._peer_fields[peer] = peer_fields(peer)
        return fields

    def tick(self, deliver: Callable[[dict[str, Any]], None]) -> int:
        """From the poll loop: apply pod updates, release held events whose pod arrived or
        whose wait is over (to `deliver`, the pipeline, in order). Returns how many."""
        self._apply_changes()
        generation = getattr(self.peers, "generation", 0)
        if generation != self._peer_generation:
            self._peer_generation = generation
            if self.on_peers_changed is not None:
                self.on_peers_changed()
        now = self._clock()
        if now >= self._next_sweep and self.cgroup_exists is not None:
            self._next_sweep = now + self.sweep_interval_s
            self.sweep(self.cgroup_exists)
        if not self.pending:
            return 0
        released = 0
        for uid, deadline in list(self.pending.items()):
            pod = self.pods.by_uid(uid) if self.pods is not None else None
            if pod is None and now < deadline:
                continue
            del self.pending[uid]
            if pod is not None:
                self._update_pods({uid: pod})
                fields = self._fields_of_pod(pod)
            else:
                self._given_up.add(uid)
                if len(self._given_up) > 65536:
                    self._given_up.clear()
                fields = None
            for event in self._held.pop(uid, ()):
                if fields is not None:
                    for key in POD_KEYS:
                        event.pop(key, None)
                    event.update(fields)
                else:
                    self._without_meta += 1
                deliver(event)   # through the pipeline again; no longer pending
                released += 1
        return released

    def flush(self, deliver: Callable[[dict[str, Any]], None]) -> int:
        """Release everything held now (shutdown)."""
        for uid in list(self.pending):
            self.pending[uid] = 0.0
        return self.tick(deliver)

    def _apply_changes(self) -> None:
        if not self._changed or self.pods is None:
            return
        changed: dict[str, PodMeta] = {}
        while self._changed:
            uid = self._changed.popleft()
            pod = self.pods.by_uid(uid)
            if pod is None:
                self._forget_pod(uid)   # evicted for good
            elif self._applied.get(uid) is not pod and uid not in self.pending:
                changed[uid] = pod
        if changed:
            self._update_pods(changed)

    def _update_pods(self, pods: Mapping[str, PodMeta]) -> None:
        """Write pods' (new) metadata into the records of their processes (one table pass)."""
        self._applied.update(pods)
        if self.records is None:
            return
        told: set[str] = set()
        for record in self.records():
            uid = record.meta.get("k8s.pod.uid")
            pod = pods.get(uid)  # type: ignore[arg-type]
            if pod is None:
                continue
            self._apply_pod(record.meta, pod, record.container_id)
            self._updates += 1
            if self.on_update is not None:
                self.on_update(record)
            if uid not in told and record.exit_ns is None and record.container_id != HOST:
                told.add(uid)
                self._tell(record.meta, record.cgroup_id)

    def _tell(self, fields: Mapping[str, Any], cgroup_id: int) -> None:
        for listener in self.pod_listeners:
            try:
                listener(fields, cgroup_id)
            except Exception:  # a listener's defect must not stop the sensor
                log.exception("pod listener failed")

    def _forget_pod(self, uid: str) -> None:
        self._seen.discard(uid)
        self._applied.pop(uid, None)
        self._pod_fields.pop(uid, None)
        self._given_up.discard(uid)

    def forget_container(self, container_id: str) -> None:
        """A container's cgroup went away: drop its cached runtime metadata."""
        self._containers.pop(container_id, None)
        if self.runtime is not None:
            self.runtime.forget(container_id)

    def sweep(self, cgroup_exists: Callable[[int], bool]) -> int:
        """Forget containers whose cgroup is gone; returns how many."""
        gone = [cid for cid, cgid in self._containers.items() if not cgroup_exists(cgid)]
        for cid in gone:
            self.forget_container(cid)
        return len(gone)

    def pod_uids(self) -> list[str]:
        """Pods with processes seen on this node."""
        return list(self._seen)

    def stats(self) -> EnricherStats:
        """Counters so far."""
        return EnricherStats(
            containers=len(self._containers), pods_with_processes=len(self._seen),
            held_now=sum(len(v) for v in self._held.values()), events_held=self._events_held,
            events_without_pod_metadata=self._without_meta, pod_updates_applied=self._updates,
            runtime_misses=self._runtime_misses)

