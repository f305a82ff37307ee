"""cgstats.docker: Docker stats documents from the captured fixture trees.

Expected values come from the kernel files of the fixture trees, read here
directly (not through cgstats' readers), converted the way dockerd and
containerd convert them. Every document also goes through Docker's own API
type (tests/docker_api, Go): it must decode with unknown keys refused and
re-encode to itself, and the figures ``docker stats`` computes from it must
match cgstats' rates.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import attrs
import docker_api
import fixture_trees
import pytest
import samples

from cgstats import Host, docker
from cgstats.errors import ParseError
from cgstats.model import Sample
from cgstats.rates import compute
from cgstats.readers.system import parse_mem_total, parse_system_cpu

pytestmark = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")

GiB = 1 << 30
MACHINE = 2 * GiB  # a host memory size above the fixtures' 256 MiB limits
TOP_KEYS = [
    "read",
    "preread",
    "pids_stats",
    "blkio_stats",
    "num_procs",
    "storage_stats",
    "cpu_stats",
    "precpu_stats",
    "memory_stats",
    "id",
]
ZERO_CPU = {
    "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
    "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
}


@pytest.fixture(params=fixture_trees.available() or ["none"])
def tree(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def checker(tmp_path_factory: pytest.TempPathFactory) -> str:
    return docker_api.binary(tmp_path_factory)


def kernel_file(tree: str, hierarchy: str, name: str) -> str:
    """A file of the captured "main" container, as the kernel wrote it."""
    data = fixture_trees.capture(tree)
    entry = fixture_trees.container(data, "main")
    with open(os.path.join(fixture_trees.root_path(data, entry, hierarchy), name)) as handle:
        return handle.read()


def flat(text: str) -> dict[str, int]:
    return {key: int(value) for key, value in (line.split() for line in text.splitlines())}


@pytest.fixture
def frame(tree: str) -> Iterator[docker.Frame]:
    """The main container's frame as StatsReader reads it (no /proc/stat in the tree)."""
    data = fixture_trees.capture(tree)
    with Host(fixture_trees.root(tree)) as host, docker.StatsReader(host) as reader:
        yield reader.frame(fixture_trees.container(data, "main")["id"])


def with_system(frame: docker.Frame, system_ns: int, online: int = 2) -> docker.Frame:
    return attrs.evolve(frame, system_cpu_ns=system_ns, online_cpus=online)


# -- the pure readers -------------------------------------------------------------


def test_proc_stat_of_this_kernel() -> None:
    with open("/proc/stat") as handle:
        text = handle.read()
    ticks, online = parse_system_cpu(text)
    first = text.splitlines()[0].split()
    assert first[0] == "cpu"
    assert ticks == sum(int(field) for field in first[1:8])
    assert online == sum(1 for line in text.splitlines() if line[:3] == "cpu" and line[3].isdigit())
    assert online >= len(os.sched_getaffinity(0))  # this process runs on online CPUs only


def test_meminfo_of_this_kernel() -> None:
    with open("/proc/meminfo") as handle:
        text = handle.read()
    kib = int(next(line for line in text.splitlines() if line.startswith("MemTotal:")).split()[1])
    assert parse_mem_total(text) == kib * 1024


@pytest.mark.parametrize(
    "text",
    ["", "intr 1 2\n", "cpu  1 2 3\n", "cpu  1 2 3 4 5 6 x\n", "cpu  1 2 3 4 5 6 7\ncpuX 1\n"],
)
def test_bad_proc_stat_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_system_cpu(text)


@pytest.mark.parametrize("text", ["", "MemFree: 1 kB\n", "MemTotal: 12\n", "MemTotal: x kB\n"])
def test_bad_meminfo_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_mem_total(text)


def test_blkio_entries_as_containerd_reads_them() -> None:
    text = "8:0 Read 10\n8:0 Write 5\n8:0 Total 15\n8:16 7\nTotal 15\n"
    assert docker.parse_blkio_entries(text, "f") == (
        (8, 0, "Read", 10),
        (8, 0, "Write", 5),
        (8, 0, "Total", 15),
        (8, 16, "", 7),
    )
    for bad in ("8:0 Read\n", "8:0 Read x\n", "8:0 a b c d\n"):
        with pytest.raises(ParseError):
            docker.parse_blkio_entries(bad, "f")
    with pytest.raises(ParseError):
        docker.parse_cpuacct_stat("user 1\n")


