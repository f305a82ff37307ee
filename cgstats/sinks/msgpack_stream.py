"""msgpack stream: one self-delimiting msgpack message per reading, to a file or a socket.

A reading's message is ``reading.to_dict()`` packed as a msgpack map (strings
as str, no bin types needed); an event's is ``{"event": event.to_dict()}``,
the envelope of :mod:`cgstats.sinks.jsonl`. Messages follow each other with
nothing in between: ``msgpack.Unpacker`` reads them back one by one (a
fluentd ``in_forward`` or any msgpack stream reader does too).

URLs (``?timeout=S`` sets the connect and send timeout, default 5 s;
``?backoff_max=S`` the longest wait between reconnect attempts):

- ``msgpack:///path`` (or ``msgpack:/path``, ``msgpack:rel``): append to a
  file; ``msgpack:-``: stdout.
- ``msgpack+tcp://host:port``, ``msgpack+unix:///path/to.sock``: a stream
  socket, connected at the first batch. A connection the receiver closed is
  noticed before the next send and made again; a batch whose send fails is
  resent once, whole, on a new connection (so a message may arrive twice
  after a reset, never half). When no connection can be made, the batch
  fails (the collector counts it) and attempts back off from 0.1 s, doubling
  up to ``backoff_max`` (default: half the collector's step), so a receiver
  that returns gets the next batch but a dead one is not hammered.
- ``msgpack+udp://host:port``: one datagram per message. A message larger
  than ``?max_datagram=BYTES`` (default 65507, the IPv4 limit) is skipped and
  counted (``oversize_messages``); UDP has no delivery, so only errors the
  kernel reports (ICMP port unreachable on loopback) fail a batch.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, Optional, Union

import msgpack  # type: ignore[import-untyped]

from cgstats._stdout import silence_stdout
from cgstats.sinks import SinkURLError, _targets
from cgstats.sinks._worker import DEFAULT_LOG_INTERVAL_S, _RateLimit
from cgstats.sinks.base import Sink

if TYPE_CHECKING:
    from cgstats.collector import Reading
    from cgstats.events import Event

log = logging.getLogger("cgstats.sinks.msgpack")

TRANSPORTS = {"msgpack": "file", "msgpack+tcp": "tcp", "msgpack+udp": "udp", "msgpack+unix": "unix"}
MAX_UDP_PAYLOAD = 65507  # 65535 - 8 (UDP header) - 20 (IPv4 header)
DEFAULT_TIMEOUT_S = 5.0
FIRST_BACKOFF_S = 0.1

Address = Union[str, tuple[str, int]]


def pack_reading(reading: Reading) -> bytes:
    """A reading's message: its dictionary as one msgpack map."""
    return _pack(reading.to_dict())


def pack_event(event: Event) -> bytes:
    """An event's message: ``{"event": {...}}``."""
    return _pack({"event": event.to_dict()})


