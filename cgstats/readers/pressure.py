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


_LINE = re.compile(
    r"(some|full) avg10=([0-9]+\.[0-9]+) avg60=([0-9]+\.[0-9]+) "
    r"avg300=([0-9]+\.[0-9]+) total=([0-9]+)\n?",
    re.ASCII,
)


def parse_pressure(text: str, what: str) -> PressureResource:
    """One ``*.pressure`` file; a line the kernel does not print is ``None``."""
    lines: dict[str, PressureLine] = {}
    matches = [_LINE.fullmatch(line) for line in text.splitlines()]
    if matches and all(matches):
        # The hot path: every line in the kernel's exact format.
        for match in matches:
            kind, avg10, avg60, avg300, total = match.groups()  # type: ignore[union-attr]
            lines[kind] = PressureLine(float(avg10), float(avg60), float(avg300), int(total))
        return PressureResource(some=lines.get("some"), full=lines.get("full"))
    for kind, values in parse_nested_keyed(text, what):
        if kind not in ("some", "full"):
            continue  # future line kinds are not fatal
        try:
            lines[kind] = PressureLine(
                avg10=to_float(values["avg10"], what),
                avg60=to_float(values["avg60"], what),
                avg300=to_float(values["avg300"], what),
                total_us=to_int(values["total"], what),
            )
        except KeyError as missing:
            raise ParseError(what, f"{kind} line lacks {missing}") from None
    if not lines:
        raise ParseError(what, "no 'some' or 'full' line")
    return PressureResource(some=lines.get("some"), full=lines.get("full"))


def build(texts: Mapping[str, str], problems: list[str], prefix: str = "") -> Optional[Pressure]:
    """Pressure from whichever files were read; ``None`` when PSI is unavailable."""
    resources: dict[str, Optional[PressureResource]] = {
        resource: field(texts, f"{prefix}{resource}.pressure", parse_pressure, problems)
        for resource in RESOURCES
    }
    if all(value is None for value in resources.values()):
        return None
    return Pressure(cpu=resources["cpu"], memory=resources["memory"], io=resources["io"])
