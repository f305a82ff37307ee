"""Rates from two samples of one container: pure functions, no I/O, no clock.

:func:`compute` turns the counters of two consecutive :class:`~cgstats.model.Sample`
of the same cgroup, ``interval_s`` seconds apart on the monotonic clock, into a
:class:`Rates` record. Every rate is per second (CPU in cores, i.e. CPU-seconds
per second). A rate is ``None`` when it cannot be computed: on the first
sample (:func:`first`), when either side lacks the counter, or when the
counter went backwards (the delta restarts; :func:`compute`'s flag, and
the ``reset`` of :class:`cgstats.Reading`, say so). No
negative rate is ever produced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, TypeVar

import attrs

from cgstats.model import BlkioDevice, BlkioStats, NetStats, Sample, _Record

# Intervals shorter than this give rates dominated by the counters' own
# granularity (cpu.stat is in µs, cpuacct is updated at ticks): not reported.
MIN_INTERVAL_S = 0.001
# Interfaces left out of the network totals: loopback traffic never leaves the
# container (cAdvisor's network totals leave it out too).
TOTALS_SKIP_INTERFACES = frozenset({"lo"})


_NO_IO = BlkioDevice(0, 0, None, 0, 0, 0, 0)


@attrs.frozen
class DeviceRates(_Record):
    """Block IO rates of one device (``major:minor``), per second."""

    major: int
    minor: int
    device: Optional[str]
    read_bytes_per_s: Optional[float]
    write_bytes_per_s: Optional[float]
    read_ops_per_s: Optional[float]
    write_ops_per_s: Optional[float]


@attrs.frozen
class InterfaceRates(_Record):
    """Network rates of one interface, per second."""

    name: str
    rx_bytes_per_s: Optional[float]
    tx_bytes_per_s: Optional[float]
    rx_packets_per_s: Optional[float]
    tx_packets_per_s: Optional[float]
    rx_errors_per_s: Optional[float]
    tx_errors_per_s: Optional[float]
    rx_dropped_per_s: Optional[float]
    tx_dropped_per_s: Optional[float]


@attrs.frozen
class Rates(_Record):
    """Per-second rates between two samples; see docs/metrics.md (*Rates*).

    ``interval_s`` is the monotonic time between the two reads. CPU figures
    are in cores; ``cpu_percent`` is of ``limit_cores`` (the container's CFS
    quota or cpuset) or, without a limit, of all the host's CPUs.
    ``throttled_ratio`` is throttled periods over elapsed CFS periods. Block IO
    and network totals sum the devices and interfaces (network without
    ``lo``). PSI rates are stall microseconds per second (0 to 1,000,000).
    """

    interval_s: Optional[float]
    cpu_cores: Optional[float]
    cpu_user_cores: Optional[float]
    cpu_system_cores: Optional[float]
    cpu_percent: Optional[float]
    throttled_ratio: Optional[float]
    throttled_s_per_s: Optional[float]
    blkio_read_bytes_per_s: Optional[float]
    blkio_write_bytes_per_s: Optional[float]
    blkio_read_ops_per_s: Optional[float]
    blkio_write_ops_per_s: Optional[float]
    net_rx_bytes_per_s: Optional[float]
    net_tx_bytes_per_s: Optional[float]
    net_rx_packets_per_s: Optional[float]
    net_tx_packets_per_s: Optional[float]
    net_rx_errors_per_s: Optional[float]
    net_tx_errors_per_s: Optional[float]
    net_rx_dropped_per_s: Optional[float]
    net_tx_dropped_per_s: Optional[float]
    pgfault_per_s: Optional[float]
    pgmajfault_per_s: Optional[float]
    pressure_cpu_some_us_per_s: Optional[float]
    pressure_cpu_full_us_per_s: Optional[float]
    pressure_memory_some_us_per_s: Optional[float]
    pressure_memory_full_us_per_s: Optional[float]
    pressure_io_some_us_per_s: Optional[float]
    pressure_io_full_us_per_s: Optional[float]
    blkio_devices: tuple[DeviceRates, ...] = ()
    net_interfaces: tuple[InterfaceRates, ...] = ()


_RATE_FIELDS = tuple(
    field.name
    for field in attrs.fields(Rates)
    if field.name not in ("blkio_devices", "net_interfaces")
)
_NO_RATES = dict.fromkeys(_RATE_FIELDS)
_COUNT = len(_RATE_FIELDS) - 1  # the rates after interval_s


def _at(name: str) -> int:
    """Index of a rate in compute()'s list of the rates after ``interval_s``."""
    return _RATE_FIELDS.index(name) - 1


