"""The idempotency key in output_fields: the same for every delivery of one alert (also
after the spool), different between alerts, and it survives falcosidekick's new uuid."""
from __future__ import annotations

import uuid

from test_alerts_support import Receiver, make_alert

from alerts.model import ALERT_ID, Alert
from alerts.secrets import Redactor
from alerts.sinks import falcosidekick


def _as_falcosidekick_forwards(body: dict) -> dict:
    """falcosidekick gives every payload it receives a uuid of its own; output_fields pass."""
    return {**body, "uuid": str(uuid.uuid4())}


def test_redelivered_alert_keeps_its_key_through_falcosidekick() -> None:
    receiver = Receiver()
    try:
        sink = falcosidekick.FalcosidekickSink(
            "fsk", falcosidekick.parse_settings({"url": receiver.url}, "t", {}), timeout_s=2,
            redactor=Redactor())
        first, other = make_alert(1), make_alert(2)
        respooled = Alert.from_json(first.json_bytes)   # a retry comes back from the spool
        sink.deliver([first])
        sink.deliver([respooled])
        sink.deliver([other])
        forwarded = [_as_falcosidekick_forwards(r.json()) for r in receiver.wait_for(3)]
    finally:
        receiver.stop()
    assert len({f["uuid"] for f in forwarded}) == 3      # the uuid is no use behind falcosidekick
    keys = [f["output_fields"][ALERT_ID] for f in forwarded]
    assert keys == [first.uuid, first.uuid, other.uuid]  # the key is
    assert ALERT_ID not in respooled.output_fields       # stored once (as uuid), not twice
