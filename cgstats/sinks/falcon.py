"""The Open-Falcon transfer sink: consistent hashing over transfers, failover, and a spool.

:class:`FalconSink` turns each reading into Open-Falcon items
(:func:`~cgstats.sinks.falcon_metrics.reading_items`), drops and counts the
ones a transfer would refuse (:func:`~cgstats.sinks.falcon_metrics.item_problem`),
and sends the rest with ``Transfer.Update`` over JSON-RPC
(:mod:`cgstats.sinks._jsonrpc`). Every container is a key on a consistent-hash
ring of the transfers (:mod:`cgstats.sinks._ring`): its items go to one
transfer while that one is up, and to the next distinct transfer of the ring
while it is not. Each transfer has a thread of its own that sends, and probes
the transfer with ``Transfer.Ping`` after a failure, with exponential
backoff. While no transfer is up, items wait in memory up to a bound, then in
a spool directory (:mod:`cgstats.sinks._spool`) that is replayed, oldest
first, when a transfer answers again, also by the next process to use it.

Delivery is at least once: a call that timed out may have been recorded by
the transfer and is sent again. docs/falcon-deploy.md is the operator's guide.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from cgstats.sinks import SinkURLError
from cgstats.sinks._jsonrpc import Connection, RpcError, TransportError
from cgstats.sinks._ring import DEFAULT_VNODES, NodeHealth, Ring
from cgstats.sinks._spool import Item, Spool, SpoolCorrupt, SpoolFile
from cgstats.sinks.base import Sink
from cgstats.sinks.falcon_metrics import (
    Endpoint,
    SeriesNames,
    Tags,
    falcon_step,
    item_problem,
)

if TYPE_CHECKING:
    from cgstats.collector import Reading

log = logging.getLogger("cgstats.sinks.falcon")

DEFAULT_PORT = 8433
MAX_BATCH_ITEMS = 200  # the transfer's own batch size (falcon agent, transfer sender)
DEFAULT_MAX_MEMORY_ITEMS = 10_000
DEFAULT_SPOOL_MAX_BYTES = 256 << 20
DEFAULT_SPOOL_CHUNK_ITEMS = 5_000
DEFAULT_STEP_S = 60  # the falcon agent's default, used only if nobody says otherwise
_LOGGED_PROBLEMS_MAX = 1024


def parse_address(text: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port``, ``host``, ``[v6]:port`` or ``[v6]`` (port 8433)."""
    text = text.strip()
    if not text:
        raise ValueError("empty transfer address")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"bad transfer address {text!r}")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        raise ValueError(f"bad transfer address {text!r} (write an IPv6 address as [addr]:port)")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"bad transfer address {text!r}: no host")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in transfer address {text!r}")
    return host, int(port_text)


