"""FalconSink fed by a real Collector, against three transfers on loopback that fail.

The transfers are the Go test transfer (``tests/falcon/transfer``: Go's
``net/rpc/jsonrpc``, the real transfer's codec), killed with SIGKILL and
restarted on the same port; the cheapest scenarios run against the Python
stand-in too. The collector reads a fake source (captured samples advanced
by known amounts, as in tests/unit/test_collector.py) with an injected clock,
so many containers and advancing timestamps cost no waiting; one scenario
reads live cgroups made by tests/workload.py (root only).

Every scenario asserts the exact set of (endpoint, metric, tags, timestamp)
the transfers recorded (the union of their files) against the set the
collector's readings make (:func:`~cgstats.sinks.falcon_metrics.reading_items`
then ``item_problem``), and the sink's counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, Optional, Union

import attrs
import falcon_transfers
import fixture_trees
import pytest
from unit.samples import advance, captured

from cgstats import Collector, ContainerRef, Reading
from cgstats.model import Sample
from cgstats.sinks.falcon import FalconSink
from cgstats.sinks.falcon_metrics import format_tags, item_problem, reading_items, short_id

Key = tuple[str, str, str, int]
STEP = 10
ENDPOINT = "web-01"
TAGS = {"app": "web"}
WAIT_S = 30.0  # generous: only reached when something is broken
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")


# -- a fake source for the collector -------------------------------------------------


class FakeHandle:
    """A container whose every read is one step later, with known counter increments."""

    def __init__(self, ref: ContainerRef, sample: Sample) -> None:
        self.ref = ref
        self.inode = 1
        self.sample = sample

    def read(self) -> Sample:
        self.sample = advance(
            self.sample, cpu_ns=250_000_000, read_bytes=8192, rx_bytes=1000, timestamp_s=STEP
        )
        return self.sample

    def close(self) -> None:
        pass


class FakeHost:
    """``containers`` containers made from one captured sample (the collector's Source)."""

    cpu_count = 2

    def __init__(self, template: Sample, containers: int) -> None:
        ids = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(containers)]
        self.refs = [ContainerRef(i, "docker", f"/docker/{i}", "/nonexistent") for i in ids]
        self.template = attrs.evolve(template, timestamp=1_700_000_000.0)

    def containers(self) -> list[ContainerRef]:
        return list(self.refs)

    def resolve(self, spec: str) -> ContainerRef:
        return next(ref for ref in self.refs if ref.id.startswith(spec))

    def open(self, container: Union[str, ContainerRef]) -> FakeHandle:
        ref = container if isinstance(container, ContainerRef) else self.resolve(container)
        return FakeHandle(ref, attrs.evolve(self.template, id=ref.id, cgroup=ref.cgroup))

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- what was sent, what arrived ------------------------------------------------------------


def keys_of(readings: list[Reading], step: int = STEP) -> dict[str, set[Key]]:
    """The keys each container's readings make, as the sink sends them."""
    by_container: dict[str, set[Key]] = {}
    for reading in readings:
        tags = format_tags({"container": short_id(reading.id), **TAGS})
        keys = by_container.setdefault(reading.id, set())
        for item in reading_items(reading, endpoint=ENDPOINT, tags=tags, step=step):
            if item_problem(item) is None:
                keys.add((item["endpoint"], item["metric"], item["tags"], item["timestamp"]))
    return by_container


def union(groups: dict[str, set[Key]]) -> set[Key]:
    return set().union(*groups.values()) if groups else set()


def container_of(key: Key) -> str:
    """The short container ID in a key's tags."""
    return dict(pair.split("=", 1) for pair in key[2].split(","))["container"]


def recorded(nodes: list[Any]) -> set[Key]:
    """What the transfers recorded (a record torn by a SIGKILL mid-write is skipped:
    it was never acknowledged, so the sink sent it again)."""
    return falcon_transfers.accepted_by(nodes)


def assert_sent(stats: dict[str, Any], count: int, expected_failures: set[str]) -> None:
    """``sent`` is ``count``, exactly unless a transfer other than those expected to
    fail failed (a call that timed out on a loaded machine is sent again: at least once).
    """
    surprises = [
        name
        for name, node in stats["nodes"].items()
        if node["total_failures"] and name not in expected_failures
    ]
    if surprises:
        assert stats["sent"] >= count, surprises
    else:
        assert stats["sent"] == count


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.02)


