"""Pressure stall information: ``cpu.pressure``, ``memory.pressure``, ``io.pressure``.

Lines are ``some avg10=0.00 avg60=0.00 avg300=0.00 total=N`` and ``full ...``
with the averages in percent and ``total`` in microseconds. The files live in
the cgroup's v2 directory; on hybrid hosts in the container's unified-tree
cgroup (keys prefixed ``unified:``). A missing file, or ENOTSUP on read (PSI
disabled with ``psi=0``), gives ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Optional

from cgstats.errors import ParseError
from cgstats.model import Pressure, PressureLine, PressureResource
from cgstats.readers._parse import field, parse_nested_keyed, to_float, to_int

RESOURCES = ("cpu", "memory", "io")
V2_FILES = tuple(f"{resource}.pressure" for resource in RESOURCES)
HYBRID_FILES = tuple(f"unified:{name}" for name in V2_FILES)


_AVERAGES = r"avg10=([0-9]+\.[0-9]+) avg60=([0-9]+\.[0-9]+) avg300=([0-9]+\.[0-9]+) total=([0-9]+)"
# The whole file as every kernel since 5.13 prints it (cpu.pressure has a
# zero "full" line since then), matched in one pass.
_BOTH_LINES = re.compile(f"some {_AVERAGES}\nfull {_AVERAGES}\n?", re.ASCII)


def parse_pressure(text: str, what: str) -> PressureResource:
    """One ``*.pressure`` file; a line the kernel does not print is ``None``."""
    match = _BOTH_LINES.fullmatch(text)
    if match is not None:
        # The hot path. Positional arguments (some, full; avg10, avg60,
        # avg300, total_us) cost less than keywords; tests/unit check the order.
        s10, s60, s300, stotal, f10, f60, f300, ftotal = match.groups()
        return PressureResource(
            PressureLine(float(s10), float(s60), float(s300), int(stotal)),
            PressureLine(float(f10), float(f60), float(f300), int(ftotal)),
        )
    lines: dict[str, PressureLine] = {}
    for kind, fields in parse_nested_keyed(text, what):
        if kind not in ("some", "full"):
            continue  # future line kinds are not fatal
        try:
            lines[kind] = PressureLine(
                avg10=to_float(fields["avg10"], what),
                avg60=to_float(fields["avg60"], what),
                avg300=to_float(fields["avg300"], what),
                total_us=to_int(fields["total"], what),
            )
        except KeyError as missing:
            raise ParseError(what, f"{kind} line lacks {missing}") from None
    if not lines:
        raise ParseError(what, "no 'some' or 'full' line")
    return PressureResource(some=lines.get("some"), full=lines.get("full"))


def build(texts: Mapping[str, str], problems: list[str], prefix: str = "") -> Optional[Pressure]:
    """Pressure from whichever files were read; ``None`` when PSI is unavailable."""
    cpu, memory, io = (
        field(texts, name, parse_pressure, problems)
        for name in _FILES_BY_PREFIX.get(prefix) or [prefix + name for name in V2_FILES]
    )
    if cpu is None and memory is None and io is None:
        return None
    return Pressure(cpu=cpu, memory=memory, io=io)


_FILES_BY_PREFIX = {
    prefix: tuple(f"{prefix}{name}" for name in V2_FILES) for prefix in ("", "unified:")
}