def node_name(host: str, port: int) -> str:
    """The name of a transfer on the ring: ``host:port`` (``[v6]:port``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_tags(text: str) -> dict[str, str]:
    """``{"app": "web", "env": "prod"}`` from ``app=web,env=prod``; ValueError if malformed."""
    tags: dict[str, str] = {}
    for piece in text.split(","):
        key, equals, value = piece.strip().partition("=")
        if not equals or not key or not value:
            raise ValueError(f"tag {piece!r} is not key=value (in {text!r})")
        if key in tags:
            raise ValueError(f"tag {key!r} given twice (in {text!r})")
        tags[key] = value
    return tags


class _Ticket:
    """One spool file being replayed: its units still undelivered, or abandoned."""

    __slots__ = ("aborted", "file", "outstanding")

    def __init__(self, file: SpoolFile, outstanding: int) -> None:
        self.file = file
        self.outstanding = outstanding
        self.aborted = False

    @property
    def done(self) -> bool:
        return self.outstanding <= 0 or self.aborted


_unit_numbers = itertools.count()


class _Unit:
    """Items of one container (one ring key), at most a batch's worth, routed together.

    ``rejected_by`` names the transfers that answered a call holding this unit
    with an error string; such a unit travels in a batch of its own from then
    on. ``ticket`` is set for units replayed from a spool file.
    """

    __slots__ = ("items", "key", "rejected_by", "seq", "ticket")

    def __init__(self, key: str, items: list[Item], ticket: Optional[_Ticket] = None) -> None:
        self.key = key
        self.items = items
        self.rejected_by: frozenset[str] = frozenset()
        self.ticket = ticket
        self.seq = next(_unit_numbers)  # emission order: "oldest" means lowest

    def __lt__(self, other: _Unit) -> bool:
        return self.seq < other.seq


class _Node:
    """One transfer: its connection, health, queue of units and the thread that sends them."""

    __slots__ = (
        "connection",
        "health",
        "in_flight",
        "name",
        "queue",
        "queued_items",
        "sent",
        "thread",
    )

    def __init__(self, name: str, connection: Connection, health: NodeHealth) -> None:
        self.name = name
        self.connection = connection
        self.health = health
        self.queue: collections.deque[_Unit] = collections.deque()
        self.queued_items = 0
        self.in_flight: list[_Unit] = []
        self.sent = 0
        self.thread: Optional[threading.Thread] = None


class FalconSink(Sink):
    """Sends readings to Open-Falcon transfers, keyed by container on a consistent-hash ring.

    ``transfers`` lists ``host:port`` addresses of the transfers' RPC ports
    (port 8433 if omitted). ``endpoint`` is the item's endpoint: the host
    name by default, a str, or a callable taking the
    :class:`~cgstats.Reading` and returning one per container. ``tags`` (a
    mapping, or a callable taking the reading) are added to
    ``container=<short ID>`` (the container's first 12 characters), which a
    caller's ``container`` key cannot replace (see
    :class:`~cgstats.sinks.falcon_metrics.SeriesNames`). The step comes from
    the collector (:meth:`open`) unless ``step`` (s) is given; either is
    rounded by :func:`~cgstats.sinks.falcon_metrics.falcon_step`.

    ``spool_dir`` enables the spool: while no transfer is up, items beyond
    ``max_memory_items`` held in memory go to files there, at most
    ``spool_max_bytes`` of them (the oldest are dropped beyond), replayed when
    a transfer answers, and by the next sink opened on the same directory.
    Without it, items beyond ``max_memory_items`` are dropped, oldest first.

    ``dial_timeout_s`` and ``call_timeout_s`` bound connecting and each call;
    a failed transfer is probed after ``backoff_s``, doubling per failure in
    a row up to ``max_backoff_s``. ``flush_timeout_s`` bounds the wait of
    :meth:`flush` and :meth:`close` for items in flight. ``batch_items`` (at
    most 200) items go in one ``Transfer.Update``; up to ``max_in_flight``
    calls are pipelined on one connection. Every option is also a query
    parameter of :meth:`from_url` (docs/falcon-deploy.md).
    """

    def __init__(
        self,
        transfers: Union[str, Sequence[str]],
        endpoint: Endpoint = None,
        tags: Tags = None,
        spool_dir: Optional[str] = None,
        *,
        step: Optional[float] = None,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        max_memory_items: int = DEFAULT_MAX_MEMORY_ITEMS,
        spool_chunk_items: int = DEFAULT_SPOOL_CHUNK_ITEMS,
        spool_fsync: bool = True,
        dial_timeout_s: float = 1.0,
        call_timeout_s: float = 10.0,
        flush_timeout_s: float = 5.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        batch_items: int = MAX_BATCH_ITEMS,
        max_in_flight: int = 4,
        vnodes: int = DEFAULT_VNODES,
    ) -> None:
        addresses = _addresses(transfers)
        if not 1 <= batch_items <= MAX_BATCH_ITEMS:
            raise ValueError(f"batch_items must be in 1..{MAX_BATCH_ITEMS}, not {batch_items}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, not {max_in_flight}")
        if max_memory_items < 0:
            raise ValueError(f"max_memory_items must be >= 0, not {max_memory_items}")
        if spool_chunk_items < 1:
            raise ValueError(f"spool_chunk_items must be >= 1, not {spool_chunk_items}")
        for name, value in (
            ("dial_timeout_s", dial_timeout_s),
            ("call_timeout_s", call_timeout_s),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        if not flush_timeout_s >= 0:
            raise ValueError(f"flush_timeout_s must be >= 0, not {flush_timeout_s!r}")
        self._names = SeriesNames(endpoint, tags)
        self.transfers = tuple(node_name(host, port) for host, port in addresses)
        self.endpoint = self._names.endpoint
        self.tags = self._names.tags
        self.step = None if step is None else falcon_step(step)
        self.batch_items = batch_items
        self.max_in_flight = max_in_flight
        self.max_memory_items = max_memory_items
        self.spool_chunk_items = spool_chunk_items
        self.flush_timeout_s = float(flush_timeout_s)
        self._dial_timeout_s = float(dial_timeout_s)
        self._ring = Ring(self.transfers, vnodes=vnodes)
        self._nodes = {
            name: _Node(
                name,
                Connection(
                    host, port, dial_timeout_s=dial_timeout_s, call_timeout_s=call_timeout_s
                ),
                NodeHealth(backoff_s, max_backoff_s),
            )
            for name, (host, port) in zip(self.transfers, addresses)
        }
        self._all = frozenset(self.transfers)
        self._up = set(self.transfers)  # optimistic: the first call finds out
        self._cond = threading.Condition()
        self._backlog: list[_Unit] = []  # a heap, oldest first (by _Unit.seq)
        self._backlog_items = 0
        self._ticket: Optional[_Ticket] = None
        self._spill_all = False  # flush() with every transfer down: spool the whole backlog
        self._spilling = 0  # items taken from the backlog and being written to the spool
        self._counts = dict.fromkeys(
            (
                "sent",
                "invalid",
                "retried",
                "spooled",
                "replayed",
                "dropped",
                "rejected",
                "errors",
                "transfer_invalid",
            ),
            0,
        )
        self._logged_problems: set[str] = set()
        self._warned_invalid: set[str] = set()  # transfers whose Invalid count was logged
        self._collector_step: Optional[int] = None
        self._warned_step = False
        self._started = False
        self._closing = False
        self._stopped = False
        self._closed = False
        self._flushed = False  # flush() ran since the last emit()
        self._keeper: Optional[threading.Thread] = None
        self.spool = (
            None if spool_dir is None else Spool(spool_dir, spool_max_bytes, fsync=spool_fsync)
        )

    # -- construction from a URL -------------------------------------------------

    @classmethod
    def from_url(cls, url: str) -> FalconSink:
        """``falcon://HOST:PORT[,HOST:PORT...][?PARAM=VALUE&...]``; see docs/falcon-deploy.md.

        Raises :class:`~cgstats.sinks.SinkURLError` (a :class:`ValueError`)
        for a malformed URL, an unknown or repeated parameter, or a bad value.
        """
        try:
            transfers, options = parse_url(url)
        except ValueError as error:
            raise SinkURLError(f"falcon URL: {error}") from error
        try:
            return cls(transfers, **options)
        except (ValueError, TypeError) as error:
            raise SinkURLError(f"falcon URL: {error}") from error

    # -- the Sink interface ---------------------------------------------------------

    def open(self, step: float) -> None:
        """Take the collector's step (s) and start the sender threads (and the spool's replay)."""
        self._collector_step = falcon_step(step)
        self._start()

    def emit(self, readings: Sequence[Reading]) -> None:
        """Turn ``readings`` into items and queue them for their transfers; never blocks on I/O."""
        if self._closing:
            raise ValueError("emit() on a closed FalconSink")
        self._start()
        step = self._effective_step()
        units: list[_Unit] = []
        invalid = errors = 0
        for reading in readings:
            try:
                good, bad = self._names.items_of(reading, step)
            except Exception as error:  # a caller's endpoint/tags callable failed
                errors += 1
                self._log_problem(reading.id, 0, f"{type(error).__name__}: {error}")
                continue
            if bad:
                invalid += len(bad)
                metric, problem = bad[0]
                self._log_problem(reading.id, len(bad), f"{metric}: {problem}")
            units.extend(self._units(reading.id, good))
        with self._cond:
            self._counts["invalid"] += invalid
            self._counts["errors"] += errors
            self._route(units)
        self._flushed = False

    def flush(self) -> None:
        """Wait up to ``flush_timeout_s`` for queued items to be delivered.

        With every transfer down, the memory backlog goes to the spool (when
        there is one) instead, so that a process killed after ``flush()``
        loses nothing. Items still undelivered at the deadline stay queued.
        """
        self._settle(time.monotonic() + self.flush_timeout_s)
        self._flushed = True

    def close(self) -> None:
        """Flush (bounded), stop the threads, and spool what is still undelivered.

        The flush is skipped when :meth:`flush` ran since the last :meth:`emit`
        (the collector calls both: one wait is enough). Without a spool, what
        no transfer took by then is dropped (counted).
        """
        if self._closed:
            return
        self._closed = True
        with self._cond:
            self._closing = True
        if self._started and not self._flushed:
            self._settle(time.monotonic() + self.flush_timeout_s)
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for node in self._nodes.values():
            node.connection.abort()
        # Aborted calls return at once, a dial in progress within its timeout; the
        # spool's thread finishes the file it is writing.
        deadline = time.monotonic() + self._dial_timeout_s + 1.0
        for thread in self._threads():
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        if self._keeper is not None:
            self._keeper.join(timeout=self.flush_timeout_s)
        self._save_leftovers()
        for node in self._nodes.values():
            node.connection.close()
        if self.spool is not None:
            self.spool.close()

    # -- introspection -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts (items unless named otherwise) and each transfer's state.

        ``sent``: accepted by a transfer (replayed ones included);
        ``invalid``: refused by :func:`~cgstats.sinks.falcon_metrics.item_problem`,
        never sent; ``retried``: in a call that failed, sent again;
        ``spooled``: written to the spool; ``replayed``: read back from it and
        accepted; ``dropped``: lost (spool cap, memory bound without a spool,
        undelivered at close without a spool, rejected); ``rejected``: refused
        with an error string by every transfer (also in ``dropped``);
        ``errors``: readings whose endpoint or tags callable raised;
        ``transfer_invalid``: items a transfer counted as invalid in its answer;
        ``queued``: waiting for or in a call; ``backlog``: in memory while no
        transfer is up; ``replaying``: the spool file being replayed (or
        ``None``); ``spool_files``, ``spool_items``, ``spool_bytes``,
        ``spool_corrupt_files``: the spool now. ``nodes`` maps each transfer
        to ``state`` (``up``/``down``), ``failures`` (in a row),
        ``total_failures``, ``next_probe_s`` (seconds until the next probe,
        when down), ``last_error`` and ``sent``.
        """
        now = time.monotonic()
        with self._cond:
            out: dict[str, Any] = dict(self._counts)
            out["queued"] = sum(
                node.queued_items + sum(len(u.items) for u in node.in_flight)
                for node in self._nodes.values()
            )
            out["backlog"] = self._backlog_items + self._spilling
            out["replaying"] = None if self._ticket is None else self._ticket.file.name
            nodes = {}
            for name, node in self._nodes.items():
                health = node.health
                next_probe = health.next_probe
                nodes[name] = {
                    "state": "up" if health.up else "down",
                    "failures": health.failures,
                    "total_failures": health.total_failures,
                    "next_probe_s": None if next_probe is None else max(0.0, next_probe - now),
                    "last_error": health.last_error,
                    "sent": node.sent,
                }
            out["nodes"] = nodes
        spool = self.spool
        out["spool_files"] = 0 if spool is None else len(spool.files)
        out["spool_items"] = 0 if spool is None else spool.total_items
        out["spool_bytes"] = 0 if spool is None else spool.total_bytes
        out["spool_corrupt_files"] = 0 if spool is None else spool.corrupt_files
        return out

    def transfers_for(self, container_id: str) -> tuple[str, ...]:
        """The transfers a container's items try, in order: its own first (while it is up)."""
        return self._ring.walk(container_id)

    def __repr__(self) -> str:
        up = sum(1 for node in self._nodes.values() if node.health.up)
        return f"<FalconSink {len(self._nodes)} transfers, {up} up>"

    # -- items --------------------------------------------------------------------------

    def _effective_step(self) -> int:
        if self.step is not None:
            return self.step
        if self._collector_step is not None:
            return self._collector_step
        if not self._warned_step:
            self._warned_step = True
            log.warning("no step given and open() not called: using %d s", DEFAULT_STEP_S)
        return DEFAULT_STEP_S

    def _units(self, key: str, items: list[Item], ticket: Optional[_Ticket] = None) -> list[_Unit]:
        size = self.batch_items
        return [_Unit(key, items[i : i + size], ticket) for i in range(0, len(items), size)]

    def _log_problem(self, container_id: str, invalid: int, problem: str) -> None:
        """Log a reading's problem once per kind (later ones at debug level: they recur
        every tick). ``invalid`` items were dropped; 0: the reading made no items."""
        what = f"{invalid} invalid items, not sent" if invalid else "no items made"
        kind = problem.split(": ", 1)[-1] if invalid else problem
        if kind in self._logged_problems:
            log.debug("%s: %s: %s", container_id[:12], what, problem)
            return
        if len(self._logged_problems) < _LOGGED_PROBLEMS_MAX:
            self._logged_problems.add(kind)
        log.warning("%s: %s (counted): %s", container_id[:12], what, problem)

    # -- routing (under self._cond) ----------------------------------------------------------

    def _route(self, units: Iterable[_Unit]) -> int:
        """Queue each unit on its target transfer, or park it while none is up;
        returns how many were parked."""
        parked = 0
        for unit in units:
            usable: Any = self._up if not unit.rejected_by else self._up - unit.rejected_by
            target = self._ring.target(unit.key, usable)
            if target is not None:
                node = self._nodes[target]
                node.queue.append(unit)
                node.queued_items += len(unit.items)
            elif unit.rejected_by >= self._all:
                self._reject(unit)
            else:
                self._park(unit)
                parked += 1
        self._cond.notify_all()
        return parked

    def _reject(self, unit: _Unit) -> None:
        """Every transfer answered a call of this unit alone with an error: give up on it."""
        count = len(unit.items)
        self._counts["rejected"] += count
        self._counts["dropped"] += count
        log.error(
            "%d items of %s rejected by every transfer (%s): dropped",
            count,
            unit.key[:12],
            ", ".join(sorted(unit.rejected_by)),
        )
        self._settle_unit(unit)

    def _park(self, unit: _Unit) -> None:
        """No transfer is up: keep ``unit`` in memory (a replayed one stays in its file)."""
        if unit.ticket is not None:
            unit.ticket.aborted = True
            return
        heapq.heappush(self._backlog, unit)
        self._backlog_items += len(unit.items)
        if self.spool is None:
            while self._backlog_items > self.max_memory_items and self._backlog:
                oldest = heapq.heappop(self._backlog)
                self._backlog_items -= len(oldest.items)
                self._counts["dropped"] += len(oldest.items)

    def _settle_unit(self, unit: _Unit) -> None:
        ticket = unit.ticket
        if ticket is not None:
            ticket.outstanding -= 1

    def _spooled(self) -> bool:
        return self.spool is not None and self.spool.oldest() is not None

    def _idle(self) -> bool:
        return not any(node.queue or node.in_flight for node in self._nodes.values())

    # -- threads -------------------------------------------------------------------------------

    def _start(self) -> None:
        with self._cond:
            if self._started or self._stopped:
                return
            self._started = True
        for node in self._nodes.values():
            node.thread = threading.Thread(
                target=self._serve, args=(node,), name=f"cgstats-falcon-{node.name}", daemon=True
            )
            node.thread.start()
        self._keeper = threading.Thread(target=self._keep, name="cgstats-falcon-spool", daemon=True)
        self._keeper.start()

    def _threads(self) -> list[threading.Thread]:
        threads = [node.thread for node in self._nodes.values() if node.thread is not None]
        if self._keeper is not None:
            threads.append(self._keeper)
        return threads

    def _serve(self, node: _Node) -> None:
        """A transfer's thread: send its queue; after a failure, probe it until it answers."""
        while True:
            with self._cond:
                batches = self._next_batches(node)
                if batches is None:
                    return
            try:
                if batches:
                    self._send(node, batches)
                else:
                    self._probe(node)
            except Exception as error:  # a bug must not stop this transfer's deliveries
                log.exception("transfer %s: sender thread failed", node.name)
                with self._cond:
                    self._fail(node, f"{type(error).__name__}: {error}", node.in_flight)

    def _next_batches(self, node: _Node) -> Optional[list[list[_Unit]]]:
        """Wait for work: batches to send, ``[]`` for a probe due, ``None`` to stop (locked)."""
        while not self._stopped:
            health = node.health
            if health.up:
                if node.queue:
                    batches = self._take(node)
                    node.in_flight = [unit for batch in batches for unit in batch]
                    return batches
                self._cond.wait()
                continue
            now = time.monotonic()
            if health.probe_due(now):
                return []
            assert health.next_probe is not None
            self._cond.wait(health.next_probe - now)
        return None

    def _take(self, node: _Node) -> list[list[_Unit]]:
        """Up to ``max_in_flight`` batches of whole units from the node's queue (locked).

        A unit some transfer rejected with an error string goes alone, so
        that it cannot take other units down with it again.
        """
        batches: list[list[_Unit]] = []
        current: list[_Unit] = []
        size = 0
        queue = node.queue
        while queue and len(batches) < self.max_in_flight:
            unit = queue[0]
            count = len(unit.items)
            if current and (unit.rejected_by or size + count > self.batch_items):
                batches.append(current)
                current, size = [], 0
                continue
            queue.popleft()
            node.queued_items -= count
            current.append(unit)
            size += count
            if unit.rejected_by:
                batches.append(current)
                current, size = [], 0
        if current:
            batches.append(current)
        return batches

    def _send(self, node: _Node, batches: list[list[_Unit]]) -> None:
        params = [[item for unit in batch for item in unit.items] for batch in batches]
        try:
            outcomes = node.connection.call_many("Transfer.Update", params)
        except TransportError as error:
            with self._cond:
                self._fail(node, str(error), node.in_flight)
            return
        except (ValueError, TypeError) as error:
            # Not JSON (item_problem lets no such item through): no node would take
            # it, so count it invalid rather than bounce it around the ring.
            with self._cond:
                self._unsendable(node, sum(len(items) for items in params), error)
            return
        with self._cond:
            rejected: list[_Unit] = []
            error_text = ""
            for batch, items, outcome in zip(batches, params, outcomes):
                if isinstance(outcome, RpcError):
                    rejected.extend(batch)
                    error_text = str(outcome)
                else:
                    self._delivered(node, batch, len(items), outcome)
            node.in_flight = []
            if rejected:
                self._fail(node, f"answered with an error: {error_text}", rejected, rejected=True)
            else:
                node.health.delivered()
            self._cond.notify_all()

    def _unsendable(self, node: _Node, count: int, error: Exception) -> None:
        """Drop the in-flight units of ``node``, which cannot be encoded (locked)."""
        log.error("%d items are not JSON (%s): not sent, counted invalid", count, error)
        self._counts["invalid"] += count
        for unit in node.in_flight:
            self._settle_unit(unit)
        node.in_flight = []
        self._cond.notify_all()

    def _delivered(self, node: _Node, batch: list[_Unit], count: int, result: Any) -> None:
        """Count a batch the transfer accepted (locked)."""
        node.sent += count
        self._counts["sent"] += count
        for unit in batch:
            if unit.ticket is not None:
                self._counts["replayed"] += len(unit.items)
            self._settle_unit(unit)
        if isinstance(result, dict):
            invalid = result.get("Invalid")
            if isinstance(invalid, int) and invalid > 0:
                # item_problem should have caught these: the transfer's rules differ.
                self._counts["transfer_invalid"] += invalid
                level = logging.DEBUG if node.name in self._warned_invalid else logging.WARNING
                self._warned_invalid.add(node.name)
                log.log(
                    level, "transfer %s counted %d of %d items invalid", node.name, invalid, count
                )

    def _fail(
        self, node: _Node, error: str, failed: list[_Unit], *, rejected: bool = False
    ) -> None:
        """Mark ``node`` down and send its failed and queued units elsewhere (locked)."""
        node.connection.close()
        moved = list(failed)
        node.in_flight = []
        moved.extend(node.queue)
        node.queue.clear()
        node.queued_items = 0
        if self._stopped:  # close() interrupted the call: keep the units for the spool
            self._route_stopped(moved)
            return
        was_up = node.health.up
        delay = node.health.failed(time.monotonic(), error)
        self._up.discard(node.name)
        if was_up:
            log.warning("transfer %s is down (%s); probing in %.1f s", node.name, error, delay)
        else:
            log.info("transfer %s still down (%s); probing in %.1f s", node.name, error, delay)
        if rejected:
            for unit in failed:
                unit.rejected_by = unit.rejected_by | {node.name}
        self._counts["retried"] += sum(len(unit.items) for unit in failed)
        self._route(moved)

    def _route_stopped(self, units: list[_Unit]) -> None:
        for unit in units:
            self._park(unit)

    def _probe(self, node: _Node) -> None:
        """Ping a down transfer; up again if it answers."""
        try:
            node.connection.call("Transfer.Ping", {})
        except (TransportError, RpcError) as error:
            with self._cond:
                node.connection.close()
                if self._stopped:
                    return
                delay = node.health.failed(time.monotonic(), f"probe: {error}")
                log.debug("transfer %s: probe failed (%s); next in %.1f s", node.name, error, delay)
            return
        with self._cond:
            if self._stopped:
                return
            node.health.answered()
            self._up.add(node.name)
            log.warning("transfer %s answers again", node.name)
            self._cond.notify_all()

    # -- backlog and spool -----------------------------------------------------------------------

    def _keep(self) -> None:
        """The spool's thread: spill the backlog while no transfer is up, replay when one is."""
        while True:
            with self._cond:
                job = self._next_job()
            if job == "stop":
                return
            try:
                if job == "spill":
                    self._spill()
                else:
                    self._replay()
            except Exception:  # a bug must not end spilling and replay for good
                log.exception("falcon sink: the spool thread's %s failed", job)
                with self._cond:
                    self._cond.wait(1.0)

    def _next_job(self) -> str:
        """What the spool thread does next (locked); waits until there is something."""
        while not self._stopped:
            spool = self.spool
            if (
                spool is not None
                and self._backlog
                and (self._spill_all or self._backlog_items > self.max_memory_items)
            ):
                return "spill"
            if self._spill_all and not self._backlog:
                self._spill_all = False
                self._cond.notify_all()
            if self._up:
                if spool is not None and spool.oldest() is not None:
                    return "replay"
                if self._backlog:
                    units = sorted(self._backlog)
                    self._backlog.clear()
                    self._backlog_items = 0
                    if self._route(units) < len(units):
                        continue
                    # None could go: the transfers up are ones that refused them. Wait
                    # for another to come up (or a spill) rather than spin.
            self._cond.wait()
        return "stop"

    def _spill(self) -> None:
        """Move the oldest backlog units to the spool, a chunk at a time."""
        spool = self.spool
        assert spool is not None
        while True:
            with self._cond:
                if self._stopped:
                    return  # close() spools the rest
                keep = 0 if self._spill_all else self.max_memory_items
                if self._backlog_items <= keep or not self._backlog:
                    return
                chunk: list[_Unit] = []
                count = 0
                while self._backlog and count < self.spool_chunk_items:
                    if self._backlog_items - count <= keep and chunk:
                        break
                    unit = heapq.heappop(self._backlog)
                    chunk.append(unit)
                    count += len(unit.items)
                self._backlog_items -= count
                self._spilling += count
            self._write_spool(spool, chunk, count)

    def _write_spool(self, spool: Spool, chunk: Sequence[_Unit], count: int) -> None:
        try:
            result = spool.write([(unit.key, unit.items) for unit in chunk])
        except OSError as error:
            log.error("spool: cannot write %d items: %s: dropped", count, error)
            with self._cond:
                self._spilling -= count
                self._counts["dropped"] += count
            return
        with self._cond:
            self._spilling -= count
            self._counts["spooled"] += count - result.unwritten_items
            self._counts["dropped"] += result.unwritten_items
            self._counts["dropped"] += sum(file.items for file in result.removed)
            self._cond.notify_all()

    def _replay(self) -> None:
        """Replay the oldest spool file; delete it once every unit of it was accepted."""
        spool = self.spool
        assert spool is not None
        file = spool.oldest()
        if file is None:
            return
        try:
            stored = spool.load(file)
        except SpoolCorrupt:
            return  # set aside and logged by the spool
        ticket = _Ticket(file, 0)
        units: list[_Unit] = []
        invalid = 0
        for key, items in stored:
            good = [item for item in items if item_problem(item) is None]
            invalid += len(items) - len(good)
            units.extend(self._units(key, good, ticket))
        if invalid:
            log.warning("spool: %s: %d invalid items skipped", file.name, invalid)
        ticket.outstanding = len(units)
        with self._cond:
            self._counts["invalid"] += invalid
            self._ticket = ticket
            self._route(units)
            while not ticket.done and not self._stopped:
                self._cond.wait()
            self._ticket = None
        if ticket.outstanding <= 0 and not ticket.aborted:
            spool.remove(file)
        else:
            spool.unpin(file)

    def _settle(self, deadline: float) -> None:
        """Wait until nothing is queued or in flight (and the backlog is sent or spooled)."""
        with self._cond:
            while not self._stopped:
                if not self._up:
                    if self.spool is None or not (self._backlog or self._spilling):
                        return
                    self._spill_all = True
                    self._cond.notify_all()
                elif self._idle() and not self._spilling and (not self._backlog or self._spooled()):
                    return  # a backlog waits for the spool's replay: not for flush() to wait on
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def _save_leftovers(self) -> None:
        """After the threads stopped: spool (or count as dropped) what was not delivered."""
        with self._cond:
            units = list(self._backlog)
            self._backlog.clear()
            self._backlog_items = 0
            for node in self._nodes.values():
                units.extend(node.in_flight)
                units.extend(node.queue)
                node.in_flight = []
                node.queue.clear()
                node.queued_items = 0
            # Replayed units are still in their file; the rest are spooled oldest first.
            live = sorted(unit for unit in units if unit.ticket is None)
        count = sum(len(unit.items) for unit in live)
        if not count:
            return
        spool = self.spool
        if spool is None:
            with self._cond:
                self._counts["dropped"] += count
            log.warning("falcon sink closed with %d items undelivered and no spool: lost", count)
            return
        chunk: list[_Unit] = []
        size = 0
        for unit in live:
            chunk.append(unit)
            size += len(unit.items)
            if size >= self.spool_chunk_items:
                self._write_spool(spool, chunk, size)
                chunk, size = [], 0
        if chunk:
            self._write_spool(spool, chunk, size)
        log.info("falcon sink closed: %d undelivered items spooled", count)


