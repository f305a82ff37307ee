"""Bad input and vanishing containers, on live cgroups and through the CLI.

Each case has a defined error (library) and exit code (CLI), and no
traceback ever reaches the terminal.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import fixture_trees
import pytest
import workload

import cgstats.dump
from cgstats import AmbiguousContainer, ContainerGone, ContainerNotFound, Host, InvalidContainerId


def dump(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cgstats.dump", *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def dump_in_process(*args: str) -> tuple[int, str, str]:
    """``cgstats.dump.main(args)`` in this process: exit status, stdout, stderr.

    The same code path as ``python -m cgstats.dump`` without a process start
    (seconds each under emulation in the VM stage); :func:`dump` checks that
    the real command ends the same way.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cgstats.dump.main(list(args))
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code if isinstance(exit_.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def docker_container(base: workload.Base, container_id: str | None = None) -> workload.Container:
    container_id = container_id or workload.random_id()
    return base.container(f"docker/{container_id}", container_id=container_id)


def test_removed_between_resolve_and_read(base: workload.Base, host: Host) -> None:
    container = docker_container(base)
    assert container.id is not None
    ref = host.resolve(container.id)
    container.remove()
    with pytest.raises(ContainerGone):
        host.open(ref)


def test_removed_while_its_files_are_held_open(base: workload.Base, host: Host) -> None:
    container = docker_container(base)
    container.spawn(workload.idle_argv())
    assert container.id is not None
    handle = host.open(container.id)
    handle.read()
    held = len(host.files)
    assert held >= len(handle.files)
    container.remove()  # rmdir succeeds although cgstats holds descriptors
    with pytest.raises(ContainerGone) as caught:
        handle.read()
    assert caught.value.container_id == container.id
    # Gone: the container's descriptors are released (host-wide ones may stay).
    assert handle.closed and not any(path in host.files for path in handle.files)


def test_ambiguous_prefix_lists_the_candidates(base: workload.Base, host: Host) -> None:
    prefix = "cafe" + workload.random_id()[:4]
    first = docker_container(base, prefix + workload.random_id()[8:])
    second = docker_container(base, prefix + workload.random_id()[8:])
    with pytest.raises(AmbiguousContainer) as caught:
        host.resolve(prefix)
    assert set(caught.value.candidates) == {first.id, second.id}
    result = dump(prefix)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "ambiguous" in line and str(first.id) in line and str(second.id) in line
    assert first.id is not None and host.resolve(first.id[:12]).id == first.id


def test_cli_exit_codes_and_messages(base: workload.Base) -> None:
    container = docker_container(base)
    container.spawn(workload.idle_argv())
    assert container.id is not None
    ok = dump("--json", container.id[:12])
    assert ok.returncode == 0 and json.loads(ok.stdout)["id"] == container.id

    unknown = dump("0" * 64)
    assert unknown.returncode == 1
    assert unknown.stderr.count("\n") == 1 and "not found" in unknown.stderr

    bad = dump("../../etc")
    assert bad.returncode == 2 and bad.stderr.startswith("cgstats: invalid container")
    for name in ("abc", "../../etc", "a/b", "/docker/../..", "pid:x", "zzzz", "/", "-"):
        code, _out, err = dump_in_process(name)
        assert code == 2, name
        assert err.startswith("cgstats: invalid container"), err

    code, out, _err = dump_in_process(container.id, "../../etc")  # a usage error reads nothing
    assert code == 2 and out == ""

    code, _out, err = dump_in_process()
    assert code == 2 and "usage:" in err
    assert dump_in_process("--all", container.id)[0] == 2

    everything = dump("--all", "--json")
    assert everything.returncode == 0
    assert container.id in {json.loads(line)["id"] for line in everything.stdout.splitlines()}


def test_library_refuses_nul_and_separators(host: Host) -> None:
    for bad in ("abcd\x00ef", "abcd/ef", "..", "/a/\x00", "/../etc"):
        with pytest.raises(InvalidContainerId):
            host.resolve(bad)


def test_gone_container_named_on_the_cli(base: workload.Base) -> None:
    container = docker_container(base)
    container.remove()
    assert container.id is not None
    result = dump(container.id)
    assert result.returncode == 1 and "not found" in result.stderr


@pytest.fixture(scope="module")
def fixture_subset() -> Iterator[str]:
    """The part of a captured tree that its main container needs, copied once.

    Copying from the repository is slow where it is a network or 9p mount (the
    VM stage); copies of this local copy are quick.
    """
    names = fixture_trees.available()
    if not names:
        pytest.skip("no fixture tree captured")
    directory = tempfile.mkdtemp(prefix=workload.PREFIX)
    try:
        root = os.path.join(directory, "tree")
        fixture_trees.copy_subset(names[0], root)
        yield root
    finally:
        shutil.rmtree(directory)


@pytest.fixture
def fixture_copy(fixture_subset: str) -> Iterator[str]:
    """A fresh copy of that subset for one test, readable by an unprivileged user."""
    directory = tempfile.mkdtemp(prefix=workload.PREFIX)
    try:
        root = os.path.join(directory, "tree")
        shutil.copytree(fixture_subset, root, symlinks=True)
        os.chmod(directory, 0o755)
        yield root
    finally:
        shutil.rmtree(directory)


def test_unreadable_file_loses_nothing_else(fixture_copy: str) -> None:
    data = fixture_trees.load(fixture_copy)
    main = fixture_trees.container(data, "main")
    key = fixture_trees.primary_key(data)
    directory = os.path.join(fixture_copy, main["dirs"][key].lstrip("/"))
    os.chmod(os.path.join(directory, "memory.stat"), 0)
    result = dump("--root", fixture_copy, "--json", main["short_id"], user="65534")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["memory"]["stat"] is None and document["memory"]["rss_bytes"] is None
    assert document["memory"]["usage_bytes"] is not None
    assert document["cpu"]["usage_ns"] is not None
    assert document["errors"] == ["memory.stat: Permission denied"]
    assert "warning" in result.stderr and "memory.stat: Permission denied" in result.stderr


def test_a_refused_netns_link_is_an_error_not_a_silent_gap(base: workload.Base) -> None:
    # Another user's process: without CAP_SYS_PTRACE /proc/<pid>/ns/net is refused
    # (net/dev is not), so the namespace owning the counters is unknown.
    container = docker_container(base)
    container.spawn(workload.idle_argv())
    result = dump("--json", container.id, user="65534")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["net"] is None
    assert document["errors"] == ["ns/net: Permission denied"]
    assert document["cpu"]["usage_ns"] is not None and document["pids"]["current"] == 1
    assert "ns/net: Permission denied" in result.stderr


def test_malformed_file_loses_nothing_else(fixture_copy: str) -> None:
    data = fixture_trees.load(fixture_copy)
    main = fixture_trees.container(data, "main")
    directory = os.path.join(
        fixture_copy, main["dirs"]["pids" if data["mode"] != "unified" else "cgroup2"].lstrip("/")
    )
    with open(os.path.join(directory, "pids.current"), "w", encoding="ascii") as handle:
        handle.write("12 apples\n")
    with Host(fixture_copy) as host:
        sample = host.read(main["id"])
    assert sample.pids is not None and sample.pids.current is None
    assert sample.pids.limit == main["expected"]["pids_max"]
    assert sample.errors == ("pids.current: not an integer: '12 apples'",)


def test_symlink_leading_out_is_refused(fixture_copy: str) -> None:
    with Host(fixture_copy) as host:
        mount_point = host.primary.mount_point
        os.symlink("/etc", os.path.join(mount_point, "escape"))
        os.symlink("/etc", os.path.join(mount_point, "docker-" + "a" * 64 + ".scope"))
        with pytest.raises(InvalidContainerId, match="outside"):
            host.resolve("/escape")
        # Enumeration never follows a symlink.
        assert all(not ref.id.startswith("aaaa") for ref in host.containers())
        with pytest.raises(ContainerNotFound):
            host.resolve("aaaa")


def test_open_files_are_bounded_and_released(base: workload.Base) -> None:
    containers = [docker_container(base) for _ in range(3)]
    for container in containers:
        container.spawn(workload.idle_argv())
    before = len(os.listdir("/proc/self/fd"))
    with Host(max_open_files=8) as host:
        handles = [host.open(str(c.id)) for c in containers]
        for _ in range(3):
            for handle in handles:
                sample = handle.read()
                assert sample.cpu is not None and sample.errors == ()
                assert len(host.files) <= 8
        handles[0].close()
        with host.open(str(containers[1].id)) as again:
            again.read()
    assert len(os.listdir("/proc/self/fd")) == before
