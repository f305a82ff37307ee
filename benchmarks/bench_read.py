"""Cost of reading a container, against the floors of reading the same files.

Builds N real containers (a cgroup in every hierarchy beneath this process's
own, one sleeping process each, optionally a private network namespace each),
then measures in the same run, per container per sample:

- ``cgstats``: ``Container.read()`` (every controller and network, parsed
  into records) on handles kept open;
- ``open/read/close``: reading the same files (the container's plan plus its
  ``net/dev``) by opening, reading and closing each;
- ``pread``: ``os.pread`` at offset 0 on the same files already open (no parsing).

Also times ``Host.containers()`` (enumeration of every container on the
host). Prints microseconds per container and the ratio to each floor; ``--json``
writes the figures. Needs root. Run with ``tox -e bench`` or
``python benchmarks/bench_read.py --counts 10,100``.
"""

from __future__ import annotations

import argparse
import contextlib
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

from cgstats import Container, Host


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


def measure(host: Host, handles: list[Container], rounds: int, repeats: int) -> dict[str, Any]:
    """Microseconds per container per sample: cgstats, then the two floors."""
    for handle in handles:
        handle.read()  # warm: every descriptor open, the net pid chosen
    paths = []
    for handle in handles:
        sample = handle.read()
        pid = sample.net.pid if sample.net else None
        paths.append(handle.files + ([host.proc_path(pid, "net/dev")] if pid else []))
    all_paths = [path for group in paths for path in group]

    def cgstats_read() -> None:
        for _ in range(rounds):
            for handle in handles:
                handle.read()

    cgstats_s = best_of(repeats, cgstats_read)
    held = len(host.files)
    open_files = len(os.listdir("/proc/self/fd"))
    host.close()  # free the descriptors for the floors

    def open_read_close() -> None:
        for _ in range(rounds):
            for path in all_paths:
                with open(path, "rb", buffering=0) as handle:
                    handle.read()

    # The pread floor keeps every file open; past RLIMIT_NOFILE it is timed
    # in chunks that fit, and the chunk times are added up.
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    chunk = max(1, soft - len(os.listdir("/proc/self/fd")) - 128)
    pread_s = 0.0
    for first in range(0, len(all_paths), chunk):
        descriptors = [os.open(path, os.O_RDONLY) for path in all_paths[first : first + chunk]]

        def pread(descriptors: list[int] = descriptors) -> None:
            for _ in range(rounds):
                for fd in descriptors:
                    os.pread(fd, 65536, 0)

        try:
            pread_s += best_of(repeats, pread)
        finally:
            for fd in descriptors:
                os.close(fd)

    per_container = 1e6 / (rounds * len(handles))
    result: dict[str, Any] = {
        "cgstats_us": cgstats_s * per_container,
        "open_read_close_us": best_of(repeats, open_read_close) * per_container,
        "pread_us": pread_s * per_container,
        "files_per_container": statistics.mean(len(group) for group in paths),
        "files_kept_open": held,
        "files_kept_open_fraction": held / len(all_paths),
        "open_files": open_files,
    }
    result["ratio_to_open_read_close"] = result["cgstats_us"] / result["open_read_close_us"]
    result["ratio_to_pread"] = result["cgstats_us"] / result["pread_us"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,100", help="container counts (comma-separated)")
    parser.add_argument("--rounds", type=int, default=0, help="samples per timing (default: auto)")
    parser.add_argument("--repeats", type=int, default=5)
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
    rows = []
    for count in (int(part) for part in args.counts.split(",")):
        with containers(count, netns=not args.no_netns) as built, Host() as host:
            handles = [host.open(str(container.id)) for container in built]
            rounds = args.rounds or max(1, 2000 // count)
            row: dict[str, Any] = {"containers": count, "rounds": rounds}
            listed = {ref.id for ref in host.containers()}
            assert {str(c.id) for c in built} <= listed
            row["enumerate_ms"] = best_of(args.repeats, host.containers) * 1e3
            row.update(measure(host, handles, rounds, args.repeats))
            row["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            rows.append(row)
    print(
        f"{'N':>6} {'files':>6} {'kept':>5} {'cgstats µs':>11} {'open/read/close µs':>19} "
        f"{'pread µs':>9} {'x o/r/c':>8} {'x pread':>8}"
    )
    for row in rows:
        print(
            f"{row['containers']:>6} {row['files_per_container']:>6.1f} "
            f"{row['files_kept_open_fraction']:>5.0%} {row['cgstats_us']:>11.1f} "
            f"{row['open_read_close_us']:>19.1f} {row['pread_us']:>9.1f} "
            f"{row['ratio_to_open_read_close']:>8.2f} {row['ratio_to_pread']:>8.2f}"
        )
    if args.json:
        report = {
            "machine": {
                "kernel": platform.release(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
            },
            "rows": rows,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