# -- URL ---------------------------------------------------------------------------------------


def _number(name: str, kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            what = "an int" if kind is int else "a number"
            raise ValueError(f"{name}={text!r} is not {what}") from None

    return parse


def _flag(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def _endpoint_param(text: str) -> str:
    if not text:
        raise ValueError("endpoint is empty")
    return text


# Query parameters of falcon:// URLs: the keyword argument each sets and its parser.
URL_PARAMETERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "endpoint": ("endpoint", _endpoint_param),
    "tags": ("tags", parse_tags),
    "step": ("step", _number("step", float)),
    "spool": ("spool_dir", str),
    "spool_max_bytes": ("spool_max_bytes", _number("spool_max_bytes", int)),
    "spool_chunk_items": ("spool_chunk_items", _number("spool_chunk_items", int)),
    "spool_fsync": ("spool_fsync", _flag),
    "max_memory_items": ("max_memory_items", _number("max_memory_items", int)),
    "dial_timeout_s": ("dial_timeout_s", _number("dial_timeout_s", float)),
    "call_timeout_s": ("call_timeout_s", _number("call_timeout_s", float)),
    "flush_timeout_s": ("flush_timeout_s", _number("flush_timeout_s", float)),
    "backoff_s": ("backoff_s", _number("backoff_s", float)),
    "max_backoff_s": ("max_backoff_s", _number("max_backoff_s", float)),
    "batch_items": ("batch_items", _number("batch_items", int)),
    "max_in_flight": ("max_in_flight", _number("max_in_flight", int)),
    "vnodes": ("vnodes", _number("vnodes", int)),
}


def parse_url(url: str) -> tuple[list[str], dict[str, Any]]:
    """The transfers and keyword arguments a ``falcon://`` URL names; ValueError if malformed."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme.lower() != "falcon":
        raise ValueError(f"not a falcon:// URL (scheme {parts.scheme!r})")
    if parts.path not in ("", "/"):
        raise ValueError(f"a falcon URL has no path ({parts.path!r}); options go after '?'")
    if parts.fragment:
        raise ValueError("a falcon URL has no #fragment")
    if not parts.netloc:
        raise ValueError("no transfer: falcon://HOST:PORT[,HOST:PORT...]")
    transfers = [node_name(*parse_address(piece)) for piece in parts.netloc.split(",")]
    options: dict[str, Any] = {}
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False)
    if parts.query and not pairs:
        raise ValueError(f"cannot parse the query {parts.query!r}")
    for name, value in pairs:
        if name not in URL_PARAMETERS:
            raise ValueError(
                f"unknown parameter {name!r}; known: {', '.join(sorted(URL_PARAMETERS))}"
            )
        keyword, parse = URL_PARAMETERS[name]
        if keyword in options:
            raise ValueError(f"parameter {name!r} given twice")
        options[keyword] = parse(value)
    return transfers, options


def _addresses(transfers: Union[str, Sequence[str]]) -> list[tuple[str, int]]:
    if isinstance(transfers, str):
        transfers = transfers.split(",")
    addresses = [parse_address(text) for text in transfers]
    if not addresses:
        raise ValueError("no transfer given")
    names = [node_name(host, port) for host, port in addresses]
    if len(set(names)) != len(names):
        raise ValueError(f"a transfer is listed twice: {names}")
    return addresses
