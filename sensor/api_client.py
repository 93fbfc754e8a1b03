"""The client side of the local API (`sensor.local_api`): one request, JSON lines back."""
from __future__ import annotations

import errno
import json
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sensor.endpoint_config import DEFAULT_SOCKET
from sensor.errors import SensorError


class ApiClientError(SensorError):
    """The agent's socket cannot be reached, or the agent refused the request."""


def socket_option(parser: Any) -> None:
    """`--socket PATH` on observe/status."""
    parser.add_argument("--socket", metavar="PATH", type=Path, default=DEFAULT_SOCKET,
                        help=f"the agent's local API socket (default {DEFAULT_SOCKET})")


def _connect(path: Path, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ApiClientError(f"{path}: permission denied (the socket is root-only unless the "
                                 f"agent's api.group allows your group)") from None
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise ApiClientError(f"{path}: no agent is serving (is `netvigil run` running? "
                                 f"--socket names another socket)") from None
        raise ApiClientError(f"{path}: {exc.strerror}") from None
    return sock


def request_lines(path: Path, request: Mapping[str, Any], *, timeout: float | None = 10.0) -> Iterator[dict[str, Any]]:
    """Send `request`, yield every JSON line of the answer until the agent closes."""
    sock = _connect(path, timeout)
    try:
        sock.sendall((json.dumps(request) + "\n").encode())
        buf = b""
        while True:
            try:
                chunk = sock.recv(1 << 16)
            except socket.timeout:
                raise ApiClientError(f"{path}: the agent did not answer within {timeout:.0f} s") from None
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line:
                    msg = json.loads(line)
                    if msg.get("kind") == "error":
                        raise ApiClientError(f"agent: {msg.get('error')}")
                    yield msg
    finally:
        sock.close()


def request_one(path: Path, request: Mapping[str, Any]) -> dict[str, Any]:
    """Send `request`, the single JSON object answering it."""
    for msg in request_lines(path, request):
        return msg
    raise ApiClientError(f"{path}: the agent closed the connection without an answer")
