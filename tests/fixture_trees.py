"""Access to the captured fixture trees (tests/fixtures/<name>/) and their capture.json."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
NAMES = ("v1-hybrid", "v2-unified")
# capture.py cannot tell containerd from dockershim for a bare ID under kubepods;
# cgstats reports containerd's CRI layout (see docs/metrics.md, Runtimes).
RUNTIME_ALIASES = {"kubernetes-cri": "containerd"}


def available() -> list[str]:
    """The fixture trees present in the repository."""
    return [name for name in NAMES if os.path.exists(os.path.join(FIXTURES, name, "capture.json"))]


def root(name: str) -> str:
    return os.path.join(FIXTURES, name)


def capture(name: str) -> dict[str, Any]:
    """capture.json of a fixture by name."""
    return load(root(name))


def load(tree: str) -> dict[str, Any]:
    """capture.json of the tree at ``tree`` (a fixture or a copy of one)."""
    with open(os.path.join(tree, "capture.json"), encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def container(data: dict[str, Any], name: str) -> dict[str, Any]:
    for entry in data["containers"]:
        if entry["name"] == name:
            return dict(entry)
    raise KeyError(name)


def primary_key(data: dict[str, Any]) -> str:
    """The hierarchy cgstats reports ``cgroup`` from: cgroup2 on unified, else memory."""
    return "cgroup2" if data["mode"] == "unified" else "memory"


def root_path(data: dict[str, Any], entry: dict[str, Any], hierarchy: str) -> str:
    """The directory of a captured container in ``hierarchy``, inside the fixture tree."""
    tree = next(root(name) for name in available() if capture(name)["date"] == data["date"])
    return os.path.join(tree, entry["dirs"][hierarchy].lstrip("/"))


def copy_subset(name: str, destination: str, containers: tuple[str, ...] = ("main",)) -> None:
    """Copy what a Host needs to read ``containers`` of fixture ``name``.

    That is capture.json, ``proc/``, ``sys/dev``, ``sys/devices``, each
    hierarchy root's own files and the named containers' directories (with
    their ancestors, empty). The whole tree has thousands of files, which
    is slow to copy on a 9p root under emulation.
    """
    source = root(name)
    data = capture(name)
    os.makedirs(destination)
    shutil.copy2(os.path.join(source, "capture.json"), destination)
    for part in ("proc", "sys/dev", "sys/devices"):
        if os.path.exists(os.path.join(source, part)):
            shutil.copytree(
                os.path.join(source, part), os.path.join(destination, part), symlinks=True
            )
    directories = [h["mount_point"] for h in data["hierarchies"]]
    for entry_name in containers:
        directories += container(data, entry_name)["dirs"].values()
    for directory in directories:
        relative = directory.lstrip("/")
        os.makedirs(os.path.join(destination, relative), exist_ok=True)
        with os.scandir(os.path.join(source, relative)) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    shutil.copy2(entry.path, os.path.join(destination, relative, entry.name))
