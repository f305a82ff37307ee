"""The collector with an injected clock and reader: deterministic ticks, events, resets.

``FakeHost`` stands in for :class:`cgstats.Host` (the collector's ``Source``):
its containers return samples that start from one captured from a real
kernel and advance by known amounts, or raise what a real read raises.
"""

from __future__ import annotations

import threading
from typing import Optional, Union

import attrs
import fixture_trees
import pytest
from samples import advance, captured

from cgstats import Collector, ContainerRef, Event, InvalidContainerId, Reading
from cgstats.errors import AmbiguousContainer, ContainerGone, ContainerNotFound, ParseError
from cgstats.model import Sample

pytestmark = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")

A = "a" * 64
B = "b" * 64
C = "c" * 64
GiB = 1 << 30


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeContainer:
    """What the kernel shows for one container: its sample now, or its failure."""

    def __init__(self, container_id: str, template: Sample, inode: int = 1) -> None:
        self.ref = ContainerRef(container_id, "docker", f"/docker/{container_id}", "/nonexistent")
        self.sample = attrs.evolve(template, id=container_id, cgroup=self.ref.cgroup)
        self.inode = inode
        self.failure: Optional[BaseException] = None
        self.present = True

    def tick(self, **amounts: int) -> None:
        self.sample = advance(self.sample, **amounts)


class FakeHandle:
    def __init__(self, fake: FakeContainer, host: FakeHost) -> None:
        self.fake = fake
        self.ref = fake.ref
        self.inode = fake.inode
        self.host = host
        self.closed = False

    def read(self) -> Sample:
        assert not self.closed
        fake = self.fake
        if not fake.present or fake.inode != self.inode:
            raise ContainerGone(fake.ref.id, "cpu.stat: No such device")
        if fake.failure is not None:
            raise fake.failure
        return fake.sample

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.host.open_handles -= 1


class FakeHost:
    cpu_count = 2

    def __init__(self, template: Sample) -> None:
        self.template = template
        self.by_id: dict[str, FakeContainer] = {}
        self.open_handles = 0
        self.closed = False
        self.list_calls = 0

    def add(self, container_id: str) -> FakeContainer:
        fake = FakeContainer(container_id, self.template)
        self.by_id[container_id] = fake
        return fake

    def containers(self) -> list[ContainerRef]:
        self.list_calls += 1
        return [f.ref for f in self.by_id.values() if f.present]

    def resolve(self, spec: str) -> ContainerRef:
        matches = [f.ref for f in self.by_id.values() if f.present and f.ref.id.startswith(spec)]
        if not matches:
            raise ContainerNotFound(spec, "no container ID starts with it")
        if len(matches) > 1:
            raise AmbiguousContainer(spec, [m.id for m in matches])
        return matches[0]

    def open(self, container: Union[str, ContainerRef]) -> FakeHandle:
        ref = container if isinstance(container, ContainerRef) else self.resolve(container)
        fake = self.by_id.get(ref.id)
        if fake is None or not fake.present:
            raise ContainerGone(ref.id, "no such cgroup")
        self.open_handles += 1
        return FakeHandle(fake, self)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def template() -> Sample:
    return captured(fixture_trees.available()[0])


@pytest.fixture
def fake(template: Sample) -> FakeHost:
    return FakeHost(template)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(
    fake: FakeHost, clock: Clock, containers: Optional[list[str]] = None, **kw: object
) -> tuple[Collector, list[Event]]:
    events: list[Event] = []
    collector = Collector(
        containers, step=10.0, host=fake, clock=clock, on_event=events.append, **kw
    )  # type: ignore[arg-type]
    return collector, events


def by_id(readings: list[Reading]) -> dict[str, Reading]:
    return {r.id: r for r in readings}


def test_rates_from_the_second_tick_on(fake: FakeHost, clock: Clock) -> None:
    a = fake.add(A)
    collector, events = make(fake, clock, [A])
    first = collector.tick()
    assert [r.id for r in first] == [A]
    assert first[0].rates.cpu_cores is None and not first[0].reset
    assert [(e.kind, e.container_id) for e in events] == [("appeared", A)]
    clock.now += 10.0
    a.tick(cpu_ns=5 * 10**9, read_bytes=10_000, pgfault=50)
    second = collector.tick()[0]
    assert second.rates.interval_s == pytest.approx(10.0)
    assert second.rates.cpu_cores == pytest.approx(0.5)
    assert second.rates.blkio_read_bytes_per_s == pytest.approx(1000)
    assert second.rates.pgfault_per_s == pytest.approx(5)
    assert not second.reset and not second.late
    d = second.to_dict()
    assert d["id"] == A and d["reset"] is False and d["rates"]["cpu_cores"] == pytest.approx(0.5)
    assert "events" not in d and "events" in first[0].to_dict()


