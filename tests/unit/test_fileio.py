"""The kept-open file cache: growth, LRU bound, explicit release."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

from cgstats._fileio import INITIAL_BUFFER, FileCache, default_capacity


def test_rereads_fresh_content_and_grows_the_buffer(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as handle:
        handle.write(b"a" * 10)
    cache = FileCache(4)
    assert cache.read(path) == b"a" * 10
    big = bytes(range(256)) * (3 * INITIAL_BUFFER // 256 + 1)
    with open(path, "r+b") as handle:
        handle.write(big)
    assert cache.read(path) == big  # same descriptor, whole file, buffer grown
    assert len(cache) == 1
    cache.close()
    assert len(cache) == 0


def _numbered_files(directory: os.PathLike[str], count: int) -> list[str]:
    """Files ``0`` .. ``count - 1`` in ``directory``, each holding its own name."""
    paths = []
    for index in range(count):
        paths.append(os.path.join(directory, str(index)))
        with open(paths[-1], "w", encoding="ascii") as handle:
            handle.write(str(index))
    return paths


def test_least_recently_used_closes_first(tmp_path: os.PathLike[str]) -> None:
    paths = _numbered_files(tmp_path, 5)
    cache = FileCache(3, evict_idle_s=0.0)
    for path in paths[:3]:
        cache.read(path)
    cache.read(paths[0])  # now the most recent
    cache.read(paths[3])  # evicts paths[1]
    assert paths[1] not in cache and paths[0] in cache and paths[3] in cache
    assert len(cache) == 3
    assert cache.read(paths[1]) == b"1"  # reopened on demand
    cache.forget_all(paths)
    assert len(cache) == 0


def test_a_cyclic_scan_larger_than_the_bound_keeps_its_descriptors(
    tmp_path: os.PathLike[str],
) -> None:
    paths = _numbered_files(tmp_path, 6)
    cache = FileCache(4, evict_idle_s=60.0)
    for _ in range(3):
        results = cache.read_many(paths)
        assert results == [str(index).encode() for index in range(6)]
    # The first four stay open; the other two are read with open/read/close
    # rather than evicting files that the scan is still using.
    assert [path in cache for path in paths] == [True] * 4 + [False] * 2


def test_errors_come_back_in_place(tmp_path: os.PathLike[str]) -> None:
    good = os.path.join(tmp_path, "good")
    with open(good, "w", encoding="ascii") as handle:
        handle.write("x")
    results = FileCache(4).read_many([good, os.path.join(tmp_path, "missing")])
    assert results[0] == b"x"
    assert isinstance(results[1], FileNotFoundError)


def test_default_capacity_fits_rlimit_nofile() -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_capacity() <= max(16, soft - 64)
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256));"
        "from cgstats._fileio import default_capacity; print(default_capacity())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "192"
