"""cgstats' readings against other, established readers of the same cgroup.

* psutil (per-process ``/proc/<pid>/stat``, ``status`` and ``io``), summed over
  the container's processes: CPU time, anonymous memory, storage bytes. psutil
  never reads a cgroup file, so this checks cgstats' cgroup accounting against
  the kernel's per-task accounting. On every kernel.
* ``systemd-cgtop`` (systemd's own cgroup reader, C): task count, CPU time and
  memory of the container's cgroup. On cgroup v2 (unified), where it reads the same tree.

One workload process that has burnt CPU, holds memory, has done O_DIRECT IO and
then sleeps, so the counters stay put while the readers look.
"""

from __future__ import annotations

import shutil
import subprocess

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
