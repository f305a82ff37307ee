"""The read path's shortcuts: positional record construction, grouped files, kept limits."""

from __future__ import annotations

import os

import attrs
import fixture_trees
import pytest

from cgstats import Host
from cgstats._fileio import FileCache, FileGroup
from cgstats.model import NetInterface, PressureLine, PressureResource
from cgstats.readers import cpu, memory, pids

USAGE_FILES = ("memory.usage_in_bytes", "memory.current")


def test_records_built_positionally_keep_their_field_order() -> None:
    # pressure.parse_pressure and net._interface pass these positionally.
    assert [f.name for f in attrs.fields(PressureLine)] == ["avg10", "avg60", "avg300", "total_us"]
    assert [f.name for f in attrs.fields(PressureResource)] == ["some", "full"]
    assert [f.name for f in attrs.fields(NetInterface)] == [
        "name",
        "rx_bytes",
        "rx_packets",
        "rx_errors",
        "rx_dropped",
        "tx_bytes",
        "tx_packets",
        "tx_errors",
        "tx_dropped",
    ]


def test_limit_files_are_files_the_readers_read() -> None:
    known = set(cpu.V1_FILES + cpu.V2_FILES + memory.V1_FILES + memory.V2_FILES + pids.FILES)
    assert set(cpu.LIMIT_FILES + memory.LIMIT_FILES + pids.LIMIT_FILES) <= known


def test_a_group_is_one_entry_that_reopens_a_failed_file(tmp_path: os.PathLike[str]) -> None:
    paths = [os.path.join(tmp_path, name) for name in ("a", "b", "c")]
    for path in paths[:2]:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(os.path.basename(path))
    cache = FileCache(8)
    group = FileGroup(paths)
    first = cache.read_group(group)
    assert first[:2] == [b"a", b"b"] and isinstance(first[2], FileNotFoundError)
    assert group in cache and len(cache) == 3  # a slot is reserved for the missing file
    with open(paths[2], "wb") as handle:
        handle.write(b"c" * 10000)  # appears, and is longer than the first buffer
    assert cache.read_group(group) == [b"a", b"b", b"c" * 10000]
    cache.forget(group)
    assert len(cache) == 0


def test_a_group_that_does_not_fit_is_read_without_being_kept(
    tmp_path: os.PathLike[str],
) -> None:
    paths = []
    for name in ("a", "b", "c"):
        paths.append(os.path.join(tmp_path, name))
        with open(paths[-1], "w", encoding="ascii") as handle:
            handle.write(name)
    cache = FileCache(4, evict_idle_s=60.0)
    cache.read(paths[0])
    cache.read(paths[1])
    group = FileGroup(paths)
    assert cache.read_group(group) == [b"a", b"b", b"c"]
    assert group not in cache and len(cache) == 2  # the two in use were not evicted
    idle = FileCache(4, evict_idle_s=0.0)
    idle.read(paths[0])
    idle.read(paths[1])
    assert idle.read_group(group) == [b"a", b"b", b"c"]
    assert group in idle and paths[0] not in idle and len(idle) == 4  # one idle file evicted
    idle.close()
    assert len(idle) == 0


@pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")
@pytest.mark.parametrize("tree", fixture_trees.available() or ["none"])
def test_limits_are_kept_for_limits_max_age_s_then_read_again(
    tree: str, tmp_path: os.PathLike[str]
) -> None:
    root = os.path.join(tmp_path, "root")
    fixture_trees.copy_subset(tree, root)
    data = fixture_trees.capture(tree)
    main = fixture_trees.container(data, "main")
    with Host(root, limits_max_age_s=3600) as host, host.open(main["id"]) as handle:
        before = handle.read()
        assert before.pids is not None and handle.limit_files
        pids_max = next(path for path in handle.limit_files if path.endswith("/pids.max"))
        assert pids_max not in handle.files  # not read on every sample
        with open(pids_max, "w", encoding="ascii") as out:
            out.write("4242\n")
        kept = handle.read()
        assert kept.pids is not None and kept.pids.limit == before.pids.limit != 4242
        assert kept.memory == before.memory and kept.errors == before.errors
        handle._limits_due = 0.0  # as if limits_max_age_s had passed
        fresh = handle.read()
        assert fresh.pids is not None and fresh.pids.limit == 4242
    with Host(root, limits_max_age_s=0) as host, host.open(main["id"]) as handle:
        handle.read()
        with open(pids_max, "w", encoding="ascii") as out:
            out.write("77\n")
        sample = handle.read()
        assert sample.pids is not None and sample.pids.limit == 77


@pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")
@pytest.mark.parametrize("tree", fixture_trees.available() or ["none"])
def test_unchanged_sections_are_reused_without_sharing_dicts(
    tree: str, tmp_path: os.PathLike[str]
) -> None:
    root = os.path.join(tmp_path, "root")
    fixture_trees.copy_subset(tree, root)
    main = fixture_trees.container(fixture_trees.capture(tree), "main")
    with Host(root, reuse_unchanged=False) as host:
        parsed = host.read(main["id"])
    with Host(root) as host, host.open(main["id"]) as handle:
        first = handle.read()
        second = handle.read()
        assert first.memory is not None and second.memory is not None
        assert first.memory.stat is not None and second.memory.stat is not None
        for sample in (first, second):
            assert attrs.evolve(sample, timestamp=0.0) == attrs.evolve(parsed, timestamp=0.0)
        assert second.memory.stat is not first.memory.stat  # no mutable object shared
        first.memory.stat["rss"] = -1  # a caller's mutation stays in its own sample
        third = handle.read()
        assert third.memory is not None and third.memory.stat == parsed.memory.stat  # type: ignore[union-attr]
        usage = next(p for p in handle.files if os.path.basename(p) in USAGE_FILES)
        with open(usage, "w", encoding="ascii") as out:
            out.write("12345\n")
        changed = handle.read()
        assert changed.memory is not None and changed.memory.usage_bytes == 12345
        assert changed.cpu == second.cpu  # other sections as before
