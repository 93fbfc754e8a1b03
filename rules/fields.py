"""The field table: every event field, its type, the event types that set it, how a
derived field is computed from the stored ones, and its doc line.

Types: ``str``, ``int``, ``bool``, ``list``, ``dict``, ``ip`` (an address in text form),
``port`` (an int). ``ip`` fields with ``cidr=True`` (fd.net, fd.snet, ...) compare the
address with CIDRs.

A field is *stored* (the sensor writes it into the event), or *derived*, in one of three
ways: ``derive`` computes its value from stored fields where it is read (fd.sip, fd.cport,
fd.name: the decoder stores each end of a connection once, as fd.lip/fd.lport and
fd.rip/fd.rport); ``any_of`` makes it match when any of those fields matches (fd.ip,
fd.net; rules only); ``key_of`` looks ``FIELD[KEY]`` up in a dict field. A mapping that
stores a derived field itself (a hand-written test event) keeps its value. Adding a field
is adding one entry to ``FIELDS``. The rule checker, output rendering, `netvigil rules
fields`, docs/events.md (generated, checked by a test) and the sensor's decoder, recorder
and verdicts all read this table.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Every ``evt.type`` the sensor emits (see the event contract).
EVENT_TYPES: tuple[str, ...] = (
    "execve", "execveat", "clone", "procexit", "connect", "connect_result", "accept",
    "accept4", "listen", "bind", "sendto", "sendmsg", "dup", "dup2", "dup3", "socket",
    "netvigil_verdict",
)

#: Event types whose events describe a socket (carry fd.*).
NETWORK_EVENT_TYPES: tuple[str, ...] = (
    "connect", "connect_result", "accept", "accept4", "listen", "bind", "sendto", "sendmsg",
    "dup", "dup2", "dup3", "netvigil_verdict",
)

#: Network event types that know the remote end (listen and bind know only the local one).
PEER_EVENT_TYPES: tuple[str, ...] = tuple(t for t in NETWORK_EVENT_TYPES if t not in ("listen", "bind"))

ALL = EVENT_TYPES
_SYSCALLS = tuple(t for t in EVENT_TYPES if t != "netvigil_verdict")
#: Event types the kernel folds into summaries under sensor.fold_repeats.
_FOLDED = tuple(t for t in NETWORK_EVENT_TYPES if t not in ("dup", "dup2", "dup3", "netvigil_verdict"))

#: How a derivation reads the event: ``Mapping.get`` of the stored fields.
Getter = Callable[[str], Any]

#: Falco's client/server model: on accept and listen (and bind) the local end is the server.
SERVER_SIDE_TYPES: frozenset[str] = frozenset({"accept", "accept4", "listen", "bind"})
#: The stored ends of a connection, which fd.cip/fd.sip/... and fd.name derive from.
ENDS: tuple[str, ...] = ("evt.type", "fd.lip", "fd.lport", "fd.rip", "fd.rport")


def local_is_server(get: Getter) -> bool:
    """Whether the local end is the server: accept, listen, bind, and any event that knows
    only its local end (a bind verdict); on connect, sendto, dup... it is the client."""
    return get("evt.type") in SERVER_SIDE_TYPES or get("fd.rip") is None


def _by_role(if_server: str, if_client: str) -> Callable[[Getter], Any]:
    """Derivation of a client/server field: one stored end or the other."""
    def derive(get: Getter) -> Any:
        return get(if_server) if local_is_server(get) else get(if_client)
    return derive


def connection_name(cip: Any, cport: Any, sip: Any, sport: Any) -> str:
    """Falco's fd.name of a connection: ``cip:cport->sip:sport``."""
    return f"{cip}:{cport}->{sip}:{sport}"


