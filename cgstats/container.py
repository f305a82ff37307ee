"""A container handle: its cgroup directories, a file plan, and the fast read.

Opening probes once which files exist in each of the container's
directories and fixes the list of files to read (the plan); every
:meth:`Container.read` then re-reads those files through the host's
:class:`~cgstats._fileio.FileCache` and hands their text to the pure readers.

The plan has two parts. Counters (usage, statistics, events, pressure) are
read on every sample, from descriptors kept open as one group. Limits and
settings written by the runtime (``cpu.cfs_quota_us``, ``cpu.shares``,
``cpuset.effective_cpus``, ``memory.limit_in_bytes``, ``pids.max``,
``cpu.max``, ``memory.max`` ...; the readers' ``LIMIT_FILES``) are re-read
with open/read/close only when the last reading is ``Host.limits_max_age_s``
old (10 s by default, the collector's rescan period), and the text read then
is parsed again in between. So a limit changed by ``docker update`` shows in
samples at most that long afterwards; every sample still carries every field.
``limits_max_age_s=0`` re-reads them on every sample.

A section (cpu, memory, blkio, pids, pressure; the interfaces of net) whose
files read byte for byte as at the container's previous sample is not parsed
again: its record is the previous one (a copy where it holds dicts, so no two
samples share a mutable object). The readers are pure functions of the text,
so this gives exactly the record parsing would; it saves most of the Python
work for idle containers, and nothing for a section whose counters moved.
``Host(reuse_unchanged=False)`` parses everything on every sample.
"""

from __future__ import annotations

import errno
import operator
import os
import time
import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union

import attrs

from cgstats._closing import Closing
from cgstats._fileio import FileGroup, read_unkept
from cgstats.discovery import identify, parse_proc_cgroup, parse_spec
from cgstats.errors import ContainerGone, ParseError
from cgstats.model import CpuStats, MemoryStats, NetInterface, NetStats, Sample
from cgstats.readers import blkio, cpu, memory, pids, pressure
from cgstats.readers.net import parse_net_dev, parse_netns_link

if TYPE_CHECKING:
    from cgstats.host import Host
    from cgstats.mounts import Hierarchy

# errno values that mean "the cgroup is being or has been removed".
_GONE = (errno.ENODEV, errno.ENOENT)
# errno values of a pressure file when PSI is compiled in but disabled.
_PSI_OFF = (errno.ENOTSUP, errno.EOPNOTSUPP)
_UNIFIED = "unified:"

_V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "blkio", "pids")
_LIMIT_FILES = frozenset(cpu.LIMIT_FILES + memory.LIMIT_FILES + pids.LIMIT_FILES)

R = TypeVar("R")


@attrs.frozen
class ContainerRef:
    """A resolved container: who it is and where its cgroup lives.

    ``cgroup`` is the cgroup path in the primary hierarchy (the v2 tree on
    unified hosts) and ``directory`` its directory; ``paths`` holds the
    per-hierarchy cgroup paths when they are known (from ``pid:N``), keyed as
    in ``/proc/<pid>/cgroup``.
    """

    id: str
    runtime: Optional[str]
    cgroup: str
    directory: str
    pod_uid: Optional[str] = None
    paths: Mapping[str, str] = attrs.field(factory=dict, eq=False)


#: What names a container to watch: a spec :meth:`cgstats.Host.resolve` takes, or a ref.
ContainerSpec = Union[str, ContainerRef]


def checked_spec(spec: ContainerSpec) -> ContainerSpec:
    """``spec`` if it names a container at all, checked before any path is opened.

    Raises :class:`~cgstats.InvalidContainerId` for a str that is no
    container name, :class:`TypeError` for anything but a str or a ref.
    """
    if isinstance(spec, ContainerRef):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a container is named by a str or a ContainerRef, not {type(spec)}")
    parse_spec(spec)
    return spec


def spec_key(spec: ContainerSpec) -> object:
    """A dict key for ``spec``: the name itself, or its cgroup for a ref."""
    return spec if isinstance(spec, str) else ("ref", spec.cgroup)


