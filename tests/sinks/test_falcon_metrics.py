"""Open-Falcon items from readings built on captured samples; the transfer's item rules.

Readings come from samples cgstats read from the captured fixture trees,
advanced by known amounts (tests/unit/samples.py) and turned into rates by
:func:`cgstats.rates.compute`, so every expected value is exact arithmetic.
The naming table in docs/falcon.md is checked against :data:`METRICS` here.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import attrs
import fixture_trees
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from unit.samples import advance, captured, with_interface

from cgstats import Reading, rates
from cgstats.model import CpuStats, MemoryStats, PidsStats, Sample
from cgstats.rates import Rates
from cgstats.sinks import falcon_metrics as fm

DOC = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "docs", "falcon.md")
STEP = 10
GiB = 1 << 30

needs_tree = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")


@pytest.fixture(params=fixture_trees.available() or ["none"])
def sample(request: pytest.FixtureRequest) -> Sample:
    if request.param == "none":
        pytest.skip("no fixture tree captured")
    return with_interface(captured(str(request.param)), "eth0", 5_000_000, 1_000_000)


def later_reading(sample: Sample, net_counted: bool | None = True) -> Reading:
    """A reading 10 s after ``sample`` with known deltas on every counter kind."""
    later = advance(
        sample,
        cpu_ns=2_000_000_000,
        user_ns=1_500_000_000,
        system_ns=500_000_000,
        periods=100,
        throttled=25,
        read_bytes=10_000_000,
        write_bytes=20_000_000,
        read_ops=100,
        write_ops=300,
        rx_bytes=4_000_000,
        tx_bytes=2_000_000,
        rx_packets=1000,
        tx_packets=500,
        pgfault=7000,
        pgmajfault=30,
        cpu_some_us=250_000,
        timestamp_s=10.0,
    )
    computed, backwards = rates.compute(sample, later, 10.0, host_cpus=2)
    assert not backwards
    return Reading(later, computed, net_counted=net_counted)


def by_metric(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {item["metric"]: item for item in items}
    assert len(out) == len(items), "a metric appears twice"
    return out


# --- the table ---------------------------------------------------------------


def test_names_are_unique_dotted_lower_case_gauges() -> None:
    names = [m.name for m in fm.METRICS]
    assert len(set(names)) == len(names)
    for metric in fm.METRICS:
        assert re.fullmatch(r"container(\.[a-z0-9_]+)+", metric.name), metric.name
        assert metric.counter_type == "GAUGE"
        assert metric.unit


def test_every_source_names_a_real_field() -> None:
    records = {"rates": Rates, "cpu": CpuStats, "memory": MemoryStats, "pids": PidsStats}
    for metric in fm.METRICS:
        operands = re.findall(r"(\w+)\.(\w+)", metric.source)
        assert operands, metric.source
        for section, field in operands:
            assert field in {f.name for f in attrs.fields(records[section])}, metric.source


def test_every_scalar_rate_has_a_metric() -> None:
    """A rate added to Rates without a row here would silently never reach Open-Falcon."""
    scalar = {
        f.name
        for f in attrs.fields(rates.Rates)
        if f.name not in ("interval_s", "blkio_devices", "net_interfaces")
    }
    used = {m.source[len("rates.") :] for m in fm.METRICS if m.source.startswith("rates.")}
    assert scalar == used


def test_only_network_rows_wait_for_net_counted() -> None:
    for metric in fm.METRICS:
        assert metric.net_counted_only == metric.name.startswith("container.net."), metric.name


def render_table() -> str:
    """The naming table as docs/falcon.md must show it (between its two markers)."""
    lines = ["| metric | unit | source | counterType |", "|---|---|---|---|"]
    for metric in fm.METRICS:
        source = f"`{metric.source}`"
        if metric.net_counted_only:
            source += " (`net_counted` readings only)"
        lines.append(f"| `{metric.name}` | {metric.unit} | {source} | {metric.counter_type} |")
    return "\n".join(lines)


def test_the_doc_shows_exactly_the_table() -> None:
    with open(DOC, encoding="utf-8") as handle:
        text = handle.read()
    match = re.search(r"<!-- metrics-table -->\n(.*?)\n<!-- /metrics-table -->", text, re.S)
    assert match, "docs/falcon.md lacks the <!-- metrics-table --> block"
    documented = re.findall(r"^\| `(container\.[^`]+)`", match.group(1), re.M)
    assert documented == [m.name for m in fm.METRICS]
    # The whole block, so units and sources cannot drift either; to regenerate:
    # python -c 'import sys; sys.path[:0] = ["tests", "tests/sinks"]; \
    #   import test_falcon_metrics as t; print(t.render_table())'
    assert match.group(1) == render_table()


# --- items of readings built on captured samples -----------------------------


def test_items_of_a_reading_carry_its_exact_rates_and_gauges(sample: Sample) -> None:
    reading = later_reading(sample)
    items = fm.reading_items(reading, endpoint="web-01", tags="app=web,container=abc", step=STEP)
    values = {metric: item["value"] for metric, item in by_metric(items).items()}
    memory = reading.sample.memory
    assert memory is not None and memory.usage_bytes is not None
    expected = {
        "container.cpu.usage.cores": 0.2,
        "container.cpu.user.cores": 0.15,
        "container.cpu.system.cores": 0.05,
        "container.cpu.usage.percent": 40.0,  # of the captured 0.5-core quota
        "container.cpu.limit.cores": 0.5,
        "container.cpu.throttled.ratio": 0.25,
        "container.memory.usage.bytes": memory.usage_bytes,
        "container.memory.limit.bytes": 268435456,
        "container.memory.usage.percent": memory.usage_bytes / 268435456 * 100,
        "container.memory.pgfault.per_s": 700.0,
        "container.memory.pgmajfault.per_s": 3.0,
        "container.blkio.read.bytes_per_s": 1_000_000.0,
        "container.blkio.write.bytes_per_s": 2_000_000.0,
        "container.blkio.read.ops_per_s": 10.0,
        "container.blkio.write.ops_per_s": 30.0,
        # lo and eth0 both advanced; totals leave lo out
        "container.net.rx.bytes_per_s": 400_000.0,
        "container.net.tx.bytes_per_s": 200_000.0,
        "container.net.rx.packets_per_s": 100.0,
        "container.net.tx.packets_per_s": 50.0,
        "container.net.rx.errors_per_s": 0.0,
        "container.net.tx.dropped_per_s": 0.0,
        "container.pids.current": 8,
        "container.pids.limit": 64,
        "container.psi.cpu.some.us_per_s": 25_000.0,
    }
    for metric, value in expected.items():
        assert values[metric] == pytest.approx(value), metric
    for item in items:
        assert set(item) == {
            "endpoint",
            "metric",
            "value",
            "step",
            "counterType",
            "tags",
            "timestamp",
        }
        assert item["endpoint"] == "web-01"
        assert item["tags"] == "app=web,container=abc"
        assert item["step"] == STEP
        assert item["counterType"] == "GAUGE"
        assert item["timestamp"] == int(reading.sample.timestamp) // STEP * STEP
        assert fm.item_problem(item) is None, item
        json.dumps(item, allow_nan=False)  # what the transfer can decode


def test_absent_is_not_zero(sample: Sample) -> None:
    """A first sample has no rates; a missing controller and no limit make no items."""
    first = Reading(sample, rates.first(), net_counted=True)
    names = set(by_metric(fm.reading_items(first, endpoint="h", tags="", step=STEP)))
    gauges = {m.name for m in fm.METRICS if not m.source.startswith("rates.")}
    assert names == gauges
    bare = attrs.evolve(
        sample,
        memory=None,
        pids=None,
        cpu=attrs.evolve(sample.cpu, limit_cores=None) if sample.cpu else None,
    )
    names = set(
        by_metric(fm.reading_items(Reading(bare, rates.first()), endpoint="h", tags="", step=STEP))
    )
    assert names == set()


def test_unlimited_memory_has_no_percent(sample: Sample) -> None:
    assert sample.memory is not None
    unlimited = attrs.evolve(sample, memory=attrs.evolve(sample.memory, limit_bytes=None))
    items = by_metric(
        fm.reading_items(Reading(unlimited, rates.first()), endpoint="h", tags="", step=1)
    )
    assert "container.memory.usage.bytes" in items
    assert "container.memory.limit.bytes" not in items
    assert "container.memory.usage.percent" not in items


@pytest.mark.parametrize("net_counted", [False, None])
def test_network_only_for_the_namespace_counter(sample: Sample, net_counted: bool | None) -> None:
    """A second container in a shared namespace (or the host's) reports no traffic."""
    reading = later_reading(sample, net_counted=net_counted)
    names = set(by_metric(fm.reading_items(reading, endpoint="h", tags="", step=STEP)))
    assert not {n for n in names if n.startswith("container.net.")}
    assert "container.cpu.usage.cores" in names
    counted = later_reading(sample, net_counted=True)
    names = set(by_metric(fm.reading_items(counted, endpoint="h", tags="", step=STEP)))
    assert {m.name for m in fm.METRICS if m.net_counted_only} <= names


def test_timestamp_is_aligned_down_to_the_step(sample: Sample) -> None:
    moved = attrs.evolve(sample, timestamp=1_700_000_059.999)
    reading = Reading(moved, rates.first())
    for step, expected in ((60, 1_700_000_040), (1, 1_700_000_059), (7, 1_700_000_057)):
        items = fm.reading_items(reading, endpoint="h", tags="", step=step)
        assert {item["timestamp"] for item in items} == {expected}
        assert {item["step"] for item in items} == {step}


@pytest.mark.parametrize("step", [0, -60, 60.0, True])
def test_a_bad_step_is_refused(sample: Sample, step: Any) -> None:
    with pytest.raises(ValueError, match="step"):
        fm.reading_items(Reading(sample, rates.first()), endpoint="h", tags="", step=step)


# --- helpers -----------------------------------------------------------------


@given(st.floats(min_value=1, max_value=4e9), st.integers(min_value=1, max_value=86400))
def test_align_timestamp(unix_s: float, step: int) -> None:
    aligned = fm.align_timestamp(unix_s, step)
    assert isinstance(aligned, int)
    assert aligned % step == 0
    assert 0 <= math.floor(unix_s) - aligned < step


tag_text = st.text(
    st.characters(blacklist_characters=",= \t\n\r\x0b\x0c", blacklist_categories=("Cs", "Z")),
    min_size=1,
    max_size=12,
)


@given(st.dictionaries(tag_text, tag_text, max_size=6))
def test_format_tags_sorts_and_the_transfer_accepts(tags: dict[str, str]) -> None:
    assume(all(not c.isspace() for text in (*tags, *tags.values()) for c in text))
    formatted = fm.format_tags(tags)
    pieces = formatted.split(",") if formatted else []
    assert [p.split("=")[0] for p in pieces] == sorted(tags)
    assert dict(p.split("=") for p in pieces) == tags
    assert fm.item_problem(item(tags=formatted)) is None


def test_short_id() -> None:
    assert fm.short_id("4f1b2c3d5e6f" + "0" * 52) == "4f1b2c3d5e6f"
    assert fm.short_id("abc") == "abc"


# --- item_problem ------------------------------------------------------------


def item(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "endpoint": "host-01",
        "metric": "container.cpu.usage.cores",
        "value": 0.42,
        "step": 60,
        "counterType": "GAUGE",
        "tags": "app=web,container=4f1b2c3d5e6f",
        "timestamp": 1_700_000_000,
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"endpoint": ""}, "endpoint"),
        ({"endpoint": None}, "endpoint"),
        ({"metric": ""}, "metric"),
        ({"metric": 5}, "metric"),
        ({"metric": "kernel.hostname"}, "kernel.hostname"),
        ({"counterType": "gauge"}, "counterType"),
        ({"counterType": ["GAUGE"]}, "counterType"),
        ({"step": 0}, "step"),
        ({"step": 60.5}, "step"),
        ({"step": 60.0}, "step"),
        ({"step": "60"}, "step"),
        ({"step": True}, "step"),
        ({"step": 1 << 63}, "step"),
        ({"timestamp": 0}, "timestamp"),
        ({"timestamp": fm.MAX_TIMESTAMP + 1}, "timestamp"),
        ({"timestamp": "1700000000"}, "timestamp"),
        ({"timestamp": 1_700_000_000.5}, "timestamp"),
        ({"value": float("nan")}, "finite"),
        ({"value": float("inf")}, "finite"),
        ({"value": -float("inf")}, "finite"),
        ({"value": "0.42"}, "number"),
        ({"value": None}, "number"),
        ({"value": True}, "number"),
        ({"value": 10**400}, "large"),
        ({"tags": None}, "tags"),
        ({"tags": "app"}, "k=v"),
        ({"tags": "app=web,"}, "k=v"),
        ({"tags": "app=we b"}, "whitespace"),
        ({"tags": "a\tp=web"}, "whitespace"),
        ({"tags": "app=a=b"}, "'='"),
        ({"tags": "=web"}, "empty"),
        ({"tags": "app="}, "empty"),
        ({"tags": "app=a,app=b"}, "repeats"),
        ({"metric": "m" * 255, "tags": "k=" + "v" * 254}, "511 bytes"),
        ({"metric": "é" * 200, "tags": "k=" + "v" * 109}, "511 bytes"),  # bytes, not characters
        ({"metric": "bad\udc80"}, "surrogate"),
    ],
)
def test_item_problem_names_the_rule(changes: dict[str, Any], reason: str) -> None:
    problem = fm.item_problem(item(**changes))
    assert problem is not None and reason in problem, problem


