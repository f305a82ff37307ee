"""Docker's own view of cgstats' stats documents, for the tests.

``main.go`` here decodes documents into Docker's API type (``types.StatsJSON``
from Debian's golang-github-docker-docker-dev) with unknown keys refused,
checks that Go re-encodes each to itself, and computes what ``docker stats``
prints from it (docker/cli's stats_helpers.go formulas). :func:`binary`
builds it once per session (or takes ``$CGSTATS_DOCKER_API_CHECK``);
:func:`check` runs it.

:func:`cli_figures` is the same formulas in Python, for where the Go program
cannot be built (the VM stage: a Go build under emulation takes minutes);
tests/unit/test_docker_stats.py checks that both give the same figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any, Optional

import pytest

SOURCE = os.path.dirname(os.path.abspath(__file__))
GOPATH = "/usr/share/gocode"
PACKAGE = "github.com/docker/docker/api/types"
ENV = "CGSTATS_DOCKER_API_CHECK"


def build(directory: str) -> tuple[Optional[str], str]:
    """Build the checker into ``directory``: ``(binary, "")``, or ``(None, why not)``."""
    go = shutil.which("go")
    if go is None:
        return None, "no Go toolchain (apt-get install golang-go)"
    if not os.path.isfile(os.path.join(GOPATH, "src", PACKAGE, "stats.go")):
        return None, (
            f"Docker's API types are not under {GOPATH}"
            " (apt-get install golang-github-docker-docker-dev)"
        )
    binary = os.path.join(directory, "docker-api-check")
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": GOPATH,
        "GOFLAGS": "",
        "GOCACHE": os.path.join(directory, "go-build"),
    }
    built = subprocess.run(
        [go, "build", "-o", binary, "."],
        cwd=SOURCE,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        return None, f"go build failed: {built.stderr.strip()[-2000:]}"
    return binary, ""


def binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The checker for a session fixture: ``$CGSTATS_DOCKER_API_CHECK``, else built.

    Skips with the reason when it cannot be had, except with ``CI=true``
    (``.ci/run`` installs Go and the package): then it fails. In the VM
    stage it is not built (too slow under emulation) unless given.
    """
    given = os.environ.get(ENV)
    if given:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            pytest.fail(f"{ENV}={given} is not an executable file")
        return given
    if os.environ.get("CGSTATS_VM") == "1":
        pytest.skip(f"{ENV} is not set, and building Go under emulation is too slow")
    built, reason = build(str(tmp_path_factory.mktemp("docker-api")))
    if built is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true, yet the Docker API checker is unavailable: {reason}")
        pytest.skip(f"Docker API checker unavailable: {reason}")
    return built


def check(checker: str, documents: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The checker's verdict on each document: ``{"ok": bool, "error"?, "cli"?}``."""
    lines = "".join(json.dumps(document) + "\n" for document in documents)
    done = subprocess.run(
        [checker], input=lines, capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(documents), done.stdout
    return results


def cli_figures(document: dict[str, Any]) -> dict[str, float]:
    """What ``docker stats`` computes from one document (docker/cli stats_helpers.go)."""
    cpu, pre = document["cpu_stats"], document["precpu_stats"]
    cpu_delta = float(cpu["cpu_usage"]["total_usage"]) - float(pre["cpu_usage"]["total_usage"])
    system_delta = float(cpu.get("system_cpu_usage", 0)) - float(pre.get("system_cpu_usage", 0))
    online = float(cpu.get("online_cpus", 0)) or float(
        len(cpu["cpu_usage"].get("percpu_usage", ()))
    )
    percent = cpu_delta / system_delta * online * 100 if system_delta > 0 and cpu_delta > 0 else 0.0
    memory = document["memory_stats"]
    usage, stats = memory.get("usage", 0), memory.get("stats", {})
    if "total_inactive_file" in stats and stats["total_inactive_file"] < usage:
        used = float(usage - stats["total_inactive_file"])
    elif stats.get("inactive_file", 0) < usage:
        used = float(usage - stats.get("inactive_file", 0))
    else:
        used = float(usage)
    limit = float(memory.get("limit", 0))
    read = write = 0
    for entry in document["blkio_stats"]["io_service_bytes_recursive"] or ():
        if entry["op"][:1] in ("r", "R"):
            read += entry["value"]
        elif entry["op"][:1] in ("w", "W"):
            write += entry["value"]
    interfaces = document.get("networks", {}).values()
    return {
        "cpu_percent": percent,
        "mem_usage": used,
        "mem_limit": limit,
        "mem_percent": used / limit * 100 if limit else 0.0,
        "net_rx": float(sum(i["rx_bytes"] for i in interfaces)),
        "net_tx": float(sum(i["tx_bytes"] for i in interfaces)),
        "block_read": read,
        "block_write": write,
        "pids_current": document["pids_stats"].get("current", 0),
        "online_cpus": cpu.get("online_cpus", 0),
        "system_delta_ns": system_delta,
        "cpu_delta_ns": cpu_delta,
    }
