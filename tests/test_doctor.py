"""`netvigil doctor` reports what works and what to fix."""
from __future__ import annotations

import json

from sensor import doctor
from sensor.cli import main


def test_report_lists_every_check_and_passes_here(capsys) -> None:
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in report]
    for expected in ("privileges", "BCC", "kernel headers", "tracefs", "bpffs", "cgroup v2", "BPF load"):
        assert expected in names
    # the default (auto) picks the cgroup hook set here (BTF, the cgroup2 root), and says
    # how AF_PACKET sockets are seen on a kernel that refuses fentry
    load = next(c for c in report if c["name"] == "BPF load")
    assert "network hooks: cgroup" in load["detail"], load
    assert "fentry" not in load["detail"] or "AF_PACKET sockets found by a /proc scan" in load["detail"], load
    assert all(c["status"] == "ok" for c in report), report


def test_missing_headers_is_a_failure_with_a_fix(monkeypatch) -> None:
    monkeypatch.setattr(doctor.platform, "release", lambda: "0.0.0-no-such-kernel")
    check = doctor.check_headers()
    assert check.status == "fail" and "bootstrap" in check.fix


def test_failure_gives_exit_code_1_and_skips_the_trial_load(monkeypatch, capsys) -> None:
    monkeypatch.setattr(doctor, "CHECKS", (lambda: doctor.Check("tracefs", "fail", "not mounted", "mount it"),))
    assert main(["doctor"]) == 1
    out = capsys.readouterr()
    assert "FAIL  tracefs" in out.out and "fix: mount it" in out.out and "BPF load" not in out.out


def test_missing_btf_says_which_slower_fallback_the_sensor_uses(tmp_path) -> None:
    check = doctor.check_kernel(str(tmp_path / "vmlinux"))
    assert check.status == "ok" and "no BTF" in check.detail and "hash map" in check.detail
    assert "CONFIG_DEBUG_INFO_BTF" in check.fix
    assert "task storage" in doctor.check_kernel(__file__).detail
