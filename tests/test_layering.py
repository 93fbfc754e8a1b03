"""DESIGN's package arrows: sensor uses alerts only through `alerts`, alerts and rules
import nothing from sensor."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(package: str) -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out += [(str(path.relative_to(ROOT)), a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                out.append((str(path.relative_to(ROOT)), node.module))
    return out


def test_sensor_uses_only_the_public_alerts_api() -> None:
    assert [(f, m) for f, m in _imports("sensor") if m.startswith("alerts.")] == []


@pytest.mark.parametrize("package", ["alerts", "rules"])
def test_alerts_and_rules_import_nothing_from_sensor(package: str) -> None:
    assert [(f, m) for f, m in _imports(package) if m == "sensor" or m.startswith("sensor.")] == []


def test_every_public_alerts_name_resolves() -> None:
    import alerts

    for name in alerts.__all__:
        assert getattr(alerts, name) is not None
