"""Which kernel headers BCC compiles against: the agent's choice and doctor's report agree."""
from __future__ import annotations

from pathlib import Path

from sensor import doctor, kernel_headers


def _tree(path: Path, release: str | None = None) -> Path:
    (path / "include/linux").mkdir(parents=True)
    (path / "include/linux/kconfig.h").write_text("")
    if release:
        (path / "RELEASE").write_text(release + "\n")
    return path


def test_the_running_kernels_headers_come_first(tmp_path: Path) -> None:
    build = _tree(tmp_path / "src/linux-headers-6.1.0-9-cloud-amd64")
    (tmp_path / "modules/6.1.0-9-cloud-amd64").mkdir(parents=True)
    (tmp_path / "modules/6.1.0-9-cloud-amd64/build").symlink_to(build)
    fallback = _tree(tmp_path / "generic", "6.1.0-40-cloud-amd64")
    env = {kernel_headers.FALLBACK: str(fallback)}
    chosen = kernel_headers.select(
        env, release="6.1.0-9-cloud-amd64", modules=str(tmp_path / "modules"))
    assert chosen.origin == "running kernel" and chosen.path == str(tmp_path / "modules/6.1.0-9-cloud-amd64/build")


def test_without_node_headers_the_images_generic_ones_are_used_and_bcc_pointed_at_them(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(kernel_headers.platform, "release", lambda: "0.0.0-no-such-kernel")
    fallback = _tree(tmp_path / "kernel", "6.1.0-40-cloud-amd64")
    env = {kernel_headers.FALLBACK: str(fallback)}
    chosen = kernel_headers.use(env)
    assert chosen.origin == "generic" and env[kernel_headers.OVERRIDE] == str(fallback)
    # doctor, run with the image's environment (kubectl exec), reports that same choice
    check = doctor.check_headers({kernel_headers.FALLBACK: str(fallback)})
    assert check.status == "ok" and check.detail.startswith("generic:")
    assert "linux-headers-6.1.0-40-cloud-amd64" in check.detail and str(fallback) in check.detail


def test_an_explicit_bcc_kernel_source_wins_and_a_bad_one_is_reported(tmp_path: Path) -> None:
    mine = _tree(tmp_path / "mine")
    assert kernel_headers.select({kernel_headers.OVERRIDE: str(mine)}).origin == "BCC_KERNEL_SOURCE"
    check = doctor.check_headers({kernel_headers.OVERRIDE: str(tmp_path / "empty")})
    assert check.status == "fail" and "holds no kernel headers" in check.detail


def test_no_headers_anywhere_is_a_failure_naming_where_it_looked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(kernel_headers.platform, "release", lambda: "0.0.0-no-such-kernel")
    check = doctor.check_headers({kernel_headers.FALLBACK: str(tmp_path / "none")})
    assert check.status == "fail"
    assert "/lib/modules/0.0.0-no-such-kernel/build missing" in check.detail and str(tmp_path / "none") in check.detail
    assert "mount the node's /lib/modules" in check.fix
