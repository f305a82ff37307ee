"""The collector against live containers whose load, life and death the test controls.

Runs on whatever the kernel offers (v1 hybrid on the host, v2 in the VM):
a burner held at half a core by a CFS quota, a container removed while the
loop runs, one recreated under the same ID, a stop while the loop sleeps,
and 10,000 add/remove cycles.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable

import workload

from cgstats import Collector, Event, Reading

KiB = 1 << 10
MiB = 1 << 20


def docker_container(base: workload.Base, container_id: str | None = None) -> workload.Container:
    container_id = container_id or workload.random_id()
    return base.container(f"docker/{container_id}", container_id=container_id)


def burner_argv() -> list[str]:
    """Spin until killed: a shell loop starts faster than Python under emulation."""
    shell = shutil.which("sh") or "/bin/sh"
    return [shell, "-c", "while :; do :; done"]


class Recorder:
    """A sink that keeps what it was given, and lets the test wait for new ticks."""

    def __init__(self, keep_readings: bool = True) -> None:
        self.keep_readings = keep_readings
        self.readings: list[Reading] = []
        self.events: list[Event] = []
        self.ticks = 0
        self.changed = threading.Condition()

    def emit(self, readings: list[Reading]) -> None:
        with self.changed:
            if self.keep_readings:
                self.readings.extend(readings)
            self.ticks += 1
            self.changed.notify_all()

    def emit_events(self, events: list[Event]) -> None:
        with self.changed:
            self.events.extend(events)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def wait_ticks(self, count: int, timeout: float = 60.0) -> None:
        """Wait until ``count`` more ticks than now have been delivered."""
        with self.changed:
            target = self.ticks + count
            assert self.changed.wait_for(lambda: self.ticks >= target, timeout), (
                "the collector stopped ticking"
            )


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def assert_no_negative_rate(readings: list[Reading]) -> None:
    for reading in readings:
        for key, value in reading.rates.to_dict().items():
            if isinstance(value, float):
                assert value >= 0, (key, value, reading.id)


def test_a_burner_held_at_half_a_core_reads_half_a_core(base: workload.Base) -> None:
    container = docker_container(base)
    container.limit_cpu(50_000, 100_000)
    container.spawn(burner_argv())
    assert container.id is not None
    time.sleep(0.5)  # let the burner get going
    with Collector([container.id], step=1.0) as collector:
        readings = [collector.tick()[0]]
        for _ in range(3):
            time.sleep(1.0)
            readings.append(collector.tick()[0])
    assert readings[0].rates.cpu_cores is None
    for reading in readings[1:]:
        rates = reading.rates
        assert rates.interval_s is not None and rates.interval_s >= 0.9
        assert rates.cpu_cores is not None and 0.4 <= rates.cpu_cores <= 0.6, rates
        assert rates.cpu_percent is not None and 80 <= rates.cpu_percent <= 120
        # throttled in most periods; less when other load on the host takes the CPU first
        assert rates.throttled_ratio is not None and rates.throttled_ratio > 0.2
        assert rates.cpu_user_cores is not None and rates.cpu_system_cores is not None
        # v2 scales user/system to the runtime; v1's are raw tick samples that a
        # busy host can undercount (see test_readers_live): bounded, not equal
        split = rates.cpu_user_cores + rates.cpu_system_cores
        assert 0.5 * rates.cpu_cores - 0.1 < split < rates.cpu_cores + 0.1
        assert not reading.reset


def test_a_container_removed_mid_run_is_one_gone_event(base: workload.Base) -> None:
    doomed, survivor = docker_container(base), docker_container(base)
    doomed.spawn(workload.idle_argv())
    survivor.spawn(workload.idle_argv())
    assert doomed.id is not None and survivor.id is not None
    recorder = Recorder()
    with Collector([doomed.id, survivor.id], step=0.2, sinks=[recorder]) as collector:
        collector.start()
        recorder.wait_ticks(2)
        doomed.remove()
        collector.flush(timeout=60)  # ticks read before the removal are all delivered
        seen = len(recorder.readings)
        recorder.wait_ticks(4)
        assert collector.running  # no exception ended the loop
    gone = [e for e in recorder.events if e.kind == "gone"]
    assert [e.container_id for e in gone] == [doomed.id]
    assert "error" not in {e.kind for e in recorder.events}
    later = recorder.readings[seen + 1 :]
    assert later and {r.id for r in later} == {survivor.id}


def test_a_container_recreated_with_the_same_id_resets(base: workload.Base) -> None:
    container_id = workload.random_id()
    first = docker_container(base, container_id)
    first.spawn(burner_argv())
    first.limit_cpu(30_000, 100_000)
    recorder = Recorder()
    with Collector([container_id], step=0.3, sinks=[recorder], rescan_s=0.3) as collector:
        collector.start()
        recorder.wait_ticks(3)
        first.remove()
        again = docker_container(base, container_id)
        again.spawn(workload.idle_argv())
        deadline = time.monotonic() + 30
        while not any(e.kind == "restarted" for e in recorder.events):
            assert time.monotonic() < deadline, recorder.events
            recorder.wait_ticks(1)
        recorder.wait_ticks(2)
    kinds = [e.kind for e in recorder.events]
    assert kinds[0] == "appeared" and "restarted" in kinds, kinds
    assert_no_negative_rate(recorder.readings)
    after = [r for r in recorder.readings if any(e.kind == "restarted" for e in r.events)]
    assert len(after) == 1 and after[0].reset and after[0].rates.cpu_cores is None
    last = recorder.readings[-1]
    assert not last.reset and last.rates.cpu_cores is not None and last.rates.cpu_cores < 0.1


def test_stop_returns_promptly_while_the_loop_sleeps_in_a_long_step(
    base: workload.Base,
) -> None:
    container = docker_container(base)
    container.spawn(workload.idle_argv())
    assert container.id is not None
    recorder = Recorder()
    collector = Collector([container.id], step=30.0, sinks=[recorder])
    try:
        collector.start()
        recorder.wait_ticks(1)
        time.sleep(0.3)  # now it sleeps towards the next slot, 30 s away
        started = time.monotonic()
        collector.stop()
        took = time.monotonic() - started
        assert not collector.running
        assert took < 0.2, f"stop() took {took:.3f} s"
    finally:
        collector.close()


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_ten_thousand_add_remove_cycles_leave_nothing_behind(base: workload.Base) -> None:
    container = docker_container(base)
    container.spawn(workload.idle_argv())
    assert container.id is not None
    spec = container.id
    recorder = Recorder(keep_readings=False)  # what is kept must be the collector's
    with Collector([], step=0.01, sinks=[recorder]) as collector:
        collector.start()
        # Warm up: open it once for real, so host-wide files (v1: the blkio root's
        # recursive counters, read once to learn whether throttling counts IO) and
        # code paths are in place before the baseline.
        collector.add(spec)
        recorder.wait_ticks(2)
        collector.remove(spec)
        recorder.wait_ticks(2)
        files_before = open_files()
        tracemalloc.start()
        try:
            # Ticks wait in the sink's queue until its thread takes them (up to
            # 100 batches when emulation slows it): drained before each measure,
            # so what is measured is what the collector keeps.
            assert collector.flush(timeout=60)
            memory_before = tracemalloc.get_traced_memory()[0]
            opened = 0
            for cycle in range(10_000):
                collector.add(spec)
                if cycle % 1000 == 0:  # let the loop open it for real
                    opened += wait_until(lambda: bool(collector.watched))
                collector.remove(spec)
            assert wait_until(lambda: not collector.watched)  # the last remove is applied
            recorder.wait_ticks(2)
            assert collector.flush(timeout=60)
            memory_after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert opened == 10  # the cycles did open and close the container's files
        assert collector.watched == []
        assert open_files() <= files_before
        assert memory_after - memory_before < 256 * KiB, (memory_before, memory_after)
    assert "error" not in {e.kind for e in recorder.events}


def dump_lines(*args: str, lines: int) -> tuple[int, list[str], str]:
    """Run the CLI, read ``lines`` lines, then close its stdout (as ``| head`` does)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cgstats.dump", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    got = [process.stdout.readline() for _ in range(lines)]
    process.stdout.close()
    err = process.stderr.read()
    return process.wait(timeout=120), got, err


