"""The step-driven collector: samples containers when its caller says, with rates.

A :class:`Collector` keeps one open :class:`~cgstats.container.Container`
per container it watches. :meth:`Collector.tick` reads all of them once and
returns a :class:`Reading` per container: the sample, its :class:`~cgstats.rates.Rates`
against the previous sample, and the events of that container.
:meth:`Collector.run` ticks every ``step`` seconds on the monotonic clock and
:meth:`Collector.start` does so on a background thread; :meth:`Collector.stop`
wakes the loop at once. One container's failure (gone, unreadable,
malformed) becomes an event; it never stops the others or the loop.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional, Protocol, Union

import attrs

from cgstats import events as ev
from cgstats import rates as rates_
from cgstats._closing import Closing
from cgstats.container import ContainerRef, ContainerSpec, checked_spec, spec_key
from cgstats.errors import CgstatsError, ContainerGone, ContainerNotFound
from cgstats.events import Event, SoftLimit
from cgstats.host import DEFAULT_LIMITS_MAX_AGE_S, Host
from cgstats.model import Sample
from cgstats.rates import Rates
from cgstats.sinks._worker import DEFAULT_MAX_BATCHES, SinkWorker

log = logging.getLogger("cgstats.collector")

# A container that disappeared and shows up again under the same ID within
# this long (or 10 steps, if longer) is reported as restarted, not appeared.
RESTART_MEMORY_S = 600.0
_RESTART_MEMORY_MAX = 4096


class Handle(Protocol):
    """What the collector needs of an open container (a :class:`~cgstats.Container`)."""

    ref: ContainerRef
    inode: int

    def read(self) -> Sample: ...

    def close(self) -> None: ...


class Source(Protocol):
    """What the collector needs of a host (a :class:`~cgstats.Host`)."""

    cpu_count: int

    def containers(self) -> list[ContainerRef]: ...

    def resolve(self, spec: str) -> ContainerRef: ...

    def open(self, container: Union[str, ContainerRef]) -> Handle: ...

    def close(self) -> None: ...


class Sink(Protocol):
    """What the collector hands its output to: at least ``emit`` (see :mod:`cgstats.sinks`).

    ``open(step)``, ``emit_events(events)``, ``flush()`` and ``close()`` are
    called when the object has them; :class:`cgstats.sinks.Sink` has all five.
    """

    def emit(self, readings: Sequence[Reading]) -> None: ...


@attrs.frozen
class Reading:
    """One container at one tick: the sample, its rates, and what happened to it.

    ``rates`` always exists; its fields are ``None`` on a container's first
    sample and after a reset. ``reset`` is true when the deltas restarted: the
    container was recreated (new cgroup inode) or a counter went backwards.
    ``late`` is true when the interval since the previous sample was much
    longer than the step (more than ``late_factor`` steps). ``net_shared_with``
    lists the other containers of this tick in the same network namespace;
    ``net_counted`` is true for exactly one container per namespace (the
    lowest ID) and false for the others and for containers in the host's
    namespace, so a sink summing traffic counts each namespace once
    (``None``: no network namespace was read).
    """

    sample: Sample
    rates: Rates
    reset: bool = False
    late: bool = False
    events: tuple[Event, ...] = ()
    net_shared_with: tuple[str, ...] = ()
    net_counted: Optional[bool] = None

    @property
    def id(self) -> str:
        """The container's ID (``sample.id``)."""
        return self.sample.id

    def to_dict(self) -> dict[str, Any]:
        """The core sample's dictionary plus ``rates``, ``reset``, ``late``, ``net_*``
        and, when there are any, ``events``."""
        out = self.sample.to_dict()
        out["rates"] = self.rates.to_dict()
        out["reset"] = self.reset
        out["late"] = self.late
        out["net_shared_with"] = list(self.net_shared_with)
        out["net_counted"] = self.net_counted
        if self.events:
            out["events"] = [event.to_dict() for event in self.events]
        return out


