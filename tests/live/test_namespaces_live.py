"""cgstats inside other views of the hierarchy: a bind-mounted subtree (mount
root other than ``/``) and a cgroup namespace with its own cgroup mounts.

Both run ``python -m cgstats.dump`` in a private mount namespace made with
``unshare``, so the host's mounts are never touched.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from typing import Any

import pytest
import workload

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")

DUMP = [sys.executable, "-m", "cgstats.dump", "--all", "--json"]


def _mount_options(hierarchy: workload.Hierarchy) -> list[str]:
    if hierarchy.version == 2:
        return ["-t", "cgroup2", "cgroup2"]
    options = ",".join(hierarchy.controllers) if hierarchy.controllers else "none"
    if hierarchy.key.startswith("name="):
        options = f"none,{hierarchy.key}"
    return ["-t", "cgroup", "-o", options, "cgroup"]


def _in_private_mount_namespace(script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script in a new mount namespace; the host's mounts stay untouched."""
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


def _documents(output: str) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in map(json.loads, output.splitlines())}


def test_bind_mounted_subtree(base: workload.Base) -> None:
    container_id = workload.random_id()
    container = base.container(f"docker/{container_id}", container_id=container_id)
    container.spawn(workload.idle_argv())
    # Show only the test's base cgroup at each mount point, as a container that
    # bind-mounts part of the host's tree sees it.
    binds = [
        f"mount --bind {shlex.quote(base.base_dirs()[h.key])} {shlex.quote(h.mount_point)}"
        for h in base.hierarchies
    ]
    script = " && ".join([*binds, "exec " + shlex.join(DUMP)])
    result = _in_private_mount_namespace(script)
    document = _documents(result.stdout)[container_id]
    # The cgroup path stays the full path: the mount root is accounted for.
    primary = "cgroup2" if base.mode == "unified" else "memory"
    assert document["cgroup"] == container.paths[primary]
    assert document["pids"]["current"] == 1
    assert document["cpu"]["usage_ns"] is not None
    assert document["memory"]["usage_bytes"] is not None


def test_cgroup_namespace_with_its_own_mounts(base: workload.Base) -> None:
    # A container "outer" with its own cgroup namespace and fresh cgroup mounts,
    # as a runtime makes for a cgroupns container; cgstats runs inside it
    # (nsenter, as with "docker exec") and sees the containers nested in it.
    outer = base.container("outer")
    mounts = ["mount -t tmpfs cgstats-test /sys/fs/cgroup"]
    for hierarchy in base.hierarchies:
        point = shlex.quote(hierarchy.mount_point)
        mounts.append(f"mkdir -p {point}")
        mounts.append(shlex.join(["mount", *_mount_options(hierarchy), hierarchy.mount_point]))
        # Leave the namespace root empty (cgroup v2 allows no process in a
        # cgroup whose children have controllers), as an init inside would.
        mounts.append(f"mkdir {point}/agent")
        if "cpuset" in hierarchy.controllers:  # a v1 cpuset starts empty
            for name in ("cpuset.cpus", "cpuset.mems"):
                mounts.append(f"cat {point}/{name} > {point}/agent/{name}")
        mounts.append(f"echo $$ > {point}/agent/cgroup.procs")
    script = " && ".join([*mounts, "echo '{\"ready\": true}'", "exec sleep infinity"])
    holder = outer.spawn(
        ["unshare", "--cgroup", "--mount", "--propagation", "private", "sh", "-c", script]
    )
    assert holder.read_json()["ready"]
    inner_id = workload.random_id()
    inner = base.container(f"outer/docker/{inner_id}", container_id=inner_id)
    inner.spawn(workload.sleepers_argv(2)).read_json()
    result = subprocess.run(
        ["nsenter", f"--target={holder.pid}", "--cgroup", "--mount", "--", *DUMP],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    documents = _documents(result.stdout)
    assert set(documents) == {inner_id}
    document = documents[inner_id]
    assert document["cgroup"] == f"/docker/{inner_id}"
    assert document["runtime"] == "docker"
    assert document["pids"]["current"] == 3
    assert document["memory"]["usage_bytes"] > 0


def test_host_root_mounted_elsewhere(base: workload.Base, tmp_path: object) -> None:
    container_id = workload.random_id()
    container = base.container(f"docker/{container_id}", container_id=container_id)
    container.spawn(workload.sleepers_argv(3)).read_json()
    host_root = f"{tmp_path}/host"
    # As an agent container that mounts the host's / at /host sees it.
    script = (
        f"mkdir -p {shlex.quote(host_root)} && mount --rbind / {shlex.quote(host_root)} && "
        + shlex.join([*DUMP[:3], "--json", "--root", host_root, container_id])
        + " && CGSTATS_ROOT="
        + shlex.quote(host_root)
        + " "
        + shlex.join([*DUMP[:3], "--json", f"pid:{container.pids()[0]}"])
    )
    result = _in_private_mount_namespace(script)
    by_id, by_pid = (json.loads(line) for line in result.stdout.splitlines())
    for document in (by_id, by_pid):
        assert document["id"] == container_id
        assert document["pids"]["current"] == 4
        assert document["memory"]["usage_bytes"] > 0
    assert by_id["cgroup"] == by_pid["cgroup"]
