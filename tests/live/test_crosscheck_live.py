"""cgstats' readings against other, established readers of the same cgroup.

* psutil (per-process ``/proc/<pid>/stat``, ``status`` and ``io``), summed over
  the container's processes: CPU time, anonymous memory, storage bytes. psutil
  never reads a cgroup file, so this checks cgstats' cgroup accounting against
  the kernel's per-task accounting. On every kernel.
* ``systemd-cgtop`` (systemd's own cgroup reader, C): task count, CPU time and
  memory of the container's cgroup. On cgroup v2 (unified), where it reads the same tree.
* runc's libcontainer cgroup managers (Go, runc 1.1.5: ``fs`` on v1, ``fs2``
  on v2; what cAdvisor and Docker call) through ``benchmarks/runc_stats``, on
  paths the test knows itself: CPU, memory and working set, pids, IO bytes per
  device, network bytes per interface. On every kernel.

psutil and systemd-cgtop look at one workload process that has burnt CPU, holds
memory, has done O_DIRECT IO and then sleeps, so the counters stay put while
the readers look; runc at three loaded containers, one still burning CPU, its
one read bracketed by two cgstats reads.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import psutil
import pytest
import workload

from cgstats import Host
from cgstats.model import Sample

MiB = 1 << 20


@pytest.fixture
def idle_after_work(
    base: workload.Base, io_dir: str
) -> tuple[workload.Container, workload.Proc, dict[str, object]]:
    container_id = workload.random_id()
    container = base.container(f"docker/{container_id}", container_id=container_id)
    # A huge rule: v1 counts blkio throttle IO only on disks with a rule.
    container.throttle_io(workload.block_device_of(io_dir), 100_000_000_000, 100_000_000_000)
    path = f"{io_dir}/{workload.PREFIX}crosscheck.dat"
    proc = container.spawn(workload.active_idler_argv(0.3, 32, path, 4))
    report = proc.read_json(timeout=120)
    assert report["bytes_written"] == 4 * MiB and report["bytes_read"] == 2 * MiB
    return container, proc, report


def _sample(host: Host, container: workload.Container) -> Sample:
    assert container.id is not None
    return host.read(container.id)


def test_readings_agree_with_psutil(
    host: Host, idle_after_work: tuple[workload.Container, workload.Proc, dict[str, object]]
) -> None:
    container, proc, _report = idle_after_work
    sample = _sample(host, container)
    processes = [psutil.Process(pid) for pid in container.pids()]
    assert [p.pid for p in processes] == [proc.pid]

    cpu_s = sum(p.cpu_times().user + p.cpu_times().system for p in processes)
    assert sample.cpu is not None and sample.cpu.usage_ns is not None
    # psutil counts in clock ticks (10 ms); the cgroup in ns.
    assert abs(sample.cpu.usage_ns / 1e9 - cpu_s) < 0.03 + cpu_s / 20, (sample.cpu, cpu_s)
    assert cpu_s >= 0.3

    # RssAnon = rss - shared (file and shmem pages); the cgroup's anon /
    # total_rss counts the same anonymous pages.
    anon = sum(p.memory_info().rss - p.memory_info().shared for p in processes)
    assert sample.memory is not None and sample.memory.rss_bytes is not None
    assert anon >= 32 * MiB
    assert abs(sample.memory.rss_bytes - anon) < 4 * MiB, (sample.memory.rss_bytes, anon)

    io = [p.io_counters() for p in processes]
    assert sample.blkio is not None and sample.blkio.available, sample.blkio
    read_bytes = sum(d.read_bytes or 0 for d in sample.blkio.devices)
    write_bytes = sum(d.write_bytes or 0 for d in sample.blkio.devices)
    # /proc/<pid>/io counts bytes the task sent to the storage layer, on every
    # device, as the cgroup does; both include the O_DIRECT 4 MiB / 2 MiB.
    assert write_bytes >= 4 * MiB and read_bytes >= 2 * MiB
    assert abs(write_bytes - sum(c.write_bytes for c in io)) < MiB, (sample.blkio, io)
    assert abs(read_bytes - sum(c.read_bytes for c in io)) < MiB, (sample.blkio, io)


def test_readings_agree_with_systemd_cgtop(
    base: workload.Base,
    host: Host,
    idle_after_work: tuple[workload.Container, workload.Proc, dict[str, object]],
) -> None:
    cgtop = shutil.which("systemd-cgtop")
    if cgtop is None:
        pytest.skip("systemd-cgtop is not installed")
    if base.mode != "unified":
        pytest.skip(f"{base.mode} host: systemd-cgtop reads a v1 tree other than cgstats'")
    container, _proc, _report = idle_after_work
    path = container.paths[workload.CGROUP2_KEY]
    sample = _sample(host, container)
    result = subprocess.run(
        [
            cgtop,
            "--raw",
            "--batch",
            "--iterations=1",
            "--order=path",
            "--cpu=time",
            f"--depth={path.count('/')}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    sample_after = _sample(host, container)
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line}
    # Columns: path, tasks, CPU time (µs, with --cpu=time --raw), memory, IO rates.
    assert path in rows, result.stdout
    tasks, cpu_us, memory, *_io = rows[path]
    assert sample.pids is not None and int(tasks) == sample.pids.current == 1
    # cgtop reads between two cgstats samples: its figures lie between theirs
    # (the process may still be finishing its report when the first is taken).
    assert sample.cpu is not None and sample_after.cpu is not None
    assert sample.cpu.usage_ns is not None and sample_after.cpu.usage_ns is not None
    assert sample.cpu.usage_ns // 1000 <= int(cpu_us) <= sample_after.cpu.usage_ns // 1000
    assert int(cpu_us) >= 300_000
    assert sample.memory is not None and sample_after.memory is not None
    low, high = sorted((sample.memory.usage_bytes or 0, sample_after.memory.usage_bytes or 0))
    # memory.current moves by a few pages while the readers run.
    assert low - 256 * 1024 <= int(memory) <= high + 256 * 1024, (memory, low, high)


# --- runc's libcontainer -----------------------------------------------------

BENCH_READ = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "benchmarks",
    "bench_read.py",
)


def _bench_read() -> ModuleType:
    """``benchmarks/bench_read.py``: builds and calls runc_stats, and its cross-check."""
    spec = importlib.util.spec_from_file_location("cgstats_bench_read", BENCH_READ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench_read() -> ModuleType:
    return _bench_read()


@pytest.fixture(scope="session")
def runc_stats(bench_read: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The runc_stats binary: ``$CGSTATS_RUNC_STATS``, else built once per session.

    Without Go or runc's sources the test skips, except with ``CI=true``
    (``.ci/run`` installs them and builds the binary): then it fails.
    """
    given = os.environ.get("CGSTATS_RUNC_STATS")
    if given:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            pytest.fail(f"CGSTATS_RUNC_STATS={given} is not an executable file")
        return given
    if os.environ.get("CGSTATS_VM") == "1":
        # The host's Go is visible in the guest, but a build under TCG takes minutes.
        binary, reason = (
            None,
            (
                "CGSTATS_RUNC_STATS is not set, and building Go under emulation is too slow"
                " (.ci/run builds build/runc-stats on the host and sets it)"
            ),
        )
    else:
        binary, reason = bench_read.build_runc(str(tmp_path_factory.mktemp("runc-stats")))
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true, yet runc_stats is unavailable: {reason}")
        pytest.skip(f"runc_stats unavailable: {reason}")
    return str(binary)


