#!/usr/bin/env python3
"""The VM stage: every live test, inside a real cgroup v2 kernel, in one boot.

Usage::

    python tests/vm/run_live.py [--results DIR] [--timeout S] [PYTEST_ARG...]

Boots the newest Debian kernel under qemu with ``run_in_vm.py`` (software
emulation, every controller enabled, the virtio disk ``/dev/vda`` for block
IO and the raw ``/dev/vdb`` for discards), runs ``python -m pytest tests/live``
there from the root cgroup against this checkout's code, and brings pytest's
output and a JUnit XML back to ``DIR`` (default ``build/vm-results``):
``DIR/junit.xml``, ``DIR/vm/stdout`` (pytest's output), ``DIR/vm/stderr``,
``DIR/vm/setup.log``, ``DIR/vm/console.log``.

Exit status: 0 when the guest's pytest passed and the JUnit XML counts at least
one test and no failure or error; 1 when a test failed or nothing ran; 124 on
timeout; 125 when the VM did not boot or its results are missing, and when a
prerequisite (qemu, vng, kernel) is missing with ``CI=true``. Without
``CI=true`` a missing prerequisite prints ``skipped: <reason>`` and exits 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_in_vm

REPO = run_in_vm.REPO
DEFAULT_RESULTS = REPO / "build" / "vm-results"
# Six minutes is the VM stage's budget; the timeout leaves room for a slow host.
DEFAULT_TIMEOUT = 600.0

# Runs in the guest as ``sh -c GUEST_SCRIPT sh PYTEST_ARG...``. The runner
# moves itself to the root cgroup (the VM is ours; see tests/vm/README.md) so
# that workload.Base may enable controllers in the cgroups it creates.
GUEST_SCRIPT = (
    'echo $$ > /sys/fs/cgroup/cgroup.procs && mkdir -p "$CGSTATS_VM_DISK/io" && '
    'CGSTATS_TEST_IO_DIR="$CGSTATS_VM_DISK/io" '
    'CGSTATS_TEST_DISCARD_DEV="$CGSTATS_VM_SCRATCH_DEV" '
    # --confcutdir: tests/conftest.py only sets up hypothesis, for the unit
    # tests; importing it costs seconds under emulation.
    "exec python -m pytest -p no:cacheprovider -p no:hypothesispytest "
    "--confcutdir=tests/live -v -rs --durations=15 "
    '--junitxml="$CGSTATS_VM_OUT/junit.xml" "$@"'
)


# Host environment the guest's tests use, passed through (run_in_vm.py passes
# only CI by itself). CGSTATS_RUNC_STATS: the runc_stats binary that .ci/run
# builds on the host (building Go under emulation takes minutes); the host's /
# is the guest's, read-only, so the path stays valid unless it lies in /tmp or
# /run, which the guest has of its own.
PASS_ENV = ("CGSTATS_RUNC_STATS",)


def guest_env() -> list[str]:
    """``--env`` arguments of run_in_vm.py for the variables in PASS_ENV that are set."""
    args = []
    for name in PASS_ENV:
        value = os.environ.get(name)
        if value:
            if name == "CGSTATS_RUNC_STATS":
                value = os.path.abspath(value)
            args += ["--env", f"{name}={value}"]
    return args


def junit_counts(path: Path) -> dict[str, int]:
    """Totals of a pytest JUnit XML: tests, failures, errors, skipped."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
    return totals


def parse_args(args: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run tests/live inside a cgroup v2 kernel under qemu.",
        usage="%(prog)s [--results DIR] [--timeout S] [PYTEST_ARG...]",
    )
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results dir")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds for boot plus tests (default {DEFAULT_TIMEOUT:.0f})",
    )
    ns, pytest_args = p.parse_known_args(args)
    ns.pytest_args = pytest_args or ["tests/live"]
    return ns


def main(args: Optional[list[str]] = None) -> int:
    ns = parse_args(args)
    results: Path = ns.results.resolve()
    if results.exists():
        shutil.rmtree(results)
    results.mkdir(parents=True)
    start = time.monotonic()
    rc = run_in_vm.main(
        [
            "--out",
            str(results),
            "--timeout",
            str(ns.timeout),
            "--stream",
            *guest_env(),
            "--",
            "sh",
            "-c",
            GUEST_SCRIPT,
            "sh",
            *ns.pytest_args,
        ]
    )
    elapsed = time.monotonic() - start
    if rc == run_in_vm.EXIT_SKIP:
        return 0  # run_in_vm printed "skipped: <reason>" (never with CI=true)
    if rc in (run_in_vm.EXIT_VM_FAILED, run_in_vm.EXIT_TIMEOUT):
        print(f"vm: FAILED: the VM stage did not complete (exit {rc}), see {results}/vm")
        return rc
    junit = results / "junit.xml"
    if not junit.exists():
        print(f"vm: FAILED: pytest exited {rc} and wrote no {junit}")
        return rc or 1
    counts = junit_counts(junit)
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    print(f"vm: results in {results} ({elapsed:.0f} s, boot included)")
    failed = counts["failures"] + counts["errors"]
    print(f"vm: {passed} passed, {failed} failed, {counts['skipped']} skipped")
    if rc != 0 or failed or passed == 0:
        return rc or 1
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
