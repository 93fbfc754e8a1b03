"""`K8sWatcher`: the agent's Kubernetes side threads and what they feed.

Finds credentials (kubeconfig from the config, in-cluster service account, then
``$KUBECONFIG`` or ``~/.kube/config``), then runs one informer per resource: this node's
pods (``fieldSelector=spec.nodeName=<node>``), namespaces (labels), and cluster-wide
Services and EndpointSlices (peers). Without credentials, without the client, or when
RBAC denies a list, it logs once, says so in ``status``, and the agent runs on runtime
metadata alone. Readers use ``pods`` (`PodCache`) and ``peers`` (`PeerIndex`).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Hashable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from sensor.k8s.config import K8sConfig
from sensor.k8s.informer import Handler, Informer
from sensor.k8s.peers import PeerIndex
from sensor.k8s.pods import PodCache

log = logging.getLogger("netvigil.k8s")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class NoCredentialsError(Exception):
    """No way to reach the API server was found (the message says what was looked at)."""


class BadCredentialsError(NoCredentialsError):
    """Credentials were found but cannot be used (bad kubeconfig, unreadable token)."""


def resolve_node_name(config: K8sConfig, env: dict[str, str] | None = None) -> str:
    """``$NODE_NAME``, else the config's ``node_name``, else the hostname."""
    env = os.environ if env is None else env
    return env.get("NODE_NAME") or config.node_name or socket.gethostname()


def client_configuration(config: K8sConfig, env: dict[str, str] | None = None) -> tuple[Any, str]:
    """A `kubernetes.client.Configuration` and a sentence naming where it came from.

    Raises NoCredentialsError (nothing found, or the kubeconfig is unusable) and
    ImportError (no client installed).
    """
    from kubernetes import client, config as kconfig  # noqa: PLC0415
    from kubernetes.config.config_exception import ConfigException  # noqa: PLC0415

    env = os.environ if env is None else env
    conf = client.Configuration()
    kubeconfig = config.kubeconfig
    if kubeconfig is None:
        token = SERVICE_ACCOUNT_DIR / "token"
        if env.get("KUBERNETES_SERVICE_HOST") and token.exists():
            try:
                kconfig.load_incluster_config(client_configuration=conf)
            except ConfigException as exc:
                raise BadCredentialsError(f"in-cluster service account: {exc}") from None
            return conf, f"in-cluster service account ({SERVICE_ACCOUNT_DIR})"
        candidates = [p for p in (env.get("KUBECONFIG") or "").split(os.pathsep) if p]
        candidates.append(str(Path(env.get("HOME", "~")).expanduser() / ".kube" / "config"))
        kubeconfig = next((p for p in candidates if os.path.exists(p)), None)
        if kubeconfig is None:
            raise NoCredentialsError(
                "not in a cluster (no KUBERNETES_SERVICE_HOST and service-account token at "
                f"{token}) and no kubeconfig (kubernetes.kubeconfig unset, "
                f"KUBECONFIG={env.get('KUBECONFIG') or 'unset'}, {candidates[-1]} missing)")
    try:
        kconfig.load_kube_config(config_file=kubeconfig, context=config.context,
                                 client_configuration=conf, persist_config=False)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise BadCredentialsError(f"kubeconfig {kubeconfig}{where}: invalid YAML: "
                                  f"{getattr(exc, 'problem', exc)}") from None
    except (ConfigException, OSError, ValueError, TypeError, AttributeError) as exc:
        raise BadCredentialsError(f"kubeconfig {kubeconfig}: not a usable kubeconfig "
                                  f"({type(exc).__name__}: {exc})") from None
    return conf, f"kubeconfig {kubeconfig}"


