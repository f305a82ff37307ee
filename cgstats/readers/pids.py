"""Task counts: ``pids.current`` and ``pids.max`` (``max`` = unlimited), v1 and v2 alike."""

from __future__ import annotations

from collections.abc import Mapping

from cgstats.model import PidsStats
from cgstats.readers._parse import field, parse_int, parse_int_or_max

FILES = ("pids.current", "pids.max")
# A setting, not a counter: re-read only every ``Host.limits_max_age_s``.
LIMIT_FILES = ("pids.max",)


def build(texts: Mapping[str, str], problems: list[str]) -> PidsStats:
    """PidsStats from ``pids.current`` and ``pids.max``."""
    return PidsStats(
        current=field(texts, "pids.current", parse_int, problems),
        limit=field(texts, "pids.max", parse_int_or_max, problems),
    )
