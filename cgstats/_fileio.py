"""Kept-open files re-read with ``os.pread`` at offset 0.

cgroupfs (kernfs seq_file) and ``/proc/<pid>/net/dev`` regenerate their
content on every read at offset 0, so a file opened once can be re-read for
the cost of one system call.

The cache bounds how many descriptors are held. When it is full, the least
recently used descriptor is closed to make room, provided it has been idle
for ``evict_idle_s``; if even that one is still in use (a poller cycling over
more files than the bound), the new file is read with open/read/close
instead, so a cyclic scan keeps the descriptors it has rather than closing
and reopening all of them on every pass.
"""

from __future__ import annotations

import os
import resource
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Union

INITIAL_BUFFER = 4096
DEFAULT_EVICT_IDLE_S = 60.0
# Least headroom left for the embedding program's own files.
_RESERVED_DESCRIPTORS = 64
_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW


def default_capacity() -> int:
    """RLIMIT_NOFILE's soft limit less an eighth (at least 64) left to the
    embedding program; never below 16."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, soft - max(_RESERVED_DESCRIPTORS, soft // 8))


class FileCache:
    """A bounded LRU of open read-only descriptors keyed by path.

    ``capacity`` (default: :func:`default_capacity`) bounds the descriptors;
    ``evict_idle_s`` is how long the least recently used one must have been
    idle before it is closed for a new file. Not thread-safe: one cache
    belongs to one reading thread (a ``Host``).
    """

    __slots__ = ("_capacity", "_entries", "_evict_idle_s")

    def __init__(
        self, capacity: int | None = None, evict_idle_s: float = DEFAULT_EVICT_IDLE_S
    ) -> None:
        self._capacity = default_capacity() if capacity is None else max(1, capacity)
        self._evict_idle_s = evict_idle_s
        # path -> [fd, buffer size that last held the whole file, last use (monotonic)]
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()

    @property
    def capacity(self) -> int:
        """The most descriptors held open at once."""
        return self._capacity

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def read(self, path: str) -> bytes:
        """The whole current content of ``path``; ``OSError`` propagates."""
        result = self.read_many([path])[0]
        if isinstance(result, OSError):
            raise result
        return result

    def read_many(self, paths: list[str]) -> list[Union[bytes, OSError]]:
        """:meth:`read` of each path in turn; a failure is returned in its place.

        The per-sample hot path: one call for all of a container's files.
        """
        results: list[Union[bytes, OSError]] = []
        entries = self._entries
        pread = os.pread
        now = time.monotonic()
        for path in paths:
            entry = entries.get(path)
            try:
                if entry is None:
                    entry = self._admit(path, now)
                    if entry is None:
                        results.append(_read_once(path))
                        continue
                else:
                    entries.move_to_end(path)
                    entry[2] = now
                fd, size, _used = entry
                data = pread(fd, size, 0)
                if len(data) >= size:
                    # The file filled the buffer: it may be longer. Grow and re-read.
                    while len(data) >= size:
                        size *= 2
                        data = pread(fd, size, 0)
                    entry[1] = size
            except OSError as err:
                self.forget(path)
                results.append(err)
                continue
            results.append(data)
        return results

    def _admit(self, path: str, now: float) -> list[Any] | None:
        """Open ``path`` and keep it, or ``None`` when no descriptor may be freed."""
        entries = self._entries
        while len(entries) >= self._capacity:
            oldest_path, oldest = next(iter(entries.items()))
            if now - oldest[2] < self._evict_idle_s:
                return None
            del entries[oldest_path]
            os.close(oldest[0])
        entry = [os.open(path, _FLAGS), INITIAL_BUFFER, now]
        entries[path] = entry
        return entry

    def forget(self, path: str) -> None:
        """Close the descriptor of ``path`` if one is held."""
        entry = self._entries.pop(path, None)
        if entry is not None:
            os.close(entry[0])

    def forget_all(self, paths: Iterable[str]) -> None:
        """Close the descriptors of every path in ``paths``."""
        for path in paths:
            self.forget(path)

    def close(self) -> None:
        """Close every held descriptor."""
        while self._entries:
            _path, entry = self._entries.popitem()
            os.close(entry[0])


def _read_once(path: str) -> bytes:
    """open/read/close, for a file the cache has no room to keep."""
    fd = os.open(path, _FLAGS)
    try:
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)
