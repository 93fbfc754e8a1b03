"""Per-sink delivery counters as `netvigil run` prints them."""
from __future__ import annotations

from pathlib import Path

from test_alerts_support import Receiver, config_for, make_alert, wait_until

from alerts.report import format_stats, format_status
from alerts.router import AlertRouter


def test_counters_table_and_status_line(tmp_path: Path) -> None:
    good, down = Receiver(), Receiver()
    down.stop()
    router = AlertRouter(config_for({
        "good": {"type": "webhook", "url": good.url},
        "down": {"type": "falcosidekick", "url": down.url, "min_priority": "Error"}}), tmp_path)
    router.start()
    try:
        for i in range(3):
            router.submit(make_alert(i, priority="Critical" if i else "Notice"))
        good.wait_for(3)
        wait_until(lambda: router.stats()["down"]["spool_pending"] == 2, what="spooled")
        wait_until(lambda: router.stats()["good"]["delivered"] == 3, what="delivered")
        status = format_status(router.stats())
        table = format_stats(router.stats(), router.noise_stats())
    finally:
        router.stop(0.5)
        good.stop()
    assert status.startswith("good ok 3 sent | down FAILING 0 sent 2 spooled")
    lines = table.splitlines()
    assert lines[0].split() == ["sink", "type", "state", "delivered", "failed", "spooled",
                                "in", "spool", "dead-lettered", "queued", "filtered"]
    good_row, down_row = lines[1].split(), lines[2].split()
    assert good_row[:4] == ["good", "webhook", "ok", "3"]
    assert down_row[:3] == ["down", "falcosidekick", "failing"]
    assert down_row[-1] == "1"  # the Notice alert was filtered out by min_priority
    assert any(line.startswith("down: last error:") and "Connection" in line for line in lines)
    assert lines[-1].startswith("noise control: 3 received")
