"""`netvigil run` as a user runs it: JSON lines on a pipe, clean stop, nothing left attached."""
from __future__ import annotations

import ctypes
import json
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

NETVIGIL = str(Path(sys.executable).with_name("netvigil"))
BPF_PROG_GET_NEXT_ID = 11
_libc = ctypes.CDLL(None, use_errno=True)


def loaded_program_ids() -> set[int]:
    """Ids of every BPF program loaded in the kernel right now."""
    ids, current = set(), 0
    while True:
        attr = ctypes.create_string_buffer(struct.pack("=II", current, 0), 128)
        if _libc.syscall(321, BPF_PROG_GET_NEXT_ID, ctypes.byref(attr), 128) < 0:
            return ids
        current = struct.unpack_from("=II", attr.raw)[1]
        ids.add(current)


def _stop_after_connect(sig: int) -> tuple[subprocess.CompletedProcess, set[int], set[int]]:
    before = loaded_program_ids()
    proc = subprocess.Popen([NETVIGIL, "run", "--events", "--no-rules", "--no-record"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    assert "sensor running" in proc.stderr.readline()
    during = loaded_program_ids() - before
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    subprocess.run([sys.executable, "-c", "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1]))).close()",
                             str(srv.getsockname()[1])], check=True)
    srv.close()
    time.sleep(0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), during, loaded_program_ids()


def test_json_lines_on_a_pipe_and_clean_stop_on_sigint() -> None:
    result, during, after = _stop_after_connect(signal.SIGINT)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]  # every line is JSON
    assert any(e["evt.type"] == "connect" and e["fd.l4proto"] == "tcp" for e in events)
    assert "netvigil: stopped: events=" in result.stderr and "lost=0" in result.stderr
    assert during, "the sensor's programs were loaded while it ran"
    assert not during & after, "every program is gone after the agent stopped"


def test_sigterm_stops_cleanly_too() -> None:
    result, during, after = _stop_after_connect(signal.SIGTERM)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert during and not during & after


def test_duration_stops_by_itself() -> None:
    result = subprocess.run([NETVIGIL, "run", "--no-rules", "--no-record", "--duration", "1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "netvigil: stopped" in result.stderr
