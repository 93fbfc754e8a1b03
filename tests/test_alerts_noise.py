"""Noise control: aggregation of identical alerts, per-rule rate limit, nothing lost silently."""
from __future__ import annotations

import random

from test_alerts_support import make_alert

from alerts.config import AggregateConfig, NoiseConfig, RateLimitConfig
from alerts.model import SUPPRESSED_COUNT
from alerts.noise import NoiseController


def _weight(alerts) -> int:
    return sum(1 + a.output_fields.get(SUPPRESSED_COUNT, 0) for a in alerts)


def test_identical_alerts_in_a_window_become_one_with_a_count() -> None:
    nc = NoiseController(NoiseConfig(AggregateConfig(window_s=60, key_fields=("proc.exepath",)),
                                     RateLimitConfig(enabled=False)))
    first = nc.process(make_alert(0), now=0.0)
    assert len(first) == 1 and SUPPRESSED_COUNT not in first[0].output_fields  # heard at once
    for i in range(1, 43):
        assert nc.process(make_alert(i), now=float(i)) == []
    assert nc.due(now=59.0) == []
    [summary] = nc.due(now=60.0)
    assert summary.output == make_alert(42).output + " (and 41 more in the last 60 s)"
    assert summary.output_fields[SUPPRESSED_COUNT] == 41
    assert summary.uuid not in {make_alert(42).uuid}
    assert _weight(first + [summary]) == 43


def test_different_key_fields_are_not_aggregated() -> None:
    nc = NoiseController(NoiseConfig(AggregateConfig(key_fields=("fd.rport",)),
                                     RateLimitConfig(enabled=False)))
    out = [a for i in range(5) for a in nc.process(make_alert(i), now=0.0)]
    assert len(out) == 5  # make_alert gives each a distinct fd.rport


def test_single_held_alert_is_delivered_as_itself() -> None:
    nc = NoiseController(NoiseConfig(AggregateConfig(window_s=10, key_fields=()),
                                     RateLimitConfig(enabled=False)))
    nc.process(make_alert(0), now=0.0)
    second = make_alert(1)
    nc.process(second, now=1.0)
    assert nc.due(now=10.0) == [second]  # same uuid, no suffix


def test_rate_limit_per_rule_with_summary() -> None:
    nc = NoiseController(NoiseConfig(AggregateConfig(enabled=False),
                                     RateLimitConfig(rate_per_s=1.0, burst=5, report_interval_s=30)))
    out = [a for i in range(20) for a in nc.process(make_alert(i), now=0.0)]
    assert len(out) == 5
    other_rule = nc.process(make_alert(99, rule="Other rule"), now=0.0)
    assert len(other_rule) == 1  # buckets are per rule
    assert nc.due(now=29.0) == []
    [summary] = nc.due(now=30.0)
    assert summary.output.endswith("(and 14 more in the last 30 s, rate limited)")
    assert summary.output_fields["netvigil.suppressed_reason"] == "rate_limit"
    assert _weight(out + [summary]) == 20


def test_every_alert_is_accounted_for_under_random_load() -> None:
    rng = random.Random(7)
    nc = NoiseController(NoiseConfig(AggregateConfig(window_s=5, key_fields=("fd.rport",)),
                                     RateLimitConfig(rate_per_s=2, burst=3, report_interval_s=4)))
    emitted, now = [], 0.0
    for _ in range(2000):
        now += rng.random() * 0.05
        i = rng.randrange(4)
        emitted += nc.process(make_alert(i, rule=f"rule-{rng.randrange(3)}"), now)
        emitted += nc.due(now)
    emitted += nc.flush_all(now)
    assert _weight(emitted) == 2000
    stats = nc.stats()
    assert stats["received"] == 2000 and stats["aggregated"] > 0 and stats["rate_limited"] > 0