def test_a_container_recreated_under_its_id_resets(fake: FakeHost, clock: Clock) -> None:
    a = fake.add(A)
    collector, events = make(fake, clock, [A])
    collector.tick()
    clock.now += 10
    a.inode = 2  # removed and created again: the held files say ENODEV
    a.sample = attrs.evolve(fake.template, id=A)  # counters start again from the template
    a.tick(cpu_ns=-(10**8))
    reading = collector.tick()[0]
    assert reading.reset and reading.rates.cpu_cores is None
    assert [e.kind for e in events] == ["appeared", "restarted"]
    assert [e.kind for e in reading.events] == ["restarted"]
    clock.now += 10
    a.tick(cpu_ns=10**9)
    after = collector.tick()[0]
    assert not after.reset and after.rates.cpu_cores == pytest.approx(0.1)


def test_counters_going_backwards_reset_without_negative_rates(
    fake: FakeHost, clock: Clock
) -> None:
    a = fake.add(A)
    collector, _ = make(fake, clock, [A])
    collector.tick()
    clock.now += 10
    a.tick(cpu_ns=-5000, read_bytes=100)
    reading = collector.tick()[0]
    assert reading.reset and reading.rates.cpu_cores is None
    assert reading.rates.blkio_read_bytes_per_s == pytest.approx(10)
    clock.now += 10
    a.tick(cpu_ns=10**9)
    assert collector.tick()[0].rates.cpu_cores == pytest.approx(0.1)  # delta restarted


def test_a_vanished_container_gives_one_gone_event_and_the_others_go_on(
    fake: FakeHost, clock: Clock
) -> None:
    a, _b = fake.add(A), fake.add(B)
    collector, events = make(fake, clock)
    collector.tick()
    a.present = False
    for _ in range(3):
        clock.now += 10
        assert [r.id for r in collector.tick()] == [B]
    assert [(e.kind, e.container_id) for e in events].count(("gone", A)) == 1
    assert fake.open_handles == 1


def test_an_unreadable_container_is_an_event_once_and_does_not_stop_the_others(
    fake: FakeHost, clock: Clock
) -> None:
    a, _b = fake.add(A), fake.add(B)
    collector, events = make(fake, clock, [A, B])
    collector.tick()
    for failure in (
        ParseError("cpu.stat", "not a number"),
        PermissionError(13, "denied"),
        RuntimeError("boom"),
    ):
        a.failure = failure
        for _ in range(2):
            clock.now += 10
            assert [r.id for r in collector.tick()] == [B]
    errors = [e for e in events if e.kind == "error"]
    assert [e.detail for e in errors] == [
        "ParseError: cannot parse cpu.stat: not a number",
        "PermissionError: [Errno 13] denied",
        "RuntimeError: boom",
    ]
    a.failure = None
    clock.now += 10
    assert {r.id for r in collector.tick()} == {A, B}


def test_discovery_rescans_at_its_own_pace(fake: FakeHost, clock: Clock) -> None:
    fake.add(A)
    collector, events = make(fake, clock, rescan_s=30.0)
    assert [r.id for r in collector.tick()] == [A]
    fake.add(B)
    clock.now += 10
    assert [r.id for r in collector.tick()] == [A]  # not rescanned yet
    clock.now += 25
    assert sorted(r.id for r in collector.tick()) == [A, B]
    assert fake.list_calls == 2
    assert [(e.kind, e.container_id) for e in events] == [("appeared", A), ("appeared", B)]


def test_a_container_that_comes_back_is_restarted_not_appeared(
    fake: FakeHost, clock: Clock
) -> None:
    a = fake.add(A)
    collector, events = make(fake, clock, rescan_s=10.0)
    collector.tick()
    a.present = False
    clock.now += 10
    assert collector.tick() == []
    a.present, a.inode = True, 7
    clock.now += 10
    reading = collector.tick()[0]
    assert reading.reset
    assert [e.kind for e in events] == ["appeared", "gone", "restarted"]


def test_named_containers_not_found_yet_are_retried(fake: FakeHost, clock: Clock) -> None:
    collector, events = make(fake, clock, ["abcd"], rescan_s=10.0)
    assert collector.tick() == []
    clock.now += 10
    assert collector.tick() == []
    assert [(e.kind, e.container_id) for e in events] == [("error", "abcd")]  # once, not per tick
    assert "no container ID starts with" in str(events[0].detail)
    fake.add("abcd" + "0" * 60)
    clock.now += 10
    assert len(collector.tick()) == 1
    assert events[-1].kind == "appeared"


def test_an_ambiguous_prefix_is_an_error_event(fake: FakeHost, clock: Clock) -> None:
    fake.add("abcd" + "1" * 60)
    fake.add("abcd" + "2" * 60)
    collector, events = make(fake, clock, ["abcd"])
    assert collector.tick() == []
    assert events[0].kind == "error" and "ambiguous" in str(events[0].detail).lower()


