#!/usr/bin/env python3
"""Run one command as root inside a real cgroup v2 kernel under qemu (virtme-ng).

Usage::

    python tests/vm/run_in_vm.py [--out DIR] [--timeout S] [--stream] -- CMD [ARG...]

The newest installed Debian kernel (``/boot/vmlinuz-*``) is booted once with
``vng --disable-kvm`` (software emulation: nested KVM does not work on our
machines), with the host's root filesystem shared read-only, DIR shared
read-write and a fresh 256 MiB ext4 image as the virtio disk ``/dev/vda``.
``tests/vm/guest_setup.sh`` prepares cgroup2 and the disk, then runs CMD from
the repository root with ``python`` being the project's virtualenv.

Exit status: CMD's exit status; 77 ("skipped: ...") when qemu, vng or a kernel
is missing and ``CI`` is not ``true``; 124 on timeout; 125 when the VM did not
boot, the guest setup failed or the results are missing. See tests/vm/README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
GUEST_SETUP = REPO / "tests" / "vm" / "guest_setup.sh"

EXIT_SKIP = 77
EXIT_TIMEOUT = 124
EXIT_VM_FAILED = 125

DISK_SIZE = 256 * 1024 * 1024
# A second, raw disk (no filesystem): the guest's /dev/vdb, for tests that
# discard blocks (blkdiscard) without touching a mounted filesystem.
SCRATCH_SIZE = 64 * 1024 * 1024
# A second 9p export of the host's /, mounted in the guest with cache=loose
# and bound over the repo, the venv and its Python: vng's own root mount has
# no cache, and every process start under emulation then costs 2-7 s of 9p
# round trips (see tests/vm/README.md).
CACHED_ROOT_TAG = "cgstats_ro"
DEFAULT_TIMEOUT = 900.0


class VMError(Exception):
    """The VM could not be run (as opposed to the command failing inside it)."""


class Missing(VMError):
    """A prerequisite (qemu, vng, kernel, mkfs.ext4) is not installed."""


def _version_key(path: Path) -> list[tuple[int, object]]:
    """Natural sort key for ``vmlinuz-6.1.0-57-amd64``-style names."""
    key: list[tuple[int, object]] = []
    for part in re.split(r"(\d+)", path.name):
        if part.isdigit():
            key.append((1, int(part)))
        elif part:
            key.append((0, part))
    return key


def newest_kernel() -> Path:
    kernels = [p for p in Path("/boot").glob("vmlinuz-*") if p.is_file()]
    if not kernels:
        raise Missing("no kernel in /boot/vmlinuz-* (apt-get install linux-image-amd64)")
    kernel = max(kernels, key=_version_key)
    if not os.access(kernel, os.R_OK):
        raise Missing(f"{kernel} is not readable (run as root)")
    return kernel


def default_venv() -> Path:
    """The virtualenv whose ``python`` the guest should use.

    ``$CGSTATS_VM_VENV``, else the virtualenv running this script (in CI the
    clean clone's ``.venv``, with tox the env's), else the repository's ``.venv``.
    """
    env = os.environ.get("CGSTATS_VM_VENV")
    if env:
        return Path(env)
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix)
    return REPO / ".venv"


def find_tools(venv: Path) -> tuple[str, str]:
    """Return (vng, PATH for vng); raise Missing if something is not installed."""
    path = os.pathsep.join(
        [str(venv / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]
    )
    vng = shutil.which("vng", path=path)
    if vng is None:
        raise Missing("vng not found (pip install virtme-ng)")
    if shutil.which("qemu-system-x86_64", path=path) is None:
        raise Missing("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    if shutil.which("mkfs.ext4", path=path + os.pathsep + "/sbin:/usr/sbin") is None:
        raise Missing("mkfs.ext4 not found (apt-get install e2fsprogs)")
    # vng calls its own helpers through PATH: its directory must come first.
    return vng, os.pathsep.join([str(Path(vng).parent), path])


def make_disk(path: Path, env: dict[str, str]) -> None:
    with path.open("wb") as f:
        f.truncate(DISK_SIZE)
    mkfs = shutil.which("mkfs.ext4", path=env["PATH"] + os.pathsep + "/sbin:/usr/sbin")
    assert mkfs is not None
    res = subprocess.run(
        [mkfs, "-q", "-F", "-L", "cgstats-vm", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise VMError(f"mkfs.ext4 failed: {res.stderr.strip()}")


def write_nul(path: Path, items: list[str]) -> None:
    path.write_bytes(b"".join(s.encode() + b"\0" for s in items))


def vng_command(
    vng: str, kernel: Path, out: Path, disks: list[Path], cpus: int, memory: str
) -> list[str]:
    disk_args = [arg for disk in disks for arg in ("--disk", str(disk))]
    cached_root = (
        f"-fsdev local,id={CACHED_ROOT_TAG},path=/,security_model=none,readonly=on,"
        f"multidevs=remap -device virtio-9p-pci,fsdev={CACHED_ROOT_TAG},"
        f"mount_tag={CACHED_ROOT_TAG}"
    )
    return [
        vng,
        "--run",
        str(kernel),
        "--disable-kvm",
        "--memory",
        memory,
        "--cpus",
        str(cpus),
        "--rwdir",
        str(out),
        *disk_args,
        "--cwd",
        str(REPO),
        # vng pastes this into a shell command line: it must hold no quotes.
        f"--qemu-opts={cached_root}",
        "--",
        f"bash {shlex.quote(str(GUEST_SETUP))} {shlex.quote(str(out))}",
    ]


class Streamer:
    """Copy what the guest appends to its stdout/stderr files to ours."""

    def __init__(self, vm_dir: Path) -> None:
        self.files = [(vm_dir / "stdout", sys.stdout), (vm_dir / "stderr", sys.stderr)]
        self.offsets = [0, 0]

    def poll(self) -> None:
        for i, (path, dest) in enumerate(self.files):
            try:
                with path.open("rb") as f:
                    f.seek(self.offsets[i])
                    data = f.read()
            except FileNotFoundError:
                continue
            if data:
                self.offsets[i] += len(data)
                dest.write(data.decode(errors="replace"))
                dest.flush()


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:])


def run(
    argv: list[str],
    out: Path,
    timeout: float,
    stream: bool,
    cpus: int,
    memory: str,
    extra_env: list[str],
) -> int:
    venv = default_venv()
    if not (venv / "bin" / "python").exists():
        raise Missing(f"no python in the virtualenv {venv} (set CGSTATS_VM_VENV)")
    vng, path = find_tools(venv)
    kernel = newest_kernel()
    env = dict(os.environ, PATH=path)

    vm_dir = out / "vm"
    if vm_dir.exists():
        shutil.rmtree(vm_dir)
    vm_dir.mkdir(parents=True)
    write_nul(vm_dir / "argv", argv)
    guest_env = list(extra_env)
    if "CI" in os.environ:
        guest_env.append(f"CI={os.environ['CI']}")
    write_nul(vm_dir / "env", guest_env)
    write_nul(vm_dir / "conf", [str(REPO), str(venv)])
    console = vm_dir / "console.log"

    with tempfile.TemporaryDirectory(prefix="cgstats-vm-disk-") as disk_dir:
        disk = Path(disk_dir) / "disk.img"
        make_disk(disk, env)
        scratch = Path(disk_dir) / "scratch.img"
        with scratch.open("wb") as f:
            f.truncate(SCRATCH_SIZE)
        cmd = vng_command(vng, kernel, out, [disk, scratch], cpus, memory)
        print(
            f"run_in_vm: booting {kernel.name} (software emulation): {' '.join(cmd)}",
            file=sys.stderr,
            flush=True,
        )
        start = time.monotonic()
        streamer = Streamer(vm_dir) if stream else None
        with console.open("wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
            try:
                while True:
                    try:
                        proc.wait(timeout=0.5)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if streamer is not None:
                        streamer.poll()
                    if time.monotonic() - start > timeout:
                        kill_group(proc)
                        print(
                            f"run_in_vm: timeout after {timeout:.0f} s; console:\n{tail(console)}",
                            file=sys.stderr,
                        )
                        return EXIT_TIMEOUT
            finally:
                if proc.poll() is None:
                    kill_group(proc)
        elapsed = time.monotonic() - start

    if streamer is not None:
        streamer.poll()
    if not (vm_dir / "booted").exists():
        raise VMError(
            f"the VM did not boot (vng exit {proc.returncode}); console:\n{tail(console)}"
        )
    if (vm_dir / "setup_failed").exists():
        raise VMError(
            f"guest setup failed: {(vm_dir / 'setup_failed').read_text().strip()}\n"
            f"{tail(vm_dir / 'setup.log')}"
        )
    rc_file = vm_dir / "exit_code"
    if not rc_file.exists():
        raise VMError(
            f"no exit code in {rc_file}: the command did not finish "
            f"(vng exit {proc.returncode}); console:\n{tail(console)}"
        )
    if streamer is None:
        for name, dest in (("stdout", sys.stdout), ("stderr", sys.stderr)):
            f = vm_dir / name
            if f.exists():
                dest.write(f.read_text(errors="replace"))
                dest.flush()
    rc = int(rc_file.read_text().strip())
    print(
        f"run_in_vm: guest {(vm_dir / 'booted').read_text().strip()}: exit {rc} "
        f"after {elapsed:.1f} s (boot included)",
        file=sys.stderr,
    )
    return rc


def parse_args(args: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run a command as root inside a cgroup v2 kernel under qemu.",
        usage="%(prog)s [options] -- COMMAND [ARG...]",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="results dir, writable from the guest "
        "(default: a temporary dir, removed after a successful run)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds for boot plus command (default {DEFAULT_TIMEOUT:.0f})",
    )
    p.add_argument(
        "--stream",
        action="store_true",
        help="copy the guest's stdout/stderr while the command runs",
    )
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--memory", default="1G")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment variable for the command (repeatable)",
    )
    p.add_argument("command", nargs=argparse.REMAINDER)
    ns = p.parse_args(args)
    if ns.command and ns.command[0] == "--":
        ns.command = ns.command[1:]
    if not ns.command:
        p.error("no command given (put it after --)")
    for kv in ns.env:
        if "=" not in kv:
            p.error(f"--env wants NAME=VALUE, got {kv!r}")
    return ns


def main(args: Optional[list[str]] = None) -> int:
    ns = parse_args(args)
    ci = os.environ.get("CI", "").lower() == "true"
    temp_out = ns.out is None
    out = Path(tempfile.mkdtemp(prefix="cgstats-vm-")) if temp_out else ns.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        rc = run(ns.command, out, ns.timeout, ns.stream, ns.cpus, ns.memory, ns.env)
    except Missing as e:
        if temp_out:
            shutil.rmtree(out, ignore_errors=True)
        if ci:
            print(f"run_in_vm: FAILED (CI=true): {e}", file=sys.stderr)
            return EXIT_VM_FAILED
        print(f"skipped: {e}")
        return EXIT_SKIP
    except VMError as e:
        print(f"run_in_vm: FAILED: {e}\nrun_in_vm: results kept in {out}", file=sys.stderr)
        return EXIT_VM_FAILED
    if temp_out and rc == 0:
        shutil.rmtree(out, ignore_errors=True)
    elif temp_out:
        print(f"run_in_vm: results kept in {out}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