@pytest.mark.parametrize(
    "field", ["endpoint", "metric", "value", "step", "counterType", "tags", "timestamp"]
)
def test_every_field_is_required(field: str) -> None:
    incomplete = item()
    del incomplete[field]
    problem = fm.item_problem(incomplete)
    assert problem is not None and field in problem


def test_the_limits_themselves_pass() -> None:
    assert fm.item_problem(item(metric="m" * 255, tags="k=" + "v" * 253)) is None  # 510 bytes
    assert fm.item_problem(item(tags="", counterType="COUNTER", value=3)) is None
    assert fm.item_problem(item(counterType="DERIVE", value=-1e308, step=1, timestamp=1)) is None
    assert fm.item_problem(item(timestamp=fm.MAX_TIMESTAMP)) is None


finite = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**300), max_value=10**300),
)


@given(
    endpoint=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
    value=finite,
    step=st.integers(min_value=1, max_value=(1 << 63) - 1),
    timestamp=st.integers(min_value=1, max_value=fm.MAX_TIMESTAMP),
)
def test_valid_items_pass_and_encode(
    endpoint: str, value: float, step: int, timestamp: int
) -> None:
    candidate = item(endpoint=endpoint, value=value, step=step, timestamp=timestamp)
    assert fm.item_problem(candidate) is None
    json.dumps(candidate, allow_nan=False)


@given(
    st.sampled_from(sorted(item())),
    st.one_of(st.none(), st.booleans(), st.floats(), st.text(), st.lists(st.integers())),
)
def test_garbage_in_any_field_never_raises(field: str, garbage: Any) -> None:
    problem = fm.item_problem(item(**{field: garbage}))
    assert problem is None or isinstance(problem, str)
    if problem is None:  # whatever passes must be what the transfer decodes and keeps
        json.dumps(item(**{field: garbage}), allow_nan=False)