def _pack(document: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(document, use_bin_type=True)
    return packed


class MsgpackSink(Sink):
    """Writes one msgpack message per reading and per event to a file or socket.

    ``transport`` is ``"file"`` (``address``: a path, or ``"-"`` for stdout),
    ``"tcp"`` or ``"udp"`` (``address``: ``(host, port)``) or ``"unix"``
    (``address``: a socket path, stream type). Files are opened when the
    sink is made (an :class:`OSError` then), sockets at the first batch.
    ``backoff_max_s=None`` is half the collector's step (5 s before
    :meth:`open`). Counters: :meth:`stats`.
    """

    def __init__(
        self,
        transport: str,
        address: Address,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        backoff_max_s: Optional[float] = None,
        max_datagram_bytes: int = MAX_UDP_PAYLOAD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if transport not in TRANSPORTS.values():
            raise ValueError(
                f"transport is one of {sorted(TRANSPORTS.values())}, not {transport!r}"
            )
        self.transport = transport
        self.address = address
        self.timeout_s = timeout_s
        self.backoff_max_s = backoff_max_s
        self.max_datagram_bytes = max_datagram_bytes
        self._clock = clock
        self._file: Optional[IO[bytes]] = None
        self._sock: Optional[socket.socket] = None
        self._failures = 0  # connect attempts failed in a row
        self._next_attempt = -float("inf")
        self._oversize_log = _RateLimit(DEFAULT_LOG_INTERVAL_S, clock)
        self.pipe_closed = False
        self.on_pipe_closed: Optional[Callable[[], Any]] = None
        self.sent_messages = 0
        self.oversize_messages = 0
        self.connects = 0
        self.failed_connects = 0
        if transport == "file" and address != _targets.STDOUT:
            assert isinstance(address, str)
            self._file = open(address, "ab")  # noqa: SIM115 (held until close)

    @classmethod
    def from_url(cls, url: str) -> MsgpackSink:
        """See the module's documentation for the URLs and their options."""
        parts = _targets.split(url)
        transport = TRANSPORTS.get(parts.scheme.lower())
        if transport is None:
            raise SinkURLError(f"not a msgpack URL: {url!r} (schemes: {', '.join(TRANSPORTS)})")
        known: dict[str, Callable[[str], Any]] = {"timeout": _targets.seconds}
        if transport in ("tcp", "unix"):
            known["backoff_max"] = _targets.seconds
        if transport == "udp":
            known["max_datagram"] = _targets.positive_int
        found = _targets.options(url, parts, known)
        address: Address
        if transport in ("file", "unix"):
            address = _targets.file_path(url, parts)
            if transport == "unix" and address == _targets.STDOUT:
                raise SinkURLError(f"{url!r}: a unix socket needs a path")
        else:
            address = _targets.host_port(url, parts)
        return cls(
            transport,
            address,
            timeout_s=found.get("timeout", DEFAULT_TIMEOUT_S),
            backoff_max_s=found.get("backoff_max"),
            max_datagram_bytes=found.get("max_datagram", MAX_UDP_PAYLOAD),
        )

    @property
    def uses_stdout(self) -> bool:
        return self.transport == "file" and self._file is None

    def open(self, step: float) -> None:
        if self.backoff_max_s is None:
            self.backoff_max_s = step / 2

    def emit(self, readings: Sequence[Reading]) -> None:
        self._send([pack_reading(reading) for reading in readings])

    def emit_events(self, events: Sequence[Event]) -> None:
        self._send([pack_event(event) for event in events])

    def flush(self) -> None:
        if self.transport == "file" and not self.pipe_closed:
            try:
                self._out().flush()
            except BrokenPipeError:
                self._lost_stdout()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
        self._disconnect()

    def stats(self) -> dict[str, int]:
        """Messages sent (written), oversize datagrams skipped, connections made and failed."""
        return {
            "sent_messages": self.sent_messages,
            "oversize_messages": self.oversize_messages,
            "connects": self.connects,
            "failed_connects": self.failed_connects,
        }

    # -- transports ------------------------------------------------------------

    def _send(self, messages: list[bytes]) -> None:
        if not messages:
            return
        if self.transport == "file":
            self._write(b"".join(messages), len(messages))
        elif self.transport == "udp":
            self._send_datagrams(messages)
        else:
            self._send_stream(b"".join(messages), len(messages))

    def _out(self) -> IO[bytes]:
        return self._file if self._file is not None else sys.stdout.buffer

    def _write(self, data: bytes, count: int) -> None:
        if self.pipe_closed:
            return
        out = self._out()
        try:
            out.write(data)
            out.flush()
        except BrokenPipeError:
            if self._file is not None:
                raise
            self._lost_stdout()
            return
        self.sent_messages += count

    def _lost_stdout(self) -> None:
        self.pipe_closed = True
        silence_stdout()
        log.info("msgpack:-: stdout was closed; further output is dropped")
        if self.on_pipe_closed is not None:
            self.on_pipe_closed()

    def _send_stream(self, data: bytes, count: int) -> None:
        if self._sock is not None and _peer_closed(self._sock):
            self._disconnect()  # the receiver went away (restarted?): a new connection
        sock = self._connected()
        try:
            sock.sendall(data)
        except OSError as first:
            self._disconnect()
            log.info("%r: send failed (%s); reconnecting once", self, first)
            sock = self._connected()
            try:
                sock.sendall(data)
            except OSError:
                self._disconnect()
                raise
        self.sent_messages += count

    def _send_datagrams(self, messages: list[bytes]) -> None:
        sock = self._connected()
        for message in messages:
            if len(message) > self.max_datagram_bytes:
                self._oversize(len(message))
                continue
            try:
                sock.send(message)
            except ConnectionRefusedError:
                # Reported for an earlier datagram (ICMP unreachable): this one was not sent.
                sock.send(message)
            self.sent_messages += 1

    def _oversize(self, size: int) -> None:
        self.oversize_messages += 1
        suppressed = self._oversize_log.allow()
        if suppressed is not None:
            log.warning(
                "%r: a %d-byte message exceeds max_datagram=%d: skipped (%d in all)",
                self,
                size,
                self.max_datagram_bytes,
                self.oversize_messages,
            )

    def _connected(self) -> socket.socket:
        """The socket, connecting first if need be (within the backoff)."""
        if self._sock is not None:
            return self._sock
        now = self._clock()
        if now < self._next_attempt:
            raise ConnectionError(
                f"{self._target()}: down, next connect attempt in {self._next_attempt - now:.2f} s"
            )
        try:
            sock = self._connect()
        except OSError:
            self._failures += 1
            self.failed_connects += 1
            cap = self.backoff_max_s if self.backoff_max_s is not None else 5.0
            delay = min(cap, FIRST_BACKOFF_S * 2 ** (self._failures - 1))
            self._next_attempt = self._clock() + delay
            raise
        self._failures = 0
        self._next_attempt = -float("inf")
        self.connects += 1
        self._sock = sock
        return sock

    def _connect(self) -> socket.socket:
        if self.transport == "unix":
            assert isinstance(self.address, str)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(self.address)
            except OSError:
                sock.close()
                raise
            return sock
        assert isinstance(self.address, tuple)
        host, port = self.address
        if self.transport == "tcp":
            sock = socket.create_connection((host, port), timeout=self.timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        family, kind, proto, _name, where = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[
            0
        ]
        sock = socket.socket(family, kind, proto)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(where)  # connected: the kernel reports unreachable ports to us
        except OSError:
            sock.close()
            raise
        return sock

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _target(self) -> str:
        if isinstance(self.address, tuple):
            host, port = self.address
            return f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        return self.address

    def __repr__(self) -> str:
        scheme = next(s for s, t in TRANSPORTS.items() if t == self.transport)
        separator = "://" if isinstance(self.address, tuple) else ":"
        return f"<MsgpackSink {scheme}{separator}{self._target()}>"


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the receiver closed or reset the connection (it never sends us anything)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        data = sock.recv(65536, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError as error:
        return error.errno != errno.EINTR
    return not data  # b"": orderly close; bytes: something it sent, dropped
