"""Build "docker-like" containers from kernel primitives, for cgstats tests.

Nothing here imports cgstats: this is the test side, it talks to the kernel
directly.  It works on cgroup v1 (legacy), hybrid (v1 controllers plus a
cgroup2 mount) and unified (cgroup2 only) hosts.

Good-citizen rules implemented here:

* test cgroups are created only beneath this process's own cgroup in each
  hierarchy, always under a base directory named ``cgstats-test-<random>``;
* processes are only ever moved *into* test cgroups (a spawned child joins
  them before ``exec``), never out of this process's subtree;
* :class:`Base` and :class:`Netns` are context managers that kill every
  process in their cgroups / remove their namespaces on exit, also on
  exceptions and ``KeyboardInterrupt``.

Units: sizes in bytes (``*_mib`` arguments in MiB = 2**20 bytes), CPU time in
nanoseconds (``*_ns``) or seconds (``*_s``, float), limits exactly as the
kernel file takes them (``cpu.cfs_quota_us`` in microseconds, bps in bytes
per second).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Optional

PREFIX = "cgstats-test-"
MiB = 1 << 20
CGROUP2_KEY = "cgroup2"

# --------------------------------------------------------------------------
# ids


def random_id() -> str:
    """A random container id: 64 lowercase hex characters."""
    return secrets.token_hex(32)


def random_pod_uid() -> str:
    """A random Kubernetes pod uid (``8-4-4-4-12`` lowercase hex with dashes)."""
    return str(uuid.uuid4())


def systemd_pod_uid(uid: str) -> str:
    """The pod uid as kubelet's systemd driver spells it (dashes become ``_``)."""
    return uid.replace("-", "_")


def random_suffix() -> str:
    """Random suffix for ``cgstats-test-<suffix>`` names (8 hex characters)."""
    return secrets.token_hex(4)


# --------------------------------------------------------------------------
# hierarchy discovery


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and this process's cgroup in it.

    ``key`` is the v1 controller list as mounted (``"cpu"``, ``"cpu,cpuacct"``,
    ``"name=systemd"``) or ``"cgroup2"`` for the unified tree.
    ``own_cgroup`` is the path from ``/proc/self/cgroup`` (e.g. ``/`` or
    ``/process_api/<hex>``); ``mount_root`` is field 4 of mountinfo.
    """

    key: str
    version: int
    controllers: tuple[str, ...]
    mount_point: str
    mount_root: str
    hierarchy_id: Optional[int]
    own_cgroup: str

    def fs_path(self, cgroup_path: str) -> str:
        """Filesystem directory of a cgroup path as seen in ``/proc/<pid>/cgroup``."""
        rel = cgroup_path
        root = self.mount_root.rstrip("/")
        if root and (rel == root or rel.startswith(root + "/")):
            rel = rel[len(root) :]
        return os.path.join(self.mount_point, rel.lstrip("/")).rstrip("/") or "/"

    @property
    def own_dir(self) -> str:
        """Filesystem directory of this process's own cgroup."""
        return self.fs_path(self.own_cgroup)

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly description."""
        return {
            "key": self.key,
            "version": self.version,
            "controllers": list(self.controllers),
            "mount_point": self.mount_point,
            "mount_root": self.mount_root,
            "hierarchy_id": self.hierarchy_id,
            "own_cgroup": self.own_cgroup,
        }


def _unescape_mount(s: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for space etc.)."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1 : i + 4].isdigit():
            out.append(chr(int(s[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class MountEntry:
    """One parsed ``/proc/self/mountinfo`` line (only the fields we need)."""

    root: str
    mount_point: str
    fstype: str
    source: str
    super_options: tuple[str, ...]


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse mountinfo text; the optional fields end at the ``-`` separator."""
    entries: list[MountEntry] = []
    for line in text.splitlines():
        parts = line.split()
        if "-" not in parts:
            continue
        sep = parts.index("-")
        if sep < 6 or len(parts) < sep + 4:
            continue
        entries.append(
            MountEntry(
                root=_unescape_mount(parts[3]),
                mount_point=_unescape_mount(parts[4]),
                fstype=parts[sep + 1],
                source=parts[sep + 2],
                super_options=tuple(parts[sep + 3].split(",")),
            )
        )
    return entries