def test_cli_watch_json_and_a_closed_pipe(base: workload.Base) -> None:
    container = docker_container(base)
    container.limit_cpu(50_000, 100_000)
    container.spawn(burner_argv())
    assert container.id is not None
    # One process (they start slowly under emulation): three steps read, then the
    # reader goes away (| head -3), which must end an endless watch quietly.
    code, got, err = dump_lines("--watch", "--json", "--step", "0.5", container.id[:12], lines=3)
    assert code == 0 and err == "", err
    documents = [json.loads(line) for line in got]
    assert [d["id"] for d in documents] == [container.id] * 3
    assert documents[0]["rates"]["cpu_cores"] is None
    assert all(0.3 <= d["rates"]["cpu_cores"] <= 0.7 for d in documents[1:]), documents


def test_soft_limit_events_on_the_way_up_and_down(base: workload.Base) -> None:
    container = docker_container(base)
    container.spawn(workload.idle_argv())
    assert container.id is not None
    recorder = Recorder()
    threshold = 32 * MiB
    with Collector([container.id], sinks=[recorder], soft_limit_bytes=threshold) as collector:
        collector.tick()
        hog = container.spawn(workload.memory_hog_argv(48))
        assert hog.read_json()["bytes_allocated"] == 48 * MiB
        collector.tick()
        hog.kill()
        hog.wait()
        collector.tick()
    soft = [e for e in recorder.events if e.kind.startswith("soft_limit")]
    assert [e.kind for e in soft] == ["soft_limit_exceeded", "soft_limit_cleared"], soft
    up, down = soft
    assert up.threshold_bytes == threshold and up.value_bytes is not None
    assert up.value_bytes >= 48 * MiB
    assert down.value_bytes is not None and down.value_bytes < threshold * 0.95