@pytest.mark.parametrize("spec", ["../../etc", "/sys/../..", "zz", "", "abc"])
def test_invalid_names_are_refused_at_once(fake: FakeHost, clock: Clock, spec: str) -> None:
    with pytest.raises(InvalidContainerId):
        make(fake, clock, [spec])
    collector, _ = make(fake, clock, [])
    with pytest.raises(InvalidContainerId):
        collector.add(spec)


def test_soft_limit_events_with_hysteresis(fake: FakeHost, clock: Clock) -> None:
    a = fake.add(A)
    collector, events = make(fake, clock, [A], soft_limit_bytes=GiB, soft_limit_hysteresis=0.1)
    kinds = []
    for working_set in (
        GiB // 2,
        GiB + 1,
        GiB + 2,
        int(GiB * 0.95),
        int(GiB * 0.89),
        GiB // 2,
        GiB + 5,
    ):
        a.sample = advance(a.sample, working_set_bytes=working_set)
        clock.now += 10
        kinds.append([e.kind for e in collector.tick()[0].events if e.kind.startswith("soft")])
    assert kinds == [
        [],
        ["soft_limit_exceeded"],
        [],
        [],  # 0.95 GiB: still above the 10 % hysteresis band
        ["soft_limit_cleared"],
        [],
        ["soft_limit_exceeded"],
    ]
    exceeded = next(e for e in events if e.kind == "soft_limit_exceeded")
    assert exceeded.value_bytes == GiB + 1 and exceeded.threshold_bytes == GiB


def test_soft_limit_as_fraction_of_the_hard_limit_and_the_containers_own(
    fake: FakeHost, clock: Clock, template: Sample
) -> None:
    assert template.memory is not None
    memory = attrs.evolve(template.memory, limit_bytes=1000, soft_limit_bytes=None, high_bytes=600)
    fake.template = attrs.evolve(template, memory=memory)
    a = fake.add(A)
    fraction, fraction_events = make(fake, clock, [A], soft_limit_fraction=0.8)
    own, own_events = make(fake, clock, [A])
    for working_set in (500, 700, 900):
        a.sample = advance(a.sample, working_set_bytes=working_set)
        fraction.tick()
        own.tick()
    assert [(e.kind, e.value_bytes, e.threshold_bytes) for e in fraction_events[1:]] == [
        ("soft_limit_exceeded", 900, 800)
    ]
    assert [(e.kind, e.value_bytes, e.threshold_bytes) for e in own_events[1:]] == [
        ("soft_limit_exceeded", 700, 600)  # v2 memory.high (v1 soft limit when set)
    ]


def test_containers_sharing_a_network_namespace_are_marked(fake: FakeHost, clock: Clock) -> None:
    a, b, c = fake.add(A), fake.add(B), fake.add(C)
    assert c.sample.net is not None
    c.sample = attrs.evolve(
        c.sample,
        net=attrs.evolve(c.sample.net, netns=c.sample.net.netns + 1, shared_with_host=True),
    )
    collector, _ = make(fake, clock)
    readings = by_id(collector.tick())
    assert readings[A].net_shared_with == (B,) and readings[A].net_counted is True
    assert readings[B].net_shared_with == (A,) and readings[B].net_counted is False
    assert readings[C].net_shared_with == () and readings[C].net_counted is False
    assert a.sample.net is not None and b.sample.net is not None


class BrokenSink:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def emit(self, readings: object) -> None:
        self.calls.append("emit")
        raise ConnectionRefusedError("transfer down")

    def emit_events(self, events: object) -> None:
        self.calls.append("emit_events")
        raise OSError("down")

    def flush(self) -> None:
        self.calls.append("flush")
        raise TimeoutError

    def close(self) -> None:
        self.calls.append("close")


class ListSink:
    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.events: list[Event] = []
        self.closed = False

    def emit(self, readings: list[Reading]) -> None:
        self.readings.extend(readings)

    def emit_events(self, events: list[Event]) -> None:
        self.events.extend(events)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_sinks_failing_never_reach_tick_and_close_closes_them(fake: FakeHost, clock: Clock) -> None:
    fake.add(A)
    broken, good = BrokenSink(), ListSink()

    def bad_callback(event: Event) -> None:
        raise ValueError("callback bug")

    collector = Collector([A], host=fake, clock=clock, sinks=[broken, good], on_event=bad_callback)  # type: ignore[arg-type]
    assert len(collector.tick()) == 1
    assert collector.flush(timeout=60)  # delivery is on each sink's own thread
    assert len(good.readings) == 1 and [e.kind for e in good.events] == ["appeared"]
    assert collector.sink_errors == 4  # callback, emit_events, emit, flush
    collector.close()
    assert broken.calls == ["emit_events", "emit", "flush", "flush", "close"]
    assert good.closed and fake.open_handles == 0
    assert not fake.closed  # a host the caller passed in stays the caller's
    with pytest.raises(ValueError):
        collector.tick()