def parse_proc_cgroup(text: str) -> list[tuple[int, tuple[str, ...], str]]:
    """Parse ``/proc/<pid>/cgroup`` into ``(hierarchy_id, controllers, path)``."""
    out: list[tuple[int, tuple[str, ...], str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        hid, ctrls, path = line.split(":", 2)
        out.append((int(hid), tuple(c for c in ctrls.split(",") if c), path))
    return out


_V1_OPTIONS_NOT_CONTROLLERS = {
    "rw",
    "ro",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "favordynmods",
}


def discover(proc_self: str = "/proc/self") -> list[Hierarchy]:
    """Find every mounted hierarchy and this process's cgroup in it.

    Duplicate mounts of one hierarchy are ignored (the first mount under
    ``/sys/fs/cgroup`` wins, else the first one).  Order: v1 hierarchies in
    mountinfo order, then the cgroup2 tree.
    """
    with open(os.path.join(proc_self, "mountinfo")) as f:
        mounts = parse_mountinfo(f.read())
    with open(os.path.join(proc_self, "cgroup")) as f:
        own = parse_proc_cgroup(f.read())

    def pick(cands: list[MountEntry]) -> MountEntry:
        for m in cands:
            if m.mount_point.startswith("/sys/fs/cgroup"):
                return m
        return cands[0]

    v1: dict[tuple[str, ...], list[MountEntry]] = {}
    v2: list[MountEntry] = []
    for m in mounts:
        if m.fstype == "cgroup":
            ctrls = tuple(
                o
                for o in m.super_options
                if o not in _V1_OPTIONS_NOT_CONTROLLERS and not o.startswith("release_agent=")
            )
            v1.setdefault(tuple(sorted(ctrls)), []).append(m)
        elif m.fstype == "cgroup2":
            v2.append(m)

    result: list[Hierarchy] = []
    for ctrls_sorted, cands in v1.items():
        m = pick(cands)
        ctrls = tuple(
            o
            for o in m.super_options
            if o not in _V1_OPTIONS_NOT_CONTROLLERS and not o.startswith("release_agent=")
        )
        hid, path = None, None
        for i, c, p in own:
            if i != 0 and tuple(sorted(c)) == ctrls_sorted:
                hid, path = i, p
        if path is None:
            continue  # mounted but not in our /proc/self/cgroup: not usable
        result.append(Hierarchy(",".join(ctrls), 1, ctrls, m.mount_point, m.root, hid, path))
    if v2:
        m = pick(v2)
        path = next((p for i, _c, p in own if i == 0), None)
        if path is not None:
            result.append(Hierarchy(CGROUP2_KEY, 2, (), m.mount_point, m.root, 0, path))
    return result


def detect_mode(hierarchies: Sequence[Hierarchy]) -> str:
    """``"legacy"`` (v1 only), ``"hybrid"`` (v1 controllers + cgroup2) or ``"unified"``.

    Named-only v1 hierarchies (``name=systemd``) do not make a host hybrid.
    """
    has_v1 = any(
        h.version == 1 and any(not c.startswith("name=") for c in h.controllers)
        for h in hierarchies
    )
    has_v2 = any(h.version == 2 for h in hierarchies)
    if has_v1:
        return "hybrid" if has_v2 else "legacy"
    if has_v2:
        return "unified"
    raise RuntimeError("no cgroup hierarchy mounted")


# --------------------------------------------------------------------------
# small file helpers


def read_text(path: str) -> str:
    """Read a (cgroup) file completely."""
    with open(path) as f:
        return f.read()


def write_text(path: str, value: str) -> None:
    """Write one value to a cgroup file in a single ``write(2)``."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read_pids(cgroup_dir: str) -> list[int]:
    """Pids listed in ``cgroup.procs`` of a cgroup directory (empty if gone)."""
    try:
        return [int(x) for x in read_text(os.path.join(cgroup_dir, "cgroup.procs")).split()]
    except (FileNotFoundError, ProcessLookupError, OSError):
        return []


def devno_str(dev: int) -> str:
    """``MAJ:MIN`` text of a device number."""
    return f"{os.major(dev)}:{os.minor(dev)}"


def whole_disk(devno: str) -> str:
    """``MAJ:MIN`` of the whole disk holding ``devno`` (itself if not a partition).

    blk-throttle rules and v1 blkio counters are per whole disk.
    """
    sys_dir = f"/sys/dev/block/{devno}"
    if os.path.exists(os.path.join(sys_dir, "partition")):
        parent = os.path.dirname(os.path.realpath(sys_dir))
        with contextlib.suppress(OSError):
            return read_text(os.path.join(parent, "dev")).strip()
    return devno


def block_device_of(path: str) -> str:
    """``MAJ:MIN`` of the whole block device that holds ``path``."""
    return whole_disk(devno_str(os.stat(path).st_dev))


_SUBREAPER = False


def become_subreaper() -> bool:
    """Make this process the reaper of orphaned descendants (PR_SET_CHILD_SUBREAPER).

    Lets :meth:`Base.cleanup` reap grandchildren (e.g. forked sleepers) so their
    zombies never keep a cgroup busy.  Returns whether it worked.
    """
    global _SUBREAPER
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(36, 1, 0, 0, 0) == 0:  # PR_SET_CHILD_SUBREAPER
            _SUBREAPER = True
    except (OSError, AttributeError):
        pass
    return _SUBREAPER


def _reap_orphans() -> None:
    if not _SUBREAPER:
        return
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# --------------------------------------------------------------------------
# processes


def rusage_cpu_ns(ru: Any) -> int:
    """User+system CPU time of a ``resource.struct_rusage`` in ns (µs precision)."""
    return int(round(ru.ru_utime * 1e6) * 1000 + round(ru.ru_stime * 1e6) * 1000)


@dataclass
class Exited:
    """How a process ended, from ``os.wait4``: CPU times in ns, maxrss in KiB."""

    status: int
    exitcode: int  # negative = killed by that signal
    user_ns: int
    sys_ns: int
    maxrss_kib: int

    @property
    def cpu_ns(self) -> int:
        """user_ns + sys_ns."""
        return self.user_ns + self.sys_ns

    @property
    def signal(self) -> Optional[int]:
        """Signal that killed the process, or None."""
        return -self.exitcode if self.exitcode < 0 else None


class Proc:
    """A spawned process whose stdout carries JSON report lines."""

    def __init__(
        self, popen: subprocess.Popen[bytes], argv: Sequence[str], netns: Optional[str]
    ) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.argv = list(argv)
        self.netns = netns
        self.exited: Optional[Exited] = None
        self.reports: list[dict[str, Any]] = []
        self._buf = b""

    def read_json(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the next JSON line on the child's stdout (``timeout`` in s)."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no report from pid {self.pid} {self.argv[:3]} in {timeout}s")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError(
                        f"pid {self.pid} closed stdout without a report (exit: {self.poll()})"
                    )
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        rep: dict[str, Any] = json.loads(line)
        self.reports.append(rep)
        return rep

    def wait(self, timeout: float = 60.0) -> Exited:
        """Reap the process with ``os.wait4`` and keep its rusage."""
        if self.exited is not None:
            return self.exited
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"pid {self.pid} still running after {timeout}s")
            time.sleep(0.01)
        return self._reaped(status, ru)

    def _reaped(self, status: int, ru: Any) -> Exited:
        """Record how the process ended (status and rusage from ``os.wait4``)."""
        code = os.waitstatus_to_exitcode(status)
        self.popen.returncode = code
        self.exited = Exited(
            status,
            code,
            round(ru.ru_utime * 1e6) * 1000,
            round(ru.ru_stime * 1e6) * 1000,
            ru.ru_maxrss,
        )
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return self.exited

    def poll(self) -> Optional[Exited]:
        """Reap if it has exited, else None."""
        if self.exited is not None:
            return self.exited
        try:
            pid, _status, _ru = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if pid == self.pid:
            return self._reaped(_status, _ru)
        return self.exited

    def kill(self) -> None:
        """SIGKILL (ignored if gone)."""
        if self.exited is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _make_preexec(procs_files: Sequence[str], oom_score_adj: Optional[int]) -> Any:
    """preexec_fn: join every cgroup (write own pid to cgroup.procs) before exec."""
    files = list(procs_files)

    def preexec() -> None:
        pid = str(os.getpid()).encode()
        for f in files:
            try:
                fd = os.open(f, os.O_WRONLY)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)
            except OSError as e:
                os.write(2, f"cgstats workload: joining {f} failed: {e}\n".encode())
                raise
        if oom_score_adj is not None:
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            os.write(fd, str(oom_score_adj).encode())
            os.close(fd)

    return preexec


# --------------------------------------------------------------------------
# cgroups


class Container:
    """One container cgroup, ``<own>/<base>/<layout>`` in every hierarchy."""

    def __init__(self, base: Base, layout: str, name: str, container_id: Optional[str]) -> None:
        self.base = base
        self.layout = layout
        self.name = name
        self.id = container_id
        self.paths: dict[str, str] = {h.key: base.cgroup_path(h, layout) for h in base.hierarchies}
        self.dirs: dict[str, str] = {h.key: h.fs_path(self.paths[h.key]) for h in base.hierarchies}
        self.procs: list[Proc] = []
        self.limits: list[dict[str, Any]] = []
        self.removed = False

    # -- files --------------------------------------------------------------
    def find(self, name: str) -> tuple[Hierarchy, str]:
        """Locate a cgroup file: ``"memory.max"`` or ``"<hierarchy key>:<file>"``.

        Preference: the v1 hierarchy whose controllers include the file's
        prefix, then the cgroup2 tree, then any v1 hierarchy having the file.
        Raises FileNotFoundError if no hierarchy has it.
        """
        if ":" in name:
            key, fname = name.split(":", 1)
            h = self.base.hierarchy(key)
            return h, os.path.join(self.dirs[h.key], fname)
        prefix = name.split(".", 1)[0]
        hs = self.base.hierarchies
        order = (
            [h for h in hs if h.version == 1 and prefix in h.controllers]
            + [h for h in hs if h.version == 2]
            + [h for h in hs if h.version == 1 and prefix not in h.controllers]
        )
        for h in order:
            p = os.path.join(self.dirs[h.key], name)
            if os.path.exists(p):
                return h, p
        raise FileNotFoundError(f"no hierarchy has {name} for {self.layout}")

    def has(self, name: str) -> bool:
        """Whether some hierarchy has this file for the container."""
        try:
            self.find(name)
        except FileNotFoundError:
            return False
        return True

    def read(self, name: str) -> str:
        """Content of a cgroup file (see :meth:`find`)."""
        return read_text(self.find(name)[1])

    def write(self, name: str, value: str | int) -> None:
        """Write a limit/control file, e.g. ``write("pids.max", 16)``; records it."""
        h, path = self.find(name)
        entry: dict[str, Any] = {
            "hierarchy": h.key,
            "file": os.path.basename(path),
            "value": str(value),
        }
        self.limits.append(entry)
        try:
            write_text(path, str(value))
        except OSError as e:
            entry["error"] = f"{errno.errorcode.get(e.errno or 0, e.errno)}: {e.strerror}"
            raise

    # -- convenience limits (pick the v1 or v2 file that exists) -------------
    def limit_cpu(self, quota_us: int, period_us: int = 100000) -> None:
        """CPU bandwidth: quota and period in µs (cpu.cfs_* on v1, cpu.max on v2)."""
        if self.has("cpu.cfs_quota_us"):
            self.write("cpu.cfs_period_us", period_us)
            self.write("cpu.cfs_quota_us", quota_us)
        else:
            self.write("cpu.max", f"{quota_us} {period_us}")

    def limit_memory(self, limit_bytes: int, no_swap: bool = True) -> None:
        """Hard memory limit in bytes; with ``no_swap`` also cap swap (memsw / swap.max)."""
        if self.has("memory.limit_in_bytes"):
            self.write("memory.limit_in_bytes", limit_bytes)
            if no_swap and self.has("memory.memsw.limit_in_bytes"):
                self.write("memory.memsw.limit_in_bytes", limit_bytes)
        else:
            self.write("memory.max", limit_bytes)
            if no_swap and self.has("memory.swap.max"):
                self.write("memory.swap.max", 0)

    def limit_pids(self, n: int) -> None:
        """Maximum number of tasks (pids.max)."""
        self.write("pids.max", n)

    def throttle_io(self, devno: str, rbps: int, wbps: int) -> None:
        """IO throttle rule in bytes/s for device ``MAJ:MIN`` (blkio.throttle.* / io.max)."""
        if self.has("blkio.throttle.write_bps_device"):
            self.write("blkio.throttle.read_bps_device", f"{devno} {rbps}")
            self.write("blkio.throttle.write_bps_device", f"{devno} {wbps}")
        else:
            self.write("io.max", f"{devno} rbps={rbps} wbps={wbps}")

    # -- processes -----------------------------------------------------------
    def spawn(
        self,
        argv: Sequence[str],
        netns: Optional[Netns | str] = None,
        oom_score_adj: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> Proc:
        """Start ``argv`` inside the container.

        The child writes its pid into ``cgroup.procs`` of every hierarchy in
        ``preexec_fn`` (i.e. after fork, before exec), so everything it does -
        including memory it allocates - is charged to the container.  With
        ``netns`` it then execs ``ip netns exec NS argv`` (``ip`` execs in
        place, the pid stays the same).  stdout is a pipe for JSON reports,
        stdin is /dev/null, stderr is inherited.
        """
        if self.removed:
            raise RuntimeError(f"container {self.layout} was removed")
        ns_name = netns.name if isinstance(netns, Netns) else netns
        full = list(argv)
        if ns_name is not None:
            full = [_ip(), "netns", "exec", ns_name, *full]
        files = [os.path.join(d, "cgroup.procs") for d in self.dirs.values()]
        popen = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            bufsize=0,
            preexec_fn=_make_preexec(files, oom_score_adj),
            close_fds=True,
            env=dict(env) if env is not None else None,
        )
        proc = Proc(popen, full, ns_name)
        self.procs.append(proc)
        self.base.procs.append(proc)
        return proc

    def run(
        self, argv: Sequence[str], netns: Optional[Netns | str] = None, timeout: float = 120.0
    ) -> tuple[Proc, Exited, list[dict[str, Any]]]:
        """Spawn, collect all JSON report lines until EOF, reap with rusage."""
        proc = self.spawn(argv, netns)
        reports: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        with contextlib.suppress(EOFError):
            while True:
                reports.append(proc.read_json(max(0.1, deadline - time.monotonic())))
        ex = proc.wait(max(0.1, deadline - time.monotonic()))
        return proc, ex, reports

    def pids(self) -> list[int]:
        """Sorted union of ``cgroup.procs`` over all hierarchies."""
        s: set[int] = set()
        for d in self.dirs.values():
            s.update(read_pids(d))
        return sorted(s)

    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILL every process of the container and wait until none is left."""
        _kill_cgroups(list(self.dirs.values()), self.procs, timeout)

    def remove(self, timeout: float = 10.0) -> None:
        """Kill everything and remove the leaf directory in every hierarchy."""
        self.kill_all(timeout)
        for d in self.dirs.values():
            _rmdir_retry(d, timeout)
        self.removed = True

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly description (paths, pids, limits written)."""
        return {
            "name": self.name,
            "id": self.id,
            "layout": self.layout,
            "cgroup_paths": dict(self.paths),
            "dirs": dict(self.dirs),
            "pids": self.pids(),
            "limits": list(self.limits),
        }


def _kill_cgroups(dirs: Sequence[str], procs: Sequence[Proc], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pids: set[int] = set()
        for d in dirs:
            pids.update(read_pids(d))
        for p in procs:
            p.poll()
        _reap_orphans()
        if not pids:
            return
        for d in dirs:
            k = os.path.join(d, "cgroup.kill")
            if os.path.exists(k):
                with contextlib.suppress(OSError):
                    write_text(k, "1")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes {sorted(pids)} survive in {dirs[0]}")
        time.sleep(0.02)


def _rmdir_retry(path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            _reap_orphans()
            time.sleep(0.05)


class Base:
    """``<own cgroup>/cgstats-test-<rand>`` in every hierarchy (context manager).

    On a unified host (and for the cgroup2 tree only) every available
    controller is enabled in ``cgroup.subtree_control`` of own cgroup, the
    base and every intermediate directory we create, as far as the kernel
    allows (failures are recorded in :attr:`notes`; v2 refuses it e.g. in a
    non-root cgroup that holds processes).  Processes only ever go into
    container leaves.  For v1 cpuset, ``cpuset.cpus``/``cpuset.mems`` are
    copied from the parent into each new directory.
    """

    def __init__(
        self,
        hierarchies: Optional[Sequence[Hierarchy]] = None,
        name: Optional[str] = None,
        enable_v2_controllers: Optional[bool] = None,
    ) -> None:
        self.hierarchies: list[Hierarchy] = list(hierarchies or discover())
        self.mode = detect_mode(self.hierarchies)
        self.name = name or PREFIX + random_suffix()
        if not self.name.startswith(PREFIX) or "/" in self.name:
            raise ValueError(f"base name must start with {PREFIX} and be one component")
        self.enable_v2 = (
            (self.mode == "unified") if enable_v2_controllers is None else enable_v2_controllers
        )
        self.containers: list[Container] = []
        self.procs: list[Proc] = []
        self.created: list[str] = []  # filesystem dirs, creation order
        self.notes: list[str] = []
        self._own_enabled: dict[str, list[str]] = {}  # own dir -> controllers we added

    # -- paths ---------------------------------------------------------------
    def hierarchy(self, key: str) -> Hierarchy:
        """Hierarchy by key (``"memory"``, ``"name=systemd"``, ``"cgroup2"``)."""
        for h in self.hierarchies:
            if h.key == key or key in h.controllers:
                return h
        raise KeyError(key)

    def cgroup_path(self, h: Hierarchy, layout: str = "") -> str:
        """cgroup path (as in /proc/<pid>/cgroup) of ``<own>/<base>/<layout>``."""
        own = h.own_cgroup.rstrip("/")
        tail = "/".join(p for p in layout.split("/") if p)
        return f"{own}/{self.name}" + (f"/{tail}" if tail else "")

    def base_dirs(self) -> dict[str, str]:
        """Filesystem path of the base directory per hierarchy."""
        return {h.key: h.fs_path(self.cgroup_path(h)) for h in self.hierarchies}

    # -- creation ------------------------------------------------------------
    def __enter__(self) -> Base:
        try:
            self.create()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        et: Optional[type[BaseException]],
        ev: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.cleanup()

    def create(self) -> None:
        """Create the base directory in every hierarchy."""
        for h in self.hierarchies:
            if h.version == 2 and self.enable_v2:
                if (
                    h.own_cgroup != "/"
                    and read_text(os.path.join(h.own_dir, "cgroup.procs")).split()
                ):
                    # v2 refuses domain controllers here (EBUSY) but accepts the
                    # threaded ones (cpu, cpuset, pids): that would turn own cgroup
                    # into a thread root and every child into "domain invalid"
                    # (joining fails with EOPNOTSUPP).  So enable nothing.
                    self.notes.append(
                        f"{h.own_dir}: holds processes, not the root: no "
                        "controllers enabled (run from the root cgroup)"
                    )
                else:
                    self._enable_subtree(h.own_dir, own=True)
            self._mkdir(h, h.fs_path(self.cgroup_path(h)))

    def _enable_subtree(self, d: str, own: bool = False) -> None:
        try:
            avail = read_text(os.path.join(d, "cgroup.controllers")).split()
            enabled = set(read_text(os.path.join(d, "cgroup.subtree_control")).split())
        except OSError as e:
            self.notes.append(f"{d}: cannot read controllers: {e}")
            return
        for c in avail:
            if c in enabled:
                continue
            try:
                write_text(os.path.join(d, "cgroup.subtree_control"), f"+{c}")
                if own:
                    self._own_enabled.setdefault(d, []).append(c)
            except OSError as e:
                self.notes.append(
                    f"{d}: +{c} in cgroup.subtree_control: "
                    f"{errno.errorcode.get(e.errno or 0)} {e.strerror}"
                )

    def _mkdir(self, h: Hierarchy, d: str) -> None:
        os.mkdir(d)
        self.created.append(d)
        if h.version == 1 and "cpuset" in h.controllers:
            parent = os.path.dirname(d)
            for f in ("cpuset.cpus", "cpuset.mems"):
                write_text(os.path.join(d, f), read_text(os.path.join(parent, f)).strip() or "\n")

    def container(
        self, layout: str, name: Optional[str] = None, container_id: Optional[str] = None
    ) -> Container:
        """Create ``<own>/<base>/<layout>`` (all missing levels) in every hierarchy."""
        parts = [p for p in layout.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ValueError(f"bad layout {layout!r}")
        for h in self.hierarchies:
            cur = h.fs_path(self.cgroup_path(h))
            for p in parts:
                if h.version == 2 and self.enable_v2:
                    self._enable_subtree(cur)
                cur = os.path.join(cur, p)
                if not os.path.isdir(cur):
                    self._mkdir(h, cur)
        c = Container(self, "/".join(parts), name or parts[-1], container_id)
        self.containers.append(c)
        return c

    # -- cleanup -------------------------------------------------------------
    def _all_dirs(self) -> list[str]:
        """Every directory below (and including) the base, deepest first."""
        out: list[str] = []
        for d in self.base_dirs().values():
            if not os.path.isdir(d):
                continue
            for root, _dirs, _files in os.walk(d, topdown=False):
                out.append(root)
        out.sort(key=lambda p: p.count("/"), reverse=True)
        return out

    def cleanup(self, timeout: float = 20.0) -> None:
        """Kill every process below the base, wait, rmdir leaf-first everywhere."""
        errors: list[str] = []
        try:
            _kill_cgroups(self._all_dirs(), self.procs, timeout)
        except BaseException as e:  # keep going: we must still try to rmdir
            errors.append(f"kill: {e!r}")
        for p in self.procs:
            p.poll()
        for d in self._all_dirs():
            try:
                _rmdir_retry(d, timeout / 2)
            except OSError as e:
                errors.append(f"rmdir {d}: {e}")
        for own, ctrls in self._own_enabled.items():
            for c in reversed(ctrls):
                with contextlib.suppress(OSError):
                    write_text(os.path.join(own, "cgroup.subtree_control"), f"-{c}")
        self._own_enabled.clear()
        for cont in self.containers:
            cont.removed = True
        if errors:
            print("cgstats workload cleanup problems:\n  " + "\n  ".join(errors), file=sys.stderr)
            leftovers = [d for d in self.base_dirs().values() if os.path.exists(d)]
            if leftovers:
                raise RuntimeError(f"could not remove {leftovers}: {errors}")


# --------------------------------------------------------------------------
# network namespaces


def _ip() -> str:
    return shutil.which("ip") or "/sbin/ip"


def ip(*args: str) -> str:
    """Run ``ip ARGS`` and return stdout; raises CalledProcessError with stderr."""
    r = subprocess.run([_ip(), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise subprocess.CalledProcessError(r.returncode, ["ip", *args], r.stdout, r.stderr)
    return r.stdout


@dataclass
class Veth:
    """A veth pair: ``(iface, address/30, mac)`` on each side."""

    a_ns: str
    a_if: str
    a_ip: str
    a_mac: str
    b_ns: str
    b_if: str
    b_ip: str
    b_mac: str
    prefix_len: int = 30

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly description."""
        return dict(self.__dict__)


@dataclass
class Netns:
    """A named network namespace ``cgstats-test-<rand>`` with ``lo`` up.

    IPv6 is disabled inside (best effort) so the kernel sends no unsolicited
    packets (DAD, router solicitations, MLD) that would disturb counters.
    """

    name: str = field(default_factory=lambda: PREFIX + random_suffix())
    created: bool = False
    veths: list[Veth] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.name.startswith(PREFIX):
            raise ValueError(f"netns name must start with {PREFIX}")

    def __enter__(self) -> Netns:
        ip("netns", "add", self.name)
        self.created = True
        try:
            self.sh(
                "for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 "
                "/proc/sys/net/ipv6/conf/default/disable_ipv6 "
                "/proc/sys/net/ipv6/conf/lo/disable_ipv6; "
                "do [ -w $f ] && echo 1 > $f; done; true"
            )
            ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(
        self,
        et: Optional[type[BaseException]],
        ev: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.delete()

    def delete(self) -> None:
        """Remove the namespace name (interfaces die with the namespace)."""
        if self.created:
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", self.name)
            self.created = False

    def sh(self, script: str) -> str:
        """Run a shell snippet inside the namespace."""
        r = subprocess.run(
            [_ip(), "netns", "exec", self.name, "sh", "-c", script],
            capture_output=True,
            text=True,
            check=True,
        )
        return r.stdout

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """argv wrapped in ``ip netns exec NAME``."""
        return [_ip(), "netns", "exec", self.name, *argv]

    @property
    def inode(self) -> int:
        """Namespace inode (what ``readlink /proc/<pid>/ns/net`` shows in ``net:[N]``)."""
        return os.stat(f"/run/netns/{self.name}").st_ino

    def net_dev(self) -> str:
        """``/proc/net/dev`` as seen inside the namespace."""
        return self.sh("cat /proc/self/net/dev")

    def veth_to(self, other: Netns, a_if: str = "veth0", b_if: str = "veth0") -> Veth:
        """Connect to ``other`` with a veth pair on a random 10.x.y.z/30.

        Static (permanent) neighbour entries on both ends avoid ARP traffic,
        so interface counters show only what the workloads send.
        """
        x, y, z = 200 + secrets.randbelow(55), secrets.randbelow(256), 4 * secrets.randbelow(64)
        a_ip, b_ip = f"10.{x}.{y}.{z + 1}", f"10.{x}.{y}.{z + 2}"
        mac = secrets.token_hex(4)
        m = ":".join(mac[i : i + 2] for i in range(0, 8, 2))
        a_mac, b_mac = f"02:{m}:01", f"02:{m}:02"
        ip(
            "-n",
            self.name,
            "link",
            "add",
            a_if,
            "address",
            a_mac,
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "address",
            b_mac,
            "netns",
            other.name,
        )
        for ns, ifn in ((self.name, a_if), (other.name, b_if)):
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("-n", ns, "link", "set", "dev", ifn, "addrgenmode", "none")
        ip("-n", self.name, "addr", "add", f"{a_ip}/30", "dev", a_if)
        ip("-n", other.name, "addr", "add", f"{b_ip}/30", "dev", b_if)
        ip(
            "-n",
            self.name,
            "neigh",
            "replace",
            b_ip,
            "lladdr",
            b_mac,
            "dev",
            a_if,
            "nud",
            "permanent",
        )
        ip(
            "-n",
            other.name,
            "neigh",
            "replace",
            a_ip,
            "lladdr",
            a_mac,
            "dev",
            b_if,
            "nud",
            "permanent",
        )
        ip("-n", self.name, "link", "set", "dev", a_if, "up")
        ip("-n", other.name, "link", "set", "dev", b_if, "up")
        v = Veth(self.name, a_if, a_ip, a_mac, other.name, b_if, b_ip, b_mac)
        self.veths.append(v)
        other.veths.append(v)
        return v


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """``/proc/net/dev`` → ``{iface: {rx_bytes, rx_packets, ..., tx_bytes, tx_packets, ...}}``."""
    names = ["bytes", "packets", "errs", "drop", "fifo", "frame", "compressed", "multicast"]
    tx = ["bytes", "packets", "errs", "drop", "fifo", "colls", "carrier", "compressed"]
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:
        if ":" not in line:
            continue
        iface, rest = line.split(":", 1)
        vals = [int(v) for v in rest.split()]
        d = {f"rx_{k}": v for k, v in zip(names, vals[:8])}
        d.update({f"tx_{k}": v for k, v in zip(tx, vals[8:16])})
        out[iface.strip()] = d
    return out


# --------------------------------------------------------------------------
# workload programs (run with sys.executable; print JSON lines on stdout)

_PAUSE = "import signal\nwhile True:\n    signal.pause()\n"

_BURN_FN = """
import resource
def burn(target):
    x = 0
    while True:
        for _ in range(20000):
            x += 1
        r = resource.getrusage(resource.RUSAGE_SELF)
        if r.ru_utime + r.ru_stime >= target:
            break
"""

CPU_BURNER = (
    _BURN_FN
    + """
import sys
burn(float(sys.argv[1]))
"""
)

MEMORY_HOG = (
    """
import json, mmap, sys
n = int(sys.argv[1])
buf = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for off in range(0, n, mmap.PAGESIZE):
    buf[off] = 1
print(json.dumps({"ready": True, "bytes_allocated": n}), flush=True)
"""
    + _PAUSE
)

ODIRECT_IO = """
import json, mmap, os, sys
mode, path, nbytes, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
buf = mmap.mmap(-1, chunk)  # page aligned, as O_DIRECT needs
done = 0
if mode == "write":
    buf.write(b"\\xa5" * chunk)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    while done < nbytes:
        done += os.pwrite(fd, memoryview(buf)[:min(chunk, nbytes - done)], done)
    os.fsync(fd)
else:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    while done < nbytes:
        n = os.preadv(fd, [buf], done)
        if n <= 0:
            break
        done += n
os.close(fd)
key = "bytes_written" if mode == "write" else "bytes_read"
print(json.dumps({key: done, "path": path, "dev": os.stat(path).st_dev}), flush=True)
"""

SLEEPERS = (
    """
import json, os, signal, sys
kids = []
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        while True:
            signal.pause()
    kids.append(pid)
print(json.dumps({"ready": True, "children": kids}), flush=True)
"""
    + _PAUSE
)

FORKER = (
    """
import json, os, signal, sys
kids, errs = [], []
for _ in range(int(sys.argv[1])):
    try:
        pid = os.fork()
    except OSError as e:
        errs.append(e.errno)
        continue
    if pid == 0:
        while True:
            signal.pause()
    kids.append(pid)
print(json.dumps({"ready": True, "forked": len(kids), "failed": len(errs),
                  "errnos": sorted(set(errs)), "children": kids}), flush=True)
"""
    + _PAUSE
)

ACTIVE_IDLER = (
    _BURN_FN
    + """
import json, mmap, os, sys
cpu_s, nbytes, path, io_bytes = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
burn(cpu_s)
mem = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for off in range(0, nbytes, mmap.PAGESIZE):
    mem[off] = 1
wrote = read = 0
if io_bytes:
    chunk = 1 << 20
    buf = mmap.mmap(-1, chunk)
    buf.write(b"\\x5a" * chunk)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    while wrote < io_bytes:
        wrote += os.pwrite(fd, buf, wrote)
    os.fsync(fd)
    os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    while read < io_bytes // 2:
        read += os.preadv(fd, [buf], read)
    os.close(fd)
print(json.dumps({"ready": True, "bytes_allocated": nbytes, "bytes_written": wrote,
                  "bytes_read": read}), flush=True)
"""
    + _PAUSE
)

_NET_DEV_FN = """
def netdev(iface):
    for line in open("/proc/self/net/dev").read().splitlines()[2:]:
        name, rest = line.split(":", 1)
        if name.strip() == iface:
            v = [int(x) for x in rest.split()]
            return {"rx_bytes": v[0], "rx_packets": v[1], "tx_bytes": v[8], "tx_packets": v[9]}
    return None
"""

UDP_SENDER = (
    _NET_DEV_FN
    + """
import json, socket, sys
k, size, dest, port, iface = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                              int(sys.argv[4]), sys.argv[5])
rx = None
if port == 0:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((dest, 0))
    rx.settimeout(5)
    port = rx.getsockname()[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"x" * size
before = netdev(iface)
sent = nbytes = received = 0
for _ in range(k):
    nbytes += s.sendto(payload, (dest, port))
    sent += 1
    if rx is not None:
        rx.recv(65536)
        received += 1
after = netdev(iface)
delta = {key: after[key] - before[key] for key in after} if before and after else None
print(json.dumps({"ready": True, "packets_sent": sent, "payload_bytes_sent": nbytes,
                  "payload_size": size, "dest": dest, "port": port, "iface": iface,
                  "received_locally": received, "net_dev_delta": delta}), flush=True)
"""
    + _PAUSE
)

UDP_RECEIVER = (
    """
import json, socket, sys
addr, port, k, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((addr, port))
print(json.dumps({"ready": True, "addr": addr, "port": s.getsockname()[1]}), flush=True)
s.settimeout(timeout)
n = b = 0
try:
    while n < k:
        b += len(s.recv(65536))
        n += 1
except socket.timeout:
    pass
print(json.dumps({"packets_received": n, "payload_bytes_received": b}), flush=True)
"""
    + _PAUSE
)


def py(code: str, *args: object, python: Optional[str] = None) -> list[str]:
    """argv running ``code`` with this interpreter (``sys.executable``)."""
    return [python or sys.executable, "-c", code, *map(str, args)]


def cpu_burner_argv(cpu_s: float) -> list[str]:
    """Burn ``cpu_s`` seconds of CPU (user+sys, self-measured), then exit.

    The exact CPU time comes from ``Proc.wait()`` (os.wait4 rusage).
    """
    return py(CPU_BURNER, cpu_s)


def memory_hog_argv(mib: int) -> list[str]:
    """Map and touch ``mib`` MiB of anonymous memory, report ``bytes_allocated``, sleep."""
    return py(MEMORY_HOG, mib * MiB)


def odirect_write_argv(path: str, mib: int, chunk_mib: int = 1) -> list[str]:
    """Write ``mib`` MiB with O_DIRECT (+fsync) to ``path``; reports ``bytes_written``."""
    return py(ODIRECT_IO, "write", path, mib * MiB, chunk_mib * MiB)


def odirect_read_argv(path: str, mib: int, chunk_mib: int = 1) -> list[str]:
    """Read ``mib`` MiB with O_DIRECT from ``path``; reports ``bytes_read``."""
    return py(ODIRECT_IO, "read", path, mib * MiB, chunk_mib * MiB)


def sleepers_argv(n: int) -> list[str]:
    """A parent that forks ``n`` sleeping children (n+1 processes), reports, sleeps."""
    return py(SLEEPERS, n)


def forker_argv(n: int) -> list[str]:
    """Try to fork ``n`` sleeping children; reports ``forked``/``failed`` (pids.max)."""
    return py(FORKER, n)


def active_idler_argv(cpu_s: float, mib: int, path: str = "", io_mib: int = 0) -> list[str]:
    """Burn ``cpu_s`` s of CPU, touch ``mib`` MiB of anonymous memory, write
    ``io_mib`` MiB to ``path`` with O_DIRECT (+fsync) and read half of it back,
    report (``bytes_allocated``, ``bytes_written``, ``bytes_read``), then sleep
    with all of it still held: one process whose counters stay put for readers.
    """
    return py(ACTIVE_IDLER, cpu_s, mib * MiB, path, io_mib * MiB)


def udp_sender_argv(
    packets: int, size: int, dest: str = "127.0.0.1", port: int = 0, iface: str = "lo"
) -> list[str]:
    """Send ``packets`` UDP datagrams of ``size`` payload bytes, report, sleep.

    ``port=0``: bind a receiver on ``dest`` in the same process (loopback) and
    read every datagram back.  The report has ``net_dev_delta`` of ``iface``
    measured from /proc/self/net/dev around the sending.  /proc/net/dev counts
    each datagram as ``size + 28`` bytes (IPv4 and UDP headers) on lo and
    ``size + 42`` on veth, which adds the Ethernet header.
    """
    return py(UDP_SENDER, packets, size, dest, port, iface)


def udp_receiver_argv(addr: str, port: int, packets: int, timeout_s: float = 10.0) -> list[str]:
    """Bind ``addr:port``, report ready, receive up to ``packets``, report count, sleep."""
    return py(UDP_RECEIVER, addr, port, packets, timeout_s)


def idle_argv() -> list[str]:
    """A process that just sleeps (coreutils ``sleep infinity``, else Python)."""
    s = shutil.which("sleep")
    return [s, "infinity"] if s else py(_PAUSE)


@contextlib.contextmanager
def io_file(directory: str, name: Optional[str] = None) -> Iterator[str]:
    """A file path in ``directory`` for O_DIRECT IO, removed afterwards."""
    path = os.path.join(directory, name or f"{PREFIX}{random_suffix()}.dat")
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
