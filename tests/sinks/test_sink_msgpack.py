"""MsgpackSink against real receivers: a file, TCP and UDP on 127.0.0.1, a unix socket in tmp_path.

Every message that arrives is decoded with ``msgpack.Unpacker`` and compared
with ``reading.to_dict()`` (or the event envelope) of what the collector
returned, in order; receivers go down and come back, and the batches in
between fail, counted, while the later ones arrive whole.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fixture_trees
import msgpack  # type: ignore[import-untyped]
import pytest
from test_sink_jsonl import expected_documents, plain

from cgstats import Collector, Event
from cgstats.sinks import SinkURLError, open_sink
from cgstats.sinks.msgpack_stream import MsgpackSink, pack_event

pytestmark = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")

WAIT_S = 60.0


@pytest.fixture
def root() -> str:
    return fixture_trees.root(fixture_trees.available()[0])


class StreamReceiver:
    """Accepts connections on ``listener`` and decodes each one's msgpack stream."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.messages: list[Any] = []
        self.connections = 0
        self.closed = 0  # connections read to their end
        self.current: socket.socket | None = None
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # listener closed: the receiver is down
            with self.changed:
                self.connections += 1
                self.current = connection
            self._read(connection)

    def _read(self, connection: socket.socket) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        with connection:
            while data := connection.recv(65536):
                unpacker.feed(data)
                with self.changed:
                    self.messages.extend(unpacker)
                    self.changed.notify_all()
        with self.changed:
            self.closed += 1
            self.changed.notify_all()

    def hang_up(self) -> None:
        """Close the current connection from this side, as a restarted receiver does."""
        with self.changed:
            assert self.current is not None
            self.current.shutdown(socket.SHUT_RDWR)
            closed = self.closed
            assert self.changed.wait_for(lambda: self.closed > closed, WAIT_S)

    def wait_messages(self, count: int) -> list[Any]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.messages) >= count, WAIT_S), (
                len(self.messages),
                count,
            )
            return list(self.messages)


def loopback_tcp(listen: bool = True) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    if listen:
        sock.listen()
    return sock


def tick_documents(collector: Collector, events: list[Event], ticks: int = 1) -> list[Any]:
    return expected_documents(collector, events, ticks)


@pytest.fixture
def tcp_receiver() -> Iterator[StreamReceiver]:
    listener = loopback_tcp()
    receiver = StreamReceiver(listener)
    yield receiver
    listener.close()


def test_a_file_reads_back_message_by_message(root: str, tmp_path: Path) -> None:
    path = tmp_path / "cgstats.msgpack"
    sink = open_sink(f"msgpack://{path}")
    assert isinstance(sink, MsgpackSink)
    events: list[Event] = []
    with Collector(root=root, step=1.0, sinks=[sink], on_event=events.append) as collector:
        expected = tick_documents(collector, events, 3)
    with open(path, "rb") as written:
        assert list(msgpack.Unpacker(written, raw=False)) == expected
    assert sink.stats()["sent_messages"] == len(expected)


def test_tcp_receiver_gets_every_message_in_order(root: str, tcp_receiver: StreamReceiver) -> None:
    port = tcp_receiver.listener.getsockname()[1]
    sink = open_sink(f"msgpack+tcp://127.0.0.1:{port}")
    events: list[Event] = []
    with Collector(root=root, step=1.0, sinks=[sink], on_event=events.append) as collector:
        expected = tick_documents(collector, events, 3)
        assert tcp_receiver.wait_messages(len(expected)) == expected
    assert tcp_receiver.connections == 1 and collector.sink_errors == 0


def test_tcp_receiver_down_then_up_then_restarted(root: str) -> None:
    listener = loopback_tcp(listen=False)  # bound, not listening: connections are refused
    port = listener.getsockname()[1]
    sink = open_sink(f"msgpack+tcp://127.0.0.1:{port}?backoff_max=0&timeout=10")
    assert isinstance(sink, MsgpackSink)
    events: list[Event] = []
    try:
        with Collector(root=root, step=1.0, sinks=[sink], on_event=events.append) as collector:
            tick_documents(collector, events)  # lost: nobody listens
            assert collector.flush(timeout=WAIT_S)
            assert collector.sink_stats()[0]["errors"] >= 1  # emit (and emit_events) failed
            assert sink.stats()["connects"] == 0 and sink.stats()["failed_connects"] >= 1
            listener.listen()
            receiver = StreamReceiver(listener)
            up = tick_documents(collector, events, 2)  # the next batch connects
            assert receiver.wait_messages(len(up)) == up
            # The receiver restarts: it hangs up; the sink notices and reconnects.
            errors = collector.sink_errors
            receiver.hang_up()
            more = tick_documents(collector, events)
            assert collector.flush(timeout=WAIT_S)
            got = receiver.wait_messages(len(up) + len(more))
            assert got == up + more and collector.sink_errors == errors
            assert receiver.connections == 2 and sink.stats()["connects"] == 2
    finally:
        listener.close()


