"""Parsing helpers shared by the per-controller readers.

Every function here is pure: text in, numbers out. Malformed text raises
:class:`cgstats.errors.ParseError`; nothing else escapes, and no input is
silently turned into a number it does not spell (``int()`` alone would accept
``"1_000"``, ``"+5"`` and non-ASCII digits).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Optional, TypeVar

from cgstats.errors import ParseError

T = TypeVar("T")

# v1 reports "no limit" as PAGE_COUNTER_MAX * PAGE_SIZE rounded to the page:
# 9223372036854771712 with 4 KiB pages. Anything at or above it is unlimited.
V1_UNLIMITED = 9223372036854771712


def to_int(token: str, what: str) -> int:
    """Convert one decimal token (optionally negative) to an int, strictly."""
    if token.isdigit() and token.isascii():
        return int(token)
    digits = token[1:] if token[:1] == "-" else token
    if not (digits.isascii() and digits.isdigit()):
        raise ParseError(what, f"not an integer: {token[:40]!r}")
    return int(token)


def to_float(token: str, what: str) -> float:
    """Convert a decimal token such as ``12.34`` (as PSI prints it) to a float."""
    whole, dot, frac = token.partition(".")
    if not (
        whole.isascii() and whole.isdigit() and (not dot or (frac.isascii() and frac.isdigit()))
    ):
        raise ParseError(what, f"not a decimal number: {token[:40]!r}")
    return float(token)


def parse_int(text: str, what: str) -> int:
    """A file holding one integer, such as ``memory.usage_in_bytes``."""
    token = text.strip()
    if token.isdigit() and token.isascii():
        return int(token)  # the hot path: one call less than to_int
    return to_int(token, what)


def parse_int_or_max(text: str, what: str) -> Optional[int]:
    """A v2 limit file holding an integer or ``max``; ``max`` is ``None``."""
    token = text.strip()
    if token == "max":
        return None
    return to_int(token, what)


def parse_v1_limit(text: str, what: str) -> Optional[int]:
    """A v1 byte limit; the kernel's "no limit" value (or -1) is ``None``."""
    value = parse_int(text, what)
    if value >= V1_UNLIMITED or value == -1:
        return None
    return value


# A whole well-formed flat-keyed file, checked in one pass: printable ASCII
# keys, ASCII decimal values, single spaces and newlines (so that str.split()
# afterwards cuts exactly there and nowhere else).
_FLAT_KEYED = re.compile(r"(?:[!-~]+ -?[0-9]+\n)*(?:[!-~]+ -?[0-9]+)?")


def parse_flat_keyed(text: str, what: str) -> dict[str, int]:
    """Lines of ``key value`` (``memory.stat``, ``cpu.stat``, ``memory.events``).

    Unknown keys are kept: the set of keys varies with the kernel version.
    """
    if _FLAT_KEYED.fullmatch(text):
        # The hot path: validated by one regex, converted in C.
        tokens = text.split()
        return dict(zip(tokens[::2], map(int, tokens[1::2])))
    values: dict[str, int] = {}
    for line in text.splitlines():
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0]:
            raise ParseError(what, f"expected 'key value', got {line[:60]!r}")
        values[parts[0]] = to_int(parts[1], what)
    return values


def parse_nested_keyed(text: str, what: str) -> list[tuple[str, dict[str, str]]]:
    """Lines of ``name k=v k=v ...`` (``io.stat``, ``*.pressure``)."""
    rows: list[tuple[str, dict[str, str]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, *pairs = line.split()
        fields: dict[str, str] = {}
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq or not key or not value:
                raise ParseError(what, f"expected 'key=value', got {pair[:40]!r}")
            fields[key] = value
        rows.append((name, fields))
    return rows


def clamp(value: Optional[int]) -> Optional[int]:
    """Clamp a counter at zero: some kernels briefly report negative values."""
    if value is None or value >= 0:
        return value
    return 0


def field(
    texts: Mapping[str, str],
    key: str,
    parse: Callable[[str, str], T],
    problems: list[str],
) -> Optional[T]:
    """Parse ``texts[key]`` if the file was read; ``None`` if it was absent.

    A malformed file becomes ``None`` plus a line in ``problems`` naming the
    file, so one bad file never costs the rest of the sample.
    """
    text = texts.get(key)
    if text is None:
        return None
    try:
        return parse(text, key)
    except ParseError as err:
        problems.append(f"{key}: {err.reason}")
        return None
