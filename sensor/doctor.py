"""`netvigil doctor`: what works on this machine for the sensor, and what to fix."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from rich.table import Table
from rich.text import Text

from rules.command_help import add_command
from sensor import cgroups, kernel_headers, terminal
from sensor.bpf_program import KERNEL_BTF, kernel_has_btf

REQUIRED_TRACEPOINTS = (
    "sched/sched_process_exec", "sched/sched_process_fork", "sched/sched_process_exit",
    "sock/inet_sock_set_state", "syscalls/sys_enter_connect", "syscalls/sys_exit_accept4",
    "syscalls/sys_enter_sendmsg", "syscalls/sys_enter_dup3", "syscalls/sys_enter_clone3",
)
TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def _tracefs() -> str | None:
    for path in TRACEFS_CANDIDATES:
        if os.path.isdir(f"{path}/events"):
            return path
    return None


def check_root() -> Check:
    if os.geteuid() == 0:
        return Check("privileges", "ok", "running as root")
    return Check("privileges", "fail", f"running as uid {os.geteuid()}",
                 "run as root (or with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN)")


def check_kernel(btf_file: str = KERNEL_BTF) -> Check:
    """Kernel release and BTF (per-thread syscall state in task storage, the cheap way)."""
    if not kernel_has_btf(btf_file):
        return Check("kernel", "ok", f"{platform.release()}, no BTF ({btf_file} missing): per-thread "
                     "syscall state kept in a hash map by thread id, which costs more per syscall",
                     "a kernel built with CONFIG_DEBUG_INFO_BTF=y (5.11 or later) lets the sensor "
                     "use BPF task storage instead")
    return Check("kernel", "ok", f"{platform.release()}, BTF present (per-thread state in task storage)")


def check_bcc() -> Check:
    try:
        import bcc  # noqa: PLC0415
    except ImportError:
        return Check("BCC", "fail", "python bindings not importable",
                     "apt-get install python3-bpfcc; use a venv made with --system-site-packages")
    version = getattr(bcc, "__version__", "unknown version")
    return Check("BCC", "ok", f"bcc {version} from {os.path.dirname(bcc.__file__)}")


def check_headers(env: dict[str, str] | None = None) -> Check:
    """The headers the agent's BCC compile will use (sensor.kernel_headers: the same choice)."""
    chosen = kernel_headers.select(env)
    if chosen.path is None:
        return Check("kernel headers", "fail", chosen.detail,
                     "scripts/bootstrap.sh (installs linux-headers-$(uname -r), or "
                     "linux-headers-cloud-amd64 linked into /lib/modules/$(uname -r)/{build,source}); "
                     "in a pod: mount the node's /lib/modules and /usr/src, or use the netvigil image "
                     "(it ships generic headers)")
    return Check("kernel headers", "ok", f"{chosen.origin}: {chosen.detail}")


def check_tracefs() -> Check:
    path = _tracefs()
    if path is None:
        return Check("tracefs", "fail", "not mounted", "mount -t tracefs tracefs /sys/kernel/tracing")
    missing = [tp for tp in REQUIRED_TRACEPOINTS if not os.path.isdir(f"{path}/events/{tp}")]
    if missing:
        return Check("tracepoints", "fail", f"missing: {', '.join(missing)}",
                     "a kernel with CONFIG_FTRACE_SYSCALLS and sock tracepoints is required")
    return Check("tracefs", "ok", f"{path}, all {len(REQUIRED_TRACEPOINTS)} probed tracepoints present")


def check_bpffs() -> Check:
    if _fs_type("/sys/fs/bpf") != "bpf":
        return Check("bpffs", "fail", "/sys/fs/bpf is not a bpf filesystem (pinned deny maps need it)",
                     "mount -t bpf bpf /sys/fs/bpf")
    return Check("bpffs", "ok", "/sys/fs/bpf mounted")


def _fs_type(path: str) -> str | None:
    """Filesystem type of the longest mount point that contains `path`."""
    best, fstype = "", None
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) > 2 and path.startswith(parts[1]) and len(parts[1]) >= len(best):
            best, fstype = parts[1], parts[2]
    return fstype


def check_cgroup2() -> Check:
    mount = cgroups.find_mount()
    if mount is None:
        return Check("cgroup v2", "fail", "no cgroup2 mount (container identity by cgroup id and "
                     "sock_addr enforcement need it)", "mount -t cgroup2 none /sys/fs/cgroup")
    hybrid = str(mount) != "/sys/fs/cgroup"
    return Check("cgroup v2", "ok", f"{mount}{' (hybrid host)' if hybrid else ''}")


def check_optional_hooks() -> Check:
    tracefs = _tracefs()
    kprobes = bool(tracefs) and os.path.exists(f"{tracefs}/kprobe_events")
    return Check("optional hooks", "ok",
                 "not used: kprobes " + ("present" if kprobes else "absent") +
                 " (netvigil needs tracepoints, cgroup sock_addr/sock programs and tc; fentry "
                 "only for AF_PACKET sockets with the cgroup hook set, which scans /proc for them "
                 "without it)")


