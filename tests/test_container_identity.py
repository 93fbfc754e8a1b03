"""Container and pod identity from the cgroup paths of the common runtimes."""
from __future__ import annotations

import pytest

from sensor.container_identity import CgroupResolver, identity_from_path, identity_from_proc

CID = "4f5ddbbdd6a4e1a6e1b2b0c65a5b26ad1e24e1d4e1a6e1b2b0c65a5b26ad1e2a"
POD = "1f0f9c4e-3b1a-4c51-9d4f-0a4f2c3e5b6d"


@pytest.mark.parametrize("path", [
    f"/docker/{CID}",
    f"/system.slice/docker-{CID}.scope",
    f"/kubepods/besteffort/pod{POD}/{CID}",
    f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD.replace('-', '_')}.slice/cri-containerd-{CID}.scope",
    f"/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/crio-{CID}.scope",
    f"/machine.slice/libpod-{CID}.scope",
])
def test_runtime_paths_give_the_short_container_id(path: str) -> None:
    assert identity_from_path(path).container_id == CID[:12]


def test_kubernetes_paths_give_the_pod_uid_with_dashes() -> None:
    systemd_style = f"/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/cri-containerd-{CID}.scope"
    assert identity_from_path(systemd_style).pod_uid == POD
    assert identity_from_path(f"/kubepods/besteffort/pod{POD}/{CID}").pod_uid == POD


@pytest.mark.parametrize("path", ["/", "/user.slice/user-0.slice/session-1.scope", "/system.slice/ssh.service"])
def test_host_paths_are_host(path: str) -> None:
    ident = identity_from_path(path)
    assert (ident.container_id, ident.pod_uid) == ("host", None)


def test_proc_cgroup_file_with_v1_and_v2_lines(tmp_path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text(f"4:memory:/docker/{CID}\n0::/\n")
    assert identity_from_proc(42, str(tmp_path)).container_id == CID[:12]
    assert identity_from_proc(43, str(tmp_path)).container_id == "host"  # vanished process


def test_resolver_maps_directory_inodes_to_paths_and_rescans_on_miss(tmp_path) -> None:
    resolver = CgroupResolver(str(tmp_path), rescan_interval_s=3600)
    leaf = tmp_path / "kubepods" / f"pod{POD}" / CID
    assert resolver.path(12345) is None
    leaf.mkdir(parents=True)  # created after the first scan: a new id triggers a rescan
    ident = resolver.identity(leaf.stat().st_ino)
    assert ident is not None and ident.container_id == CID[:12] and ident.pod_uid == POD
    assert resolver.path(leaf.stat().st_ino) == f"/kubepods/pod{POD}/{CID}"


def test_proc_identity_reads_the_file_each_time_and_caches_the_parse(tmp_path) -> None:
    from sensor.container_identity import ProcIdentity

    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text("4:memory:/\n0::/\n")
    ident = ProcIdentity(str(tmp_path))
    assert ident(42).container_id == "host"
    # the process moved into a container's v1 cgroup (runc does this before exec)
    (tmp_path / "42" / "cgroup").write_text(f"4:memory:/docker/{CID}\n0::/\n")
    assert ident(42).container_id == CID[:12]
    assert ident(43).container_id == "host"  # vanished process


def test_v1_hierarchies_are_listed_from_a_cgroup_file(tmp_path) -> None:
    from sensor.cgroups import v1_hierarchies

    hybrid = tmp_path / "hybrid"
    hybrid.write_text("9:name=systemd:/\n4:memory:/x\n0::/\n")
    pure = tmp_path / "pure"
    pure.write_text("0::/user.slice\n")
    assert v1_hierarchies(str(hybrid)) == ["name=systemd", "memory"]
    assert v1_hierarchies(str(pure)) == []
