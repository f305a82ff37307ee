"""The exporter (``python -m cgstats.prometheus``) scraped over loopback HTTP, on live cgroups.

One exporter process and two containers: a CPU burner under a CFS quota and
an idle one that is removed mid-test. The scraped values are bracketed by the
kernel's own files read just before and after the scrape; the removed
container's series must be gone from the next scrape; the text must pass
``promtool check metrics``; SIGINT must end the exporter with status 0 and
nothing on stderr.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

import pytest
import workload
from prometheus_client.parser import text_string_to_metric_families

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def docker_container(base: workload.Base) -> workload.Container:
    container_id = workload.random_id()
    return base.container(f"docker/{container_id}", container_id=container_id)


def cgroup_id(base: workload.Base, container: workload.Container) -> str:
    """cAdvisor's ``id``: the cgroup path in the hierarchy cgstats reports."""
    return container.paths[workload.CGROUP2_KEY if base.mode == "unified" else "memory"]


def cpu_usage_s(container: workload.Container) -> float:
    if container.has("cpuacct.usage"):
        return int(container.read("cpuacct.usage")) / 1e9
    stat = dict(line.split() for line in container.read("cpu.stat").splitlines())
    return int(stat["usage_usec"]) / 1e6


def memory_usage(container: workload.Container) -> int:
    name = "memory.usage_in_bytes" if container.has("memory.usage_in_bytes") else "memory.current"
    return int(container.read(name))


def scrape(url: str) -> tuple[str, Series]:
    with urllib.request.urlopen(url, timeout=60) as response:
        text = response.read().decode()
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, series


def value(series: Series, name: str, cid: str) -> float:
    (found,) = [v for (n, labels), v in series.items() if n == name and ("id", cid) in labels]
    return found


def promtool_check(text: str) -> None:
    """``promtool check metrics``: skips without promtool, fails so with CI=true."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (Debian package prometheus) and CI=true")
        pytest.skip("promtool not installed (Debian package prometheus)")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_exporter_over_http(base: workload.Base) -> None:
    created = time.time()
    burner, doomed = docker_container(base), docker_container(base)
    burner.limit_cpu(50_000, 100_000)
    burner.spawn([shutil.which("sh") or "/bin/sh", "-c", "while :; do :; done"])
    doomed.spawn(workload.idle_argv())
    started = time.time()
    assert burner.id is not None and doomed.id is not None
    argv = ["-m", "cgstats.prometheus", "--addr", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(
        [sys.executable, *argv, burner.id, doomed.id[:12]], stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        assert match, line
        url = f"http://127.0.0.1:{match[1]}/metrics"
        busy, idle = cgroup_id(base, burner), cgroup_id(base, doomed)

        # A moving CPU counter lies between the kernel's values around the scrape.
        before = cpu_usage_s(burner)
        text, series = scrape(url)
        after = cpu_usage_s(burner)
        usage = value(series, "container_cpu_usage_seconds_total", busy)
        assert before <= usage <= after, (before, usage, after)
        assert value(series, "container_cpu_cfs_periods_total", busy) > 0
        assert value(series, "container_processes", idle) == 1
        # kernfs stamps times from the coarse clock, up to a tick behind time.time()
        start = value(series, "container_start_time_seconds", busy)
        assert int(created) - 1 <= start <= started, (created, start, started)
        assert value(series, "container_threads", idle) == 1

        # A gauge equals the kernel's value when that did not move across the scrape.
        def memory_matches() -> bool:
            first = memory_usage(doomed)
            _text, scraped = scrape(url)
            return (
                first
                == value(scraped, "container_memory_usage_bytes", idle)
                == (memory_usage(doomed))
            )

        assert wait_until(memory_matches)

        # A dashboard's per-container CPU panel: one series per name, both containers.
        names = {
            dict(labels)["name"]
            for (name, labels) in series
            if name == "container_cpu_usage_seconds_total"
        }
        assert names == {burner.id, doomed.id}

        doomed.remove()
        _text, series = scrape(url)
        assert not [key for key in series if ("id", idle) in key[1]]
        assert value(series, "container_memory_working_set_bytes", busy) > 0
        errors = [v for (n, _labels), v in series.items() if n == "container_scrape_error"]
        assert errors == [0.0]

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert proc.stderr.read() == ""
        promtool_check(text)  # last: it may skip
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
