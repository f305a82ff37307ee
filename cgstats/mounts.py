"""Finding the cgroup hierarchies: ``/proc/self/mountinfo`` parsing and the host mode.

A mountinfo line is ``id parent maj:min root mount-point options [optional...]
- fstype source super-options``. Field 4 (``root``) is the mount's root inside
the hierarchy: ``/`` normally, a deeper path inside a cgroup namespace or
a container that bind-mounts part of the host's tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Optional

import attrs

from cgstats.errors import NoCgroupFilesystem, ParseError

LEGACY = "legacy"
HYBRID = "hybrid"
UNIFIED = "unified"


@attrs.frozen
class MountEntry:
    """One line of mountinfo (only the fields cgstats uses)."""

    mount_id: int
    parent_id: int
    root: str
    mount_point: str
    fstype: str
    super_options: tuple[str, ...]


@attrs.frozen
class Hierarchy:
    """One mounted cgroup hierarchy.

    ``controllers`` are the v1 controllers bound to it (``name=systemd`` style
    named hierarchies have none, only ``name``); for cgroup2 it is empty.
    ``mount_point`` is the path to open (with the host root prefix applied),
    ``mount_root`` the cgroup path that the mount point shows.
    """

    version: int
    controllers: frozenset[str]
    name: Optional[str]
    mount_point: str
    mount_root: str

    @property
    def key(self) -> str:
        """The hierarchy's name in ``/proc/<pid>/cgroup``: sorted controllers,
        ``name=<name>`` for named hierarchies, ``""`` for cgroup2."""
        if self.version == 2:
            return ""
        names = sorted(self.controllers)
        if self.name:
            names.append(f"name={self.name}")
        return ",".join(sorted(names))

    def directory(self, cgroup_path: str) -> Optional[str]:
        """The directory of ``cgroup_path`` (as ``/proc/<pid>/cgroup`` gives it).

        ``None`` when the path lies outside what this mount shows.
        """
        root = self.mount_root.rstrip("/")
        if cgroup_path != root and not cgroup_path.startswith(root + "/"):
            return None
        relative = cgroup_path[len(root) :].lstrip("/")
        if ".." in relative.split("/"):
            return None  # outside this namespace's view (/proc/<pid>/cgroup shows /../x)
        return os.path.join(self.mount_point, relative) if relative else self.mount_point

    def cgroup_path(self, directory: str) -> str:
        """The inverse of :meth:`directory`: cgroup path of a directory under the mount."""
        relative = os.path.relpath(directory, self.mount_point)
        root = self.mount_root.rstrip("/")
        if relative == ".":
            return root or "/"
        return f"{root}/{relative}"


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if "\\" not in field:
        return field
    out = []
    index = 0
    while index < len(field):
        if field[index] == "\\" and field[index + 1 : index + 4].isdigit():
            out.append(chr(int(field[index + 1 : index + 4], 8)))
            index += 4
        else:
            out.append(field[index])
            index += 1
    return "".join(out)


def parse_mountinfo(text: str, what: str = "mountinfo") -> list[MountEntry]:
    """Every mount of a mountinfo text."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
        except ValueError:
            raise ParseError(what, f"no ' - ' separator in {line[:80]!r}") from None
        if len(fields) < separator + 3:
            raise ParseError(what, f"truncated line {line[:80]!r}")
        if not (fields[0].isdigit() and fields[1].isdigit()):
            raise ParseError(what, f"bad mount IDs in {line[:80]!r}")
        entries.append(
            MountEntry(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                fstype=fields[separator + 1],
                super_options=tuple(fields[separator + 3].split(",")),
            )
        )
    return entries


@attrs.frozen
class Hierarchies:
    """The v1 hierarchies by controller, and the cgroup2 mount."""

    v1: tuple[Hierarchy, ...]
    v2: Optional[Hierarchy]

    @property
    def mode(self) -> str:
        """``legacy`` (v1 only), ``hybrid`` (v1 controllers plus cgroup2), ``unified``."""
        has_v1_controllers = any(h.controllers for h in self.v1)
        if has_v1_controllers:
            return HYBRID if self.v2 is not None else LEGACY
        return UNIFIED if self.v2 is not None else LEGACY

    def for_controller(self, controller: str) -> Optional[Hierarchy]:
        """The v1 hierarchy a controller is bound to, or ``None``."""
        for hierarchy in self.v1:
            if controller in hierarchy.controllers:
                return hierarchy
        return None

    def named(self, name: str) -> Optional[Hierarchy]:
        """A named v1 hierarchy such as ``systemd`` (``name=systemd``)."""
        for hierarchy in self.v1:
            if hierarchy.name == name:
                return hierarchy
        return None