class Run:
    """A collector over a fake host feeding one FalconSink; the test ticks it."""

    def __init__(self, template: Sample, nodes: list[Any], containers: int, **options: Any):
        self.nodes = nodes
        options.setdefault("call_timeout_s", 5.0)
        options.setdefault("backoff_s", 0.05)
        options.setdefault("max_backoff_s", 0.5)
        options.setdefault("flush_timeout_s", 10.0)
        self.sink = FalconSink(
            [node.address for node in nodes], endpoint=ENDPOINT, tags=TAGS, **options
        )
        self.clock = Clock()
        self.host = FakeHost(template, containers)
        self.collector = Collector(
            step=STEP,
            sinks=[self.sink],
            host=self.host,
            clock=self.clock,
            sink_queue_batches=10_000,
            sink_timeout_s=30.0,
        )
        self.readings: list[list[Reading]] = []

    def tick(self, count: int = 1) -> None:
        for _ in range(count):
            self.clock.now += STEP
            self.readings.append(self.collector.tick())

    def flush(self) -> None:
        assert self.collector.flush(WAIT_S)

    def sent(self, ticks: Optional[slice] = None) -> dict[str, set[Key]]:
        chosen = self.readings if ticks is None else self.readings[ticks]
        by_container: dict[str, set[Key]] = {}
        for tick in chosen:
            for container, keys in keys_of(tick).items():
                by_container.setdefault(container, set()).update(keys)
        return by_container

    def received(self) -> set[Key]:
        return recorded(self.nodes)

    def received_by(self) -> dict[Key, set[str]]:
        """Which transfers recorded each key."""
        where: dict[Key, set[str]] = {}
        for node in self.nodes:
            for key in recorded([node]):
                where.setdefault(key, set()).add(node.address)
        return where

    def node_state(self, node: Any) -> str:
        state: str = self.sink.stats()["nodes"][node.address]["state"]
        return state

    def close(self) -> None:
        self.collector.close()
        stats = self.collector.sink_stats()
        assert all(s["dropped_batches"] == 0 and s["errors"] == 0 for s in stats), stats


@pytest.fixture(scope="module")
def template() -> Sample:
    return captured(fixture_trees.available()[0])


