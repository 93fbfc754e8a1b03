"""Who is behind a remote address: Service IPs, EndpointSlice endpoints and this node's pods.

Built from a cluster-wide watch of Services and EndpointSlices plus the node's
`PodCache`. Writers (the watcher's threads) serialise on a write lock; `lookup()` is one
``dict.get`` on immutable `PeerMeta` values (an address listed by several Services
holds a tuple, and the port picks among them). Only names, namespaces and ports are
kept; strings are interned, one ports set is shared by every endpoint of a slice.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sensor.k8s.model import PeerMeta, PodMeta
from sensor.k8s.pods import MalformedObjectError, PodCache, object_name

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
Key = tuple[str, str]  # (namespace, name)
Peer = PeerMeta | tuple[PeerMeta, ...]


def _key(obj: Any, kind: str) -> Key:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) \
            or not isinstance(meta.get("namespace"), str):
        raise MalformedObjectError(f"{object_name(obj, kind)}: metadata.name/namespace missing")
    return sys.intern(meta["namespace"]), sys.intern(meta["name"])


def _ports(items: Any, *, service: bool) -> frozenset[tuple[str, int]]:
    out = set()
    for p in items or ():
        port = p.get("port")
        if port is None and not service:
            continue  # an EndpointSlice port without a number means "all ports"
        out.add((sys.intern(str(p.get("protocol") or "TCP")), int(port)))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class _Service:
    ips: tuple[str, ...]
    peer: PeerMeta


@dataclass(frozen=True, slots=True)
class _Slice:
    service: Key | None
    endpoints: dict[str, PeerMeta]  # ip -> the pod peer this slice says is behind it


@dataclass(frozen=True)
class PeerIndexStats:
    """Counts for `status`/metrics."""

    services: int
    service_ips: int
    slices: int
    endpoints: int
    addresses: int


class PeerIndex:
    """``lookup(ip, port)`` → `PeerMeta` (see module docstring)."""

    def __init__(self, pods: PodCache | None = None) -> None:
        self._by_ip: dict[str, Peer] = {}
        self._services: dict[Key, _Service] = {}
        self._service_ip: dict[str, Key] = {}
        self._slices: dict[Key, _Slice] = {}
        self._ip_slices: dict[str, Key | list[Key]] = {}
        self._pods = pods
        self._write = threading.RLock()
        self.generation = 0
        """Counts changes of the address -> peer map: readers that remember what is (or
        is not) behind an address (the decoder's caches) forget when it moves."""
        self.services_synced = threading.Event()
        self.slices_synced = threading.Event()
        if pods is not None:
            pods.subscribe(self._pod_changed)

    # -- hot path ----------------------------------------------------------------------
    def lookup(self, ip: str, port: int | None = None) -> PeerMeta | None:
        """The peer behind ``ip``; with several Services listing it, the one serving ``port``."""
        peer = self._by_ip.get(ip)
        if peer is None or type(peer) is PeerMeta:
            return peer
        if port is not None:
            for candidate in peer:
                for _proto, p in candidate.ports:
                    if p == port:
                        return candidate
        return peer[0]

    def has_peer(self) -> Callable[[str], object]:
        """A C-level ``ip -> entry or None`` probe of the index (the dict's own ``get``; the
        dict is updated in place, never replaced): the hot path probes with it and calls
        `lookup` only for addresses that have a peer."""
        return self._by_ip.get

    # -- Services ----------------------------------------------------------------------
    def upsert_service(self, obj: dict[str, Any]) -> Key:
        """Add or replace a Service (its ClusterIPs, external and load-balancer IPs)."""
        key = _key(obj, "Service")
        try:
            spec = obj.get("spec") or {}
            ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")])
                   if ip and ip != "None"]
            ips += [str(ip) for ip in spec.get("externalIPs") or ()]
            ips += [str(i["ip"]) for i in ((obj.get("status") or {}).get("loadBalancer") or {})
                    .get("ingress") or () if i.get("ip")]
            if spec.get("type") == "ExternalName":
                ips = []
            peer = PeerMeta(kind="service", name=key[1], namespace=key[0], svc_name=key[1],
                            svc_namespace=key[0], ports=_ports(spec.get("ports"), service=True))
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise MalformedObjectError(f"{object_name(obj, 'Service')}: malformed service ({exc})") from None
        with self._write:
            old = self._services.get(key)
            self._services[key] = _Service(tuple(dict.fromkeys(ips)), peer)
            for ip in self._services[key].ips:
                self._service_ip[ip] = key
            touched = set(self._services[key].ips)
            if old is not None:
                for ip in old.ips:
                    if ip not in touched and self._service_ip.get(ip) == key:
                        del self._service_ip[ip]
                touched.update(old.ips)
            self._refresh(touched)
        return key

    def delete_service(self, obj: dict[str, Any]) -> None:
        """Forget a Service."""
        key = _key(obj, "Service")
        with self._write:
            old = self._services.pop(key, None)
            if old is not None:
                for ip in old.ips:
                    if self._service_ip.get(ip) == key:
                        del self._service_ip[ip]
                self._refresh(old.ips)

    def prune_services(self, keep: Iterable[Key]) -> int:
        """After a full (re)list: forget Services not in ``keep``."""
        keep = set(keep)
        with self._write:
            gone = [k for k in self._services if k not in keep]
            for ns, name in gone:
                self.delete_service({"metadata": {"namespace": ns, "name": name}})
        return len(gone)

    # -- EndpointSlices ----------------------------------------------------------------
    def upsert_slice(self, obj: dict[str, Any]) -> Key:
        """Add or replace an EndpointSlice: its addresses become pods of its Service."""
        key = _key(obj, "EndpointSlice")
        try:
            labels = obj["metadata"].get("labels") or {}
            svc_name = labels.get(SERVICE_NAME_LABEL)
            service = (key[0], sys.intern(str(svc_name))) if svc_name else None
            ports = _ports(obj.get("ports"), service=False)
            endpoints: dict[str, PeerMeta] = {}
            if obj.get("addressType", "IPv4") in ("IPv4", "IPv6"):
                for ep in obj.get("endpoints") or ():
                    ref = ep.get("targetRef") or {}
                    is_pod = ref.get("kind") == "Pod" and ref.get("name")
                    for ip in ep.get("addresses") or ():
                        endpoints[str(ip)] = PeerMeta(
                            kind="pod" if is_pod else "endpoint",
                            name=sys.intern(str(ref["name"])) if is_pod else str(ip),
                            namespace=sys.intern(str(ref.get("namespace") or key[0])),
                            svc_name=service[1] if service else None,
                            svc_namespace=key[0] if service else None, ports=ports)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise MalformedObjectError(f"{object_name(obj, 'EndpointSlice')}: malformed endpointslice ({exc})") from None
        with self._write:
            old = self._slices.get(key)
            self._slices[key] = _Slice(service, endpoints)
            touched = set(endpoints)
            for ip in endpoints:
                self._link(ip, key)
            if old is not None:
                for ip in old.endpoints:
                    if ip not in endpoints:
                        self._unlink(ip, key)
                touched.update(old.endpoints)
            self._refresh(touched)
        return key

    def delete_slice(self, obj: dict[str, Any]) -> None:
        """Forget an EndpointSlice."""
        key = _key(obj, "EndpointSlice")
        with self._write:
            old = self._slices.pop(key, None)
            if old is not None:
                for ip in old.endpoints:
                    self._unlink(ip, key)
                self._refresh(old.endpoints)

    def prune_slices(self, keep: Iterable[Key]) -> int:
        """After a full (re)list: forget EndpointSlices not in ``keep``."""
        keep = set(keep)
        with self._write:
            gone = [k for k in self._slices if k not in keep]
            for ns, name in gone:
                self.delete_slice({"metadata": {"namespace": ns, "name": name}})
        return len(gone)

    def stats(self) -> PeerIndexStats:
        """Counts (lock-free, approximate while a writer runs)."""
        return PeerIndexStats(services=len(self._services), service_ips=len(self._service_ip),
                              slices=len(self._slices),
                              endpoints=sum(len(s.endpoints) for s in list(self._slices.values())),
                              addresses=len(self._by_ip))

    # -- internals (write lock held) ---------------------------------------------------
    def _link(self, ip: str, key: Key) -> None:
        cur = self._ip_slices.get(ip)
        if cur is None:
            self._ip_slices[ip] = key
        elif isinstance(cur, list):
            if key not in cur:
                cur.append(key)
        elif cur != key:
            self._ip_slices[ip] = [cur, key]

    def _unlink(self, ip: str, key: Key) -> None:
        cur = self._ip_slices.get(ip)
        if cur == key:
            del self._ip_slices[ip]
        elif isinstance(cur, list) and key in cur:
            cur.remove(key)
            if len(cur) == 1:
                self._ip_slices[ip] = cur[0]

    def _pod_changed(self, old: PodMeta | None, new: PodMeta | None) -> None:
        with self._write:
            self._refresh({*(old.ips if old else ()), *(new.ips if new else ())})

    def _refresh(self, ips: Iterable[str]) -> None:
        for ip in ips:
            peer = self._resolve(ip)
            if peer is None:
                if self._by_ip.pop(ip, None) is not None:
                    self.generation += 1
            elif self._by_ip.get(ip) != peer:
                self.generation += 1
                self._by_ip[ip] = peer

    def _resolve(self, ip: str) -> Peer | None:
        svc = self._service_ip.get(ip)
        if svc is not None:
            return self._services[svc].peer
        node_pod = self._pods.by_ip(ip) if self._pods is not None else None
        links = self._ip_slices.get(ip)
        if links is None:
            if node_pod is None:
                return None
            return PeerMeta(kind="pod", name=node_pod.name, namespace=node_pod.namespace,
                            workload_kind=node_pod.workload_kind, workload_name=node_pod.workload_name,
                            ports=node_pod.container_ports)
        peers = []
        for key in (links if isinstance(links, list) else (links,)):
            peer = self._slices[key].endpoints[ip]
            if node_pod is not None and node_pod.name == peer.name and node_pod.namespace == peer.namespace:
                peer = PeerMeta(kind="pod", name=peer.name, namespace=peer.namespace,
                                svc_name=peer.svc_name, svc_namespace=peer.svc_namespace,
                                workload_kind=node_pod.workload_kind,
                                workload_name=node_pod.workload_name, ports=peer.ports)
            peers.append(peer)
        return peers[0] if len(peers) == 1 else tuple(peers)
