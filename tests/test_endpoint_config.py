"""The `http:`, `api:`, `log:` and `reload:` sections, and the agent's log lines."""
from __future__ import annotations

import io
import json
import logging

import pytest

from sensor import logging_setup
from sensor.config import load_config
from sensor.endpoint_config import parse_listen_address, with_http_override
from sensor.errors import ConfigError


def test_defaults_serve_on_loopback_and_a_root_only_socket() -> None:
    cfg = load_config(None)
    assert (cfg.http.enabled, cfg.http.address, cfg.http.port) == (True, "127.0.0.1", 8765)
    assert str(cfg.api.socket) == "/run/netvigil/netvigil.sock" and cfg.api.group is None
    assert cfg.reload.watch and cfg.log.format is None


def test_sections_are_read(tmp_path) -> None:
    f = tmp_path / "nv.yaml"
    f.write_text("http: {address: 0.0.0.0, port: 9100, heartbeat_timeout: 30s}\n"
                 "api: {socket: /run/nv/x.sock, group: netvigil, reader_queue: 100}\n"
                 "log: {format: json, level: INFO}\nreload: {watch: false, interval: 500ms}\n")
    cfg = load_config(f)
    assert (cfg.http.address, cfg.http.port, cfg.http.heartbeat_timeout_s) == ("0.0.0.0", 9100, 30.0)
    assert (str(cfg.api.socket), cfg.api.group, cfg.api.reader_queue) == ("/run/nv/x.sock", "netvigil", 100)
    assert (cfg.log.format, cfg.log.level) == ("json", "info")
    assert (cfg.reload.watch, cfg.reload.interval_s) == (False, 0.5)


@pytest.mark.parametrize("text, message", [
    ("http: {port: 70000}\n", "http.port: an integer 0..65535"),
    ("http: {address: example.com}\n", "http.address: an IP address"),
    ("http: {adress: 1.2.3.4}\n", "http: unknown key(s) adress"),
    ("api: {socket: relative.sock}\n", "api.socket: an absolute path"),
    ("log: {format: xml}\n", "log.format: one of text, json"),
    ("reload: {watch: yes please}\n", "reload.watch: true or false"),
])
def test_bad_values_name_file_and_key(tmp_path, text: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert str(f) in str(err.value) and message in str(err.value)


def test_http_flag_overrides_the_config() -> None:
    cfg = load_config(None).http
    assert parse_listen_address("0.0.0.0:9000", "--http") == ("0.0.0.0", 9000)
    assert parse_listen_address("[::1]:9000", "--http") == ("::1", 9000)
    assert with_http_override(cfg, "10.0.0.1:80", False).address == "10.0.0.1"
    assert not with_http_override(cfg, None, True).enabled
    with pytest.raises(ConfigError, match="expected ADDR:PORT"):
        parse_listen_address("localhost", "--http")


def test_json_log_lines_parse_and_carry_time_and_level() -> None:
    out = io.StringIO()
    logging_setup.configure("json", "info", out)
    try:
        logging.getLogger("sensor.reload").warning("reload refused: %s", "r.yaml:3:5: bad")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("x").exception("unexpected")
        logging_setup.notice("sensor running", version="0.1")
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
    finally:
        logging_setup.configure("text", "warning")
    assert lines[0]["level"] == "warning" and lines[0]["msg"] == "reload refused: r.yaml:3:5: bad"
    assert lines[0]["logger"] == "sensor.reload" and lines[0]["time"].endswith("Z")
    assert "ValueError: boom" in lines[1]["error"]
    assert lines[2]["msg"] == "sensor running" and lines[2]["version"] == "0.1"


def test_text_logs_have_a_timestamp_and_level() -> None:
    out = io.StringIO()
    logging_setup.configure("text", "warning", out)
    try:
        logging.getLogger("sensor.x").info("hidden")
        logging.getLogger("sensor.x").error("shown")
    finally:
        logging_setup.configure("text", "warning")
    line, = out.getvalue().splitlines()
    stamp, level, rest = line.split(" ", 2)
    assert stamp.endswith("Z") and len(stamp) == 24 and level == "ERROR" and rest == "sensor.x: shown"
