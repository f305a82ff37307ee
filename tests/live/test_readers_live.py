"""Readings of live containers match what their workloads did.

Tolerances: CPU time within 60 ms (+5%) of the child's rusage; memory at
least what was touched and under 48 MiB more; O_DIRECT bytes exact up to
1 MiB of filesystem metadata; pids and packets exact.
"""

from __future__ import annotations

import errno
import os
import time

import pytest
import workload

from cgstats import Host
from cgstats.model import Sample

MiB = 1 << 20


def docker_container(base: workload.Base) -> workload.Container:
    container_id = workload.random_id()
    return base.container(f"docker/{container_id}", container_id=container_id)


def read(host: Host, container: workload.Container) -> Sample:
    assert container.id is not None
    return host.read(container.id)


def test_cpu_time_matches_rusage(base: workload.Base, host: Host) -> None:
    container = docker_container(base)
    before = read(host, container).cpu
    assert before is not None and before.usage_ns == 0
    _proc, exited, _reports = container.run(workload.cpu_burner_argv(0.3))
    after = read(host, container).cpu
    assert after is not None and after.usage_ns is not None
    tolerance = 60_000_000 + exited.cpu_ns // 20
    assert abs(after.usage_ns - exited.cpu_ns) < tolerance, (after, exited)
    assert after.user_ns is not None and after.system_ns is not None
    if after.stat is not None and "usage_usec" in after.stat:
        # v2 cpu.stat scales user/system to the exact runtime, as rusage does
        assert abs(after.user_ns - exited.user_ns) < tolerance, (after, exited)
        assert abs(after.system_ns - exited.sys_ns) < tolerance, (after, exited)
    else:
        # v1 cpuacct.usage_user/usage_sys are the raw tick samples, unscaled: on a
        # busy host a burner preempted between ticks is undercounted by a third
        # or more (seen: 204 ms user of 309 ms). The burner's time is user time.
        split = after.user_ns + after.system_ns
        assert 0.5 * after.usage_ns - tolerance < split < after.usage_ns + tolerance, after
        assert after.user_ns > after.system_ns, after
    if after.percpu_ns is not None:
        assert sum(after.percpu_ns) == after.usage_ns


def test_cpu_quota_and_throttling(base: workload.Base, host: Host) -> None:
    container = docker_container(base)
    container.limit_cpu(20_000, 100_000)
    container.run(workload.cpu_burner_argv(0.2))
    cpu = read(host, container).cpu
    assert cpu is not None
    assert cpu.limit_cores == pytest.approx(0.2)
    assert cpu.periods and cpu.periods >= 5
    assert cpu.throttled_periods and cpu.throttled_periods >= 1
    assert cpu.throttled_ns and cpu.throttled_ns > 0
    pressure = read(host, container).pressure
    if pressure is not None and pressure.cpu is not None:  # PSI: v2, or hybrid's unified tree
        # Throttled yet runnable: a CPU stall for the cgroup, "full" too
        # since no task of it could run.
        assert pressure.cpu.some is not None and pressure.cpu.some.total_us > 0
        assert pressure.cpu.full is None or pressure.cpu.full.total_us > 0


def test_memory_allocated_after_joining(base: workload.Base, host: Host) -> None:
    container = docker_container(base)
    container.limit_memory(256 * MiB)
    hog = container.spawn(workload.memory_hog_argv(64))
    assert hog.read_json()["ready"]
    memory = read(host, container).memory
    assert memory is not None and memory.usage_bytes is not None
    assert 64 * MiB <= memory.usage_bytes < 64 * MiB + 48 * MiB
    assert memory.rss_bytes is not None and 64 * MiB <= memory.rss_bytes < 64 * MiB + 16 * MiB
    assert memory.working_set_bytes is not None and memory.working_set_bytes >= 64 * MiB
    assert memory.limit_bytes == 256 * MiB
    assert memory.max_usage_bytes is None or memory.max_usage_bytes >= memory.usage_bytes


