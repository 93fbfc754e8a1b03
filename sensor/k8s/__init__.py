"""Kubernetes identity: pod metadata from this node's pods, peer identity from Services and
EndpointSlices, all from list+watch of the API server on side threads.

Optional at run time: importing this package (and ``model``, ``pods``, ``peers``,
``config``) never needs the ``kubernetes`` client; only ``informer`` and the watcher's
start do, and the watcher degrades to "no API access" when it is missing.
"""
from sensor.k8s.model import PeerMeta, PodMeta

__all__ = ["PeerMeta", "PodMeta"]
