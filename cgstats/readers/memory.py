"""Memory usage, limits, statistics and OOM events.

v1 files: ``memory.usage_in_bytes``, ``memory.limit_in_bytes``,
``memory.soft_limit_in_bytes``, ``memory.max_usage_in_bytes``,
``memory.failcnt``, ``memory.stat`` (the hierarchical ``total_*`` keys are
preferred), ``memory.oom_control`` and, with swap accounting,
``memory.memsw.usage_in_bytes``.

v2 files: ``memory.current``, ``memory.max``, ``memory.high``, ``memory.low``,
``memory.peak`` (5.19+), ``memory.swap.current``, ``memory.stat``,
``memory.events``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from cgstats.model import MemoryStats
from cgstats.readers._parse import (
    clamp,
    field,
    parse_flat_keyed,
    parse_int,
    parse_int_or_max,
    parse_v1_limit,
)

V1_FILES = (
    "memory.usage_in_bytes",
    "memory.limit_in_bytes",
    "memory.soft_limit_in_bytes",
    "memory.max_usage_in_bytes",
    "memory.failcnt",
    "memory.stat",
    "memory.oom_control",
    "memory.memsw.usage_in_bytes",
)
V2_FILES = (
    "memory.current",
    "memory.max",
    "memory.high",
    "memory.low",
    "memory.peak",
    "memory.swap.current",
    "memory.stat",
    "memory.events",
)
# Settings written by the runtime, not counters: re-read only every
# ``Host.limits_max_age_s`` (see cgstats.container).
LIMIT_FILES = (
    "memory.limit_in_bytes",
    "memory.soft_limit_in_bytes",
    "memory.max",
    "memory.high",
    "memory.low",
)


def parse_memory_stat(text: str, what: str) -> dict[str, int]:
    """``memory.stat`` with every key kept and negative values clamped at 0."""
    values = parse_flat_keyed(text, what)
    if "-" in text:
        return {key: max(value, 0) for key, value in values.items()}
    return values


def working_set(usage: Optional[int], inactive_file: Optional[int]) -> Optional[int]:
    """usage - inactive_file, clamped at 0 (as cAdvisor, kubelet and docker compute it)."""
    if usage is None or inactive_file is None:
        return None
    return max(usage - inactive_file, 0)


def _stat_value(stat: Optional[Mapping[str, int]], *keys: str) -> Optional[int]:
    """The first of ``keys`` present in ``stat``."""
    if stat is None:
        return None
    for key in keys:
        if key in stat:
            return stat[key]
    return None


def build_v1(texts: Mapping[str, str], problems: list[str]) -> MemoryStats:
    """MemoryStats from v1 files."""
    usage = clamp(field(texts, "memory.usage_in_bytes", parse_int, problems))
    stat = field(texts, "memory.stat", parse_memory_stat, problems)
    oom = field(texts, "memory.oom_control", parse_flat_keyed, problems)
    memsw = field(texts, "memory.memsw.usage_in_bytes", parse_int, problems)
    swap = max(memsw - usage, 0) if memsw is not None and usage is not None else None
    return MemoryStats(
        usage_bytes=usage,
        limit_bytes=field(texts, "memory.limit_in_bytes", parse_v1_limit, problems),
        soft_limit_bytes=field(texts, "memory.soft_limit_in_bytes", parse_v1_limit, problems),
        high_bytes=None,
        low_bytes=None,
        working_set_bytes=working_set(
            usage, _stat_value(stat, "total_inactive_file", "inactive_file")
        ),
        rss_bytes=_stat_value(stat, "total_rss", "rss"),
        cache_bytes=_stat_value(stat, "total_cache", "cache"),
        mapped_file_bytes=_stat_value(stat, "total_mapped_file", "mapped_file"),
        swap_bytes=swap,
        max_usage_bytes=field(texts, "memory.max_usage_in_bytes", parse_int, problems),
        failcnt=field(texts, "memory.failcnt", parse_int, problems),
        oom_events=None,  # v1 counts OOM kills (oom_control), not OOM events
        oom_kills=oom.get("oom_kill") if oom is not None else None,
        stat=stat,
    )


def build_v2(texts: Mapping[str, str], problems: list[str]) -> MemoryStats:
    """MemoryStats from v2 files."""
    usage = field(texts, "memory.current", parse_int, problems)
    stat = field(texts, "memory.stat", parse_memory_stat, problems)
    events = field(texts, "memory.events", parse_flat_keyed, problems)
    return MemoryStats(
        usage_bytes=usage,
        limit_bytes=field(texts, "memory.max", parse_int_or_max, problems),
        soft_limit_bytes=None,
        high_bytes=field(texts, "memory.high", parse_int_or_max, problems),
        low_bytes=_zero_is_none(field(texts, "memory.low", parse_int_or_max, problems)),
        working_set_bytes=working_set(usage, _stat_value(stat, "inactive_file")),
        rss_bytes=_stat_value(stat, "anon"),
        cache_bytes=_stat_value(stat, "file"),
        mapped_file_bytes=_stat_value(stat, "file_mapped"),
        swap_bytes=field(texts, "memory.swap.current", parse_int, problems),
        max_usage_bytes=field(texts, "memory.peak", parse_int, problems),
        failcnt=None,  # v2 has no failcnt; memory.events "max" counts limit hits
        oom_events=events.get("oom") if events is not None else None,
        oom_kills=events.get("oom_kill") if events is not None else None,
        stat=stat,
        events=events,
    )


def _zero_is_none(value: Optional[int]) -> Optional[int]:
    # memory.low defaults to 0, which means "no protection", not a limit of 0.
    return value if value else None
