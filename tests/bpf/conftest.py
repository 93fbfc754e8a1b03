"""Shared fixtures for tests that load real BPF programs.

One sensor on the syscalls hook set is loaded per test session (BCC compiles at load
time) and shared, and one on the cgroup hook set (the default where the kernel allows
it) per module that asks for it; each test starts with an empty event list. These tests
need root and a BPF-capable kernel: they fail, not skip, where BPF is missing.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from sensor.agent import Sensor, SensorOptions

Event = dict[str, Any]


class LiveSensor:
    """A loaded sensor plus the events it delivered since the last `clear()`."""

    def __init__(self, options: SensorOptions | None = None) -> None:
        self.events: list[Event] = []
        self.sensor = Sensor(self.events.append, options)

    def clear(self) -> None:
        self.sensor.drain()
        self.events.clear()

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        """The first event matching predicate, polling the ring buffer until timeout."""
        return self.wait_for_all(predicate, 1, timeout)[0]

    def wait_for_all(self, predicate: Callable[[Event], bool], count: int, timeout: float = 5.0) -> list[Event]:
        """At least `count` matching events, or an assertion error listing what was seen."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events if predicate(e)]
            if len(found) >= count or time.monotonic() > deadline:
                break
            self.sensor.poll(50)
        assert len(found) >= count, f"expected {count} matching events, got {len(found)}: {found[:5]}"
        return found

    def of_pid(self, pid: int, etype: str) -> Callable[[Event], bool]:
        return lambda e: e.get("proc.pid") == pid and e.get("evt.type") == etype


@contextmanager
def loaded_sensor(hooks: str, **options: Any) -> Iterator[LiveSensor]:
    """A sensor on one network hook set (and other SensorOptions), started (programs
    attached) until the block ends."""
    live = LiveSensor(SensorOptions(hooks=hooks, **options))
    live.sensor.start()
    try:
        live.clear()
        yield live
    finally:
        live.sensor.close()


@pytest.fixture(scope="session")
def _loaded_sensor() -> Iterator[LiveSensor]:
    # the syscalls hook set: the facts only it sees (a dup2 at the call, the accepting
    # worker, failed binds) are tested on it; `live_cgroup` is the default set here
    with loaded_sensor("syscalls") as live:
        yield live


@pytest.fixture
def live(_loaded_sensor: LiveSensor) -> LiveSensor:
    """The shared sensor with an empty event list."""
    _loaded_sensor.clear()
    return _loaded_sensor


@pytest.fixture(scope="module")
def live_cgroup() -> Iterator[LiveSensor]:
    """A second sensor on the cgroup hook set (`sensor.hooks: cgroup`, what `auto`, the
    default, picks here), for the tests of that set; loaded per module that asks for it."""
    with loaded_sensor("cgroup") as live:
        yield live


@pytest.fixture(scope="session")
def live_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One `netvigil run` subprocess for the endpoint, reload and observe tests (live_agent.py)."""
    from live_agent import LiveAgent  # noqa: PLC0415

    agent = LiveAgent(tmp_path_factory.mktemp("agent"))
    try:
        agent.start()
        yield agent
    finally:
        agent.stop()


@pytest.fixture(scope="session")
def netvigil_image(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The image `make image` builds (deploy/image/build.sh: once per run, reused from its
    cache when its inputs are unchanged), unpacked with umoci (tests/kubelet_pod.py)."""
    from daemonset_node import ImageBuildError, build_image, unpack_image  # noqa: PLC0415

    try:
        cache = build_image(tmp_path_factory.mktemp("image-build") / "build.log")
    except ImageBuildError as exc:
        pytest.fail(str(exc), pytrace=False)
    return unpack_image(cache, tmp_path_factory.mktemp("image") / "bundle")
