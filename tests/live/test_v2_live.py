"""What cgroup v2 offers beyond v1, on live cgroups.

``memory.events`` driven to ``max``/``oom`` by a tight ``memory.max``,
``memory.high`` reclaim with memory pressure (PSI ``some``/``full``), ``io.stat``
bytes and discard counters. Each test runs wherever the kernel offers the files
it needs and skips elsewhere with the reason: on our v1 hybrid hosts they skip,
in the v2 VM stage (tests/vm/run_live.py) they run. The kernel's own files are
read next to cgstats' readings, and they must agree.
"""

from __future__ import annotations

import os
import signal

import fixture_trees
import pytest
import workload

from cgstats import Host
from cgstats.model import BlkioDevice, Sample

MiB = 1 << 20


def docker_container(base: workload.Base) -> workload.Container:
    container_id = workload.random_id()
    return base.container(f"docker/{container_id}", container_id=container_id)


def require(container: workload.Container, *names: str) -> None:
    """Skip unless this kernel gives the container every named cgroup file."""
    missing = [name for name in names if not container.has(name)]
    if missing:
        pytest.skip(
            f"this kernel's cgroups have no {', '.join(missing)} "
            f"({container.base.mode} host: cgroup v1 has no such file)"
        )


def read(host: Host, container: workload.Container) -> Sample:
    assert container.id is not None
    return host.read(container.id)


def flat_keyed(text: str) -> dict[str, int]:
    return {key: int(value) for key, value in (line.split() for line in text.splitlines())}


def device(sample: Sample, devno: str) -> BlkioDevice:
    assert sample.blkio is not None and sample.blkio.available, sample.blkio
    major, minor = (int(part) for part in devno.split(":"))
    (found,) = [d for d in sample.blkio.devices if (d.major, d.minor) == (major, minor)]
    return found


def test_memory_max_counts_max_and_oom_events(base: workload.Base, host: Host) -> None:
    container = docker_container(base)
    require(container, "memory.events", "memory.max")
    container.limit_memory(16 * MiB)  # and memory.swap.max 0: no escape to swap
    before = read(host, container).memory
    assert before is not None and before.events is not None
    assert before.oom_events == 0 and before.oom_kills == 0 and before.events["max"] == 0
    _proc, exited, _reports = container.run(workload.memory_hog_argv(64))
    assert exited.signal == signal.SIGKILL, exited  # 64 MiB do not fit in 16
    memory = read(host, container).memory
    assert memory is not None and memory.events is not None
    assert memory.events == flat_keyed(container.read("memory.events"))
    assert memory.events["max"] > 0  # charges that hit memory.max
    assert memory.oom_events is not None and memory.oom_events >= 1
    assert memory.oom_kills is not None and memory.oom_kills >= 1
    assert memory.limit_bytes == 16 * MiB
    if memory.max_usage_bytes is not None:  # memory.peak, 5.19+
        assert 12 * MiB <= memory.max_usage_bytes <= 16 * MiB


def test_memory_high_reclaims_and_shows_pressure(
    base: workload.Base, host: Host, io_dir: str
) -> None:
    container = docker_container(base)
    require(container, "memory.high", "memory.events", "memory.pressure")
    container.write("memory.high", 8 * MiB)
    before = read(host, container)
    assert before.pressure is not None and before.pressure.memory is not None
    with workload.io_file(io_dir) as path:
        # 64 MiB through the page cache: above memory.high the writer itself
        # reclaims (and is throttled), which PSI counts as a memory stall.
        _proc, exited, _reports = container.run(
            ["dd", "if=/dev/zero", f"of={path}", "bs=1M", "count=64", "status=none"]
        )
        assert exited.exitcode == 0
        after = read(host, container)
    memory = after.memory
    assert memory is not None and memory.events is not None
    assert memory.high_bytes == 8 * MiB and memory.limit_bytes is None
    assert memory.events["high"] > 0, memory.events
    assert memory.events["max"] == 0 and memory.oom_events == 0
    assert memory.usage_bytes is not None and memory.usage_bytes < 16 * MiB
    assert after.pressure is not None and after.pressure.memory is not None
    some, full = after.pressure.memory.some, after.pressure.memory.full
    assert some is not None and full is not None
    assert before.pressure.memory.some is not None and before.pressure.memory.full is not None
    assert some.total_us > before.pressure.memory.some.total_us
    assert full.total_us > before.pressure.memory.full.total_us  # the only task stalled
    assert full.total_us <= some.total_us
    kernel = container.read("memory.pressure").splitlines()
    assert kernel[0].startswith("some ") and int(kernel[0].rsplit("=", 1)[1]) >= some.total_us


