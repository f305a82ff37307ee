"""Cost of a full sample of N containers, against the floors of reading the same files.

Builds N real containers (a cgroup in every hierarchy beneath this process's
own, one sleeping process each, a private network namespace each) for each N
of ``--counts`` (10, 100 and 1000 by default), then measures in the same run,
in microseconds per container per sample:

- ``cgstats``: a full sample, ``Collector.tick()`` on the N containers named
  explicitly (every controller and network, parsed into records, rates
  computed against the previous tick). Limits and settings are re-read every
  ``Host.limits_max_age_s`` (10 s), so the figure is the cost between two
  refreshes plus a refresh's extra cost spread over the ticks of that period
  at a 1 s step (both are measured, with ``limits_max_age_s`` at 10 and 0).
  These containers are idle, so every section reads as at the previous tick
  and is reused (``Host.reuse_unchanged``); ``all parsed`` is the same with
  reuse off, the cost for containers whose every counter moves;
- ``read()``: ``Container.read()`` alone (no collector, no rates), reuse on and off;
- ``open/read/close``: every file a sample needs (counters, limits, ``net/dev``)
  opened, read and closed, no parsing: what most agents do;
- ``pread``: ``os.pread`` at offset 0 on the same files kept open, no parsing:
  the floor of any reader (also for the counters alone).

- ``runc``: the established reader on the same cgroups, in the same run:
  runc's libcontainer cgroup manager ``GetStats()`` (``fs`` on v1, ``fs2`` on
  v2; what cAdvisor and Docker call) plus ``/proc/<pid>/net/dev`` parsed as
  cAdvisor does, timed by ``benchmarks/runc_stats/main.go`` (built once into
  a temporary directory from Debian's ``golang-go`` and
  ``golang-github-opencontainers-runc-dev``; skipped with the reason printed
  when they are missing, or with ``--no-runc``). Its values are cross-checked
  against two cgstats samples taken just before and just after its reading.

At the largest N it also ticks the collector every second for ``--cpu-ticks``
ticks (rescan every 10 s, as by default), with reuse on and off, and reports
the process CPU time (``time.process_time``) per tick as a share of one core. It prints a table,
the process's peak RSS (``ru_maxrss``) and open-file count
(``/proc/self/fd``), and with ``--json`` writes every figure. Needs root.
Run with ``tox -e bench`` or ``python benchmarks/bench_read.py --counts 10,100``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import workload

from cgstats import Collector, Host, Sample
from cgstats.host import DEFAULT_LIMITS_MAX_AGE_S

STEP_S = 1.0  # the goal's sampling step

RUNC_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runc_stats")
# Where Debian's golang-github-opencontainers-runc-dev puts runc's sources
# (GOPATH layout); CGSTATS_BENCH_GOPATH overrides it.
RUNC_GOPATH = "/usr/share/gocode"
RUNC_PACKAGE = "github.com/opencontainers/runc/libcontainer/cgroups/fs"
PAGE = os.sysconf("SC_PAGE_SIZE")
# Memory gauges of idle containers still move by a few pages between reads
# (kernel allocations charged lazily, per-CPU stock flushed).
MEMORY_TOLERANCE_BYTES = 8 * PAGE


@contextlib.contextmanager
def containers(count: int, netns: bool) -> Iterator[list[workload.Container]]:
    """``count`` docker-like containers with one idle process each."""
    with workload.Base() as base, contextlib.ExitStack() as stack:
        built = []
        for _ in range(count):
            container_id = workload.random_id()
            container = base.container(f"docker/{container_id}", container_id=container_id)
            namespace = stack.enter_context(workload.Netns()) if netns else None
            container.spawn(workload.idle_argv(), netns=namespace)
            built.append(container)
        yield built


def best_of(repeats: int, function: Callable[[], object]) -> float:
    """Seconds of the fastest of ``repeats`` calls (the least disturbed run)."""
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return min(timings)


def open_files() -> int:
    """Descriptors this process holds now."""
    return len(os.listdir("/proc/self/fd"))


def measure_read(host: Host, ids: list[str], rounds: int, repeats: int) -> dict[str, Any]:
    """``Container.read()`` alone; also collects the files a sample needs."""
    handles = [host.open(container_id) for container_id in ids]
    counters: list[str] = []
    limits: list[str] = []
    for handle in handles:
        sample = handle.read()  # every descriptor open, the net pid chosen
        assert sample.errors == (), sample.errors
        counters += handle.files
        if sample.net is not None and sample.net.pid is not None:
            counters.append(host.proc_path(sample.net.pid, "net/dev"))
        limits += handle.limit_files

    def read_all() -> None:
        for _ in range(rounds):
            for handle in handles:
                handle.read()

    per_container = 1e6 / (rounds * len(ids))
    result = {"read_us": best_of(repeats, read_all) * per_container}
    host.reuse_unchanged = False
    result["read_all_parsed_us"] = best_of(repeats, read_all) * per_container
    host.reuse_unchanged = True
    for handle in handles:
        handle.close()
    return {**result, "counter_paths": counters, "limit_paths": limits}


def measure_collector(host: Host, ids: list[str], rounds: int, repeats: int) -> dict[str, Any]:
    """``Collector.tick()`` per container: between refreshes, with every limit read, amortized;
    with unchanged sections reused (``cgstats_us``) and with everything parsed."""
    result: dict[str, Any] = {}
    # No rescan inside the timings: the IDs are given and the period is long.
    with Collector(ids, step=STEP_S, host=host, rescan_s=1e9) as collector:
        collector.tick()  # opens every container; first samples, no rates yet
        time.sleep(0.01)  # rates need 1 ms between samples (cgstats.rates.MIN_INTERVAL_S)
        readings = collector.tick()
        assert len(readings) == len(ids)
        assert all(r.rates.interval_s is not None for r in readings), "rates not computed"
        assert all(r.sample.errors == () for r in readings)
        result["files_kept_open"] = len(host.files)
        result["descriptor_capacity"] = host.files.capacity
        result["open_files"] = open_files()

        def ticks() -> None:
            for _ in range(rounds):
                collector.tick()

        per_container = 1e6 / (rounds * len(ids))
        for reuse, name in ((True, "cgstats_us"), (False, "cgstats_all_parsed_us")):
            host.reuse_unchanged = reuse
            collector.tick()
            steady = best_of(repeats, ticks) * per_container
            host.limits_max_age_s = 0.0  # every read refreshes the limit files
            collector.tick()
            every = best_of(repeats, ticks) * per_container
            host.limits_max_age_s = DEFAULT_LIMITS_MAX_AGE_S
            # One refresh per limits_max_age_s: at a 1 s step, its extra cost
            # is spread over max_age / step ticks.
            result[name] = steady + (every - steady) * STEP_S / DEFAULT_LIMITS_MAX_AGE_S
            result[name.replace("_us", "_between_refreshes_us")] = steady
            result[name.replace("_us", "_limits_every_sample_us")] = every
        host.reuse_unchanged = True
    return result


def measure_cpu(host: Host, ids: list[str], ticks: int, reuse: bool) -> dict[str, Any]:
    """Process CPU time per tick at a real 1 s step (default rescan), as % of one core."""
    cpu_s: list[float] = []
    gc_s = [0.0]  # time in the garbage collector during the timed ticks
    gc_start = [0.0]

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.process_time()
        else:
            gc_s[0] += time.process_time() - gc_start[0]

    host.reuse_unchanged = reuse
    with Collector(ids, step=STEP_S, host=host) as collector:
        collector.tick()  # opening every container is not the steady state
        next_slot = time.monotonic() + STEP_S
        gc.callbacks.append(on_gc)
        try:
            for _ in range(ticks):
                time.sleep(max(0.0, next_slot - time.monotonic()))
                next_slot += STEP_S
                start = time.process_time()
                collector.tick()
                cpu_s.append(time.process_time() - start)
        finally:
            gc.callbacks.remove(on_gc)
    host.reuse_unchanged = True
    suffix = "" if reuse else "_all_parsed"
    return {
        "cpu_ticks": ticks,
        f"cpu_s_per_tick_mean{suffix}": statistics.mean(cpu_s),
        f"cpu_s_per_tick_max{suffix}": max(cpu_s),
        f"cpu_percent_of_one_core{suffix}": 100 * statistics.mean(cpu_s) / STEP_S,
        f"gc_percent_of_cpu{suffix}": 100 * gc_s[0] / sum(cpu_s),
    }


def measure_floors(paths: list[str], rounds: int, repeats: int, count: int) -> float:
    """Microseconds per container of ``os.pread`` on ``paths`` kept open.

    Past RLIMIT_NOFILE the files are timed in chunks that fit, and the chunk
    times added up.
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    chunk = max(1, soft - open_files() - 128)
    seconds = 0.0
    for first in range(0, len(paths), chunk):
        descriptors = [os.open(path, os.O_RDONLY) for path in paths[first : first + chunk]]

        def pread(descriptors: list[int] = descriptors) -> None:
            for _ in range(rounds):
                for fd in descriptors:
                    os.pread(fd, 65536, 0)

        try:
            seconds += best_of(repeats, pread)
        finally:
            for fd in descriptors:
                os.close(fd)
    return seconds * 1e6 / (rounds * count)