class Container(Closing):
    """An open container. Use :meth:`read`; close with :meth:`close` or ``with``."""

    def __init__(self, host: Host, ref: ContainerRef) -> None:
        self.host = host
        self.ref = ref
        self.version = 2 if host.mode == "unified" else 1
        try:
            self.inode = os.stat(ref.directory).st_ino
        except OSError as err:
            raise ContainerGone(ref.id, f"{ref.directory}: {err.strerror}") from None
        self._procs_path = os.path.join(ref.directory, "cgroup.procs")
        self._dirs = self._directories()
        listings = {directory: self._listing(directory) for directory in set(self._dirs.values())}
        self._plan: list[tuple[str, str]] = []
        # (throttle bytes file, the hierarchy root's recursive one) on v1 throttle hosts
        self._blkio_root: Optional[tuple[str, str]] = None
        self._sections = self._make_plan(listings)
        counters = [(key, path) for key, path in self._plan if key not in _LIMIT_FILES]
        limits = [(key, path) for key, path in self._plan if key in _LIMIT_FILES]
        self._keys = [key for key, _path in counters]
        self._group = FileGroup([path for _key, path in counters])
        self._limit_keys = [key for key, _path in limits]
        self._limit_paths = [path for _key, path in limits]
        # The limit files' texts and read errors as of the last refresh.
        self._limit_texts: dict[str, str] = {}
        self._limit_problems: list[str] = []
        self._limits_due = -1.0  # monotonic time of the next refresh; the first read does one
        self._section_keys = {
            name: tuple(key for key, _path in self._plan if _section_of(key) == name)
            for name in self._sections
        }
        # section -> (its files' texts and other inputs, a private copy of its record)
        self._memo: dict[str, tuple[tuple[object, ...], Any]] = {}
        self._net_memo: tuple[str, tuple[NetInterface, ...]] = ("", ())
        self._net_pid: Optional[int] = None
        self._net_link = ""
        self._net_inode = 0
        self._net_paths = ("", "")
        self._closed = False

    # -- opening -------------------------------------------------------------

    def _directories(self) -> dict[str, str]:
        """Directory per controller (``unified`` for the v2 tree on hybrid hosts)."""
        hierarchies = self.host.hierarchies
        if self.version == 2:
            return {"unified": self.ref.directory}
        dirs: dict[str, str] = {}
        proc_paths: Optional[dict[str, str]] = dict(self.ref.paths) or None
        wanted = [(c, hierarchies.for_controller(c)) for c in _V1_CONTROLLERS]
        wanted.append(("unified", hierarchies.v2))
        for controller, hierarchy in wanted:
            if hierarchy is None:
                continue
            key = hierarchy.key
            directory = None
            if proc_paths is not None and key in proc_paths:
                directory = hierarchy.directory(proc_paths[key])
            if directory is None or not os.path.isdir(directory):
                directory = hierarchy.directory(self.ref.cgroup)
            if directory is None or not os.path.isdir(directory):
                # Another hierarchy may place the container elsewhere (a runtime
                # nested under a different parent there): ask one of its processes.
                if proc_paths is None:
                    proc_paths = self._paths_of_a_process()
                path = proc_paths.get(key)
                directory = hierarchy.directory(path) if path else None
            if directory is None or not os.path.isdir(directory):
                directory = self._by_suffix(hierarchy)
            if directory is None or directory == hierarchy.mount_point:
                continue  # not in this hierarchy, or only in its root: the whole host
            if self.host.inside_root(directory, hierarchy):
                dirs[controller] = directory
        return dirs

    def _by_suffix(self, hierarchy: Hierarchy) -> Optional[str]:
        """The container's directory in ``hierarchy`` found by its trailing path.

        Runtimes nest a container under whatever parent the creating process
        had in each hierarchy, so ``/a/b/docker/<id>`` in one may be
        ``/docker/<id>`` in another. Only paths whose leaf carries the
        container's ID are tried, so a match is the same container.
        """
        if identify(self.ref.cgroup) is None:
            return None
        parts = self.ref.cgroup.strip("/").split("/")
        for start in range(1, len(parts)):
            directory = hierarchy.directory("/" + "/".join(parts[start:]))
            if directory is not None and os.path.isdir(directory):
                return directory
        return None

    def _paths_of_a_process(self) -> dict[str, str]:
        for pid in self._pids():
            try:
                with open(self.host.proc_path(pid, "cgroup"), encoding="ascii") as handle:
                    return parse_proc_cgroup(handle.read())
            except (OSError, UnicodeDecodeError):
                continue
        return {}

    def _listing(self, directory: str) -> frozenset[str]:
        try:
            return frozenset(os.listdir(directory))
        except OSError as err:
            if err.errno in _GONE:
                raise ContainerGone(self.ref.id, f"{directory}: {err.strerror}") from None
            return frozenset()  # unreadable: its controller's fields stay None

    def _make_plan(self, listings: Mapping[str, frozenset[str]]) -> dict[str, bool]:
        dirs = self._dirs
        plan = self._plan

        def exists(name: str) -> bool:
            if name.startswith(_UNIFIED):
                directory = dirs.get("unified")
                name = name[len(_UNIFIED) :]
            elif self.version == 2:
                directory = dirs["unified"]
            else:
                directory = dirs.get(name.split(".", 1)[0])
            return directory is not None and name in listings.get(directory, frozenset())

        def add(names: list[str]) -> bool:
            for name in names:
                if name.startswith(_UNIFIED):
                    path = os.path.join(dirs["unified"], name[len(_UNIFIED) :])
                elif self.version == 2:
                    path = os.path.join(dirs["unified"], name)
                else:
                    path = os.path.join(dirs[name.split(".", 1)[0]], name)
                plan.append((name, path))
            return bool(names)

        def existing(names: tuple[str, ...]) -> list[str]:
            return [name for name in names if exists(name)]

        if self.version == 2:
            return {
                "cpu": add(existing(cpu.V2_FILES)) and exists("cpu.stat"),
                "memory": add(existing(memory.V2_FILES)) and exists("memory.current"),
                "blkio": add(existing(blkio.V2_FILES)),
                "pids": add(existing(pids.FILES)) and exists("pids.current"),
                "pressure": add(existing(pressure.V2_FILES)),
            }
        blkio_files = blkio.v1_files(exists)
        blkio_hierarchy = self.host.hierarchies.for_controller("blkio")
        if blkio_files and ".throttle." in blkio_files[0] and blkio_hierarchy is not None:
            root_path = os.path.join(blkio_hierarchy.mount_point, blkio.THROTTLE_ROOT_FILE)
            self._blkio_root = (blkio_files[0], root_path)
        has_cpu = "cpu" in dirs or "cpuacct" in dirs
        if has_cpu:
            add(cpu.v1_files(exists))
        return {
            "cpu": has_cpu,
            "memory": add(existing(memory.V1_FILES)) or "memory" in dirs,
            "blkio": add(blkio_files) or "blkio" in dirs,
            "pids": add(existing(pids.FILES)) or "pids" in dirs,
            "pressure": add(existing(pressure.HYBRID_FILES)),
        }

    # -- reading -------------------------------------------------------------

    def read(self) -> Sample:
        """Read every counter now.

        Limit and setting fields are as read at most ``Host.limits_max_age_s``
        ago (the first read of a container reads them too). Raises
        :class:`ContainerGone` when the cgroup has been removed. Files that
        cannot be read or parsed leave their fields ``None`` and are listed in
        ``Sample.errors``.
        """
        if self._closed:
            raise ValueError("read() on a closed Container")
        timestamp = time.time()
        problems: list[str] = []
        datas = self.host.files.read_group(self._group)
        try:
            texts = dict(zip(self._keys, [data.decode("ascii", "replace") for data in datas]))  # type: ignore[union-attr]
        except AttributeError:  # an OSError in place of a file's bytes
            texts = {}
            for key, data in zip(self._keys, datas):
                if isinstance(data, bytes):
                    texts[key] = data.decode("ascii", "replace")
                else:
                    self._failed(key, data, problems)
        if self._limit_keys:
            self._add_limits(texts, problems)
        throttle_counted = True
        if self._blkio_root is not None:
            bytes_file, root_path = self._blkio_root
            if blkio.lists_no_device(texts.get(bytes_file, ":")):
                throttle_counted = self.host.v1_throttle_counted(root_path)
        sections = self._sections
        section = self._section
        reuse = self.host.reuse_unchanged
        return Sample(
            id=self.ref.id,
            runtime=self.ref.runtime,
            cgroup=self.ref.cgroup,
            cgroup_version=self.version,
            timestamp=timestamp,
            cpu=section("cpu", texts, problems, reuse) if sections["cpu"] else None,
            memory=section("memory", texts, problems, reuse) if sections["memory"] else None,
            blkio=(
                section("blkio", texts, problems, reuse, throttle_counted)
                if sections["blkio"]
                else None
            ),
            net=self._read_net(problems),
            pids=section("pids", texts, problems, reuse) if sections["pids"] else None,
            pressure=(
                section("pressure", texts, problems, reuse) if sections["pressure"] else None
            ),
            pod_uid=self.ref.pod_uid,
            errors=tuple(problems),
        )

    def _section(
        self,
        name: str,
        texts: Mapping[str, str],
        problems: list[str],
        reuse: bool,
        throttle_counted: bool = True,
    ) -> Any:
        """The section's record: built from ``texts``, or the previous one if its
        files (and ``throttle_counted``, the other input of blkio) are unchanged."""
        if not reuse:
            # A memo entry left from before is harmless: it is used only for
            # inputs equal to those it was built from.
            return self._build(name, texts, problems, throttle_counted)
        inputs = (throttle_counted, *map(texts.get, self._section_keys[name]))
        kept = self._memo.get(name)
        if kept is not None and kept[0] == inputs:
            return _fresh(kept[1])
        before = len(problems)
        record = self._build(name, texts, problems, throttle_counted)
        # A section that reported a problem is built again each time, so that
        # every sample lists it.
        if len(problems) == before:
            self._memo[name] = (inputs, _fresh(record))
        else:
            self._memo.pop(name, None)
        return record

    def _build(
        self, name: str, texts: Mapping[str, str], problems: list[str], throttle_counted: bool
    ) -> Any:
        """Run the reader of section ``name`` for this container's cgroup version."""
        host = self.host
        v2 = self.version == 2
        if name == "cpu":
            if v2:
                return cpu.build_v2(texts, problems, host_cpus=host.cpu_count)
            return cpu.build_v1(
                texts, problems, host_cpus=host.cpu_count, clock_ticks=host.clock_ticks
            )
        if name == "memory":
            return memory.build_v2(texts, problems) if v2 else memory.build_v1(texts, problems)
        if name == "blkio":
            if v2:
                return blkio.build_v2(texts, problems, host.device_name)
            return blkio.build_v1(texts, problems, host.device_name, throttle_counted)
        if name == "pids":
            return pids.build(texts, problems)
        return pressure.build(texts, problems) if v2 else pressure.build(texts, problems, _UNIFIED)

    def _add_limits(self, texts: dict[str, str], problems: list[str]) -> None:
        """The limit files' texts: read now if the last reading is too old, else kept."""
        now = time.monotonic()
        if now >= self._limits_due:
            limit_texts: dict[str, str] = {}
            limit_problems: list[str] = []
            for key, data in zip(self._limit_keys, read_unkept(self._limit_paths)):
                if isinstance(data, OSError):
                    self._failed(key, data, limit_problems)
                else:
                    limit_texts[key] = data.decode("ascii", "replace")
            self._limit_texts, self._limit_problems = limit_texts, limit_problems
            max_age = self.host.limits_max_age_s
            if self._limits_due < 0:
                # Spread the refreshes of containers opened together over the
                # period, by a fixed phase per container, rather than reading
                # every container's limits on the same sample.
                max_age *= (zlib.crc32(self.ref.id.encode()) % 1000 + 1) / 1000
            self._limits_due = now + max_age
        texts.update(self._limit_texts)
        problems += self._limit_problems

    def _failed(self, key: str, err: OSError, problems: list[str]) -> None:
        """Turn a failed read into ContainerGone, nothing (PSI off), or a problem line."""
        if err.errno in _GONE and (
            err.errno == errno.ENODEV or not os.path.isdir(self.ref.directory)
        ):
            self.close()
            raise ContainerGone(self.ref.id, f"{key}: {err.strerror}") from None
        if err.errno in _PSI_OFF and key.endswith(".pressure"):
            return  # PSI disabled on this kernel (psi=0): no pressure, no error
        problems.append(f"{key}: {err.strerror or err}")

    def _pids(self) -> list[int]:
        """Processes of the container's cgroup (of its child cgroups if it has none)."""
        found = self._procs_of(self._procs_path)
        if found:
            return found
        for child in _children(self.ref.directory):
            found = self._procs_of(os.path.join(child, "cgroup.procs"))
            if found:
                return found
        return []

    def _procs_of(self, path: str) -> list[int]:
        # Read only to pick the process whose net/dev is read, which happens
        # once unless that process exits: not worth a kept descriptor.
        data = read_unkept([path])[0]
        if isinstance(data, OSError):
            return []
        return [int(token) for token in data.split() if token.isdigit()]

    def _read_net(self, problems: list[str]) -> Optional[NetStats]:
        """``net/dev`` of a live process in the container; ``None`` if it has none.

        ``None`` with ``ns/net: Permission denied`` in ``problems`` when no
        process's namespace link may be read (another user's processes,
        without CAP_SYS_PTRACE): the namespace, hence the counters' owner, is
        unknown.

        The process read last time is tried first; if it has exited, the
        container's other processes are tried in turn.
        """
        if self._net_pid is not None:
            alive, stats = self._net_of(self._net_pid, self._net_link, problems)
            if alive:
                return stats
        denied: Optional[OSError] = None
        for pid in self._pids():
            if pid == self._net_pid:
                continue
            try:
                link = os.readlink(self.host.proc_path(pid, "ns/net"))
            except OSError as err:
                # Another user's process without CAP_SYS_PTRACE (root too):
                # the link is refused though net/dev would read. Anything else
                # means it exited since cgroup.procs was read.
                if err.errno in (errno.EACCES, errno.EPERM):
                    denied = err
                continue
            # A descriptor kept from an earlier process with this pid is stale.
            self.host.files.forget(self.host.proc_path(pid, "net/dev"))
            alive, stats = self._net_of(pid, link, problems)
            if alive:
                return stats
        self._net_pid = None
        if denied is not None:
            problems.append(f"ns/net: {denied.strerror}")
        return None

    def _net_of(self, pid: int, link: str, problems: list[str]) -> tuple[bool, Optional[NetStats]]:
        """(alive, NetStats) of ``pid``, whose ``ns/net`` link read ``link``.

        The kept ``net/dev`` descriptor keeps answering after its process
        exits, so the link is read again after the data: if it is gone, or
        names another namespace (the pid was reused), the data is discarded.
        """
        host = self.host
        if pid != self._net_pid:
            self._net_paths = (host.proc_path(pid, "net/dev"), host.proc_path(pid, "ns/net"))
        dev_path, ns_path = self._net_paths
        try:
            data = host.files.read(dev_path)
            still = os.readlink(ns_path)
        except OSError:
            still = ""
        if still != link:
            host.files.forget(dev_path)
            return False, None
        try:
            if pid != self._net_pid or link != self._net_link:
                self._net_inode = parse_netns_link(link)
            text = data.decode("utf-8", "replace")
            # Unchanged (an idle namespace): the same tuple of frozen records.
            if self.host.reuse_unchanged and text == self._net_memo[0]:
                interfaces = self._net_memo[1]
            else:
                interfaces = parse_net_dev(text, dev_path)
                self._net_memo = (text, interfaces)
        except ParseError as err:
            problems.append(f"net/dev: {err.reason}")
            return True, None
        self._net_pid, self._net_link = pid, link
        host_inode = host.host_netns
        return True, NetStats(
            netns=self._net_inode,
            shared_with_host=None if host_inode is None else self._net_inode == host_inode,
            interfaces=interfaces,
            pid=pid,
        )

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """Release every file descriptor this container holds. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.host.files.forget(self._group)
        if self._net_pid is not None:
            self.host.files.forget(self._net_paths[0])
        self.host.forget(self)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def files(self) -> list[str]:
        """The paths this container reads on every sample, in order (the counters)."""
        return list(self._group.paths)

    @property
    def limit_files(self) -> list[str]:
        """The paths re-read every ``Host.limits_max_age_s`` (limits and settings)."""
        return list(self._limit_paths)

    @property
    def directories(self) -> dict[str, str]:
        """The container's directory per controller (``unified`` for the v2 tree)."""
        return dict(self._dirs)

    def __repr__(self) -> str:
        return f"<Container {self.ref.id[:12]} {self.ref.cgroup!r} v{self.version}>"


