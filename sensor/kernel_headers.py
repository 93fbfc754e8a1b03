"""The kernel headers BCC compiles the BPF programs against: one choice, made the same
way for the agent and for `netvigil doctor`.

In order: `$BCC_KERNEL_SOURCE` when set (the operator's choice); the running kernel's
headers at /lib/modules/$(uname -r)/build (on a node: /lib/modules and /usr/src mounted
read-only from the host); the generic headers an image ships (`$NETVIGIL_FALLBACK_HEADERS`;
the netvigil image sets /opt/netvigil/kernel, Debian's linux-headers-*-cloud-amd64).
Our BPF C reads no kernel-internal struct, so any recent headers do. `use()` exports
the fallback as `BCC_KERNEL_SOURCE`, which is where BCC looks.
"""
from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

OVERRIDE = "BCC_KERNEL_SOURCE"
FALLBACK = "NETVIGIL_FALLBACK_HEADERS"


@dataclass(frozen=True)
class KernelHeaders:
    """Where the headers are (None: nowhere) and why they were chosen."""

    path: str | None
    origin: str    # "BCC_KERNEL_SOURCE" | "running kernel" | "generic" | "none"
    detail: str


def has_headers(path: str | Path) -> bool:
    """A kernel build tree BCC can compile against (kconfig.h or a generated autoconf.h)."""
    p = Path(path)
    return (p / "include/linux/kconfig.h").exists() or (p / "include/generated/autoconf.h").exists()


def _release_of(path: str) -> str:
    """The release a generic tree names (its RELEASE file, as the image writes it), or its name."""
    try:
        return (Path(path) / "RELEASE").read_text().strip()
    except OSError:
        return os.path.basename(os.path.realpath(path))


def select(env: Mapping[str, str] | None = None, release: str | None = None,
           modules: str = "/lib/modules") -> KernelHeaders:
    """The headers BCC will use on this machine (see the module docstring)."""
    env = os.environ if env is None else env
    release = release or platform.release()
    if env.get(OVERRIDE):
        path = env[OVERRIDE]
        ok = has_headers(path)
        return KernelHeaders(path if ok else None, OVERRIDE if ok else "none",
                             f"${OVERRIDE}={path}" + ("" if ok else " holds no kernel headers"))
    build = f"{modules}/{release}/build"
    if has_headers(build):
        target = os.path.realpath(build)
        own = release in os.path.basename(target)
        return KernelHeaders(build, "running kernel", f"{build} -> {target}" + (
            "" if own else " (generic headers: fine, our BPF reads no kernel structs)"))
    fallback = env.get(FALLBACK)
    if fallback and has_headers(fallback):
        return KernelHeaders(fallback, "generic", f"no headers for {release} at {build}; the image's "
                             f"linux-headers-{_release_of(fallback)} at {fallback} (fine: our BPF reads "
                             "no kernel structs)")
    where = f"{build} missing" + (f", ${FALLBACK}={fallback} holds none" if fallback else "")
    return KernelHeaders(None, "none", where)


def use(env: MutableMapping[str, str] | None = None) -> KernelHeaders:
    """Choose the headers and, for the image's generic ones, point BCC at them."""
    env = os.environ if env is None else env
    chosen = select(env)
    if chosen.origin == "generic" and chosen.path:
        env[OVERRIDE] = chosen.path
        log.info("kernel headers: %s", chosen.detail)
    return chosen
