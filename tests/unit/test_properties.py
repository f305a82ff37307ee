"""Property tests: well-formed text round-trips; malformed text raises ParseError.

The parsers must never crash on garbage and never return a number the text
does not spell. Hypothesis generates both the well-formed files (in the
kernel's own format) and arbitrary corruptions of them.
"""

from __future__ import annotations

import contextlib
import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cgstats.discovery import CgroupPath, IdPrefix, ProcessSpec, parse_spec
from cgstats.errors import InvalidContainerId, ParseError
from cgstats.mounts import parse_mountinfo
from cgstats.readers import blkio, cpu, memory, pids, pressure
from cgstats.readers._parse import parse_flat_keyed, to_int
from cgstats.readers.net import parse_net_dev

DECIMAL = re.compile(r"-?[0-9]+")
counters = st.integers(min_value=0, max_value=2**64 - 1)
keys = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=24)
garbage = st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1"))


@given(st.text(max_size=30))
def test_to_int_accepts_only_plain_decimals(token: str) -> None:
    try:
        value = to_int(token, "test")
    except ParseError:
        assert not DECIMAL.fullmatch(token)
    else:
        assert DECIMAL.fullmatch(token) and value == int(token)


@given(st.dictionaries(keys, st.integers(min_value=-(2**63), max_value=2**64)))
def test_flat_keyed_round_trip(values: dict[str, int]) -> None:
    text = "".join(f"{key} {value}\n" for key, value in values.items())
    assert parse_flat_keyed(text, "test") == values


@given(garbage)
def test_flat_keyed_garbage(text: str) -> None:
    try:
        values = parse_flat_keyed(text, "test")
    except ParseError:
        return
    lines = set(text.splitlines())
    for key, value in values.items():
        assert any(
            line.split(" ") == [key, token] and int(token) == value
            for line in lines
            for token in [line.partition(" ")[2]]
        )


def _net_dev_text(rows: list[tuple[str, list[int]]]) -> str:
    header = (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets "
        "errs drop fifo colls carrier compressed\n"
    )
    body = "".join(f"{name:>6}:{' '.join(str(n) for n in numbers)}\n" for name, numbers in rows)
    return header + body


iface_names = st.text(
    alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=15
)


@given(st.lists(st.tuples(iface_names, st.lists(counters, min_size=16, max_size=16)), max_size=8))
def test_net_dev_round_trip(rows: list[tuple[str, list[int]]]) -> None:
    parsed = parse_net_dev(_net_dev_text(rows))
    assert [(i.name, i.rx_bytes, i.rx_packets, i.tx_bytes, i.tx_dropped) for i in parsed] == [
        (name, n[0], n[1], n[8], n[11]) for name, n in rows
    ]


@given(garbage)
def test_net_dev_garbage(text: str) -> None:
    try:
        parsed = parse_net_dev(text)
    except ParseError:
        return
    for iface in parsed:
        assert str(iface.rx_bytes) in text and str(iface.tx_bytes) in text


psi_avg = st.decimals(min_value=0, max_value=100, places=2).map(lambda d: f"{d:.2f}")


@given(psi_avg, psi_avg, psi_avg, counters, st.booleans())
def test_pressure_round_trip(a10: str, a60: str, a300: str, total: int, with_full: bool) -> None:
    line = f"avg10={a10} avg60={a60} avg300={a300} total={total}\n"
    text = f"some {line}" + (f"full {line}" if with_full else "")
    parsed = pressure.parse_pressure(text, "cpu.pressure")
    assert parsed.some is not None and parsed.some.total_us == total
    assert parsed.some.avg10 == float(a10) and parsed.some.avg300 == float(a300)
    assert (parsed.full is not None) == with_full


devices = st.tuples(st.integers(0, 4095), st.integers(0, 2**20))


