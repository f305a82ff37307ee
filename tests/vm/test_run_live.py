"""The VM stage's verdict on the host side (tests/vm/run_live.py), without a VM.

``run_in_vm.main`` is replaced by a stand-in that leaves what a guest would
have left in the results dir (a JUnit XML or nothing) and returns an exit
status; the stage must fail on any failed or errored test, on no test at all,
and on a VM that did not boot or timed out, and pass only on a clean run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_in_vm
import run_live


def junit(tests: int, failures: int = 0, errors: int = 0, skipped: int = 0) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?><testsuites>'
        f'<testsuite name="pytest" errors="{errors}" failures="{failures}" '
        f'skipped="{skipped}" tests="{tests}" time="1.0"/></testsuites>'
    )


def fake_vm(rc: int, xml: Optional[str]) -> Callable[[list[str]], int]:
    def main(args: list[str]) -> int:
        out = Path(args[args.index("--out") + 1])
        assert args[args.index("--") + 1 : args.index("--") + 3] == ["sh", "-c"]
        if xml is not None:
            (out / "junit.xml").write_text(xml)
        return rc

    return main


@pytest.mark.parametrize(
    ("rc", "xml", "expected"),
    [
        (0, junit(40, skipped=2), 0),
        (1, junit(40, failures=1), 1),
        (1, junit(40, errors=1), 1),
        (0, junit(40, failures=1), 1),  # a JUnit failure counts even if pytest said 0
        (5, junit(0), 5),  # pytest collected nothing
        (0, junit(3, skipped=3), 1),  # nothing passed
        (1, None, 1),  # no JUnit XML came back
        (run_in_vm.EXIT_VM_FAILED, None, run_in_vm.EXIT_VM_FAILED),  # did not boot
        (run_in_vm.EXIT_TIMEOUT, None, run_in_vm.EXIT_TIMEOUT),
        (run_in_vm.EXIT_SKIP, None, 0),  # prerequisites missing, CI not true
    ],
)
def test_verdict(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rc: int,
    xml: Optional[str],
    expected: int,
) -> None:
    monkeypatch.setattr(run_in_vm, "main", fake_vm(rc, xml))
    assert run_live.main(["--results", str(tmp_path / "results")]) == expected
    if xml is not None and rc in (0, 1):
        counts = run_live.junit_counts(tmp_path / "results" / "junit.xml")
        last = capsys.readouterr().out.splitlines()[-1]
        passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        assert last == (
            f"vm: {passed} passed, {counts['failures'] + counts['errors']} failed, "
            f"{counts['skipped']} skipped"
        )


def test_junit_counts_a_bare_testsuite(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text('<testsuite tests="7" failures="1" errors="2" skipped="3"/>')
    assert run_live.junit_counts(path) == {"tests": 7, "failures": 1, "errors": 2, "skipped": 3}


def test_missing_prerequisite_is_a_failure_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CGSTATS_VM_VENV", str(tmp_path / "no-venv"))
    monkeypatch.setenv("CI", "true")
    assert run_live.main(["--results", str(tmp_path / "r")]) == run_in_vm.EXIT_VM_FAILED
    monkeypatch.setenv("CI", "false")
    assert run_live.main(["--results", str(tmp_path / "r")]) == 0
    assert "skipped: no python in the virtualenv" in capsys.readouterr().out


def test_pytest_arguments_reach_the_guest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def main(args: list[str]) -> int:
        seen.append(args)
        return run_in_vm.EXIT_SKIP

    monkeypatch.setattr(run_in_vm, "main", main)
    run_live.main(["--results", str(tmp_path / "r"), "tests/live/test_v2_live.py", "-k", "oom"])
    run_live.main(["--results", str(tmp_path / "r")])
    assert seen[0][-3:] == ["tests/live/test_v2_live.py", "-k", "oom"]
    assert seen[1][-2:] == ["sh", "tests/live"]


def test_runc_stats_path_reaches_the_guest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def main(args: list[str]) -> int:
        seen.append(args)
        return run_in_vm.EXIT_SKIP

    monkeypatch.setattr(run_in_vm, "main", main)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CGSTATS_RUNC_STATS", "build/runc-stats")
    run_live.main(["--results", str(tmp_path / "r")])
    monkeypatch.delenv("CGSTATS_RUNC_STATS")
    run_live.main(["--results", str(tmp_path / "r")])
    env = f"CGSTATS_RUNC_STATS={tmp_path}/build/runc-stats"
    assert seen[0][seen[0].index("--") - 2 : seen[0].index("--")] == ["--env", env]
    assert "--env" not in seen[1][: seen[1].index("--")]