def test_reconnects_back_off_between_failed_attempts() -> None:
    listener = loopback_tcp(listen=False)
    now = [100.0]
    sink = MsgpackSink("tcp", listener.getsockname(), backoff_max_s=1.0, clock=lambda: now[0])
    try:
        attempts = []
        for _ in range(6):
            with pytest.raises(ConnectionError):  # refused, or waiting out the backoff
                sink.emit_events([])  # nothing to send: no attempt at all
                sink._send([b"\x90"])
            attempts.append(sink.failed_connects)
            now[0] += 0.15
        # 0.1 s, 0.2 s, 0.4 s: tries at t=0, 0.15, 0.45, 0.90 (every step of 0.15 s)
        assert attempts == [1, 2, 2, 3, 3, 3]
        now[0] += 1.0  # past the longest wait (backoff_max)
        listener.listen()
        sink._send([b"\x90"])  # connects
        assert sink.stats()["connects"] == 1
        accepted, _ = listener.accept()
        assert accepted.recv(1) == b"\x90"
        accepted.close()
    finally:
        sink.close()
        listener.close()


def test_unix_stream_socket(root: str, tmp_path: Path) -> None:
    path = tmp_path / "rx.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    receiver = StreamReceiver(listener)
    sink = open_sink(f"msgpack+unix://{path}")
    events: list[Event] = []
    try:
        with Collector(root=root, step=1.0, sinks=[sink], on_event=events.append) as collector:
            expected = tick_documents(collector, events, 2)
            assert receiver.wait_messages(len(expected)) == expected
    finally:
        listener.close()


def udp_receiver() -> socket.socket:
    """A UDP socket on 127.0.0.1 with room for every datagram of a test: UDP drops
    what does not fit, even on loopback (the sender is not told)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # root may exceed net.core.rmem_max (SO_RCVBUFFORCE, 33 on Linux)
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 16 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(WAIT_S)
    return sock


def test_udp_one_datagram_per_message(root: str) -> None:
    with udp_receiver() as receiver:
        port = receiver.getsockname()[1]
        sink = open_sink(f"msgpack+udp://127.0.0.1:{port}")
        events: list[Event] = []
        with Collector(root=root, step=1.0, sinks=[sink], on_event=events.append) as collector:
            for _ in range(2):
                expected = tick_documents(collector, events)
                got = [msgpack.unpackb(receiver.recv(65535), raw=False) for _ in expected]
                assert got == expected


def test_udp_skips_and_counts_oversize_messages(root: str) -> None:
    events: list[Event] = []
    with Collector(root=root, step=1.0, on_event=events.append) as collector:
        readings = collector.tick()
    assert events and readings
    limit = max(len(pack_event(event)) for event in events)  # events fit, readings do not
    with udp_receiver() as receiver:
        port = receiver.getsockname()[1]
        sink = open_sink(f"msgpack+udp://127.0.0.1:{port}?max_datagram={limit}")
        assert isinstance(sink, MsgpackSink)
        sink.emit_events(events)
        sink.emit(readings)
        sink.emit_events(events[:1])  # a last one: had a reading gone out, it would come first
        got = [msgpack.unpackb(receiver.recv(65535), raw=False) for _ in range(len(events) + 1)]
        sink.close()
    assert got == [{"event": plain(event.to_dict())} for event in [*events, events[0]]]
    assert sink.stats()["oversize_messages"] == len(readings)
    assert sink.stats()["sent_messages"] == len(events) + 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("msgpack+tcp://127.0.0.1", "needs host:port"),
        ("msgpack+tcp://127.0.0.1:99999", "malformed sink URL"),
        ("msgpack+tcp://127.0.0.1:24224/x", "only host:port"),
        ("msgpack+udp://127.0.0.1:24224?max_datagram=0", "must be at least 1"),
        ("msgpack+tcp://127.0.0.1:24224?max_datagram=10", "unknown option 'max_datagram'"),
        ("msgpack+tcp://127.0.0.1:24224?timeout=-1", "option timeout='-1'"),
        ("msgpack+unix://host/x.sock", "names a host"),
        ("msgpack+unix:-", "needs a path"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(SinkURLError, match=message):
        open_sink(url)
