"""Isolation of one sink: a bounded queue of batches and a daemon thread that feeds the sink.

The collector's thread only appends to the queue (:meth:`SinkWorker.submit`),
so a sink that blocks or raises never delays a tick or another sink. When the
queue holds ``max_batches`` batches, the oldest is dropped to make room: the
newest data is the most useful to a monitor, and a sink that catches up
resumes with current readings. Drops and exceptions are counted, and logged
at most once per ``log_interval_s`` per sink (with the number left unlogged),
so a dead sink cannot flood the log.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

if TYPE_CHECKING:
    from cgstats.collector import Reading
    from cgstats.events import Event

log = logging.getLogger("cgstats.sinks")

DEFAULT_MAX_BATCHES = 100
DEFAULT_LOG_INTERVAL_S = 60.0


class _Batch:
    """One tick's output for one sink."""

    __slots__ = ("events", "readings")

    def __init__(self, events: Sequence[Event], readings: Sequence[Reading]) -> None:
        self.events = events
        self.readings = readings


class _Marker:
    """A flush (or the final flush and close) the worker reaches after what was queued before."""

    __slots__ = ("close", "completed", "done")

    def __init__(self, close: bool) -> None:
        self.close = close
        self.done = threading.Event()  # set when the worker is past this marker
        self.completed = False  # and it got there by calling flush() (and close())


_Item = Union[_Batch, _Marker]