def test_odirect_io_with_a_throttle_rule(base: workload.Base, host: Host, io_dir: str) -> None:
    container = docker_container(base)
    device = workload.block_device_of(io_dir)
    container.throttle_io(device, 100_000_000_000, 100_000_000_000)
    with workload.io_file(io_dir) as path:
        _p, wrote, _r = container.run(workload.odirect_write_argv(path, 8))
        _p, readback, _r = container.run(workload.odirect_read_argv(path, 4))
    assert wrote.exitcode == 0 and readback.exitcode == 0
    blkio = read(host, container).blkio
    assert blkio is not None and blkio.available, blkio
    major, minor = (int(part) for part in device.split(":"))
    (counted,) = [d for d in blkio.devices if (d.major, d.minor) == (major, minor)]
    assert counted.write_bytes is not None and 8 * MiB <= counted.write_bytes < 9 * MiB
    assert counted.read_bytes is not None and 4 * MiB <= counted.read_bytes < 5 * MiB
    assert counted.write_ops is not None and counted.write_ops >= 8
    assert counted.read_ops is not None and counted.read_ops >= 4
    assert counted.device == os.path.basename(os.path.realpath(f"/sys/dev/block/{device}"))


def test_sleeping_children_and_pids_limit(base: workload.Base, host: Host) -> None:
    container = docker_container(base)
    container.limit_pids(32)
    sleepers = container.spawn(workload.sleepers_argv(7))
    assert len(sleepers.read_json()["children"]) == 7
    pids = read(host, container).pids
    assert pids is not None
    assert (pids.current, pids.limit) == (8, 32)


def test_pids_max_reached(base: workload.Base, host: Host) -> None:
    container = docker_container(base)
    container.limit_pids(4)
    forker = container.spawn(workload.forker_argv(8))
    report = forker.read_json()
    # The forker and 3 children fill pids.max; the other 5 forks fail (EAGAIN).
    assert (report["forked"], report["failed"]) == (3, 5), report
    assert report["errnos"] == [errno.EAGAIN]
    pids = read(host, container).pids
    assert pids is not None and (pids.current, pids.limit) == (4, 4)
    # The kernel's count of refused forks (pids.events, v1 and v2 alike).
    assert container.read("pids.events").split() == ["max", "5"]


def test_packets_in_a_private_netns(base: workload.Base, host: Host) -> None:
    container = docker_container(base)
    with workload.Netns() as netns:
        sender = container.spawn(workload.udp_sender_argv(100, 512), netns=netns)
        report = sender.read_json()
        assert report["received_locally"] == 100
        net = read(host, container).net
        assert net is not None
        assert net.netns == netns.inode
        assert net.shared_with_host is False
        assert net.pid is not None and net.pid in container.pids()
        lo = {iface.name: iface for iface in net.interfaces}["lo"]
        # A fresh namespace: lo carries exactly the test's datagrams, each with
        # 28 bytes of IP and UDP headers (loopback counts no link header).
        assert (lo.tx_packets, lo.rx_packets) == (100, 100)
        assert lo.tx_bytes == lo.rx_bytes == 100 * (512 + 28)
        container.kill_all()


def pod_container_layout(driver: str, pod_uid: str, container_id: str) -> str:
    """Where kubelet puts a burstable pod's container, with either cgroup driver."""
    if driver == "cgroupfs":
        return f"kubepods/burstable/pod{pod_uid}/{container_id}"
    pod = f"kubepods-burstable-pod{workload.systemd_pod_uid(pod_uid)}.slice"
    return f"kubepods.slice/kubepods-burstable.slice/{pod}/cri-containerd-{container_id}.scope"