def measure_open_read_close(paths: list[str], rounds: int, repeats: int, count: int) -> float:
    """Microseconds per container of open/read/close of ``paths``."""

    def open_read_close() -> None:
        for _ in range(rounds):
            for path in paths:
                with open(path, "rb", buffering=0) as handle:
                    handle.read()

    return best_of(repeats, open_read_close) * 1e6 / (rounds * count)


def build_runc(directory: str) -> tuple[Optional[str], str]:
    """Build ``runc_stats`` into ``directory``: ``(binary, "")``, or ``(None, why not)``."""
    go = shutil.which("go")
    if go is None:
        return None, "no Go toolchain (apt-get install golang-go)"
    gopath = os.environ.get("CGSTATS_BENCH_GOPATH", RUNC_GOPATH)
    if not any(os.path.isdir(os.path.join(p, "src", RUNC_PACKAGE)) for p in gopath.split(":")):
        return None, (
            f"runc's libcontainer sources are not under GOPATH {gopath}"
            " (apt-get install golang-github-opencontainers-runc-dev)"
        )
    binary = os.path.join(directory, "runc_stats")
    # Debian's Go packages are a GOPATH tree: build offline, without modules.
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": gopath,
        "GOFLAGS": "",
        "GOCACHE": os.path.join(directory, "go-build"),
    }
    built = subprocess.run(
        [go, "build", "-o", binary, "."],
        cwd=RUNC_SOURCE,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        return None, f"go build failed: {built.stderr.strip()[-2000:]}"
    return binary, ""


def runc_entry(container: workload.Container) -> dict[str, Any]:
    """A container as runc_stats takes it: the paths map of ``fs.NewManager``
    (v1 subsystem name → directory; ``""`` is the cgroup2 tree of a hybrid
    host, as runc names it), or the v2 directory, and a pid for ``net/dev``."""
    hierarchies = container.base.hierarchies
    entry: dict[str, Any] = {"id": container.id, "pid": container.pids()[0]}
    if container.base.mode == "unified":
        entry["unified"] = container.dirs[workload.CGROUP2_KEY]
        return entry
    paths = {}
    for hierarchy in hierarchies:
        if hierarchy.version == 1:
            for controller in hierarchy.controllers:
                paths[controller] = container.dirs[hierarchy.key]
        else:
            paths[""] = container.dirs[hierarchy.key]
    entry["paths"] = paths
    return entry


def call_runc(binary: str, entries: list[dict[str, Any]], rounds: int, repeats: int) -> Any:
    """runc_stats' JSON report on ``entries``."""
    done = subprocess.run(
        [binary, "-rounds", str(rounds), "-repeats", str(repeats)],
        input=json.dumps(entries),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"runc_stats exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def within(value: Optional[int], low: Optional[int], high: Optional[int], slack: int = 0) -> bool:
    """``value`` in the bracket of two cgstats readings, widened by ``slack``."""
    if value is None or low is None or high is None:
        return value is None and low is None and high is None
    return min(low, high) - slack <= value <= max(low, high) + slack


def cross_check(before: Sample, runc: dict[str, Any], after: Sample) -> list[dict[str, Any]]:
    """One container's runc values against cgstats samples just before and after.

    Counters (CPU, network) must lie in the bracket; memory gauges in it give
    or take ``MEMORY_TOLERANCE_BYTES``; pids exactly. Every comparison is
    returned, with ``ok``.
    """
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, cgstats: object, theirs: object, after_: object) -> None:
        checks.append(
            {
                "field": name,
                "ok": ok,
                "cgstats_before": cgstats,
                "runc": theirs,
                "cgstats_after": after_,
            }
        )

    def pair(name: str, extract: Callable[[Sample], Any], theirs: Any, slack: int = 0) -> None:
        low, high = extract(before), extract(after)
        check(name, within(theirs, low, high, slack), low, theirs, high)

    pair("cpu_usage_ns", lambda s: s.cpu and s.cpu.usage_ns, runc["cpu_usage_ns"])
    memory = MEMORY_TOLERANCE_BYTES
    pair(
        "memory_usage_bytes",
        lambda s: s.memory and s.memory.usage_bytes,
        runc["memory_usage_bytes"],
        memory,
    )
    inactive_key = "inactive_file" if before.cgroup_version == 2 else "total_inactive_file"
    inactive = runc[inactive_key]
    pair(
        f"memory_stat_{inactive_key}",
        lambda s: s.memory and s.memory.stat and s.memory.stat.get(inactive_key),
        inactive,
        memory,
    )
    # What cAdvisor and kubelet compute from runc's values.
    working_set = None if inactive is None else max(runc["memory_usage_bytes"] - inactive, 0)
    pair(
        "memory_working_set_bytes",
        lambda s: s.memory and s.memory.working_set_bytes,
        working_set,
        memory,
    )
    pair("pids_current", lambda s: s.pids and s.pids.current, runc["pids_current"])
    # runc reports pids.max "max" as 0, cgstats as None.
    pair("pids_limit", lambda s: s.pids and s.pids.limit, runc["pids_limit"] or None)

    # Block IO: the devices each lists, then bytes per device in the bracket.
    def io(sample: Sample) -> dict[str, tuple[Optional[int], Optional[int]]]:
        if sample.blkio is None:
            return {}
        return {f"{d.major}:{d.minor}": (d.read_bytes, d.write_bytes) for d in sample.blkio.devices}

    theirs_io = {device: tuple(rw) for device, rw in runc["io_bytes"].items()}
    io_before, io_after = io(before), io(after)

    # runc lists a device with zero traffic where the kernel prints one;
    # compare the devices with traffic.
    def busy(devices: dict[str, Any]) -> list[str]:
        return sorted(device for device, rw in devices.items() if any(rw))

    devices = busy(theirs_io)
    ok = busy(io_before) == devices == busy(io_after)
    check("io_devices", ok, busy(io_before), devices, busy(io_after))
    for device in sorted(set(devices) | set(busy(io_before))):
        for index, op in enumerate(("read", "write")):
            low = io_before.get(device, (None, None))[index]
            high = io_after.get(device, (None, None))[index]
            mine = theirs_io.get(device, (None, None))[index]
            check(f"io_{op}_bytes {device}", within(mine, low, high), low, mine, high)

    # Network: the same interfaces, bytes in the bracket.
    def net(sample: Sample) -> dict[str, tuple[int, int]]:
        if sample.net is None:
            return {}
        return {i.name: (i.rx_bytes, i.tx_bytes) for i in sample.net.interfaces}

    net_before, net_after = net(before), net(after)
    theirs_net = {name: (c["rx_bytes"], c["tx_bytes"]) for name, c in runc["net"].items()}
    check(
        "net_interfaces",
        sorted(net_before) == sorted(theirs_net) == sorted(net_after),
        sorted(net_before),
        sorted(theirs_net),
        sorted(net_after),
    )
    for name in sorted(set(net_before) & set(theirs_net) & set(net_after)):
        for index, direction in enumerate(("rx", "tx")):
            low, high = net_before[name][index], net_after[name][index]
            mine = theirs_net[name][index]
            check(f"net_{direction}_bytes {name}", within(mine, low, high), low, mine, high)
    return checks


def measure_runc(
    binary: str, built: list[workload.Container], rounds: int, repeats: int
) -> dict[str, Any]:
    """runc GetStats + net/dev per container, and its values against cgstats'."""
    entries = [runc_entry(container) for container in built]
    timed = call_runc(binary, entries, rounds, repeats)
    result: dict[str, Any] = {
        "runc_us": timed["us_per_container"],
        "runc_getstats_us": timed["getstats_us"],
        "runc_netdev_us": timed["netdev_us"],
        "runc_version": timed["runc"],
        "runc_go": timed["go"],
        "runc_error_count": timed["error_count"],
        "runc_errors": timed["errors"] or [],
    }
    # The cross-check: runc reads every container once, between two cgstats
    # samples of every container.
    with Host() as host:
        handles = [host.open(str(container.id)) for container in built]
        for handle in handles:
            handle.read()  # every file open: the bracket is tight
        start = time.monotonic()
        before = [handle.read() for handle in handles]
        values = call_runc(binary, entries, 0, 1)
        after = [handle.read() for handle in handles]
        bracket_s = time.monotonic() - start
        for handle in handles:
            handle.close()
    by_id = {entry["id"]: entry for entry in values["values"]}
    agree: dict[str, int] = {}
    disagree: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    for sample_before, sample_after in zip(before, after):
        theirs = by_id.get(sample_before.id)
        if theirs is None:
            disagree["missing"] = disagree.get("missing", 0) + 1
            continue
        for item in cross_check(sample_before, theirs, sample_after):
            name = item["field"].split(" ")[0]
            tally = agree if item["ok"] else disagree
            tally[name] = tally.get(name, 0) + 1
            if not item["ok"] and len(examples) < 20:
                examples.append({"id": sample_before.id, **item})
    # Where the kernel keeps no v1 blkio counters for a cgroup, cgstats says
    # so (available false) and runc lists no device, as for no IO at all.
    unavailable = [s.blkio.reason for s in before if s.blkio is not None and not s.blkio.available]
    result["runc_crosscheck"] = {
        "bracket_s": bracket_s,
        "cgstats_blkio_unavailable": len(unavailable),
        "cgstats_blkio_unavailable_reason": unavailable[0] if unavailable else None,
        "memory_tolerance_bytes": MEMORY_TOLERANCE_BYTES,
        "containers": len(before),
        "runc_error_count": values["error_count"],
        "agree": agree,
        "disagree": disagree,
        "disagreements": examples,
    }
    return result


def run(count: int, args: argparse.Namespace, cpu_ticks: int) -> dict[str, Any]:
    """Every figure for ``count`` containers."""
    rounds = args.rounds or max(1, 2000 // count)
    row: dict[str, Any] = {"containers": count, "rounds": rounds}
    with containers(count, netns=not args.no_netns) as built:
        ids = [str(container.id) for container in built]
        with Host() as host:
            listed = {ref.id for ref in host.containers()}
            assert set(ids) <= listed
            row["enumerate_ms"] = best_of(args.repeats, host.containers) * 1e3
            files = measure_read(host, ids, rounds, args.repeats)
            row["read_us"] = files["read_us"]
            row["read_all_parsed_us"] = files["read_all_parsed_us"]
            row.update(measure_collector(host, ids, rounds, args.repeats))
            if cpu_ticks:
                row.update(measure_cpu(host, ids, cpu_ticks, reuse=True))
                row.update(measure_cpu(host, ids, cpu_ticks, reuse=False))
        counters, limits = files["counter_paths"], files["limit_paths"]
        row["files_per_container"] = (len(counters) + len(limits)) / count
        row["counter_files_per_container"] = len(counters) / count
        row["files_kept_open_fraction"] = row["files_kept_open"] / len(counters)
        row["open_read_close_us"] = measure_open_read_close(
            counters + limits, rounds, args.repeats, count
        )
        row["pread_us"] = measure_floors(counters + limits, rounds, args.repeats, count)
        row["pread_counters_us"] = measure_floors(counters, rounds, args.repeats, count)
        if args.runc_binary:
            try:
                row.update(measure_runc(args.runc_binary, built, rounds, args.repeats))
            except (RuntimeError, OSError, ValueError, KeyError) as error:
                row["runc_skipped"] = f"runc_stats failed: {error}"
                print(f"bench_read: N={count}: {row['runc_skipped']}", file=sys.stderr)
    if "runc_us" in row:
        row["runc_ratio_to_cgstats"] = row["runc_us"] / row["cgstats_us"]
        row["runc_ratio_to_cgstats_all_parsed"] = row["runc_us"] / row["cgstats_all_parsed_us"]
        row["runc_ratio_to_pread"] = row["runc_us"] / row["pread_us"]
    row["ratio_to_open_read_close"] = row["cgstats_us"] / row["open_read_close_us"]
    row["ratio_to_pread"] = row["cgstats_us"] / row["pread_us"]
    row["all_parsed_ratio_to_pread"] = row["cgstats_all_parsed_us"] / row["pread_us"]
    row["read_ratio_to_pread"] = row["read_us"] / row["pread_us"]
    # What the floors alone would cost N containers at a 1 s step, for the
    # CPU goal: no reader can do better than reading its files.
    for floor in ("pread_us", "pread_counters_us"):
        row[floor.replace("_us", "_cpu_percent_of_one_core")] = (
            100 * row[floor] * count / 1e6 / STEP_S
        )
    row["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    def cell(row: dict[str, Any], key: str, width: int, form: str = ".1f") -> str:
        value = row.get(key)
        return f"{'' if value is None else format(value, form):>{width}}"

    columns = [
        ("N", "containers", 5, "d"),
        ("files", "files_per_container", 5, ".1f"),
        ("kept", "files_kept_open_fraction", 5, ".0%"),
        ("cgstats", "cgstats_us", 7, ".1f"),
        ("parsed", "cgstats_all_parsed_us", 6, ".1f"),
        ("read()", "read_us", 6, ".1f"),
        ("o/r/c", "open_read_close_us", 6, ".1f"),
        ("pread", "pread_us", 6, ".1f"),
        ("÷o/r/c", "ratio_to_open_read_close", 6, ".2f"),
        ("÷pread", "ratio_to_pread", 6, ".2f"),
        ("parsed÷pread", "all_parsed_ratio_to_pread", 12, ".2f"),
        ("RSS MiB", "peak_rss_mib", 7, ".1f"),
        ("fds", "open_files", 6, "d"),
        ("CPU %", "cpu_percent_of_one_core", 6, ".2f"),
        ("parsed CPU %", "cpu_percent_of_one_core_all_parsed", 12, ".2f"),
        ("pread CPU %", "pread_counters_cpu_percent_of_one_core", 11, ".2f"),
        ("runc", "runc_us", 7, ".1f"),
        ("runc÷cgstats", "runc_ratio_to_cgstats", 12, ".2f"),
        ("runc÷parsed", "runc_ratio_to_cgstats_all_parsed", 11, ".2f"),
    ]
    print(" ".join(f"{title:>{width}}" for title, _key, width, _form in columns))
    for row in rows:
        row = {**row, "peak_rss_mib": row["peak_rss_kib"] / 1024}
        print(" ".join(cell(row, key, width, form) for _title, key, width, form in columns))
    print(
        "µs per container per sample. cgstats: Collector.tick(), limits refresh amortized at"
        " a 1 s step, unchanged sections reused (these containers are idle); parsed: the"
        " same, every file parsed; files: per sample (counters, limits, net/dev); kept:"
        " counter files kept open; RSS: peak so far; fds: open while the collector runs;"
        " CPU %: process CPU per 1 s tick, of one core; pread CPU %: the counter files'"
        " pread floor for N containers at a 1 s step; runc: runc 1.1.5 libcontainer"
        " GetStats() + /proc/<pid>/net/dev as cAdvisor reads them, same cgroups, same run"
    )
    for row in rows:
        if "runc_skipped" in row:
            print(f"N={row['containers']}: runc comparison skipped: {row['runc_skipped']}")
        check = row.get("runc_crosscheck")
        if check is None:
            continue
        agreed = sum(check["agree"].values())
        print(
            f"N={row['containers']}: runc vs cgstats (bracketed by two cgstats samples"
            f" {check['bracket_s']:.2f} s apart): {agreed} comparisons agree"
            f" ({', '.join(f'{k} {v}' for k, v in sorted(check['agree'].items()))})"
        )
        if check["disagree"]:
            tally = ", ".join(f"{k} {v}" for k, v in sorted(check["disagree"].items()))
            print(f"  DISAGREEMENTS: {tally}")
            for item in check["disagreements"][:5]:
                print(f"    {item}")
        if check["cgstats_blkio_unavailable"]:
            print(
                f"  blkio: cgstats reports no counters for {check['cgstats_blkio_unavailable']}"
                " containers (available false: throttle accounting inactive on every disk);"
                " runc lists no device for them, i.e. shows them as doing no IO"
            )
        if row.get("runc_error_count") or check["runc_error_count"]:
            print(f"  runc_stats errors: {row.get('runc_errors')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,100,1000", help="container counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=0, help="samples per timing (default: auto)")
    parser.add_argument("--repeats", type=int, default=5, help="timings, the best is kept")
    parser.add_argument(
        "--cpu-ticks", type=int, default=20, help="1 s ticks timed at the largest count (0: none)"
    )
    parser.add_argument("--no-netns", action="store_true", help="share the host network namespace")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    parser.add_argument(
        "--no-runc", action="store_true", help="skip the comparison with runc's GetStats"
    )
    parser.add_argument(
        "--runc-bin",
        metavar="FILE",
        help="a runc_stats binary built beforehand (default: build benchmarks/runc_stats)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_read: needs root (it builds real cgroups)", file=sys.stderr)
        return 2
    # An agent polling many containers raises its descriptor limit; so do we,
    # as far as this process is allowed (the hard limit may be fixed).
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (1 << 17, hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            break
    counts = [int(part) for part in args.counts.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-runc-") as directory:
        args.runc_binary, runc_skipped = None, "--no-runc"
        if args.runc_bin:
            args.runc_binary = os.path.abspath(args.runc_bin)
        elif not args.no_runc:
            args.runc_binary, runc_skipped = build_runc(directory)
        if args.runc_binary is None:
            print(f"bench_read: runc comparison skipped: {runc_skipped}", file=sys.stderr)
        rows = [run(count, args, args.cpu_ticks if count == max(counts) else 0) for count in counts]
    print_table(rows)
    if args.runc_binary is None:
        print(f"runc comparison skipped: {runc_skipped}")
    if args.json:
        report = {
            "machine": {
                "kernel": platform.release(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            },
            "step_s": STEP_S,
            "limits_max_age_s": DEFAULT_LIMITS_MAX_AGE_S,
            "repeats": args.repeats,
            "runc": None if args.runc_binary is None else "runc_stats",
            "runc_skipped": None if args.runc_binary is not None else runc_skipped,
            "rows": rows,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