def test_io_stat_counts_odirect_bytes(base: workload.Base, host: Host, io_dir: str) -> None:
    container = docker_container(base)
    require(container, "io.stat")
    devno = workload.block_device_of(io_dir)
    with workload.io_file(io_dir) as path:
        for argv in (
            ["dd", "if=/dev/zero", f"of={path}", "bs=1M", "count=8", "oflag=direct", "conv=fsync"],
            ["dd", f"if={path}", "of=/dev/null", "bs=1M", "count=4", "iflag=direct"],
        ):
            _proc, exited, _reports = container.run([*argv, "status=none"])
            assert exited.exitcode == 0, argv
        sample = read(host, container)
    counted = device(sample, devno)
    assert counted.write_bytes is not None and 8 * MiB <= counted.write_bytes < 9 * MiB
    assert counted.read_bytes is not None and 4 * MiB <= counted.read_bytes < 5 * MiB
    assert counted.write_ops is not None and counted.write_ops >= 8
    assert counted.read_ops is not None and counted.read_ops >= 4
    kernel = {
        line.split()[0]: dict(kv.split("=") for kv in line.split()[1:])
        for line in container.read("io.stat").splitlines()
    }[devno]
    assert counted.write_bytes == int(kernel["wbytes"])
    assert counted.read_bytes == int(kernel["rbytes"])


def test_io_stat_counts_discards(base: workload.Base, host: Host) -> None:
    """``CGSTATS_TEST_DISCARD_DEV`` names a raw block device whose data the test
    may destroy (the VM stage's scratch disk /dev/vdb)."""
    container = docker_container(base)
    require(container, "io.stat")
    dev = os.environ.get("CGSTATS_TEST_DISCARD_DEV")
    if not dev:
        pytest.skip("no scratch block device to discard on (CGSTATS_TEST_DISCARD_DEV)")
    devno = workload.devno_str(os.stat(dev).st_rdev)
    with open(f"/sys/dev/block/{devno}/queue/discard_max_bytes") as f:
        supported = int(f.read()) > 0
    _proc, exited, _reports = container.run(
        ["blkdiscard", "--offset", "0", "--length", str(8 * MiB), dev]
    )
    sample = read(host, container)
    if supported:
        assert exited.exitcode == 0
        counted = device(sample, devno)
        assert counted.discard_bytes == 8 * MiB
        assert counted.discard_ops is not None and counted.discard_ops >= 1
        assert counted.write_bytes == 0
    else:
        # The device refuses discards, so the kernel counts none: cgstats must
        # report none either (no device line, or dbytes=0), not invent any.
        assert exited.exitcode != 0
        for counted in sample.blkio.devices if sample.blkio else ():
            if f"{counted.major}:{counted.minor}" == devno:
                assert counted.discard_bytes in (0, None), counted


def test_v2_fixture_has_the_files_of_this_kernel(base: workload.Base) -> None:
    """tests/fixtures/v2-unified was captured in the VM stage's kernel by
    tests/vm/capture_v2.sh: a container there must show the same files as one
    created now, or the fixture has drifted from the kernel and needs a refresh."""
    if os.environ.get("CGSTATS_VM") != "1" or base.mode != "unified":
        pytest.skip("the v2 fixture is compared in the VM stage, whose kernel captured it")
    data = fixture_trees.capture("v2-unified")
    main = fixture_trees.container(data, "main")
    captured = set(os.listdir(fixture_trees.root_path(data, main, workload.CGROUP2_KEY)))
    container = docker_container(base)
    directory = container.dirs[workload.CGROUP2_KEY]
    live = {
        name
        for name in os.listdir(directory)
        if os.stat(os.path.join(directory, name)).st_mode & 0o444  # as capture.py copies
    }
    release = os.uname().release
    assert live == captured, (
        f"fixture captured on {data['kernel']['release']}, this is {release}: "
        f"only live {sorted(live - captured)}, only captured {sorted(captured - live)}; "
        "refresh with bash tests/vm/capture_v2.sh"
    )
