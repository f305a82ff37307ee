"""The spool: items no transfer could take, kept in msgpack files until one can.

One file per chunk, named by a 20-digit number that grows with the time of
writing (``01764870000123456789.spool``), so that name order is age
order. A file is written under a temporary name (``.NAME.tmp``), synced, and
renamed when complete: a crash mid-write leaves only a ``.tmp`` file, which
the next start sets aside. Each file is a msgpack header map (format,
version, counts, body length, CRC-32 of the body) followed by the body, so a
truncated or damaged file is recognised before any of it is replayed; such a
file is renamed to ``NAME.corrupt`` with a warning and never read again.

The directory is locked (``flock`` on ``.lock``) by the one process that
uses it. The spool keeps at most ``max_bytes`` of ``.spool`` files: writing
past that removes the oldest files first (their items are reported as
dropped). A file being replayed is pinned and never removed by the cap.

Body layout: a list of units ``[key, groups]``; a group holds the fields its
items share and their ``[metric, value]`` pairs:
``[endpoint, step, counterType, tags, timestamp, [[metric, value], ...]]``.
The items of one reading share all five, so an item costs little more than
its metric name and value.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import attrs
import msgpack  # type: ignore[import-untyped]

log = logging.getLogger("cgstats.sinks.falcon")

FORMAT = "cgstats.falcon.spool"
VERSION = 1
SUFFIX = ".spool"
CORRUPT_SUFFIX = ".corrupt"
TEMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"
# A header is a small map; more than this before it ends means garbage.
_HEADER_MAX_BYTES = 4096
_NAME_DIGITS = 20

Item = dict[str, Any]
Unit = tuple[str, list[Item]]  # (ring key, items)


class SpoolCorrupt(Exception):
    """A spool file that cannot be read back: truncated, damaged, or not a spool file."""


class SpoolBusy(RuntimeError):
    """Another process (or another sink in this one) holds the spool directory."""


@attrs.frozen
class SpoolFile:
    """One complete spool file: its name in the directory, size (bytes) and item count."""

    name: str
    size_bytes: int
    items: int


@attrs.frozen
class WriteResult:
    """What :meth:`Spool.write` did: the files written, the older files the cap
    removed to make room, and the items of units too large for the cap alone."""

    written: tuple[SpoolFile, ...]
    removed: tuple[SpoolFile, ...]
    unwritten_items: int = 0


# -- the file format (pure) ---------------------------------------------------


def encode(units: Sequence[Unit]) -> bytes:
    """A complete spool file holding ``units``."""
    body_units = []
    items = 0
    for key, unit_items in units:
        groups: dict[tuple[Any, ...], list[list[Any]]] = {}
        for item in unit_items:
            shared = (
                item["endpoint"],
                item["step"],
                item["counterType"],
                item["tags"],
                item["timestamp"],
            )
            groups.setdefault(shared, []).append([item["metric"], item["value"]])
        body_units.append([key, [[*shared, pairs] for shared, pairs in groups.items()]])
        items += len(unit_items)
    body: bytes = msgpack.packb(body_units, use_bin_type=True)
    header: bytes = msgpack.packb(
        {
            "format": FORMAT,
            "version": VERSION,
            "units": len(body_units),
            "items": items,
            "body_bytes": len(body),
            "crc32": zlib.crc32(body),
        },
        use_bin_type=True,
    )
    return header + body


def read_header(data: bytes) -> tuple[dict[str, Any], int]:
    """The header of a spool file's first bytes, and its length; :class:`SpoolCorrupt` if none."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=_HEADER_MAX_BYTES)
    try:
        unpacker.feed(data[:_HEADER_MAX_BYTES])
        header = unpacker.unpack()
    except msgpack.OutOfData as error:
        raise SpoolCorrupt("truncated header") from error
    except Exception as error:  # msgpack raises several types for garbage
        raise SpoolCorrupt(f"no header ({type(error).__name__}: {error})") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SpoolCorrupt("not a cgstats spool file")
    if header.get("version") != VERSION:
        raise SpoolCorrupt(f"spool format version {header.get('version')!r}, not {VERSION}")
    for field in ("units", "items", "body_bytes", "crc32"):
        value = header.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SpoolCorrupt(f"header field {field} is {value!r}")
    return header, unpacker.tell()