@pytest.fixture(params=["go", "py"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def three(kind: str, tmp_path: Any) -> Iterator[list[Any]]:
    with falcon_transfers.pool(kind, tmp_path, 3) as nodes:
        yield nodes


@pytest.fixture
def go_three(tmp_path: Any) -> Iterator[list[Any]]:
    with falcon_transfers.pool("go", tmp_path, 3) as nodes:
        yield nodes


# -- all up ------------------------------------------------------------------------------------


def test_all_up_each_container_sticks_to_one_transfer(template: Sample, three: list[Any]) -> None:
    run = Run(template, three, containers=30)
    run.tick(6)
    run.close()
    sent = run.sent()
    assert run.received() == union(sent)
    where = run.received_by()
    for container, keys in sent.items():
        own = run.sink.transfers_for(container)[0]
        assert {frozenset(where[key]) for key in keys} == {frozenset({own})}, container[:12]
    assert all(recorded([node]) for node in three)
    stats = run.sink.stats()
    assert_sent(stats, len(union(sent)), set())
    assert (stats["invalid"], stats["dropped"], stats["spooled"]) == (0, 0, 0)


# -- one transfer killed, then restarted ---------------------------------------------------------


def test_a_killed_transfer_moves_only_its_keys_and_gets_them_back(
    template: Sample, three: list[Any]
) -> None:
    run = Run(template, three, containers=30)
    dead = three[1]
    run.tick(3)
    run.flush()  # delivered: the kill below finds nothing in flight
    dead.kill()
    run.tick(4)
    run.flush()
    assert run.node_state(dead) == "down"
    dead.restart()
    wait_for(lambda: run.node_state(dead) == "up", "the restarted transfer probed up")
    run.tick(3)
    run.close()

    where = run.received_by()
    assert set(where) == union(run.sent())  # nothing lost
    phases = [(slice(0, 3), False), (slice(3, 7), True), (slice(7, 10), False)]
    for ticks, killed in phases:
        for container, keys in run.sent(ticks).items():
            walk = run.sink.transfers_for(container)
            target = walk[1] if killed and walk[0] == dead.address else walk[0]
            assert {frozenset(where[key]) for key in keys} == {frozenset({target})}
    assert any(run.sink.transfers_for(c)[0] == dead.address for c in run.sent())
    stats = run.sink.stats()
    assert stats["dropped"] == 0 and stats["retried"] > 0
    assert stats["nodes"][dead.address]["total_failures"] >= 1


def test_transfers_killed_and_restarted_while_the_collector_runs(
    template: Sample, go_three: list[Any]
) -> None:
    """Kills at arbitrary moments, with calls in flight: at least once, so nothing lost."""
    run = Run(template, go_three, containers=20, call_timeout_s=2.0)
    done = threading.Event()

    def ticking() -> None:
        while not done.is_set():
            run.tick()
            time.sleep(0.01)

    ticker = threading.Thread(target=ticking)
    ticker.start()
    try:
        for round_ in range(6):
            victim = go_three[round_ % 3]
            time.sleep(0.15)
            victim.kill()
            time.sleep(0.15)
            victim.restart()
    finally:
        done.set()
        ticker.join()
    wait_for(lambda: all(run.node_state(n) == "up" for n in go_three), "all probed up")
    run.close()
    assert run.received() == union(run.sent())
    stats = run.sink.stats()
    assert stats["dropped"] == 0 and stats["sent"] >= len(union(run.sent()))


def test_the_whole_pool_killed_at_random_moments_with_a_spool(
    template: Sample, go_three: list[Any], tmp_path: Any
) -> None:
    """Outages of the whole pool at arbitrary moments: during sends, spills and replays."""
    run = Run(
        template,
        go_three,
        containers=12,
        spool_dir=str(tmp_path / "spool"),
        max_memory_items=300,
        spool_chunk_items=400,
        call_timeout_s=2.0,
    )
    done = threading.Event()

    def ticking() -> None:
        while not done.is_set():
            run.tick()
            time.sleep(0.01)

    ticker = threading.Thread(target=ticking)
    ticker.start()
    try:
        for pause_s in (0.1, 0.3, 0.05, 0.2):
            time.sleep(pause_s)
            for node in go_three:
                node.kill()
            time.sleep(pause_s)
            for node in go_three:
                node.restart()
    finally:
        done.set()
        ticker.join()
    wait_for(lambda: run.sink.stats()["spool_files"] == 0, "spool replayed")
    run.close()
    assert run.received() == union(run.sent())
    stats = run.sink.stats()
    assert stats["dropped"] == 0 and stats["spooled"] > 0 and stats["replayed"] >= stats["spooled"]


# -- all killed, then restarted: the spool -------------------------------------------------------


def test_all_killed_then_restarted_replays_the_spool(
    template: Sample, three: list[Any], tmp_path: Any
) -> None:
    run = Run(
        template, three, containers=10, spool_dir=str(tmp_path / "spool"), max_memory_items=500
    )
    run.tick(2)
    run.flush()
    for node in three:
        node.kill()
    run.tick(8)
    run.flush()  # every transfer down: the backlog goes to the spool
    outage = len(union(run.sent(slice(2, 10))))
    stats = run.sink.stats()
    assert {n["state"] for n in stats["nodes"].values()} == {"down"}
    assert stats["spooled"] == outage and stats["spool_items"] == outage
    assert stats["backlog"] == 0 and stats["spool_files"] >= 1
    for node in three:
        node.restart()
    run.tick(2)
    wait_for(lambda: run.sink.stats()["spool_files"] == 0, "spool replayed")
    run.close()
    assert run.received() == union(run.sent())
    stats = run.sink.stats()
    # Ticks before the transfers' first probes may be spooled too: replayed as well.
    assert stats["replayed"] == stats["spooled"] >= outage and stats["dropped"] == 0


def test_past_the_spool_cap_the_oldest_are_dropped_and_counted(
    template: Sample, go_three: list[Any], tmp_path: Any
) -> None:
    run = Run(
        template,
        go_three,
        containers=5,
        spool_dir=str(tmp_path / "spool"),
        max_memory_items=0,
        spool_max_bytes=30_000,
    )
    for node in go_three:
        node.kill()
    run.tick()
    run.flush()  # every transfer found down: from now on, items are kept in emission order
    run.tick(11)
    run.flush()
    stats = run.sink.stats()
    assert stats["dropped"] > 0 and stats["spool_bytes"] <= 30_000
    for node in go_three:
        node.restart()
    wait_for(lambda: run.sink.stats()["spool_files"] == 0, "spool replayed")
    run.close()
    received = run.received()
    sent = union(run.sent())
    assert received <= sent
    assert len(sent - received) == run.sink.stats()["dropped"] == stats["dropped"]
    assert_oldest_missing(run.readings, received)


def assert_oldest_missing(ticks: list[list[Reading]], received: set[Key]) -> None:
    """What is missing is the oldest: the items of the first readings, then nothing."""
    readings = [union(keys_of([reading])) for tick in ticks for reading in tick]
    assert_prefix_missing(readings, received)


def assert_prefix_missing(readings: list[set[Key]], received: set[Key]) -> None:
    """Each reading's items all arrived or all did not, and the missing ones came first."""
    arrived = [keys <= received for keys in readings]
    assert all(arrived or not (keys & received) for arrived, keys in zip(arrived, readings))
    first = arrived.index(True)
    assert not any(arrived[:first]) and all(arrived[first:]), arrived


def test_close_spools_a_call_still_unanswered_and_the_next_start_delivers_it(
    template: Sample, tmp_path: Any
) -> None:
    """A transfer that never answers, at shutdown: the collector's close (one bounded
    flush, then close) leaves the in-flight items in the spool, not lost."""
    spool = str(tmp_path / "spool")
    with falcon_transfers.pool("go", tmp_path, 1, modes=["silent"]) as nodes:
        run = Run(template, nodes, containers=4, spool_dir=spool, call_timeout_s=60.0)
        run.sink.flush_timeout_s = 1.0
        # The collector's flush() waits 1 s for the silent call; its close() must not
        # wait again, or this budget runs out before the leftovers are spooled.
        run.collector.sink_timeout_s = 1.8
        run.tick(3)
        wait_for(lambda: run.sink.stats()["queued"] > 0, "a call in flight")
        run.close()
        sent = union(run.sent())
        assert [s["abandoned"] for s in run.collector.sink_stats()] == [False]
        stats = run.sink.stats()
        assert stats["spooled"] == len(sent) and stats["dropped"] == 0 and stats["sent"] == 0
        nodes[0].restart(mode="ok")
        successor = FalconSink(
            [nodes[0].address], endpoint=ENDPOINT, tags=TAGS, spool_dir=spool, backoff_s=0.05
        )
        try:
            successor.open(float(STEP))
            wait_for(lambda: successor.stats()["spool_files"] == 0, "spool replayed")
        finally:
            successor.close()
        assert recorded(nodes) == sent


# -- the sink's process restarted while its spool is full ----------------------------------------

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    sys.path[:0] = [{tests!r}]
    sys.path.insert(0, os.path.join({tests!r}, "sinks"))
    import test_falcon_scenarios as scenario
    from unit.samples import captured
    import fixture_trees

    template = captured(fixture_trees.available()[0])
    run = scenario.Run(template, scenario.addresses({addresses!r}), containers=8,
                       spool_dir={spool!r}, max_memory_items=100, spool_max_bytes=40_000,
                       flush_timeout_s=2.0)
    run.tick()
    run.flush()  # the transfers found down: from now on items queue in emission order
    run.tick(14)
    run.flush()  # every transfer down: the backlog goes to the spool
    readings = [sorted(scenario.union(scenario.keys_of([r]))) for t in run.readings for r in t]
    with open({report!r}, "w") as out:
        json.dump({{"readings": readings, "stats": run.sink.stats()}}, out)
    if {how!r} == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    run.close()
    """
)


class _Address:
    def __init__(self, address: str) -> None:
        self.address = address


def addresses(texts: list[str]) -> list[_Address]:
    """Stand-ins for transfers in the child: only their addresses are used."""
    return [_Address(text) for text in texts]


@pytest.mark.parametrize("how", ["sigkill", "exit"])
def test_a_restarted_sink_replays_the_spool_its_predecessor_filled(
    template: Sample, go_three: list[Any], tmp_path: Any, how: str
) -> None:
    spool = str(tmp_path / "spool")
    report = str(tmp_path / "report.json")
    for node in go_three:
        node.kill()
    script = CHILD.format(
        tests=TESTS,
        addresses=[node.address for node in go_three],
        spool=spool,
        report=report,
        how=how,
    )
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    expected_code = -signal.SIGKILL if how == "sigkill" else 0
    assert child.returncode == expected_code, child.stderr[-3000:]
    with open(report, encoding="utf-8") as handle:
        reported = json.load(handle)
    readings = [{tuple(key) for key in keys} for keys in reported["readings"]]
    sent: set[Key] = set().union(*readings)  # type: ignore[arg-type]
    dropped = reported["stats"]["dropped"]
    assert dropped > 0 and reported["stats"]["spool_bytes"] <= 40_000  # the spool was full
    assert reported["stats"]["backlog"] == 0  # flush() put the backlog in the spool

    for node in go_three:
        node.restart()
    successor = FalconSink(
        [node.address for node in go_three], endpoint=ENDPOINT, tags=TAGS, spool_dir=spool
    )
    try:
        successor.open(float(STEP))
        wait_for(lambda: successor.stats()["spool_files"] == 0, "spool replayed on start")
    finally:
        successor.close()
    received = recorded(go_three)
    assert received <= sent and len(sent - received) == dropped
    assert_prefix_missing(readings, received)  # type: ignore[arg-type]
    assert successor.stats()["replayed"] == len(received)


# -- transfers that misbehave --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["silent", "error", "close"])
def test_a_misbehaving_transfer_loses_nothing(
    template: Sample, tmp_path: Any, kind: str, mode: str
) -> None:
    with falcon_transfers.pool(kind, tmp_path, 3, modes=[mode, "ok", "ok"]) as nodes:
        bad = nodes[0]
        run = Run(template, nodes, containers=15, call_timeout_s=1.5)
        run.tick(3)
        run.flush()
        run.tick(3)
        run.close()
        sent = run.sent()
        assert run.received() == union(sent) and recorded([bad]) == set()
        where = run.received_by()
        for container, keys in sent.items():
            walk = run.sink.transfers_for(container)
            target = walk[1] if walk[0] == bad.address else walk[0]
            assert {frozenset(where[key]) for key in keys} == {frozenset({target})}
        stats = run.sink.stats()
        assert stats["dropped"] == 0 and stats["retried"] > 0
        assert_sent(stats, len(union(sent)), {bad.address})
        assert stats["nodes"][bad.address]["total_failures"] >= 1
        assert any(run.sink.transfers_for(c)[0] == bad.address for c in sent)


# -- live cgroups ---------------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="live cgroups need root")
def test_live_containers_through_a_transfer_failure(go_three: list[Any]) -> None:
    """The collector's own loop over live cgroups; a transfer killed and restarted as it runs."""
    import workload

    class Recorder:
        """A second sink: what the collector produced."""

        def __init__(self) -> None:
            self.readings: list[Reading] = []

        def emit(self, readings: list[Reading]) -> None:
            self.readings.extend(readings)

    with workload.Base() as base:
        made = [workload.random_id() for _ in range(3)]
        containers = [base.container(f"docker/{i}", container_id=i) for i in made]
        for container in containers:
            container.spawn(workload.idle_argv())
        sink = FalconSink(
            [n.address for n in go_three],
            endpoint=ENDPOINT,
            tags=TAGS,
            backoff_s=0.05,
            max_backoff_s=0.5,
        )
        recorder = Recorder()
        victim = next(n for n in go_three if n.address == sink.transfers_for(made[0])[0])
        with Collector(made, step=0.5, sinks=[sink, recorder]) as collector:
            collector.start()
            time.sleep(1.2)
            victim.kill()
            time.sleep(1.2)
            victim.restart()
            wait_for(lambda: sink.stats()["nodes"][victim.address]["state"] == "up", "back up")
            time.sleep(1.2)
        assert {r.id for r in recorder.readings} == set(made)
        sent = union(keys_of(recorder.readings, step=1))  # the collector's 0.5 s step, rounded
        assert recorded(go_three) == sent
        assert recorded([victim]) & union(
            keys_of([r for r in recorder.readings if r.id == made[0]], step=1)
        )
        stats = sink.stats()
        assert stats["dropped"] == 0 and stats["sent"] >= len(sent)
