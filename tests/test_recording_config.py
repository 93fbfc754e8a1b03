"""The `record:` config section: sizes, durations, and errors naming file and key."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from sensor.recording.config import RecordConfigError, parse_record_config


def test_defaults_and_human_units(tmp_path: Path) -> None:
    assert parse_record_config(None, "c.yaml").max_segment_bytes == 64 << 20
    key = tmp_path / "k"
    key.write_text("secret\n")
    cfg = parse_record_config({"dir": str(tmp_path), "max_segment_size": "8MiB",
                               "max_segment_age": "10m", "max_total_size": "2GB",
                               "flush_interval": "500ms", "key_file": str(key)}, "c.yaml")
    assert (cfg.directory, cfg.max_segment_bytes, cfg.max_segment_age_s, cfg.max_total_bytes,
            cfg.flush_interval_s) == (tmp_path, 8 << 20, 600.0, 2 * 10**9, 0.5)
    assert cfg.recorder_kwargs()["key"] == b"secret"


@pytest.mark.parametrize("section, message", [
    ({"max_segment_size": "lots"}, "c.yaml: record.max_segment_size: expected a size"),
    ({"max_segment_age": "-1h"}, "c.yaml: record.max_segment_age: expected a duration"),
    ({"enabled": "yes"}, "c.yaml: record.enabled: expected true or false"),
    ({"max_total_size": "1MiB"}, "smaller than max_segment_size"),
    ({"colour": 1}, "c.yaml: record: unknown key(s) colour"),
])
def test_bad_values_name_file_and_key(section: dict, message: str) -> None:
    with pytest.raises(RecordConfigError, match=re.escape(message)):
        parse_record_config(section, "c.yaml")