@given(st.dictionaries(devices, st.tuples(counters, counters, counters, counters), max_size=6))
def test_io_stat_round_trip(stats: dict[tuple[int, int], tuple[int, int, int, int]]) -> None:
    text = "".join(
        f"{ma}:{mi} rbytes={rb} wbytes={wb} rios={ri} wios={wi} dbytes=0 dios=0\n"
        for (ma, mi), (rb, wb, ri, wi) in stats.items()
    )
    parsed = blkio.parse_io_stat(text, "io.stat")
    assert {d: (v["rbytes"], v["wbytes"], v["rios"], v["wios"]) for d, v in parsed.items()} == stats


@given(st.dictionaries(devices, st.tuples(counters, counters), max_size=6))
def test_v1_rwstat_round_trip(stats: dict[tuple[int, int], tuple[int, int]]) -> None:
    text = (
        "".join(
            f"{ma}:{mi} Read {r}\n{ma}:{mi} Write {w}\n{ma}:{mi} Total {r + w}\n"
            for (ma, mi), (r, w) in stats.items()
        )
        + f"Total {sum(r + w for r, w in stats.values())}\n"
    )
    parsed = blkio.parse_v1_rwstat(text, "blkio.throttle.io_service_bytes")
    assert {d: (v["Read"], v["Write"]) for d, v in parsed.items()} == stats


PARSERS = [
    lambda t: blkio.parse_io_stat(t, "io.stat"),
    lambda t: blkio.parse_v1_rwstat(t, "blkio"),
    lambda t: pressure.parse_pressure(t, "cpu.pressure"),
    lambda t: cpu.parse_cpu_max(t, "cpu.max"),
    lambda t: cpu.parse_cpu_list(t, "cpuset"),
    lambda t: cpu.parse_percpu(t, "percpu"),
    lambda t: memory.parse_memory_stat(t, "memory.stat"),
    lambda t: parse_mountinfo(t),
]


@pytest.mark.parametrize("parse", PARSERS)
@given(text=garbage)
def test_parsers_raise_only_parse_error(parse: object, text: str) -> None:
    with contextlib.suppress(ParseError):
        parse(text)  # type: ignore[operator]


BUILDERS = [
    ("memory v1", memory.V1_FILES, lambda t, p: memory.build_v1(t, p)),
    ("memory v2", memory.V2_FILES, lambda t, p: memory.build_v2(t, p)),
    (
        "cpu v1",
        (*cpu.V1_FILES, "cpuacct.stat", "unified:cpu.stat"),
        lambda t, p: cpu.build_v1(t, p, host_cpus=2, clock_ticks=100),
    ),
    ("cpu v2", cpu.V2_FILES, lambda t, p: cpu.build_v2(t, p, host_cpus=2)),
    ("pids", pids.FILES, lambda t, p: pids.build(t, p)),
    ("pressure", pressure.V2_FILES, lambda t, p: pressure.build(t, p)),
    (
        "blkio v1",
        blkio.V1_VARIANTS[3],
        lambda t, p: blkio.build_v1(t, p, lambda ma, mi: None),
    ),
    ("blkio v2", blkio.V2_FILES, lambda t, p: blkio.build_v2(t, p, lambda ma, mi: None)),
]


@pytest.mark.parametrize(("name", "files", "build"), BUILDERS, ids=[b[0] for b in BUILDERS])
@given(data=st.data())
def test_builders_never_raise_and_report_bad_files(
    name: str, files: tuple[str, ...], build: object, data: st.DataObject
) -> None:
    texts = data.draw(st.dictionaries(st.sampled_from(files), garbage))
    problems: list[str] = []
    build(texts, problems)  # type: ignore[operator]
    for problem in problems:
        assert any(problem.startswith(f"{key}: ") for key in texts)


@given(st.text(max_size=120))
def test_specs_never_escape(spec: str) -> None:
    try:
        parsed = parse_spec(spec)
    except InvalidContainerId:
        return
    assert "\x00" not in spec
    if isinstance(parsed, IdPrefix):
        assert re.fullmatch(r"[0-9a-f]{4,64}", parsed.prefix)
    elif isinstance(parsed, CgroupPath):
        assert parsed.path.startswith("/")
        assert not {".", ".."} & set(parsed.path.split("/"))
    else:
        assert isinstance(parsed, ProcessSpec) and parsed.pid > 0
