"""Container specs, runtime recognition and enumeration.

Pure functions decide what a spec means and which runtime a cgroup path
belongs to; :func:`walk_containers` is the only I/O (``os.scandir`` of
directories). Layouts recognised (see docs/metrics.md):

- Docker: ``/docker/<id>`` (cgroupfs), ``docker-<id>.scope`` (systemd)
- Kubernetes: ``/kubepods/[<qos>/]pod<uid>/<id>``, ``.../crio-<id>``, and the
  systemd layout ``kubepods[-<qos>]-pod<uid>.slice/{cri-containerd,crio,docker}-<id>.scope``
- Podman: ``libpod-<id>.scope`` (rootful, rootless), ``libpod_parent/libpod-<id>``
- nerdctl: ``nerdctl-<id>.scope``; plain containerd: ``/<namespace>/<id>``

conmon scopes (``libpod-conmon-<id>.scope``, ``crio-conmon-<id>.scope``) and
``.mount`` units are never containers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Optional, Union

import attrs

from cgstats.errors import InvalidContainerId

ID_LENGTH = 64
MIN_PREFIX = 4
_MAX_PATH = 4096

_LEAF_PATTERNS: tuple[tuple[re.Pattern[str], Optional[str]], ...] = (
    (re.compile(r"docker-([0-9a-f]{64})\.scope"), "docker"),
    (re.compile(r"cri-containerd-([0-9a-f]{64})\.scope"), "containerd"),
    (re.compile(r"crio-([0-9a-f]{64})(?:\.scope)?"), "cri-o"),
    (re.compile(r"libpod-([0-9a-f]{64})(?:\.scope)?"), "podman"),
    (re.compile(r"nerdctl-([0-9a-f]{64})\.scope"), "nerdctl"),
    (re.compile(r"([0-9a-f]{64})"), None),  # runtime decided by the parent
)
_POD_CGROUPFS = re.compile(r"pod([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
_POD_SYSTEMD = re.compile(
    r"kubepods(?:-[a-z]+)?-pod([0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12})\.slice"
)
_HEX = re.compile(r"[0-9a-fA-F]+")


@attrs.frozen
class Identity:
    """What a cgroup path says about its container."""

    id: str
    runtime: Optional[str]
    pod_uid: Optional[str] = None


@attrs.frozen
class IdPrefix:
    """A spec naming a container by (a prefix of) its 64-hex ID."""

    prefix: str


@attrs.frozen
class CgroupPath:
    """A spec naming a cgroup by its absolute path, e.g. ``/system.slice/cron.service``."""

    path: str


@attrs.frozen
class ProcessSpec:
    """A spec naming the cgroup of a process: ``pid:N``."""

    pid: int


Spec = Union[IdPrefix, CgroupPath, ProcessSpec]


def parse_spec(spec: str) -> Spec:
    """Validate a container spec before anything is opened.

    Raises :class:`InvalidContainerId` for anything that is not a hex ID or
    prefix of at least 4 characters, a clean absolute cgroup path, or ``pid:N``.
    """
    if not isinstance(spec, str) or not spec:
        raise InvalidContainerId(str(spec), "empty container name")
    if "\x00" in spec:
        raise InvalidContainerId(spec, "contains a NUL byte")
    if spec.startswith("pid:"):
        number = spec[4:]
        if not (number.isascii() and number.isdigit()) or int(number) <= 0:
            raise InvalidContainerId(spec, "expected pid:N with N a positive process ID")
        return ProcessSpec(int(number))
    if spec.startswith("/"):
        path = _clean_cgroup_path(spec)
        if path == "/":
            raise InvalidContainerId(spec, "the root cgroup is the whole host, not a container")
        return CgroupPath(path)
    if "/" in spec or "\\" in spec:
        raise InvalidContainerId(spec, "a container ID cannot contain path separators")
    if spec in (".", "..") or not _HEX.fullmatch(spec):
        raise InvalidContainerId(
            spec, "expected a hexadecimal container ID, an absolute cgroup path or pid:N"
        )
    if len(spec) < MIN_PREFIX:
        raise InvalidContainerId(spec, f"an ID prefix needs at least {MIN_PREFIX} hex characters")
    if len(spec) > ID_LENGTH:
        raise InvalidContainerId(spec, f"a container ID has at most {ID_LENGTH} hex characters")
    return IdPrefix(spec.lower())


def _clean_cgroup_path(spec: str) -> str:
    if len(spec) > _MAX_PATH:
        raise InvalidContainerId(spec[:60] + "...", "path is too long")
    if any(ch in spec for ch in "\n\r\t") or not spec.isprintable():
        raise InvalidContainerId(spec, "path contains control characters")
    parts = [part for part in spec.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise InvalidContainerId(spec, "'.' and '..' are not allowed in a cgroup path")
    return "/" + "/".join(parts)


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/<pid>/cgroup``: hierarchy key → cgroup path.

    The key is the sorted, comma-joined controller list (``cpu,cpuacct``,
    ``name=systemd``), and ``""`` for the cgroup2 line ``0::/path``.
    """
    paths = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        paths[",".join(sorted(filter(None, parts[1].split(","))))] = parts[2]
    return paths


def identify(cgroup_path: str) -> Optional[Identity]:
    """The container a cgroup path belongs to, or ``None`` if it is not one."""
    parts = cgroup_path.strip("/").split("/")
    leaf = parts[-1]
    if is_skipped(leaf):
        return None
    for pattern, runtime in _LEAF_PATTERNS:
        match = pattern.fullmatch(leaf)
        if match is None:
            continue
        pod_uid = _pod_uid(parts[:-1])
        if runtime is None:
            parent = parts[-2] if len(parts) > 1 else ""
            # A bare ID: Docker's cgroupfs driver uses /docker/<id>; under
            # kubepods (cgroupfs driver) it is containerd's CRI layout (and
            # dockershim's, before Kubernetes 1.24); elsewhere it is a plain
            # containerd namespace (/<namespace>/<id>), as nerdctl makes too.
            runtime = "docker" if parent == "docker" else "containerd"
            if not parent:
                return None
        return Identity(id=match.group(1), runtime=runtime, pod_uid=pod_uid)
    return None


def is_skipped(name: str) -> bool:
    """conmon scopes and ``.mount`` units are never containers (nor hold any)."""
    return name.endswith(".mount") or "-conmon-" in name


def _pod_uid(ancestors: list[str]) -> Optional[str]:
    for name in reversed(ancestors):
        match = _POD_CGROUPFS.fullmatch(name)
        if match:
            return match.group(1)
        match = _POD_SYSTEMD.fullmatch(name)
        if match:
            return match.group(1).replace("_", "-")
    return None


@attrs.frozen
class Found:
    """A container found by :func:`walk_containers`."""

    identity: Identity
    cgroup: str
    directory: str


def walk_containers(top: str, top_cgroup: str, max_depth: int = 16) -> Iterator[Found]:
    """Every container cgroup under the directory ``top`` (cgroup path ``top_cgroup``).

    Only directories are visited (cgroupfs reports their type without a
    stat); a container's own subtree is not descended into.
    """
    base = top_cgroup.rstrip("/")
    stack: list[tuple[str, str, int]] = [(top, base, 0)]
    while stack:
        directory, cgroup, depth = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # removed while walking, or unreadable: not ours to report
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            child = f"{cgroup}/{entry.name}"
            identity = identify(child)
            if identity is not None:
                yield Found(identity, child, entry.path)
            elif depth < max_depth and not is_skipped(entry.name):
                stack.append((entry.path, child, depth + 1))
