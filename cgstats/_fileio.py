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

Files that are always read together (one container's counters) can be held
as one :class:`FileGroup`: one LRU entry, one lookup and one timestamp per
read instead of one per file, which is most of the cache's own cost on the
per-sample path.
"""

from __future__ import annotations

import operator
import os
import resource
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
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


class FileGroup:
    """Paths read together by :meth:`FileCache.read_group`, held as one LRU entry.

    Compared by identity: each holder makes its own group.
    """

    __slots__ = ("paths",)

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = tuple(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"<FileGroup of {len(self.paths)} files>"


class FileCache:
    """A bounded LRU of open read-only descriptors keyed by path.

    ``capacity`` (default: :func:`default_capacity`) bounds the descriptors;
    ``evict_idle_s`` is how long the least recently used one must have been
    idle before it is closed for a new file. Not thread-safe: one cache
    belongs to one reading thread (a ``Host``).
    """

    __slots__ = ("_capacity", "_entries", "_evict_idle_s", "_held")

    def __init__(
        self, capacity: int | None = None, evict_idle_s: float = DEFAULT_EVICT_IDLE_S
    ) -> None:
        self._capacity = default_capacity() if capacity is None else max(1, capacity)
        self._evict_idle_s = evict_idle_s
        # path -> [fd, buffer size that last held the whole file, last use (monotonic)];
        # FileGroup -> [[fd or -1 per path], [buffer size per path], last use].
        self._entries: OrderedDict[Hashable, list[Any]] = OrderedDict()
        # Descriptors held or reserved (a group reserves one per path).
        self._held = 0

    @property
    def capacity(self) -> int:
        """The most descriptors held open at once."""
        return self._capacity

    def __len__(self) -> int:
        """Descriptors held (or reserved by groups)."""
        return self._held

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def read(self, path: str) -> bytes:
        """The whole current content of ``path``; ``OSError`` propagates."""
        entry = self._entries.get(path)
        if entry is not None:
            # The kept file of one path (net/dev on every sample): no list.
            try:
                data = os.pread(entry[0], entry[1], 0)
            except OSError:
                pass  # read_many closes it and reports the error
            else:
                if len(data) < entry[1]:
                    self._entries.move_to_end(path)
                    entry[2] = time.monotonic()
                    return data
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

    def read_group(self, group: FileGroup) -> list[Union[bytes, OSError]]:
        """:meth:`read_many` of ``group.paths``, kept open together as one entry.

        A file that cannot be opened or read gives its ``OSError`` in place
        and is opened again at the next read. When the cache cannot make room
        for the whole group, every file is read with open/read/close.
        """
        entry = self._entries.get(group)
        if entry is None:
            entry = self._admit_group(group, time.monotonic())
            if entry is None:
                return [_read_once_or_error(path) for path in group.paths]
        else:
            self._entries.move_to_end(group)
            entry[2] = time.monotonic()
        fds, sizes = entry[0], entry[1]
        pread = os.pread
        if -1 not in fds:
            # The hot path: every file open, one pread each, none fills its buffer.
            try:
                fast: list[Union[bytes, OSError]] = [
                    pread(fd, size, 0) for fd, size in zip(fds, sizes)
                ]
            except OSError:
                pass  # the loop below reads them again, and tells which failed
            else:
                if all(map(operator.lt, map(len, fast), sizes)):  # type: ignore[arg-type]
                    return fast
        results: list[Union[bytes, OSError]] = []
        append = results.append
        for fd, size in zip(fds, sizes):
            if fd >= 0:
                try:
                    data = pread(fd, size, 0)
                except OSError:
                    pass  # handled, and its descriptor closed, below
                else:
                    if len(data) < size:
                        append(data)
                        continue
            # Rare: not open, failed, or filled its buffer. Redo it carefully.
            append(_read_entry_file(group.paths, fds, sizes, len(results)))
        return results

    def _make_room(self, needed: int, now: float) -> bool:
        """Close idle least recently used entries until ``needed`` more fit."""
        entries = self._entries
        while self._held + needed > self._capacity:
            if not entries:
                return False
            oldest_key, oldest = next(iter(entries.items()))
            if now - oldest[2] < self._evict_idle_s:
                return False
            del entries[oldest_key]
            self._release(oldest_key, oldest)
        return True

    def _admit(self, path: str, now: float) -> list[Any] | None:
        """Open ``path`` and keep it, or ``None`` when no descriptor may be freed."""
        if not self._make_room(1, now):
            return None
        entry = [os.open(path, _FLAGS), INITIAL_BUFFER, now]
        self._entries[path] = entry
        self._held += 1
        return entry

    def _admit_group(self, group: FileGroup, now: float) -> list[Any] | None:
        """Open every file of ``group`` (-1 where that fails), or ``None`` if no room."""
        if not self._make_room(len(group.paths), now):
            return None
        fds = []
        for path in group.paths:
            try:
                fds.append(os.open(path, _FLAGS))
            except OSError:
                fds.append(-1)  # its error is reported by the read that follows
        entry = [fds, [INITIAL_BUFFER] * len(fds), now]
        self._entries[group] = entry
        self._held += len(fds)
        return entry

    def _release(self, key: Hashable, entry: list[Any]) -> None:
        """Close the descriptors of an entry already removed from the LRU."""
        if isinstance(key, FileGroup):
            self._held -= len(entry[0])
            for fd in entry[0]:
                if fd >= 0:
                    os.close(fd)
        else:
            self._held -= 1
            os.close(entry[0])

    def forget(self, key: Union[str, FileGroup]) -> None:
        """Close the descriptor of a path, or those of a group, if held."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._release(key, entry)

    def forget_all(self, paths: Iterable[str]) -> None:
        """Close the descriptors of every path in ``paths``."""
        for path in paths:
            self.forget(path)

    def close(self) -> None:
        """Close every held descriptor."""
        while self._entries:
            key, entry = self._entries.popitem()
            self._release(key, entry)


def _read_entry_file(
    paths: tuple[str, ...], fds: list[int], sizes: list[int], index: int
) -> Union[bytes, OSError]:
    """Read file ``index`` of a group entry: reopen it if needed, grow its buffer.

    A failure closes its descriptor (marked -1, reopened next time), as a
    failed single file is forgotten.
    """
    fd, size = fds[index], sizes[index]
    try:
        if fd < 0:
            fd = fds[index] = os.open(paths[index], _FLAGS)
        data = os.pread(fd, size, 0)
        while len(data) >= size:
            # The file filled the buffer: it may be longer. Grow and re-read.
            size *= 2
            data = os.pread(fd, size, 0)
    except OSError as err:
        if fd >= 0:
            os.close(fd)
            fds[index] = -1
        return err
    sizes[index] = size
    return data


def _read_once_or_error(path: str) -> Union[bytes, OSError]:
    try:
        return _read_once(path)
    except OSError as err:
        return err


def read_unkept(paths: Iterable[str]) -> list[Union[bytes, OSError]]:
    """open/read/close of each path, a failure in its place: for files read
    too rarely to be worth a descriptor."""
    return [_read_once_or_error(path) for path in paths]


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
