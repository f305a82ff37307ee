"""Check, inside the VM, what tests/vm/README.md promises.

Run: python tests/vm/run_in_vm.py -- python tests/vm/selfcheck.py
Prints one line per check and exits non-zero if any failed. Uses only the
standard library (plus an import check of attrs and psutil).
"""

from __future__ import annotations

import errno
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

FAILED: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        FAILED.append(name)


def read(path: Path) -> str:
    return path.read_text().strip()


def main() -> int:
    t0 = time.monotonic()
    for mod in ("attrs", "psutil"):
        importlib.import_module(mod)

    check("import attrs, psutil", True, f"{time.monotonic() - t0:.2f} s")
    check("python is the venv", sys.prefix != sys.base_prefix, sys.executable)

    root = Path("/sys/fs/cgroup")
    check("cgroup2 at /sys/fs/cgroup", (root / "cgroup.controllers").exists())
    own = Path(read(Path("/proc/self/cgroup")).split("::", 1)[1])
    check("own cgroup is the runner", own == Path("/cgstats-vm/runner"), str(own))
    own_dir = root / str(own).lstrip("/")
    check("$CGSTATS_VM_CGROUP is own cgroup", str(own_dir) == os.environ["CGSTATS_VM_CGROUP"])
    procs = read(own_dir / "cgroup.procs").split()
    check("alone in own cgroup", procs == [str(os.getpid())], " ".join(procs))
    avail = read(own_dir / "cgroup.controllers").split()
    check(
        "every controller available", {"cpu", "io", "memory", "pids"} <= set(avail), " ".join(avail)
    )

    # The no-internal-process rule: our own (populated) cgroup cannot delegate.
    try:
        (own_dir / "cgroup.subtree_control").write_text("+memory")
        check("own populated cgroup refuses subtree_control", False, "write succeeded")
    except OSError as e:
        check(
            "own populated cgroup refuses subtree_control",
            e.errno == errno.EBUSY,
            os.strerror(e.errno or 0),
        )

    # The rule for tests: move every process of own cgroup into a leaf child,
    # then enable controllers on own cgroup.
    leaf = own_dir / "self"
    leaf.mkdir()
    for pid in read(own_dir / "cgroup.procs").split():
        (leaf / "cgroup.procs").write_text(pid)
    for c in avail:
        (own_dir / "cgroup.subtree_control").write_text(f"+{c}")
    ctl = read(own_dir / "cgroup.subtree_control").split()
    check("own cgroup delegates after moving into a leaf", ctl == avail, " ".join(ctl))

    # A test cgroup with a nested child, beneath own cgroup.
    test_cg = own_dir / "selfcheck"
    child = test_cg / "child"
    child.mkdir(parents=True)
    (test_cg / "cgroup.subtree_control").write_text("+memory +io +pids +cpu")
    (child / "memory.max").write_text(str(16 * 1024 * 1024))
    disk = Path(os.environ["CGSTATS_VM_DISK"])
    dev = os.environ["CGSTATS_VM_DISK_DEV"]
    check("disk is 254:0", dev == "254:0", dev)
    code = f"""
import mmap, os
open({str(child / "cgroup.procs")!r}, 'w').write(str(os.getpid()))
buf = mmap.mmap(-1, 1 << 20); buf.write(b'x' * (1 << 20))
fd = os.open({str(disk / "f")!r}, os.O_CREAT | os.O_WRONLY | os.O_DIRECT)
for _ in range(16): os.write(fd, buf)
os.close(fd)
fd = os.open({str(disk / "f")!r}, os.O_RDONLY | os.O_DIRECT)
for _ in range(8): os.readv(fd, [buf])
os.close(fd)
b = bytearray(64 << 20)
for i in range(0, len(b), 4096): b[i] = 1
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    check("64 MiB in a 16 MiB cgroup is OOM-killed", res.returncode == -9, str(res.returncode))
    events = dict(line.split() for line in read(child / "memory.events").splitlines())
    check("memory.events counts the OOM kill", int(events["oom_kill"]) >= 1, str(events))
    io = read(child / "io.stat")
    stat = {}
    for line in io.splitlines():
        if line.startswith(dev + " "):
            stat = dict(kv.split("=", 1) for kv in line.split()[1:])
    check(
        "io.stat shows the O_DIRECT IO on 254:0",
        int(stat.get("rbytes", 0)) >= 8 << 20 and int(stat.get("wbytes", 0)) >= 16 << 20,
        io,
    )
    for cg in (child, test_cg):
        cg.rmdir()
    # Undo: controllers off, back into own cgroup, remove the leaf.
    for c in reversed(avail):
        (own_dir / "cgroup.subtree_control").write_text(f"-{c}")
    (own_dir / "cgroup.procs").write_text(str(os.getpid()))
    leaf.rmdir()
    check("undone", read(own_dir / "cgroup.procs").split() == [str(os.getpid())])
    print(f"{len(FAILED)} failed" if FAILED else "all checks passed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
