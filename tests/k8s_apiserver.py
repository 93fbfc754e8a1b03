"""A Kubernetes API server on loopback that speaks list/watch as the real one does.

For tests and benches of the agent's informers with the real `kubernetes` client, and
judged faithful by kubectl (tests/test_k8s_apiserver.py). What it implements:

- discovery: ``/version``, ``/api``, ``/apis``, ``/api/v1``, ``/apis/discovery.k8s.io/v1``
  (legacy discovery: kubectl falls back to it when the aggregated form is not offered);
- Pods, Services, Namespaces (core/v1) and EndpointSlices (discovery.k8s.io/v1), all
  namespaces or one, and single objects;
- lists with ``metadata.resourceVersion``, ``limit``/``continue`` (a consistent snapshot
  per paginated list; a continue token older than the compaction point gets 410),
  ``fieldSelector`` (``metadata.name``, ``metadata.namespace``, ``spec.nodeName``,
  ``status.phase``... any dotted path, ``=``/``==``/``!=``), ``labelSelector``
  (``k=v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``);
- ``as=Table`` for kubectl's human output (NAME/AGE... columns) when asked;
- watches: chunked ``{"type","object"}`` lines from a resourceVersion, the initial ADDED
  burst when no RV is given, objects that stop matching a field selector sent as
  DELETED, ``allowWatchBookmarks`` BOOKMARK events (on a timer and on demand),
  ``timeoutSeconds``; an RV older than the compaction point gets an ERROR event with a
  410 Status (what the real server sends) or, if asked, an HTTP 410;
- bearer-token auth (401) and per-resource RBAC denial (403 Status as the real one says);
- plain HTTP, or HTTPS with a certificate for 127.0.0.1 (`tls=`, `self_signed_cert`) for
  clients that insist on it (the in-cluster service-account configuration);
- test hooks: create/update/delete objects, compact the history, send a bookmark,
  cut the next watch event mid-line, go down and come up on the same port.
"""
from __future__ import annotations

import base64
import copy
import json
import re
import socket
import ssl
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "netvigil-test-token"


@dataclass(frozen=True)
class Resource:
    """One API resource as discovery describes it."""

    plural: str
    kind: str
    group: str  # "" for core
    version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


RESOURCES = {r.plural: r for r in (
    Resource("pods", "Pod", "", "v1", True, ("po",)),
    Resource("services", "Service", "", "v1", True, ("svc",)),
    Resource("namespaces", "Namespace", "", "v1", False, ("ns",)),
    Resource("endpointslices", "EndpointSlice", "discovery.k8s.io", "v1", True),
)}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A metav1.Status as the API server writes it for failures."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and kubernetes.default.svc) and its key, made by openssl."""
    cert, key = directory / "apiserver.crt", directory / "apiserver.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=kube-apiserver", "-keyout", str(key), "-out", str(cert),
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:kubernetes.default.svc"],
                   check=True, capture_output=True)
    return cert, key


# -- selectors ---------------------------------------------------------------------------
def _path_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def field_matcher(selector: str | None):
    """A predicate for a fieldSelector (``a=b,c!=d``); raises ValueError when malformed."""
    terms = []
    for term in (selector or "").split(","):
        if not term:
            continue
        m = re.fullmatch(r"\s*([\w.]+)\s*(==|!=|=)\s*([^,]*)\s*", term)
        if not m:
            raise ValueError(f"invalid field selector term {term!r}")
        terms.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return lambda obj: all((_path_value(obj, p) == v) == eq for p, eq, v in terms)


