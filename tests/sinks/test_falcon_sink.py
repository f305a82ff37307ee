"""FalconSink against the Python stand-in transfer, and its parts on their own.

The transfers are :class:`falcon_transfers.PyTransfer` on loopback (the same
answers as Go's ``net/rpc/jsonrpc``, checked by test_falcon_transfer_go.py);
the scenarios against the Go transfer are in test_falcon_scenarios.py.
Readings are built on a sample cgstats read from a captured fixture tree.
Every delivery test compares the exact set of (endpoint, metric, tags,
timestamp) the transfers recorded with the set computed from the readings by
:func:`~cgstats.sinks.falcon_metrics.reading_items` and ``item_problem``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, Callable

import attrs
import falcon_transfers
import fixture_trees
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uhashring import HashRing
from unit.samples import advance, captured

from cgstats import Reading, rates
from cgstats.model import Sample
from cgstats.sinks import SinkURLError, falcon, falcon_metrics, open_sink
from cgstats.sinks import _spool as spool_format
from cgstats.sinks._jsonrpc import (
    Connection,
    ResponseReader,
    RpcError,
    TransportError,
    encode_request,
)
from cgstats.sinks._ring import NodeHealth, Ring, backoff_s
from cgstats.sinks._spool import SpoolBusy
from cgstats.sinks.falcon import FalconSink, falcon_step, parse_address, parse_url
from cgstats.sinks.falcon_metrics import format_tags, item_problem, reading_items, short_id

Key = tuple[str, str, str, int]
WAIT_S = 20.0  # generous: only reached when something is broken
STEP = 10
ENDPOINT = "web-01"

needs_tree = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")


# -- readings and what they should deliver ------------------------------------------


def container_id(n: int) -> str:
    return f"{n + 1:02x}" * 32


@pytest.fixture(scope="module")
def template() -> Sample:
    if not fixture_trees.available():
        pytest.skip("no fixture tree captured")
    return captured(fixture_trees.available()[0])


def readings(
    template: Sample, containers: int, ticks: int, start_tick: int = 0
) -> list[list[Reading]]:
    """``ticks`` ticks of ``containers`` containers, one step apart, with rates."""
    out = []
    base = attrs.evolve(template, timestamp=1_700_000_000.0)
    for tick in range(start_tick, start_tick + ticks):
        before = advance(base, timestamp_s=STEP * tick)
        after = advance(before, cpu_ns=500_000_000, read_bytes=4096, timestamp_s=STEP)
        computed, _ = rates.compute(before, after, float(STEP), 2)
        out.append(
            [
                Reading(attrs.evolve(after, id=container_id(n)), computed, net_counted=True)
                for n in range(containers)
            ]
        )
    return out


def expected(
    ticks: list[list[Reading]],
    endpoint: Callable[[Reading], str] = lambda reading: ENDPOINT,
    tags: Callable[[Reading], Mapping[str, str]] = lambda reading: {},
    step: int = STEP,
) -> set[Key]:
    """The keys the readings make, as the sink should send them (valid items only)."""
    keys = set()
    for tick in ticks:
        for reading in tick:
            tag_text = format_tags({"container": short_id(reading.id), **tags(reading)})
            for item in reading_items(
                reading, endpoint=endpoint(reading), tags=tag_text, step=step
            ):
                if item_problem(item) is None:
                    keys.add((item["endpoint"], item["metric"], item["tags"], item["timestamp"]))
    return keys


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.02)


def free_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def pool(tmp_path: Any) -> Iterator[Callable[..., list[falcon_transfers.PyTransfer]]]:
    made: list[Any] = []

    def make(*modes: str, started: bool = True) -> list[falcon_transfers.PyTransfer]:
        nodes = [
            falcon_transfers.PyTransfer(tmp_path / f"t{len(made) + i}.jsonl", mode)
            for i, mode in enumerate(modes)
        ]
        made.extend(nodes)
        for node in nodes:
            node.start()
            if not started:
                node.kill()  # keeps its port: connections are refused until restart()
        return nodes

    yield make
    for node in made:
        node.stop()


@pytest.fixture
def sinks() -> Iterator[Callable[..., FalconSink]]:
    made: list[FalconSink] = []

    def make(nodes: list[Any], **options: Any) -> FalconSink:
        options.setdefault("endpoint", ENDPOINT)
        options.setdefault("call_timeout_s", 2.0)
        options.setdefault("backoff_s", 0.05)
        options.setdefault("max_backoff_s", 0.2)
        options.setdefault("flush_timeout_s", 10.0)
        sink = FalconSink([node.address for node in nodes], **options)
        made.append(sink)
        sink.open(float(STEP))
        return sink

    yield make
    for sink in made:
        sink.close()


def received(nodes: list[Any]) -> set[Key]:
    return falcon_transfers.accepted_by(nodes)


def count(keys: set[Key]) -> int:
    return len(keys)


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


def emit_all(sink: FalconSink, ticks: list[list[Reading]]) -> None:
    for tick in ticks:
        sink.emit(tick)


# -- delivery -----------------------------------------------------------------------------


@needs_tree
def test_each_container_goes_to_its_own_transfer(template: Sample, pool: Any, sinks: Any) -> None:
    nodes = pool("ok", "ok", "ok")
    sink = sinks(nodes, tags={"app": "web"})
    ticks = readings(template, 12, 3)
    emit_all(sink, ticks)
    sink.flush()
    want = expected(ticks, tags=lambda reading: {"app": "web"})
    assert received(nodes) == want
    ids = {short_id(reading.id): reading.id for reading in ticks[0]}
    for node in nodes:
        for _endpoint, _metric, tags, _timestamp in node.accepted():
            container = ids[dict(pair.split("=") for pair in tags.split(","))["container"]]
            assert sink.transfers_for(container)[0] == node.address
    assert all(node.accepted() for node in nodes)  # 12 containers reach all three
    stats = sink.stats()
    assert_sent(stats, len(want), set())
    assert (stats["invalid"], stats["dropped"], stats["spooled"]) == (0, 0, 0)
    assert {n["state"] for n in stats["nodes"].values()} == {"up"}


@needs_tree
def test_the_step_comes_from_the_collector_unless_given(
    template: Sample, pool: Any, sinks: Any
) -> None:
    nodes = pool("ok")
    ticks = readings(template, 1, 2)
    collector_step = sinks(nodes)  # open(10.0)
    explicit = sinks(nodes, step=60.4, endpoint="explicit")
    emit_all(collector_step, ticks)
    emit_all(explicit, ticks)
    collector_step.flush()
    explicit.flush()
    steps = {(item["endpoint"], item["step"]) for item in nodes[0].accepted_items()}
    assert steps == {(ENDPOINT, 10), ("explicit", 60)}
    assert received(nodes) == expected(ticks) | expected(
        ticks, endpoint=lambda r: "explicit", step=60
    )
    sixty = [item["timestamp"] for item in nodes[0].accepted_items() if item["step"] == 60]
    assert sixty and {timestamp % 60 for timestamp in sixty} == {0}


def test_steps_are_rounded_to_whole_seconds() -> None:
    assert [falcon_step(s) for s in (10.0, 60, 0.2, 0.5, 2.5, 29.4, 1e6)] == [
        10,
        60,
        1,
        1,
        3,
        29,
        1_000_000,
    ]
    for bad in (0, -1.0, float("nan"), float("inf"), True, "60"):
        with pytest.raises(ValueError):
            falcon_step(bad)  # type: ignore[arg-type]


@needs_tree
def test_invalid_items_are_counted_and_never_sent(
    template: Sample, pool: Any, sinks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = pool("ok", "ok")
    spaced, empty, raising = container_id(0), container_id(1), container_id(2)

    def tags(reading: Reading) -> dict[str, str]:
        if reading.id == raising:
            raise KeyError("no such pod")
        return {"app": "has space"} if reading.id == spaced else {"app": "web"}

    def endpoint(reading: Reading) -> str:
        return "" if reading.id == empty else ENDPOINT

    sink = sinks(nodes, tags=tags, endpoint=endpoint)
    ticks = readings(template, 6, 2)
    with caplog.at_level(logging.WARNING, logger="cgstats.sinks.falcon"):
        emit_all(sink, ticks)
        sink.flush()
    good = [[r for r in tick if r.id not in (spaced, empty, raising)] for tick in ticks]
    bad = [[r for r in tick if r.id in (spaced, empty)] for tick in ticks]
    want = expected(good, tags=lambda reading: {"app": "web"})
    assert received(nodes) == want
    stats = sink.stats()
    assert_sent(stats, len(want), set())
    assert stats["invalid"] == sum(
        len(reading_items(r, endpoint="x", tags="", step=STEP)) for tick in bad for r in tick
    )
    assert stats["errors"] == 2  # the raising callable, once per tick
    assert "has space" in caplog.text and "endpoint" in caplog.text and "no such pod" in caplog.text
    assert len(caplog.records) == 3  # each kind of problem logged once, not every tick


@needs_tree
def test_a_callers_container_tag_never_replaces_the_short_id(
    template: Sample, pool: Any, sinks: Any
) -> None:
    # Two containers must never share a series: the reading's own ID wins.
    nodes = pool("ok")
    sink = sinks(nodes, tags={"container": "web-1", "app": "web"})
    ticks = readings(template, 2, 1)
    emit_all(sink, ticks)
    sink.flush()
    expected = {f"app=web,container={short_id(r.id)}" for tick in ticks for r in tick}
    assert len(expected) == 2
    assert {tags for _e, _m, tags, _t in received(nodes)} == expected


def test_bad_static_tags_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="whitespace"):
        FalconSink(["127.0.0.1:1"], tags={"app": "a b"})
    with pytest.raises(ValueError, match="empty"):
        FalconSink(["127.0.0.1:1"], endpoint="")
    with pytest.raises(ValueError, match="twice"):
        FalconSink(["127.0.0.1:1", "127.0.0.1:1"])


# -- failures -----------------------------------------------------------------------------


@needs_tree
def test_a_refused_transfer_fails_over_to_the_next_on_the_ring(
    template: Sample, pool: Any, sinks: Any
) -> None:
    up, down = pool("ok"), pool("ok", started=False)
    sink = sinks(up + down, backoff_s=30.0, max_backoff_s=30.0)
    ticks = readings(template, 8, 2)
    emit_all(sink, ticks)
    sink.flush()
    assert received(up) == expected(ticks) and received(down) == set()
    stats = sink.stats()
    node = stats["nodes"][down[0].address]
    assert node["state"] == "down" and node["failures"] == 1
    assert "refused" in node["last_error"].lower()
    assert 0 < node["next_probe_s"] <= 30.0
    assert stats["nodes"][up[0].address]["state"] == "up"
    assert stats["retried"] > 0
    assert_sent(stats, len(expected(ticks)), {down[0].address})


@needs_tree
@pytest.mark.parametrize("mode", ["silent", "close", "error"])
def test_a_transfer_that_misbehaves_loses_nothing(
    template: Sample, pool: Any, sinks: Any, mode: str
) -> None:
    bad, good = pool(mode), pool("ok", "ok")
    sink = sinks(bad + good, call_timeout_s=1.5)
    ticks = readings(template, 9, 3)
    emit_all(sink, ticks)
    sink.flush()
    want = expected(ticks)
    assert received(good) == want and received(bad) == set()
    stats = sink.stats()
    assert stats["dropped"] == 0 and stats["retried"] > 0
    assert_sent(stats, len(want), {bad[0].address})
    assert stats["nodes"][bad[0].address]["total_failures"] >= 1


@needs_tree
def test_a_batch_every_transfer_rejects_is_dropped_after_trying_each(
    template: Sample, pool: Any, sinks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = pool("error", "error")
    sink = sinks(nodes)
    ticks = readings(template, 1, 1)
    with caplog.at_level(logging.ERROR, logger="cgstats.sinks.falcon"):
        emit_all(sink, ticks)
        n = len(expected(ticks))
        wait_for(lambda: sink.stats()["rejected"] == n, "rejected by both")
    stats = sink.stats()
    assert stats["dropped"] == n and stats["sent"] == 0 and received(nodes) == set()
    assert all(node["total_failures"] >= 1 for node in stats["nodes"].values())
    assert "rejected by every transfer" in caplog.text


@needs_tree
def test_a_poisoned_batch_takes_no_other_container_down_with_it(
    template: Sample, pool: Any, sinks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items the checks let through but the codec rejects (a fractional step fails the
    whole call) are isolated: every other container's items arrive, the bad ones are
    dropped once every transfer refused them."""
    nodes = pool("ok", "ok")
    ticks = readings(template, 8, 1)
    poisoned = ticks[0][3].id
    real_items = falcon_metrics.reading_items

    def items_with_poison(reading: Reading, **options: Any) -> list[dict[str, Any]]:
        made = real_items(reading, **options)
        if reading.id == poisoned:
            made[0] = {**made[0], "step": 60.5}
        return made

    # Past the sink's own checks (SeriesNames.items_of) and its replay's.
    monkeypatch.setattr(falcon_metrics, "reading_items", items_with_poison)
    monkeypatch.setattr(falcon_metrics, "item_problem", lambda item: None)
    monkeypatch.setattr(falcon, "item_problem", lambda item: None)
    sink = sinks(nodes)
    sink.emit(ticks[0])
    good = [[r for r in ticks[0] if r.id != poisoned]]
    poison_count = len(real_items(ticks[0][3], endpoint=ENDPOINT, tags="", step=STEP))
    wait_for(lambda: sink.stats()["rejected"] == poison_count, "the poisoned items rejected")
    wait_for(lambda: received(nodes) == expected(good), "everything else delivered")
    stats = sink.stats()
    assert stats["dropped"] == poison_count and stats["sent"] >= len(expected(good))
    assert all(node["total_failures"] >= 1 for node in stats["nodes"].values())


