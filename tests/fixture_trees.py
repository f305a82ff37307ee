"""Access to the captured fixture trees (tests/fixtures/<name>/) and their capture.json."""

from __future__ import annotations

import json
import os
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
