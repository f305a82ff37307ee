"""The records cgstats returns, and their dictionary (JSON) form.

All records are frozen attrs classes with slots. Field names carry their
units; ``None`` means "unknown, absent or unlimited", never zero. The keys of
``to_dict()`` are the public JSON contract documented in docs/metrics.md.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs


class _Record:
    """Mixin giving every record the same ``to_dict()``."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """The record as plain dicts, lists, numbers and strings (JSON-ready)."""
        return attrs.asdict(self)  # type: ignore[arg-type]


@attrs.frozen
class CpuStats(_Record):
    """CPU time and CFS bandwidth.

    v1: ``cpuacct.usage*``, ``cpu.stat``, ``cpu.cfs_*``, ``cpu.shares``;
    v2: ``cpu.stat``, ``cpu.max``, ``cpu.weight``.
    """

    usage_ns: Optional[int]
    user_ns: Optional[int]
    system_ns: Optional[int]
    percpu_ns: Optional[tuple[int, ...]]
    periods: Optional[int]
    throttled_periods: Optional[int]
    throttled_ns: Optional[int]
    limit_cores: Optional[float]
    weight: Optional[int]
    shares: Optional[int]
    cpuset_cpus: Optional[int] = None
    stat: Optional[dict[str, int]] = None


@attrs.frozen
class MemoryStats(_Record):
    """Memory usage, limits and events (bytes unless named otherwise)."""

    usage_bytes: Optional[int]
    limit_bytes: Optional[int]
    soft_limit_bytes: Optional[int]
    high_bytes: Optional[int]
    low_bytes: Optional[int]
    working_set_bytes: Optional[int]
    rss_bytes: Optional[int]
    cache_bytes: Optional[int]
    mapped_file_bytes: Optional[int]
    swap_bytes: Optional[int]
    max_usage_bytes: Optional[int]
    failcnt: Optional[int]
    oom_events: Optional[int]
    oom_kills: Optional[int]
    stat: Optional[dict[str, int]]
    events: Optional[dict[str, int]] = None


@attrs.frozen
class BlkioDevice(_Record):
    """Block IO of one device, cumulative bytes and operations."""

    major: int
    minor: int
    device: Optional[str]
    read_bytes: Optional[int]
    write_bytes: Optional[int]
    read_ops: Optional[int]
    write_ops: Optional[int]
    discard_bytes: Optional[int] = None
    discard_ops: Optional[int] = None


@attrs.frozen
class BlkioStats(_Record):
    """Block IO per device.

    ``available`` is false when the kernel keeps no usable counters for this
    cgroup; ``reason`` then says why. ``source`` names the file read.
    """

    available: bool
    reason: Optional[str]
    devices: tuple[BlkioDevice, ...]
    source: Optional[str] = None


@attrs.frozen
class NetInterface(_Record):
    """Counters of one interface from ``/proc/<pid>/net/dev``."""

    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


@attrs.frozen
class NetStats(_Record):
    """The container's network namespace and all of its interfaces.

    ``netns`` is the namespace inode; ``shared_with_host`` is true when it is
    the namespace of the host's pid 1 (the counters are then the host's).
    ``pid`` is the process whose ``net/dev`` was read.
    """

    netns: int
    shared_with_host: Optional[bool]
    interfaces: tuple[NetInterface, ...]
    pid: Optional[int] = None


@attrs.frozen
class PidsStats(_Record):
    """Number of tasks (``pids.current``) and the limit (``pids.max``)."""

    current: Optional[int]
    limit: Optional[int]


@attrs.frozen
class PressureLine(_Record):
    """One PSI line: averages in percent, ``total_us`` stall time in µs."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


@attrs.frozen
class PressureResource(_Record):
    """``some`` and ``full`` lines of one ``*.pressure`` file."""

    some: Optional[PressureLine]
    full: Optional[PressureLine]


@attrs.frozen
class Pressure(_Record):
    """PSI of the cgroup: ``cpu.pressure``, ``memory.pressure``, ``io.pressure``."""

    cpu: Optional[PressureResource]
    memory: Optional[PressureResource]
    io: Optional[PressureResource]


@attrs.frozen
class Sample(_Record):
    """Everything read from one container at one moment.

    ``timestamp`` is Unix time (s, float) when the read started; a section is
    ``None`` when its controller is absent for this container. ``errors`` lists
    files that could not be read or parsed (their fields are ``None``).
    """

    id: str
    runtime: Optional[str]
    cgroup: str
    cgroup_version: int
    timestamp: float
    cpu: Optional[CpuStats]
    memory: Optional[MemoryStats]
    blkio: Optional[BlkioStats]
    net: Optional[NetStats]
    pids: Optional[PidsStats]
    pressure: Optional[Pressure]
    pod_uid: Optional[str] = None
    errors: tuple[str, ...] = ()