def _name(get: Getter) -> str | None:
    """fd.name: the connection tuple, or ``lip:lport`` when only the local end is known."""
    lip, rip = get("fd.lip"), get("fd.rip")
    if rip is None:
        return None if lip is None else f"{lip}:{get('fd.lport')}"
    if lip is None:  # a verdict on a socket not yet bound: the unspecified address
        lip = "::" if get("fd.typechar") == "6" else "0.0.0.0"
    lport, rport = get("fd.lport") or 0, get("fd.rport")
    if get("evt.type") in SERVER_SIDE_TYPES:
        return connection_name(rip, rport, lip, lport)
    return connection_name(lip, lport, rip, rport)


def _lport_declared(get: Getter) -> bool | None:
    """k8s.pod.lport_declared: on a listen or bind of a pod process, whether fd.lport is
    one of the pod's declared ports."""
    ports, lport = get("k8s.pod.ports"), get("fd.lport")
    if ports is None or lport is None or get("evt.type") not in ("listen", "bind"):
        return None
    return lport in ports


@dataclass(frozen=True)
class FieldSpec:
    """One field: name, value type, description, event types that set it, derivation.

    ``arg`` is "index" or "key" when the field takes ``[arg]``, "" otherwise (a field with
    ``arg`` may also be used bare, e.g. ``proc.aname``). A derived field has exactly one
    of: ``by_role`` (a client/server field: which stored end it is when the local end is
    the server, and when it is the client; the rule compiler inlines it), ``derive``
    (computed from ``sources`` by ``derive(get)``), ``any_of`` (matches
    when any of those fields does; outputs show the first present), ``key_of`` (the dict
    field ``FIELD[KEY]`` is looked up in).
    """

    name: str
    type: str
    description: str
    event_types: tuple[str, ...] = ALL
    arg: str = ""
    arg_type: str = ""  # type of `field[arg]` when it differs from `type`
    cidr: bool = False  # compared with CIDRs (fd.net, fd.snet, ...)
    derive: Callable[[Getter], Any] | None = None
    sources: tuple[str, ...] = ()  # what `derive` reads
    any_of: tuple[str, ...] = ()
    key_of: str = ""
    by_role: tuple[str, str] = ()  # (stored field if the local end is the server, if client)

    def __post_init__(self) -> None:
        if self.by_role:  # a client/server field: `derive` follows from the two ends
            object.__setattr__(self, "derive", _by_role(*self.by_role))
            # the role needs evt.type and whether fd.rip is there; the value, one end
            object.__setattr__(self, "sources", tuple(dict.fromkeys(("evt.type", "fd.rip", *self.by_role))))

    @property
    def derived(self) -> bool:
        """True when the sensor does not store this field (it is computed or matched)."""
        return self.derive is not None or bool(self.any_of) or bool(self.key_of)

    @property
    def derivation(self) -> str:
        """How the field is derived, for people ("" for a stored field)."""
        if self.derive is not None:
            return "derived from " + ", ".join(s for s in self.sources if s != "evt.type")
        if self.any_of:
            return "matches " + " or ".join(self.any_of)
        if self.key_of:
            return f"a key of {self.key_of}"
        return ""


