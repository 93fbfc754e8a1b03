"""Container metadata from runtime bundles laid out as containerd's CRI and CRI-O write them."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

from sensor.k8s.runtime import RuntimeMetadata, RuntimeRoots, split_image


def _cid() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def _containerd_bundle(prefix: Path, cid: str, annotations: dict[str, str], ns: str = "k8s.io") -> Path:
    bundle = prefix / "run/containerd/io.containerd.runtime.v2.task" / ns / cid
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.1.0", "annotations": annotations}))
    return bundle


def _crio_bundle(prefix: Path, cid: str, annotations: dict[str, str]) -> Path:
    userdata = prefix / "run/containers/storage/overlay-containers" / cid / "userdata"
    userdata.mkdir(parents=True)
    (userdata / "config.json").write_text(json.dumps({"ociVersion": "1.1.0", "annotations": annotations}))
    return userdata


def _cri(pod_uid: str, sandbox: str, **extra: str) -> dict[str, str]:
    return {"io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": "web",
            "io.kubernetes.cri.image-name": "registry.example:5000/shop/web:1.4.2",
            "io.kubernetes.cri.sandbox-name": "web-7d9f8-abcde",
            "io.kubernetes.cri.sandbox-namespace": "shop",
            "io.kubernetes.cri.sandbox-uid": pod_uid,
            "io.kubernetes.cri.sandbox-id": sandbox, **extra}


def test_containerd_bundle_found_by_short_id(tmp_path: Path) -> None:
    cid, sandbox, uid = _cid(), _cid(), str(uuid.uuid4())
    _containerd_bundle(tmp_path, cid, _cri(uid, sandbox))
    meta = RuntimeMetadata(RuntimeRoots(prefix=str(tmp_path))).lookup(cid[:12])
    assert meta is not None and meta.runtime == "containerd" and meta.container_id == cid
    assert meta.fields() == {
        "container.name": "web", "container.image": "registry.example:5000/shop/web:1.4.2",
        "container.image.repository": "registry.example:5000/shop/web",
        "container.image.tag": "1.4.2", "k8s.pod.name": "web-7d9f8-abcde", "k8s.ns.name": "shop",
        "k8s.pod.uid": uid}


def test_crio_bundle_with_pod_labels_from_its_sandbox(tmp_path: Path) -> None:
    cid, sandbox, uid = _cid(), _cid(), str(uuid.uuid4())
    pod = {"io.kubernetes.pod.name": "api-0", "io.kubernetes.pod.namespace": "payments",
           "io.kubernetes.pod.uid": uid}
    _crio_bundle(tmp_path, sandbox, {**pod, "io.kubernetes.cri-o.ContainerType": "sandbox",
                                     "io.kubernetes.cri-o.Labels": json.dumps(
                                         {"app": "api", "io.kubernetes.pod.uid": uid})})
    _crio_bundle(tmp_path, cid, {**pod, "io.kubernetes.cri-o.ContainerType": "container",
                                 "io.kubernetes.container.name": "api",
                                 "io.kubernetes.cri-o.ImageName": "quay.io/acme/api@sha256:" + "ab" * 32,
                                 "io.kubernetes.cri-o.SandboxID": sandbox,
                                 "io.kubernetes.cri-o.Labels": json.dumps(
                                     {"io.kubernetes.container.name": "api"})})
    meta = RuntimeMetadata(RuntimeRoots(prefix=str(tmp_path))).lookup(cid[:12])
    assert meta is not None and meta.runtime == "cri-o"
    fields = meta.fields()
    assert fields["k8s.pod.name"] == "api-0" and fields["k8s.ns.name"] == "payments"
    assert fields["container.name"] == "api" and fields["container.image.repository"] == "quay.io/acme/api"
    assert fields["k8s.pod.labels"] == {"app": "api"}


def test_listing_is_cached_and_refreshed_on_a_miss_at_most_once_per_interval(tmp_path: Path) -> None:
    runtime = RuntimeMetadata(RuntimeRoots(prefix=str(tmp_path)), rescan_interval_s=60)
    uid = str(uuid.uuid4())
    first = _cid()
    _containerd_bundle(tmp_path, first, _cri(uid, _cid()))
    assert runtime.lookup(first[:12]) is not None
    scans = runtime.scans
    for _ in range(1000):
        assert runtime.lookup(first[:12]) is not None
    missing = _cid()
    for _ in range(1000):
        assert runtime.lookup(missing[:12]) is None
    assert runtime.scans == scans + 1          # one rescan for the unknown id, not one per event
    later = _cid()
    _containerd_bundle(tmp_path, later, _cri(uid, _cid()))
    assert runtime.lookup(later[:12]) is not None   # a new id rescans at once
    runtime.forget(first[:12])
    assert first[:12] not in runtime.cached()


def test_bundles_without_cri_annotations_and_garbage_are_no_metadata(tmp_path: Path) -> None:
    plain, broken = _cid(), _cid()
    _containerd_bundle(tmp_path, plain, {"org.opencontainers.image.title": "x"}, ns="default")
    bad = _containerd_bundle(tmp_path, broken, {})
    (bad / "config.json").write_text("{not json")
    runtime = RuntimeMetadata(RuntimeRoots(prefix=str(tmp_path)))
    assert runtime.lookup(plain[:12]) is None
    assert runtime.lookup(broken[:12]) is None and runtime.read_errors == 1
    assert RuntimeMetadata(RuntimeRoots(prefix=str(tmp_path / "absent"))).lookup(plain[:12]) is None


def test_image_references_split_into_repository_and_tag() -> None:
    assert split_image("nginx:1.25") == ("nginx", "1.25")
    assert split_image("localhost:5000/a/b") == ("localhost:5000/a/b", "")
    assert split_image("docker.io/library/redis:7@sha256:" + "0" * 64) == ("docker.io/library/redis", "7")
