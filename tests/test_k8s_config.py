"""The `kubernetes:` config section and the doctor's Kubernetes check."""
from __future__ import annotations

from pathlib import Path

import pytest
from k8s_apiserver import FakeApiServer, make_pod

from sensor import doctor
from sensor.config import load_config
from sensor.errors import ConfigError


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "netvigil.yaml"
    path.write_text(text)
    return path


def test_kubernetes_section_parses_durations_and_defaults(tmp_path) -> None:
    cfg = load_config(_config(tmp_path, "kubernetes:\n  enabled: true\n  watch_timeout: 2m\n"
                                        "  deleted_pod_retention: 30s\n  node_name: n1\n")).kubernetes
    assert (cfg.enabled, cfg.watch_timeout_s, cfg.deleted_pod_retention_s, cfg.node_name) == ("true", 120.0, 30.0, "n1")
    assert load_config(_config(tmp_path, "sensor: {}\n")).kubernetes.enabled == "auto"


@pytest.mark.parametrize("body, message", [
    ("  enable: true\n", "unknown key(s) enable"),
    ("  enabled: maybe\n", "kubernetes.enabled: expected auto, true or false"),
    ("  page_size: -1\n", "kubernetes.page_size: expected a positive integer"),
    ("  backoff_max: soon\n", "kubernetes.backoff_max"),
    ("  backoff_initial: 10s\n  backoff_max: 1s\n", "backoff_max: must be at least backoff_initial"),
])
def test_bad_values_name_the_file_and_key(tmp_path, body, message) -> None:
    path = _config(tmp_path, "kubernetes:\n" + body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_doctor_reports_api_access_and_rbac_denial(tmp_path) -> None:
    with FakeApiServer() as api:
        api.create("pods", make_pod("web", "shop", node="node-1"))
        env = {"KUBECONFIG": str(api.kubeconfig(tmp_path / "kc")), "NODE_NAME": "node-1"}
        ok = doctor.check_kubernetes(env)
        assert ok.status == "ok" and "pods of node node-1 listable" in ok.detail
        api.forbid("pods")
        denied = doctor.check_kubernetes(env)
        assert denied.status == "warn" and "HTTP 403" in denied.detail and "get/list/watch" in denied.fix
        api.down()
        down = doctor.check_kubernetes(env)
        assert down.status == "warn" and "unreachable" in down.detail


def test_doctor_outside_a_cluster_is_fine_inside_one_it_warns(tmp_path) -> None:
    outside = doctor.check_kubernetes({"HOME": str(tmp_path)})
    assert outside.status == "ok" and "runtime metadata only" in outside.detail
    inside = doctor.check_kubernetes({"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    assert inside.status == "warn" and inside.fix
