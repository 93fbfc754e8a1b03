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
