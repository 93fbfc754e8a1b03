"""A pip install of the project carries the BPF C sources, where the agent looks for them."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_bpf_sources_and_the_installed_agent_finds_them(tmp_path: Path) -> None:
    src = tmp_path / "src"      # a copy: setuptools writes build/ next to the sources
    for part in ("sensor", "rules", "alerts", "bpf"):
        shutil.copytree(REPO / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(tmp_path / "wheels"), str(src)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "wheels").glob("netvigil-*.whl"))
    sources = sorted(p for p in (REPO / "bpf").iterdir() if p.suffix in (".c", ".h"))
    with zipfile.ZipFile(wheel) as zf:
        for src in sources:
            assert zf.read(f"bpf/{src.name}") == src.read_bytes(), src.name
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    found = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import sensor.bpf_program as b; "
         "print(b.__file__); print(b.bpf_source_dir())", str(site)],
        check=True, capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}).stdout.split()
    assert found[0].startswith(str(site))                   # the installed copy, not the checkout
    assert Path(found[1]) == site / "bpf"
    assert sorted(p.name for p in (site / "bpf").iterdir() if p.suffix in (".c", ".h")) == [p.name for p in sources]
