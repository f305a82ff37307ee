"""Hierarchy discovery from mountinfo."""

from __future__ import annotations

import os

import fixture_trees
import pytest

from cgstats import Host, NoCgroupFilesystem
from cgstats.mounts import HYBRID, LEGACY, UNIFIED, hierarchies_from_mounts, parse_mountinfo


def _captured(name: str) -> str:
    path = os.path.join(fixture_trees.root(name), "proc/self/mountinfo")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


@pytest.mark.skipif("v1-hybrid" not in fixture_trees.available(), reason="no v1 capture")
def test_captured_hybrid_host() -> None:
    hierarchies = hierarchies_from_mounts(parse_mountinfo(_captured("v1-hybrid")), "/x")
    assert hierarchies.mode == HYBRID
    controllers = {c for h in hierarchies.v1 for c in h.controllers}
    assert {"cpu", "cpuacct", "cpuset", "memory", "blkio", "pids"} <= controllers
    memory = hierarchies.for_controller("memory")
    assert memory is not None and memory.mount_point == "/x/sys/fs/cgroup/memory"
    assert memory.mount_root == "/" and memory.key == "memory"
    systemd = hierarchies.named("systemd")
    assert systemd is not None and systemd.key == "name=systemd" and not systemd.controllers
    assert hierarchies.v2 is not None and hierarchies.v2.mount_point == "/x/sys/fs/cgroup/unified"


@pytest.mark.skipif("v2-unified" not in fixture_trees.available(), reason="no v2 capture")
def test_captured_unified_host() -> None:
    hierarchies = hierarchies_from_mounts(parse_mountinfo(_captured("v2-unified")))
    assert hierarchies.mode == UNIFIED
    assert hierarchies.v2 is not None and hierarchies.v2.mount_point == "/sys/fs/cgroup"
    assert hierarchies.v2.key == ""


# The kernel's mountinfo format (proc(5)); co-mounted controllers as older
# distributions mount them, and a mount root inside the hierarchy.
COMOUNTED = (
    "25 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
    "26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:8 - cgroup cgroup "
    "rw,cpu,cpuacct\n"
    "27 25 0:24 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    "28 25 0:25 / /sys/fs/cgroup/sys\\040tem rw - cgroup cgroup rw,xattr,name=systemd\n"
)


def test_comounted_controllers_and_mount_root() -> None:
    hierarchies = hierarchies_from_mounts(parse_mountinfo(COMOUNTED))
    assert hierarchies.mode == LEGACY
    cpu, cpuacct = hierarchies.for_controller("cpu"), hierarchies.for_controller("cpuacct")
    assert cpu is cpuacct and cpu is not None and cpu.key == "cpu,cpuacct"
    memory = hierarchies.for_controller("memory")
    assert memory is not None
    assert memory.directory("/docker/abc/x") == "/sys/fs/cgroup/memory/x"
    assert memory.directory("/docker/abc") == "/sys/fs/cgroup/memory"
    assert memory.directory("/docker/other") is None  # outside what the mount shows
    assert memory.directory("/docker/abc/../../etc") is None
    assert memory.cgroup_path("/sys/fs/cgroup/memory/x") == "/docker/abc/x"
    systemd = hierarchies.named("systemd")
    assert systemd is not None and systemd.mount_point == "/sys/fs/cgroup/sys tem"


def test_covered_mounts_are_ignored() -> None:
    text = COMOUNTED + (
        # a bind mount over memory, then a new tmpfs over the whole directory
        "40 27 0:24 /docker/abc/inner /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "41 25 0:30 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
        "42 41 0:26 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
    )
    hierarchies = hierarchies_from_mounts(parse_mountinfo(text))
    # Everything under the old tmpfs (25) is hidden by 41; only pids remains.
    assert [h.key for h in hierarchies.v1] == ["pids"]


def test_no_cgroup_filesystem(tmp_path: os.PathLike[str]) -> None:
    os.makedirs(os.path.join(tmp_path, "proc/self"))
    with open(os.path.join(tmp_path, "proc/self/mountinfo"), "w", encoding="ascii") as handle:
        handle.write("25 1 0:22 / / rw - ext4 /dev/vda rw\n")
    with pytest.raises(NoCgroupFilesystem):
        Host(str(tmp_path))


def test_root_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    names = fixture_trees.available()
    if not names:
        pytest.skip("no fixture tree captured")
    monkeypatch.setenv("CGSTATS_ROOT", fixture_trees.root(names[0]))
    with Host() as host:
        assert host.root == fixture_trees.root(names[0])
        assert host.containers()
