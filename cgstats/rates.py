"""Rates from two samples of one container: pure functions, no I/O, no clock.

:func:`compute` turns the counters of two consecutive :class:`~cgstats.model.Sample`
of the same cgroup, ``interval_s`` seconds apart on the monotonic clock, into a
:class:`Rates` record. Every rate is per second (CPU in cores, i.e. CPU-seconds
per second). A rate is ``None`` when it cannot be computed: on the first
sample (:func:`first`), when either side lacks the counter, or when the
counter went backwards (the delta restarts; :attr:`Rates.reset` says so). No
negative rate is ever produced.
"""

from __future__ import annotations

from typing import Optional

import attrs

from cgstats.model import BlkioDevice, BlkioStats, NetStats, Pressure, Sample, _Record

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


def first() -> Rates:
    """Rates of a container's first sample (or of the first one after a restart)."""
    return Rates(**_NO_RATES)  # type: ignore[arg-type]


class _Deltas:
    """Per-second deltas of one pair of samples; remembers whether one went backwards."""

    __slots__ = ("backwards", "interval_s")

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.backwards = False

    def rate(
        self, before: Optional[int], after: Optional[int], scale: float = 1.0
    ) -> Optional[float]:
        """``(after - before) / interval / scale``; ``None`` if unknown or backwards."""
        if before is None or after is None:
            return None
        delta = after - before
        if delta < 0:
            self.backwards = True
            return None
        return delta / self.interval_s / scale

    def ratio(
        self,
        part_before: Optional[int],
        part_after: Optional[int],
        whole_before: Optional[int],
        whole_after: Optional[int],
    ) -> Optional[float]:
        """Delta of ``part`` over delta of ``whole`` (0 to 1); ``None`` if nothing elapsed."""
        if None in (part_before, part_after, whole_before, whole_after):
            return None
        part = part_after - part_before  # type: ignore[operator]
        whole = whole_after - whole_before  # type: ignore[operator]
        if part < 0 or whole < 0:
            self.backwards = True
            return None
        if whole == 0:
            return None
        return min(part / whole, 1.0)


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
    deltas = _Deltas(interval_s)
    values: dict[str, Optional[float]] = dict(_NO_RATES)
    values["interval_s"] = interval_s
    _cpu(before, after, deltas, host_cpus, values)
    devices = _blkio(before.blkio, after.blkio, deltas, values)
    interfaces = _net(before.net, after.net, deltas, values)
    if before.memory is not None and after.memory is not None:
        stat_before = before.memory.stat or {}
        stat_after = after.memory.stat or {}
        values["pgfault_per_s"] = deltas.rate(stat_before.get("pgfault"), stat_after.get("pgfault"))
        values["pgmajfault_per_s"] = deltas.rate(
            stat_before.get("pgmajfault"), stat_after.get("pgmajfault")
        )
    _pressure(before.pressure, after.pressure, deltas, values)
    rates = Rates(**values, blkio_devices=devices, net_interfaces=interfaces)
    return rates, deltas.backwards


def _cpu(
    before: Sample,
    after: Sample,
    deltas: _Deltas,
    host_cpus: int,
    values: dict[str, Optional[float]],
) -> None:
    a, b = before.cpu, after.cpu
    if a is None or b is None:
        return
    cores = deltas.rate(a.usage_ns, b.usage_ns, 1e9)
    values["cpu_cores"] = cores
    values["cpu_user_cores"] = deltas.rate(a.user_ns, b.user_ns, 1e9)
    values["cpu_system_cores"] = deltas.rate(a.system_ns, b.system_ns, 1e9)
    if cores is not None:
        base = b.limit_cores or float(host_cpus)
        values["cpu_percent"] = cores / base * 100.0 if base > 0 else None
    values["throttled_ratio"] = deltas.ratio(
        a.throttled_periods, b.throttled_periods, a.periods, b.periods
    )
    values["throttled_s_per_s"] = deltas.rate(a.throttled_ns, b.throttled_ns, 1e9)


def _blkio(
    before: Optional[BlkioStats],
    after: Optional[BlkioStats],
    deltas: _Deltas,
    values: dict[str, Optional[float]],
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
        rates = (
            deltas.rate(old.read_bytes, device.read_bytes),
            deltas.rate(old.write_bytes, device.write_bytes),
            deltas.rate(old.read_ops, device.read_ops),
            deltas.rate(old.write_ops, device.write_ops),
        )
        devices.append(DeviceRates(device.major, device.minor, device.device, *rates))
        totals = [_add(total, rate) for total, rate in zip(totals, rates)]
    (
        values["blkio_read_bytes_per_s"],
        values["blkio_write_bytes_per_s"],
        values["blkio_read_ops_per_s"],
        values["blkio_write_ops_per_s"],
    ) = totals
    return tuple(devices)


def _net(
    before: Optional[NetStats],
    after: Optional[NetStats],
    deltas: _Deltas,
    values: dict[str, Optional[float]],
) -> tuple[InterfaceRates, ...]:
    if before is None or after is None or before.netns != after.netns:
        # Another namespace means other counters: no delta across the change.
        return ()
    previous = {i.name: i for i in before.interfaces}
    interfaces = []
    totals: list[Optional[float]] = [0.0] * 8
    for interface in after.interfaces:
        old = previous.get(interface.name)
        if old is None:
            continue
        rates = (
            deltas.rate(old.rx_bytes, interface.rx_bytes),
            deltas.rate(old.tx_bytes, interface.tx_bytes),
            deltas.rate(old.rx_packets, interface.rx_packets),
            deltas.rate(old.tx_packets, interface.tx_packets),
            deltas.rate(old.rx_errors, interface.rx_errors),
            deltas.rate(old.tx_errors, interface.tx_errors),
            deltas.rate(old.rx_dropped, interface.rx_dropped),
            deltas.rate(old.tx_dropped, interface.tx_dropped),
        )
        interfaces.append(InterfaceRates(interface.name, *rates))
        if interface.name not in TOTALS_SKIP_INTERFACES:
            totals = [_add(total, rate) for total, rate in zip(totals, rates)]
    (
        values["net_rx_bytes_per_s"],
        values["net_tx_bytes_per_s"],
        values["net_rx_packets_per_s"],
        values["net_tx_packets_per_s"],
        values["net_rx_errors_per_s"],
        values["net_tx_errors_per_s"],
        values["net_rx_dropped_per_s"],
        values["net_tx_dropped_per_s"],
    ) = totals
    return tuple(interfaces)


def _pressure(
    before: Optional[Pressure],
    after: Optional[Pressure],
    deltas: _Deltas,
    values: dict[str, Optional[float]],
) -> None:
    if before is None or after is None:
        return
    for name in ("cpu", "memory", "io"):
        old, new = getattr(before, name), getattr(after, name)
        if old is None or new is None:
            continue
        for line in ("some", "full"):
            old_line, new_line = getattr(old, line), getattr(new, line)
            if old_line is None or new_line is None:
                continue
            values[f"pressure_{name}_{line}_us_per_s"] = deltas.rate(
                old_line.total_us, new_line.total_us
            )


def _add(total: Optional[float], rate: Optional[float]) -> Optional[float]:
    """Sum that becomes unknown as soon as one part is unknown."""
    if total is None or rate is None:
        return None
    return total + rate