class _RateLimit:
    """Says whether a message may be logged now: at most once per ``interval_s``."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.next_allowed = -float("inf")
        self.suppressed = 0

    def allow(self) -> Optional[int]:
        """The number of messages suppressed since the last one if this one may go, else None."""
        now = self.clock()
        if now < self.next_allowed:
            self.suppressed += 1
            return None
        self.next_allowed = now + self.interval_s
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed


class SinkWorker:
    """Feeds one sink from a bounded queue on a daemon thread of its own.

    The thread calls the sink's ``open(step)`` first (when the sink has one),
    then, in queue order, ``emit_events(events)`` (when there are events and
    the sink has the method) and ``emit(readings)`` for each batch, and
    ``flush()`` / ``close()`` when a marker asks for them. Methods a duck-typed
    sink lacks are skipped, except ``emit``.
    """

    def __init__(
        self,
        sink: Any,
        step: float,
        *,
        max_batches: int = DEFAULT_MAX_BATCHES,
        log_interval_s: float = DEFAULT_LOG_INTERVAL_S,
        name: Optional[str] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batches < 1:
            raise ValueError(f"a sink queue holds at least 1 batch, not {max_batches}")
        self.sink = sink
        self.step = step
        self.max_batches = max_batches
        self.name = name or _describe(sink)
        self.delivered_batches = 0
        self.dropped_batches = 0
        self.errors = 0
        self.abandoned = False  # still busy when close() gave up on it
        self.died = False  # its thread ended before close (an exception beyond Exception)
        self._queue: collections.deque[_Item] = collections.deque()
        self._batches = 0  # how many items of the queue are batches (markers are never dropped)
        self._closing = False
        self._busy = threading.Condition()
        self._error_log = _RateLimit(log_interval_s, clock)
        self._drop_log = _RateLimit(log_interval_s, clock)
        self._close_marker: Optional[_Marker] = None
        self._thread = threading.Thread(
            target=self._run, name=f"cgstats-sink-{type(sink).__name__}", daemon=True
        )
        self._thread.start()

    # -- the collector's side --------------------------------------------------

    def submit(self, events: Sequence[Event], readings: Sequence[Reading]) -> None:
        """Queue one tick's output; drops the oldest queued batch when the queue is full."""
        with self._busy:
            if self._closing:
                if self.died:
                    self.dropped_batches += 1  # nobody will deliver it
                return
            if self._batches >= self.max_batches:
                self._drop_oldest()
            self._queue.append(_Batch(events, readings))
            self._batches += 1
            self._busy.notify()

    def request_flush(self) -> Optional[_Marker]:
        """Queue a flush behind what is queued; its ``done`` is set once ``flush()`` returned.

        A worker closing already gives its close marker (a close flushes first);
        ``None`` when its thread ended before a close.
        """
        with self._busy:
            if self._closing:
                return self._close_marker
        return self._queue_marker(close=False)

    def request_close(self) -> Optional[_Marker]:
        """Queue the final ``flush()`` and ``close()``; nothing is queued after it.

        Asked again, returns the same marker (``None`` if the thread already ended).
        """
        with self._busy:
            if self._close_marker is not None:
                return self._close_marker
        return self._queue_marker(close=True)

    def join(self, timeout: Optional[float]) -> bool:
        """Wait for the thread to end (after :meth:`request_close`); False if it did not.

        A worker still busy after ``timeout`` is marked abandoned and left to
        its daemon thread (it never blocks interpreter exit).
        """
        self._thread.join(timeout)
        if self._thread.is_alive():
            if not self.abandoned:
                self.abandoned = True
                log.warning(
                    "sink %s: still busy after the close timeout, abandoned (%d batches queued)",
                    self.name,
                    self.queued,
                )
            return False
        return True

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queued(self) -> int:
        """Batches waiting to be handed to the sink."""
        return self._batches

    def stats(self) -> dict[str, Any]:
        """Counters of this sink: see :meth:`cgstats.Collector.sink_stats`."""
        return {
            "sink": self.name,
            "queued": self.queued,
            "delivered_batches": self.delivered_batches,
            "dropped_batches": self.dropped_batches,
            "errors": self.errors,
            "alive": self.alive,
            "abandoned": self.abandoned,
        }

    @property
    def healthy(self) -> bool:
        """Neither abandoned by close nor ended before it."""
        return not (self.abandoned or self.died)

    def _queue_marker(self, close: bool) -> Optional[_Marker]:
        marker = _Marker(close)
        with self._busy:
            if self._closing or not self._thread.is_alive():
                return None
            if close:
                self._closing = True
                self._close_marker = marker
            self._queue.append(marker)
            self._busy.notify()
        return marker

    def _drop_oldest(self) -> None:
        """Drop the oldest batch (under the lock); markers stay where they are."""
        for index, item in enumerate(self._queue):
            if isinstance(item, _Batch):
                del self._queue[index]
                break
        self._batches -= 1
        self.dropped_batches += 1
        suppressed = self._drop_log.allow()
        if suppressed is not None:
            log.warning(
                "sink %s: queue full (%d batches), dropped the oldest (%d so far%s)",
                self.name,
                self.max_batches,
                self.dropped_batches,
                _since(suppressed, "drops"),
            )

    # -- the worker thread -----------------------------------------------------

    def _run(self) -> None:
        closed = False
        item: Optional[_Item] = None
        try:
            if hasattr(self.sink, "open"):
                self._call("open", self.step)
            while True:
                item = self._take()
                if isinstance(item, _Batch):
                    self._deliver(item)
                    continue
                self._call_optional("flush")
                if item.close:
                    self._call_optional("close")
                item.completed = True
                item.done.set()
                if item.close:
                    closed = True
                    return
        except BaseException as error:  # SystemExit or the like from the sink: no more delivery
            log.error(
                "sink %s: %s ended its thread early; it gets nothing more",
                self.name,
                type(error).__name__,
            )
        finally:
            self.died = not closed
            if isinstance(item, _Marker):
                item.done.set()  # the marker in hand when the thread ended (not completed)
            self._abort()

    def _take(self) -> _Item:
        with self._busy:
            while not self._queue:
                self._busy.wait()
            item = self._queue.popleft()
            if isinstance(item, _Batch):
                self._batches -= 1
            return item

    def _deliver(self, batch: _Batch) -> None:
        if batch.events and hasattr(self.sink, "emit_events"):
            self._call("emit_events", batch.events)
        if self._call("emit", batch.readings):
            self.delivered_batches += 1

    def _call_optional(self, method: str) -> None:
        if hasattr(self.sink, method):
            self._call(method)

    def _call(self, method: str, *args: object) -> bool:
        """Call ``sink.method(*args)``; count and (rate-limited) log an exception."""
        try:
            getattr(self.sink, method)(*args)
        except Exception:
            self.errors += 1
            suppressed = self._error_log.allow()
            if suppressed is not None:
                log.exception(
                    "sink %s: %s failed (%d failures so far%s)",
                    self.name,
                    method,
                    self.errors,
                    _since(suppressed, "failures"),
                )
            return False
        return True

    def _abort(self) -> None:
        """The thread ends: release whoever waits on a marker still queued."""
        with self._busy:
            self._closing = True
            for item in self._queue:
                if isinstance(item, _Marker):
                    item.done.set()
            self.dropped_batches += self._batches
            self._queue.clear()
            self._batches = 0


def _since(suppressed: int, what: str) -> str:
    return f"; {suppressed} more {what} not logged since the last report" if suppressed else ""


def _describe(sink: object) -> str:
    """A short name for a sink in logs and stats: its repr, cut to one line."""
    try:
        text = repr(sink)
    except Exception:
        text = f"<{type(sink).__name__}>"
    text = text.replace("\n", " ")
    return text if len(text) <= 120 else text[:117] + "..."
