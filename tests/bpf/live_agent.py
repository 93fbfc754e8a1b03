"""One `netvigil run` subprocess shared by the endpoint, reload and observe tests.

The agent runs with a ConfigMap-style config directory (`..data` -> a timestamped
directory; `config.yaml` and `rules/` reached through it), its own HTTP port, local API
socket, enforcement on a test cgroup with its own bpffs base (never the root cgroup),
alerts as JSON lines on stdout (a file), JSON logs on stderr (a file), and pod identity
from runtime bundles under its own prefix (no API server; tests/k8s_pods.py lays pods out).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from sensor import cgroups
from tests.agent_http import Samples, http_get, samples
from tests.kubelet_pod import ConfigMapDir

NETVIGIL = str(Path(sys.executable).with_name("netvigil"))
PID = os.getpid()

# a connect to this port (from the test's own loopback listener) matches the base rule
BASE_RULES = """
- rule: Test connect to watched port
  desc: the endpoint tests' known workload
  condition: evt.type = connect and fd.rport = {port}
  output: "test connect to %fd.rip:%fd.rport by %proc.name"
  priority: NOTICE
  tags: [test]
- rule: Test static audit entry
  desc: a static enforcement entry the reload must leave in place
  # the observe tests connect to 192.0.2.77:9 for an audit verdict: no match, no entry of its own
  condition: evt.type = connect and fd.rip = 192.0.2.77 and fd.rport = 1
  output: "never fires"
  priority: WARNING
  enforce:
    action: deny
    mode: audit
    static:
      cidrs: [192.0.2.77/32]
      protocol: tcp
      cgroups: [/{cgroup}]
"""

CONNECTS = """
import socket, sys
for _ in range(int(sys.argv[2])):
    socket.create_connection(("127.0.0.1", int(sys.argv[1]))).close()
"""


class Listener:
    """A loopback listener that accepts and closes every connection (a workload's target)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.sock.getsockname()[1]
        import threading  # noqa: PLC0415

        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.sock.accept()[0].close()
            except OSError:
                return


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveAgent:
    """The agent subprocess and ways to look at it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        # under /run (traversable by others), so the socket's own mode is what refuses them
        self.socket = Path(f"/run/netvigil-test-{PID}/netvigil.sock")
        self.target = free_port()          # the known workload connects here
        self.listener = socket.create_server(("127.0.0.1", self.target), backlog=512)
        self.cgroup = cgroups.mount() / f"netvigil-test-agent-{PID}"
        self.pin_path = Path(f"/sys/fs/bpf/netvigil-test-agent-{PID}")
        self.config_dir = ConfigMapDir(base / "config")
        self.rules_dir = ConfigMapDir(base / "rules")
        self.node_prefix = base / "node"   # runtime bundles of test pods (tests/k8s_pods.PodHost)
        self.stdout_path = base / "alerts.jsonl"
        self.stderr_path = base / "agent.log"
        self.proc: subprocess.Popen | None = None
        self._accepting = True

    # -- files ----------------------------------------------------------------------
    def base_rules(self) -> str:
        return textwrap.dedent(BASE_RULES).format(port=self.target, cgroup=self.cgroup.name)

    def config_text(self, **extra: Any) -> str:
        cfg: dict[str, Any] = {
            "rules": {"paths": [str(self.rules_dir.root / "rules.yaml")]},
            "alerts": {"sinks": {"stdout": {"type": "stdout", "format": "json"}},
                       "spool_dir": str(self.base / "spool")},
            "enforce": {"cgroup": f"/{self.cgroup.name}", "pin_path": str(self.pin_path),
                        "persist": False, "interfaces": []},
            "reload": {"interval": 0.5},
            "log": {"level": "info"},
            "api": {"reader_queue": 1024},
            "kubernetes": {"enabled": False, "runtime_prefix": str(self.node_prefix)},
            # every connect its own event: these tests count them (the default, folding
            # repeats every second, has its tests in test_fold_repeats.py)
            "sensor": {"fold_repeats": 0},
        }
        cfg.update(extra)
        return json.dumps(cfg)

    # -- life -----------------------------------------------------------------------
    def start(self) -> None:
        self.cgroup.mkdir(exist_ok=True)
        self.rules_dir.publish({"rules.yaml": self.base_rules()})
        self.config_dir.publish({"config.yaml": self.config_text()})
        import threading  # noqa: PLC0415

        threading.Thread(target=self._accept, daemon=True).start()
        self.proc = subprocess.Popen(
            [NETVIGIL, "run", "--config", str(self.config_dir.root / "config.yaml"), "--no-record",
             "--http", f"127.0.0.1:{self.port}", "--api-socket", str(self.socket), "--log-format", "json"],
            stdout=self.stdout_path.open("w"), stderr=self.stderr_path.open("w"))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"agent exited: {self.stderr_path.read_text()}"
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.2)
        raise AssertionError(f"agent not ready in 90 s: {self.stderr_path.read_text()[-2000:]}")

    def _accept(self) -> None:
        while self._accepting:
            try:
                conn, _ = self.listener.accept()
                conn.close()
            except OSError:
                return

    def stop(self) -> int:
        """SIGTERM; the exit code."""
        self._accepting = False
        self.listener.close()
        code = 0
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        subprocess.run([NETVIGIL, "enforce", "--pin-path", str(self.pin_path), "flush"], capture_output=True)
        subprocess.run([NETVIGIL, "run", "--cleanup", "--config", str(self.config_dir.root / "config.yaml")],
                       capture_output=True)
        shutil.rmtree(self.pin_path, ignore_errors=True)
        shutil.rmtree(self.socket.parent, ignore_errors=True)
        try:
            self.cgroup.rmdir()
        except OSError:
            pass
        return code

    # -- looking --------------------------------------------------------------------
    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.port, path)

    def metrics(self) -> Samples:
        """Every sample: (name, sorted labels) -> value, parsed by prometheus_client's parser."""
        code, text = self.get("/metrics")
        assert code == 200
        return samples(text)

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def connects(self, n: int, port: int | None = None, program: str = sys.executable) -> None:
        """The known workload: n TCP connects to the watched port (or `port`) from a new process."""
        subprocess.run([program, "-c", CONNECTS, str(port or self.target), str(n)], check=True, timeout=120)

    def wait_metric(self, name: str, value: float, timeout: float = 10, **labels: str) -> float:
        """Poll until the sample reaches value; the last value seen."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.metric(name, **labels)
            if got >= value or time.monotonic() > deadline:
                return got
            time.sleep(0.2)

    def log_records(self) -> list[dict[str, Any]]:
        """The agent's stderr, every line a JSON object."""
        return [json.loads(line) for line in self.stderr_path.read_text().splitlines() if line.strip()]

    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout_path.read_text().splitlines() if line.strip()]