def decode(data: bytes) -> list[Unit]:
    """The units of a complete spool file; :class:`SpoolCorrupt` unless it is whole and intact."""
    header, offset = read_header(data)
    body = data[offset:]
    if len(body) != header["body_bytes"]:
        raise SpoolCorrupt(f"body is {len(body)} bytes, the header says {header['body_bytes']}")
    if zlib.crc32(body) != header["crc32"]:
        raise SpoolCorrupt("body checksum mismatch")
    try:
        body_units = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as error:
        raise SpoolCorrupt(f"body does not decode ({type(error).__name__}: {error})") from error
    units = _units(body_units)
    count = sum(len(items) for _key, items in units)
    if len(units) != header["units"] or count != header["items"]:
        raise SpoolCorrupt(f"{len(units)} units of {count} items, the header says otherwise")
    return units


def _units(body_units: Any) -> list[Unit]:
    """Items rebuilt from the body; :class:`SpoolCorrupt` on any unexpected shape."""
    if not isinstance(body_units, list):
        raise SpoolCorrupt("body is not a list")
    units: list[Unit] = []
    for unit in body_units:
        if not (isinstance(unit, list) and len(unit) == 2 and isinstance(unit[0], str)):
            raise SpoolCorrupt("a unit is not [key, groups]")
        key, groups = unit
        if not isinstance(groups, list):
            raise SpoolCorrupt("a unit's groups are not a list")
        items: list[Item] = []
        for group in groups:
            if not (isinstance(group, list) and len(group) == 6 and isinstance(group[5], list)):
                raise SpoolCorrupt("a group is not [endpoint, step, type, tags, timestamp, pairs]")
            endpoint, step, counter_type, tags, timestamp, pairs = group
            for pair in pairs:
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise SpoolCorrupt("an item is not [metric, value]")
                items.append(
                    {
                        "endpoint": endpoint,
                        "metric": pair[0],
                        "value": pair[1],
                        "step": step,
                        "counterType": counter_type,
                        "tags": tags,
                        "timestamp": timestamp,
                    }
                )
        units.append((key, items))
    return units


# -- the directory ---------------------------------------------------------------