_F = FieldSpec
FIELDS: tuple[FieldSpec, ...] = (
    # --- event -----------------------------------------------------------------------
    _F("evt.type", "str", "Event type (execve, connect, accept, ...)."),
    _F("evt.time", "int", "Event time, ns since the Unix epoch (renders as HH:MM:SS.nnnnnnnnn "
       "in outputs, as Falco does)."),
    _F("evt.dir", "str", "Event direction; always \"<\" (exit side)."),
    _F("evt.num", "int", "Event sequence number."),
    _F("evt.res", "str", "Result: SUCCESS or an errno name (EINPROGRESS, ECONNREFUSED, ...).",
       _SYSCALLS),
    _F("evt.rawres", "int", "Raw result: 0, -errno, the child pid (clone) or the new fd (dup*).",
       _SYSCALLS),
    _F("evt.arg.status", "int", "Exit code of the process, -1 when unknown.", ("procexit",)),
    _F("evt.arg.sig", "int", "Signal that ended the process, 0 for none.", ("procexit",)),
    _F("evt.arg.domain", "str", "Socket domain (AF_PACKET).", ("socket",)),
    _F("evt.arg.type", "str", "Socket type (SOCK_RAW, SOCK_DGRAM).", ("socket",)),
    _F("evt.arg.backlog", "int", "Backlog passed to listen().", ("listen",)),
    _F("evt.arg.newfd", "int", "The stdio fd (0, 1 or 2) a socket was duplicated onto.",
       ("dup2", "dup3")),
    _F("evt.repeats", "int", "On a summary event only (sensor.fold_repeats): how many more "
       "events like this one (same process, type, result, remote address and service port) "
       "the kernel counted in the fold period instead of sending; evt.time is the last one's. "
       "Absent on every other event.", _FOLDED),
    _F("thread.tid", "int", "Thread id of the caller."),
    # --- process ---------------------------------------------------------------------
    _F("proc.exec_id", "str", "Host-unique id of the process image (boot id + pid + start)."),
    _F("proc.pexec_id", "str", "exec_id of the parent process."),
    _F("proc.pid", "int", "Process id."),
    _F("proc.ppid", "int", "Parent process id."),
    _F("proc.name", "str", "Process name (comm, up to 15 characters)."),
    _F("proc.exe", "str", "argv[0] of the process."),
    _F("proc.exepath", "str", "Full path of the executable."),
    _F("proc.cmdline", "str", "Name and arguments (\"name arg1 arg2\"), as Falco."),
    _F("proc.args", "str", "Arguments after argv[0], joined by spaces."),
    _F("proc.pname", "str", "Parent process name."),
    _F("proc.pexepath", "str", "Full path of the parent's executable."),
    _F("proc.pcmdline", "str", "Command line of the parent."),
    _F("proc.aname", "list", "Ancestor names; proc.aname[N] is the Nth ancestor "
       "(proc.aname[0] = proc.name, [1] = parent); bare proc.aname matches any ancestor.",
       arg="index", arg_type="str"),
    _F("proc.apid", "list", "Ancestor pids, indexed as proc.aname.", arg="index", arg_type="int"),
    _F("proc.start_time", "int", "Process start time, ns since the Unix epoch."),
    _F("proc.cgroup_id", "int", "cgroup v2 id of the process."),
    _F("user.uid", "int", "User id."),
    _F("user.name", "str", "User name."),
    _F("group.gid", "int", "Group id."),
    # --- container / kubernetes ------------------------------------------------------
    _F("container.id", "str", "Container id (12 characters), or \"host\"."),
    _F("container.name", "str", "Container name."),
    _F("container.image", "str", "Container image (repository:tag)."),
    _F("container.image.repository", "str", "Container image repository."),
    _F("k8s.ns.name", "str", "Kubernetes namespace of the pod."),
    _F("k8s.pod.name", "str", "Kubernetes pod name."),
    _F("k8s.pod.uid", "str", "Kubernetes pod uid."),
    _F("container.image.tag", "str", "Container image tag (empty when the image names none)."),
    _F("k8s.pod.labels", "dict", "Pod labels; matched as \"key:value\" items."),
    _F("k8s.pod.label", "str", "One pod label: k8s.pod.label[app].", arg="key",
       key_of="k8s.pod.labels"),
    _F("k8s.pod.ip", "ip", "The pod's (first) IP address."),
    _F("k8s.pod.ips", "list", "All IP addresses of the pod (netvigil extension).", arg_type="str"),
    _F("k8s.ns.labels", "dict", "Labels of the pod's namespace (netvigil extension); matched as "
       "\"key:value\" items."),
    _F("k8s.ns.label", "str", "One namespace label: k8s.ns.label[team].", arg="key",
       key_of="k8s.ns.labels"),
    _F("k8s.deployment.name", "str", "Deployment that owns the pod (through its ReplicaSet)."),
    _F("k8s.rs.name", "str", "ReplicaSet that owns the pod."),
    _F("k8s.statefulset.name", "str", "StatefulSet that owns the pod."),
    _F("k8s.daemonset.name", "str", "DaemonSet that owns the pod."),
    _F("k8s.job.name", "str", "Job that owns the pod (not set for a CronJob's jobs)."),
    _F("k8s.cronjob.name", "str", "CronJob whose Job owns the pod."),
    _F("k8s.workload.kind", "str", "Kind of the pod's top owner: Deployment, StatefulSet, DaemonSet, "
       "Job, CronJob, ReplicaSet, or Pod for a bare pod (netvigil extension)."),
    _F("k8s.workload.name", "str", "Name of the pod's top owner (the pod's own name for a bare pod; "
       "netvigil extension)."),
    _F("k8s.sa.name", "str", "Service account of the pod."),
    _F("k8s.pod.ports", "list", "Port numbers the pod's containers declare (containerPorts; "
       "netvigil extension).", arg_type="int"),
    _F("k8s.pod.lport_declared", "bool", "True when fd.lport is a port the pod declares in its "
       "containerPorts (netvigil extension).", ("listen", "bind"), derive=_lport_declared,
       sources=("evt.type", "k8s.pod.ports", "fd.lport")),
    _F("k8s.peer.kind", "str", "What is behind fd.rip: service (a Service IP, as connect() sees it "
       "before DNAT), pod, or endpoint (netvigil extension).", NETWORK_EVENT_TYPES),
    _F("k8s.peer.name", "str", "Name of the Service or pod behind fd.rip (netvigil extension).",
       NETWORK_EVENT_TYPES),
    _F("k8s.peer.ns.name", "str", "Namespace of the Service or pod behind fd.rip (netvigil extension).",
       NETWORK_EVENT_TYPES),
    _F("k8s.peer.svc.name", "str", "Service behind fd.rip: the Service itself, or the one whose "
       "EndpointSlice lists the pod (netvigil extension).", NETWORK_EVENT_TYPES),
    _F("k8s.peer.svc.ns.name", "str", "Namespace of k8s.peer.svc.name (netvigil extension).",
       NETWORK_EVENT_TYPES),
    _F("k8s.peer.pod.name", "str", "Pod behind fd.rip (netvigil extension).", NETWORK_EVENT_TYPES),
    _F("k8s.peer.workload.kind", "str", "Workload kind of the pod behind fd.rip, when known "
       "(netvigil extension).", NETWORK_EVENT_TYPES),
    _F("k8s.peer.workload.name", "str", "Workload of the pod behind fd.rip, when known (netvigil "
       "extension).", NETWORK_EVENT_TYPES),
    # --- network ---------------------------------------------------------------------
    _F("fd.num", "int", "File descriptor number of the socket.", NETWORK_EVENT_TYPES),
    _F("fd.type", "str", "ipv4 or ipv6.", NETWORK_EVENT_TYPES),
    _F("fd.typechar", "str", "\"4\" or \"6\".", NETWORK_EVENT_TYPES),
    _F("fd.sockfamily", "str", "Socket family: ip.", NETWORK_EVENT_TYPES),
    _F("fd.l4proto", "str", "tcp or udp.", NETWORK_EVENT_TYPES),
    _F("fd.lip", "ip", "Local IP address.", NETWORK_EVENT_TYPES),
    _F("fd.lport", "port", "Local port.", NETWORK_EVENT_TYPES),
    _F("fd.rip", "ip", "Remote IP address.", PEER_EVENT_TYPES),
    _F("fd.rport", "port", "Remote port.", PEER_EVENT_TYPES),
    _F("fd.name", "str", "Connection tuple cip:cport->sip:sport (lip:lport on listen and "
       "bind).", NETWORK_EVENT_TYPES, derive=_name, sources=(*ENDS, "fd.typechar")),
    _F("fd.cip", "ip", "Client IP address: fd.lip on connect, sendto, dup..., fd.rip on "
       "accept.", PEER_EVENT_TYPES, by_role=("fd.rip", "fd.lip")),
    _F("fd.cport", "port", "Client port (as fd.cip).", PEER_EVENT_TYPES,
       by_role=("fd.rport", "fd.lport")),
    _F("fd.sip", "ip", "Server IP address: fd.rip on connect, sendto, dup..., fd.lip on "
       "accept, listen and bind.", NETWORK_EVENT_TYPES, by_role=("fd.lip", "fd.rip")),
    _F("fd.sport", "port", "Server port (as fd.sip).", NETWORK_EVENT_TYPES,
       by_role=("fd.lport", "fd.rport")),
    _F("fd.connected", "bool", "Whether the socket is connected.", NETWORK_EVENT_TYPES),
    _F("fd.name_changed", "bool", "Whether the tuple changed (first UDP send to a destination).",
       ("sendto", "sendmsg")),
    _F("fd.ip", "ip", "Either end's IP (matches when fd.cip or fd.sip matches).",
       NETWORK_EVENT_TYPES, any_of=("fd.sip", "fd.cip")),
    _F("fd.port", "port", "Either end's port (matches when fd.cport or fd.sport matches).",
       NETWORK_EVENT_TYPES, any_of=("fd.sport", "fd.cport")),
    _F("fd.net", "ip", "Either end's IP, matched against CIDRs.", NETWORK_EVENT_TYPES,
       cidr=True, any_of=("fd.sip", "fd.cip")),
    _F("fd.cnet", "ip", "fd.cip matched against CIDRs.", NETWORK_EVENT_TYPES, cidr=True,
       any_of=("fd.cip",)),
    _F("fd.snet", "ip", "fd.sip matched against CIDRs.", NETWORK_EVENT_TYPES, cidr=True,
       any_of=("fd.sip",)),
    _F("fd.lnet", "ip", "fd.lip matched against CIDRs.", NETWORK_EVENT_TYPES, cidr=True,
       any_of=("fd.lip",)),
    _F("fd.rnet", "ip", "fd.rip matched against CIDRs.", NETWORK_EVENT_TYPES, cidr=True,
       any_of=("fd.rip",)),
    # --- netvigil extensions ---------------------------------------------------------
    _F("netvigil.verdict", "str", "Kernel enforcement decision: deny or audit.",
       ("netvigil_verdict",)),
    _F("netvigil.rule", "str", "Rule whose enforcement entry produced the verdict.",
       ("netvigil_verdict",)),
    _F("netvigil.hook", "str", "Kernel hook that decided (connect4, sendmsg6, bind4, tc_egress, ...).",
       ("netvigil_verdict",)),
    _F("netvigil.op", "str", "The operation the verdict applies to (connect, sendmsg, bind, packet).",
       ("netvigil_verdict",)),
    _F("netvigil.scope_cgroup_id", "int", "Cgroup id of the deny entry's scope (0: node).",
       ("netvigil_verdict",)),
    _F("netvigil.ifindex", "int", "Interface index, for verdicts of the tc programs.",
       ("netvigil_verdict",)),
    _F("proc.args_truncated", "bool", "True when the command line was longer than the sensor "
       "captures (20 arguments, 1 KiB)."),
)

