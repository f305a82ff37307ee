"""The human-readable report: units, absent sections, unavailable counters."""

from __future__ import annotations

import fixture_trees
import pytest

from cgstats import Host
from cgstats.model import BlkioStats, Sample
from cgstats.report import format_sample, human_bytes, human_seconds


def test_human_units() -> None:
    assert human_bytes(None) == "-"
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(64 << 20) == "64.0 MiB"
    assert human_bytes(3 << 40) == "3.0 TiB"
    assert human_seconds(1_500_000_000) == "1.500 s"
    assert human_seconds(None) == "-"


def test_absent_sections_say_so() -> None:
    sample = Sample(
        id="/system.slice/cron.service",
        runtime=None,
        cgroup="/system.slice/cron.service",
        cgroup_version=1,
        timestamp=0.0,
        cpu=None,
        memory=None,
        blkio=BlkioStats(available=False, reason="no disk is counted", devices=()),
        net=None,
        pids=None,
        pressure=None,
        errors=("memory.stat: Permission denied",),
    )
    text = format_sample(sample)
    assert text.startswith("/system.slice/cron.service  runtime=-")
    assert "  cpu       - (controller not available)" in text
    assert "  blkio     unavailable: no disk is counted" in text
    assert "  net       - (no process to read it from)" in text
    assert "  pressure  - (PSI not available)" in text
    assert "  warning   memory.stat: Permission denied" in text


@pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")
@pytest.mark.parametrize("tree", fixture_trees.available())
def test_report_of_a_captured_container(tree: str) -> None:
    data = fixture_trees.capture(tree)
    main = fixture_trees.container(data, "main")
    with Host(fixture_trees.root(tree)) as host:
        text = format_sample(host.read(main["id"]))
    assert text.splitlines()[0].startswith(main["short_id"] + "  runtime=docker")
    assert "of 256.0 MiB" in text  # the memory limit, in human units
    assert f"pids      {main['expected']['nr_processes']} of 64" in text
    assert "vda (254:0)" in text
