"""Network interface counters from ``/proc/<pid>/net/dev``.

The file shows the network namespace of that process: two header lines, then
``iface: rx_bytes rx_packets rx_errs rx_drop rx_fifo rx_frame rx_compressed
rx_multicast tx_bytes tx_packets tx_errs tx_drop tx_fifo tx_colls
tx_carrier tx_compressed``. Every interface is kept, ``lo`` included.
"""

from __future__ import annotations

import re

from cgstats.errors import ParseError
from cgstats.model import NetInterface
from cgstats.readers._parse import to_int

# One interface line: name, colon, exactly 16 ASCII decimal counters.
_LINE = re.compile(r" *([^\s:]+): *([0-9]+(?: +[0-9]+){15}) *", re.ASCII)


def parse_net_dev(text: str, what: str = "net/dev") -> tuple[NetInterface, ...]:
    """All interfaces of one ``net/dev`` text, in the kernel's order."""
    lines = text.splitlines()
    if len(lines) < 2 or "|" not in lines[0] or "|" not in lines[1]:
        raise ParseError(what, "missing the two header lines")
    interfaces = []
    for line in lines[2:]:
        match = _LINE.fullmatch(line)
        if match is not None:
            # The hot path: a line in the kernel's exact format, converted in C.
            counters = list(map(int, match.group(2).split()))
            interfaces.append(_interface(match.group(1), counters))
            continue
        if not line.strip():
            continue
        # Split on the colon, not on spaces: a large counter can touch it.
        name, colon, numbers = line.partition(":")
        name = name.strip()
        if not colon or not name:
            raise ParseError(what, f"expected 'iface: counters', got {line[:60]!r}")
        counters = [to_int(token, what) for token in numbers.split()]
        if len(counters) != 16:
            raise ParseError(what, f"{name}: expected 16 counters, got {len(counters)}")
        interfaces.append(_interface(name, counters))
    return tuple(interfaces)


def _interface(name: str, counters: list[int]) -> NetInterface:
    # Positional (name, rx_bytes, rx_packets, rx_errors, rx_dropped, tx_bytes,
    # tx_packets, tx_errors, tx_dropped): cheaper than keywords on the per-sample
    # path; tests/unit check the field order.
    return NetInterface(name, *counters[0:4], *counters[8:12])


def parse_netns_link(target: str, what: str = "ns/net") -> int:
    """The inode in a ``/proc/<pid>/ns/net`` link target such as ``net:[4026531840]``."""
    if not (target.startswith("net:[") and target.endswith("]")):
        raise ParseError(what, f"unexpected link target {target[:40]!r}")
    return to_int(target[5:-1], what)
