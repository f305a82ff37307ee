"""The host: its cgroup hierarchies, container resolution and enumeration.

A :class:`Host` is the entry point: it finds the hierarchies once, resolves
container specs (full ID, unique prefix, cgroup path, ``pid:N``), lists
every container, and opens :class:`~cgstats.container.Container` handles
that share one bounded cache of open files.
"""

from __future__ import annotations

import os
import weakref
from typing import Optional, Union

from cgstats import mounts
from cgstats._closing import Closing
from cgstats._fileio import DEFAULT_EVICT_IDLE_S, FileCache
from cgstats.container import Container, ContainerRef
from cgstats.discovery import (
    CgroupPath,
    Found,
    IdPrefix,
    ProcessSpec,
    identify,
    parse_proc_cgroup,
    parse_spec,
    walk_containers,
)
from cgstats.errors import (
    AmbiguousContainer,
    ContainerNotFound,
    InvalidContainerId,
    ParseError,
)
from cgstats.model import Sample
from cgstats.readers import blkio
from cgstats.readers.cpu import parse_cpu_list
from cgstats.readers.net import parse_netns_link

ROOT_ENV = "CGSTATS_ROOT"
# Default age (s) after which a container's limit files are read again.
DEFAULT_LIMITS_MAX_AGE_S = 10.0
# Which v1 hierarchy is walked and reported as the container's "cgroup".
_PRIMARY_ORDER = ("memory", "cpuacct", "cpu", "pids", "blkio")

ContainerSpec = Union[str, ContainerRef]


