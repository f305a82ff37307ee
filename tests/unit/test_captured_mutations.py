"""Corruptions of files captured from real kernels: ParseError or the right numbers.

Each parser gets real text from the fixture trees, then hypothesis damages it
(a byte replaced, inserted or deleted, the text cut short). The parser must
either raise ParseError or return only numbers that the damaged text spells
as whole tokens: never a crash, never a number the text does not contain.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import fixture_trees
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgstats.errors import ParseError
from cgstats.readers import blkio, cpu, memory, pressure
from cgstats.readers._parse import parse_flat_keyed
from cgstats.readers.net import parse_net_dev


def _numbers(value: Any) -> Iterable[float]:
    """Every number inside a parse result (dicts, tuples, records)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, (tuple, list, set)):
        for item in value:
            yield from _numbers(item)
    elif hasattr(value, "to_dict"):
        yield from _numbers(value.to_dict())


def _tokens(text: str) -> set[float]:
    found: set[float] = set()
    for token in re.findall(r"-?[0-9]+(?:\.[0-9]+)?", text, flags=re.ASCII):
        found.add(float(token))
    return found


def _samples(pattern: str) -> list[str]:
    texts = []
    for name in fixture_trees.available():
        for path in sorted(
            glob.glob(os.path.join(fixture_trees.root(name), pattern), recursive=True)
        ):
            with open(path, encoding="ascii", errors="replace") as handle:
                text = handle.read()
            if text.strip():
                texts.append(text)
    return texts[:40]


PARSERS: list[tuple[str, str, Callable[[str], Any]]] = [
    ("memory.stat", "sys/fs/cgroup/**/memory.stat", lambda t: memory.parse_memory_stat(t, "m")),
    ("cpu.stat", "sys/fs/cgroup/**/cpu.stat", lambda t: parse_flat_keyed(t, "c")),
    ("io.stat", "sys/fs/cgroup/**/io.stat", lambda t: blkio.parse_io_stat(t, "i")),
    (
        "blkio",
        "sys/fs/cgroup/**/blkio.throttle.io_service_bytes_recursive",
        lambda t: blkio.parse_v1_rwstat(t, "b"),
    ),
    ("pressure", "sys/fs/cgroup/**/cpu.pressure", lambda t: pressure.parse_pressure(t, "p")),
    ("cpu.max", "sys/fs/cgroup/**/cpu.max", lambda t: cpu.parse_cpu_max(t, "x")),
    ("percpu", "sys/fs/cgroup/**/cpuacct.usage_percpu", lambda t: cpu.parse_percpu(t, "u")),
    ("net/dev", "proc/*/net/dev", lambda t: parse_net_dev(t)),
]


def _mutate(text: str, data: st.DataObject) -> str:
    kind = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
    if not text:
        return text
    at = data.draw(st.integers(0, len(text) - 1))
    if kind == "truncate":
        return text[:at]
    if kind == "delete":
        return text[:at] + text[at + 1 :]
    char = data.draw(st.sampled_from(list("x-_.+:= \t\n\x00٣9")) | st.characters())
    if kind == "insert":
        return text[:at] + char + text[at:]
    return text[:at] + char + text[at + 1 :]


@pytest.mark.parametrize(("name", "pattern", "parse"), PARSERS, ids=[p[0] for p in PARSERS])
@settings(max_examples=100)
@given(data=st.data())
def test_damaged_real_files(
    name: str, pattern: str, parse: Callable[[str], Any], data: st.DataObject
) -> None:
    samples = _samples(pattern)
    if not samples:
        pytest.skip(f"no captured {name} in the fixture trees")
    original = data.draw(st.sampled_from(samples))
    parse(original)  # the real text itself parses
    damaged = _mutate(original, data)
    try:
        result = parse(damaged)
    except ParseError:
        return
    spelled = _tokens(damaged)
    for number in _numbers(result):
        assert float(number) in spelled, (number, damaged)
