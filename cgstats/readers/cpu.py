"""CPU time, CFS bandwidth and CPU limits.

v1 files: ``cpuacct.usage``, ``cpuacct.usage_user``, ``cpuacct.usage_sys``
(ns), ``cpuacct.usage_percpu`` (ns per CPU), ``cpuacct.stat`` (USER_HZ ticks,
the fallback on kernels without ``usage_user``), ``cpu.stat`` (``nr_periods
nr_throttled throttled_time`` in ns), ``cpu.cfs_quota_us`` (-1 = none),
``cpu.cfs_period_us``, ``cpu.shares``, ``cpuset.effective_cpus``.

v2 files: ``cpu.stat`` (``usage_usec user_usec system_usec``, plus ``nr_periods
nr_throttled throttled_usec`` with the cpu controller), ``cpu.max``,
``cpu.weight``, ``cpuset.cpus.effective``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Optional

from cgstats.errors import ParseError
from cgstats.model import CpuStats
from cgstats.readers._parse import field, parse_flat_keyed, parse_int, to_int

V1_FILES = (
    "cpuacct.usage",
    "cpuacct.usage_user",
    "cpuacct.usage_sys",
    "cpuacct.usage_percpu",
    "cpu.stat",
    "cpu.cfs_quota_us",
    "cpu.cfs_period_us",
    "cpu.shares",
    "cpuset.effective_cpus",
)
# Read only where cpuacct.usage_user is missing (kernels before 4.16).
V1_FALLBACK_FILES = ("cpuacct.stat",)
V2_FILES = ("cpu.stat", "cpu.max", "cpu.weight", "cpuset.cpus.effective")
HYBRID_FILES = ("unified:cpu.stat",)
# Settings written by the runtime, not counters: re-read only every
# ``Host.limits_max_age_s`` (see cgstats.container).
LIMIT_FILES = (
    "cpu.cfs_quota_us",
    "cpu.cfs_period_us",
    "cpu.shares",
    "cpuset.effective_cpus",
    "cpu.max",
    "cpu.weight",
    "cpuset.cpus.effective",
)


def v1_files(exists: Callable[[str], bool]) -> list[str]:
    """The v1 files to read for a cgroup, given which files exist.

    On hybrid hosts ``unified:cpu.stat`` is read only where the v1 user and
    system times are missing: it serves for nothing else, and skipping it
    saves a read per sample.
    """
    names = [name for name in V1_FILES if exists(name)]
    if not (exists("cpuacct.usage_user") and exists("cpuacct.usage_sys")):
        names += [name for name in HYBRID_FILES if exists(name)]
    if not exists("cpuacct.usage_user"):
        names += [name for name in V1_FALLBACK_FILES if exists(name)]
    return names


def parse_percpu(text: str, what: str) -> tuple[int, ...]:
    """``cpuacct.usage_percpu``: space-separated ns, one per possible CPU."""
    return tuple(to_int(token, what) for token in text.split())


def parse_cpu_max(text: str, what: str) -> tuple[Optional[int], int]:
    """``cpu.max``: ``$MAX $PERIOD`` in µs; ``max`` (no quota) gives ``None``."""
    parts = text.split()
    if len(parts) != 2:
        raise ParseError(what, f"expected 'quota period', got {text[:40]!r}")
    quota = None if parts[0] == "max" else to_int(parts[0], what)
    return quota, to_int(parts[1], what)


def parse_cpu_list(text: str, what: str) -> int:
    """Count the CPUs in a cpuset list such as ``0-3,8,10-11``."""
    count = 0
    for chunk in text.strip().split(","):
        if not chunk:
            continue
        first, dash, last = chunk.partition("-")
        low = to_int(first, what)
        high = to_int(last, what) if dash else low
        if low < 0 or high < low:
            raise ParseError(what, f"bad CPU range {chunk!r}")
        count += high - low + 1
    return count


def limit_cores(
    quota_us: Optional[int], period_us: Optional[int], cpuset_cpus: Optional[int], host_cpus: int
) -> Optional[float]:
    """CPU limit in cores: CFS quota / period, else a cpuset narrower than the host.

    ``None`` means unlimited (the container may use every CPU of the host).
    """
    if quota_us is not None and quota_us > 0 and period_us:
        return quota_us / period_us
    if cpuset_cpus and cpuset_cpus < host_cpus:
        return float(cpuset_cpus)
    return None


def _positive(value: Optional[int]) -> Optional[int]:
    return value if value is not None and value > 0 else None


def _ns_from_usec(stat: Optional[Mapping[str, int]], key: str) -> Optional[int]:
    if stat is None or key not in stat:
        return None
    return stat[key] * 1000


def build_v1(
    texts: Mapping[str, str], problems: list[str], *, host_cpus: int, clock_ticks: int
) -> CpuStats:
    """CpuStats from v1 files (and ``unified:cpu.stat`` on hybrid hosts)."""
    user_ns = field(texts, "cpuacct.usage_user", parse_int, problems)
    system_ns = field(texts, "cpuacct.usage_sys", parse_int, problems)
    if user_ns is None or system_ns is None:
        unified = field(texts, "unified:cpu.stat", parse_flat_keyed, problems)
        user_ns = _ns_from_usec(unified, "user_usec")
        system_ns = _ns_from_usec(unified, "system_usec")
    if user_ns is None or system_ns is None:
        ticks = field(texts, "cpuacct.stat", parse_flat_keyed, problems)
        if ticks is not None and "user" in ticks and "system" in ticks:
            user_ns = ticks["user"] * 1_000_000_000 // clock_ticks
            system_ns = ticks["system"] * 1_000_000_000 // clock_ticks
    raw_stat = field(texts, "cpu.stat", parse_flat_keyed, problems)
    stat = raw_stat or {}
    quota = field(texts, "cpu.cfs_quota_us", parse_int, problems)
    period = field(texts, "cpu.cfs_period_us", parse_int, problems)
    cpuset_cpus = field(texts, "cpuset.effective_cpus", parse_cpu_list, problems)
    return CpuStats(
        usage_ns=field(texts, "cpuacct.usage", parse_int, problems),
        user_ns=user_ns,
        system_ns=system_ns,
        percpu_ns=field(texts, "cpuacct.usage_percpu", parse_percpu, problems),
        periods=stat.get("nr_periods"),
        throttled_periods=stat.get("nr_throttled"),
        throttled_ns=stat.get("throttled_time"),
        limit_cores=limit_cores(_positive(quota), period, cpuset_cpus, host_cpus),
        weight=None,
        shares=field(texts, "cpu.shares", parse_int, problems),
        cpuset_cpus=cpuset_cpus,
        stat=raw_stat,
    )


def build_v2(texts: Mapping[str, str], problems: list[str], *, host_cpus: int) -> CpuStats:
    """CpuStats from v2 files."""
    stat = field(texts, "cpu.stat", parse_flat_keyed, problems)
    quota, period = field(texts, "cpu.max", parse_cpu_max, problems) or (None, None)
    cpuset_cpus = field(texts, "cpuset.cpus.effective", parse_cpu_list, problems)
    throttled_ns = _ns_from_usec(stat, "throttled_usec")
    return CpuStats(
        usage_ns=_ns_from_usec(stat, "usage_usec"),
        user_ns=_ns_from_usec(stat, "user_usec"),
        system_ns=_ns_from_usec(stat, "system_usec"),
        percpu_ns=None,  # v2 keeps no per-CPU usage
        periods=stat.get("nr_periods") if stat else None,
        throttled_periods=stat.get("nr_throttled") if stat else None,
        throttled_ns=throttled_ns,
        limit_cores=limit_cores(quota, period, cpuset_cpus, host_cpus),
        weight=field(texts, "cpu.weight", parse_int, problems),
        shares=None,
        cpuset_cpus=cpuset_cpus,
        stat=stat,
    )