@needs_tree
def test_items_a_transfer_counts_invalid_are_counted(
    template: Sample, pool: Any, sinks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transfer drops ``kernel.hostname`` silently: its answer's Invalid is counted."""
    nodes = pool("ok")
    ticks = readings(template, 1, 1)
    real_items = falcon_metrics.reading_items

    def renamed(reading: Reading, **options: Any) -> list[dict[str, Any]]:
        made = real_items(reading, **options)
        made[0] = {**made[0], "metric": "kernel.hostname"}
        return made

    # Past the sink's own checks (SeriesNames.items_of) and its replay's.
    monkeypatch.setattr(falcon_metrics, "reading_items", renamed)
    monkeypatch.setattr(falcon_metrics, "item_problem", lambda item: None)
    monkeypatch.setattr(falcon, "item_problem", lambda item: None)
    sink = sinks(nodes)
    sink.emit(ticks[0])
    sink.flush()
    stats = sink.stats()
    assert stats["transfer_invalid"] == 1 and stats["sent"] == len(expected(ticks))
    assert "kernel.hostname" not in {metric for _e, metric, _t, _ts in received(nodes)}


@needs_tree
def test_without_a_spool_the_memory_backlog_keeps_the_newest(
    template: Sample, pool: Any, sinks: Any
) -> None:
    nodes = pool("ok", started=False)
    ticks = readings(template, 4, 5)
    per_tick = len(expected(ticks[:1]))
    sink = sinks(nodes, max_memory_items=2 * per_tick)
    sink.emit(ticks[0])
    wait_for(lambda: sink.stats()["nodes"][nodes[0].address]["state"] == "down", "marked down")
    emit_all(sink, ticks[1:])
    assert sink.stats()["dropped"] == 3 * per_tick
    assert sink.stats()["backlog"] == 2 * per_tick
    nodes[0].restart()
    wait_for(lambda: sink.stats()["sent"] == 2 * per_tick, "backlog sent")
    assert received(nodes) == expected(ticks[3:])


@needs_tree
def test_closing_with_every_transfer_down_and_no_spool_counts_the_loss(
    template: Sample, pool: Any, sinks: Any
) -> None:
    nodes = pool("ok", started=False)
    sink = sinks(nodes, flush_timeout_s=0.5)
    ticks = readings(template, 3, 2)
    emit_all(sink, ticks)
    sink.close()
    assert sink.stats()["dropped"] == len(expected(ticks))


# -- the spool ------------------------------------------------------------------------------


@needs_tree
def test_with_every_transfer_down_items_are_spooled_then_replayed(
    template: Sample, pool: Any, sinks: Any, tmp_path: Any
) -> None:
    nodes = pool("ok", "ok", started=False)
    sink = sinks(nodes, spool_dir=str(tmp_path / "spool"), max_memory_items=0)
    ticks = readings(template, 5, 4)
    want = expected(ticks)
    emit_all(sink, ticks)
    wait_for(lambda: sink.stats()["spooled"] == len(want), "spooled")
    assert sink.stats()["spool_files"] >= 1 and sink.stats()["spool_items"] == len(want)
    for node in nodes:
        node.restart()
    wait_for(lambda: sink.stats()["replayed"] == len(want), "replayed")
    assert received(nodes) == want
    wait_for(lambda: sink.stats()["spool_files"] == 0, "spool emptied")
    assert [n for n in os.listdir(tmp_path / "spool") if not n.startswith(".")] == []


@needs_tree
def test_the_next_sink_on_the_spool_replays_it(
    template: Sample, pool: Any, sinks: Any, tmp_path: Any
) -> None:
    nodes = pool("ok", "ok", started=False)
    spool_dir = str(tmp_path / "spool")
    first = sinks(nodes, spool_dir=spool_dir, flush_timeout_s=0.5)
    ticks = readings(template, 4, 3)
    want = expected(ticks)
    emit_all(first, ticks)
    first.close()  # all down: what is undelivered goes to the spool
    assert first.stats()["spooled"] == len(want) and first.stats()["dropped"] == 0
    for node in nodes:
        node.restart()
    second = sinks(nodes, spool_dir=spool_dir)
    wait_for(lambda: second.stats()["replayed"] == len(want), "replayed by the next sink")
    assert received(nodes) == want


def test_two_sinks_cannot_share_a_spool(tmp_path: Any) -> None:
    first = FalconSink(["127.0.0.1:1"], spool_dir=str(tmp_path))
    with pytest.raises(SpoolBusy):
        FalconSink(["127.0.0.1:1"], spool_dir=str(tmp_path))
    first.close()  # releases the directory
    FalconSink(["127.0.0.1:1"], spool_dir=str(tmp_path)).close()


@needs_tree
def test_damaged_spool_files_are_skipped_and_the_rest_replayed(
    template: Sample, pool: Any, sinks: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = pool("ok", started=False)
    spool_dir = tmp_path / "spool"
    ticks = readings(template, 2, 6)
    per_tick = len(expected(ticks[:1]))
    first = sinks(nodes, spool_dir=str(spool_dir), max_memory_items=0, spool_chunk_items=per_tick)
    emit_all(first, ticks)
    first.close()
    files = sorted(name for name in os.listdir(spool_dir) if name.endswith(".spool"))
    stored = {name: keys_of(spool_format.decode((spool_dir / name).read_bytes())) for name in files}
    assert set().union(*stored.values()) == expected(ticks) and len(files) >= 3
    truncated, garbled = files[0], files[-1]
    data = (spool_dir / truncated).read_bytes()
    (spool_dir / truncated).write_bytes(data[: len(data) - 7])  # found when the sink starts
    with open(spool_dir / garbled, "r+b") as handle:  # found by its checksum when replayed
        handle.seek(os.path.getsize(spool_dir / garbled) - 60)
        handle.write(b"\xc1garbage" * 4)
    nodes[0].restart()
    with caplog.at_level(logging.WARNING, logger="cgstats.sinks.falcon"):
        second = sinks(nodes, spool_dir=str(spool_dir))
        wait_for(lambda: second.stats()["spool_files"] == 0, "spool replayed")
        wait_for(lambda: second.stats()["spool_corrupt_files"] == 2, "both damaged files skipped")
    want = set().union(*(stored[name] for name in files[1:-1]))
    assert received(nodes) == want
    assert second.stats()["replayed"] == len(want)
    assert truncated in caplog.text and garbled in caplog.text
    assert sorted(n for n in os.listdir(spool_dir) if not n.startswith(".")) == sorted(
        name + spool_format.CORRUPT_SUFFIX for name in (truncated, garbled)
    )


def keys_of(units: list[tuple[str, list[dict[str, Any]]]]) -> set[Key]:
    return {
        (i["endpoint"], i["metric"], i["tags"], i["timestamp"])
        for _k, items in units
        for i in items
    }


# -- the ring and the backoff ---------------------------------------------------------------

NODES = ["10.0.0.1:8433", "10.0.0.2:8433", "10.0.0.3:8433", "10.0.0.4:8433"]


@settings(max_examples=30)
@given(st.lists(st.text(min_size=1, max_size=64), min_size=1, max_size=30, unique=True))
def test_skipping_down_nodes_is_removing_them_from_the_ring(keys: list[str]) -> None:
    """The walk's first up node is the node a uhashring without the down ones picks."""
    ring = Ring(NODES)
    for size in range(len(NODES)):
        for down in itertools.combinations(NODES, size):
            reference = HashRing(
                nodes={name: {"vnodes": 160} for name in NODES if name not in down}
            )
            up = set(NODES) - set(down)
            for key in keys:
                assert ring.target(key, up) == reference.get_node(key)
    assert all(ring.target(key, set()) is None for key in keys)


def test_only_a_dead_nodes_keys_move_and_they_move_back() -> None:
    ring = Ring(NODES)
    keys = [container_id(n) for n in range(200)] + [f"{n:064x}" for n in range(800)]
    before = {key: ring.target(key, set(NODES)) for key in keys}
    assert set(before.values()) == set(NODES)
    dead = NODES[1]
    during = {key: ring.target(key, set(NODES) - {dead}) for key in keys}
    moved = {key for key in keys if during[key] != before[key]}
    assert moved == {key for key in keys if before[key] == dead}
    assert all(during[key] == ring.walk(key)[1] for key in moved)  # the next distinct node
    assert {key: ring.target(key, set(NODES)) for key in keys} == before
    assert all(sorted(ring.walk(key)) == sorted(NODES) for key in keys)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n, 1.0, 60.0) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_s(10_000, 0.5, 30.0) == 30.0


def test_node_health_backs_off_until_a_call_succeeds() -> None:
    health = NodeHealth(1.0, 8.0, jitter=0.0)
    assert health.up and not health.probe_due(0.0)
    assert health.failed(100.0, "refused") == 1.0
    assert not health.up and not health.probe_due(100.5) and health.probe_due(101.0)
    assert health.failed(101.0, "refused") == 2.0
    health.answered()  # Ping answered: up, but the count stays
    assert health.up and health.failures == 2 and health.next_probe is None
    assert health.failed(103.0, "error string") == 4.0  # answered Ping, failed Update
    health.delivered()
    assert health.failures == 0 and health.total_failures == 3
    assert health.failed(200.0, "refused") == 1.0


def test_jitter_only_shortens_the_delay() -> None:
    health = NodeHealth(10.0, 10.0, jitter=0.5)
    delays = [health.failed(0.0, "x") for _ in range(50)]
    assert all(5.0 <= delay <= 10.0 for delay in delays) and len(set(delays)) > 1


# -- the JSON-RPC codec -----------------------------------------------------------------------


def test_requests_are_compact_json_lines_with_params_in_a_one_element_array() -> None:
    item = {"endpoint": "é", "metric": "m", "value": 0.5}
    assert (
        encode_request("Transfer.Update", [item], 7)
        == (
            '{"method":"Transfer.Update","params":[[{"endpoint":"é","metric":"m","value":0.5}]],'
            '"id":7}\n'
        ).encode()
    )
    assert (
        encode_request("Transfer.Ping", {}, 1)
        == b'{"method":"Transfer.Ping","params":[{}],"id":1}\n'
    )
    with pytest.raises(ValueError):
        encode_request("Transfer.Update", [{"value": float("nan")}], 1)


GO_RESPONSES = (
    '{"id":1,"result":{"Message":"ok","Total":200,"Invalid":0,"Latency":3},"error":null}\n'
    '{"id":3,"result":null,"error":"json: cannot unmarshal number 60.5 into Go struct field'
    ' MetricValue.step of type int64 \\u003cé\\u003e"}\n'
    '{"id":2,"result":{"code":0},"error":null}\n'
)


def test_responses_are_read_as_a_stream_whatever_the_segments() -> None:
    data = GO_RESPONSES.encode()
    for cut in range(len(data) + 1):
        reader = ResponseReader()
        values = []
        for part in (data[:cut], data[cut:]):
            reader.feed(part)
            while (value := reader.next()) is not None:
                values.append(value)
        assert [value["id"] for value in values] == [1, 3, 2], cut
    assert values[1]["error"].endswith("<é>")


@pytest.mark.parametrize(
    "garbage",
    [
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        b"}\n",
        b'{"id":1,"result":nope}\n',
        b"\xff\xfe",
        b"[1]\n",
    ],
)
def test_a_reply_that_is_not_json_rpc_is_a_transport_error(garbage: bytes) -> None:
    reader = ResponseReader()
    with pytest.raises(TransportError):
        reader.feed(garbage)
        value = reader.next()
        if value is not None:  # valid JSON, but not a response
            from cgstats.sinks._jsonrpc import _outcome

            _outcome(value)


class ReversingServer:
    """Reads ``calls`` requests, then answers them last first: what pipelining allows."""

    def __init__(self, calls: int, reply: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self.serve, args=(calls, reply), daemon=True)
        self.thread.start()

    def serve(self, calls: int, reply: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        connection, _ = self.listener.accept()
        with connection:
            buffer = b""
            while buffer.count(b"\n") < calls:
                buffer += connection.recv(65536)
            self.requests = buffer.split(b"\n")[:-1]
            answers = [json.dumps(reply(json.loads(line))) + "\n" for line in self.requests]
            connection.sendall("".join(reversed(answers)).encode())
            connection.recv(1)  # until the client closes

    def close(self) -> None:
        self.listener.close()


def test_pipelined_answers_are_matched_by_id() -> None:
    def reply(request: dict[str, Any]) -> dict[str, Any]:
        items = request["params"][0]
        if items == ["bad"]:
            return {"id": request["id"], "result": None, "error": "rejected"}
        return {"id": request["id"], "result": {"Total": len(items)}, "error": None}

    server = ReversingServer(3, reply)
    connection = Connection("127.0.0.1", server.port, call_timeout_s=WAIT_S)
    try:
        outcomes = connection.call_many("Transfer.Update", [["a"], ["bad"], ["b", "c"]])
    finally:
        connection.close()
        server.close()
    assert outcomes[0] == {"Total": 1} and outcomes[2] == {"Total": 2}
    assert isinstance(outcomes[1], RpcError) and str(outcomes[1]) == "rejected"
    assert [json.loads(line)["id"] for line in server.requests] == [1, 2, 3]


def test_a_silent_peer_times_out_and_a_refused_one_fails_fast() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        silent = Connection("127.0.0.1", listener.getsockname()[1], call_timeout_s=0.2)
        with pytest.raises(TransportError, match=r"no answer within 0\.2 s"):
            silent.call("Transfer.Ping", {})
        assert not silent.connected
    finally:
        listener.close()
    with pytest.raises(TransportError, match="refused"):
        Connection("127.0.0.1", free_port()).call("Transfer.Ping", {})


def test_abort_interrupts_a_call_from_another_thread() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    connection = Connection("127.0.0.1", listener.getsockname()[1], call_timeout_s=WAIT_S)
    failure: list[BaseException] = []

    def call() -> None:
        try:
            connection.call("Transfer.Ping", {})
        except TransportError as error:
            failure.append(error)

    thread = threading.Thread(target=call)
    thread.start()
    wait_for(lambda: connection.connected, "connected")
    connection.abort()
    thread.join(WAIT_S)
    listener.close()
    assert not thread.is_alive() and failure


# -- URLs ----------------------------------------------------------------------------------------


def test_the_issues_url_sets_every_option() -> None:
    transfers, options = parse_url(
        "falcon://10.0.0.1:8433,10.0.0.2:8433?endpoint=web-01&step=60"
        "&spool=/var/spool/cgstats&tags=app=web,env=prod&spool_max_bytes=1048576"
        "&max_memory_items=500&dial_timeout_s=0.5&call_timeout_s=2&backoff_s=0.1"
        "&max_backoff_s=5&batch_items=100&max_in_flight=2&flush_timeout_s=3"
        "&spool_chunk_items=1000&spool_fsync=false&vnodes=40"
    )
    assert transfers == ["10.0.0.1:8433", "10.0.0.2:8433"]
    assert options == {
        "endpoint": "web-01",
        "step": 60.0,
        "spool_dir": "/var/spool/cgstats",
        "tags": {"app": "web", "env": "prod"},
        "spool_max_bytes": 1048576,
        "max_memory_items": 500,
        "dial_timeout_s": 0.5,
        "call_timeout_s": 2.0,
        "backoff_s": 0.1,
        "max_backoff_s": 5.0,
        "batch_items": 100,
        "max_in_flight": 2,
        "flush_timeout_s": 3.0,
        "spool_chunk_items": 1000,
        "spool_fsync": False,
        "vnodes": 40,
    }


def test_every_url_parameter_is_documented() -> None:
    from cgstats.sinks.falcon import URL_PARAMETERS

    doc = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "docs", "falcon-deploy.md")
    with open(doc, encoding="utf-8") as handle:
        text = handle.read()
    missing = [name for name in URL_PARAMETERS if f"| `{name}=" not in text]
    assert missing == []


def test_open_sink_builds_a_falcon_sink(tmp_path: Any) -> None:
    sink = open_sink(f"falcon://127.0.0.1:1,[::1]:2,localhost?endpoint=e&step=30&spool={tmp_path}")
    try:
        assert isinstance(sink, FalconSink)
        assert sink.transfers == ("127.0.0.1:1", "[::1]:2", "localhost:8433")
        assert sink.endpoint == "e" and sink.step == 30 and sink.spool is not None
    finally:
        sink.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("falcon://h:1?colour=red", "unknown parameter 'colour'; known: backoff_s, batch_items"),
        ("falcon://h:1?step=10&step=20", "given twice"),
        ("falcon://h:1?step=ten", "step='ten' is not a number"),
        ("falcon://h:1?step=0", "positive"),
        ("falcon://h:1?max_in_flight=1.5", "not an int"),
        ("falcon://h:1?batch_items=201", "1..200"),
        ("falcon://h:1?tags=app", "not key=value"),
        ("falcon://h:1?spool_fsync=maybe", "boolean"),
        ("falcon://?step=10", "no transfer"),
        ("falcon://h:1/path", "no path"),
        ("falcon://h:99999", "bad port"),
        ("falcon://h:1,h:1", "twice"),
        ("falcon://::1:8433", "IPv6"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(SinkURLError, match=re.escape(message)):
        FalconSink.from_url(url)


def test_addresses() -> None:
    assert parse_address("10.0.0.1:8433") == ("10.0.0.1", 8433)
    assert parse_address("transfer.example") == ("transfer.example", 8433)
    assert parse_address("[fe80::1]:9000") == ("fe80::1", 9000)
    assert parse_address("[::1]") == ("::1", 8433)
    for bad in ("", ":8433", "[::1", "h:0", "h:x"):
        with pytest.raises(ValueError):
            parse_address(bad)
