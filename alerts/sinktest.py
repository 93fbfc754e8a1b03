"""`netvigil sinks test`: send one test alert straight to each configured sink, in parallel."""
from __future__ import annotations

import dataclasses
import threading
import time
import uuid as _uuid
from collections.abc import Sequence

from alerts.config import AlertsConfig, SinkConfig, resolve_hostname
from alerts.errors import AlertsError, DeliveryError
from alerts.model import Alert
from alerts.secrets import Redactor
from alerts.sinks import build_sink

TEST_RULE = "netvigil sinks test"


@dataclasses.dataclass
class SinkTestResult:
    """What happened when the test alert was sent to one sink."""

    name: str
    description: str
    ok: bool
    detail: str
    elapsed_s: float = 0.0


def make_test_alert(hostname: str, sink: str) -> Alert:
    """The alert `sinks test` sends (priority Notice, tag netvigil_test)."""
    return Alert(time_ns=time.time_ns(), rule=TEST_RULE, priority="Notice",
                 output=f"netvigil test alert: if you can read this, sink '{sink}' on {hostname} works",
                 output_fields={"netvigil.test": True, "proc.name": "netvigil"},
                 hostname=hostname, tags=("netvigil_test",), uuid=str(_uuid.uuid4()))


def _one(sc: SinkConfig, hostname: str, redactor: Redactor, out: SinkTestResult) -> None:
    started = time.perf_counter()
    try:
        sink = build_sink(sc.name, sc.type, sc.settings, timeout_s=sc.delivery.timeout_s,
                          redactor=redactor)
        out.description = sink.describe()
        try:
            sink.deliver([make_test_alert(hostname, sc.name)])
        finally:
            sink.close()
        out.ok, out.detail = True, "delivered"
    except DeliveryError as exc:
        out.detail = redactor(str(exc))
    except AlertsError as exc:
        out.detail = redactor(str(exc))
    out.elapsed_s = time.perf_counter() - started


def run_sink_tests(config: AlertsConfig, names: Sequence[str] = ()) -> list[SinkTestResult]:
    """Send a test alert to every enabled sink (or only `names`); routing is bypassed."""
    selected = [sc for sc in config.sinks if (sc.name in names if names else sc.enabled)]
    missing = sorted(set(names) - {sc.name for sc in config.sinks})
    if missing:
        raise AlertsError(f"{config.source}: no sink named {', '.join(missing)} in alerts.sinks")
    hostname = resolve_hostname(config)
    redactor = Redactor()
    results = [SinkTestResult(sc.name, sc.type, False, "no answer") for sc in selected]
    threads = []
    for sc, res in zip(selected, results):
        t = threading.Thread(target=_one, args=(sc, hostname, redactor, res), daemon=True)
        t.start()
        threads.append((t, sc, res))
    for t, sc, res in threads:
        t.join(sc.delivery.timeout_s * 2 + 1.0)
        if t.is_alive():
            res.detail = f"no answer within {sc.delivery.timeout_s * 2 + 1.0:g} s"
    return results