@pytest.fixture
def loaded(
    base: workload.Base, io_dir: str
) -> Iterator[tuple[dict[str, workload.Container], dict[str, workload.Netns]]]:
    """Three containers with real load, each in its own network namespace.

    * ``cpu``: a CPU burner under a 0.2-core quota, still burning; pids.max 16;
    * ``memory``: 32 MiB held by a memory hog, 8 MiB written through the page
      cache (fsynced: clean file pages), 4 MiB written and 2 MiB read back with
      O_DIRECT on the io_dir's disk (under a throttle rule: v1 counts blkio
      throttle IO only on disks with one);
    * ``net``: 100 UDP datagrams of 512 bytes over its namespace's ``lo``.
    """
    with workload.Netns() as ns_cpu, workload.Netns() as ns_mem, workload.Netns() as ns_net:
        built: dict[str, workload.Container] = {}
        for name in ("cpu", "memory", "net"):
            container_id = workload.random_id()
            built[name] = base.container(f"docker/{container_id}", container_id=container_id)
        cpu, memory, net = built["cpu"], built["memory"], built["net"]
        cpu.limit_cpu(20_000, 100_000)
        cpu.limit_pids(16)
        cpu.spawn(workload.cpu_burner_argv(3600), netns=ns_cpu)

        memory.throttle_io(workload.block_device_of(io_dir), 100_000_000_000, 100_000_000_000)
        hog = memory.spawn(workload.memory_hog_argv(32), netns=ns_mem)
        assert hog.read_json(timeout=120)["ready"]
        cached = f"{io_dir}/{workload.PREFIX}runc-cached.dat"
        direct = f"{io_dir}/{workload.PREFIX}runc-direct.dat"
        script = (
            f"dd if=/dev/zero of={cached} bs=1M count=8 conv=fsync status=none && "
            f"dd if=/dev/zero of={direct} bs=1M count=4 oflag=direct conv=fsync status=none && "
            f"dd if={direct} of=/dev/null bs=1M count=2 iflag=direct status=none"
        )
        _proc, exited, _reports = memory.run(["sh", "-c", script])
        assert exited.exitcode == 0, exited

        sender = net.spawn(workload.udp_sender_argv(100, 512), netns=ns_net)
        assert sender.read_json(timeout=120)["received_locally"] == 100
        try:
            yield built, {"cpu": ns_cpu, "memory": ns_mem, "net": ns_net}
        finally:
            for container in built.values():
                container.kill_all()


