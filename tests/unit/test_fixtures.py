"""Readers, resolution and the CLI against trees captured from real kernels.

Every expectation comes from capture.json: what tests/fixtures/capture.py
built and measured (CPU time from rusage, bytes allocated and written,
processes, packets) while the kernel's files were copied.
"""

from __future__ import annotations

import json
from typing import Any

import fixture_trees
import pytest

from cgstats import Host, dump
from cgstats.errors import ContainerNotFound
from cgstats.model import Sample

MiB = 1 << 20
CONTRACT = {
    "id",
    "runtime",
    "cgroup",
    "cgroup_version",
    "timestamp",
    "cpu",
    "memory",
    "blkio",
    "net",
    "pids",
    "pressure",
}
CPU_KEYS = {
    "usage_ns",
    "user_ns",
    "system_ns",
    "percpu_ns",
    "periods",
    "throttled_periods",
    "throttled_ns",
    "limit_cores",
    "weight",
    "shares",
}
MEMORY_KEYS = {
    "usage_bytes",
    "limit_bytes",
    "soft_limit_bytes",
    "high_bytes",
    "low_bytes",
    "working_set_bytes",
    "rss_bytes",
    "cache_bytes",
    "mapped_file_bytes",
    "swap_bytes",
    "max_usage_bytes",
    "failcnt",
    "oom_events",
    "oom_kills",
    "stat",
}

pytestmark = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")


