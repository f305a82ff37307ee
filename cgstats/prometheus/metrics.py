"""The cAdvisor metric table: every name exposed, its type, labels and cgstats source.

Pure data and pure functions of a :class:`Observation` (no I/O, no
prometheus_client). Names, types, help texts and label names are cAdvisor's
(``metrics/prometheus.go`` of google/cadvisor); values are converted to
cAdvisor's units: ns and µs become seconds, bytes stay bytes. A value cgstats
does not have (``None``) gives no series at all, never a zero. The same table
is written out in docs/prometheus.md (a test keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Optional

import attrs

from cgstats.model import BlkioDevice, NetInterface, PressureResource, Sample

COUNTER = "counter"
GAUGE = "gauge"

# Label names every container series carries, in this order (cAdvisor's
# DefaultContainerLabels); a ``labels`` callable may add more.
CONTAINER_LABELS = ("id", "name", "image")

# cAdvisor drops interfaces whose name starts with one of these (case-insensitive):
# container/libcontainer/handler.go, ignoredDevicePrefixes.
CADVISOR_IGNORED_INTERFACES = ("lo", "veth", "docker", "nerdctl")

LabelValues = tuple[str, ...]
Values = list[tuple[LabelValues, float]]

NS_PER_S = 1e9
US_PER_S = 1e6


@attrs.frozen
class Observation:
    """One container at one scrape: what the table's value functions read.

    ``interfaces`` are the interfaces this container reports: empty unless it
    is the one container counting its network namespace, and without the
    names cAdvisor ignores. ``processes`` is the number of pids in its
    ``cgroup.procs`` (``None`` if that could not be read). ``seen`` is the
    scrape's Unix time in seconds; ``started`` the container's start time as
    cAdvisor derives it from its cgroup directories (Unix s, ``None`` if unknown).
    """

    sample: Sample
    processes: Optional[int]
    interfaces: tuple[NetInterface, ...]
    seen: float
    started: Optional[float] = None


@attrs.frozen
class MetricSpec:
    """One exposed metric: cAdvisor's name, type, help and extra labels, and its source.

    ``source``, ``conversion`` and ``versions`` are documentation (the
    docs/prometheus.md table); ``values`` gives (extra label values, value)
    pairs for one container, empty when cgstats has no value.
    """

    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    source: str
    conversion: str
    versions: str
    values: Callable[[Observation], Values]


def _one(value: Optional[float], scale: float = 1.0) -> Values:
    return [] if value is None else [((), value / scale)]


# -- cpu -----------------------------------------------------------------------


def _cpu_usage(obs: Observation) -> Values:
    cpu = obs.sample.cpu
    # cAdvisor without per-CPU metrics (its default, and the kubelet's) reports
    # the total as cpu="total".
    if cpu is None or cpu.usage_ns is None:
        return []
    return [(("total",), cpu.usage_ns / NS_PER_S)]


def _cpu_user(obs: Observation) -> Values:
    cpu = obs.sample.cpu
    return [] if cpu is None else _one(cpu.user_ns, NS_PER_S)


def _cpu_system(obs: Observation) -> Values:
    cpu = obs.sample.cpu
    return [] if cpu is None else _one(cpu.system_ns, NS_PER_S)


def cfs_active(sample: Sample) -> bool:
    """Whether the kernel has counted CFS periods for this cgroup.

    cAdvisor emits its ``container_cpu_cfs_*`` series only for containers with
    a CFS quota; the kernel counts ``nr_periods`` only while one is set, so a
    non-zero count stands for it (cgstats keeps the limit as cores, not the
    raw quota).
    """
    cpu = sample.cpu
    return cpu is not None and cpu.periods is not None and cpu.periods > 0


def _cfs(
    pick: Callable[[Sample], Optional[float]], scale: float = 1.0
) -> Callable[[Observation], Values]:
    def values(obs: Observation) -> Values:
        if not cfs_active(obs.sample):
            return []
        return _one(pick(obs.sample), scale)

    return values


def _stat(sample: Sample, key: str) -> Optional[int]:
    stat = sample.cpu.stat if sample.cpu is not None else None
    return None if stat is None else stat.get(key)


def _burst_seconds(sample: Sample) -> Optional[float]:
    # v1 cpu.stat burst_time is in ns, v2 burst_usec in µs.
    if sample.cgroup_version == 2:
        usec = _stat(sample, "burst_usec")
        return None if usec is None else usec / US_PER_S
    ns = _stat(sample, "burst_time")
    return None if ns is None else ns / NS_PER_S


def _cpu_shares(obs: Observation) -> Values:
    cpu = obs.sample.cpu
    if cpu is None:
        return []
    if cpu.shares is not None:
        return [((), float(cpu.shares))]
    if cpu.weight is not None and 1 <= cpu.weight <= 10000:
        # cAdvisor's convertCPUWeightToCPULimit: [1, 10000] onto [2, 262144]
        return [((), float(2 + (cpu.weight - 1) * 262142 // 9999))]
    return []


# -- memory --------------------------------------------------------------------


def _memory(field: str) -> Callable[[Observation], Values]:
    def values(obs: Observation) -> Values:
        memory = obs.sample.memory
        return [] if memory is None else _one(getattr(memory, field))

    values.__name__ = f"memory_{field}"
    return values


def _memory_stat(v1_key: str, v2_key: str) -> Callable[[Observation], Values]:
    def values(obs: Observation) -> Values:
        memory = obs.sample.memory
        if memory is None or memory.stat is None:
            return []
        key = v2_key if obs.sample.cgroup_version == 2 else v1_key
        return _one(memory.stat.get(key))

    return values


def _memory_failures(obs: Observation) -> Values:
    memory = obs.sample.memory
    if memory is None or memory.stat is None:
        return []
    out: Values = []
    # cAdvisor reports memory.stat pgfault/pgmajfault under both scopes.
    for kind in ("pgfault", "pgmajfault"):
        value = memory.stat.get(kind)
        if value is not None:
            out += [((kind, "container"), float(value)), ((kind, "hierarchy"), float(value))]
    return out


# -- pids ------------------------------------------------------------------------


def _processes(obs: Observation) -> Values:
    return _one(obs.processes)


def _threads(obs: Observation) -> Values:
    pids = obs.sample.pids
    return [] if pids is None else _one(pids.current)


def _threads_max(obs: Observation) -> Values:
    pids = obs.sample.pids
    return [] if pids is None else _one(pids.limit)


# -- block IO ----------------------------------------------------------------------


def device_label(device: BlkioDevice) -> str:
    """cAdvisor's ``device`` label: ``/dev/<name>``; ``MAJ:MIN`` if the name is unknown."""
    if device.device:
        return "/dev/" + device.device
    return f"{device.major}:{device.minor}"