def test_readings_agree_with_runc(
    base: workload.Base,
    io_dir: str,
    bench_read: ModuleType,
    runc_stats: str,
    loaded: tuple[dict[str, workload.Container], dict[str, workload.Netns]],
) -> None:
    built, namespaces = loaded
    # runc_stats reads /proc/<pid>/net/dev: the pid must be in its namespace
    # already (ip netns exec has switched before exec'ing the workload).
    for name, container in built.items():
        for pid in container.pids():
            assert os.readlink(f"/proc/{pid}/ns/net") == f"net:[{namespaces[name].inode}]"
    # runc's paths come from the test's own cgroup dirs (workload), not from cgstats.
    entries = [bench_read.runc_entry(container) for container in built.values()]
    if base.mode == "unified":
        assert all(set(entry) == {"id", "pid", "unified"} for entry in entries)
    with Host() as host:
        handles = {name: host.open(str(c.id)) for name, c in built.items()}
        deadline = time.monotonic() + 60
        while True:  # the burner has had some CPU: the bracket spans a moving counter
            cpu = handles["cpu"].read().cpu
            if cpu is not None and (cpu.usage_ns or 0) >= 50_000_000:
                break
            assert time.monotonic() < deadline, cpu
            time.sleep(0.05)
        for handle in handles.values():
            handle.read()  # every file open: the bracket is tight
        before = {name: handle.read() for name, handle in handles.items()}
        report = bench_read.call_runc(runc_stats, entries, 0, 1)
        after = {name: handle.read() for name, handle in handles.items()}
        for handle in handles.values():
            handle.close()
    assert report["error_count"] == 0, report["errors"]
    theirs: dict[str, dict[str, Any]] = {v["id"]: v for v in report["values"]}

    disagreements = []
    for name, container in built.items():
        assert before[name].errors == () and after[name].errors == (), before[name].errors
        for check in bench_read.cross_check(before[name], theirs[str(container.id)], after[name]):
            if not check["ok"]:
                disagreements.append({"container": name, **check})
    assert disagreements == [], disagreements

    # The comparison is not vacuous: runc saw the load that was put on.
    cpu, memory, net = (theirs[str(built[name].id)] for name in ("cpu", "memory", "net"))
    assert cpu["cpu_usage_ns"] >= 50_000_000 and (cpu["pids_current"], cpu["pids_limit"]) == (1, 16)
    assert memory["memory_usage_bytes"] >= 32 * MiB
    inactive = memory["inactive_file" if base.mode == "unified" else "total_inactive_file"]
    assert inactive is not None
    assert (memory["pids_current"], memory["pids_limit"]) == (1, 0)  # 0: runc's "max"
    device = workload.block_device_of(io_dir)
    read_bytes, write_bytes = memory["io_bytes"][device]
    # 4 MiB O_DIRECT and the 8 MiB that dd's fsync wrote back. v2 charges
    # writeback to the pages' cgroup whoever writes it; v1's throttle counters
    # to the submitter, so there only the O_DIRECT part is certain.
    assert write_bytes >= 4 * MiB and read_bytes >= 2 * MiB, memory["io_bytes"]
    if base.mode == "unified":
        assert write_bytes >= 12 * MiB, memory["io_bytes"]
    assert net["net"]["lo"]["tx_packets"] == net["net"]["lo"]["rx_packets"] == 100
    assert net["net"]["lo"]["tx_bytes"] == 100 * (512 + 28)
    assert after["net"].net is not None and after["net"].net.netns == namespaces["net"].inode
