"""The field catalogue: every event field netvigil emits or derives, its type and origin.

Types: ``str``, ``int``, ``bool``, ``list``, ``dict``, ``ip`` (an address in text form),
``port`` (an int). ``ip`` fields with ``cidr=True`` (fd.net, fd.snet, ...) compare the
address with CIDRs.
``netvigil rules fields`` prints this table and docs/events.md is checked against it.
"""
from __future__ import annotations

from dataclasses import dataclass

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

ALL = EVENT_TYPES
_SYSCALLS = tuple(t for t in EVENT_TYPES if t != "netvigil_verdict")


@dataclass(frozen=True)
class FieldSpec:
    """One field: name, value type, description, event types that set it.

    ``arg`` is "index" or "key" when the field takes ``[arg]``, "" otherwise (a field with
    ``arg`` may also be used bare, e.g. ``proc.aname``). ``derived`` fields are computed by
    the rule engine from other fields, never present in the event itself.
    """

    name: str
    type: str
    description: str
    event_types: tuple[str, ...] = ALL
    arg: str = ""
    derived: bool = False
    arg_type: str = ""  # type of `field[arg]` when it differs from `type`
    cidr: bool = False  # compared with CIDRs (fd.net, fd.snet, ...)


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
    _F("k8s.pod.label", "str", "One pod label: k8s.pod.label[app].", arg="key", derived=True),
    _F("k8s.pod.ip", "ip", "The pod's (first) IP address."),
    _F("k8s.pod.ips", "list", "All IP addresses of the pod (netvigil extension).", arg_type="str"),
    _F("k8s.ns.labels", "dict", "Labels of the pod's namespace (netvigil extension); matched as "
       "\"key:value\" items."),
    _F("k8s.ns.label", "str", "One namespace label: k8s.ns.label[team].", arg="key", derived=True),
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
       "containerPorts (netvigil extension).", ("listen", "bind")),
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
    _F("fd.name", "str", "Connection tuple cip:cport->sip:sport.", NETWORK_EVENT_TYPES),
    _F("fd.cip", "ip", "Client IP address.", NETWORK_EVENT_TYPES),
    _F("fd.cport", "port", "Client port.", NETWORK_EVENT_TYPES),
    _F("fd.sip", "ip", "Server IP address.", NETWORK_EVENT_TYPES),
    _F("fd.sport", "port", "Server port.", NETWORK_EVENT_TYPES),
    _F("fd.lip", "ip", "Local IP address.", NETWORK_EVENT_TYPES),
    _F("fd.lport", "port", "Local port.", NETWORK_EVENT_TYPES),
    _F("fd.rip", "ip", "Remote IP address.", NETWORK_EVENT_TYPES),
    _F("fd.rport", "port", "Remote port.", NETWORK_EVENT_TYPES),
    _F("fd.connected", "bool", "Whether the socket is connected.", NETWORK_EVENT_TYPES),
    _F("fd.name_changed", "bool", "Whether the tuple changed (first UDP send to a destination).",
       ("sendto", "sendmsg")),
    _F("fd.ip", "ip", "Either end's IP (matches when fd.cip or fd.sip matches).",
       NETWORK_EVENT_TYPES, derived=True),
    _F("fd.port", "port", "Either end's port (matches when fd.cport or fd.sport matches).",
       NETWORK_EVENT_TYPES, derived=True),
    _F("fd.net", "ip", "Either end's IP, matched against CIDRs.", NETWORK_EVENT_TYPES,
       derived=True, cidr=True),
    _F("fd.cnet", "ip", "fd.cip matched against CIDRs.", NETWORK_EVENT_TYPES, derived=True,
       cidr=True),
    _F("fd.snet", "ip", "fd.sip matched against CIDRs.", NETWORK_EVENT_TYPES, derived=True,
       cidr=True),
    _F("fd.lnet", "ip", "fd.lip matched against CIDRs.", NETWORK_EVENT_TYPES, derived=True,
       cidr=True),
    _F("fd.rnet", "ip", "fd.rip matched against CIDRs.", NETWORK_EVENT_TYPES, derived=True,
       cidr=True),
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

#: For derived fields: the event fields they read.
DERIVED_SOURCES: dict[str, tuple[str, ...]] = {
    "fd.ip": ("fd.cip", "fd.sip"),
    "fd.port": ("fd.cport", "fd.sport"),
    "fd.net": ("fd.cip", "fd.sip"),
    "fd.cnet": ("fd.cip",),
    "fd.snet": ("fd.sip",),
    "fd.lnet": ("fd.lip",),
    "fd.rnet": ("fd.rip",),
}


#: For ``[KEY]`` fields: the dict field a key is looked up in.
LABEL_SOURCES: dict[str, str] = {
    "k8s.pod.label": "k8s.pod.labels",
    "k8s.ns.label": "k8s.ns.labels",
}


def get_field(name: str) -> FieldSpec | None:
    """The catalogue entry for ``name`` (without any ``[arg]``), or None."""
    return FIELDS_BY_NAME.get(name)


def describe_types(spec: FieldSpec) -> str:
    """The event types that set a field, as text ("all" when every type does)."""
    if set(spec.event_types) == set(EVENT_TYPES):
        return "all"
    return ", ".join(spec.event_types)


def field_rows() -> list[dict[str, str]]:
    """One dict per field (name, type, event_types, description), as printed/documented."""
    rows = []
    for f in FIELDS:
        name = f.name
        if f.arg == "index":
            name += "[N]"
        elif f.arg == "key":
            name += "[KEY]"
        rows.append({"name": name, "type": f.type, "event_types": describe_types(f),
                     "description": f.description})
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
        "missing (comparisons on them are false, and outputs render `<NA>`). Derived fields are",
        "computed by the rule engine from the event's own fields. `netvigil rules fields`",
        "prints the same table.",
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
    for row, spec in zip(field_rows(), FIELDS):
        derived = " (derived)" if spec.derived else ""
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