class K8sWatcher:
    """Pods of this node, namespaces, Services and EndpointSlices, kept current."""

    def __init__(self, config: K8sConfig | None = None, env: dict[str, str] | None = None) -> None:
        self.config = config or K8sConfig()
        self._env = env
        self.node_name = resolve_node_name(self.config, env)
        self.pods = PodCache(deleted_max=self.config.deleted_pod_max,
                             deleted_age_s=self.config.deleted_pod_retention_s)
        self.peers = PeerIndex(self.pods)
        self.status = "not started"
        self.source: str | None = None
        self._informers: list[Informer] = []
        self._api_client: Any = None
        self._started_at = 0.0

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> bool:
        """Start the watch threads; False (and a logged reason in ``status``) without API access."""
        if self.config.enabled == "false":
            self.status = "disabled in the config (kubernetes.enabled: false): runtime metadata only"
            log.info("k8s: %s", self.status)
            return False
        try:
            conf, self.source = client_configuration(self.config, self._env)
            from kubernetes import client  # noqa: PLC0415
        except ImportError:
            return self._degraded("the kubernetes Python client is not installed")
        except NoCredentialsError as exc:
            return self._degraded(str(exc))
        conf.connection_pool_maxsize = 8  # one long watch per informer, plus lists
        self._api_client = client.ApiClient(conf)
        core, discovery = client.CoreV1Api(self._api_client), client.DiscoveryV1Api(self._api_client)
        self._informers = [self._informer("pods", core.list_pod_for_all_namespaces, Handler(
            upsert=self.pods.upsert, delete=self.pods.delete, prune=self.pods.prune,
            synced=self.pods.synced), field_selector=f"spec.nodeName={self.node_name}")]
        if self.config.namespaces:
            self._informers.append(self._informer("namespaces", core.list_namespace,
                                                  _namespace_handler(self.pods)))
        if self.config.peers:
            self._informers.append(self._informer("services", core.list_service_for_all_namespaces, Handler(
                upsert=self.peers.upsert_service, delete=self.peers.delete_service,
                prune=self.peers.prune_services, synced=self.peers.services_synced)))
            self._informers.append(self._informer(
                "endpointslices", discovery.list_endpoint_slice_for_all_namespaces, Handler(
                    upsert=self.peers.upsert_slice, delete=self.peers.delete_slice,
                    prune=self.peers.prune_slices, synced=self.peers.slices_synced)))
        self._started_at = time.monotonic()
        self.status = f"connecting to {conf.host} ({self.source}), node {self.node_name}"
        log.info("k8s: %s", self.status)
        for informer in self._informers:
            informer.start()
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every watch thread (each waited for up to ``timeout``)."""
        for informer in self._informers:
            informer.request_stop()
        for informer in self._informers:
            informer.stop(timeout)
        if self._api_client is not None:
            self._api_client.close()
            self._api_client = None

    # -- state -----------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """True when the watches run (they may still be connecting or retrying)."""
        return bool(self._informers)

    def api_expected(self) -> bool:
        """Pod metadata can be expected from the API: the pod watch runs and is not denied
        (events of an unknown pod are worth holding for it)."""
        pods = self._informers[0].stats.state if self._informers else "no API access"
        return not pods.startswith(("no API access", "stopped"))

    def synced(self) -> bool:
        """Every started informer has completed a full list."""
        return bool(self._informers) and all(i.handler.synced.is_set() for i in self._informers)

    def readiness(self) -> tuple[bool, str]:
        """(ready, why) for /readyz: ready once the caches synced, or at once when the API
        denies or lacks access (the agent then runs on runtime metadata alone and must not
        stay unready for it); not ready while a reachable API is still being listed."""
        if self.synced():
            return True, "caches synced"
        if not self.api_expected():
            return True, f"runtime metadata only ({self.status})"
        return False, "waiting for Kubernetes caches to sync"

    def wait_synced(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for `synced()` (tests, startup)."""
        deadline = time.monotonic() + timeout
        for informer in self._informers:
            if not informer.handler.synced.wait(max(0.0, deadline - time.monotonic())):
                return False
        return self.synced()

    def stats(self) -> dict[str, Any]:
        """Informer counters by resource, cache sizes, and the status sentence."""
        return {"status": self.status, "node": self.node_name, "source": self.source,
                "resources": {i.resource: asdict(i.stats) for i in self._informers},
                "pods": asdict(self.pods.stats()), "peers": asdict(self.peers.stats())}

    def _informer(self, resource: str, call: Any, handler: Handler,
                  field_selector: str | None = None) -> Informer:
        c = self.config
        return Informer(resource, call, handler, field_selector=field_selector,
                        page_size=c.page_size, watch_timeout_s=c.watch_timeout_s,
                        backoff_initial_s=c.backoff_initial_s, backoff_max_s=c.backoff_max_s,
                        resync_s=c.resync_s, on_state=self._state_changed)

    def _state_changed(self, _informer: Informer) -> None:
        states = {i.resource: i.stats.state for i in self._informers}
        denied = [s for s in states.values() if s.startswith("no API access")]
        if denied:
            self.status = denied[0] + ": runtime metadata only for what it covers"
        elif all(s in ("synced", "watching") for s in states.values()):
            self.status = (f"connected ({self.source}), node {self.node_name}: "
                           f"watching {', '.join(states)}")
        elif any(s.startswith("API") for s in states.values()):
            bad = next(f"{r}: {s}" for r, s in states.items() if s.startswith("API"))
            self.status = f"retrying ({bad})"

    def _degraded(self, why: str) -> bool:
        self.status = f"no API access: {why}: runtime metadata only"
        level = logging.WARNING if self.config.enabled == "true" else logging.INFO
        log.log(level, "k8s: %s", self.status)
        return False


def _namespace_handler(pods: PodCache) -> Handler:
    """Namespaces feed only their labels into the pod cache."""
    known: set[str] = set()

    def upsert(obj: dict[str, Any]) -> Hashable:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str):
            from sensor.k8s.pods import MalformedObjectError, object_name  # noqa: PLC0415

            raise MalformedObjectError(f"{object_name(obj, 'Namespace')}: namespace without metadata.name")
        known.add(name)
        pods.set_namespace_labels(name, meta.get("labels") if isinstance(meta.get("labels"), dict) else None)
        return name

    def delete(obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        known.discard(name)
        pods.set_namespace_labels(str(name), None)

    def prune(keep: set[Hashable]) -> int:
        gone = [n for n in known if n not in keep]
        for name in gone:
            known.discard(name)
            pods.set_namespace_labels(name, None)
        return len(gone)

    return Handler(upsert=upsert, delete=delete, prune=prune)
