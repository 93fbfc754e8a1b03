"""Kernel struct offsets from BTF, and the fallback when they cannot be had."""
from __future__ import annotations

from pathlib import Path

import pytest

from sensor.bpf_program import BTF_OFFSETS, PROCESS_SYSCALL_FALLBACK, kernel_offsets, sensor_sources
from sensor.btf import KERNEL_BTF, BtfError, KernelBtf


@pytest.fixture(scope="module")
def btf() -> KernelBtf:
    return KernelBtf.from_kernel()


def test_members_inside_anonymous_structs_are_found(btf: KernelBtf) -> None:
    # mm_struct keeps arg_start/arg_end inside an anonymous struct (randomized layout)
    start, end = btf.offset("mm_struct", "arg_start"), btf.offset("mm_struct", "arg_end")
    assert end == start + 8 and start > 0


def test_unknown_struct_or_member_is_a_typed_error(btf: KernelBtf) -> None:
    with pytest.raises(BtfError, match="no_such_struct"):
        btf.offset("no_such_struct", "mm")
    with pytest.raises(BtfError, match="no byte-aligned member arg_start"):
        btf.offset("task_struct", "arg_start")


def test_unreadable_or_garbage_btf_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(BtfError, match="cannot read"):
        KernelBtf.from_kernel(tmp_path / "missing")
    bad = tmp_path / "vmlinux"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(BtfError, match="not BTF"):
        KernelBtf.from_kernel(bad)


def test_program_falls_back_to_syscall_hooks_without_offsets(tmp_path: Path) -> None:
    (tmp_path / "vmlinux").write_bytes(b"garbage")
    assert kernel_offsets(True, str(tmp_path / "vmlinux")) == {}
    assert kernel_offsets(False) == {}
    assert PROCESS_SYSCALL_FALLBACK in sensor_sources({})
    offsets = kernel_offsets(True, str(KERNEL_BTF))
    assert set(offsets) == set(BTF_OFFSETS)
    assert PROCESS_SYSCALL_FALLBACK not in sensor_sources(offsets)


def test_struct_sizes_come_from_btf(btf: KernelBtf) -> None:
    regs = btf.size("pt_regs")
    assert regs > btf.offset("pt_regs", "orig_ax") >= 0
    with pytest.raises(BtfError, match="no_such_struct"):
        btf.size("no_such_struct")


def test_cgroup_hook_set_is_chosen_only_where_the_kernel_allows_it(tmp_path: Path) -> None:
    from sensor.bpf_program import NET_BTF_OFFSETS, NET_SOURCES, choose_hooks
    from sensor.errors import BPFUnavailableError

    from sensor import cgroups

    offsets = kernel_offsets(True, str(KERNEL_BTF))
    root = cgroups.mount()
    chosen = choose_hooks("auto", offsets, root)
    assert chosen.hooks == "cgroup" and chosen.cgroup_root == root
    assert set(NET_BTF_OFFSETS) <= set(chosen.offsets)
    assert sensor_sources(offsets, "cgroup")[-len(NET_SOURCES["cgroup"]):] == NET_SOURCES["cgroup"]
    assert choose_hooks("syscalls", offsets, root).hooks == "syscalls"
    # no cgroup2 mount, or no BTF: auto falls back, an explicit cgroup is an error naming why
    for process_offsets, mount, why in ((offsets, None, "no cgroup2"), ({}, root, "no usable BTF")):
        fallback = choose_hooks("auto", process_offsets, mount)
        assert fallback.hooks == "syscalls" and why in fallback.reason
        with pytest.raises(BPFUnavailableError, match=why):
            choose_hooks("cgroup", process_offsets, mount)
    (tmp_path / "vmlinux").write_bytes(b"garbage")
    assert choose_hooks("auto", offsets, root, str(tmp_path / "vmlinux")).hooks == "syscalls"
    # a cgroup2 mount that is not the root (inside a cgroup namespace) would cover a subtree
    assert "not the root cgroup" in choose_hooks("auto", offsets, tmp_path).reason
    with pytest.raises(BPFUnavailableError, match="not one of"):
        choose_hooks("kprobes", offsets, root)