class Host(Closing):
    """The cgroup view of one host.

    ``root`` (default ``$CGSTATS_ROOT`` or ``/``) is the prefix under which
    ``/proc`` and ``/sys`` are looked up: the host's ``/`` mounted inside a
    container, or a captured tree. ``max_open_files`` bounds the descriptors
    kept open across all containers (default: RLIMIT_NOFILE less an eighth); when
    it is reached, the least recently used one is closed if it has been idle
    ``evict_idle_s`` seconds, else the new file is read without keeping it
    (see :mod:`cgstats._fileio`). A poller should pass about twice its step.
    ``limits_max_age_s`` is how old the limit and setting fields of a sample
    (quotas, shares, cpusets, memory and pids limits) may be: their files are
    re-read when their last reading is that old (see :mod:`cgstats.container`);
    0 re-reads them on every sample. With ``reuse_unchanged`` (the default), a
    section whose files read exactly as at the container's previous sample
    is not parsed again (see :mod:`cgstats.container`); false parses every
    file of every sample. A Host is meant for one thread at a time.
    """

    def __init__(
        self,
        root: Optional[str] = None,
        *,
        max_open_files: Optional[int] = None,
        evict_idle_s: float = DEFAULT_EVICT_IDLE_S,
        limits_max_age_s: float = DEFAULT_LIMITS_MAX_AGE_S,
        reuse_unchanged: bool = True,
    ) -> None:
        if not limits_max_age_s >= 0:
            raise ValueError(f"limits_max_age_s must be >= 0, not {limits_max_age_s!r}")
        self.limits_max_age_s = float(limits_max_age_s)
        self.reuse_unchanged = reuse_unchanged
        self.root = os.path.abspath(root or os.environ.get(ROOT_ENV) or "/")
        self.hierarchies = mounts.discover(self.root)
        self.mode = self.hierarchies.mode
        self.files = FileCache(max_open_files, evict_idle_s)
        self.cpu_count = self._read_cpu_count()
        self.clock_ticks = os.sysconf("SC_CLK_TCK")
        self.host_netns = self._read_host_netns()
        self._device_names: dict[tuple[int, int], Optional[str]] = {}
        self._real_mount_points: dict[str, str] = {}
        self._throttle_counted = False
        self._containers: weakref.WeakSet[Container] = weakref.WeakSet()
        self.primary = self._primary_hierarchy()

    @property
    def cgroup_version(self) -> int:
        """2 on unified hosts, 1 on legacy and hybrid hosts."""
        return 2 if self.mode == mounts.UNIFIED else 1

    # -- resolution ----------------------------------------------------------

    def containers(self) -> list[ContainerRef]:
        """Every container on the host, sorted by ID (one walk of one hierarchy)."""
        refs: dict[tuple[str, str], ContainerRef] = {}
        for found in self._walk():
            refs.setdefault((found.identity.id, found.cgroup), self._ref(found))
        return sorted(refs.values(), key=lambda ref: (ref.id, ref.cgroup))

    def resolve(self, spec: str) -> ContainerRef:
        """The container named by ``spec``.

        Raises :class:`InvalidContainerId` (before touching the filesystem),
        :class:`ContainerNotFound` or :class:`AmbiguousContainer`.
        """
        parsed = parse_spec(spec)
        if isinstance(parsed, IdPrefix):
            return self._resolve_id(spec, parsed.prefix)
        if isinstance(parsed, CgroupPath):
            return self._resolve_path(spec, parsed.path)
        return self._resolve_pid(spec, parsed)

    def _resolve_id(self, spec: str, prefix: str) -> ContainerRef:
        matches = [found for found in self._walk() if found.identity.id.startswith(prefix)]
        if not matches:
            raise ContainerNotFound(spec, f"no container ID starts with {prefix!r}")
        ids = {found.identity.id for found in matches}
        if len(ids) > 1:
            raise AmbiguousContainer(spec, sorted(ids))
        if len(matches) > 1:
            raise AmbiguousContainer(spec, sorted(found.cgroup for found in matches))
        return self._ref(matches[0])

    def _resolve_path(self, spec: str, path: str) -> ContainerRef:
        for hierarchy in self._hierarchies_by_preference():
            directory = hierarchy.directory(path)
            if directory is None or not os.path.isdir(directory):
                continue
            if not self.inside_root(directory, hierarchy):
                raise InvalidContainerId(spec, "the path leads outside the cgroup filesystem")
            return self._ref_for_path(path, directory)
        raise ContainerNotFound(spec, "no such cgroup in any hierarchy")

    def _resolve_pid(self, spec: str, parsed: ProcessSpec) -> ContainerRef:
        try:
            with open(self.proc_path(parsed.pid, "cgroup"), encoding="ascii") as handle:
                paths = parse_proc_cgroup(handle.read())
        except (OSError, UnicodeDecodeError):
            raise ContainerNotFound(spec, f"no process {parsed.pid}") from None
        for hierarchy in self._hierarchies_by_preference():
            path = paths.get(hierarchy.key)
            if path is None:
                continue
            directory = hierarchy.directory(path)
            if directory is None or not self.inside_root(directory, hierarchy):
                continue
            if path == hierarchy.mount_root or path == "/":
                raise ContainerNotFound(
                    spec, f"process {parsed.pid} is in the root cgroup, not in a container"
                )
            ref = self._ref_for_path(path, directory)
            return ContainerRef(
                id=ref.id,
                runtime=ref.runtime,
                cgroup=ref.cgroup,
                directory=ref.directory,
                pod_uid=ref.pod_uid,
                paths=paths,
            )
        raise ContainerNotFound(spec, f"process {parsed.pid} has no cgroup visible from here")

    def _ref_for_path(self, path: str, directory: str) -> ContainerRef:
        identity = identify(path)
        if identity is None:
            return ContainerRef(id=path, runtime=None, cgroup=path, directory=directory)
        return ContainerRef(
            id=identity.id,
            runtime=identity.runtime,
            cgroup=path,
            directory=directory,
            pod_uid=identity.pod_uid,
        )

    @staticmethod
    def _ref(found: Found) -> ContainerRef:
        return ContainerRef(
            id=found.identity.id,
            runtime=found.identity.runtime,
            cgroup=found.cgroup,
            directory=found.directory,
            pod_uid=found.identity.pod_uid,
        )

    def _walk(self) -> list[Found]:
        primary = self.primary
        return list(walk_containers(primary.mount_point, primary.mount_root))

    def _primary_hierarchy(self) -> mounts.Hierarchy:
        return self._hierarchies_by_preference()[0]

    def _hierarchies_by_preference(self) -> list[mounts.Hierarchy]:
        hierarchies = self.hierarchies
        ordered: list[mounts.Hierarchy] = []
        if self.mode == mounts.UNIFIED and hierarchies.v2 is not None:
            ordered.append(hierarchies.v2)
        for controller in _PRIMARY_ORDER:
            hierarchy = hierarchies.for_controller(controller)
            if hierarchy is not None and hierarchy not in ordered:
                ordered.append(hierarchy)
        ordered += [h for h in hierarchies.v1 if h not in ordered]
        if hierarchies.v2 is not None and hierarchies.v2 not in ordered:
            ordered.append(hierarchies.v2)
        return ordered

    # -- opening and reading -------------------------------------------------

    def open(self, container: ContainerSpec) -> Container:
        """Open a container handle (resolving ``container`` if it is a spec)."""
        ref = container if isinstance(container, ContainerRef) else self.resolve(container)
        handle = Container(self, ref)
        self._containers.add(handle)
        return handle

    def read(self, container: ContainerSpec) -> Sample:
        """Resolve, open, read once and close: the one-shot form."""
        with self.open(container) as handle:
            return handle.read()

    def forget(self, container: Container) -> None:
        """Called by :meth:`Container.close`."""
        self._containers.discard(container)

    def close(self) -> None:
        """Close every open container and descriptor."""
        for container in list(self._containers):
            container.close()
        self.files.close()

    # -- host facts ----------------------------------------------------------

    def proc_path(self, pid: int, name: str) -> str:
        """``<root>/proc/<pid>/<name>``."""
        return os.path.join(self.root, "proc", str(pid), name)

    def inside_root(self, directory: str, hierarchy: mounts.Hierarchy) -> bool:
        """True if ``directory`` (symlinks resolved) lies within the hierarchy's mount."""
        mount_point = hierarchy.mount_point
        real_mount = self._real_mount_points.get(mount_point)
        if real_mount is None:
            real_mount = self._real_mount_points[mount_point] = os.path.realpath(mount_point)
        real = os.path.realpath(directory)
        return real == real_mount or real.startswith(real_mount.rstrip("/") + "/")

    def device_name(self, major: int, minor: int) -> Optional[str]:
        """Kernel name of a block device (``DEVNAME`` in ``/sys/dev/block/M:m/uevent``)."""
        key = (major, minor)
        if key not in self._device_names:
            name = None
            path = os.path.join(self.root, "sys/dev/block", f"{major}:{minor}", "uevent")
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    for line in handle:
                        if line.startswith("DEVNAME="):
                            name = line[8:].strip() or None
            except OSError:
                pass
            self._device_names[key] = name
        return self._device_names[key]

    def v1_throttle_counted(self, root_file: str) -> bool:
        """Whether v1 blkio throttle IO is counted on any disk of this host.

        Read from the blkio hierarchy root's recursive throttle file. Once a
        disk is counted it stays counted until reboot, so a true answer is
        kept and the file is not read again.
        """
        if self._throttle_counted:
            return True
        try:
            text = self.files.read(root_file).decode("ascii", "replace")
        except OSError:
            return False
        self._throttle_counted = not blkio.lists_no_device(text)
        return self._throttle_counted

    def _read_cpu_count(self) -> int:
        try:
            path = os.path.join(self.root, "sys/devices/system/cpu/online")
            with open(path, encoding="ascii") as handle:
                return parse_cpu_list(handle.read(), path) or 1
        except (OSError, UnicodeDecodeError, ParseError):
            return os.cpu_count() or 1

    def _read_host_netns(self) -> Optional[int]:
        """Inode of the host's network namespace, ``None`` if it cannot be seen.

        pid 1's link is the natural source, but some inits deny it even to
        root (ptrace access mode); kthreadd (pid 2, parent 0) always lives in
        the initial namespace, so it serves when it is visible.
        """
        try:
            return parse_netns_link(os.readlink(self.proc_path(1, "ns/net")))
        except (OSError, ParseError):
            pass
        try:
            with open(self.proc_path(2, "stat"), encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
            if stat.startswith("2 (kthreadd) ") and stat.split()[3] == "0":
                return parse_netns_link(os.readlink(self.proc_path(2, "ns/net")))
        except (OSError, ParseError, IndexError):
            pass
        return None

    def __repr__(self) -> str:
        return f"<Host root={self.root!r} mode={self.mode}>"


def read(container: str, root: Optional[str] = None) -> Sample:
    """Read one container once: ``cgstats.read("3f4e8a")``."""
    with Host(root) as host:
        return host.read(container)