def hierarchies_from_mounts(entries: Iterable[MountEntry], root: str = "/") -> Hierarchies:
    """Build :class:`Hierarchies` from mount entries, prefixing mount points with ``root``.

    A mount hidden by another mount on its own path or on a mount it sits on
    (a bind mount over ``/sys/fs/cgroup/memory``, a fresh tmpfs over
    ``/sys/fs/cgroup``) is ignored. When a hierarchy is still mounted more than
    once, the mount with the shortest mount root (the widest view) wins; ties
    go to the first.
    """
    mounts = list(entries)
    hidden = _hidden_mounts(mounts)
    v1: dict[frozenset[str], Hierarchy] = {}
    v2: Optional[Hierarchy] = None
    for entry in mounts:
        if entry.fstype not in ("cgroup", "cgroup2") or entry.mount_id in hidden:
            continue
        mount_point = os.path.join(root, entry.mount_point.lstrip("/"))
        if entry.fstype == "cgroup2":
            candidate = Hierarchy(2, frozenset(), None, mount_point, entry.root)
            if v2 is None or len(entry.root) < len(v2.mount_root):
                v2 = candidate
            continue
        name = None
        controllers = set()
        for option in entry.super_options:
            if option.startswith("name="):
                name = option[5:]
            elif option not in _V1_MOUNT_OPTIONS:
                controllers.add(option)
        key = frozenset(controllers | ({f"name={name}"} if name else set()))
        hierarchy = Hierarchy(1, frozenset(controllers), name, mount_point, entry.root)
        previous = v1.get(key)
        if previous is None or len(entry.root) < len(previous.mount_root):
            v1[key] = hierarchy
    return Hierarchies(v1=tuple(v1.values()), v2=v2)


def _hidden_mounts(mounts: list[MountEntry]) -> set[int]:
    """IDs of mounts that cannot be reached from their mount point.

    A mount mounted on top of another at the same path (its parent) covers
    it: the parent, and every mount beneath the parent other than the cover
    itself, is hidden.
    """
    by_id = {entry.mount_id: entry for entry in mounts}
    covers: dict[int, set[int]] = {}
    for entry in mounts:
        parent = by_id.get(entry.parent_id)
        if parent is not None and parent is not entry and parent.mount_point == entry.mount_point:
            covers.setdefault(parent.mount_id, set()).add(entry.mount_id)
    hidden = set()
    for entry in mounts:
        if entry.mount_id in covers:
            hidden.add(entry.mount_id)
            continue
        node, seen = entry, {entry.mount_id}
        while True:
            parent = by_id.get(node.parent_id)
            if parent is None or parent.mount_id in seen:
                break
            if parent.mount_id in covers and node.mount_id not in covers[parent.mount_id]:
                hidden.add(entry.mount_id)
                break
            node = parent
            seen.add(node.mount_id)
    return hidden


# Super options of a v1 cgroup mount that are not controller names.
_V1_MOUNT_OPTIONS = frozenset(
    {"rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode", "favordynmods"}
    | {"nosuid", "nodev", "noexec", "relatime"}
)


def discover(root: str = "/") -> Hierarchies:
    """Read the mount table under ``root`` and return the cgroup hierarchies.

    With the default root, ``/proc/self/mountinfo`` is read. Under another root
    (the host's ``/`` mounted elsewhere, or a captured tree) the host's own
    table ``<root>/proc/1/mountinfo`` is preferred, since ``self`` would show
    the reader's mount namespace; ``<root>/proc/self/mountinfo`` is the fallback.
    """
    candidates = ["proc/self/mountinfo"]
    if os.path.abspath(root) != "/":
        candidates.insert(0, "proc/1/mountinfo")
    for candidate in candidates:
        path = os.path.join(root, candidate)
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                text = handle.read()
        except OSError:
            continue
        hierarchies = hierarchies_from_mounts(parse_mountinfo(text, path), root)
        if hierarchies.v1 or hierarchies.v2:
            return hierarchies
    raise NoCgroupFilesystem(
        f"no cgroup or cgroup2 filesystem is mounted (looked in {', '.join(candidates)} "
        f"under {root!r})"
    )
