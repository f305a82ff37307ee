"""The human-readable per-container report of ``python -m cgstats.dump``.

Pure formatting: a :class:`~cgstats.model.Sample` (or, for ``--watch``, the
collector's readings) in, text out. Unknown values print as ``-``, unlimited
ones as ``unlimited``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

from cgstats.model import BlkioStats, CpuStats, MemoryStats, NetStats, Pressure, Sample

if TYPE_CHECKING:
    from cgstats.collector import Reading

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(value: Optional[int]) -> str:
    """``1536`` → ``1.5 KiB``; ``None`` → ``-``."""
    if value is None:
        return "-"
    amount = float(value)
    for unit in _UNITS:
        if abs(amount) < 1024 or unit == _UNITS[-1]:
            return f"{value} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def human_seconds(ns: Optional[int]) -> str:
    """Nanoseconds as seconds: ``1500000000`` → ``1.500 s``."""
    return "-" if ns is None else f"{ns / 1e9:.3f} s"


def _limit(value: Optional[int]) -> str:
    return "unlimited" if value is None else human_bytes(value)


def _count(value: Optional[int]) -> str:
    return "-" if value is None else str(value)


def format_sample(sample: Sample) -> str:
    """The report of one sample, ending with a newline."""
    title = sample.id if sample.id.startswith("/") else sample.id[:12]
    lines = [
        f"{title}  runtime={sample.runtime or '-'}  cgroup={sample.cgroup}  "
        f"(cgroup v{sample.cgroup_version})"
    ]
    if sample.pod_uid:
        lines.append(f"  pod       {sample.pod_uid}")
    lines += _section("cpu", _cpu(sample.cpu) if sample.cpu else None)
    lines += _section("memory", _memory(sample.memory) if sample.memory else None)
    lines += _section("blkio", _blkio(sample.blkio) if sample.blkio else None)
    lines += _section("net", _net(sample.net) if sample.net else None, "no process to read it from")
    pids = sample.pids
    if pids is None:
        lines += _section("pids", None)
    else:
        limit = "unlimited" if pids.limit is None else str(pids.limit)
        lines += _section("pids", [f"{_count(pids.current)} of {limit}"])
    pressure = _pressure(sample.pressure) if sample.pressure else None
    lines += _section("pressure", pressure, "PSI not available")
    for problem in sample.errors:
        lines.append(f"  warning   {problem}")
    return "\n".join(lines) + "\n"


def _section(
    name: str, body: Optional[list[str]], absent: str = "controller not available"
) -> list[str]:
    if body is None:
        return [f"  {name:<9} - ({absent})"]
    return [f"  {name:<9} {body[0]}"] + [f"  {'':<9} {line}" for line in body[1:]]


def _cpu(cpu: CpuStats) -> list[str]:
    limit = "unlimited" if cpu.limit_cores is None else f"{cpu.limit_cores:g} cores"
    weight = f"shares {cpu.shares}" if cpu.shares is not None else f"weight {_count(cpu.weight)}"
    lines = [
        f"usage {human_seconds(cpu.usage_ns)} (user {human_seconds(cpu.user_ns)}, "
        f"system {human_seconds(cpu.system_ns)})",
        f"limit {limit}, {weight}",
    ]
    if cpu.periods is not None:
        lines.append(
            f"throttled {_count(cpu.throttled_periods)} of {_count(cpu.periods)} periods, "
            f"{human_seconds(cpu.throttled_ns)}"
        )
    return lines


def _memory(memory: MemoryStats) -> list[str]:
    lines = [
        f"usage {human_bytes(memory.usage_bytes)} of {_limit(memory.limit_bytes)}, "
        f"working set {human_bytes(memory.working_set_bytes)}, "
        f"peak {human_bytes(memory.max_usage_bytes)}",
        f"rss {human_bytes(memory.rss_bytes)}, cache {human_bytes(memory.cache_bytes)}, "
        f"mapped {human_bytes(memory.mapped_file_bytes)}, swap {human_bytes(memory.swap_bytes)}",
    ]
    soft = []
    if memory.soft_limit_bytes is not None:
        soft.append(f"soft limit {human_bytes(memory.soft_limit_bytes)}")
    if memory.high_bytes is not None:
        soft.append(f"high {human_bytes(memory.high_bytes)}")
    if memory.low_bytes is not None:
        soft.append(f"low {human_bytes(memory.low_bytes)}")
    if soft:
        lines.append(", ".join(soft))
    lines.append(
        f"failcnt {_count(memory.failcnt)}, oom events {_count(memory.oom_events)}, "
        f"oom kills {_count(memory.oom_kills)}"
    )
    return lines


def _blkio(blkio: BlkioStats) -> list[str]:
    if not blkio.available:
        return [f"unavailable: {blkio.reason}"]
    if not blkio.devices:
        return ["no IO recorded"]
    return [
        f"{device.device or '?'} ({device.major}:{device.minor}): "
        f"read {human_bytes(device.read_bytes)} in {_count(device.read_ops)} ops, "
        f"write {human_bytes(device.write_bytes)} in {_count(device.write_ops)} ops"
        for device in blkio.devices
    ]


def _net(net: NetStats) -> list[str]:
    shared = {True: " (the host's namespace)", False: "", None: ""}[net.shared_with_host]
    lines = [f"netns {net.netns}{shared}, read via pid {_count(net.pid)}"]
    for iface in net.interfaces:
        lines.append(
            f"{iface.name}: rx {human_bytes(iface.rx_bytes)} {iface.rx_packets} pkts "
            f"({iface.rx_errors} err, {iface.rx_dropped} drop), "
            f"tx {human_bytes(iface.tx_bytes)} {iface.tx_packets} pkts "
            f"({iface.tx_errors} err, {iface.tx_dropped} drop)"
        )
    return lines


def _pressure(pressure: Pressure) -> list[str]:
    lines = []
    for name in ("cpu", "memory", "io"):
        resource = getattr(pressure, name)
        if resource is None:
            lines.append(f"{name}: -")
            continue
        parts = []
        for kind in ("some", "full"):
            line = getattr(resource, kind)
            if line is not None:
                parts.append(
                    f"{kind} {line.avg10:.2f}/{line.avg60:.2f}/{line.avg300:.2f}% "
                    f"total {line.total_us / 1e6:.3f} s"
                )
        lines.append(f"{name}: " + "; ".join(parts))
    return lines


# -- the --watch table ---------------------------------------------------------

WATCH_COLUMNS = (
    ("CONTAINER", 12),
    ("RUNTIME", 10),
    ("CPU", 6),
    ("CPU%", 6),
    ("THROTTLED", 9),
    ("MEM", 10),
    ("LIMIT", 10),
    ("RX/s", 10),
    ("TX/s", 10),
    ("READ/s", 10),
    ("WRITE/s", 10),
    ("PIDS", 5),
    ("", 0),
)


def human_rate(value: Optional[float]) -> str:
    """Bytes per second: ``2048.0`` → ``2.0 KiB``; ``None`` → ``-``."""
    return "-" if value is None else human_bytes(round(value))


def _fixed(value: Optional[float], digits: int, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def format_watch_table(readings: Sequence[Reading]) -> str:
    """One refresh of ``--watch``: a header and a line per container.

    CPU is in cores, CPU% of the container's limit (or of the host's CPUs),
    THROTTLED the share of CFS periods throttled, MEM the working set; network
    and block IO are per second. ``-`` is a rate that cannot be computed yet
    (first sample, reset). The last column flags ``reset`` and ``late``.
    """
    lines = [_row([name for name, _width in WATCH_COLUMNS])]
    for reading in sorted(readings, key=lambda r: r.id):
        sample, rates = reading.sample, reading.rates
        memory = sample.memory
        flags = []
        if reading.reset:
            flags.append("reset")
        if reading.late:
            flags.append("late")
        if reading.net_counted is False and reading.net_shared_with:
            flags.append("net shared")
        title = sample.id if sample.id.startswith("/") else sample.id[:12]
        lines.append(
            _row(
                [
                    title,
                    sample.runtime or "-",
                    _fixed(rates.cpu_cores, 2),
                    _fixed(rates.cpu_percent, 1, "%"),
                    _fixed(
                        None if rates.throttled_ratio is None else rates.throttled_ratio * 100,
                        0,
                        "%",
                    ),
                    human_bytes(memory.working_set_bytes) if memory else "-",
                    (_limit(memory.limit_bytes) if memory else "-"),
                    human_rate(rates.net_rx_bytes_per_s),
                    human_rate(rates.net_tx_bytes_per_s),
                    human_rate(rates.blkio_read_bytes_per_s),
                    human_rate(rates.blkio_write_bytes_per_s),
                    _count(sample.pids.current) if sample.pids else "-",
                    ",".join(flags),
                ]
            )
        )
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[str]) -> str:
    parts = []
    for (name, width), cell in zip(WATCH_COLUMNS, cells):
        if width == 0:
            parts.append(cell)
        elif name in ("CONTAINER", "RUNTIME"):
            parts.append(cell[:width].ljust(width))
        else:
            parts.append(cell.rjust(width))
    return "  ".join(parts).rstrip()
