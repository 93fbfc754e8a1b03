"""The top-level command line: --version, and no traceback when stdout's reader goes away."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sensor import __version__


def _netvigil(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sensor.cli", *args], capture_output=kw.pop("capture", True),
                          text=True, timeout=60, **kw)


def test_version() -> None:
    done = _netvigil("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"netvigil {__version__}")


@pytest.mark.parametrize("args", [["rules", "fields"], ["rules", "fields", "--json"], ["--help"]])
def test_a_closed_pipe_ends_the_command_quietly(args: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)           # the reader is gone before the first write: EPIPE at once
    try:
        done = subprocess.run([sys.executable, "-m", "sensor.cli", *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.stderr == ""
    assert done.returncode in (0, 141)