FIELDS_BY_NAME: dict[str, FieldSpec] = {f.name: f for f in FIELDS}

#: Fields the decoder computes rather than stores: name -> derivation (the event types'
#: own readers, `rules.event.Event` and `field_reader`, apply it).
DERIVATIONS: dict[str, Callable[[Getter], Any]] = {
    f.name: f.derive for f in FIELDS if f.derive is not None}

#: Copied from the matched event into every alert's output_fields when present: the
#: process, container and pod behind it.
CONTEXT_FIELDS: tuple[str, ...] = (
    "proc.exec_id", "proc.pid", "proc.name", "proc.exepath", "proc.cmdline",
    "container.id", "container.name", "container.image", "k8s.ns.name", "k8s.pod.name",
)


def field_reader(name: str) -> Callable[[Getter], Any]:
    """A function get -> the value of field ``name`` of the event ``get`` reads: the stored
    value when there is one, otherwise the derivation's (None when absent)."""
    spec = FIELDS_BY_NAME.get(name)
    derive = spec.derive if spec is not None else None
    if derive is None:
        return lambda get: get(name)

    def read(get: Getter) -> Any:
        value = get(name)
        return derive(get) if value is None else value
    return read


def stored_sources(name: str) -> tuple[str, ...]:
    """The stored fields a field's value comes from (itself when stored)."""
    spec = FIELDS_BY_NAME.get(name)
    if spec is None or not spec.derived:
        return (name,)
    if spec.derive is not None:
        return (name, *spec.sources)  # a mapping may store the derived field itself
    if spec.key_of:
        return (spec.key_of,)
    return tuple(dict.fromkeys(s for src in spec.any_of for s in stored_sources(src)))