def label_matcher(selector: str | None):
    """A predicate for a labelSelector; raises ValueError when malformed."""
    terms = []
    for term in re.findall(r"[^,()]+(?:\([^)]*\))?", selector or ""):
        term = term.strip()
        if not term:
            continue
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            values = {v.strip() for v in m.group(3).split(",")}
            terms.append(lambda lb, k=m.group(1), vs=values, inn=m.group(2) == "in":
                         (lb.get(k) in vs) == inn if inn else lb.get(k) not in vs)
        elif m := re.fullmatch(r"([\w./-]+)\s*(==|!=|=)\s*([\w./-]*)", term):
            terms.append(lambda lb, k=m.group(1), eq=m.group(2) != "!=", v=m.group(3): (lb.get(k) == v) == eq)
        elif m := re.fullmatch(r"!([\w./-]+)", term):
            terms.append(lambda lb, k=m.group(1): k not in lb)
        elif re.fullmatch(r"[\w./-]+", term):
            terms.append(lambda lb, k=term: k in lb)
        else:
            raise ValueError(f"invalid label selector term {term!r}")
    return lambda obj: all(t((obj.get("metadata") or {}).get("labels") or {}) for t in terms)


# -- object shapes (as the API server serves them) -----------------------------------------
def make_pod(name: str, namespace: str = "default", *, node: str = "node-1", ip: str | None = "10.244.1.10",
             labels: dict[str, str] | None = None, owner: tuple[str, str] | None = None,
             containers: list[dict[str, Any]] | None = None, container_ids: dict[str, str] | None = None,
             service_account: str = "default", phase: str = "Running", host_network: bool = False) -> dict[str, Any]:
    """A Pod as a kubelet-updated API object looks (spec, status, container statuses)."""
    containers = containers or [{"name": "app", "image": "nginx:1.27", "ports": [
        {"containerPort": 80, "protocol": "TCP"}]}]
    spec_containers = [{"name": c["name"], "image": c["image"], "ports": c.get("ports", []),
                        "resources": {}, "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}
                       for c in containers]
    for c in spec_containers:
        if not c["ports"]:
            del c["ports"]
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = dict(labels)
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "batch/v1" if owner[0] == "Job" else "apps/v1",
                                    "kind": owner[0], "name": owner[1], "uid": str(uuid.uuid4()),
                                    "controller": True, "blockOwnerDeletion": True}]
    statuses = []
    for c in containers:
        cid = (container_ids or {}).get(c["name"])
        st: dict[str, Any] = {"name": c["name"], "image": f"docker.io/library/{c['image']}",
                              "imageID": "", "ready": phase == "Running", "restartCount": 0,
                              "started": phase == "Running",
                              "state": {"running": {"startedAt": now_rfc3339()}} if phase == "Running"
                              else {"waiting": {"reason": "ContainerCreating"}}}
        if cid:
            st["containerID"] = f"containerd://{cid}"
        statuses.append(st)
    status: dict[str, Any] = {"phase": phase, "hostIP": "192.168.0.10", "hostIPs": [{"ip": "192.168.0.10"}],
                              "qosClass": "BestEffort", "startTime": now_rfc3339(),
                              "conditions": [{"type": "Ready", "status": "True" if phase == "Running" else "False",
                                              "lastProbeTime": None, "lastTransitionTime": now_rfc3339()}],
                              "containerStatuses": statuses}
    if ip:
        status["podIP"], status["podIPs"] = ip, [{"ip": ip}]
    spec: dict[str, Any] = {"containers": spec_containers, "nodeName": node, "restartPolicy": "Always",
                            "serviceAccountName": service_account, "serviceAccount": service_account,
                            "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                            "securityContext": {}, "terminationGracePeriodSeconds": 30,
                            "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority",
                            "priority": 0, "tolerations": []}
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def make_service(name: str, namespace: str = "default", *, cluster_ip: str | None = "10.96.0.10",
                 ports: list[tuple[str, int, int]] | None = None, selector: dict[str, str] | None = None,
                 cluster_ips: list[str] | None = None) -> dict[str, Any]:
    """A ClusterIP Service (``cluster_ip=None``: headless). Ports: (name, port, targetPort)."""
    ports = ports if ports is not None else [("http", 80, 8080)]
    ips = cluster_ips or ([cluster_ip] if cluster_ip else ["None"])
    spec: dict[str, Any] = {
        "clusterIP": ips[0], "clusterIPs": ips, "type": "ClusterIP", "sessionAffinity": "None",
        "ports": [{"name": n, "protocol": "TCP", "port": p, "targetPort": t} for n, p, t in ports],
        "ipFamilies": ["IPv6" if ":" in ip else "IPv4" for ip in ips if ip != "None"] or ["IPv4"],
        "ipFamilyPolicy": "PreferDualStack" if len(ips) > 1 else "SingleStack",
        "internalTrafficPolicy": "Cluster"}
    if selector:
        spec["selector"] = dict(selector)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": spec, "status": {"loadBalancer": {}}}