def test_times_as_go_marshals_them() -> None:
    assert docker.format_time(None) == "0001-01-01T00:00:00Z"
    assert docker.format_time(0.0) == "1970-01-01T00:00:00Z"
    assert docker.format_time(1737035722.165) == "2025-01-16T13:55:22.165Z"
    assert docker.format_time(1737035722.000001) == "2025-01-16T13:55:22.000001Z"


# -- one sample: the one-shot document ----------------------------------------


def test_one_shot_document_has_the_api_shape(tree: str, frame: docker.Frame) -> None:
    doc = docker.document(with_system(frame, 10**12), machine_memory_bytes=MACHINE)
    assert list(doc) == TOP_KEYS  # no name (unknown), no networks (lo only)
    assert doc["preread"] == "0001-01-01T00:00:00Z"
    assert doc["precpu_stats"] == ZERO_CPU
    assert doc["id"] == fixture_trees.container(fixture_trees.capture(tree), "main")["id"]
    assert doc["read"] == docker.format_time(frame.sample.timestamp)
    assert (doc["num_procs"], doc["storage_stats"]) == (0, {})
    assert doc["cpu_stats"]["system_cpu_usage"] == 10**12
    assert doc["cpu_stats"]["online_cpus"] == 2
    assert doc["pids_stats"] == {
        "current": int(kernel_file(tree, primary(tree, "pids"), "pids.current")),
        "limit": int(kernel_file(tree, primary(tree, "pids"), "pids.max")),
    }


def primary(tree: str, controller: str) -> str:
    return "cgroup2" if fixture_trees.capture(tree)["mode"] == "unified" else controller


def test_v1_document_from_the_v1_files(tree: str, frame: docker.Frame) -> None:
    if frame.sample.cgroup_version != 1:
        pytest.skip("a cgroup v1 tree")
    doc = docker.document(frame, machine_memory_bytes=MACHINE)
    cpu = doc["cpu_stats"]
    ticks = flat(kernel_file(tree, "cpuacct", "cpuacct.stat"))
    stat = flat(kernel_file(tree, "cpu", "cpu.stat"))
    assert cpu["cpu_usage"] == {
        "total_usage": int(kernel_file(tree, "cpuacct", "cpuacct.usage")),
        "percpu_usage": [
            int(v) for v in kernel_file(tree, "cpuacct", "cpuacct.usage_percpu").split()
        ],
        # containerd: cpuacct.stat ticks * 10^9 / 100, not cpuacct.usage_user
        "usage_in_kernelmode": ticks["system"] * 10_000_000,
        "usage_in_usermode": ticks["user"] * 10_000_000,
    }
    assert cpu["throttling_data"] == {
        "periods": stat["nr_periods"],
        "throttled_periods": stat["nr_throttled"],
        "throttled_time": stat["throttled_time"],
    }
    assert "system_cpu_usage" not in cpu  # the tree has no /proc/stat
    assert any("proc/stat" in problem for problem in frame.errors)
    memory = doc["memory_stats"]
    memory_stat = flat(kernel_file(tree, "memory", "memory.stat"))
    assert set(memory) == {"usage", "max_usage", "stats", "limit"}  # failcnt 0 is left out
    assert memory["usage"] == int(kernel_file(tree, "memory", "memory.usage_in_bytes"))
    assert memory["max_usage"] == int(kernel_file(tree, "memory", "memory.max_usage_in_bytes"))
    assert memory["limit"] == int(kernel_file(tree, "memory", "memory.limit_in_bytes"))
    assert list(memory["stats"]) == sorted(docker.V1_MEMORY_KEYS)
    assert memory["stats"] == {key: memory_stat.get(key, 0) for key in docker.V1_MEMORY_KEYS}
    blkio = doc["blkio_stats"]
    assert list(blkio) == list(docker.BLKIO_KEYS)
    for key, name in (
        ("io_service_bytes_recursive", "blkio.throttle.io_service_bytes"),
        ("io_serviced_recursive", "blkio.throttle.io_serviced"),
    ):
        lines = [line.split() for line in kernel_file(tree, "blkio", name).splitlines()]
        assert blkio[key] == [
            {
                "major": int(d.split(":")[0]),
                "minor": int(d.split(":")[1]),
                "op": op,
                "value": int(v),
            }
            for d, op, v in (line for line in lines if len(line) == 3)
        ]
        assert [entry["op"] for entry in blkio[key]][:6] == [
            "Read",
            "Write",
            "Sync",
            "Async",
            "Discard",
            "Total",
        ]
    assert all(blkio[key] == [] for key in docker.BLKIO_KEYS[2:])