def check_load() -> Check:
    """Load and attach the sensor as `netvigil run` would (sensor.hooks auto); report the
    network hook set it chose."""
    from sensor.bpf_program import SensorProgram  # noqa: PLC0415
    from sensor.errors import SensorError  # noqa: PLC0415
    from sensor.proc_sockets import SCAN_INTERVAL_S  # noqa: PLC0415

    started = time.monotonic()
    try:
        program = SensorProgram(lambda _raw: None, ringbuf_pages=16)
    except SensorError as exc:
        return Check("BPF load", "fail", str(exc).splitlines()[0][:300], "fix the failures above first")
    program.close()
    hooks = program.hooks
    packet = "" if program.packet_hook else (
        f"; AF_PACKET sockets found by a /proc scan every {SCAN_INTERVAL_S:g} s (the kernel refuses "
        "fentry; one opened and closed between two scans is missed: sensor.hooks syscalls sees "
        "every socket() call, at the cost of the tracing slow path for every syscall)")
    return Check("BPF load", "ok",
                 f"sensor programs compiled, verified and attached in {time.monotonic() - started:.1f} s, "
                 f"then detached; network hooks: {hooks.hooks} ({hooks.reason}){packet}")


def check_kubernetes(env: dict[str, str] | None = None) -> Check:
    """Kubernetes API access: credentials found, and RBAC lets the agent list this node's pods."""
    from sensor.k8s.config import K8sConfig  # noqa: PLC0415
    from sensor.k8s.watcher import (  # noqa: PLC0415
        BadCredentialsError, NoCredentialsError, client_configuration, resolve_node_name)

    cfg = K8sConfig()
    fix = ("in a cluster: the DaemonSet's service account with get/list/watch on pods, services, "
           "endpointslices and namespaces (deploy/); elsewhere: KUBECONFIG")
    try:
        conf, source = client_configuration(cfg, env)
        from kubernetes import client  # noqa: PLC0415
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415
    except ImportError:
        return Check("kubernetes", "warn", "the kubernetes Python client is not installed: "
                     "runtime metadata only (no labels, workloads, peers)", "pip install kubernetes")
    except NoCredentialsError as exc:
        # on a host outside any cluster that is what is expected; inside one it is a defect
        in_cluster = isinstance(exc, BadCredentialsError) or bool(
            (os.environ if env is None else env).get("KUBERNETES_SERVICE_HOST"))
        return Check("kubernetes", "warn" if in_cluster else "ok", f"no API access: {exc}: runtime "
                     "metadata only (pod name/namespace/uid, container name/image from the OCI bundle)",
                     fix if in_cluster else "")
    node = resolve_node_name(cfg, env)
    with client.ApiClient(conf) as api:
        try:
            client.CoreV1Api(api).list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node}", limit=1, _preload_content=False,
                _request_timeout=(5, 5)).release_conn()
        except ApiException as exc:
            return Check("kubernetes", "warn", f"{source}: list pods on node {node}: HTTP {exc.status} "
                         f"{exc.reason}: runtime metadata only", fix)
        except Exception as exc:  # noqa: BLE001 - unreachable server, TLS, DNS: all reported
            return Check("kubernetes", "warn", f"{source}: API server {conf.host} unreachable "
                         f"({type(exc).__name__}): runtime metadata only", fix)
    return Check("kubernetes", "ok", f"{source}: {conf.host}, pods of node {node} listable")


CHECKS: tuple[Callable[[], Check], ...] = (
    check_root, check_kernel, check_bcc, check_headers, check_tracefs, check_bpffs,
    check_cgroup2, check_optional_hooks, check_kubernetes,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `doctor` to the top-level parser."""
    p = add_command(
        sub, "doctor", help="check kernel, BCC, headers, tracefs, bpffs, cgroup v2, Kubernetes API access",
        description="Check what the sensor needs on this machine (privileges, kernel and BTF, "
                    "BCC, kernel headers, tracefs and the probed tracepoints, bpffs, cgroup v2, Kubernetes API access), "
                    "then compile, load and detach the BPF programs once. Each problem comes "
                    "with the fix. Exit status 1 when something the sensor needs is broken.",
        examples=["netvigil doctor", "netvigil doctor --no-load",
                  "netvigil doctor --json | jq '.[] | select(.status != \"ok\")'"])
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--no-load", action="store_true", help="skip the trial load of the BPF programs")
    p.set_defaults(func=doctor)


def run_checks(load: bool = True) -> list[Check]:
    """Every check, in order; the trial load only when the basics passed."""
    results = [check() for check in CHECKS]
    if load and all(r.status != "fail" for r in results):
        results.append(check_load())
    return results


def doctor(args: argparse.Namespace) -> int:
    """Print the report; exit 1 when something the sensor needs is broken."""
    results = run_checks(load=not args.no_load)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        terminal.console(sys.stdout, terminal.color_of(args)).print(report_table(results))
    failed = [r for r in results if r.status == "fail"]
    if failed and not args.json:
        terminal.console(sys.stderr, terminal.color_of(args)).print(
            f"\n{len(failed)} problem(s): the sensor cannot run until they are fixed",
            style="bold red")
    return 1 if failed else 0


STATUS_STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def report_table(results: list[Check]) -> Table:
    """One row per check: status, name, what was found and (below it) how to fix it."""
    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("detail")
    for r in results:
        detail = Text(r.detail)
        if r.fix:
            detail.append("\nfix: " + r.fix, style="bold")
        table.add_row(Text(r.status.upper(), style=STATUS_STYLES.get(r.status, "")), r.name, detail)
    return table
