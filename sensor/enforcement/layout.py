"""Where enforcement pins its maps and programs in bpffs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE = Path("/sys/fs/bpf/netvigil")

# program function name -> (pin name, bpf_attach_type or None for tc)
CGROUP_PROGRAMS = {
    "nv_connect4": ("connect4", 10),
    "nv_connect6": ("connect6", 11),
    "nv_sendmsg4": ("sendmsg4", 14),
    "nv_sendmsg6": ("sendmsg6", 15),
    "nv_bind4": ("bind4", 8),
    "nv_bind6": ("bind6", 9),
}
HOOK_OF_ATTACH_TYPE = {at: pin for pin, at in CGROUP_PROGRAMS.values()}
TC_PROGRAMS = {
    "nv_tc_ingress": ("tc_ingress", "ingress"),
    "nv_tc_egress": ("tc_egress", "egress"),
}


@dataclass(frozen=True)
class PinLayout:
    """Paths under one base directory (default /sys/fs/bpf/netvigil)."""

    base: Path = DEFAULT_BASE

    @property
    def maps_dir(self) -> Path:
        """Directory of pinned maps."""
        return self.base / "maps"

    @property
    def progs_dir(self) -> Path:
        """Directory of pinned programs."""
        return self.base / "progs"

    def map_path(self, name: str) -> str:
        """Pinned path of a map."""
        return str(self.maps_dir / name)

    def prog_path(self, pin_name: str) -> str:
        """Pinned path of a program."""
        return str(self.progs_dir / pin_name)

    def installed(self) -> bool:
        """True when the deny map is pinned (the datapath was installed once)."""
        return Path(self.map_path("deny")).exists()