def test_v2_document_from_the_v2_files(tree: str, frame: docker.Frame) -> None:
    if frame.sample.cgroup_version != 2:
        pytest.skip("a cgroup v2 tree")
    doc = docker.document(frame, machine_memory_bytes=MACHINE)
    stat = flat(kernel_file(tree, "cgroup2", "cpu.stat"))
    assert doc["cpu_stats"]["cpu_usage"] == {  # no percpu_usage on v2
        "total_usage": stat["usage_usec"] * 1000,
        "usage_in_kernelmode": stat["system_usec"] * 1000,
        "usage_in_usermode": stat["user_usec"] * 1000,
    }
    assert doc["cpu_stats"]["throttling_data"] == {
        "periods": stat["nr_periods"],
        "throttled_periods": stat["nr_throttled"],
        "throttled_time": stat["throttled_usec"] * 1000,
    }
    memory = doc["memory_stats"]
    memory_stat = flat(kernel_file(tree, "cgroup2", "memory.stat"))
    events = flat(kernel_file(tree, "cgroup2", "memory.events"))
    assert "max_usage" not in memory
    assert memory.get("failcnt", 0) == events["oom"]
    assert memory["usage"] == int(kernel_file(tree, "cgroup2", "memory.current"))
    assert memory["limit"] == int(kernel_file(tree, "cgroup2", "memory.max"))
    assert list(memory["stats"]) == sorted(docker.V2_MEMORY_KEYS)
    assert memory["stats"] == {key: memory_stat.get(key, 0) for key in docker.V2_MEMORY_KEYS}
    blkio = doc["blkio_stats"]
    expected = []
    for line in kernel_file(tree, "cgroup2", "io.stat").splitlines():
        device, *pairs = line.split()
        values = dict(pair.split("=") for pair in pairs)
        major, minor = map(int, device.split(":"))
        for op, key in (("read", "rbytes"), ("write", "wbytes")):
            expected.append({"major": major, "minor": minor, "op": op, "value": int(values[key])})
    assert blkio["io_service_bytes_recursive"] == expected
    assert all(blkio[key] is None for key in docker.BLKIO_KEYS[1:])


# -- limits, pids and networks --------------------------------------------------


def test_unlimited_memory_is_the_machine_memory(frame: docker.Frame) -> None:
    memory = frame.sample.memory
    assert memory is not None
    unlimited = attrs.evolve(frame.sample, memory=attrs.evolve(memory, limit_bytes=None))
    capped = docker.memory_stats(unlimited, frame.sample.cgroup_version, MACHINE)
    assert capped["limit"] == MACHINE
    raw = docker.memory_stats(unlimited, frame.sample.cgroup_version, None)
    # The kernel's "no limit" as dockerd passes it on when it knows no MemTotal.
    assert raw["limit"] == (9223372036854771712 if frame.sample.cgroup_version == 1 else 2**64 - 1)
    small = docker.memory_stats(frame.sample, frame.sample.cgroup_version, 64 << 20)
    assert small["limit"] == 64 << 20  # a limit above the host's memory is capped too


def test_unlimited_pids(frame: docker.Frame) -> None:
    pids = frame.sample.pids
    assert pids is not None
    unlimited = attrs.evolve(frame.sample, pids=attrs.evolve(pids, limit=None))
    assert docker.pids_stats(unlimited, 1) == {"current": pids.current}
    assert docker.pids_stats(unlimited, 2) == {"current": pids.current, "limit": 2**64 - 1}
    assert docker.pids_stats(attrs.evolve(frame.sample, pids=None), 2) == {}


