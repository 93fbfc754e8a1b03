"""The ``kubernetes:`` section of the netvigil config file.

```yaml
kubernetes:
  enabled: auto            # auto: use the API when credentials are found; true; false
  kubeconfig: null         # path; default: in-cluster service account, else $KUBECONFIG, ~/.kube/config
  context: null            # kubeconfig context (default: its current-context)
  node_name: null          # default: $NODE_NAME, then the hostname
  peers: true              # watch Services and EndpointSlices cluster-wide (k8s.peer.*)
  namespaces: true         # watch Namespaces for their labels (k8s.ns.label[...])
  page_size: 500           # list pagination (limit/continue)
  watch_timeout: 5m        # timeoutSeconds of one watch request (randomised up to 2x)
  backoff_initial: 0.5s    # reconnect backoff, doubled per failure, with jitter ...
  backoff_max: 30s         # ... up to this
  resync: 0                # periodic full relist, checked when a watch ends (0: only on 410 Gone)
  deleted_pod_retention: 5m   # deleted pods stay resolvable for late events this long ...
  deleted_pod_max: 512        # ... and at most this many
  pod_metadata_wait: 1s    # an event of a pod the API cache does not know yet waits this long (0: never)
  runtime_prefix: ""       # where the host's root is mounted (a DaemonSet: /host); prepended to both:
  containerd_root: /run/containerd         # io.containerd.runtime.v2.task/<ns>/<id>/config.json
  crio_root: /run/containers/storage       # overlay-containers/<id>/userdata/config.json
```
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sensor.errors import ConfigError
from rules.units import duration_in

KEYS = ("enabled", "kubeconfig", "context", "node_name", "peers", "namespaces", "page_size",
        "watch_timeout", "backoff_initial", "backoff_max", "resync", "deleted_pod_retention",
        "deleted_pod_max", "pod_metadata_wait", "runtime_prefix", "containerd_root", "crio_root")


@dataclass(frozen=True)
class K8sConfig:
    """Settings of the Kubernetes watches (see the module docstring for the YAML)."""

    enabled: str = "auto"  # auto | true | false
    kubeconfig: str | None = None
    context: str | None = None
    node_name: str | None = None
    peers: bool = True
    namespaces: bool = True
    page_size: int = 500
    watch_timeout_s: float = 300.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    resync_s: float = 0.0
    deleted_pod_retention_s: float = 300.0
    deleted_pod_max: int = 512
    pod_metadata_wait_s: float = 1.0
    runtime_prefix: str = ""
    containerd_root: str = "/run/containerd"
    crio_root: str = "/run/containers/storage"

    def runtime_roots(self) -> Any:
        """The runtimes' bundle roots (sensor.k8s.runtime.RuntimeRoots)."""
        from sensor.k8s.runtime import RuntimeRoots  # noqa: PLC0415

        return RuntimeRoots(self.containerd_root, self.crio_root, self.runtime_prefix)


def _path(value: Any, where: str, *, empty_ok: bool = False) -> str:
    if isinstance(value, str) and (value.startswith("/") or (empty_ok and value == "")):
        return value.rstrip("/") if value != "/" else value
    raise ConfigError(f"{where}: expected an absolute path, got {value!r}")


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _duration(value: Any, where: str, *, zero_ok: bool = False) -> float:
    if zero_ok and value in (0, "0"):
        return 0.0
    return duration_in(value, where, ConfigError)


def _optional_str(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str) and value:
        return value
    raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")


def parse_k8s_config(data: Mapping[str, Any] | None, source: str) -> K8sConfig:
    """Validate the ``kubernetes:`` section; errors name the file and key."""
    data = data or {}
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"{source}: kubernetes: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(KEYS)}")
    where = f"{source}: kubernetes."
    enabled = data.get("enabled", "auto")
    if isinstance(enabled, bool):
        enabled = "true" if enabled else "false"
    if enabled not in ("auto", "true", "false"):
        raise ConfigError(f"{where}enabled: expected auto, true or false, got {enabled!r}")
    d = K8sConfig()
    cfg = K8sConfig(
        enabled=enabled,
        kubeconfig=_optional_str(data.get("kubeconfig"), where + "kubeconfig"),
        context=_optional_str(data.get("context"), where + "context"),
        node_name=_optional_str(data.get("node_name"), where + "node_name"),
        peers=_bool(data.get("peers", d.peers), where + "peers"),
        namespaces=_bool(data.get("namespaces", d.namespaces), where + "namespaces"),
        page_size=_positive_int(data.get("page_size", d.page_size), where + "page_size"),
        watch_timeout_s=_duration(data.get("watch_timeout", d.watch_timeout_s), where + "watch_timeout"),
        backoff_initial_s=_duration(data.get("backoff_initial", d.backoff_initial_s), where + "backoff_initial"),
        backoff_max_s=_duration(data.get("backoff_max", d.backoff_max_s), where + "backoff_max"),
        resync_s=_duration(data.get("resync", d.resync_s), where + "resync", zero_ok=True),
        deleted_pod_retention_s=_duration(data.get("deleted_pod_retention", d.deleted_pod_retention_s),
                                          where + "deleted_pod_retention"),
        deleted_pod_max=_positive_int(data.get("deleted_pod_max", d.deleted_pod_max), where + "deleted_pod_max"),
        pod_metadata_wait_s=_duration(data.get("pod_metadata_wait", d.pod_metadata_wait_s),
                                      where + "pod_metadata_wait", zero_ok=True),
        runtime_prefix=_path(data.get("runtime_prefix", d.runtime_prefix), where + "runtime_prefix",
                             empty_ok=True),
        containerd_root=_path(data.get("containerd_root", d.containerd_root), where + "containerd_root"),
        crio_root=_path(data.get("crio_root", d.crio_root), where + "crio_root"),
    )
    if cfg.backoff_max_s < cfg.backoff_initial_s:
        raise ConfigError(f"{where}backoff_max: must be at least backoff_initial")
    return cfg
