"""Docker stats documents of a live container, read the way ``docker stats`` reads them.

One container: a burner held at half a core by a CFS quota that first fills
32 MiB, under a 128 MiB limit. Two documents a second and a half apart go
through Docker's API type and docker/cli's formulas (tests/docker_api: the
Go checker where it can be built, the same formulas in Python in the VM
stage), and what ``docker stats`` would print is compared with the cgroup
files, read here directly, and with cgstats' own rates.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from typing import Any, Optional

import docker_api
import pytest
import workload

from cgstats import Host, docker
from cgstats.rates import compute

MiB = 1 << 20
LIMIT = 128 * MiB
FILLED = 32 * MiB
# The burner: touch FILLED bytes, say so, then spin.
BURNER = f"b = bytearray(b'\\x01') * {FILLED}\nprint('{{}}', flush=True)\nwhile True:\n    pass\n"


@pytest.fixture(scope="module")
def checker(tmp_path_factory: pytest.TempPathFactory) -> Optional[str]:
    """The Go checker, or ``None`` where only the Python formulas can be used (the VM)."""
    if os.environ.get(docker_api.ENV):
        return docker_api.binary(tmp_path_factory)
    if os.environ.get("CGSTATS_VM") == "1":
        return None
    built, reason = docker_api.build(str(tmp_path_factory.mktemp("docker-api")))
    if built is None and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, yet the Docker API checker is unavailable: {reason}")
    return built


@pytest.fixture
def burning(base: workload.Base) -> Iterator[workload.Container]:
    container_id = workload.random_id()
    container = base.container(f"docker/{container_id}", container_id=container_id)
    container.limit_cpu(50_000, 100_000)
    container.limit_memory(LIMIT)
    proc = container.spawn([sys.executable, "-c", BURNER])
    proc.read_json(timeout=60.0)  # the memory is filled
    yield container


def usage_ns(container: workload.Container) -> int:
    """The container's CPU time from its cgroup file (v1 cpuacct.usage, v2 cpu.stat)."""
    if container.has("cpuacct.usage"):
        return int(container.read("cpuacct.usage"))
    stat = dict(line.split() for line in container.read("cpu.stat").splitlines())
    return int(stat["usage_usec"]) * 1000


def steal_ticks() -> int:
    with open("/proc/stat") as handle:
        return int(handle.readline().split()[8])


def figures(checker: Optional[str], documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if checker is None:
        return [docker_api.cli_figures(document) for document in documents]
    results = docker_api.check(checker, documents)
    assert all(result["ok"] for result in results), results
    return [result["cli"] for result in results]


def test_docker_stats_of_a_live_container(
    burning: workload.Container, checker: Optional[str]
) -> None:
    assert burning.id is not None
    with Host() as host, docker.StatsReader(host) as reader, host.open(burning.id) as handle:
        before_ns = usage_ns(burning)
        steal_before = steal_ticks()
        first = reader.frame(handle)
        time.sleep(1.5)
        second = reader.frame(handle)
        steal_after = steal_ticks()
        after_ns = usage_ns(burning)
        machine = reader.machine_memory_bytes
    assert not first.errors and not second.errors, (first.errors, second.errors)
    documents = [
        docker.document(first, machine_memory_bytes=machine),
        docker.document(second, first, machine_memory_bytes=machine),
    ]
    one_shot, streamed = figures(checker, documents)
    doc = documents[1]

    # CPU time: what the documents carry is what the cgroup file said, bracketed.
    total_1 = documents[0]["cpu_stats"]["cpu_usage"]["total_usage"]
    total_2 = doc["cpu_stats"]["cpu_usage"]["total_usage"]
    assert before_ns <= total_1 <= total_2 <= after_ns
    assert streamed["cpu_delta_ns"] == total_2 - total_1
    assert one_shot["cpu_percent"] > 0  # against the zero precpu_stats: the whole life so far
    # docker: Δusage / Δsystem * online * 100; cgstats: Δusage / Δt (cores). They agree when
    # Δsystem = online * Δt. /proc/stat counts in 10 ms ticks, each of the 7 summed fields
    # truncated (under 70 ms over Δsystem of about 3 s: 2.5 %), steal is not summed (measured
    # here), and the container and /proc/stat are read a little apart: 5 % plus the steal.
    interval_s = second.sample.timestamp - first.sample.timestamp
    rates, backwards = compute(first.sample, second.sample, interval_s, host.cpu_count)
    assert not backwards and rates.cpu_cores is not None
    assert 0.35 <= rates.cpu_cores <= 0.6, rates  # the quota holds it at half a core
    online = doc["cpu_stats"]["online_cpus"]
    assert online == host.cpu_count  # the CPUs online, as /sys/devices/system/cpu/online lists
    steal_share = (steal_after - steal_before) / 100 / (online * interval_s)
    tolerance = 0.05 + steal_share
    assert streamed["cpu_percent"] == pytest.approx(rates.cpu_cores * 100, rel=tolerance)
    assert streamed["system_delta_ns"] == pytest.approx(online * interval_s * 1e9, rel=tolerance)

    # Memory: usage less inactive file pages, of the limit written.
    memory = second.sample.memory
    assert memory is not None and memory.working_set_bytes is not None
    assert streamed["mem_usage"] == memory.working_set_bytes
    assert FILLED <= streamed["mem_usage"] <= LIMIT
    assert streamed["mem_limit"] == LIMIT
    assert streamed["mem_percent"] == pytest.approx(memory.working_set_bytes / LIMIT * 100)
    limit_file = "memory.limit_in_bytes" if burning.has("memory.limit_in_bytes") else "memory.max"
    assert int(burning.read(limit_file)) == LIMIT

    # One process; no interfaces of its own (it shares the host's namespace).
    if burning.has("pids.current"):
        assert streamed["pids_current"] == 1
    assert "networks" not in doc
    assert doc["preread"] == documents[0]["read"]
    assert doc["precpu_stats"] == documents[0]["cpu_stats"]