def _devices(obs: Observation) -> tuple[BlkioDevice, ...]:
    blkio = obs.sample.blkio
    if blkio is None or not blkio.available:
        return ()
    return blkio.devices


def _per_device(field: str) -> Callable[[Observation], Values]:
    def values(obs: Observation) -> Values:
        out: Values = []
        for device in _devices(obs):
            value = getattr(device, field)
            if value is not None:
                out.append(((device_label(device),), float(value)))
        return out

    return values


def _device_usage(obs: Observation) -> Values:
    out: Values = []
    for device in _devices(obs):
        labels = (device_label(device), str(device.major), str(device.minor))
        for operation, value in (("Read", device.read_bytes), ("Write", device.write_bytes)):
            if value is not None:
                out.append(((*labels, operation), float(value)))
    return out


# -- network -----------------------------------------------------------------------


def interface_ignored(name: str, prefixes: Iterable[str] = CADVISOR_IGNORED_INTERFACES) -> bool:
    """Whether cAdvisor leaves interface ``name`` out (a case-insensitive name prefix)."""
    lower = name.lower()
    return any(lower.startswith(prefix) for prefix in prefixes)


def _per_interface(field: str) -> Callable[[Observation], Values]:
    def values(obs: Observation) -> Values:
        return [((iface.name,), float(getattr(iface, field))) for iface in obs.interfaces]

    return values