class Spool:
    """A spool directory with a byte cap; thread-safe.

    Opening it takes the directory's lock (:class:`SpoolBusy` if another
    holder has it) and indexes the files there, setting aside leftovers of
    interrupted writes and files whose header is unreadable. ``fsync`` makes
    each write durable (file and directory) before it counts as spooled.
    """

    def __init__(self, directory: str, max_bytes: int, *, fsync: bool = True) -> None:
        if max_bytes < 1:
            raise ValueError(f"spool max_bytes must be >= 1, not {max_bytes}")
        self.directory = os.path.abspath(directory)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.corrupt_files = 0  # set aside since this spool was opened
        self._lock = threading.Lock()
        self._files: list[SpoolFile] = []  # oldest first
        self._pinned: set[str] = set()
        self._last_number = 0
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._lock_file = open(os.path.join(self.directory, LOCK_NAME), "a")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            self._lock_file.close()
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SpoolBusy(f"spool directory {self.directory} is in use") from error
            raise
        try:
            self._index()
        except BaseException:
            self.close()
            raise

    # -- state ----------------------------------------------------------------

    @property
    def files(self) -> list[SpoolFile]:
        """The complete spool files, oldest first."""
        with self._lock:
            return list(self._files)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(f.size_bytes for f in self._files)

    @property
    def total_items(self) -> int:
        with self._lock:
            return sum(f.items for f in self._files)

    def path(self, file: SpoolFile) -> str:
        return os.path.join(self.directory, file.name)

    # -- writing ----------------------------------------------------------------

    def write(self, units: Sequence[Unit]) -> WriteResult:
        """Store ``units`` in a new file, removing the oldest files past the cap.

        Units that together exceed the cap are split over several files, in
        order; a single unit larger than the cap is not written (counted in
        :attr:`WriteResult.unwritten_items`).
        """
        data = encode(units)
        if len(data) > self.max_bytes:
            if len(units) > 1:
                half = len(units) // 2
                first, second = self.write(units[:half]), self.write(units[half:])
                return WriteResult(
                    first.written + second.written,
                    first.removed + second.removed,
                    first.unwritten_items + second.unwritten_items,
                )
            items = sum(len(unit_items) for _key, unit_items in units)
            log.warning(
                "spool: %d items of one container are %d bytes, over the %d-byte cap: dropped",
                items,
                len(data),
                self.max_bytes,
            )
            return WriteResult((), (), items)
        with self._lock:
            number = max(time.time_ns(), self._last_number + 1)
            self._last_number = number
            removed = self._make_room(len(data))
        name = f"{number:0{_NAME_DIGITS}d}{SUFFIX}"
        self._store(name, data)
        written = SpoolFile(name, len(data), sum(len(unit_items) for _key, unit_items in units))
        with self._lock:
            self._files.append(written)
            self._files.sort(key=lambda f: f.name)
        return WriteResult((written,), tuple(removed))

    def _make_room(self, size: int) -> list[SpoolFile]:
        """Remove the oldest unpinned files until ``size`` more bytes fit (under the lock)."""
        removed = []
        total = sum(f.size_bytes for f in self._files)
        for file in list(self._files):
            if total + size <= self.max_bytes:
                break
            if file.name in self._pinned:
                continue
            self._unlink(file.name)
            self._files.remove(file)
            total -= file.size_bytes
            removed.append(file)
        if removed:
            log.warning(
                "spool: over its %d-byte cap, removed the %d oldest file(s), %d items",
                self.max_bytes,
                len(removed),
                sum(f.items for f in removed),
            )
        return removed

    def _store(self, name: str, data: bytes) -> None:
        temp = os.path.join(self.directory, f".{name}{TEMP_SUFFIX}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                if self.fsync:
                    os.fsync(out.fileno())
            os.replace(temp, os.path.join(self.directory, name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        if self.fsync:
            self._sync_directory()

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading ------------------------------------------------------------------

    def oldest(self) -> Optional[SpoolFile]:
        """The oldest file not being replayed, or ``None``."""
        with self._lock:
            for file in self._files:
                if file.name not in self._pinned:
                    return file
        return None

    def load(self, file: SpoolFile) -> list[Unit]:
        """Read ``file`` back and pin it (the cap leaves it alone until :meth:`remove`
        or :meth:`unpin`). A file that cannot be read back is set aside and
        :class:`SpoolCorrupt` raised."""
        with self._lock:
            self._pinned.add(file.name)
        try:
            with open(self.path(file), "rb") as source:
                return decode(source.read())
        except (SpoolCorrupt, OSError) as error:
            self.set_aside(file, str(error))
            raise SpoolCorrupt(f"{file.name}: {error}") from error

    def unpin(self, file: SpoolFile) -> None:
        """Give ``file`` back to the spool (its replay did not finish)."""
        with self._lock:
            self._pinned.discard(file.name)

    def remove(self, file: SpoolFile) -> None:
        """Delete ``file`` (replayed)."""
        with self._lock:
            self._pinned.discard(file.name)
            if file in self._files:
                self._files.remove(file)
            self._unlink(file.name)

    def set_aside(self, file: SpoolFile, why: str) -> None:
        """Rename a file that cannot be read back to ``NAME.corrupt`` and forget it."""
        with self._lock:
            self._pinned.discard(file.name)
            if file in self._files:
                self._files.remove(file)
            self._set_aside(file.name, why)

    def _set_aside(self, name: str, why: str) -> None:
        base = name[: -len(TEMP_SUFFIX)].lstrip(".") if name.endswith(TEMP_SUFFIX) else name
        target = os.path.join(self.directory, base + CORRUPT_SUFFIX)
        try:
            os.replace(os.path.join(self.directory, name), target)
        except OSError as error:
            log.warning("spool: cannot set %s aside: %s", name, error)
        self.corrupt_files += 1
        log.warning("spool: skipped %s (%s), kept as %s", name, why, os.path.basename(target))

    def _unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.directory, name))

    def _index(self) -> None:
        """Index the directory: complete files by name; leftovers and bad headers set aside."""
        for name in sorted(_listing(self.directory)):
            if name.endswith(TEMP_SUFFIX):
                self._set_aside(name, "left by an interrupted write")
                continue
            if not name.endswith(SUFFIX):
                continue
            stem = name[: -len(SUFFIX)]
            path = os.path.join(self.directory, name)
            try:
                with open(path, "rb") as source:
                    header, offset = read_header(source.read(_HEADER_MAX_BYTES))
                size = os.stat(path).st_size
            except (SpoolCorrupt, OSError) as error:
                self._set_aside(name, str(error))
                continue
            if size != offset + header["body_bytes"]:
                self._set_aside(
                    name, f"{size} bytes, the header says {offset + header['body_bytes']}"
                )
                continue
            self._files.append(SpoolFile(name, size, header["items"]))
            if stem.isdigit():
                self._last_number = max(self._last_number, int(stem))

    def close(self) -> None:
        """Release the directory's lock."""
        with contextlib.suppress(OSError, ValueError):
            self._lock_file.close()


def _listing(directory: str) -> Iterator[str]:
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                yield entry.name
