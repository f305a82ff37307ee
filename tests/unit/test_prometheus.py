"""cgstats.prometheus on trees captured from real kernels: cAdvisor's names, values, labels.

Values are checked against the captured kernel files themselves (read here,
not through cgstats) and against what capture.json measured; the exposition
text is checked by prometheus_client's own parser and by Prometheus' promtool.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import fixture_trees
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import cgstats.prometheus
from cgstats import Container, ContainerRef, Host
from cgstats.errors import InvalidContainerId
from cgstats.prometheus import METRICS, SELF_METRICS, CgroupCollector
from cgstats.prometheus import exporter as exporter_cli
from cgstats.prometheus.collector import sanitize_label_name
from cgstats.prometheus.metrics import CONTAINER_LABELS, COUNTER

MiB = 1 << 20
DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "prometheus.md")

pytestmark = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(params=fixture_trees.available() or ["none"])
def tree(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def data(tree: str) -> dict[str, Any]:
    return fixture_trees.capture(tree)


@pytest.fixture
def host(tree: str) -> Iterator[Host]:
    with Host(fixture_trees.root(tree)) as opened:
        yield opened


def exposition(collector: CgroupCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def parse(text: str) -> Series:
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = sample.value
    return out


def find(series: Series, metric: str, /, **labels: str) -> list[float]:
    """Values of ``metric`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return [value for (n, ls), value in series.items() if n == metric and wanted <= ls]


def one(series: Series, metric: str, /, **labels: str) -> float:
    values = find(series, metric, **labels)
    assert len(values) == 1, (metric, labels, values)
    return values[0]


def raw(data: dict[str, Any], name: str, hierarchy: str, filename: str) -> str:
    """A captured kernel file of container ``name``, read directly."""
    entry = fixture_trees.container(data, name)
    with open(os.path.join(fixture_trees.root_path(data, entry, hierarchy), filename)) as handle:
        return handle.read()


def keyed(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in text.splitlines() if line.strip())}


def v2(data: dict[str, Any]) -> bool:
    return bool(data["mode"] == "unified")


def hier(data: dict[str, Any], controller: str) -> str:
    return "cgroup2" if v2(data) else controller


def cgroup_id(data: dict[str, Any], name: str) -> str:
    entry = fixture_trees.container(data, name)
    return str(entry["cgroup_paths"][fixture_trees.primary_key(data)])


def promtool_check(text: str) -> None:
    """``promtool check metrics`` on ``text``: skipped without promtool, unless CI=true."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (Debian package prometheus) and CI=true")
        pytest.skip("promtool not installed (Debian package prometheus)")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the table and the docs ------------------------------------------------------


def test_the_docs_table_lists_exactly_the_exposed_names() -> None:
    with open(DOCS, encoding="utf-8") as handle:
        text = handle.read()
    documented = re.findall(r"^\| `((?:container|cgstats)_[a-z0-9_]+)` \|", text, re.MULTILINE)
    exposed = [spec.name for spec in METRICS] + [metric.name for metric in SELF_METRICS]
    assert sorted(documented) == sorted(exposed)
    assert len(set(documented)) == len(documented)


def test_names_types_and_units_follow_prometheus_conventions() -> None:
    for spec in METRICS:
        assert spec.kind in ("counter", "gauge")
        # prometheus_client exposes counters with a _total suffix; cAdvisor's have it.
        assert spec.name.endswith("_total") == (spec.kind == COUNTER), spec.name
        assert spec.name.startswith("container_")
        assert not set(spec.labels) & set(CONTAINER_LABELS)


def test_describe_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = CgroupCollector(root="/nonexistent/cgstats-root")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"I/O during describe: {args}")

    for module, name in ((os, "open"), (os, "scandir"), (os, "stat"), (os, "listdir")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr("builtins.open", refuse)
    families = collector.describe()
    registry = CollectorRegistry()
    registry.register(collector)  # the registry asks describe() for the names
    monkeypatch.undo()
    assert {f.name for f in families} == {
        re.sub(r"_total$", "", m.name) for m in (*METRICS, *SELF_METRICS)
    }
    # Scraping without a cgroup filesystem: no container series, the error flagged.
    series = parse(generate_latest(registry).decode())
    assert one(series, "container_scrape_error") == 1.0
    assert one(series, "cgstats_scrape_errors_total") == 1.0
    assert not find(series, "container_cpu_usage_seconds_total")
    collector.close()


def test_an_invalid_container_name_is_refused_before_any_io() -> None:
    with pytest.raises(InvalidContainerId):
        CgroupCollector(root="/nonexistent", containers=["../etc"])


# -- values on both kernels -------------------------------------------------------


def test_cpu_counters_match_the_kernel_files(host: Host, data: dict[str, Any]) -> None:
    expected = fixture_trees.container(data, "main")["expected"]
    series = parse(exposition(CgroupCollector(host)))
    cid = cgroup_id(data, "main")
    usage = one(series, "container_cpu_usage_seconds_total", id=cid, cpu="total")
    if v2(data):
        stat = keyed(raw(data, "main", "cgroup2", "cpu.stat"))
        assert usage == stat["usage_usec"] / 1e6
        assert one(series, "container_cpu_user_seconds_total", id=cid) == stat["user_usec"] / 1e6
        throttled_s = stat["throttled_usec"] / 1e6
    else:
        assert usage == int(raw(data, "main", "cpuacct", "cpuacct.usage")) / 1e9
        user_ns = int(raw(data, "main", "cpuacct", "cpuacct.usage_user"))
        assert one(series, "container_cpu_user_seconds_total", id=cid) == user_ns / 1e9
        stat = keyed(raw(data, "main", "cpu", "cpu.stat"))
        throttled_s = stat["throttled_time"] / 1e9
    assert expected["cpu_ns_min"] / 1e9 <= usage <= expected["cpu_ns_max"] / 1e9
    assert one(series, "container_cpu_cfs_periods_total", id=cid) == stat["nr_periods"] > 0
    assert one(series, "container_cpu_cfs_throttled_periods_total", id=cid) == stat["nr_throttled"]
    assert one(series, "container_cpu_cfs_throttled_seconds_total", id=cid) == throttled_s
    # No quota, no CFS series (cAdvisor's condition), but CPU time all the same.
    idle = cgroup_id(data, "podman")
    assert not find(series, "container_cpu_cfs_periods_total", id=idle)
    assert find(series, "container_cpu_usage_seconds_total", id=idle)


def test_memory_gauges_match_the_kernel_files(host: Host, data: dict[str, Any]) -> None:
    expected = fixture_trees.container(data, "main")["expected"]
    series = parse(exposition(CgroupCollector(host)))
    cid = cgroup_id(data, "main")
    memory = hier(data, "memory")
    stat = keyed(raw(data, "main", memory, "memory.stat"))
    if v2(data):
        usage = int(raw(data, "main", memory, "memory.current"))
        inactive, rss, cache = stat["inactive_file"], stat["anon"], stat["file"]
    else:
        usage = int(raw(data, "main", memory, "memory.usage_in_bytes"))
        inactive, rss, cache = stat["total_inactive_file"], stat["total_rss"], stat["total_cache"]
    assert one(series, "container_memory_usage_bytes", id=cid) == usage
    assert one(series, "container_memory_working_set_bytes", id=cid) == usage - inactive
    assert one(series, "container_memory_total_inactive_file_bytes", id=cid) == inactive
    assert one(series, "container_memory_rss", id=cid) == rss
    assert one(series, "container_memory_cache", id=cid) == cache
    allocated = expected["memory_bytes_allocated"]
    assert allocated <= one(series, "container_memory_rss", id=cid) < allocated + 32 * MiB
    limit = one(series, "container_spec_memory_limit_bytes", id=cid)
    assert limit == expected["memory_limit_bytes"]
    faults = find(series, "container_memory_failures_total", id=cid, failure_type="pgfault")
    assert sorted(faults) == [stat["pgfault"]] * 2  # scope container and hierarchy, as cAdvisor
    # Unlimited is no series at all, never 0.
    assert not find(series, "container_spec_memory_limit_bytes", id=cgroup_id(data, "podman"))


def test_processes_threads_and_their_limit(host: Host, data: dict[str, Any]) -> None:
    series = parse(exposition(CgroupCollector(host)))
    for name in ("main", "pids-limit"):
        expected = fixture_trees.container(data, name)["expected"]
        cid = cgroup_id(data, name)
        assert one(series, "container_processes", id=cid) == expected["nr_processes"]
        assert one(series, "container_threads", id=cid) == expected["nr_processes"]
        assert one(series, "container_threads_max", id=cid) == expected["pids_max"]
    # pids.max "max" is unlimited: no series (cAdvisor would show 0)
    assert not find(series, "container_threads_max", id=cgroup_id(data, "podman"))


def test_block_io_per_device(host: Host, data: dict[str, Any]) -> None:
    expected = fixture_trees.container(data, "main")["expected"]
    series = parse(exposition(CgroupCollector(host)))
    cid = cgroup_id(data, "main")
    written = one(series, "container_fs_writes_bytes_total", id=cid, device="/dev/vda")
    read = one(series, "container_fs_reads_bytes_total", id=cid, device="/dev/vda")
    assert expected["io_bytes_written"] <= written < expected["io_bytes_written"] + MiB
    assert expected["io_bytes_read"] <= read < expected["io_bytes_read"] + MiB
    assert one(series, "container_fs_writes_total", id=cid, device="/dev/vda") > 0
    major, minor = expected["io_device"].split(":")
    usage = dict(
        (op, one(series, "container_blkio_device_usage_total", id=cid, operation=op))
        for op in ("Read", "Write")
    )
    assert usage == {"Read": read, "Write": written}
    assert find(series, "container_blkio_device_usage_total", id=cid, major=major, minor=minor)


def test_oom_kills_and_pressure(host: Host, data: dict[str, Any]) -> None:
    series = parse(exposition(CgroupCollector(host)))
    oom = fixture_trees.container(data, "oom")["expected"]
    kills = one(series, "container_oom_events_total", id=cgroup_id(data, "oom"))
    assert kills >= oom["oom_kills_min"]
    # PSI of the cgroup's v2 directory (the unified tree on the hybrid host), µs -> s.
    cpu_psi = raw(data, "main", "cgroup2", "cpu.pressure")
    totals = {line.split()[0]: int(line.rsplit("total=", 1)[1]) for line in cpu_psi.splitlines()}
    cid = cgroup_id(data, "main")
    waiting = one(series, "container_pressure_cpu_waiting_seconds_total", id=cid)
    assert waiting == totals["some"] / 1e6 > 0
    if "full" in totals:
        stalled = one(series, "container_pressure_cpu_stalled_seconds_total", id=cid)
        assert stalled == totals["full"] / 1e6


def test_start_time_is_cadvisors_earliest_cgroup_mtime(host: Host, data: dict[str, Any]) -> None:
    series = parse(exposition(CgroupCollector(host)))
    entry = fixture_trees.container(data, "main")
    times = []
    with host.open(entry["id"]) as handle:  # the directories of the controllers read
        for key, directory in handle.directories.items():
            marker = "cgroup.events" if key == "unified" else "cgroup.clone_children"
            times.append(os.stat(directory).st_mtime)
            if os.path.exists(os.path.join(directory, marker)):
                times.append(os.stat(os.path.join(directory, marker)).st_mtime)
    started = one(series, "container_start_time_seconds", id=cgroup_id(data, "main"))
    assert started == int(min(times))
    assert started <= one(series, "container_last_seen", id=cgroup_id(data, "main"))


def test_cpu_shares_and_weight_as_cadvisor(host: Host, data: dict[str, Any]) -> None:
    series = parse(exposition(CgroupCollector(host)))
    shares = one(series, "container_spec_cpu_shares", id=cgroup_id(data, "k8s-burstable"))
    if v2(data):
        weight = int(raw(data, "k8s-burstable", "cgroup2", "cpu.weight"))
        assert weight == 50
        assert shares == 2 + (weight - 1) * 262142 // 9999
    else:
        assert shares == 512


def test_network_counts_each_namespace_once(host: Host, data: dict[str, Any]) -> None:
    # cAdvisor's ignored names (lo, veth*...) hide all of the capture's traffic;
    # with only lo ignored, the pod's veth shows, reported by one container.
    series = parse(exposition(CgroupCollector(host, ignored_interfaces=("lo",))))
    pod = [fixture_trees.container(data, name) for name in ("pod-a", "pod-b")]
    reporter = min(pod, key=lambda entry: entry["id"])
    sent = pod[0]["expected"]["net_dev_delta"]["tx_bytes"]
    name = "container_network_transmit_bytes_total"
    values = {
        entry["name"]: find(series, name, interface="veth0", name=entry["id"]) for entry in pod
    }
    assert values[reporter["name"]] and values[reporter["name"]][0] >= sent
    assert [v for key, v in values.items() if key != reporter["name"]] == [[]]
    receiver = fixture_trees.container(data, "docker-systemd")
    received = one(series, "container_network_receive_packets_total", name=receiver["id"])
    assert received >= receiver["expected"]["net_packets_received"]
    # Containers in the host's namespace report none (those are the host's counters).
    assert not find(series, name, name=fixture_trees.container(data, "podman")["id"])

    # Nothing ignored: main's own lo, exactly what the capture counted.
    series = parse(exposition(CgroupCollector(host, ignored_interfaces=())))
    delta = fixture_trees.container(data, "main")["expected"]["net_dev_delta"]
    main = cgroup_id(data, "main")
    assert one(series, "container_network_receive_bytes_total", id=main) == delta["rx_bytes"]
    assert one(series, "container_network_transmit_packets_total", id=main) == delta["tx_packets"]

    # cAdvisor's default: no lo and no veth anywhere.
    series = parse(exposition(CgroupCollector(host)))
    assert not find(series, "container_network_receive_bytes_total")


# -- labels and families as cAdvisor's ------------------------------------------------


def test_every_family_has_cadvisors_type_and_label_names(host: Host, data: dict[str, Any]) -> None:
    text = exposition(CgroupCollector(host, ignored_interfaces=("lo",)))
    specs = {re.sub(r"_total$", "", spec.name): spec for spec in METRICS}
    seen = set()
    for family in text_string_to_metric_families(text):
        if family.name in ("container_scrape_error", "cgstats_scrape_errors"):
            assert [s.labels for s in family.samples] == [{}]
            continue
        spec = specs[family.name]
        seen.add(spec.name)
        assert family.type == spec.kind
        assert family.documentation == spec.help
        for sample in family.samples:
            assert set(sample.labels) == {*CONTAINER_LABELS, *spec.labels}, sample
            assert sample.labels["id"].startswith("/") and sample.labels["name"]
    # Every metric of the table has a series on these kernels but the soft limit,
    # which no captured container sets (v1) or cgstats does not read (v2).
    missing = {spec.name for spec in METRICS} - seen
    assert missing <= {"container_spec_memory_reservation_limit_bytes"}, missing
    promtool_check(text)


def test_the_id_label_is_the_cgroup_path_and_name_the_id(host: Host, data: dict[str, Any]) -> None:
    series = parse(exposition(CgroupCollector(host)))
    ids = {
        dict(labels)["id"]: dict(labels)["name"]
        for (name, labels) in series
        if name == "container_last_seen"
    }
    expected = {
        entry["cgroup_paths"][fixture_trees.primary_key(data)]: entry["id"]
        for entry in data["containers"]
        if entry["expect_container"]
    }
    assert ids == expected
    # The dashboards' regex on cAdvisor's id works on ours.
    docker = [cid for cid in ids if re.fullmatch(r".*/docker/[0-9a-f]{64}", cid)]
    assert cgroup_id(data, "main") in docker


def test_a_labels_callable_adds_labels_like_cadvisors(host: Host, data: dict[str, Any]) -> None:
    main = fixture_trees.container(data, "main")["id"]

    def labels(ref: ContainerRef) -> dict[str, str]:
        if ref.id == main:
            return {"name": "web-1", "image": "nginx:1.27", "io.k8s/pod": "web", "cpu": "x"}
        return {}

    series = parse(exposition(CgroupCollector(host, labels=labels)))
    (key,) = [
        k for k in series if k[0] == "container_memory_usage_bytes" and ("name", "web-1") in k[1]
    ]
    got = dict(key[1])
    assert got["image"] == "nginx:1.27" and got["io_k8s_pod"] == "web"
    assert "cpu" not in got  # the metrics' own label names are not the callable's to set
    other = [dict(k[1]) for k in series if k[0] == "container_memory_usage_bytes"]
    # Every series has every label name; a container without the label has "".
    # (prometheus_client's parser drops nothing: "" is a value in the text.)
    assert all(set(labels_) == {*CONTAINER_LABELS, "io_k8s_pod"} for labels_ in other)
    assert sum(1 for labels_ in other if labels_["io_k8s_pod"] == "") == len(other) - 1


def test_label_names_are_sanitized_as_cadvisor() -> None:
    assert sanitize_label_name("io.kubernetes.pod/name") == "io_kubernetes_pod_name"
    assert sanitize_label_name("1st") == "_1st"


# -- lifecycle: gone containers, failures ------------------------------------------------


def test_series_of_a_removed_container_disappear(tree: str, tmp_path: Any) -> None:
    copy = str(tmp_path / "tree")
    fixture_trees.copy_subset(tree, copy, ("main", "nothrottle"))
    data = fixture_trees.load(copy)
    with Host(copy) as host, CgroupCollector(host) as collector:
        before = parse(exposition(collector))
        gone = cgroup_id(data, "nothrottle")
        assert find(before, "container_memory_usage_bytes", id=gone)
        for directory in fixture_trees.container(data, "nothrottle")["dirs"].values():
            shutil.rmtree(os.path.join(copy, directory.lstrip("/")))
        after = parse(exposition(collector))
        assert not [key for key in after if ("id", gone) in key[1]]
        assert find(after, "container_memory_usage_bytes", id=cgroup_id(data, "main"))
        assert one(after, "container_scrape_error") == 0.0
        assert len(collector.watched) == 1


def test_one_failing_container_does_not_break_the_scrape(
    host: Host, data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = fixture_trees.container(data, "oom")["id"]
    real_read = Container.read

    def read(self: Container) -> Any:
        if self.ref.id == broken:
            raise OSError(5, "Input/output error")
        return real_read(self)

    monkeypatch.setattr(Container, "read", read)
    with CgroupCollector(host) as collector:
        series = parse(exposition(collector))
        assert not find(series, "container_last_seen", id=cgroup_id(data, "oom"))
        assert find(series, "container_last_seen", id=cgroup_id(data, "main"))
        assert one(series, "container_scrape_error") == 1.0
        assert one(series, "cgstats_scrape_errors_total") == 1.0
        series = parse(exposition(collector))
        assert one(series, "cgstats_scrape_errors_total") == 2.0  # counted per scrape


def test_named_containers_only_and_one_not_found_yet(host: Host, data: dict[str, Any]) -> None:
    main = fixture_trees.container(data, "main")["id"]
    with CgroupCollector(host, [main[:12], "f" * 64]) as collector:
        series = parse(exposition(collector))
    ids = {dict(labels)["id"] for (name, labels) in series if name == "container_last_seen"}
    assert ids == {cgroup_id(data, "main")}
    assert one(series, "container_scrape_error") == 0.0  # not found is not an error


def test_close_closes_its_own_host_and_every_file(tree: str) -> None:
    collector = CgroupCollector(root=fixture_trees.root(tree))
    exposition(collector)
    host = collector._host
    assert host is not None and len(host.files) > 0
    collector.close()
    assert len(host.files) == 0 and collector.closed
    collector.close()  # idempotent
    with pytest.raises(ValueError):
        collector.collect()


# -- the exporter ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_exporter_serves_the_exposition_over_http(tree: str) -> None:
    with Host(fixture_trees.root(tree)) as host, CgroupCollector(host) as collector:
        server = exporter_cli.make_exporter(collector, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_port}/metrics"
            with urllib.request.urlopen(url, timeout=30) as response:
                content_type = response.headers["Content-Type"]
                text = response.read().decode()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(30)
    assert content_type.startswith("text/plain")
    assert find(parse(text), "container_cpu_usage_seconds_total", cpu="total")


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = exporter_cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_exporter_errors_are_one_line(capsys: pytest.CaptureFixture[str], tree: str) -> None:
    code, err = run_main(["--root", "/nonexistent/cgstats"], capsys)
    assert code == 1 and err.startswith("cgstats.prometheus: no cgroup") and err.count("\n") == 1
    code, err = run_main(["../x"], capsys)
    assert code == 2 and "invalid container" in err and err.count("\n") == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["--root", fixture_trees.root(tree), "--addr", "127.0.0.1", "--port", str(port)]
        code, err = run_main(argv, capsys)
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1


def test_exporter_without_prometheus_client_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(sys.modules):
        if name.startswith("prometheus_client") or name == "cgstats.prometheus.collector":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    monkeypatch.delattr(cgstats.prometheus, "collector", raising=False)
    code, err = run_main(["--port", str(free_port())], capsys)
    assert code == 1
    assert err == "cgstats.prometheus: " + cgstats.prometheus.INSTALL_HINT + "\n"
    assert "pip install prometheus_client" in err
    with pytest.raises(ModuleNotFoundError, match="pip install prometheus_client"):
        cgstats.prometheus.CgroupCollector  # noqa: B018 (the lazy import is the point)


def test_exporter_runs_as_a_module(tree: str) -> None:
    """``python -m cgstats.prometheus``: serves, and ends with 0 on SIGINT, quietly."""
    argv = ["-m", "cgstats.prometheus", "--addr", "127.0.0.1", "--port", "0"]
    argv += ["--root", fixture_trees.root(tree)]
    proc = subprocess.Popen(
        [sys.executable, *argv],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        assert match, line
        with urllib.request.urlopen(f"http://127.0.0.1:{match[1]}/", timeout=30) as response:
            assert b"container_memory_working_set_bytes" in response.read()
        proc.send_signal(2)
        assert proc.wait(30) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