def test_networks_leave_lo_and_the_host_namespace_out(frame: docker.Frame) -> None:
    sample = samples.with_interface(
        samples.with_interface(frame.sample, "eth1", 7, 8), "eth0", 5, 6
    )
    found = docker.networks(sample)
    assert found is not None and list(found) == ["eth0", "eth1"]
    assert found["eth0"] == {
        "rx_bytes": 5,
        "rx_packets": 1,
        "rx_errors": 0,
        "rx_dropped": 0,
        "tx_bytes": 6,
        "tx_packets": 1,
        "tx_errors": 0,
        "tx_dropped": 0,
    }
    assert docker.networks(frame.sample) is None  # lo only
    assert sample.net is not None
    host = attrs.evolve(sample, net=attrs.evolve(sample.net, shared_with_host=True))
    assert docker.networks(host) is None
    assert docker.networks(attrs.evolve(sample, net=None)) is None


def test_v1_document_from_a_sample_alone(frame: docker.Frame) -> None:
    """Without the raw v1 files (a Sample from the Collector), the sample's own figures."""
    if frame.sample.cgroup_version != 1:
        pytest.skip("a cgroup v1 tree")
    bare = docker.Frame(frame.sample)
    doc = docker.document(bare)
    cpu = frame.sample.cpu
    blkio = frame.sample.blkio
    assert cpu is not None and blkio is not None
    usage = doc["cpu_stats"]["cpu_usage"]
    assert (usage["usage_in_usermode"], usage["usage_in_kernelmode"]) == (
        cpu.user_ns,
        cpu.system_ns,
    )
    device = blkio.devices[0]
    assert doc["blkio_stats"]["io_service_bytes_recursive"] == [
        {"major": device.major, "minor": device.minor, "op": op, "value": value}
        for op, value in (
            ("Read", device.read_bytes),
            ("Write", device.write_bytes),
            ("Discard", device.discard_bytes),
            (
                "Total",
                (device.read_bytes or 0) + (device.write_bytes or 0) + (device.discard_bytes or 0),
            ),
        )
    ]
    assert doc["blkio_stats"]["io_queue_recursive"] == []


def test_version_override(frame: docker.Frame) -> None:
    other = 2 if frame.sample.cgroup_version == 1 else 1
    doc = docker.document(frame, cgroup_version=other)
    keys = docker.V1_MEMORY_KEYS if other == 1 else docker.V2_MEMORY_KEYS
    assert list(doc["memory_stats"]["stats"]) == sorted(keys)
    with pytest.raises(ValueError):
        docker.document(frame, cgroup_version=3)


# -- two samples, through Docker's API type and docker stats' formulas -----------


def two_documents(frame: docker.Frame) -> list[dict[str, Any]]:
    """One-shot, then one second later with exact deltas: 0.25 s CPU over 2 s of 2 CPUs."""
    first = with_system(frame, 10**12)
    later = samples.with_interface(
        samples.advance(
            frame.sample, cpu_ns=250_000_000, read_bytes=4096, write_bytes=8192, rx_bytes=0
        ),
        "eth0",
        1500,
        700,
    )
    # The raw v1 blkio lists are of the captured files: the advanced sample's own figures instead.
    second = attrs.evolve(first, sample=later, system_cpu_ns=10**12 + 2 * 10**9, blkio_lists=None)
    return [
        docker.document(first, machine_memory_bytes=MACHINE),
        docker.document(second, first, name="/web", machine_memory_bytes=MACHINE),
    ]


def test_docker_decodes_every_document_to_itself(frame: docker.Frame, checker: str) -> None:
    sample = frame.sample
    assert sample.memory is not None and sample.pids is not None
    variants = [
        *two_documents(frame),
        docker.document(docker.Frame(sample)),  # no host figures at all
        docker.document(frame, cgroup_version=3 - sample.cgroup_version),
        docker.document(
            docker.Frame(
                attrs.evolve(
                    sample,
                    memory=attrs.evolve(sample.memory, limit_bytes=None),
                    pids=attrs.evolve(sample.pids, limit=None),
                    blkio=None,
                    cpu=None,
                )
            )
        ),
    ]
    results = docker_api.check(checker, variants)
    assert all(result["ok"] for result in results), results


