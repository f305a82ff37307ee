"""Kept-open files re-read with ``os.pread`` at offset 0.

cgroupfs (kernfs seq_file) and ``/proc/<pid>/net/dev`` regenerate their
content on every read at offset 0, so a file opened once can be re-read for
the cost of one system call. The cache bounds how many descriptors are held:
the least recently used one is closed first, and reopened on its next read.
"""

from __future__ import annotations

import os
import resource
from collections import OrderedDict
from collections.abc import Iterable

INITIAL_BUFFER = 4096
# Headroom left for the embedding program's own files.
_RESERVED_DESCRIPTORS = 64


def default_capacity() -> int:
    """Half of RLIMIT_NOFILE's soft limit (never below 16), the default bound."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, min(soft // 2, soft - _RESERVED_DESCRIPTORS))


class FileCache:
    """A bounded LRU of open read-only descriptors keyed by path.

    Not thread-safe: one cache belongs to one reading thread (a ``Host``).
    ``OSError`` from open or read propagates; callers translate it.
    """

    __slots__ = ("_capacity", "_entries")

    def __init__(self, capacity: int | None = None) -> None:
        self._capacity = default_capacity() if capacity is None else max(1, capacity)
        # path -> [fd, buffer size that last held the whole file]
        self._entries: OrderedDict[str, list[int]] = OrderedDict()

    @property
    def capacity(self) -> int:
        """The most descriptors held open at once."""
        return self._capacity

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def read(self, path: str) -> bytes:
        """The whole current content of ``path``."""
        entry = self._entries.get(path)
        if entry is None:
            entry = self._open(path)
        else:
            self._entries.move_to_end(path)
        fd, size = entry
        try:
            data = os.pread(fd, size, 0)
            while len(data) >= size:
                # The file filled the buffer: it may be longer. Grow and re-read.
                size *= 2
                data = os.pread(fd, size, 0)
        except OSError:
            self.forget(path)
            raise
        entry[1] = size
        return data

    def _open(self, path: str) -> list[int]:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        while len(self._entries) >= self._capacity:
            _path, (old_fd, _size) = self._entries.popitem(last=False)
            os.close(old_fd)
        entry = [fd, INITIAL_BUFFER]
        self._entries[path] = entry
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
            _path, (fd, _size) = self._entries.popitem()
            os.close(fd)
