"""Commands in tmux panes of a fixed size, read back as a person sees them.

Each `TmuxScreen` runs its own tmux server on a private socket (`tmux -L`), without any
tmux.conf, so the host's or the user's tmux is never touched. Every window runs one
command through `exec` (the pane's pid is the command's), panes stay readable after
their command exits, and `close()` stops every command it started (SIGTERM, then
SIGKILL) before killing the server: a command that ignores SIGHUP (netvigil reloads on
it) does not outlive the test.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

#: Any escape sequence tmux writes into a capture with -e (SGR colours and attributes).
ESCAPE = re.compile(r"\x1b\[[0-9;:]*[A-Za-z]")
#: Variables that would override what a program reads of its terminal (rich reads them).
TERMINAL_OVERRIDES = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TERM_PROGRAM")


class TmuxScreen:
    """A private tmux server whose windows are all `width` x `height`."""

    def __init__(self, name: str, width: int = 200, height: int = 50) -> None:
        self.socket_name = f"nvtest-{os.getpid()}-{name}"
        self.session = "nv"
        self.width, self.height = width, height
        self.pids: dict[str, int] = {}
        self.tmux("new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height),
                  "-n", "idle", "cat")
        # every window takes default-size (no client is attached); `window-size manual`
        # would be the explicit way, but tmux 3.3a crashes on `new-window -d` with it
        for option, value in (("default-size", f"{width}x{height}"), ("remain-on-exit", "on"),
                              ("history-limit", "5000")):
            self.tmux("set-option", "-g", option, value)

    def tmux(self, *args: str) -> str:
        """Run a tmux command on this server; its stdout."""
        out = subprocess.run(["tmux", "-L", self.socket_name, "-f", "/dev/null", *args],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def run(self, window: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
            stdout: str | None = None) -> int:
        """Start argv in a new window (stdout to a file when given: the command is piped);
        the pid of the command."""
        unset = " ".join(f"-u {v}" for v in TERMINAL_OVERRIDES)
        assign = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        redirect = f" > {shlex.quote(stdout)}" if stdout else ""
        command = f"exec env {unset} {assign} {shlex.join(argv)}{redirect}"
        self.tmux("new-window", "-d", "-t", self.session, "-n", window, command)
        pid = int(self.tmux("display-message", "-p", "-t", self.target(window), "#{pane_pid}").strip())
        self.pids[window] = pid
        return pid

    def target(self, window: str) -> str:
        return f"{self.session}:{window}"

    def size(self, window: str) -> tuple[int, int]:
        w, h = self.tmux("display-message", "-p", "-t", self.target(window),
                         "#{pane_width} #{pane_height}").split()
        return int(w), int(h)

    def capture(self, window: str, escapes: bool = False, history: bool = False) -> str:
        """The pane's text as shown (with -e its colour and attribute escapes; with history
        the lines scrolled off the top too)."""
        args = ["capture-pane", "-p", "-t", self.target(window)]
        if escapes:
            args.append("-e")
        if history:
            args += ["-S", "-"]
        return self.tmux(*args)

    def wait_for(self, window: str, ready: Callable[[str], bool], what: str, timeout: float = 60.0,
                 history: bool = False) -> str:
        """Poll the pane until `ready(text)`; the text. On timeout the assertion shows the pane."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.capture(window, history=history)
            if ready(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"pane {window!r}: no {what} within {timeout:.0f} s; it shows:\n{text}")
            time.sleep(0.25)

    def alive(self, window: str) -> bool:
        return self.tmux("display-message", "-p", "-t", self.target(window), "#{pane_dead}").strip() == "0"

    def keys(self, window: str, *keys: str) -> None:
        """Type keys into the pane (tmux key names: C-c, Enter, ...)."""
        self.tmux("send-keys", "-t", self.target(window), *keys)

    def wait_exit(self, window: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.alive(window):
            if time.monotonic() > deadline:
                raise AssertionError(f"pane {window!r}: command still running after {timeout:.0f} s:\n"
                                     f"{self.capture(window)}")
            time.sleep(0.2)

    def close(self) -> None:
        """Stop every command still running here (TERM, then KILL), then the server. Only a
        pane that is not dead is signalled: its pid is still its command's, never a reused one."""
        running = [w for w in self.pids if self._alive_quietly(w)]
        for window in running:
            _signal(self.pids[window], signal.SIGTERM)
        deadline = time.monotonic() + 30
        for window in running:
            while self._alive_quietly(window) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self._alive_quietly(window):
                _signal(self.pids[window], signal.SIGKILL)
        subprocess.run(["tmux", "-L", self.socket_name, "-f", "/dev/null", "kill-server"],
                       capture_output=True, timeout=30)

    def _alive_quietly(self, window: str) -> bool:
        try:
            return self.alive(window)
        except (AssertionError, subprocess.TimeoutExpired):
            return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