def _section_of(key: str) -> str:
    """The Sample section a plan file feeds (``unified:`` files as their v2 names)."""
    name = key[len(_UNIFIED) :] if key.startswith(_UNIFIED) else key
    if name.endswith(".pressure"):
        return "pressure"
    if name.startswith("memory."):
        return "memory"
    if name.startswith("blkio.") or name == "io.stat":
        return "blkio"
    if name.startswith("pids."):
        return "pids"
    return "cpu"  # cpu.*, cpuacct.*, cpuset.*


# Records holding dicts, with the positions of those fields: a record kept for
# reuse is copied with fresh dicts, so no two samples share a mutable object.
_DICT_FIELDS: dict[type, tuple[Callable[[Any], tuple[Any, ...]], tuple[int, ...]]] = {}
for _cls in (CpuStats, MemoryStats):
    _names = [f.name for f in attrs.fields(_cls)]
    _DICT_FIELDS[_cls] = (
        operator.attrgetter(*_names),
        tuple(i for i, n in enumerate(_names) if n in ("stat", "events")),
    )


def _fresh(record: R) -> R:
    """``record``, or for a record holding dicts a copy with copies of them."""
    spec = _DICT_FIELDS.get(type(record))
    if spec is None:
        return record  # frozen all the way down: safe to share
    getter, dict_positions = spec
    values = list(getter(record))
    for position in dict_positions:
        if values[position] is not None:
            values[position] = dict(values[position])
    return type(record)(*values)


def _children(directory: str) -> list[str]:
    try:
        return [
            entry.path for entry in os.scandir(directory) if entry.is_dir(follow_symlinks=False)
        ]
    except OSError:
        return []
