"""Safety list: what is never denied."""
from __future__ import annotations

import pytest

from sensor.enforcement.errors import ConfigError
from sensor.enforcement.keys import DenyKey, SafeKey
from sensor.enforcement.safety import (
    SafetyList, kubernetes_api_server, parse_safety_item, resolv_conf_nameservers,
)


def test_resolv_conf_nameservers(tmp_path) -> None:
    f = tmp_path / "resolv.conf"
    f.write_text("# c\nsearch x\nnameserver 10.96.0.10\nnameserver fe80::1%eth0\nnameserver bogus\n")
    assert resolv_conf_nameservers(str(f)) == ["10.96.0.10", "fe80::1"]
    assert resolv_conf_nameservers(str(tmp_path / "missing")) == []


def test_kubernetes_api_server_from_env() -> None:
    assert kubernetes_api_server({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}) == [SafeKey.build("10.96.0.1")]
    assert kubernetes_api_server({}) == []
    assert kubernetes_api_server({"KUBERNETES_SERVICE_HOST": "kubernetes.default"}) == []


def test_defaults_cover_loopback_dns_and_api_server(tmp_path) -> None:
    f = tmp_path / "resolv.conf"
    f.write_text("nameserver 192.0.2.53\n")
    s = SafetyList.build(resolv_conf=str(f), env={"KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    for cidr in ("127.0.0.1/32", "127.5.0.0/16", "::1/128", "192.0.2.53/32", "10.96.0.1/32"):
        assert s.covers(DenyKey.build(0, "egress", "any", 0, cidr)), cidr
    assert not s.covers(DenyKey.build(0, "egress", "any", 0, "192.0.2.0/24"))  # only contains it
    assert not s.covers(DenyKey.build(0, "egress", "any", 0, "203.0.113.7/32"))
    off = SafetyList.build(loopback=False, dns=False, kubernetes_api=False)
    assert not off.covers(DenyKey.build(0, "egress", "any", 0, "127.0.0.1/32"))


def test_port_entries_protect_only_that_port() -> None:
    s = SafetyList(frozenset({parse_safety_item("port 22", "x"),
                              parse_safety_item("10.0.0.0/8 port 443", "x")}))
    assert s.covers(DenyKey.build(0, "ingress", "tcp", 22, "::/0"))
    assert s.covers(DenyKey.build(0, "egress", "tcp", 443, "10.1.0.0/16"))
    assert not s.covers(DenyKey.build(0, "egress", "tcp", 80, "10.1.0.0/16"))


@pytest.mark.parametrize("item", ["nonsense here", "10.0.0.0/40", {"cidr": "1.2.3.4", "prt": 1}, 70000])
def test_bad_safety_items_name_their_place(item: object) -> None:
    with pytest.raises(ConfigError, match="cfg.yaml"):
        parse_safety_item(item, "cfg.yaml: enforce.safety.extra[0]")