def test_the_checker_refuses_what_go_would_not_write(frame: docker.Frame, checker: str) -> None:
    good = docker.document(frame)
    misspelt = {("cpu_stat" if key == "cpu_stats" else key): value for key, value in good.items()}
    zero_failcnt = json.loads(json.dumps(good))
    zero_failcnt["memory_stats"]["failcnt"] = 0  # Go leaves zeros out (omitempty)
    no_lists = json.loads(json.dumps(good))
    del no_lists["blkio_stats"]["sectors_recursive"]
    results = docker_api.check(checker, [misspelt, zero_failcnt, no_lists])
    assert [result["ok"] for result in results] == [False, False, False], results
    assert "unknown field" in results[0]["error"]
    assert "failcnt" in results[1]["error"] and "sectors_recursive" in results[2]["error"]


def test_docker_stats_figures_match_cgstats_rates(frame: docker.Frame, checker: str) -> None:
    documents = two_documents(frame)
    go_figures = [result["cli"] for result in docker_api.check(checker, documents)]
    for doc, figures in zip(documents, go_figures):
        python = docker_api.cli_figures(doc)
        assert python == pytest.approx(figures, rel=1e-12), (python, figures)
    one_shot, streamed = go_figures
    before = frame.sample
    after = samples.with_interface(
        samples.advance(before, cpu_ns=250_000_000, read_bytes=4096, write_bytes=8192),
        "eth0",
        1500,
        700,
    )
    # 2 s of 2 CPUs elapsed on the host while cgstats measured 1 s between the reads.
    rates, backwards = compute(before, after, interval_s=1.0, host_cpus=2)
    assert not backwards and rates.cpu_cores is not None
    # docker: Δtotal / Δsystem * online * 100 = 0.25 / 2 * 2 * 100 = 25 % (of one CPU);
    # cgstats: 0.25 CPU-s over 1 s = 0.25 cores; they agree when Δsystem = online * interval.
    assert streamed["cpu_percent"] == pytest.approx(25.0, rel=1e-12)
    assert streamed["cpu_percent"] == pytest.approx(rates.cpu_cores * 100 * 2 * 1.0 / 2.0)
    assert one_shot["cpu_percent"] > 0  # against zero precpu: usage since start over uptime
    assert before.blkio is not None  # the kernel's lists (v1) or io.stat (v2) give the same bytes
    assert one_shot["block_read"] == sum(d.read_bytes or 0 for d in before.blkio.devices)
    assert one_shot["block_write"] == sum(d.write_bytes or 0 for d in before.blkio.devices)
    memory = after.memory
    assert memory is not None and memory.working_set_bytes is not None
    assert streamed["mem_usage"] == memory.working_set_bytes
    assert streamed["mem_limit"] == memory.limit_bytes
    assert streamed["mem_percent"] == pytest.approx(
        memory.working_set_bytes / memory.limit_bytes * 100, rel=1e-12
    )
    assert after.blkio is not None and after.pids is not None
    assert streamed["block_read"] == sum(d.read_bytes or 0 for d in after.blkio.devices)
    assert streamed["block_write"] == sum(d.write_bytes or 0 for d in after.blkio.devices)
    assert (streamed["net_rx"], streamed["net_tx"]) == (1500, 700)
    assert streamed["pids_current"] == after.pids.current


# -- the reader: one frame read together, previous frames kept ---------------------


