"""The DaemonSet's footprint on this node: image size, time from container start to
ready, the agent's memory in its container, and (with --make-test) `make test` time with
the image build included, cold and warm.

The container is the rendered DaemonSet's, run with runc as the kubelet would
(tests/kubelet_pod.py, tests/daemonset_node.py), for the base and the least-privilege
overlay. Memory: the agent's RSS from /metrics (`netvigil_agent_resident_memory_bytes`),
its peak RSS sampled with psutil from container start, and the container cgroup's peak
usage (what the memory limit counts, page cache included). Prints figures; never
passes or fails on them.

    flock /tmp/nv-suite.lock .venv/bin/python bench/bench_daemonset.py [--runs N] [--cold] [--make-test]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from daemonset_node import DaemonSetNode, build_image, unpack_image, wait_ready  # noqa: E402
from deploy_manifests import agent_container, render  # noqa: E402
from sensor import cgroups  # noqa: E402
from tests.agent_http import http_get, samples  # noqa: E402
from tests.kubelet_pod import KubeletPod, OciImage  # noqa: E402

MiB = 1024 * 1024


def _du(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _cgroup_peak(kubelet: KubeletPod) -> int | None:
    """Peak memory of the container's cgroup (cgroup2 memory.peak, else v1 max_usage)."""
    assert kubelet.running is not None
    rel = f"{kubelet.pod.cgroup}/{kubelet.running.id}".lstrip("/")
    for path in (cgroups.mount() / rel / "memory.peak", Path("/sys/fs/cgroup/memory") / rel / "memory.max_usage_in_bytes"):
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            continue
    return None


def _sample_peak(kubelet: KubeletPod, stop: threading.Event, peak: list[int]) -> None:
    """Peak RSS of the container's processes (psutil), every 20 ms until `stop`."""
    proc = None
    while not stop.is_set():
        try:
            proc = proc or psutil.Process(kubelet.pid())
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            peak[0] = max(peak[0], rss)
        except Exception:  # noqa: BLE001 - not started yet, or gone: keep sampling
            proc = None
        stop.wait(0.02)


def one_run(kustomization: str, image: OciImage) -> dict[str, float]:
    """Start the DaemonSet pod, wait for ready, read its memory, stop it."""
    tmp = Path(tempfile.mkdtemp(prefix="nv-bench-ds-"))
    node = DaemonSetNode(tmp)
    try:
        objs = node.edit(render(kustomization))
        container = agent_container(objs)
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
        kubelet = KubeletPod(objs, image, node.host, tmp / "pod", node.node)
        stop, peak = threading.Event(), [0]
        sampler = threading.Thread(target=_sample_peak, args=(kubelet, stop, peak), daemon=True)
        try:
            kubelet.start()
            sampler.start()
            ready = wait_ready(kubelet, port, "/readyz", 180)
            # a little work: a few hundred connects from the host
            subprocess.run([sys.executable, "-c", "import socket, sys\nfor _ in range(300): "
                            "socket.create_connection(('127.0.0.1', int(sys.argv[1]))).close()", str(node.port)],
                           check=True)
            time.sleep(2)
            m = samples(http_get(port, "/metrics")[1])
            rss = m[("netvigil_agent_resident_memory_bytes", ())]
            stop.set()
            sampler.join()
            cg_peak = _cgroup_peak(kubelet)
            _, stop_s = kubelet.stop()
        finally:
            stop.set()
            kubelet.close()
        return {"ready_s": ready, "rss": rss, "peak_rss": float(peak[0]),
                "cgroup_peak": float(cg_peak or 0), "stop_s": stop_s}
    finally:
        node.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _fig(values: list[float], scale: float = 1.0, unit: str = "") -> str:
    v = [x / scale for x in values]
    return f"min {min(v):.1f}{unit}  median {statistics.median(v):.1f}{unit}  max {max(v):.1f}{unit}"


def make_test(cache: Path) -> float:
    """Wall seconds of `make test` with the image cache at `cache`."""
    started = time.monotonic()
    rc = subprocess.run(["make", "-C", str(ROOT), "test"], env={**os.environ, "NETVIGIL_IMAGE_CACHE": str(cache)},
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    took = time.monotonic() - started
    if rc != 0:
        print(f"  (make test exited {rc})")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="container starts per kustomization (default 3)")
    ap.add_argument("--quick", action="store_true", help="one run each")
    ap.add_argument("--cold", action="store_true", help="also time a cold image build (empty cache)")
    ap.add_argument("--make-test", action="store_true", help="time `make test` with a cold and a warm image cache")
    args = ap.parse_args()
    runs = 1 if args.quick else args.runs
    work = Path(tempfile.mkdtemp(prefix="nv-bench-image-"))
    try:
        if args.cold:
            started = time.monotonic()
            build_image(work / "cold.log", cache_root=work / "cold-cache")
            print(f"image build, cold cache: {time.monotonic() - started:.0f} s")
        started = time.monotonic()
        cache = build_image(work / "build.log")
        print(f"image build, warm cache: {time.monotonic() - started:.1f} s ({cache})")
        image = unpack_image(cache, work / "bundle")
        print(f"image: {(cache / 'netvigil.oci.tar').stat().st_size / MiB:.0f} MiB oci-archive, "
              f"{_du(image.rootfs) / MiB:.0f} MiB unpacked")
        for kustomization in ("deploy/base", "deploy/overlays/least-privilege"):
            results = [one_run(kustomization, image) for _ in range(runs)]
            print(f"{kustomization} ({runs} runs):")
            print(f"  container start to /readyz 200: {_fig([r['ready_s'] for r in results], unit=' s')}")
            print(f"  agent RSS after 300 connects (/metrics): {_fig([r['rss'] for r in results], MiB, ' MiB')}")
            print(f"  agent peak RSS from start (psutil): {_fig([r['peak_rss'] for r in results], MiB, ' MiB')}")
            if any(r["cgroup_peak"] for r in results):
                print(f"  container cgroup peak usage: {_fig([r['cgroup_peak'] for r in results], MiB, ' MiB')}")
            print(f"  SIGTERM to exit: {_fig([r['stop_s'] for r in results], unit=' s')}")
        if args.make_test:
            cold_cache = work / "make-test-cache"
            print(f"make test, cold image cache: {make_test(cold_cache):.0f} s")
            print(f"make test, warm image cache: {make_test(cold_cache):.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