@pytest.fixture(params=fixture_trees.available() or ["none"])
def tree(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def data(tree: str) -> dict[str, Any]:
    return fixture_trees.capture(tree)


@pytest.fixture
def host(tree: str) -> Host:
    with Host(fixture_trees.root(tree)) as opened:
        yield opened  # type: ignore[misc]


def read(host: Host, data: dict[str, Any], name: str) -> Sample:
    return host.read(fixture_trees.container(data, name)["id"])


def test_mode_and_version(host: Host, data: dict[str, Any]) -> None:
    assert host.mode == data["mode"]
    assert host.cgroup_version == (2 if data["mode"] == "unified" else 1)


def test_enumeration_finds_every_container_and_nothing_else(
    host: Host, data: dict[str, Any]
) -> None:
    found = {(ref.id, ref.runtime, ref.cgroup) for ref in host.containers()}
    key = fixture_trees.primary_key(data)
    expected = {
        (
            c["id"],
            fixture_trees.RUNTIME_ALIASES.get(c["runtime"], c["runtime"]),
            c["cgroup_paths"][key],
        )
        for c in data["containers"]
        if c["expect_container"]
    }
    assert found == expected


def test_pod_uid_from_both_kubernetes_layouts(host: Host, data: dict[str, Any]) -> None:
    for name in ("k8s-burstable", "pod-a", "k8s-systemd-docker"):
        entry = fixture_trees.container(data, name)
        sample = host.read(entry["id"])
        uid = sample.pod_uid
        assert uid is not None and (
            f"pod{uid}" in entry["layout"] or f"pod{uid.replace('-', '_')}" in entry["layout"]
        )


def test_main_container_readings_match_the_workload(host: Host, data: dict[str, Any]) -> None:
    entry = fixture_trees.container(data, "main")
    expected = entry["expected"]
    sample = host.read(entry["id"][:12])
    assert sample.errors == ()
    assert sample.id == entry["id"] and sample.runtime == "docker"
    assert sample.cgroup == entry["cgroup_paths"][fixture_trees.primary_key(data)]

    cpu = sample.cpu
    assert cpu is not None and cpu.usage_ns is not None
    # Every exited workload ran inside; the live processes add what their
    # /proc/<pid>/stat showed at capture time.
    assert expected["cpu_ns_min"] <= cpu.usage_ns <= expected["cpu_ns_max"]
    assert cpu.user_ns is not None and cpu.system_ns is not None
    assert abs(cpu.user_ns + cpu.system_ns - cpu.usage_ns) < 100_000_000
    assert cpu.limit_cores == expected["cpu_limit_cores"]
    assert cpu.periods and cpu.throttled_periods  # 0.5 s of CPU under a 0.5-core quota
    assert cpu.throttled_ns and cpu.throttled_ns > 0
    # cpu.stat is kept whole, keys cgstats has no field for included.
    assert cpu.stat is not None and cpu.stat["nr_throttled"] == cpu.throttled_periods
    assert "nr_bursts" in cpu.stat

    memory = sample.memory
    assert memory is not None and memory.usage_bytes is not None
    allocated = expected["memory_bytes_allocated"]
    assert allocated <= memory.usage_bytes < allocated + 64 * MiB
    assert memory.rss_bytes is not None and allocated <= memory.rss_bytes < allocated + 32 * MiB
    assert memory.working_set_bytes is not None
    assert memory.working_set_bytes <= memory.usage_bytes
    assert memory.limit_bytes == expected["memory_limit_bytes"]
    assert (memory.stat is not None and memory.stat.get("pgfault", 0) > 0) or (
        memory.stat is not None and memory.stat.get("total_pgfault", 0) > 0
    )

    blkio = sample.blkio
    assert blkio is not None and blkio.available, blkio
    major, minor = (int(part) for part in expected["io_device"].split(":"))
    (device,) = [d for d in blkio.devices if (d.major, d.minor) == (major, minor)]
    assert device.device == "vda"
    written, read_ = expected["io_bytes_written"], expected["io_bytes_read"]
    # O_DIRECT bytes reach the device as written; filesystem metadata adds a little.
    assert device.write_bytes is not None and written <= device.write_bytes < written + MiB
    assert device.read_bytes is not None and read_ <= device.read_bytes < read_ + MiB
    assert device.write_ops and device.read_ops

    assert sample.pids is not None
    assert sample.pids.current == expected["nr_processes"]
    assert sample.pids.limit == expected["pids_max"]

    net = sample.net
    assert net is not None and net.netns == data["netns"]["main"]["inode"]
    assert net.shared_with_host is False
    lo = {iface.name: iface for iface in net.interfaces}["lo"]
    delta = expected["net_dev_delta"]
    assert (lo.rx_packets, lo.rx_bytes, lo.tx_packets, lo.tx_bytes) == (
        delta["rx_packets"],
        delta["rx_bytes"],
        delta["tx_packets"],
        delta["tx_bytes"],
    )

    assert sample.pressure is not None
    assert sample.pressure.cpu is not None and sample.pressure.cpu.some is not None


def test_pod_containers_share_one_netns(host: Host, data: dict[str, Any]) -> None:
    a, b = read(host, data, "pod-a"), read(host, data, "pod-b")
    assert a.net is not None and b.net is not None
    assert a.net.netns == b.net.netns == data["netns"]["pod"]["inode"]
    sender = fixture_trees.container(data, "pod-a")["workloads"][0]
    veth = {iface.name: iface for iface in a.net.interfaces}[sender["iface"]]
    assert veth.tx_packets >= sender["packets_sent"]
    receiver = read(host, data, "docker-systemd")
    assert receiver.net is not None and receiver.net.netns == data["netns"]["peer"]["inode"]
    peer = {iface.name: iface for iface in receiver.net.interfaces}["veth0"]
    assert (
        peer.rx_packets
        >= fixture_trees.container(data, "docker-systemd")["expected"]["net_packets_received"]
    )


def test_host_network_is_flagged(host: Host, data: dict[str, Any]) -> None:
    sample = read(host, data, "podman")
    assert sample.net is not None and sample.net.shared_with_host is True


def test_container_without_process_has_no_net(host: Host, data: dict[str, Any]) -> None:
    sample = read(host, data, "k8s-systemd-containerd-empty")
    assert sample.net is None
    assert sample.pids is not None and sample.pids.current == 0


def test_oom_kill_is_counted(host: Host, data: dict[str, Any]) -> None:
    entry = fixture_trees.container(data, "oom")
    if not any(w["kind"] == "memory_oom" for w in entry["workloads"]):
        pytest.skip("the capture could not set a memory limit here")
    memory = host.read(entry["id"]).memory
    assert memory is not None
    assert memory.limit_bytes == 16 * MiB
    assert memory.oom_kills is not None and memory.oom_kills >= 1
    if data["mode"] == "unified":
        assert memory.oom_events is not None and memory.oom_events >= 1
        assert memory.events is not None and memory.events["max"] > 0
    else:
        assert memory.oom_events is None  # v1 does not count OOM events


def test_pids_limit(host: Host, data: dict[str, Any]) -> None:
    entry = fixture_trees.container(data, "pids-limit")
    pids = host.read(entry["id"]).pids
    assert pids is not None
    assert pids.limit == entry["expected"]["pids_max"]
    assert pids.current == entry["expected"]["nr_processes"]


def test_unlimited_is_none_and_absent_is_none(host: Host, data: dict[str, Any]) -> None:
    sample = read(host, data, "podman")
    assert sample.memory is not None and sample.memory.limit_bytes is None
    assert sample.pids is not None and sample.pids.limit is None
    assert sample.cpu is not None and sample.cpu.limit_cores is None
    if data["mode"] == "unified":
        assert sample.cpu.percpu_ns is None and sample.cpu.shares is None
        assert sample.memory.failcnt is None and sample.memory.soft_limit_bytes is None
    else:
        assert sample.cpu.weight is None and sample.memory.high_bytes is None


def test_v1_blkio_without_any_counted_disk_is_unavailable_with_reason(
    host: Host, data: dict[str, Any]
) -> None:
    if data["mode"] == "unified":
        pytest.skip("v2 io.stat counts every device")
    sample = read(host, data, "nothrottle")
    blkio = sample.blkio
    assert blkio is not None
    active = data["io"]["v1_throttle_active_devices_at_start"]
    if active:
        # The disk was already counted host-wide: IO shows without a rule of its own.
        assert blkio.available and blkio.devices
    else:
        assert not blkio.available and blkio.reason and "throttle rule" in blkio.reason


def test_json_contract_keys(host: Host, data: dict[str, Any]) -> None:
    document = read(host, data, "main").to_dict()
    assert document.keys() >= CONTRACT
    assert document["cpu"].keys() >= CPU_KEYS
    assert document["memory"].keys() >= MEMORY_KEYS
    assert {"available", "reason", "devices"} <= document["blkio"].keys()
    assert {
        "major",
        "minor",
        "device",
        "read_bytes",
        "write_bytes",
        "read_ops",
        "write_ops",
    } <= document["blkio"]["devices"][0].keys()
    assert {"netns", "shared_with_host", "interfaces"} <= document["net"].keys()
    assert {
        "name",
        "rx_bytes",
        "rx_packets",
        "rx_errors",
        "rx_dropped",
        "tx_bytes",
        "tx_packets",
        "tx_errors",
        "tx_dropped",
    } <= document["net"]["interfaces"][0].keys()
    assert document["pids"].keys() >= {"current", "limit"}
    for resource in ("cpu", "memory", "io"):
        for kind in ("some", "full"):
            line = document["pressure"][resource][kind]
            assert line.keys() == {"avg10", "avg60", "avg300", "total_us"}
    json.dumps(document)  # plain JSON types only


def test_not_containers_are_refused_by_id(host: Host, data: dict[str, Any]) -> None:
    cron = fixture_trees.container(data, "cron")
    # A plain cgroup can still be read by path; it has no ID.
    sample = host.read("/" + cron["cgroup_paths"][fixture_trees.primary_key(data)].lstrip("/"))
    assert sample.runtime is None and sample.id == sample.cgroup
    with pytest.raises(ContainerNotFound):
        host.read("0" * 64)


def _dump(capsys: pytest.CaptureFixture[str], tree: str, *args: str) -> str:
    """stdout of ``python -m cgstats.dump --root <tree> ARGS`` (run in-process)."""
    assert dump.main(["--root", fixture_trees.root(tree), *args]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out


def test_cli_json_all(capsys: pytest.CaptureFixture[str], tree: str, data: dict[str, Any]) -> None:
    documents = [json.loads(line) for line in _dump(capsys, tree, "--all", "--json").splitlines()]
    assert {d["id"] for d in documents} == {
        c["id"] for c in data["containers"] if c["expect_container"]
    }
    assert all(d.keys() >= CONTRACT for d in documents)


def test_cli_report_names_sections(
    capsys: pytest.CaptureFixture[str], tree: str, data: dict[str, Any]
) -> None:
    main = fixture_trees.container(data, "main")
    output = _dump(capsys, tree, main["short_id"])
    for section in ("cpu", "memory", "blkio", "net", "pids", "pressure"):
        assert f"  {section} " in output
    assert "limit 0.5 cores" in output


def test_v1_throttle_file_without_device_lines(host: Host, data: dict[str, Any]) -> None:
    if data["mode"] == "unified":
        pytest.skip("v1 only")
    from cgstats.readers import blkio

    entry = fixture_trees.container(data, "podman")  # did no IO
    directory = fixture_trees.root_path(data, entry, "blkio")
    texts = {}
    for name in blkio.V1_VARIANTS[2]:
        with open(f"{directory}/{name}", encoding="ascii") as handle:
            texts[name] = handle.read()
    assert blkio.lists_no_device(texts[blkio.V1_VARIANTS[2][0]])
    unknown = blkio.build_v1(texts, [], lambda major, minor: None, throttle_counted=False)
    assert not unknown.available and unknown.reason == blkio.NO_THROTTLE_ACCOUNTING
    idle = blkio.build_v1(texts, [], lambda major, minor: None, throttle_counted=True)
    assert idle.available and idle.devices == ()
