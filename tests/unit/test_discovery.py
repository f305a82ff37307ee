"""Spec validation and runtime recognition (pure functions)."""

from __future__ import annotations

import pytest

from cgstats.discovery import (
    CgroupPath,
    IdPrefix,
    ProcessSpec,
    identify,
    is_skipped,
    parse_proc_cgroup,
    parse_spec,
)
from cgstats.errors import InvalidContainerId

ID = "3f4e8a" + "0" * 52 + "abcdef"
UID = "0b7f3c1e-9d2a-4c5b-8e6f-1a2b3c4d5e6f"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("../../etc", "path separators"),
        ("..", "hexadecimal"),
        ("abc/def", "path separators"),
        ("abcd\x00", "NUL"),
        ("abc", "at least 4"),
        ("xyz123", "hexadecimal"),
        ("a" * 65, "at most 64"),
        ("", "empty"),
        ("/docker/../../etc", "'..'"),
        ("/docker/./x", "'.'"),
        ("/", "root cgroup"),
        ("//", "root cgroup"),
        ("/docker/\nx", "control"),
        ("pid:", "pid:N"),
        ("pid:-1", "pid:N"),
        ("pid:0", "pid:N"),
        ("pid:1x", "pid:N"),
        ("pid:١٢", "pid:N"),  # Arabic-Indic digits are not a pid
        ("docker-" + ID + ".scope", "hexadecimal"),
    ],
)
def test_bad_specs_are_refused_with_a_reason(spec: str, reason: str) -> None:
    with pytest.raises(InvalidContainerId) as caught:
        parse_spec(spec)
    assert reason in caught.value.reason


def test_good_specs() -> None:
    assert parse_spec(ID) == IdPrefix(ID)
    assert parse_spec("3F4E") == IdPrefix("3f4e")
    assert parse_spec("/system.slice//cron.service/") == CgroupPath("/system.slice/cron.service")
    assert parse_spec("pid:42") == ProcessSpec(42)


@pytest.mark.parametrize(
    ("path", "runtime", "pod"),
    [
        (f"/docker/{ID}", "docker", None),
        (f"/custom/parent/docker/{ID}", "docker", None),
        (f"/system.slice/docker-{ID}.scope", "docker", None),
        (f"/kubepods/burstable/pod{UID}/{ID}", "containerd", UID),
        (f"/kubepods/besteffort/pod{UID}/{ID}", "containerd", UID),
        (f"/kubepods/pod{UID}/{ID}", "containerd", UID),
        (f"/kubepods/burstable/pod{UID}/crio-{ID}", "cri-o", UID),
        (
            "/kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-pod{UID.replace('-', '_')}.slice/cri-containerd-{ID}.scope",
            "containerd",
            UID,
        ),
        (
            f"/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-{ID}.scope",
            "cri-o",
            UID,
        ),
        (
            "/kubepods.slice/kubepods-besteffort.slice/"
            f"kubepods-besteffort-pod{UID.replace('-', '_')}.slice/docker-{ID}.scope",
            "docker",
            UID,
        ),
        (f"/machine.slice/libpod-{ID}.scope", "podman", None),
        (
            f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope",
            "podman",
            None,
        ),
        (f"/libpod_parent/libpod-{ID}", "podman", None),
        (f"/system.slice/nerdctl-{ID}.scope", "nerdctl", None),
        (f"/default/{ID}", "containerd", None),
    ],
)
def test_identify_every_layout(path: str, runtime: str, pod: str | None) -> None:
    identity = identify(path)
    assert identity is not None
    assert (identity.id, identity.runtime, identity.pod_uid) == (ID, runtime, pod)


@pytest.mark.parametrize(
    "path",
    [
        f"/machine.slice/libpod-conmon-{ID}.scope",
        f"/kubepods/burstable/pod{UID}/crio-conmon-{ID}.scope",
        f"/system.slice/run-docker-netns-{ID[:12]}.mount",
        "/system.slice/cron.service",
        f"/{ID}",  # an ID directly under the root names no runtime layout
        "/docker",
        f"/docker/{ID[:63]}",
    ],
)
def test_not_containers(path: str) -> None:
    assert identify(path) is None


def test_skipped_names() -> None:
    assert is_skipped("var-lib-docker.mount")
    assert is_skipped(f"libpod-conmon-{ID}.scope")
    assert not is_skipped(f"libpod-{ID}.scope")


def test_proc_cgroup_keys() -> None:
    text = (
        "12:cpuacct,cpu:/docker/x\n"
        "9:name=systemd:/docker/x\n"
        "4:memory:/a/b:c\n"  # a colon in the path is kept
        "0::/docker/x\n"
    )
    assert parse_proc_cgroup(text) == {
        "cpu,cpuacct": "/docker/x",
        "name=systemd": "/docker/x",
        "memory": "/a/b:c",
        "": "/docker/x",
    }
