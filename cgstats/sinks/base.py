"""The sink interface: what the collector hands each tick's output to.

A sink receives batches of :class:`~cgstats.Reading` (one per container per
tick) and of :class:`~cgstats.Event`. The collector never calls a sink on its
own thread: each sink sits behind a bounded queue served by a thread of its
own (see :mod:`cgstats.sinks`), so a slow or failing sink cannot delay a tick
or another sink. An exception a sink raises is logged and counted, never
propagated into :meth:`cgstats.Collector.tick`.

Subclass :class:`Sink` and override :meth:`Sink.emit`; the other methods have
do-nothing defaults. Any object with the same methods works too (the
collector only calls them), but only subclasses get the defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cgstats.collector import Reading
    from cgstats.events import Event


class Sink:
    """Base class for sinks. All methods are called from one thread, in order.

    The collector calls, in this order: :meth:`open` once with its step, then
    for every tick :meth:`emit_events` (only when there are events) and
    :meth:`emit`, then at :meth:`cgstats.Collector.close` :meth:`flush` and
    :meth:`close`. A sink made from a URL (:func:`cgstats.sinks.open_sink`)
    is built by :meth:`from_url`.
    """

    def open(self, step: float) -> None:
        """Called once, before the first :meth:`emit`, with the collector's step (s)."""

    def emit(self, readings: Sequence[Reading]) -> None:
        """Deliver one tick's readings (every watched container's, possibly none)."""
        raise NotImplementedError

    def emit_events(self, events: Sequence[Event]) -> None:
        """Deliver one tick's events (appeared, gone, restarted, soft limits, errors)."""

    def flush(self) -> None:
        """Push out anything buffered; return when it is delivered or given up on."""

    def close(self) -> None:
        """Release connections and files; called once, after :meth:`flush`."""

    @classmethod
    def from_url(cls, url: str) -> Sink:
        """Build the sink a URL names (``scheme://...``); see :func:`cgstats.sinks.open_sink`."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a URL")