_CPU = _at("cpu_cores")  # then user, system, percent, throttled ratio, throttled s/s
_BLKIO = _at("blkio_read_bytes_per_s")  # then write bytes, read ops, write ops
_NET = _at("net_rx_bytes_per_s")  # then the 7 others in InterfaceRates order
_PGFAULT = _at("pgfault_per_s")
_PGMAJFAULT = _at("pgmajfault_per_s")
_PRESSURE = _at("pressure_cpu_some_us_per_s")  # then cpu full, memory some/full, io some/full


def first() -> Rates:
    """Rates of a container's first sample (or of the first one after a restart)."""
    return Rates(**_NO_RATES)  # type: ignore[arg-type]


def _per_second(before: Optional[int], after: Optional[int], per_s: float) -> Optional[float]:
    """``(after - before) * per_s``; ``None`` if unknown; negative if it went backwards."""
    if before is None or after is None:
        return None
    return (after - before) * per_s


def _rates(
    pairs: Sequence[tuple[Optional[int], Optional[int]]], per_s: float
) -> list[Optional[float]]:
    # _per_second inlined: a call per counter costs about 1.5 µs per sample.
    return [None if a is None or b is None else (b - a) * per_s for a, b in pairs]


def compute(before: Sample, after: Sample, interval_s: float, host_cpus: int) -> tuple[Rates, bool]:
    """Rates between ``before`` and ``after``, two samples of the same cgroup.

    ``interval_s`` is the monotonic time between the reads; ``host_cpus`` the
    host's online CPUs (the base of ``cpu_percent`` for a container without a
    CPU limit). The flag is true when a counter went backwards (its rate is
    then ``None``: the delta restarts from ``after``). Intervals under
    :data:`MIN_INTERVAL_S` give :func:`first`.
    """
    if interval_s < MIN_INTERVAL_S:
        return first(), False
    per_s = 1.0 / interval_s
    # Values in Rates field order after interval_s; negative marks "went backwards".
    values: list[Optional[float]] = [None] * _COUNT
    cpu_a, cpu_b = before.cpu, after.cpu
    if cpu_a is not None and cpu_b is not None:
        values[_CPU : _CPU + 3] = _rates(
            (
                (cpu_a.usage_ns, cpu_b.usage_ns),
                (cpu_a.user_ns, cpu_b.user_ns),
                (cpu_a.system_ns, cpu_b.system_ns),
            ),
            per_s * 1e-9,
        )
        cores = values[_CPU]
        if cores is not None and cores >= 0:
            base = cpu_b.limit_cores or float(host_cpus)
            values[_CPU + 3] = cores / base * 100.0 if base > 0 else None
        values[_CPU + 4] = _ratio(
            cpu_a.throttled_periods, cpu_b.throttled_periods, cpu_a.periods, cpu_b.periods
        )
        values[_CPU + 5] = _per_second(cpu_a.throttled_ns, cpu_b.throttled_ns, per_s * 1e-9)
    devices = _blkio(before.blkio, after.blkio, per_s, values)
    interfaces = _net(before.net, after.net, per_s, values)
    memory_a, memory_b = before.memory, after.memory
    if memory_a is not None and memory_b is not None:
        stat_a, stat_b = memory_a.stat or {}, memory_b.stat or {}
        values[_PGFAULT] = _per_second(stat_a.get("pgfault"), stat_b.get("pgfault"), per_s)
        values[_PGMAJFAULT] = _per_second(stat_a.get("pgmajfault"), stat_b.get("pgmajfault"), per_s)
    pressure_a, pressure_b = before.pressure, after.pressure
    if pressure_a is not None and pressure_b is not None:
        index = _PRESSURE
        for res_a, res_b in (
            (pressure_a.cpu, pressure_b.cpu),
            (pressure_a.memory, pressure_b.memory),
            (pressure_a.io, pressure_b.io),
        ):
            if res_a is not None and res_b is not None:
                for line_a, line_b in ((res_a.some, res_b.some), (res_a.full, res_b.full)):
                    if line_a is not None and line_b is not None:
                        values[index] = (line_b.total_us - line_a.total_us) * per_s
                    index += 1
            else:
                index += 2
    backwards = False
    for index, value in enumerate(values):
        if value is not None and value < 0:
            values[index] = None
            backwards = True
    if backwards:
        if values[_CPU] is None:
            values[_CPU + 3] = None  # cpu_percent follows cpu_cores
        devices = tuple(_forward(d) for d in devices)
        interfaces = tuple(_forward(i) for i in interfaces)
    rates = Rates(interval_s, *values, devices, interfaces)  # type: ignore[arg-type, call-arg]
    return rates, backwards