def make_endpointslice(name: str, namespace: str, service: str, endpoints: list[tuple[str, str | None]],
                       ports: list[tuple[str, int]] | None = None, node: str = "node-2") -> dict[str, Any]:
    """An EndpointSlice of ``service``: endpoints are (ip, pod name or None)."""
    eps = []
    for ip, pod in endpoints:
        ep: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": True, "serving": True,
                                                                "terminating": False}, "nodeName": node}
        if pod:
            ep["targetRef"] = {"kind": "Pod", "namespace": namespace, "name": pod, "uid": str(uuid.uuid4())}
        eps.append(ep)
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": namespace, "generateName": f"{service}-",
                         "labels": {"kubernetes.io/service-name": service,
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service,
                                              "uid": str(uuid.uuid4()), "controller": True,
                                              "blockOwnerDeletion": True}]},
            "endpoints": eps,
            "ports": [{"name": n, "protocol": "TCP", "port": p} for n, p in (ports or [("http", 8080)])]}


def make_namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Namespace (with the label the API server always sets)."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


# -- the server ----------------------------------------------------------------------------
@dataclass
class _Event:
    rv: int
    resource: str
    type: str
    obj: dict[str, Any]
    prev: dict[str, Any] | None


@dataclass
class Request:
    """One request the server saw (tests assert what the client asked for)."""

    method: str
    path: str
    query: dict[str, str]
    accept: str


@dataclass
class _Faults:
    forbidden: set[str] = field(default_factory=set)
    cut_next: dict[str, str] = field(default_factory=dict)  # resource -> "abort" | "clean"
    watch_gone_as_http: bool = False
    garbage_next: dict[str, bytes] = field(default_factory=dict)
    expire_next_continue: bool = False  # the next continue token is answered 410 (compacted meanwhile)