def test_remove_by_id_prefix_and_add_back(fake: FakeHost, clock: Clock) -> None:
    fake.add(A), fake.add(B)
    collector, _ = make(fake, clock)
    collector.tick()
    collector.remove(A[:8])
    clock.now += 20
    assert [r.id for r in collector.tick()] == [B]  # and left out of rescans
    assert fake.open_handles == 1
    collector.add(A)
    assert sorted(r.id for r in collector.tick()) == [A, B]


def test_add_and_remove_from_many_threads_leave_nothing_behind(
    fake: FakeHost, clock: Clock
) -> None:
    ids = [f"{i:064x}" for i in range(1, 9)]
    for container_id in ids:
        fake.add(container_id)
    collector, _ = make(fake, clock, [])

    def churn(container_id: str) -> None:
        for _ in range(200):
            collector.add(container_id)
            collector.remove(container_id)

    threads = [threading.Thread(target=churn, args=(cid,)) for cid in ids]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        collector.tick()
    for thread in threads:
        thread.join()
    collector.tick()
    assert collector.tick() == [] and fake.open_handles == 0


def test_run_is_aligned_to_the_step_and_skips_missed_slots(fake: FakeHost, clock: Clock) -> None:
    fake.add(A)
    collector, _ = make(fake, clock, [A])
    starts: list[float] = []
    durations = iter([1.0, 2.5, 25.0, 1.0, 1.0])  # the third tick overruns two slots

    real_tick = collector.tick

    def timed_tick() -> list[Reading]:
        starts.append(clock.now)
        result = real_tick()
        clock.now += next(durations)
        return result

    def wait(timeout: float) -> bool:
        clock.now += timeout
        return False

    collector.tick = timed_tick  # type: ignore[method-assign]
    collector._stop.wait = wait  # type: ignore[method-assign]
    assert collector.run(count=5) == 5
    assert [s - starts[0] for s in starts] == [0.0, 10.0, 20.0, 50.0, 60.0]
    assert collector.overruns == 2


def test_stop_wakes_a_sleeping_loop(fake: FakeHost) -> None:
    fake.add(A)
    ticked = threading.Event()
    collector = Collector([A], step=3600.0, host=fake, on_event=lambda e: ticked.set())  # type: ignore[arg-type]
    collector.start()
    assert ticked.wait(10)
    assert collector.running
    collector.stop()
    assert not collector.running
    collector.close()
    assert fake.open_handles == 0


def test_late_ticks_are_flagged(fake: FakeHost, clock: Clock) -> None:
    fake.add(A)
    collector, _ = make(fake, clock, [A])
    collector.tick()
    clock.now += 14
    assert not collector.tick()[0].late
    clock.now += 16
    assert collector.tick()[0].late


@pytest.mark.parametrize("step", [0, -1, float("nan"), float("inf")])
def test_a_step_must_be_a_positive_duration(fake: FakeHost, step: float) -> None:
    with pytest.raises(ValueError):
        Collector([], step=step, host=fake)  # type: ignore[arg-type]


def test_a_named_container_that_is_gone_waits_quietly_and_comes_back(
    fake: FakeHost, clock: Clock
) -> None:
    a = fake.add(A)
    collector, events = make(fake, clock, [A[:12]], rescan_s=10.0)
    collector.tick()
    a.present = False
    for _ in range(3):
        clock.now += 10
        assert collector.tick() == []
    assert [e.kind for e in events] == ["appeared", "gone"]  # no "not found" noise
    a.present, a.inode = True, 9
    clock.now += 10
    reading = collector.tick()[0]
    assert reading.reset and [e.kind for e in events] == ["appeared", "gone", "restarted"]


def test_run_again_after_stop(fake: FakeHost, clock: Clock) -> None:
    fake.add(A)
    collector, _ = make(fake, clock, [A])
    collector.stop()
    collector._stop.wait = lambda timeout: False  # type: ignore[method-assign]
    assert collector.run(count=2) == 2


def test_a_discovered_container_added_by_name_is_read_once_and_removed_quietly(
    fake: FakeHost, clock: Clock
) -> None:
    fake.add(A), fake.add(B)
    collector, events = make(fake, clock)
    collector.tick()
    collector.add(A[:10])
    clock.now += 20
    assert sorted(r.id for r in collector.tick()) == [A, B]  # A once, not twice
    collector.remove(A[:10])
    for _ in range(2):
        clock.now += 20
        assert [r.id for r in collector.tick()] == [B]
    assert "gone" not in [e.kind for e in events] and fake.open_handles == 1
