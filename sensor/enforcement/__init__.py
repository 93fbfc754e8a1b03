"""netvigil enforcement: deny entries in pinned BPF maps, consulted by cgroup
sock_addr programs and tc classifiers (see docs/enforcement.md)."""
from sensor.enforcement.agent import Enforcement
from sensor.enforcement.config import EnforcementConfig, parse_enforce_config
from sensor.enforcement.datapath import EnforcementDatapath, remove_all
from sensor.enforcement.layout import DEFAULT_BASE, PinLayout
from sensor.enforcement.manager import EnforcementManager

__all__ = ["Enforcement", "EnforcementConfig", "EnforcementDatapath", "EnforcementManager",
           "PinLayout", "DEFAULT_BASE", "parse_enforce_config", "remove_all"]
