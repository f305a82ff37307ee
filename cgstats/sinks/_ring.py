"""Which transfer gets a container's items: the consistent-hash ring, and each node's health.

The ring is a :class:`uhashring.HashRing` over every configured transfer,
built once and never changed. A key's *walk* is the ring's distinct nodes
clockwise from the key (``HashRing.range(key, unique=True)``); its target is
the first node of the walk that is up. Skipping a down node in the walk picks
exactly the node that removing it from the ring would pick (its points are
gone, so the key lands on the next point clockwise that belongs to another
node), and taking it back restores the original mapping exactly: only a dead
node's keys move, and they move back. Never mutating the ring also avoids two
hazards of uhashring: it is not thread-safe, and re-adding a node with a
different weight left stale points behind (2.4).
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Container, Sequence
from typing import Any, Optional

from uhashring import HashRing  # type: ignore[import-untyped]

# uhashring's default number of points per node (weight 1).
DEFAULT_VNODES = 160
# Walks kept per key; beyond this the cache starts over (keys are container
# IDs, so it only fills on a host with that many containers over time).
_WALK_CACHE_MAX = 65536


class Ring:
    """The transfers on a consistent-hash ring; thread-safe, immutable after construction."""

    def __init__(self, nodes: Sequence[str], vnodes: int = DEFAULT_VNODES) -> None:
        if not nodes:
            raise ValueError("a ring needs at least one node")
        if len(set(nodes)) != len(nodes):
            raise ValueError(f"a node is listed twice: {list(nodes)}")
        if vnodes < 1:
            raise ValueError(f"vnodes must be >= 1, not {vnodes}")
        self.nodes = tuple(nodes)
        self._ring = HashRing(nodes={name: {"vnodes": vnodes} for name in nodes})
        self._walks: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def walk(self, key: str) -> tuple[str, ...]:
        """Every node once, in the order the ring offers them to ``key``."""
        walk = self._walks.get(key)
        if walk is None:
            with self._lock:  # HashRing reads are not documented as thread-safe
                found: list[Any] = list(self._ring.range(key, unique=True))
            walk = tuple(str(conf["nodename"]) for conf in found)
            if len(self._walks) >= _WALK_CACHE_MAX:
                self._walks.clear()
            self._walks[key] = walk
        return walk

    def primary(self, key: str) -> str:
        """The node ``key`` maps to while every node is up."""
        return self.walk(key)[0]

    def target(self, key: str, usable: Container[str]) -> Optional[str]:
        """The first node of ``key``'s walk in ``usable``; ``None`` if there is none."""
        for name in self.walk(key):
            if name in usable:
                return name
        return None


def backoff_s(failures: int, base_s: float, max_s: float) -> float:
    """Delay before probing a node after ``failures`` failures in a row (s).

    ``base_s`` after the first, doubling with each further failure, at most
    ``max_s``.
    """
    if failures < 1:
        return 0.0
    exponent = min(failures - 1, 62)  # 2**62 * base overflows nothing and exceeds any cap
    return min(max_s, base_s * math.pow(2.0, exponent))


class NodeHealth:
    """Whether one transfer is up; when down, since how many failures and when to probe.

    Times are on the caller's monotonic clock (s). A node starts up. Each
    failure (:meth:`failed`) marks it down and sets the next probe after
    :func:`backoff_s`, less up to ``jitter`` of it at random so that many
    agents do not probe in step. :meth:`answered` (a probe answered) brings it
    up but keeps the failure count, so a node that answers Ping and then
    fails the next call backs off further; :meth:`delivered` (a call
    succeeded) resets the count.
    """

    def __init__(
        self,
        base_s: float,
        max_s: float,
        jitter: float = 0.1,
        rng: Optional[random.Random] = None,
    ) -> None:
        if not base_s > 0 or not max_s >= base_s:
            raise ValueError(f"backoff needs 0 < base_s <= max_s, not {base_s!r}, {max_s!r}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), not {jitter!r}")
        self.base_s = base_s
        self.max_s = max_s
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.up = True
        self.failures = 0  # in a row, since the last delivered call
        self.total_failures = 0
        self.next_probe: Optional[float] = None  # when down: the earliest probe
        self.last_error: Optional[str] = None

    def failed(self, now: float, error: str) -> float:
        """Mark down after a failure at ``now``; returns the delay before the next probe (s)."""
        self.up = False
        self.failures += 1
        self.total_failures += 1
        self.last_error = error
        delay = backoff_s(self.failures, self.base_s, self.max_s)
        delay *= 1.0 - self.jitter * self._rng.random()
        self.next_probe = now + delay
        return delay

    def answered(self) -> None:
        """A probe was answered: up again (the failure count stays until a call succeeds)."""
        self.up = True
        self.next_probe = None

    def delivered(self) -> None:
        """A call succeeded: up, and the backoff starts over."""
        self.up = True
        self.failures = 0
        self.next_probe = None

    def probe_due(self, now: float) -> bool:
        return not self.up and self.next_probe is not None and now >= self.next_probe