def get_field(name: str) -> FieldSpec | None:
    """The catalogue entry for ``name`` (without any ``[arg]``), or None."""
    return FIELDS_BY_NAME.get(name)


def describe_types(spec: FieldSpec) -> str:
    """The event types that set a field, as text ("all" when every type does)."""
    if set(spec.event_types) == set(EVENT_TYPES):
        return "all"
    return ", ".join(spec.event_types)


def field_rows() -> list[dict[str, str]]:
    """One dict per field (name, type, event_types, description, derivation: "" when
    stored), as printed/documented."""
    rows = []
    for f in FIELDS:
        name = f.name
        if f.arg == "index":
            name += "[N]"
        elif f.arg == "key":
            name += "[KEY]"
        rows.append({"name": name, "type": f.type, "event_types": describe_types(f),
                     "description": f.description, "derivation": f.derivation})
    return rows


def events_markdown() -> str:
    """docs/events.md, generated from this catalogue (a test keeps the file in sync)."""
    lines = [
        "# Event fields",
        "",
        "<!-- Generated from rules/fields.py by rules.fields.events_markdown(); "
        "tests/test_rules_fields.py checks it. Do not edit by hand. -->",
        "",
        "An event is a flat mapping of Falco field names to values; absent fields are simply",
        "missing (comparisons on them are false, and outputs render `<NA>`). Derived fields",
        "(`fd.cip`, `fd.sport`, `fd.name`, ...) are computed where they are read from the",
        "stored ends of a connection, `fd.lip`/`fd.lport` and `fd.rip`/`fd.rport`: on connect,",
        "sendto and dup the local end is the client, on accept, listen and bind the server, as",
        "in Falco. `netvigil rules fields` prints the same table.",
        "",
        "## Event types",
        "",
        ", ".join(f"`{t}`" for t in EVENT_TYPES) + ".",
        "",
        "Every event has `evt.dir` = `<` (the exit side, as Falco's rules expect).",
        "",
        "## Fields",
        "",
        "| Field | Type | Set on | Description |",
        "| --- | --- | --- | --- |",
    ]
    for row in field_rows():
        derived = f" ({row['derivation']})" if row["derivation"] else ""
        lines.append(f"| `{row['name']}` | {row['type']} | {row['event_types']} | "
                     f"{row['description']}{derived} |")
    lines += [
        "",
        "Types: `str` text, `int` integer, `port` integer port, `bool` true/false, `ip` an",
        "address in compressed text form (`::1`, IPv4-mapped as `::ffff:1.2.3.4`); the",
        "`fd.*net` fields compare it with CIDRs (`fd.snet in (rfc_1918_addresses)`); `list` a list",
        "(bare use matches if any element matches), `dict` a mapping.",
        "",
    ]
    return "\n".join(lines)
