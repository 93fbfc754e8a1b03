"""cgroup2 mount discovery and id <-> path mapping (sensor.cgroups), on a directory tree."""
from __future__ import annotations

import pytest

from sensor import cgroups


def test_mount_is_found_in_a_hybrid_mounts_file(tmp_path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("tmpfs /sys/fs/cgroup tmpfs ro 0 0\n"
                      "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n")
    assert str(cgroups.mount(str(mounts))) == "/sys/fs/cgroup/unified"
    mounts.write_text("tmpfs /sys/fs/cgroup tmpfs ro 0 0\n")
    assert cgroups.find_mount(str(mounts)) is None
    with pytest.raises(cgroups.CgroupError, match="no cgroup2"):
        cgroups.mount(str(mounts))


def test_index_gives_paths_parents_and_forgets_removed_cgroups(tmp_path) -> None:
    leaf = tmp_path / "kubepods" / "pod1" / "ctr"
    leaf.mkdir(parents=True)
    index = cgroups.CgroupIndex(tmp_path, rescan_interval_s=0)
    leaf_id = cgroups.cgroup_id(leaf)
    assert index.path(leaf_id) == "/kubepods/pod1/ctr"
    assert index.full_path(leaf_id) == leaf
    assert index.parent_of(leaf_id) == cgroups.cgroup_id(leaf.parent)
    assert index.parent_of(cgroups.cgroup_id(tmp_path)) is None  # the root has no parent
    leaf.rmdir()
    assert index.full_path(leaf_id) is None and index.parent_of(leaf_id) is None


def test_resolve_accepts_relative_and_absolute_paths_and_names_missing_ones(tmp_path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert cgroups.resolve("/a/b", tmp_path) == tmp_path / "a" / "b"
    assert cgroups.resolve(tmp_path / "a", tmp_path) == tmp_path / "a"
    with pytest.raises(cgroups.CgroupError, match="/nope"):
        cgroups.resolve("/nope", tmp_path)


def test_pid_cgroup_id_reads_the_v2_line_and_is_zero_when_unknown(tmp_path) -> None:
    root, proc = tmp_path / "cg", tmp_path / "proc"
    (root / "system.slice" / "x.service").mkdir(parents=True)
    (proc / "7").mkdir(parents=True)
    (proc / "7" / "cgroup").write_text("4:memory:/elsewhere\n0::/system.slice/x.service\n")
    lookup = cgroups.pid_cgroup_id_reader(root, str(proc))
    assert lookup(7) == cgroups.cgroup_id(root / "system.slice" / "x.service")
    assert cgroups.proc_cgroup_path(7, root, str(proc)) == root / "system.slice" / "x.service"
    assert lookup(8) == 0 and cgroups.pid_cgroup_id(7, None, str(proc)) == 0
    with pytest.raises(cgroups.CgroupError):
        cgroups.proc_cgroup_path(8, root, str(proc))
