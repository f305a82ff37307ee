"""Container lifecycle and soft-limit events, and the soft-limit watch (pure).

The :class:`~cgstats.collector.Collector` emits an :class:`Event` when a
container appears, disappears or restarts, when its memory working set
crosses its soft limit (and when it falls back below), and when it cannot be
read. This module holds the record and the threshold logic; it does no I/O.
"""

from __future__ import annotations

from typing import Optional

import attrs

from cgstats.model import MemoryStats, _Record

APPEARED = "appeared"
GONE = "gone"
RESTARTED = "restarted"
SOFT_LIMIT_EXCEEDED = "soft_limit_exceeded"
SOFT_LIMIT_CLEARED = "soft_limit_cleared"
ERROR = "error"
KINDS = (APPEARED, GONE, RESTARTED, SOFT_LIMIT_EXCEEDED, SOFT_LIMIT_CLEARED, ERROR)


@attrs.frozen
class Event(_Record):
    """Something that happened to one container.

    ``kind`` is one of :data:`KINDS`; ``timestamp`` is Unix time (s, float).
    ``detail`` says why (for ``gone``, ``restarted`` and ``error``).
    Soft-limit events carry the working set (``value_bytes``) and the
    threshold it crossed (``threshold_bytes``).
    """

    kind: str
    container_id: str
    timestamp: float
    runtime: Optional[str] = None
    cgroup: Optional[str] = None
    detail: Optional[str] = None
    value_bytes: Optional[int] = None
    threshold_bytes: Optional[int] = None


@attrs.frozen
class SoftLimit:
    """Which threshold the soft-limit watch compares the working set with.

    ``bytes`` wins, then ``fraction`` of the hard limit (``limit_bytes``);
    with neither, the container's own soft limit: v1
    ``memory.soft_limit_in_bytes``, v2 ``memory.high``. A container without
    the limit the rule needs is not watched. ``hysteresis`` is the fraction
    of the threshold the working set must fall below it before the
    ``soft_limit_cleared`` event (so a value hovering at the line does not
    flap).
    """

    bytes: Optional[int] = None
    fraction: Optional[float] = None
    hysteresis: float = 0.05

    def __attrs_post_init__(self) -> None:
        if self.bytes is not None and self.bytes <= 0:
            raise ValueError(f"soft limit bytes must be positive, not {self.bytes}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"soft limit fraction must be in (0, 1], not {self.fraction}")
        if not 0 <= self.hysteresis < 1:
            raise ValueError(f"soft limit hysteresis must be in [0, 1), not {self.hysteresis}")

    def threshold_bytes(self, memory: MemoryStats) -> Optional[int]:
        """The threshold for this container now, or ``None`` if it has none."""
        if self.bytes is not None:
            return self.bytes
        if self.fraction is not None:
            if memory.limit_bytes is None:
                return None
            return int(memory.limit_bytes * self.fraction)
        own = memory.soft_limit_bytes if memory.soft_limit_bytes is not None else memory.high_bytes
        return own


def soft_limit_state(
    exceeded: bool, working_set_bytes: int, threshold_bytes: int, hysteresis: float
) -> bool:
    """Whether the working set counts as over the threshold after this reading.

    Over when it exceeds ``threshold_bytes``; once over, it stays over until
    it falls below ``threshold_bytes * (1 - hysteresis)``.
    """
    if exceeded:
        return working_set_bytes >= threshold_bytes * (1.0 - hysteresis)
    return working_set_bytes > threshold_bytes