@pytest.mark.parametrize("driver", ["cgroupfs", "systemd"])
def test_pod_containers_share_a_netns_and_veth_counts(
    base: workload.Base, host: Host, driver: str
) -> None:
    pod_uid = workload.random_pod_uid()
    first_id, second_id = workload.random_id(), workload.random_id()
    first = base.container(pod_container_layout(driver, pod_uid, first_id), container_id=first_id)
    second = base.container(
        pod_container_layout(driver, pod_uid, second_id), container_id=second_id
    )
    with workload.Netns() as pod, workload.Netns() as peer:
        veth = pod.veth_to(peer)
        receiver = docker_container(base)
        listening = receiver.spawn(workload.udp_receiver_argv(veth.b_ip, 0, 20), netns=peer)
        port = listening.read_json()["port"]
        second.spawn(workload.idle_argv(), netns=pod)
        sender = first.spawn(
            workload.udp_sender_argv(20, 1000, veth.b_ip, port, "veth0"), netns=pod
        )
        assert sender.read_json()["packets_sent"] == 20
        assert listening.read_json()["packets_received"] == 20
        samples = [read(host, first), read(host, second)]
        assert samples[0].net is not None and samples[1].net is not None
        assert samples[0].net.netns == samples[1].net.netns == pod.inode
        assert samples[0].pod_uid == samples[1].pod_uid == pod_uid
        assert samples[0].runtime == samples[1].runtime == "containerd"
        assert samples[0].cgroup == first.paths[primary_key(base)]
        sent = {i.name: i for i in samples[0].net.interfaces}["veth0"]
        got = read(host, receiver).net
        assert got is not None
        received = {i.name: i for i in got.interfaces}["veth0"]
        assert sent.tx_packets == received.rx_packets == 20
        # veth counts the 14-byte Ethernet header on top of IP and UDP's 28.
        assert sent.tx_bytes == received.rx_bytes == 20 * (1000 + 42)
        for container in (first, second, receiver):
            container.kill_all()


def test_net_moves_on_when_its_process_exits(base: workload.Base, host: Host) -> None:
    container = docker_container(base)
    with workload.Netns() as netns:
        first = container.spawn(workload.idle_argv(), netns=netns)
        second = container.spawn(workload.idle_argv(), netns=netns)
        for proc in (first, second):
            _wait_in_netns(proc.pid, netns)
        assert container.id is not None
        with host.open(container.id) as handle:
            before = handle.read().net
            assert before is not None and before.pid in (first.pid, second.pid)
            (first if before.pid == first.pid else second).kill()
            (first if before.pid == first.pid else second).wait()
            after = handle.read().net
            assert after is not None
            assert after.pid != before.pid and after.netns == before.netns == netns.inode
        container.kill_all()


def _wait_in_netns(pid: int, netns: workload.Netns, timeout: float = 30.0) -> None:
    """Wait until ``ip netns exec`` has moved ``pid`` into ``netns``."""
    deadline = time.monotonic() + timeout
    while os.readlink(f"/proc/{pid}/ns/net") != f"net:[{netns.inode}]":
        assert time.monotonic() < deadline, f"pid {pid} never entered {netns.name}"
        time.sleep(0.01)


@pytest.mark.parametrize("driver", ["cgroupfs", "systemd"])
def test_pid_spec_resolves_to_the_container(base: workload.Base, host: Host, driver: str) -> None:
    container_id = workload.random_id()
    layout = f"docker/{container_id}"
    if driver == "systemd":  # dockerd with the systemd cgroup driver
        layout = f"system.slice/docker-{container_id}.scope"
    container = base.container(layout, container_id=container_id)
    proc = container.spawn(workload.idle_argv())
    sample = host.read(f"pid:{proc.pid}")
    assert sample.id == container.id and sample.runtime == "docker"
    assert sample.cgroup == container.paths[primary_key(base)]
    assert sample.pids is not None and sample.pids.current == 1
    assert host.read(container_id[:12]).cgroup == sample.cgroup


def primary_key(base: workload.Base) -> str:
    """The hierarchy whose path cgstats reports as ``Sample.cgroup``."""
    return workload.CGROUP2_KEY if base.mode == "unified" else "memory"


def test_every_hierarchy_is_found_when_paths_differ(base: workload.Base, host: Host) -> None:
    # Here the memory hierarchy nests this process under a different parent
    # than the others; the container must still be found in every hierarchy.
    container = docker_container(base)
    assert container.id is not None
    with host.open(container.id) as handle:
        found = handle.directories
    for hierarchy in base.hierarchies:
        controllers = set(hierarchy.controllers) & {"cpu", "cpuacct", "memory", "blkio", "pids"}
        for controller in controllers:
            assert os.path.samefile(found[controller], container.dirs[hierarchy.key])