def test_reader_streams_against_the_previous_read(tree: str, tmp_path: Any) -> None:
    copy = str(tmp_path / "tree")
    fixture_trees.copy_subset(tree, copy)
    # The host's own /proc/stat and meminfo, beside the captured cgroups.
    for name in ("stat", "meminfo"):
        with open(f"/proc/{name}") as source, open(os.path.join(copy, "proc", name), "w") as out:
            out.write(source.read())
    with open("/proc/meminfo") as handle:
        mem_total = parse_mem_total(handle.read())
    data = fixture_trees.capture(tree)
    container_id = fixture_trees.container(data, "main")["id"]
    with Host(copy) as host, docker.StatsReader(host, names={container_id: "/web"}) as reader:
        assert reader.machine_memory_bytes == mem_total
        first = reader.read(container_id)
        second = reader.read(container_id)
        again = reader.read(container_id, one_shot=True)
    assert first["preread"] == docker.ZERO_TIME and first["precpu_stats"] == ZERO_CPU
    assert second["preread"] == first["read"]
    assert second["precpu_stats"] == first["cpu_stats"]
    assert again["preread"] == docker.ZERO_TIME
    assert first["name"] == "/web"
    with open(os.path.join(copy, "proc", "stat")) as handle:
        ticks, online = parse_system_cpu(handle.read())
    assert first["cpu_stats"]["system_cpu_usage"] == ticks * 10_000_000
    assert first["cpu_stats"]["online_cpus"] == online


def test_reader_names_docker_containers_from_their_config(tree: str, tmp_path: Any) -> None:
    copy = str(tmp_path / "tree")
    fixture_trees.copy_subset(tree, copy)
    data = fixture_trees.capture(tree)
    entry = fixture_trees.container(data, "main")
    config = os.path.join(copy, "var/lib/docker/containers", entry["id"])
    os.makedirs(config)
    with open(os.path.join(config, "config.v2.json"), "w") as handle:
        json.dump({"Name": "/web", "ID": entry["id"]}, handle)
    with Host(copy) as host, docker.StatsReader(host) as reader:
        assert reader.name(entry["id"], "docker") == "/web"
        assert reader.name("0" * 64, "docker") is None
        assert reader.read(entry["id"])["name"] == "/web"


def test_a_sample_without_sections_is_still_a_document(frame: docker.Frame) -> None:
    empty: Sample = attrs.evolve(
        frame.sample, cpu=None, memory=None, blkio=None, net=None, pids=None, pressure=None
    )
    doc = docker.document(docker.Frame(empty))
    assert doc["cpu_stats"] == ZERO_CPU
    assert doc["pids_stats"] == {}
    assert doc["memory_stats"] == (
        {}
        if empty.cgroup_version == 1
        else {"stats": dict.fromkeys(sorted(docker.V2_MEMORY_KEYS), 0)}
    )
    assert "networks" not in doc


def test_reader_stream_chains_previous_reads(tree: str, tmp_path: Any) -> None:
    copy = str(tmp_path / "tree")
    fixture_trees.copy_subset(tree, copy)
    container_id = fixture_trees.container(fixture_trees.capture(tree), "main")["id"]
    with Host(copy) as host, docker.StatsReader(host) as reader:
        with pytest.raises(ValueError):
            next(reader.stream(container_id, interval_s=0))
        documents = list(reader.stream(container_id, interval_s=0.01, count=3))
    assert len(documents) == 3
    assert documents[0]["preread"] == docker.ZERO_TIME
    assert [d["preread"] for d in documents[1:]] == [d["read"] for d in documents[:2]]
    assert documents[2]["precpu_stats"] == documents[1]["cpu_stats"]


def test_a_bad_v1_file_is_reported_and_the_sample_fills_in(tree: str, tmp_path: Any) -> None:
    data = fixture_trees.capture(tree)
    if data["mode"] == "unified":
        pytest.skip("the raw v1 files exist on v1 hosts only")
    copy = str(tmp_path / "tree")
    fixture_trees.copy_subset(tree, copy)
    entry = fixture_trees.container(data, "main")
    cpuacct = os.path.join(copy, entry["dirs"]["cpuacct"].lstrip("/"), "cpuacct.stat")
    with open(cpuacct, "w") as handle:
        handle.write("user many\nsystem 7\n")
    with Host(copy) as host, docker.StatsReader(host) as reader:
        frame = reader.frame(entry["id"])
    assert any(problem.startswith("cpuacct.stat:") for problem in frame.errors), frame.errors
    assert frame.cpuacct_ticks is None and frame.blkio_lists is not None
    cpu = frame.sample.cpu
    assert cpu is not None
    usage = docker.document(frame)["cpu_stats"]["cpu_usage"]
    assert usage["usage_in_usermode"] == cpu.user_ns
    assert usage["total_usage"] == cpu.usage_ns
