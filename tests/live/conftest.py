"""Live tests: real cgroups, processes and network namespaces on the running kernel.

Good citizens: everything is created beneath this process's own cgroup in each
hierarchy (``workload.Base``), in network namespaces the tests create, and is
removed afterwards, also on failure.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

# tests/ on sys.path (tests/conftest.py does the same) also when pytest runs
# with --confcutdir=tests/live, as the VM stage does to skip importing
# hypothesis, which the live tests do not use (seconds under emulation).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest
import workload

from cgstats import Host


def _why_not_live() -> str | None:
    if os.geteuid() != 0:
        return "live tests need root (they create cgroups and network namespaces)"
    if not os.path.isdir("/sys/fs/cgroup"):
        return "no /sys/fs/cgroup on this machine"
    if shutil.which("ip") is None:
        return "live tests need ip (iproute2)"
    return None


WHY_NOT_LIVE = _why_not_live()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/live/" in str(item.fspath):
            item.add_marker(pytest.mark.live)
            if WHY_NOT_LIVE:
                item.add_marker(pytest.mark.skip(reason=WHY_NOT_LIVE))


@pytest.fixture
def base() -> Iterator[workload.Base]:
    with workload.Base() as created:
        yield created


@pytest.fixture
def host() -> Iterator[Host]:
    with Host() as opened:
        yield opened


@pytest.fixture
def io_dir() -> Iterator[str]:
    """A directory on a real block device, for O_DIRECT IO (``CGSTATS_TEST_IO_DIR``)."""
    parent = os.environ.get("CGSTATS_TEST_IO_DIR", "/var/tmp")
    directory = tempfile.mkdtemp(prefix=workload.PREFIX, dir=parent)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
