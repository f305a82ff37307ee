"""Host-wide figures from ``/proc``: CPU time of the whole host and its memory size.

``/proc/stat`` starts with the ``cpu`` line (USER_HZ ticks since boot: user,
nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice), then one
``cpuN`` line per online CPU. ``/proc/meminfo`` holds ``MemTotal: N kB``.
These are what dockerd adds to its stats documents (``system_cpu_usage``,
``online_cpus``, and the memory limit of a container without one); see
:mod:`cgstats.docker`.
"""

from __future__ import annotations

from cgstats.errors import ParseError
from cgstats.readers._parse import to_int

STAT_FILE = "proc/stat"
MEMINFO_FILE = "proc/meminfo"
# Fields of the cpu line that dockerd sums: user nice system idle iowait irq softirq.
SYSTEM_CPU_FIELDS = 7


def parse_system_cpu(text: str, what: str = STAT_FILE) -> tuple[int, int]:
    """``(ticks, online_cpus)`` from ``/proc/stat``.

    ``ticks`` is the sum of the first seven fields of the ``cpu`` line (USER_HZ
    ticks, steal and guest time left out, as dockerd sums them);
    ``online_cpus`` the number of ``cpuN`` lines, i.e. the CPUs online now.
    """
    ticks = None
    online = 0
    for line in text.splitlines():
        if not line.startswith("cpu"):
            break  # the cpu lines come first; the rest (intr, ctxt, ...) is not needed
        name, _, rest = line.partition(" ")
        if name == "cpu":
            fields = rest.split()
            if len(fields) < SYSTEM_CPU_FIELDS:
                raise ParseError(what, f"the cpu line has {len(fields)} fields, expected 7 or more")
            ticks = sum(to_int(field, what) for field in fields[:SYSTEM_CPU_FIELDS])
        elif name[3:].isdigit() and name[3:].isascii():
            online += 1
        else:
            raise ParseError(what, f"unexpected line {line[:60]!r}")
    if ticks is None:
        raise ParseError(what, "no cpu line")
    return ticks, online


def parse_mem_total(text: str, what: str = MEMINFO_FILE) -> int:
    """``MemTotal`` of ``/proc/meminfo`` in bytes (the file says kB, meaning KiB)."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) != 3 or parts[2] != "kB":
                raise ParseError(what, f"expected 'MemTotal: N kB', got {line[:60]!r}")
            return to_int(parts[1], what) * 1024
    raise ParseError(what, "no MemTotal line")
