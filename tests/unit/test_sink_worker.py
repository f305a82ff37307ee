"""Each sink behind its own queue and thread: a slow, stuck or failing sink harms nothing else.

The collector reads a tree captured from a real kernel; the sinks are small
recorders whose emit can be held on a :class:`threading.Event`, so every
queue state below is reached deterministically (no sleeps, only generous
waits on conditions).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import fixture_trees
import pytest

from cgstats import Collector, Event, Reading
from cgstats.sinks import Sink

pytestmark = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")

WAIT_S = 60.0  # generous: a condition that holds is met in milliseconds


class Recording(Sink):
    """Keeps every call; ``hold`` (when given) keeps emit waiting until it is set."""

    def __init__(self, hold: threading.Event | None = None, fail: bool = False) -> None:
        self.hold = hold
        self.fail = fail
        self.calls: list[tuple[str, str]] = []  # (method, thread name)
        self.batches: list[Sequence[Reading]] = []
        self.events: list[Event] = []
        self.inside_emit = threading.Event()
        self.changed = threading.Condition()

    def _note(self, method: str) -> None:
        with self.changed:
            self.calls.append((method, threading.current_thread().name))
            self.changed.notify_all()

    def open(self, step: float) -> None:
        self._note(f"open {step:g}")

    def emit(self, readings: Sequence[Reading]) -> None:
        self._note("emit")
        self.inside_emit.set()
        if self.hold is not None:
            assert self.hold.wait(WAIT_S)
        if self.fail:
            raise ConnectionRefusedError("receiver down")
        with self.changed:
            self.batches.append(readings)
            self.changed.notify_all()

    def emit_events(self, events: Sequence[Event]) -> None:
        self._note("emit_events")
        self.events.extend(events)

    def flush(self) -> None:
        self._note("flush")

    def close(self) -> None:
        self._note("close")

    def wait_batches(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.batches) >= count, WAIT_S)

    def methods(self) -> list[str]:
        return [method for method, _thread in self.calls]


def wait_until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


@pytest.fixture
def root() -> str:
    return fixture_trees.root(fixture_trees.available()[0])


def test_a_held_sink_delays_neither_the_tick_nor_another_sink(root: str) -> None:
    hold = threading.Event()
    held, free = Recording(hold), Recording()
    collector = Collector(root=root, step=1.0, sinks=[held, free])
    try:
        ticks = [collector.tick() for _ in range(3)]  # returns although `held` is stuck
        free.wait_batches(3)
        assert [list(batch) for batch in free.batches] == ticks
        assert held.inside_emit.wait(WAIT_S)
        # counted just after emit returns
        assert wait_until(lambda: collector.sink_stats()[1]["delivered_batches"] == 3)
        held_stats, free_stats = collector.sink_stats()
        assert held_stats["queued"] == 2 and held_stats["delivered_batches"] == 0
        assert free_stats["delivered_batches"] == 3 and free_stats["queued"] == 0
        hold.set()
        assert collector.flush(timeout=WAIT_S)
        assert [list(batch) for batch in held.batches] == ticks
    finally:
        hold.set()
        collector.close()
    assert held.methods()[-2:] == free.methods()[-2:] == ["flush", "close"]


def test_a_full_queue_drops_the_oldest_batch_and_warns_once(
    root: str, caplog: pytest.LogCaptureFixture
) -> None:
    hold = threading.Event()
    sink = Recording(hold)
    caplog.set_level(logging.WARNING, logger="cgstats.sinks")
    with Collector(root=root, step=1.0, sinks=[sink], sink_queue_batches=2) as collector:
        first = collector.tick()
        assert sink.inside_emit.wait(WAIT_S)  # the worker holds batch 1; the queue is empty
        later = [collector.tick() for _ in range(4)]  # 2, 3 queued; 4, 5 push them out
        stats = collector.sink_stats()[0]
        assert stats["dropped_batches"] == 2 and stats["queued"] == 2
        hold.set()
        assert collector.flush(timeout=WAIT_S)
    assert [list(batch) for batch in sink.batches] == [first, later[2], later[3]]
    drops = [r for r in caplog.records if "dropped the oldest" in r.getMessage()]
    assert len(drops) == 1 and drops[0].levelno == logging.WARNING  # rate-limited


def test_exceptions_are_counted_per_sink_and_logged_once_per_interval(
    root: str, caplog: pytest.LogCaptureFixture
) -> None:
    failing, good = Recording(fail=True), Recording()
    caplog.set_level(logging.ERROR, logger="cgstats.sinks")
    with Collector(root=root, step=1.0, sinks=[failing, good]) as collector:
        for _ in range(3):
            collector.tick()  # never raises
        assert collector.flush(timeout=WAIT_S)
        bad_stats, good_stats = collector.sink_stats()
        assert bad_stats["errors"] == 3 and bad_stats["delivered_batches"] == 0
        assert good_stats["errors"] == 0 and good_stats["delivered_batches"] == 3
        assert collector.sink_errors == 3
    logged = [r for r in caplog.records if r.name == "cgstats.sinks"]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "emit failed" in logged[0].getMessage()


def test_open_comes_first_once_on_the_sinks_thread_and_on_event_stays_on_the_callers(
    root: str,
) -> None:
    sink = Recording()
    seen: list[tuple[str, str]] = []
    collector = Collector(
        root=root,
        step=2.5,
        sinks=[sink],
        on_event=lambda event: seen.append((event.kind, threading.current_thread().name)),
    )
    with collector:
        collector.tick()
        # on_event ran inside tick(), on this thread, before tick() returned
        assert seen and {thread for _kind, thread in seen} == {threading.current_thread().name}
        collector.tick()
    methods = sink.methods()
    assert methods == ["open 2.5", "emit_events", "emit", "emit", "flush", "close"]
    threads = {thread for _method, thread in sink.calls}
    assert len(threads) == 1 and threads != {threading.current_thread().name}
    assert [e.kind for e in sink.events] == [kind for kind, _thread in seen]


class OnlyEmit:
    """A duck-typed sink with nothing but emit."""

    def __init__(self) -> None:
        self.count = 0

    def emit(self, readings: Sequence[Reading]) -> None:
        self.count += 1


def test_a_duck_typed_sink_with_only_emit_is_fed(root: str) -> None:
    sink = OnlyEmit()
    with Collector(root=root, step=1.0, sinks=[sink]) as collector:
        collector.tick()
        collector.tick()
        assert collector.flush(timeout=WAIT_S)
        assert sink.count == 2 and collector.sink_errors == 0


def test_close_gives_up_on_a_stuck_sink_after_the_timeout(root: str) -> None:
    hold = threading.Event()
    stuck, good = Recording(hold), Recording()
    collector = Collector(root=root, step=1.0, sinks=[stuck, good], sink_timeout_s=0.2)
    try:
        collector.tick()
        assert stuck.inside_emit.wait(WAIT_S)
        assert not collector.flush(timeout=0.1)  # stuck cannot get there
        collector.close()  # returns although `stuck` never does
        stuck_stats, good_stats = collector.sink_stats()
        assert stuck_stats["abandoned"] and stuck_stats["alive"]
        assert not good_stats["abandoned"] and not good_stats["alive"]
        assert good.methods()[-2:] == ["flush", "close"] and "close" not in stuck.methods()
        assert not collector.flush(timeout=0)
    finally:
        hold.set()


def test_sinks_added_and_removed_after_construction(root: str) -> None:
    early, late = Recording(), Recording()
    with Collector(root=root, step=1.0, sinks=[early]) as collector:
        collector.tick()
        collector.sinks.append(late)
        collector.tick()
        collector.sinks.remove(early)
        collector.tick()
        assert collector.flush(timeout=WAIT_S)
        assert [s["sink"] for s in collector.sink_stats()] == [repr(late)]
        assert early.methods() == ["open 1", "emit_events", "emit", "emit", "flush", "close"]
    assert late.methods() == ["open 1", "emit", "emit", "flush", "flush", "close"]


class Exiting(Recording):
    def emit(self, readings: Sequence[Reading]) -> None:
        raise SystemExit("a sink that ends its thread")  # beyond Exception: not caught


def test_a_sink_whose_thread_ends_early_is_reported_not_waited_for(
    root: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink, good = Exiting(), Recording()
    caplog.set_level(logging.ERROR, logger="cgstats.sinks")
    with Collector(root=root, step=1.0, sinks=[sink, good]) as collector:
        collector.tick()
        assert not collector.flush(timeout=WAIT_S)  # false, at once: it cannot get there
        collector.tick()
        assert not collector.flush(timeout=WAIT_S)  # waits for `good`, not for the dead one
        assert wait_until(lambda: not collector.sink_stats()[0]["alive"])  # its thread exits
        dead, alive = collector.sink_stats()
        assert not dead["alive"] and dead["dropped_batches"] == 1
        assert alive["alive"] and alive["delivered_batches"] == 2
    assert "close" not in sink.methods() and good.methods()[-1] == "close"
    assert any("ended its thread early" in r.getMessage() for r in caplog.records)


def test_something_without_emit_is_refused_at_once(root: str) -> None:
    with pytest.raises(TypeError, match="needs an emit"):
        Collector(root=root, sinks=["jsonl:-"])  # type: ignore[list-item]