class FakeApiServer:
    """The server (see module docstring); ``with FakeApiServer() as api: ...``."""

    def __init__(self, port: int = 0, bookmark_interval_s: float = 60.0, token: str | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        self.tls = tls   # (certificate, key) files: serve HTTPS
        self._lock = threading.Condition()
        self._store: dict[str, dict[tuple[str, str], dict[str, Any]]] = {r: {} for r in RESOURCES}
        self._rv = 100
        self._log: list[_Event] = []
        self.compacted_rv = 0
        self._snapshots: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self.requests: list[Request] = []
        self.faults = _Faults()
        self.bookmark_interval_s = bookmark_interval_s
        self.token = token
        self._bookmark_seq = 0
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._sockets: set[socket.socket] = set()
        self._closed_generation = 0
        self.up()

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._port}"

    def up(self) -> None:
        """Listen (again, on the same port)."""
        if self._httpd is not None:
            return
        handler = type("Handler", (_Handler,), {"api": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", self._port), handler, bind_and_activate=False)
        httpd.allow_reuse_address = True
        httpd.daemon_threads = True
        httpd.server_bind()
        httpd.server_activate()
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*map(str, self.tls))
            # the handshake happens on the handler's thread, at its first read
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        self._port = httpd.server_address[1]
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         name="fake-apiserver", daemon=True).start()

    def down(self) -> None:
        """Stop listening and drop every open connection (the API server went away)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            self._closed_generation += 1
            for sock in list(self._sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._lock.notify_all()

    def close(self) -> None:
        self.down()

    def __enter__(self) -> FakeApiServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def kubeconfig(self, path: Path, token: str | None = None) -> Path:
        """Write a kubeconfig for this server (plain HTTP on loopback, bearer token)."""
        user: dict[str, Any] = {"token": token or self.token or "none"}
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "agent", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "agent"}}],
        }))
        return path

    # -- test mutations ----------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        return self._rv

    def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new object (server fills uid, resourceVersion, creationTimestamp)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if RESOURCES[resource].namespaced:
            meta.setdefault("namespace", "default")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_rfc3339())
        with self._lock:
            key = (meta.get("namespace", ""), meta["name"])
            if key in self._store[resource]:
                raise KeyError(f"{resource} {key} exists")
            return self._commit(resource, "ADDED", obj, None)

    def update(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace an existing object (keeps its uid and creationTimestamp)."""
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        with self._lock:
            key = (meta.get("namespace", "default") if RESOURCES[resource].namespaced else "", meta["name"])
            prev = self._store[resource][key]
            for k in ("uid", "creationTimestamp", "namespace"):
                if k in prev["metadata"]:
                    meta[k] = prev["metadata"][k]
            return self._commit(resource, "MODIFIED", obj, prev)

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._store[resource][(namespace, name)])

    def delete(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        """Delete an object (watchers get DELETED with its final state at a new RV)."""
        with self._lock:
            prev = self._store[resource][(namespace if RESOURCES[resource].namespaced else "", name)]
            return self._commit(resource, "DELETED", copy.deepcopy(prev), prev)

    def compact(self) -> int:
        """Forget the history up to now: older RVs and continue tokens get 410 Gone."""
        with self._lock:
            self.compacted_rv = self._rv
            self._log = [e for e in self._log if e.rv > self.compacted_rv]
            return self.compacted_rv

    def bookmark(self) -> None:
        """Send a BOOKMARK now to every watch that asked for bookmarks."""
        with self._lock:
            self._bookmark_seq += 1
            self._lock.notify_all()

    def cut_next_event(self, resource: str, mode: str = "abort") -> None:
        """The next event of a watch on ``resource`` is sent half, then the stream ends:
        ``abort`` drops the connection mid-chunk, ``clean`` ends the chunked body properly."""
        with self._lock:
            self.faults.cut_next[resource] = mode

    def send_garbage(self, resource: str, line: bytes) -> None:
        """Write ``line`` (then a newline) into the next watch stream of ``resource`` event."""
        with self._lock:
            self.faults.garbage_next[resource] = line
            self._lock.notify_all()

    def forbid(self, resource: str, forbidden: bool = True) -> None:
        """RBAC: deny list/watch of ``resource`` with a 403 Status."""
        (self.faults.forbidden.add if forbidden else self.faults.forbidden.discard)(resource)

    def requests_for(self, resource: str, watch: bool | None = None) -> list[Request]:
        """Requests that listed or watched ``resource``."""
        out = []
        for r in list(self.requests):
            if r.path.rstrip("/").endswith("/" + resource):
                if watch is None or (r.query.get("watch") in ("true", "1")) == watch:
                    out.append(r)
        return out

    def _commit(self, resource: str, etype: str, obj: dict[str, Any], prev: dict[str, Any] | None) -> dict[str, Any]:
        self._rv += 1
        res = RESOURCES[resource]
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = (obj["metadata"].get("namespace", "") if res.namespaced else "", obj["metadata"]["name"])
        if etype == "DELETED":
            del self._store[resource][key]
        else:
            self._store[resource][key] = obj
        self._log.append(_Event(self._rv, resource, etype, obj, prev))
        self._lock.notify_all()
        return copy.deepcopy(obj)

    # -- serving (called by the handler) ------------------------------------------------
    def list_objects(self, resource: str, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        res = RESOURCES[resource]
        match_f, match_l = field_matcher(query.get("fieldSelector")), label_matcher(query.get("labelSelector"))
        limit = int(query.get("limit") or 0)
        token = query.get("continue")
        with self._lock:
            if token:
                try:
                    decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                    rv, start, snap_id = int(decoded["rv"]), int(decoded["start"]), decoded["id"]
                except (ValueError, KeyError, TypeError):
                    raise _HttpError(400, "BadRequest", "continue key is not valid") from None
                if self.faults.expire_next_continue:
                    self.faults.expire_next_continue = False
                    self._snapshots.pop(snap_id, None)
                if rv <= self.compacted_rv or snap_id not in self._snapshots:
                    raise _HttpError(410, "Expired", "The provided continue parameter is too old to display "
                                     "a consistent list result. You can start a new list without the continue "
                                     "parameter.")
                items = self._snapshots[snap_id][1]
            else:
                rv, start, snap_id = self._rv, 0, uuid.uuid4().hex
                items = [copy.deepcopy(o) for k, o in sorted(self._store[resource].items())
                         if (namespace is None or k[0] == namespace) and match_f(o) and match_l(o)]
        page = items[start:start + limit] if limit else items[start:]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        rest = len(items) - start - len(page)
        if limit and rest > 0:
            with self._lock:
                self._snapshots[snap_id] = (rv, items)
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"v": "meta.k8s.io/v1", "rv": rv, "start": start + len(page), "id": snap_id}).encode()).decode()
            meta["remainingItemCount"] = rest
        else:
            with self._lock:
                self._snapshots.pop(snap_id, None)
        for item in page:  # list items are served without kind/apiVersion
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": page}

    def watch_events(self, handler: _Handler, resource: str, namespace: str | None, query: dict[str, str]) -> None:
        res = RESOURCES[resource]
        match_f, match_l = field_matcher(query.get("fieldSelector")), label_matcher(query.get("labelSelector"))
        matches = lambda o: o is not None and (namespace is None or o["metadata"].get("namespace") == namespace) \
            and match_f(o) and match_l(o)  # noqa: E731
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        rv_text = query.get("resourceVersion") or ""
        as_table = "as=Table" in handler.headers.get("Accept", "")
        with self._lock:
            generation = self._closed_generation
            if rv_text in ("", "0"):
                initial = [copy.deepcopy(o) for _k, o in sorted(self._store[resource].items()) if matches(o)]
                cursor_rv = self._rv
            else:
                initial, cursor_rv = [], int(rv_text)
                if cursor_rv < self.compacted_rv:
                    gone = status_body(410, "Expired", f"too old resource version: {cursor_rv} ({self.compacted_rv})")
                    if self.faults.watch_gone_as_http:
                        raise _HttpError(410, "Expired", gone["message"])
                    handler.start_stream()
                    handler.send_line({"type": "ERROR", "object": gone})
                    handler.end_stream()
                    return
            seen_bookmark = self._bookmark_seq
        handler.start_stream()
        for obj in initial:
            handler.send_line({"type": "ADDED", "object": self._render(obj, as_table, res)})
        last_bookmark = time.monotonic()
        while True:
            with self._lock:
                while True:
                    if self._closed_generation != generation:
                        handler.abort()
                        return
                    pending = [e for e in self._log if e.rv > cursor_rv and e.resource == resource]
                    garbage = self.faults.garbage_next.pop(resource, None)
                    now = time.monotonic()
                    want_bookmark = bookmarks and (self._bookmark_seq != seen_bookmark or
                                                   now - last_bookmark >= self.bookmark_interval_s)
                    if pending or garbage or want_bookmark or now >= deadline:
                        break
                    self._lock.wait(min(0.2, deadline - now))
                seen_bookmark = self._bookmark_seq
                cut = self.faults.cut_next.pop(resource, None) if pending else None
                if not pending:
                    cursor_rv = max(cursor_rv, self._rv)
            if garbage is not None:
                handler.send_raw(garbage + b"\n")
            for i, event in enumerate(pending):
                cursor_rv = event.rv
                now_m, was_m = matches(event.obj), matches(event.prev)
                if event.type == "DELETED":
                    etype = "DELETED" if was_m else None
                elif now_m:
                    etype = "ADDED" if event.type == "ADDED" or not was_m else "MODIFIED"
                else:
                    etype = "DELETED" if was_m else None  # stopped matching the selector
                if etype is None:
                    continue
                line = {"type": etype, "object": self._render(event.obj, as_table, res)}
                if cut and i == 0:
                    data = json.dumps(line).encode()
                    handler.send_raw(data[: len(data) // 2])
                    if cut == "abort":
                        handler.abort()
                    else:
                        handler.end_stream()
                    return
                handler.send_line(line)
            if want_bookmark:
                last_bookmark = time.monotonic()
                handler.send_line({"type": "BOOKMARK", "object": self._bookmark_object(res, cursor_rv)})
            if time.monotonic() >= deadline:
                handler.end_stream()
                return

    def _render(self, obj: dict[str, Any], as_table: bool, res: Resource) -> dict[str, Any]:
        return table_of(res, [obj]) if as_table else obj

    @staticmethod
    def _bookmark_object(res: Resource, rv: int) -> dict[str, Any]:
        obj: dict[str, Any] = {"kind": res.kind, "apiVersion": res.api_version,
                               "metadata": {"resourceVersion": str(rv), "creationTimestamp": None}}
        if res.plural == "pods":
            obj["spec"], obj["status"] = {"containers": None}, {}
        elif res.plural in ("services", "namespaces"):
            obj["spec"], obj["status"] = {}, {}
        elif res.plural == "endpointslices":
            obj["addressType"], obj["endpoints"] = "", None
        return obj


# -- Table output (kubectl's human-readable get) -------------------------------------------
def _age(obj: dict[str, Any]) -> str:
    ts = (obj.get("metadata") or {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    secs = max(0, int(time.time() - datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")
                      .replace(tzinfo=timezone.utc).timestamp()))
    return f"{secs}s" if secs < 120 else f"{secs // 60}m"


def _columns(res: Resource, obj: dict[str, Any]) -> list[Any]:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec") or {}, obj.get("status") or {}
    if res.plural == "pods":
        cs = status.get("containerStatuses") or []
        ready = sum(1 for c in cs if c.get("ready"))
        return [meta["name"], f"{ready}/{len(spec.get('containers') or [])}", status.get("phase", ""),
                sum(c.get("restartCount", 0) for c in cs), _age(obj), status.get("podIP", "<none>"),
                spec.get("nodeName", "<none>")]
    if res.plural == "services":
        ports = ",".join(f"{p['port']}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []) or "<none>"
        return [meta["name"], spec.get("type", ""), spec.get("clusterIP", ""), "<none>", ports, _age(obj)]
    if res.plural == "endpointslices":
        ports = ",".join(str(p.get("port")) for p in obj.get("ports") or []) or "<unset>"
        eps = ",".join(a for e in obj.get("endpoints") or [] for a in e.get("addresses", [])) or "<unset>"
        return [meta["name"], obj.get("addressType", ""), ports, eps, _age(obj)]
    return [meta["name"], status.get("phase", ""), _age(obj)]


_TABLE_COLUMNS = {
    "pods": ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"],
    "services": ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"],
    "endpointslices": ["Name", "AddressType", "Ports", "Endpoints", "Age"],
    "namespaces": ["Name", "Status", "Age"],
}


def table_of(res: Resource, objs: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of ``objs`` (the form kubectl asks for with as=Table)."""
    defs = [{"name": n, "type": "integer" if n == "Restarts" else "string", "format": "name" if n == "Name" else "",
             "description": n, "priority": 1 if n in ("IP", "Node") else 0} for n in _TABLE_COLUMNS[res.plural]]
    rows = [{"cells": _columns(res, o), "object": {"kind": "PartialObjectMetadata",
                                                   "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}}
            for o in objs]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta or {},
            "columnDefinitions": defs, "rows": rows}


# -- HTTP ----------------------------------------------------------------------------------
class _HttpError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


_ROUTE = re.compile(r"^(?P<prefix>/api/v1|/apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
                    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?/?$")


class _Handler(BaseHTTPRequestHandler):
    api: FakeApiServer
    protocol_version = "HTTP/1.1"
    server_version = "fake-kube-apiserver"

    def log_message(self, *_args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.api._lock:
            self.api._sockets.add(self.connection)

    def finish(self) -> None:
        with self.api._lock:
            self.api._sockets.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    # -- writing ------------------------------------------------------------------------
    def _json(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()

    def send_raw(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def send_line(self, event: dict[str, Any]) -> None:
        self.send_raw(json.dumps(event).encode() + b"\n")

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True

    def abort(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- routing ------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self.api.requests.append(Request("GET", url.path, query, self.headers.get("Accept", "")))
        try:
            self._route(url.path, query)
        except _HttpError as exc:
            self._json(exc.code, status_body(exc.code, exc.reason, exc.message, exc.details))
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _route(self, path: str, query: dict[str, str]) -> None:
        if path == "/version":
            return self._json(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.4",
                                    "platform": "linux/amd64", "goVersion": "go1.23.6",
                                    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                                    "compiler": "gc", "gitCommit": "fake"})
        if path in ("/healthz", "/livez", "/readyz"):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(data)
            return None
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if self.api.token and (scheme.lower() != "bearer" or token != self.api.token):   # scheme: any case
            raise _HttpError(401, "Unauthorized", "Unauthorized")
        if path == "/api":
            return self._json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.api.port}"}]})
        if path == "/apis":
            groups = sorted({r.group for r in RESOURCES.values() if r.group})
            return self._json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}} for g in groups]})
        for gv_prefix in {r.prefix for r in RESOURCES.values()}:
            if path.rstrip("/") == gv_prefix:
                return self._json(200, self._resource_list(gv_prefix))
        m = _ROUTE.match(path)
        res = RESOURCES.get(m.group("plural")) if m else None
        if m is None or res is None or res.prefix != m.group("prefix"):
            raise _HttpError(404, "NotFound", "the server could not find the requested resource")
        ns = m.group("ns")
        if ns is not None and not res.namespaced:
            raise _HttpError(404, "NotFound", "the server could not find the requested resource")
        if res.plural in self.api.faults.forbidden:
            scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
            verb = "watch" if query.get("watch") in ("true", "1") else "list" if not m.group("name") else "get"
            raise _HttpError(403, "Forbidden", f'{res.plural} is forbidden: User "system:serviceaccount:netvigil:'
                             f'netvigil" cannot {verb} resource "{res.plural}" in API group "{res.group}" {scope}',
                             {"kind": res.plural} | ({"group": res.group} if res.group else {}))
        try:
            if m.group("name"):
                return self._get_one(res, ns or "", m.group("name"))
            if query.get("watch") in ("true", "1"):
                return self.api.watch_events(self, res.plural, ns, query)
            body = self.api.list_objects(res.plural, ns, query)
        except ValueError as exc:
            raise _HttpError(400, "BadRequest", str(exc)) from None
        if "as=Table" in self.headers.get("Accept", ""):
            items = [dict(i, kind=res.kind, apiVersion=res.api_version) for i in body["items"]]
            body = table_of(res, items, body["metadata"])
            return self._json(200, body, "application/json;as=Table;v=v1;g=meta.k8s.io")
        return self._json(200, body)

    def _get_one(self, res: Resource, ns: str, name: str) -> None:
        with self.api._lock:
            obj = self.api._store[res.plural].get((ns if res.namespaced else "", name))
            obj = copy.deepcopy(obj) if obj else None
        if obj is None:
            raise _HttpError(404, "NotFound", f'{res.plural} "{name}" not found',
                             {"name": name, "kind": res.plural})
        if "as=Table" in self.headers.get("Accept", ""):
            return self._json(200, table_of(res, [obj]), "application/json;as=Table;v=v1;g=meta.k8s.io")
        return self._json(200, obj)

    @staticmethod
    def _resource_list(prefix: str) -> dict[str, Any]:
        resources = [r for r in RESOURCES.values() if r.prefix == prefix]
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": resources[0].api_version,
                "resources": [{"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                               "kind": r.kind, "verbs": VERBS, **({"shortNames": list(r.short_names)}
                                                                  if r.short_names else {})}
                              for r in resources]}