# -- pressure ----------------------------------------------------------------------


def _pressure(resource: str, line: str) -> Callable[[Observation], Values]:
    def values(obs: Observation) -> Values:
        pressure = obs.sample.pressure
        if pressure is None:
            return []
        record: Optional[PressureResource] = getattr(pressure, resource)
        psi = None if record is None else getattr(record, line)
        return [] if psi is None else [((), psi.total_us / US_PER_S)]

    return values


def _start_time(obs: Observation) -> Values:
    # cAdvisor: float64(CreationTime.Unix()), whole seconds
    return [] if obs.started is None else [((), float(int(obs.started)))]


def _last_seen(obs: Observation) -> Values:
    # cAdvisor: float64(time.Now().Unix()), whole seconds
    return [((), float(int(obs.seen)))]


V1V2 = "v1, v2"
_DEV = ("device",)
_IFACE = ("interface",)
_NET_SOURCE = "`net.interfaces[].{}` of the namespace's counting container"
_PSI_SOURCE = "`pressure.{}.{}.total_us`"
_PSI_VERSIONS = "v2; v1 hybrid with PSI in the unified tree"

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "container_cpu_usage_seconds_total",
        COUNTER,
        "Cumulative cpu time consumed in seconds.",
        ("cpu",),
        '`cpu.usage_ns`, as `cpu="total"`',
        "ns / 1e9",
        V1V2,
        _cpu_usage,
    ),
    MetricSpec(
        "container_cpu_user_seconds_total",
        COUNTER,
        "Cumulative user cpu time consumed in seconds.",
        (),
        "`cpu.user_ns`",
        "ns / 1e9",
        V1V2,
        _cpu_user,
    ),
    MetricSpec(
        "container_cpu_system_seconds_total",
        COUNTER,
        "Cumulative system cpu time consumed in seconds.",
        (),
        "`cpu.system_ns`",
        "ns / 1e9",
        V1V2,
        _cpu_system,
    ),
    MetricSpec(
        "container_cpu_cfs_periods_total",
        COUNTER,
        "Number of elapsed enforcement period intervals.",
        (),
        "`cpu.periods` (when > 0)",
        "count",
        V1V2,
        _cfs(lambda s: None if s.cpu is None else s.cpu.periods),
    ),
    MetricSpec(
        "container_cpu_cfs_throttled_periods_total",
        COUNTER,
        "Number of throttled period intervals.",
        (),
        "`cpu.throttled_periods` (when periods > 0)",
        "count",
        V1V2,
        _cfs(lambda s: None if s.cpu is None else s.cpu.throttled_periods),
    ),
    MetricSpec(
        "container_cpu_cfs_throttled_seconds_total",
        COUNTER,
        "Total time duration the container has been throttled.",
        (),
        "`cpu.throttled_ns` (when periods > 0)",
        "ns / 1e9",
        V1V2,
        _cfs(lambda s: None if s.cpu is None else s.cpu.throttled_ns, NS_PER_S),
    ),
    MetricSpec(
        "container_cpu_cfs_burst_periods_total",
        COUNTER,
        "Number of periods when burst occurs.",
        (),
        "`cpu.stat` `nr_bursts` (when periods > 0)",
        "count",
        "v1, v2 (kernel 5.14+)",
        _cfs(lambda s: _stat(s, "nr_bursts")),
    ),
    MetricSpec(
        "container_cpu_cfs_burst_seconds_total",
        COUNTER,
        "Total time duration the container has been bursted.",
        (),
        "`cpu.stat` `burst_time` (v1) / `burst_usec` (v2) (when periods > 0)",
        "v1 ns / 1e9, v2 µs / 1e6",
        "v1, v2 (kernel 5.14+)",
        _cfs(_burst_seconds),
    ),
    MetricSpec(
        "container_memory_usage_bytes",
        GAUGE,
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        (),
        "`memory.usage_bytes`",
        "bytes",
        V1V2,
        _memory("usage_bytes"),
    ),
    MetricSpec(
        "container_memory_working_set_bytes",
        GAUGE,
        "Current working set in bytes.",
        (),
        "`memory.working_set_bytes`",
        "bytes",
        V1V2,
        _memory("working_set_bytes"),
    ),
    MetricSpec(
        "container_memory_rss",
        GAUGE,
        "Size of RSS in bytes.",
        (),
        "`memory.rss_bytes`",
        "bytes",
        V1V2,
        _memory("rss_bytes"),
    ),
    MetricSpec(
        "container_memory_cache",
        GAUGE,
        "Number of bytes of page cache memory.",
        (),
        "`memory.cache_bytes`",
        "bytes",
        V1V2,
        _memory("cache_bytes"),
    ),
    MetricSpec(
        "container_memory_mapped_file",
        GAUGE,
        "Size of memory mapped files in bytes.",
        (),
        "`memory.mapped_file_bytes`",
        "bytes",
        V1V2,
        _memory("mapped_file_bytes"),
    ),
    MetricSpec(
        "container_memory_swap",
        GAUGE,
        "Container swap usage in bytes.",
        (),
        "`memory.swap_bytes`",
        "bytes",
        "v1 with swap accounting, v2",
        _memory("swap_bytes"),
    ),
    MetricSpec(
        "container_memory_max_usage_bytes",
        GAUGE,
        "Maximum memory usage recorded in bytes",
        (),
        "`memory.max_usage_bytes`",
        "bytes",
        "v1, v2 (kernel 5.19+)",
        _memory("max_usage_bytes"),
    ),
    MetricSpec(
        "container_memory_total_active_file_bytes",
        GAUGE,
        "Current total active file in bytes.",
        (),
        "`memory.stat` `total_active_file` (v1) / `active_file` (v2)",
        "bytes",
        V1V2,
        _memory_stat("total_active_file", "active_file"),
    ),
    MetricSpec(
        "container_memory_total_inactive_file_bytes",
        GAUGE,
        "Current total inactive file in bytes.",
        (),
        "`memory.stat` `total_inactive_file` (v1) / `inactive_file` (v2)",
        "bytes",
        V1V2,
        _memory_stat("total_inactive_file", "inactive_file"),
    ),
    MetricSpec(
        "container_memory_failures_total",
        COUNTER,
        "Cumulative count of memory allocation failures.",
        ("failure_type", "scope"),
        "`memory.stat` `pgfault`, `pgmajfault` (the same value under both scopes, as cAdvisor)",
        "count",
        V1V2,
        _memory_failures,
    ),
    MetricSpec(
        "container_oom_events_total",
        COUNTER,
        "Count of out of memory events observed for the container",
        (),
        "`memory.oom_kills`",
        "count",
        "v1 (kernel 4.13+), v2",
        _memory("oom_kills"),
    ),
    MetricSpec(
        "container_spec_memory_limit_bytes",
        GAUGE,
        "Memory limit for the container.",
        (),
        "`memory.limit_bytes` (unlimited: no series)",
        "bytes",
        V1V2,
        _memory("limit_bytes"),
    ),
    MetricSpec(
        "container_spec_memory_reservation_limit_bytes",
        GAUGE,
        "Memory reservation limit for the container.",
        (),
        "`memory.soft_limit_bytes` (unlimited: no series)",
        "bytes",
        "v1",
        _memory("soft_limit_bytes"),
    ),
    MetricSpec(
        "container_spec_cpu_shares",
        GAUGE,
        "CPU share of the container.",
        (),
        "`cpu.shares` (v1); `cpu.weight` as cAdvisor converts it (v2)",
        "v2: 2 + (weight - 1) * 262142 // 9999",
        V1V2,
        _cpu_shares,
    ),
    MetricSpec(
        "container_processes",
        GAUGE,
        "Number of processes running inside the container.",
        (),
        "pids listed in the container's `cgroup.procs` (its cpu cgroup on v1)",
        "count",
        V1V2,
        _processes,
    ),
    MetricSpec(
        "container_threads",
        GAUGE,
        "Number of threads running inside the container",
        (),
        "`pids.current`",
        "count",
        V1V2,
        _threads,
    ),
    MetricSpec(
        "container_threads_max",
        GAUGE,
        "Maximum number of threads allowed inside the container, infinity if value is zero",
        (),
        "`pids.limit` (unlimited: no series)",
        "count",
        V1V2,
        _threads_max,
    ),
    MetricSpec(
        "container_fs_reads_bytes_total",
        COUNTER,
        "Cumulative count of bytes read",
        _DEV,
        "`blkio.devices[].read_bytes`",
        "bytes",
        V1V2,
        _per_device("read_bytes"),
    ),
    MetricSpec(
        "container_fs_writes_bytes_total",
        COUNTER,
        "Cumulative count of bytes written",
        _DEV,
        "`blkio.devices[].write_bytes`",
        "bytes",
        V1V2,
        _per_device("write_bytes"),
    ),
    MetricSpec(
        "container_fs_reads_total",
        COUNTER,
        "Cumulative count of reads completed",
        _DEV,
        "`blkio.devices[].read_ops`",
        "count",
        V1V2,
        _per_device("read_ops"),
    ),
    MetricSpec(
        "container_fs_writes_total",
        COUNTER,
        "Cumulative count of writes completed",
        _DEV,
        "`blkio.devices[].write_ops`",
        "count",
        V1V2,
        _per_device("write_ops"),
    ),
    MetricSpec(
        "container_blkio_device_usage_total",
        COUNTER,
        "Blkio Device bytes usage",
        ("device", "major", "minor", "operation"),
        '`blkio.devices[].read_bytes` as `operation="Read"`, `write_bytes` as `"Write"`',
        "bytes",
        V1V2,
        _device_usage,
    ),
    MetricSpec(
        "container_network_receive_bytes_total",
        COUNTER,
        "Cumulative count of bytes received",
        _IFACE,
        _NET_SOURCE.format("rx_bytes"),
        "bytes",
        V1V2,
        _per_interface("rx_bytes"),
    ),
    MetricSpec(
        "container_network_receive_packets_total",
        COUNTER,
        "Cumulative count of packets received",
        _IFACE,
        _NET_SOURCE.format("rx_packets"),
        "count",
        V1V2,
        _per_interface("rx_packets"),
    ),
    MetricSpec(
        "container_network_receive_packets_dropped_total",
        COUNTER,
        "Cumulative count of packets dropped while receiving",
        _IFACE,
        _NET_SOURCE.format("rx_dropped"),
        "count",
        V1V2,
        _per_interface("rx_dropped"),
    ),
    MetricSpec(
        "container_network_receive_errors_total",
        COUNTER,
        "Cumulative count of errors encountered while receiving",
        _IFACE,
        _NET_SOURCE.format("rx_errors"),
        "count",
        V1V2,
        _per_interface("rx_errors"),
    ),
    MetricSpec(
        "container_network_transmit_bytes_total",
        COUNTER,
        "Cumulative count of bytes transmitted",
        _IFACE,
        _NET_SOURCE.format("tx_bytes"),
        "bytes",
        V1V2,
        _per_interface("tx_bytes"),
    ),
    MetricSpec(
        "container_network_transmit_packets_total",
        COUNTER,
        "Cumulative count of packets transmitted",
        _IFACE,
        _NET_SOURCE.format("tx_packets"),
        "count",
        V1V2,
        _per_interface("tx_packets"),
    ),
    MetricSpec(
        "container_network_transmit_packets_dropped_total",
        COUNTER,
        "Cumulative count of packets dropped while transmitting",
        _IFACE,
        _NET_SOURCE.format("tx_dropped"),
        "count",
        V1V2,
        _per_interface("tx_dropped"),
    ),
    MetricSpec(
        "container_network_transmit_errors_total",
        COUNTER,
        "Cumulative count of errors encountered while transmitting",
        _IFACE,
        _NET_SOURCE.format("tx_errors"),
        "count",
        V1V2,
        _per_interface("tx_errors"),
    ),
    MetricSpec(
        "container_pressure_cpu_stalled_seconds_total",
        COUNTER,
        "Total time duration no tasks in the container could make progress due to CPU congestion.",
        (),
        _PSI_SOURCE.format("cpu", "full"),
        "µs / 1e6",
        _PSI_VERSIONS,
        _pressure("cpu", "full"),
    ),
    MetricSpec(
        "container_pressure_cpu_waiting_seconds_total",
        COUNTER,
        "Total time duration tasks in the container have waited due to CPU congestion.",
        (),
        _PSI_SOURCE.format("cpu", "some"),
        "µs / 1e6",
        _PSI_VERSIONS,
        _pressure("cpu", "some"),
    ),
    MetricSpec(
        "container_pressure_memory_stalled_seconds_total",
        COUNTER,
        "Total time duration no tasks in the container could make progress due to memory"
        " congestion.",
        (),
        _PSI_SOURCE.format("memory", "full"),
        "µs / 1e6",
        _PSI_VERSIONS,
        _pressure("memory", "full"),
    ),
    MetricSpec(
        "container_pressure_memory_waiting_seconds_total",
        COUNTER,
        "Total time duration tasks in the container have waited due to memory congestion.",
        (),
        _PSI_SOURCE.format("memory", "some"),
        "µs / 1e6",
        _PSI_VERSIONS,
        _pressure("memory", "some"),
    ),
    MetricSpec(
        "container_pressure_io_stalled_seconds_total",
        COUNTER,
        "Total time duration no tasks in the container could make progress due to IO congestion.",
        (),
        _PSI_SOURCE.format("io", "full"),
        "µs / 1e6",
        _PSI_VERSIONS,
        _pressure("io", "full"),
    ),
    MetricSpec(
        "container_pressure_io_waiting_seconds_total",
        COUNTER,
        "Total time duration tasks in the container have waited due to IO congestion.",
        (),
        _PSI_SOURCE.format("io", "some"),
        "µs / 1e6",
        _PSI_VERSIONS,
        _pressure("io", "some"),
    ),
    MetricSpec(
        "container_start_time_seconds",
        GAUGE,
        "Start time of the container since unix epoch in seconds.",
        (),
        "earliest mtime of the container's cgroup directories and their `cgroup.events` (v2)"
        " / `cgroup.clone_children` (v1), as cAdvisor reads it; stat'ed once, when first seen",
        "Unix time, whole seconds",
        V1V2,
        _start_time,
    ),
    MetricSpec(
        "container_last_seen",
        GAUGE,
        "Last time a container was seen by the exporter",
        (),
        "the scrape's time",
        "Unix time, whole seconds",
        V1V2,
        _last_seen,
    ),
)


@attrs.frozen
class SelfMetric:
    """A metric about the collector itself, not about a container (no container labels)."""

    name: str
    kind: str
    help: str
    source: str


SCRAPE_ERROR = SelfMetric(
    "container_scrape_error",
    GAUGE,
    "1 if there was an error while getting container metrics, 0 otherwise",
    "1 when listing the containers or reading one of them failed in this scrape",
)
SCRAPE_ERRORS_TOTAL = SelfMetric(
    "cgstats_scrape_errors_total",
    COUNTER,
    "Containers whose cgroups could not be read in a scrape, since the collector started.",
    "cgstats' own: one per container and scrape that failed (not for containers that are gone)",
)
SELF_METRICS = (SCRAPE_ERROR, SCRAPE_ERRORS_TOTAL)


def by_name() -> Mapping[str, MetricSpec]:
    """The table keyed by metric name."""
    return {spec.name: spec for spec in METRICS}
