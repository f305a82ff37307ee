"""Docker Engine stats documents (``GET /containers/{id}/stats``) from cgstats samples.

The document is the one dockerd writes, built the way dockerd builds it from
the same kernel files (moby ``daemon/stats_unix.go`` ``statsV1``/``statsV2``
over containerd's cgroups readers, ``daemon/stats.go`` for ``precpu_stats``
and ``preread``, ``getSystemCPUUsage`` for ``system_cpu_usage``), so that
code written against Docker's API (``docker stats``' formulas, agents that
decode ``types.StatsJSON``) can read cgstats instead. docs/docker.md lists
every field, its source, and the few places where the document differs.

Two layers:

- pure functions (:func:`document` and the sections it is made of) from a
  :class:`Frame`, that is a :class:`~cgstats.model.Sample` plus the host-wide
  figures dockerd reads beside it (``/proc/stat``) and, on cgroup v1, the raw
  ``cpuacct.stat`` and blkio lists a sample does not keep;
- :class:`StatsReader`, the I/O: it reads a container's sample, those extra
  files and ``/proc/stat`` together (dockerd samples the host's CPU time
  right after the container's, since CPU % divides one delta by the other),
  keeps each container's previous frame, and returns documents as the API's
  stream does.

Units are the API's: CPU times in ns, memory and IO in bytes, times as RFC
3339 strings in UTC with up to nine fractional digits and a ``Z``, as Go's
``time.Time`` marshals them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

import attrs

from cgstats._closing import Closing
from cgstats.container import Container, ContainerRef
from cgstats.errors import ContainerGone, ParseError
from cgstats.model import Sample
from cgstats.readers._parse import V1_UNLIMITED, parse_flat_keyed, to_int
from cgstats.readers.system import MEMINFO_FILE, STAT_FILE, parse_mem_total, parse_system_cpu

if TYPE_CHECKING:
    from cgstats.host import Host

# What Go's zero time.Time marshals to: preread of a first (or one-shot) document.
ZERO_TIME = "0001-01-01T00:00:00Z"
# containerd's cgroup v2 reader turns "max" (pids.max, memory.max) into this.
MAX_UINT64 = (1 << 64) - 1
# dockerd converts /proc/stat ticks with a hard-coded 100 ticks per second
# (clockTicksPerSecond), as containerd converts cpuacct.stat: 10^9 / 100 ns each.
NS_PER_TICK = 10_000_000

# memory_stats.stats on cgroup v1: exactly the memory.stat keys dockerd copies
# (statsV1), each 0 when the kernel does not print it.
V1_MEMORY_KEYS = (
    "cache",
    "rss",
    "rss_huge",
    "mapped_file",
    "dirty",
    "writeback",
    "pgpgin",
    "pgpgout",
    "pgfault",
    "pgmajfault",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "hierarchical_memory_limit",
    "hierarchical_memsw_limit",
    "total_cache",
    "total_rss",
    "total_rss_huge",
    "total_mapped_file",
    "total_dirty",
    "total_writeback",
    "total_pgpgin",
    "total_pgpgout",
    "total_pgfault",
    "total_pgmajfault",
    "total_inactive_anon",
    "total_active_anon",
    "total_inactive_file",
    "total_active_file",
    "total_unevictable",
)
# memory_stats.stats on cgroup v2 (statsV2), the same way.
V2_MEMORY_KEYS = (
    "anon",
    "file",
    "kernel_stack",
    "slab",
    "sock",
    "shmem",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "anon_thp",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "pgfault",
    "pgmajfault",
    "workingset_refault",
    "workingset_activate",
    "workingset_nodereclaim",
    "pgrefill",
    "pgscan",
    "pgsteal",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pglazyfreed",
    "thp_fault_alloc",
    "thp_collapse_alloc",
)
# The eight blkio_stats lists, in the order the API writes them.
BLKIO_KEYS = (
    "io_service_bytes_recursive",
    "io_serviced_recursive",
    "io_queue_recursive",
    "io_service_time_recursive",
    "io_wait_time_recursive",
    "io_merged_recursive",
    "io_time_recursive",
    "sectors_recursive",
)
# v1 blkio files containerd reads when blkio.io_serviced_recursive exists (CFQ):
# (list, file). Lines are "MAJ:MIN Op N" or, for sectors and time, "MAJ:MIN N".
V1_BLKIO_CFQ_FILES = (
    ("sectors_recursive", "blkio.sectors_recursive"),
    ("io_service_bytes_recursive", "blkio.io_service_bytes_recursive"),
    ("io_serviced_recursive", "blkio.io_serviced_recursive"),
    ("io_queue_recursive", "blkio.io_queued_recursive"),
    ("io_service_time_recursive", "blkio.io_service_time_recursive"),
    ("io_wait_time_recursive", "blkio.io_wait_time_recursive"),
    ("io_merged_recursive", "blkio.io_merged_recursive"),
    ("io_time_recursive", "blkio.time_recursive"),
)
# ... and otherwise, or when those list nothing: the throttle files of the
# cgroup itself (not the _recursive ones), into two of the lists.
V1_BLKIO_THROTTLE_FILES = (
    ("io_serviced_recursive", "blkio.throttle.io_serviced"),
    ("io_service_bytes_recursive", "blkio.throttle.io_service_bytes"),
)
V1_CPUACCT_STAT = "cpuacct.stat"

# One blkio_stats entry: (major, minor, op, value).
BlkioEntry = tuple[int, int, str, int]


@attrs.frozen
class Frame:
    """One sample with the host-wide figures read beside it: one tick of dockerd's collector.

    ``system_cpu_ns`` is the host's CPU time (``/proc/stat``, see
    :func:`system_cpu_ns`), ``online_cpus`` the number of online CPUs; either
    is ``None`` when unknown and then left out of the document, as dockerd
    leaves out zeros. On cgroup v1, ``cpuacct_ticks`` holds ``cpuacct.stat``'s
    (user, system) USER_HZ ticks and ``blkio_lists`` the blkio lists as
    containerd reads them (:func:`v1_blkio_lists`); without them the
    document takes user/system time and block IO from the sample (see
    docs/docker.md). ``errors`` lists the extra files that could not be read
    or parsed.
    """

    sample: Sample
    system_cpu_ns: Optional[int] = None
    online_cpus: Optional[int] = None
    cpuacct_ticks: Optional[tuple[int, int]] = None
    blkio_lists: Optional[Mapping[str, tuple[BlkioEntry, ...]]] = None
    errors: tuple[str, ...] = ()


# -- the pure layer -------------------------------------------------------------


def format_time(timestamp: Optional[float]) -> str:
    """Unix time (s) as Go marshals a ``time.Time`` in UTC; ``None`` is the zero time.

    RFC 3339 with the fraction's trailing zeros dropped (Go's RFC3339Nano);
    the fraction is to the microsecond, the precision of a float timestamp.
    """
    if timestamp is None:
        return ZERO_TIME
    seconds, micros = divmod(round(timestamp * 1_000_000), 1_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if micros:
        text += f".{micros:06d}".rstrip("0")
    return text + "Z"


def system_cpu_ns(ticks: int) -> int:
    """``system_cpu_usage`` (ns) from the USER_HZ ticks that
    :func:`~cgstats.readers.system.parse_system_cpu` summed."""
    return ticks * NS_PER_TICK


def parse_cpuacct_stat(text: str, what: str = V1_CPUACCT_STAT) -> tuple[int, int]:
    """v1 ``cpuacct.stat``: ``(user, system)`` in USER_HZ ticks."""
    values = parse_flat_keyed(text, what)
    try:
        return values["user"], values["system"]
    except KeyError as missing:
        raise ParseError(what, f"no {missing} line") from None


def parse_blkio_entries(text: str, what: str) -> tuple[BlkioEntry, ...]:
    """A v1 blkio file as containerd reads it: every line but ``Total N``, in file order.

    ``MAJ:MIN Op N`` gives op ``Op``; ``MAJ:MIN N`` (sectors, time) gives op ``""``.
    """
    entries = []
    for line in text.splitlines():
        fields = line.replace(":", " ").split()
        if not fields or (len(fields) == 2 and fields[0] == "Total"):
            continue
        if len(fields) == 3:
            major, minor, value, op = fields[0], fields[1], fields[2], ""
        elif len(fields) == 4:
            major, minor, op, value = fields
        else:
            raise ParseError(what, f"expected 'MAJ:MIN [Op] N', got {line[:60]!r}")
        entries.append((to_int(major, what), to_int(minor, what), op, to_int(value, what)))
    return tuple(entries)


def v1_blkio_lists(texts: Mapping[str, str]) -> dict[str, tuple[BlkioEntry, ...]]:
    """The eight v1 blkio lists from the files in ``texts`` (file name → text).

    As containerd's v1 reader: the CFQ files if ``blkio.io_serviced_recursive``
    was read and they list anything, else the cgroup's two throttle files.
    Raises :class:`ParseError`.
    """
    lists: dict[str, tuple[BlkioEntry, ...]] = dict.fromkeys(BLKIO_KEYS, ())
    if "blkio.io_serviced_recursive" in texts:
        for key, name in V1_BLKIO_CFQ_FILES:
            lists[key] = parse_blkio_entries(texts.get(name, ""), name)
        if any(lists.values()):
            return lists
    for key, name in V1_BLKIO_THROTTLE_FILES:
        lists[key] = parse_blkio_entries(texts.get(name, ""), name)
    return lists


def empty_cpu_stats() -> dict[str, Any]:
    """``precpu_stats`` of a first or one-shot document: Go's zero ``CPUStats``."""
    return {
        "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }


def cpu_stats(frame: Frame, version: int) -> dict[str, Any]:
    """``cpu_stats`` (ns and counts).

    v1: ``cpuacct.usage``, ``cpuacct.usage_percpu``, ``cpuacct.stat`` ticks * 10^7
    (the sample's ``user_ns``/``system_ns`` without them), ``cpu.stat``. v2:
    ``cpu.stat`` µs * 1000, no ``percpu_usage``. Both: ``system_cpu_usage`` and
    ``online_cpus`` from the frame, left out when unknown or 0.
    """
    stats = empty_cpu_stats()
    cpu = frame.sample.cpu
    if cpu is not None:
        # Go's field order: total_usage, percpu_usage, usage_in_kernelmode, usage_in_usermode.
        usage = stats["cpu_usage"] = {"total_usage": cpu.usage_ns or 0}
        if version == 1 and cpu.percpu_ns:
            usage["percpu_usage"] = list(cpu.percpu_ns)
        if version == 1 and frame.cpuacct_ticks is not None:
            user_ticks, system_ticks = frame.cpuacct_ticks
            usage["usage_in_kernelmode"] = system_ticks * NS_PER_TICK
            usage["usage_in_usermode"] = user_ticks * NS_PER_TICK
        else:
            usage["usage_in_kernelmode"] = cpu.system_ns or 0
            usage["usage_in_usermode"] = cpu.user_ns or 0
        stats["throttling_data"] = {
            "periods": cpu.periods or 0,
            "throttled_periods": cpu.throttled_periods or 0,
            "throttled_time": cpu.throttled_ns or 0,
        }
    if frame.system_cpu_ns:
        stats["system_cpu_usage"] = frame.system_cpu_ns
    if frame.online_cpus:
        stats["online_cpus"] = frame.online_cpus
    # Go's field order: cpu_usage, system_cpu_usage, online_cpus, throttling_data.
    stats["throttling_data"] = stats.pop("throttling_data")
    return stats


def memory_stats(
    sample: Sample, version: int, machine_memory_bytes: Optional[int] = None
) -> dict[str, Any]:
    """``memory_stats`` (bytes): usage, max_usage (v1), the memory.stat keys, failcnt, limit.

    The limit of a container without one (or with one above the host's
    memory) is ``machine_memory_bytes`` (``MemTotal``), as dockerd caps it;
    without that, the kernel's "no limit" value. v2's ``failcnt`` is
    ``memory.events`` ``oom``, as dockerd fills it. Zeros are left out
    (Go's omitempty).
    """
    memory = sample.memory
    keys = V1_MEMORY_KEYS if version == 1 else V2_MEMORY_KEYS
    if memory is None:
        # v1: no memory controller, no section; v2: containerd's reader always fills one.
        return {} if version == 1 else {"stats": dict.fromkeys(sorted(keys), 0)}
    stat = memory.stat or {}
    if version == 1:
        limit = memory.limit_bytes if memory.limit_bytes is not None else V1_UNLIMITED
        failcnt = memory.failcnt
        max_usage = memory.max_usage_bytes
    else:
        limit = memory.limit_bytes if memory.limit_bytes is not None else MAX_UINT64
        failcnt = (memory.events or {}).get("oom")
        max_usage = None  # dockerd reports none on v2 (memory.peak is not read)
    if machine_memory_bytes and limit > machine_memory_bytes:
        limit = machine_memory_bytes
    values: dict[str, Any] = {
        "usage": memory.usage_bytes,
        "max_usage": max_usage,
        "stats": {key: stat.get(key, 0) for key in sorted(keys)},
        "failcnt": failcnt,
        "limit": limit,
    }
    return {key: value for key, value in values.items() if value}


def blkio_stats(frame: Frame, version: int) -> dict[str, Any]:
    """``blkio_stats``: eight lists of ``{major, minor, op, value}`` (bytes, counts).

    v2: only ``io_service_bytes_recursive``, ops ``read`` and ``write`` per
    device of ``io.stat``, ``null`` without devices; the rest ``null``. v1:
    the frame's ``blkio_lists`` (every op the kernel prints: Read, Write,
    Sync, Async, Discard, Total); without them, bytes and operations from
    the sample, ops Read, Write, Discard and Total (Sync and Async are not
    in a sample), the other six lists empty.
    """
    lists: dict[str, Optional[list[dict[str, Any]]]] = dict.fromkeys(BLKIO_KEYS)
    blkio = frame.sample.blkio
    if version != 1:
        entries = [
            _entry(device.major, device.minor, op, value or 0)
            for device in (blkio.devices if blkio is not None else ())
            for op, value in (("read", device.read_bytes), ("write", device.write_bytes))
        ]
        lists["io_service_bytes_recursive"] = entries or None
        return lists
    if frame.blkio_lists is not None:
        for key in BLKIO_KEYS:
            lists[key] = [_entry(*entry) for entry in frame.blkio_lists.get(key, ())]
        return lists
    if blkio is None:
        return lists  # no blkio controller: containerd reports no section
    bytes_list: list[dict[str, Any]] = []
    ops_list: list[dict[str, Any]] = []
    for device in blkio.devices:
        for target, values in (
            (bytes_list, (device.read_bytes, device.write_bytes, device.discard_bytes)),
            (ops_list, (device.read_ops, device.write_ops, device.discard_ops)),
        ):
            known = [(op, value) for op, value in zip(("Read", "Write", "Discard"), values)]
            for op, value in known:
                if value is not None:
                    target.append(_entry(device.major, device.minor, op, value))
            total = sum(value for _op, value in known if value is not None)
            target.append(_entry(device.major, device.minor, "Total", total))
    for key in BLKIO_KEYS:
        lists[key] = []
    lists["io_service_bytes_recursive"] = bytes_list
    lists["io_serviced_recursive"] = ops_list
    return lists


def _entry(major: int, minor: int, op: str, value: int) -> dict[str, Any]:
    return {"major": major, "minor": minor, "op": op, "value": value}


def pids_stats(sample: Sample, version: int) -> dict[str, Any]:
    """``pids_stats``: ``current`` and ``limit`` (``pids.current``, ``pids.max``).

    ``pids.max`` ``max`` is 18446744073709551615 on v2 (containerd's v2
    reader) and no ``limit`` at all on v1 (its v1 reader reads it as 0, left
    out); zeros are left out.
    """
    pids = sample.pids
    if pids is None:
        return {}
    limit = pids.limit
    if limit is None and version != 1:
        limit = MAX_UINT64
    values = {"current": pids.current, "limit": limit}
    return {key: value for key, value in values.items() if value}


def networks(sample: Sample) -> Optional[dict[str, dict[str, int]]]:
    """``networks``: counters per interface of the container's namespace, ``lo`` left out.

    dockerd reports the interfaces libnetwork put in the sandbox, which never
    include ``lo``. ``None`` (the key is left out) without interfaces, without
    a namespace, and in the host's namespace (``--network host``, where
    dockerd has none to report).
    """
    net = sample.net
    if net is None or net.shared_with_host:
        return None
    found = {
        interface.name: {
            "rx_bytes": interface.rx_bytes,
            "rx_packets": interface.rx_packets,
            "rx_errors": interface.rx_errors,
            "rx_dropped": interface.rx_dropped,
            "tx_bytes": interface.tx_bytes,
            "tx_packets": interface.tx_packets,
            "tx_errors": interface.tx_errors,
            "tx_dropped": interface.tx_dropped,
        }
        for interface in net.interfaces
        if interface.name != "lo"
    }
    return dict(sorted(found.items())) or None


def document(
    current: Frame,
    previous: Optional[Frame] = None,
    *,
    name: Optional[str] = None,
    machine_memory_bytes: Optional[int] = None,
    cgroup_version: Optional[int] = None,
) -> dict[str, Any]:
    """The stats document of ``current``, with ``previous`` as ``precpu_stats``/``preread``.

    Without ``previous`` it is the one-shot document (``one-shot=true``, or
    the first of a stream): ``preread`` is ``0001-01-01T00:00:00Z`` and
    ``precpu_stats`` Go's zero shape. ``name`` is Docker's container name
    (``/web``), left out when unknown; ``machine_memory_bytes`` the host's
    ``MemTotal`` (see :func:`memory_stats`). ``cgroup_version`` (1 or 2)
    picks the flavour; by default the sample's, as dockerd picks by the
    host's cgroup mode (hybrid hosts give v1). Keys are in Go's order.
    """
    sample = current.sample
    version = cgroup_version or sample.cgroup_version
    if version not in (1, 2):
        raise ValueError(f"cgroup_version must be 1 or 2, not {version!r}")
    before = None
    if previous is not None:
        before = cpu_stats(previous, cgroup_version or previous.sample.cgroup_version)
    result: dict[str, Any] = {
        "read": format_time(sample.timestamp),
        "preread": format_time(previous.sample.timestamp if previous is not None else None),
        "pids_stats": pids_stats(sample, version),
        "blkio_stats": blkio_stats(current, version),
        "num_procs": 0,  # Windows only
        "storage_stats": {},  # Windows only
        "cpu_stats": cpu_stats(current, version),
        "precpu_stats": before if before is not None else empty_cpu_stats(),
        "memory_stats": memory_stats(sample, version, machine_memory_bytes),
    }
    if name:
        result["name"] = name
    result["id"] = sample.id
    interfaces = networks(sample)
    if interfaces is not None:
        result["networks"] = interfaces
    return result


# -- the I/O layer --------------------------------------------------------------

ContainerArg = Union[str, ContainerRef, Container]


class StatsReader(Closing):
    """Reads containers of ``host`` and returns their stats documents, as dockerd would.

    :meth:`read` samples a container and the host's ``/proc/stat`` together
    and returns the document against the container's previous read (the
    first read of a container is the one-shot document); :meth:`stream`
    yields one every ``interval_s``. ``machine_memory_bytes`` defaults to
    ``MemTotal`` of the host's ``/proc/meminfo``; ``names`` maps container
    IDs to Docker names (``/web``), and by default a Docker container's name
    is read from ``<docker_root>/containers/<id>/config.v2.json`` under the
    host's root, when readable. ``cgroup_version`` forces a flavour.
    Containers named by a spec (ID, prefix, path, ``pid:N``) are opened and
    kept until :meth:`close`; handles passed in stay the caller's. Like its
    :class:`~cgstats.Host`, a reader is meant for one thread at a time.
    """

    def __init__(
        self,
        host: Host,
        *,
        machine_memory_bytes: Optional[int] = None,
        names: Optional[Mapping[str, str]] = None,
        docker_root: str = "/var/lib/docker",
        cgroup_version: Optional[int] = None,
    ) -> None:
        self.host = host
        self.cgroup_version = cgroup_version
        self.docker_root = docker_root
        self.machine_memory_bytes = (
            machine_memory_bytes if machine_memory_bytes is not None else self._mem_total()
        )
        self._names: dict[str, Optional[str]] = dict(names or {})
        self._stat_path = os.path.join(host.root, STAT_FILE)
        self._opened: dict[Union[str, ContainerRef], Container] = {}
        self._previous: dict[tuple[str, str, int], Frame] = {}
        self._v1_files: dict[tuple[str, str, int], list[tuple[str, str]]] = {}

    def _mem_total(self) -> Optional[int]:
        try:
            with open(os.path.join(self.host.root, MEMINFO_FILE), encoding="ascii") as handle:
                return parse_mem_total(handle.read())
        except (OSError, UnicodeDecodeError, ParseError):
            return None

    def container(self, container: ContainerArg) -> Container:
        """The open handle for ``container`` (opened and kept if given as a spec)."""
        if isinstance(container, Container):
            return container
        handle = self._opened.get(container)
        if handle is None or handle.closed:
            handle = self._opened[container] = self.host.open(container)
        return handle

    def frame(self, container: ContainerArg) -> Frame:
        """Read one :class:`Frame` now: the sample, the v1 extras, then ``/proc/stat``.

        Raises :class:`~cgstats.ContainerGone` when the cgroup is gone.
        """
        handle = self.container(container)
        sample = handle.read()
        problems: list[str] = []
        ticks = lists = None
        if (self.cgroup_version or sample.cgroup_version) == 1:
            ticks, lists = self._read_v1(handle, problems)
        system_ns = online = None
        try:
            cpu_ticks, online = parse_system_cpu(
                self.host.files.read(self._stat_path).decode("ascii", "replace"), self._stat_path
            )
            system_ns = system_cpu_ns(cpu_ticks)
        except OSError as err:
            problems.append(f"{self._stat_path}: {err.strerror or err}")
        except ParseError as err:
            problems.append(f"{err.what}: {err.reason}")
        return Frame(sample, system_ns, online or None, ticks, lists, tuple(problems))

    def _read_v1(
        self, handle: Container, problems: list[str]
    ) -> tuple[Optional[tuple[int, int]], Optional[dict[str, tuple[BlkioEntry, ...]]]]:
        """``cpuacct.stat`` and the blkio files dockerd reads (which exist is probed once)."""
        key = _key(handle)
        files = self._v1_files.get(key)
        if files is None:
            files = self._v1_files[key] = _v1_plan(handle.directories)
        texts: dict[str, str] = {}
        for name, path in files:
            try:
                texts[name] = self.host.files.read(path).decode("ascii", "replace")
            except OSError as err:
                problems.append(f"{name}: {err.strerror or err}")
        ticks = lists = None
        if V1_CPUACCT_STAT in texts:
            try:
                ticks = parse_cpuacct_stat(texts[V1_CPUACCT_STAT])
            except ParseError as err:
                problems.append(f"{err.what}: {err.reason}")
        if any(name.startswith("blkio.") for name in texts):
            try:
                lists = v1_blkio_lists(texts)
            except ParseError as err:
                problems.append(f"{err.what}: {err.reason}")
        return ticks, lists

    def name(self, container_id: str, runtime: Optional[str]) -> Optional[str]:
        """Docker's name of a container (``/web``), ``None`` if not known."""
        if container_id not in self._names:
            found = None
            if runtime == "docker":
                path = os.path.join(
                    self.host.root,
                    self.docker_root.lstrip("/"),
                    "containers",
                    container_id,
                    "config.v2.json",
                )
                try:
                    with open(path, encoding="utf-8") as handle:
                        value = json.load(handle).get("Name")
                    found = value if isinstance(value, str) and value else None
                except (OSError, ValueError, AttributeError):
                    found = None
            self._names[container_id] = found
        return self._names[container_id]

    def read(self, container: ContainerArg, *, one_shot: bool = False) -> dict[str, Any]:
        """The container's document now, against its previous read by this reader.

        ``one_shot`` ignores (and replaces) the previous read: the document of
        ``one-shot=true``. Raises :class:`~cgstats.ContainerGone` (and forgets
        the container) when it is gone.
        """
        handle = self.container(container)
        key = _key(handle)
        try:
            current = self.frame(handle)
        except ContainerGone:
            self._forget(key, container)
            raise
        previous = None if one_shot else self._previous.get(key)
        self._previous[key] = current
        return document(
            current,
            previous,
            name=self.name(current.sample.id, current.sample.runtime),
            machine_memory_bytes=self.machine_memory_bytes,
            cgroup_version=self.cgroup_version,
        )

    def stream(
        self, container: ContainerArg, interval_s: float = 1.0, count: Optional[int] = None
    ) -> Iterator[dict[str, Any]]:
        """Documents every ``interval_s`` seconds (dockerd's is 1 s), ``count`` of them or forever.

        The first has no previous read unless this reader read the container
        before. Ends when the container is gone.
        """
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, not {interval_s!r}")
        produced = 0
        due = time.monotonic()
        while count is None or produced < count:
            try:
                yield self.read(container)
            except ContainerGone:
                return
            produced += 1
            due += interval_s
            time.sleep(max(due - time.monotonic(), 0.0))

    def _forget(self, key: tuple[str, str, int], container: ContainerArg) -> None:
        self._previous.pop(key, None)
        self.host.files.forget_all(path for _name, path in self._v1_files.pop(key, ()))
        if not isinstance(container, Container):
            handle = self._opened.pop(container, None)
            if handle is not None:
                handle.close()

    def close(self) -> None:
        """Close the containers this reader opened and forget every previous read."""
        for handle in self._opened.values():
            handle.close()
        self._opened.clear()
        self._previous.clear()
        for files in self._v1_files.values():
            self.host.files.forget_all(path for _name, path in files)
        self._v1_files.clear()
        self.host.files.forget(self._stat_path)


def _key(handle: Container) -> tuple[str, str, int]:
    # The inode tells a container recreated under the same ID from the old one.
    return handle.ref.id, handle.ref.cgroup, handle.inode


def _v1_plan(directories: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, path) of the v1 files dockerd reads that a sample lacks, for one container."""
    files: list[tuple[str, str]] = []
    cpuacct = directories.get("cpuacct")
    if cpuacct is not None and os.path.exists(os.path.join(cpuacct, V1_CPUACCT_STAT)):
        files.append((V1_CPUACCT_STAT, os.path.join(cpuacct, V1_CPUACCT_STAT)))
    blkio = directories.get("blkio")
    if blkio is not None:
        names: Sequence[tuple[str, str]] = V1_BLKIO_THROTTLE_FILES
        if os.path.exists(os.path.join(blkio, "blkio.io_serviced_recursive")):
            names = (*V1_BLKIO_CFQ_FILES, *V1_BLKIO_THROTTLE_FILES)
        for _list, name in names:
            path = os.path.join(blkio, name)
            if os.path.exists(path):
                files.append((name, path))
    return files