def _ratio(
    part_a: Optional[int], part_b: Optional[int], whole_a: Optional[int], whole_b: Optional[int]
) -> Optional[float]:
    """Delta of ``part`` over delta of ``whole`` (0 to 1); ``None`` if nothing elapsed.

    Negative (-1.0) when either went backwards.
    """
    if part_a is None or part_b is None or whole_a is None or whole_b is None:
        return None
    part, whole = part_b - part_a, whole_b - whole_a
    if part < 0 or whole < 0:
        return -1.0
    if whole == 0:
        return None
    return min(part / whole, 1.0)


_R = TypeVar("_R", DeviceRates, InterfaceRates)


def _forward(record: _R) -> _R:
    """``record`` with every negative (backwards) rate replaced by ``None``."""
    values = attrs.astuple(record, recurse=False)
    if not any(isinstance(v, float) and v < 0 for v in values):
        return record
    return type(record)(*(None if isinstance(v, float) and v < 0 else v for v in values))  # type: ignore[arg-type]


def _blkio(
    before: Optional[BlkioStats],
    after: Optional[BlkioStats],
    per_s: float,
    values: list[Optional[float]],
) -> tuple[DeviceRates, ...]:
    if before is None or after is None or not before.available or not after.available:
        return ()
    previous = {(d.major, d.minor): d for d in before.devices}
    devices = []
    totals: list[Optional[float]] = [0.0, 0.0, 0.0, 0.0]
    for device in after.devices:
        # The kernel lists a device once the cgroup has done IO on it, so one
        # that appears between two reads of the same cgroup started from zero.
        old = previous.get((device.major, device.minor), _NO_IO)
        rates = _rates(
            (
                (old.read_bytes, device.read_bytes),
                (old.write_bytes, device.write_bytes),
                (old.read_ops, device.read_ops),
                (old.write_ops, device.write_ops),
            ),
            per_s,
        )
        devices.append(DeviceRates(device.major, device.minor, device.device, *rates))
        totals = [_add(total, rate) for total, rate in zip(totals, rates)]
    values[_BLKIO : _BLKIO + 4] = totals
    return tuple(devices)


def _net(
    before: Optional[NetStats],
    after: Optional[NetStats],
    per_s: float,
    values: list[Optional[float]],
) -> tuple[InterfaceRates, ...]:
    if before is None or after is None or before.netns != after.netns:
        # Another namespace means other counters: no delta across the change.
        return ()
    previous = {i.name: i for i in before.interfaces}
    interfaces = []
    totals: list[Optional[float]] = [0.0] * 8
    for new in after.interfaces:
        old = previous.get(new.name)
        if old is None:
            continue
        rates = [
            (new.rx_bytes - old.rx_bytes) * per_s,
            (new.tx_bytes - old.tx_bytes) * per_s,
            (new.rx_packets - old.rx_packets) * per_s,
            (new.tx_packets - old.tx_packets) * per_s,
            (new.rx_errors - old.rx_errors) * per_s,
            (new.tx_errors - old.tx_errors) * per_s,
            (new.rx_dropped - old.rx_dropped) * per_s,
            (new.tx_dropped - old.tx_dropped) * per_s,
        ]
        interfaces.append(InterfaceRates(new.name, *rates))
        if new.name not in TOTALS_SKIP_INTERFACES:
            totals = [_add(total, rate) for total, rate in zip(totals, rates)]
    values[_NET : _NET + 8] = totals
    return tuple(interfaces)


def _add(total: Optional[float], rate: Optional[float]) -> Optional[float]:
    """Sum that becomes unknown as soon as one part is unknown (or went backwards)."""
    if total is None or rate is None or total < 0:
        return None
    if rate < 0:
        return -1.0
    return total + rate