class _Entry:
    """What the collector keeps per watched container."""

    __slots__ = (
        "exceeded",
        "handle",
        "last_error",
        "last_sample",
        "last_time",
        "ref",
        "restarted",
        "spec",
    )

    def __init__(self, spec: Optional[str]) -> None:
        self.spec = spec  # the caller's name for it, or None if discovered
        self.ref: Optional[ContainerRef] = None
        self.handle: Optional[Handle] = None
        self.last_sample: Optional[Sample] = None
        self.last_time = 0.0
        self.exceeded = False
        self.last_error: Optional[str] = None
        self.restarted = False


class Collector(Closing):
    """Samples containers every ``step`` seconds, or whenever :meth:`tick` is called.

    ``containers=None`` watches every container on the host, rescanning for
    new and removed ones every ``rescan_s`` seconds (at the next tick after
    that). A list watches exactly those: 64-hex IDs, unique prefixes, cgroup
    paths or ``pid:N`` as :meth:`cgstats.Host.resolve` takes them, or
    :class:`~cgstats.ContainerRef`; an invalid name raises
    :class:`~cgstats.InvalidContainerId` at once, one that cannot be found
    (yet) gives an ``error`` event and is tried again at each rescan.

    ``sinks`` (objects with at least ``emit``; anything else raises
    :class:`TypeError`) receive every tick's readings and events, each on a
    thread of its own behind a queue of at most ``sink_queue_batches`` ticks
    (the oldest is dropped when it is full), so a slow or failing sink never
    delays a tick or another sink; :meth:`flush` waits for them, :meth:`close`
    flushes and closes them, giving up on a sink still busy after
    ``sink_timeout_s`` seconds.
    ``on_event`` is called with each :class:`~cgstats.events.Event` on the
    collector's thread, during :meth:`tick` (it must be quick). Exceptions from
    sinks and from the callback are logged and counted (:attr:`sink_errors`,
    :meth:`sink_stats`), never raised.
    The soft-limit watch uses ``soft_limit_bytes``, else ``soft_limit_fraction``
    of the hard limit, else each container's own soft limit (see
    :class:`~cgstats.events.SoftLimit`).

    ``host`` is a :class:`~cgstats.Host` (or anything with its methods, see
    :class:`Source`); by default one is made for ``root`` with ``max_open_files``
    and ``limits_max_age_s``, evicting files idle for two steps, and closed
    with the collector. ``clock``
    is the monotonic clock rates and scheduling use.
    """

    def __init__(
        self,
        containers: Optional[Iterable[ContainerSpec]] = None,
        step: float = 10.0,
        sinks: Sequence[Sink] = (),
        *,
        host: Optional[Source] = None,
        root: Optional[str] = None,
        max_open_files: Optional[int] = None,
        limits_max_age_s: Optional[float] = None,
        on_event: Optional[Callable[[Event], object]] = None,
        rescan_s: float = 10.0,
        soft_limit_bytes: Optional[int] = None,
        soft_limit_fraction: Optional[float] = None,
        soft_limit_hysteresis: float = 0.05,
        late_factor: float = 1.5,
        sink_timeout_s: float = 10.0,
        sink_queue_batches: int = DEFAULT_MAX_BATCHES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not step > 0 or math.isinf(step):
            raise ValueError(f"step must be a positive number of seconds, not {step!r}")
        if not rescan_s > 0:
            raise ValueError(f"rescan_s must be positive, not {rescan_s!r}")
        if not sink_timeout_s >= 0:
            raise ValueError(f"sink_timeout_s must be >= 0, not {sink_timeout_s!r}")
        if sink_queue_batches < 1:
            raise ValueError(f"sink_queue_batches must be >= 1, not {sink_queue_batches!r}")
        for sink in sinks:
            if not callable(getattr(sink, "emit", None)):
                raise TypeError(f"a sink needs an emit(readings) method; {sink!r} has none")
        self.step = float(step)
        self.rescan_s = float(rescan_s)
        self.late_factor = late_factor
        self.soft_limit = SoftLimit(soft_limit_bytes, soft_limit_fraction, soft_limit_hysteresis)
        self.sinks = list(sinks)
        self.on_event = on_event
        self.sink_timeout_s = float(sink_timeout_s)
        self.sink_queue_batches = sink_queue_batches
        self.overruns = 0
        self._callback_errors = 0
        self._workers: dict[int, SinkWorker] = {}  # by id() of the sink, which it holds
        self._retired: list[SinkWorker] = []  # of sinks taken out of self.sinks
        self._workers_lock = threading.Lock()
        self._clock = clock
        self._discover = containers is None
        specs = [] if containers is None else [checked_spec(spec) for spec in containers]
        self._own_host = host is None
        if host is None:
            host = Host(
                root,
                max_open_files=max_open_files,
                evict_idle_s=2 * self.step,
                limits_max_age_s=DEFAULT_LIMITS_MAX_AGE_S
                if limits_max_age_s is None
                else limits_max_age_s,
            )
        self.host: Source = host
        self._entries: dict[object, _Entry] = {}
        self._open_by_cgroup: dict[str, _Entry] = {}  # the entry holding each open cgroup
        self._excluded: set[str] = set()
        self._gone_ids: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._next_rescan = -math.inf
        self._ops_lock = threading.Lock()
        self._ops: dict[object, tuple[str, ContainerSpec]] = {}
        self._tick_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        for spec in specs:
            self._ops[spec_key(spec)] = ("add", spec)

    # -- membership ----------------------------------------------------------

    def add(self, container: ContainerSpec) -> None:
        """Watch ``container`` from the next tick on (thread-safe).

        Raises :class:`~cgstats.InvalidContainerId` for a name that is not a
        container name at all.
        """
        spec = checked_spec(container)
        with self._ops_lock:
            self._ops[spec_key(spec)] = ("add", spec)

    def remove(self, container: ContainerSpec) -> None:
        """Stop watching ``container`` from the next tick on (thread-safe).

        ``container`` is the name given to :meth:`add` (or the constructor), a
        container ID, or a unique prefix of a watched container's ID. With
        discovery, the container is left out of later rescans too.
        """
        spec = container if isinstance(container, str) else container.id
        with self._ops_lock:
            key = spec_key(container)
            if self._ops.get(key, ("", ""))[0] == "add" and key not in self._entries:
                del self._ops[key]  # added and removed before any tick: nothing to undo
            else:
                self._ops[key] = ("remove", spec)

    @property
    def watched(self) -> list[ContainerRef]:
        """The containers currently open (as of the last tick)."""
        return [entry.ref for entry in list(self._entries.values()) if entry.handle and entry.ref]

    # -- sampling ------------------------------------------------------------

    def tick(self) -> list[Reading]:
        """Sample every watched container now; queue them for the sinks; return the readings."""
        if self._closed:
            raise ValueError("tick() on a closed Collector")
        with self._tick_lock:
            events: list[Event] = []
            self._apply_ops(events)
            now = self._clock()
            if now >= self._next_rescan:
                self._next_rescan = now + self.rescan_s
                self._rescan(events)
            partial: list[tuple[Sample, Rates, bool, bool]] = []
            for entry in list(self._entries.values()):
                if self._stop.is_set() and self._thread is not None:
                    break  # stop() during a long tick: return what was read
                if entry.handle is not None:
                    result = self._read(entry, events)
                    if result is not None:
                        partial.append(result)
            readings = _readings(partial, events)
        self._deliver(readings, events)
        return readings

    def run(self, count: Optional[int] = None) -> int:
        """Tick every ``step`` seconds until ``count`` ticks or :meth:`stop`.

        Ticks are aligned to ``start + k * step`` on the monotonic clock, so
        slow ticks do not accumulate drift; slots missed by a tick that took
        longer than the step are skipped (counted in :attr:`overruns`, logged).
        Returns the number of ticks done.
        """
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0, not {count}")
        if threading.current_thread() is not self._thread:
            self._stop.clear()  # called directly: a stop() before this run is over
        done = 0
        next_slot = self._clock()
        while not self._stop.is_set() and (count is None or done < count):
            self.tick()
            done += 1
            if count is not None and done >= count:
                break
            next_slot += self.step
            now = self._clock()
            if now > next_slot:
                missed = math.floor((now - next_slot) / self.step) + 1
                self.overruns += missed
                log.warning(
                    "tick took %.3f s, longer than the %.3f s step: skipping %d slot(s)",
                    now - (next_slot - self.step),
                    self.step,
                    missed,
                )
                next_slot += missed * self.step
            if self._stop.wait(max(0.0, next_slot - self._clock())):
                break
        return done

    def start(self, count: Optional[int] = None) -> None:
        """Run :meth:`run` on a background (daemon) thread."""
        if self._closed:
            raise ValueError("start() on a closed Collector")
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the collector is already running")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run_logged, args=(count,), name="cgstats-collector", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: Optional[float] = 5.0) -> None:
        """Stop the loop: wakes it at once, and waits up to ``timeout`` for it."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if not thread.is_alive():
                self._thread = None

    @property
    def running(self) -> bool:
        """Whether the background thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop, close every file handle, flush and close every sink (and our host).

        Sinks get what is queued, then ``flush()`` and ``close()``, all of them
        at once; one still busy ``sink_timeout_s`` after close began is
        abandoned on its daemon thread (logged, ``abandoned`` in
        :meth:`sink_stats`), so close never hangs.
        """
        if self._closed:
            return
        self.stop()
        with self._tick_lock:
            self._closed = True
            for entry in self._entries.values():
                self._close(entry)
            self._entries.clear()
            with self._ops_lock:
                self._ops.clear()
        workers = self._all_workers()
        for worker in workers:
            worker.request_close()
        deadline = time.monotonic() + self.sink_timeout_s
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if self._own_host:
            self.host.close()

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every sink has been given what is queued and its ``flush()`` returned.

        Waits at most ``timeout`` seconds in all (``None``: as long as it
        takes). True if every sink got there in time; a sink's exceptions do
        not make it false (they are counted). After :meth:`close`, true
        unless a sink was abandoned or its thread ended early.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        markers = [(worker, worker.request_flush()) for worker in self._all_workers()]
        complete = True
        for worker, marker in markers:
            if marker is None or not worker.healthy:  # ended early, or given up on: no wait
                complete = complete and worker.healthy
                continue
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            complete = marker.done.wait(left) and marker.completed and complete
        return complete

    @property
    def sink_errors(self) -> int:
        """Exceptions raised by sinks (any method) and by ``on_event``, in all."""
        with self._workers_lock:
            workers = [*self._workers.values(), *self._retired]
        return self._callback_errors + sum(worker.errors for worker in workers)

    def sink_stats(self) -> list[dict[str, Any]]:
        """Counters of each sink in :attr:`sinks`, in order.

        Each is a dict: ``sink`` (its repr), ``queued`` (ticks waiting),
        ``delivered_batches`` (ticks whose ``emit`` returned),
        ``dropped_batches`` (ticks dropped from a full queue), ``errors``
        (exceptions from any of its methods), ``alive`` (its thread runs) and
        ``abandoned`` (still busy when :meth:`close` gave up on it).
        """
        workers = {id(w.sink): w for w in self._sync_workers()}
        return [workers[id(sink)].stats() for sink in self.sinks if id(sink) in workers]

    @property
    def closed(self) -> bool:
        return self._closed

    # -- internals -------------------------------------------------------------

    def _run_logged(self, count: Optional[int]) -> None:
        try:
            self.run(count)
        except Exception:  # the loop must not die silently
            log.exception("collector loop failed")

    def _apply_ops(self, events: list[Event]) -> None:
        with self._ops_lock:
            ops, self._ops = self._ops, {}
        for key, (op, spec) in ops.items():
            if op == "add":
                if isinstance(spec, str):
                    self._excluded.discard(spec)
                if key not in self._entries:
                    entry = _Entry(spec if isinstance(spec, str) else None)
                    if isinstance(spec, ContainerRef):
                        entry.ref = spec
                    self._entries[key] = entry
                    self._open(entry, events, ev.APPEARED, resolve=True)
            else:
                self._remove(key, str(spec))

    def _remove(self, key: object, spec: str) -> None:
        """Drop the entry named ``spec`` (or the one container its ID prefix names)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._close(entry)
            ids = {entry.ref.id} if entry.ref is not None else set()
        else:
            ids = {e.ref.id for e in self._entries.values() if e.ref and e.ref.id.startswith(spec)}
            if len(ids) > 1 and spec not in ids:
                log.warning("remove(%r): ambiguous among %d containers, ignored", spec, len(ids))
                return
            ids = {spec} if spec in ids else ids
        # The same container may also be held under another name (or discovered).
        for other_key, other in list(self._entries.items()):
            if other.ref is not None and other.ref.id in ids:
                self._close(self._entries.pop(other_key))
        if self._discover:
            self._excluded.update(ids)
            self._excluded.add(spec)

    def _open(self, entry: _Entry, events: list[Event], kind: str, resolve: bool) -> bool:
        """Open ``entry`` (resolving its spec first if ``resolve``); ``kind`` event on success.

        A container that cannot be found gives one ``error`` event; one that
        vanished meanwhile gives nothing (it simply is not there).
        """
        try:
            if resolve and entry.spec is not None:
                entry.ref = self.host.resolve(entry.spec)
            if entry.ref is None or self._held_by_another(entry):
                return False
            entry.handle = self.host.open(entry.ref)
            self._open_by_cgroup[entry.ref.cgroup] = entry
        except ContainerGone:
            return False
        except ContainerNotFound as error:
            if entry.ref is None:  # never seen: say so once; a gone one just waits
                self._error(entry, str(error), events)
            return False
        except CgstatsError as error:
            self._error(entry, str(error), events)
            return False
        except Exception as error:  # unreadable in some unforeseen way: one event
            self._error(entry, f"{type(error).__name__}: {error}", events)
            return False
        ref = entry.ref
        if kind == ev.APPEARED and self._gone_ids.pop(ref.id, None) is not None:
            kind = ev.RESTARTED
        entry.restarted = kind == ev.RESTARTED
        entry.last_sample = None
        entry.last_error = None
        events.append(self._event(kind, ref, "new cgroup" if entry.restarted else None))
        return True

    def _held_by_another(self, entry: _Entry) -> bool:
        """Whether another entry already reads this cgroup (two names for one container)."""
        assert entry.ref is not None
        holder = self._open_by_cgroup.get(entry.ref.cgroup)
        return holder is not None and holder is not entry

    def _close(self, entry: _Entry) -> None:
        """Close ``entry``'s handle, if it has one; closing never fails a tick."""
        handle, entry.handle = entry.handle, None
        if handle is None:
            return
        if self._open_by_cgroup.get(handle.ref.cgroup) is entry:
            del self._open_by_cgroup[handle.ref.cgroup]
        try:
            handle.close()
        except Exception:
            log.debug("closing %r failed", handle, exc_info=True)

    def _rescan(self, events: list[Event]) -> None:
        self._forget_old_gone()
        if self._discover:
            try:
                listed = self.host.containers()
            except Exception as error:  # e.g. the cgroup mount went away: keep the old set
                log.warning("rescan failed: %s", error)
                listed = None
            if listed is not None:
                current = {ref.cgroup: ref for ref in listed if ref.id not in self._excluded}
                held = {e.ref.cgroup for e in self._entries.values() if e.spec and e.ref}
                for key, entry in list(self._entries.items()):
                    if entry.spec is None and key not in current:
                        if entry.ref is not None and entry.ref.id in self._excluded:
                            self._close(self._entries.pop(key))  # removed by the caller
                        else:
                            self._gone(key, entry, "no longer listed", events)
                for cgroup, ref in current.items():
                    if cgroup not in self._entries and cgroup not in held:
                        entry = _Entry(None)
                        entry.ref = ref
                        self._entries[cgroup] = entry
                        if not self._open(entry, events, ev.APPEARED, resolve=False):
                            del self._entries[cgroup]
        for entry in self._entries.values():
            if entry.handle is None and entry.spec is not None:
                # Named by the caller and not open (not found yet, or gone): try again.
                kind = ev.RESTARTED if entry.ref is not None else ev.APPEARED
                self._open(entry, events, kind, resolve=True)
            elif entry.handle is not None and _recreated(entry.handle):
                self._close(entry)
                self._open(entry, events, ev.RESTARTED, resolve=False)

    def _read(
        self, entry: _Entry, events: list[Event], retry: bool = True
    ) -> Optional[tuple[Sample, Rates, bool, bool]]:
        handle = entry.handle
        assert handle is not None and entry.ref is not None
        started = self._clock()
        try:
            sample = handle.read()
        except ContainerGone as gone:
            self._close(entry)
            # Recreated under the same cgroup path already? Then it restarted.
            if retry and self._open(entry, events, ev.RESTARTED, resolve=False):
                return self._read(entry, events, retry=False)
            self._gone(None, entry, str(gone), events)
            return None
        except Exception as error:  # malformed beyond the readers' tolerance, EACCES, ...
            self._error(entry, f"{type(error).__name__}: {error}", events)
            return None
        entry.last_error = None
        previous, previous_time = entry.last_sample, entry.last_time
        entry.last_sample, entry.last_time = sample, started
        reset = entry.restarted
        entry.restarted = False
        late = False
        if previous is None:
            rates = rates_.first()
        else:
            interval = started - previous_time
            rates, backwards = rates_.compute(previous, sample, interval, self.host.cpu_count)
            reset = reset or backwards
            late = interval > self.late_factor * self.step
        self._watch_soft_limit(entry, sample, events)
        return sample, rates, reset, late

    def _gone(self, key: object, entry: _Entry, detail: str, events: list[Event]) -> None:
        """Report ``entry`` gone; forget it unless the caller named it (then it waits)."""
        self._close(entry)
        ref = entry.ref
        if ref is None:
            return
        events.append(self._event(ev.GONE, ref, detail))
        self._gone_ids[ref.id] = self._clock()
        self._gone_ids.move_to_end(ref.id)
        while len(self._gone_ids) > _RESTART_MEMORY_MAX:
            self._gone_ids.popitem(last=False)
        entry.last_sample = None
        entry.exceeded = False
        if entry.spec is None:
            self._entries.pop(key if key is not None else ref.cgroup, None)

    def _forget_old_gone(self) -> None:
        horizon = self._clock() - max(RESTART_MEMORY_S, 10 * self.step)
        while self._gone_ids:
            container_id, when = next(iter(self._gone_ids.items()))
            if when >= horizon:
                break
            del self._gone_ids[container_id]

    def _error(self, entry: _Entry, message: str, events: list[Event]) -> None:
        """One ``error`` event per distinct message in a row, not one per tick."""
        if message == entry.last_error:
            return
        entry.last_error = message
        ref = entry.ref
        name = ref.id if ref is not None else str(entry.spec)
        log.warning("%s: %s", name[:12], message)
        events.append(
            Event(
                kind=ev.ERROR,
                container_id=name,
                timestamp=time.time(),
                runtime=ref.runtime if ref is not None else None,
                cgroup=ref.cgroup if ref is not None else None,
                detail=message,
            )
        )

    def _watch_soft_limit(self, entry: _Entry, sample: Sample, events: list[Event]) -> None:
        memory = sample.memory
        if memory is None or memory.working_set_bytes is None:
            return
        threshold = self.soft_limit.threshold_bytes(memory)
        if threshold is None:
            entry.exceeded = False
            return
        exceeded = ev.soft_limit_state(
            entry.exceeded, memory.working_set_bytes, threshold, self.soft_limit.hysteresis
        )
        if exceeded != entry.exceeded:
            entry.exceeded = exceeded
            assert entry.ref is not None
            kind = ev.SOFT_LIMIT_EXCEEDED if exceeded else ev.SOFT_LIMIT_CLEARED
            event = self._event(kind, entry.ref, None)
            events.append(
                attrs.evolve(event, value_bytes=memory.working_set_bytes, threshold_bytes=threshold)
            )

    def _event(self, kind: str, ref: ContainerRef, detail: Optional[str]) -> Event:
        return Event(
            kind=kind,
            container_id=ref.id,
            timestamp=time.time(),
            runtime=ref.runtime,
            cgroup=ref.cgroup,
            detail=detail,
        )

    def _deliver(self, readings: list[Reading], events: list[Event]) -> None:
        if self.on_event is not None:
            for event in events:
                try:
                    self.on_event(event)
                except Exception:
                    self._callback_errors += 1
                    log.exception("on_event callback failed for %s", event.kind)
        batch_events, batch_readings = tuple(events), tuple(readings)
        for worker in self._sync_workers():
            worker.submit(batch_events, batch_readings)

    def _sync_workers(self) -> list[SinkWorker]:
        """One worker per sink in :attr:`sinks` (which callers may change), in its order.

        A sink added to the list gets a worker (and its ``open``) now; one taken
        out of it is flushed and closed by its worker in the background.
        """
        with self._workers_lock:
            current = list(self.sinks)
            wanted = {id(sink) for sink in current}
            for key in [key for key in self._workers if key not in wanted]:
                retired = self._workers.pop(key)
                retired.request_close()
                self._retired.append(retired)
            workers: list[SinkWorker] = []
            for sink in current:
                worker = self._workers.get(id(sink))
                if worker is None:
                    worker = SinkWorker(sink, self.step, max_batches=self.sink_queue_batches)
                    self._workers[id(sink)] = worker
                if worker not in workers:  # the same sink listed twice is fed once
                    workers.append(worker)
            return workers

    def _all_workers(self) -> list[SinkWorker]:
        """The current sinks' workers and those of sinks taken out but not done yet."""
        workers = self._sync_workers()
        with self._workers_lock:
            return workers + self._retired

    def __repr__(self) -> str:
        mode = "all containers" if self._discover else f"{len(self._entries)} containers"
        return f"<cgstats.Collector {mode} step={self.step:g}s>"


def _recreated(handle: Handle) -> bool:
    """Whether the handle's cgroup directory now holds another cgroup (new inode)."""
    try:
        return os.stat(handle.ref.directory).st_ino != handle.inode
    except OSError:
        return False  # gone or not a real directory: the next read says which


def _readings(
    partial: list[tuple[Sample, Rates, bool, bool]], events: list[Event]
) -> list[Reading]:
    """Readings with this tick's events of each container and ``net_*`` per namespace."""
    by_netns: dict[int, list[str]] = {}
    for sample, *_rest in partial:
        if sample.net is not None:
            by_netns.setdefault(sample.net.netns, []).append(sample.id)
    by_container: dict[str, list[Event]] = {}
    for event in events:
        by_container.setdefault(event.container_id, []).append(event)
    readings = []
    for sample, rates, reset, late in partial:
        net = sample.net
        shared: tuple[str, ...] = ()
        counted: Optional[bool] = None
        if net is not None:
            members = by_netns[net.netns]
            if len(members) > 1:
                shared = tuple(sorted(m for m in members if m != sample.id))
            counted = not net.shared_with_host and sample.id == min(members)
        own = tuple(by_container.get(sample.id, ()))
        readings.append(Reading(sample, rates, reset, late, own, shared, counted))
    return readings
