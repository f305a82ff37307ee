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
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import workload

from cgstats import Collector, Host
from cgstats.host import DEFAULT_LIMITS_MAX_AGE_S

STEP_S = 1.0  # the goal's sampling step


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
        " pread floor for N containers at a 1 s step"
    )


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
    rows = [run(count, args, args.cpu_ticks if count == max(counts) else 0) for count in counts]
    print_table(rows)
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
            "rows": rows,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
