"""What rules need to know about a pod and about the peer behind a remote address.

Frozen, slotted and stripped: a node holds a few hundred pods and a cluster tens of
thousands of endpoints, so only the facts rules read are kept. Built by `pods` and
`peers` from API objects; read on the hot path without locks.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PodMeta:
    """One pod on this node, as rules see it.

    ``workload_kind``/``workload_name`` name the controller a user thinks in: a Deployment
    (through its ReplicaSet, pod-template-hash stripped), StatefulSet, DaemonSet, Job,
    CronJob (through its Job), a bare ReplicaSet, or ``Pod``/the pod's name when nothing
    owns it. ``containers`` maps the 12-character container id to (name, image) from
    ``status.containerStatuses``. ``deleted`` is set on a pod kept only for late events.
    """

    uid: str
    name: str
    namespace: str
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    namespace_labels: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    workload_kind: str = "Pod"
    workload_name: str = ""
    replicaset: str | None = None
    service_account: str = ""
    ips: tuple[str, ...] = ()
    container_ports: frozenset[tuple[str, int]] = frozenset()
    node_name: str = ""
    containers: Mapping[str, tuple[str, str]] = field(default_factory=lambda: EMPTY)
    host_network: bool = False
    deleted: bool = False

    @property
    def deployment(self) -> str | None:
        """The Deployment's name when one owns the pod (Falco's ``k8s.deployment.name``)."""
        return self.workload_name if self.workload_kind == "Deployment" else None

    def declares_port(self, protocol: str, port: int) -> bool:
        """True when a container of the pod declares ``port`` (protocol "TCP"/"UDP"/"SCTP")."""
        return (protocol.upper(), port) in self.container_ports


@dataclass(frozen=True, slots=True)
class PeerMeta:
    """The Kubernetes identity behind a remote IP (and port).

    ``kind`` is ``"service"`` for a Service ClusterIP (what ``connect()`` sees before DNAT)
    ``"pod"`` for a pod address (an endpoint of a Service, or a pod on this node) and
    ``"endpoint"`` for an EndpointSlice address that is no pod (``name`` is the IP).
    ``svc_name``/``svc_namespace`` name the Service the address belongs to (the Service
    itself, or the one whose EndpointSlice lists the pod), else None. ``workload_*`` is
    known for pods on this node (from their owners), else None. ``ports`` are the
    Service's ports (service) or the EndpointSlice's ports (pod) as (protocol, port).
    """

    kind: str
    name: str
    namespace: str
    svc_name: str | None = None
    svc_namespace: str | None = None
    workload_kind: str | None = None
    workload_name: str | None = None
    ports: frozenset[tuple[str, int]] = field(default_factory=frozenset)
