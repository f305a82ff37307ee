"""FalconAgentSink against a real HTTP server on 127.0.0.1 standing in for the falcon agent.

The server (http.server, HTTP/1.1 keep-alive, in a thread) records every
request and answers ``success`` as the agent does, or a status the test
chooses. Readings come from samples read from the captured fixture trees.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import attrs
import fixture_trees
import pytest
from unit.samples import advance, captured

import cgstats
from cgstats import Reading, rates
from cgstats.model import Sample
from cgstats.sinks import SinkURLError, open_sink
from cgstats.sinks.falcon_agent import AgentPushError, FalconAgentSink
from cgstats.sinks.falcon_metrics import item_problem, reading_items

pytestmark = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")
DEFAULT_URL = "http://127.0.0.1:1988/v1/push"


class Agent:
    """An HTTP server that records each POST's path, content type and JSON body."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.answer = b"success"
        self.client_ports: set[int] = set()
        self.connections: list[socket.socket] = []
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Go's net/http

            def setup(self) -> None:
                super().setup()
                agent.connections.append(self.connection)

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                agent.client_ports.add(self.client_address[1])
                agent.requests.append(
                    {
                        "path": self.path,
                        "content_type": self.headers["Content-Type"],
                        "body": json.loads(body),
                    }
                )
                self.send_response(agent.status)
                self.send_header("Content-Length", str(len(agent.answer)))
                self.end_headers()
                self.wfile.write(agent.answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/push"

    @property
    def items(self) -> list[dict[str, Any]]:
        return [item for request in self.requests for item in request["body"]]

    def stop(self) -> None:
        """Stop as a killed agent would: the listener and every kept-alive connection."""
        self.server.shutdown()
        self.server.server_close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=10)


@pytest.fixture
def agent() -> Iterator[Agent]:
    server = Agent()
    yield server
    server.stop()


@pytest.fixture(params=fixture_trees.available() or ["none"])
def template(request: pytest.FixtureRequest) -> Sample:
    return captured(str(request.param))


def readings(template: Sample, count: int, first: int = 0) -> list[Reading]:
    """One reading each of ``count`` containers, 10 s after a previous sample (with rates)."""
    out = []
    for n in range(first, first + count):
        before = attrs.evolve(template, id=f"{n:02x}" * 32)
        after = advance(before, cpu_ns=(n + 1) * 100_000_000, timestamp_s=10.0)
        computed, _ = rates.compute(before, after, 10.0, host_cpus=2)
        out.append(Reading(after, computed, net_counted=True))
    return out


def expected_items(
    batch: list[Reading], endpoint: str, tags: dict[str, str], step: int
) -> list[Any]:
    out = []
    for reading in batch:
        text = ",".join(
            f"{k}={v}" for k, v in sorted({**tags, "container": reading.id[:12]}.items())
        )
        out.extend(reading_items(reading, endpoint=endpoint, tags=text, step=step))
    return out


def test_posts_every_item_as_json_arrays_of_at_most_200(agent: Agent, template: Sample) -> None:
    batch = readings(template, 12)
    sink = FalconAgentSink(agent.url, tags={"app": "web"})
    sink.open(10.0)
    sink.emit(batch)
    expected = expected_items(batch, socket.gethostname(), {"app": "web"}, 10)
    assert len(expected) > 400
    assert agent.items == expected
    assert [len(r["body"]) for r in agent.requests] == [200] * (len(expected) // 200) + [
        len(expected) % 200
    ]
    assert {(r["path"], r["content_type"]) for r in agent.requests} == {
        ("/v1/push", "application/json")
    }
    assert all(item_problem(item) is None for item in agent.items)
    assert agent.items[0]["tags"] == f"app=web,container={'00' * 6}"
    assert sink.stats() == {
        "posts": len(agent.requests),
        "items": len(expected),
        "invalid": 0,
        "errors": 0,
        "failures": 0,
        "failed_items": 0,
    }
    sink.emit(readings(template, 1))
    assert len(agent.client_ports) == 1  # one kept-alive connection for all posts
    sink.close()


def test_endpoint_and_tags_per_reading(agent: Agent, template: Sample) -> None:
    batch = readings(template, 3)
    sink = FalconAgentSink(
        agent.url,
        endpoint=lambda reading: f"pod-{reading.id[:2]}",
        tags=lambda reading: {"app": reading.id[:4], "container": "overridden?"},
        step=60,
    )
    sink.open(10.0)  # the sink's own step wins
    sink.emit(batch)
    seen = {(i["endpoint"], i["tags"], i["step"]) for i in agent.items}
    assert seen == {
        (f"pod-{n:02x}", f"app={n:02x}{n:02x},container={f'{n:02x}' * 6}", 60) for n in range(3)
    }
    sink.close()


def test_invalid_items_are_counted_and_never_sent(agent: Agent, template: Sample) -> None:
    batch = readings(template, 3)
    bad_id, failing_id = batch[1].id, batch[2].id

    def endpoint(reading: Reading) -> str:
        if reading.id == failing_id:
            raise KeyError("no such pod")
        return "web-01"

    sink = FalconAgentSink(
        agent.url,
        endpoint=endpoint,
        tags=lambda reading: {"app": "we b"} if reading.id == bad_id else {"app": "web"},
    )
    sink.open(10.0)
    sink.emit(batch)
    assert agent.items == expected_items(batch[:1], "web-01", {"app": "web"}, 10)
    stats = sink.stats()
    assert stats["invalid"] == len(expected_items(batch[1:2], "web-01", {}, 10))
    assert stats["errors"] == 1
    assert stats["items"] == len(agent.items)
    sink.close()


def test_a_refused_post_raises_and_the_next_tick_goes_through(
    agent: Agent, template: Sample
) -> None:
    sink = FalconAgentSink(agent.url)
    sink.open(10.0)
    agent.status, agent.answer = 500, b"connot decode body"
    batch = readings(template, 6)
    with pytest.raises(AgentPushError, match=r"500.*connot decode body"):
        sink.emit(batch)
    total = len(expected_items(batch, "h", {}, 10))
    assert sink.stats()["failures"] == 1
    assert sink.stats()["failed_items"] == total  # the first post failed: the tick is not sent
    agent.status, agent.answer = 200, b"success"
    sink.emit(batch)
    assert sink.stats()["items"] == total
    sink.close()


def test_an_agent_that_is_down_or_restarted(template: Sample) -> None:
    first = Agent()
    port = first.port
    sink = FalconAgentSink(first.url)
    sink.open(10.0)
    sink.emit(readings(template, 1))
    first.stop()
    with pytest.raises(AgentPushError):
        sink.emit(readings(template, 1))  # refused (or the kept-alive connection is dead)
    again = Agent(port)
    try:
        sink.emit(readings(template, 2))
        assert {i["tags"] for i in again.items} == {f"container={f'{n:02x}' * 6}" for n in range(2)}
    finally:
        again.stop()
        sink.close()


def test_a_kept_alive_connection_the_agent_dropped_is_retried(template: Sample) -> None:
    first = Agent()
    port = first.port
    sink = FalconAgentSink(first.url)
    sink.open(10.0)
    sink.emit(readings(template, 1))
    first.stop()  # the sink still holds the old connection
    again = Agent(port)
    try:
        sink.emit(readings(template, 1, first=5))
        assert {i["tags"] for i in again.items} == {f"container={'05' * 6}"}
        assert sink.stats()["failures"] == 0
    finally:
        again.stop()
        sink.close()


def test_an_agent_that_never_answers_times_out(template: Sample) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes the handshake; nobody ever reads
        port = listener.getsockname()[1]
        sink = FalconAgentSink(f"http://127.0.0.1:{port}/v1/push", timeout_s=0.3)
        sink.open(10.0)
        with pytest.raises(AgentPushError, match=r"timed out|Timeout"):
            sink.emit(readings(template, 1))
        sink.close()


def test_no_step_no_emit(agent: Agent, template: Sample) -> None:
    with pytest.raises(RuntimeError, match="open"):
        FalconAgentSink(agent.url).emit(readings(template, 1))
    sink = FalconAgentSink(agent.url)
    sink.open(0.5)
    sink.emit(readings(template, 1))
    assert {i["step"] for i in agent.items} == {1}


def test_a_collector_feeds_it(agent: Agent) -> None:
    """Real reads of a captured tree, through the collector's worker thread, to the agent."""
    tree = fixture_trees.available()[0]
    data = fixture_trees.capture(tree)
    container_id = fixture_trees.container(data, "main")["id"]
    sink = FalconAgentSink(agent.url, endpoint="web-01")
    with cgstats.Host(fixture_trees.root(tree)) as host:
        collector = cgstats.Collector([container_id], step=30.0, sinks=[sink], host=host)
        with collector:
            collector.tick()
            collector.tick()
    names = {i["metric"] for i in agent.items}
    assert "container.memory.usage.bytes" in names and "container.cpu.usage.cores" in names
    assert {(i["endpoint"], i["tags"], i["step"]) for i in agent.items} == {
        ("web-01", f"container={container_id[:12]}", 30)
    }
    assert sink.stats()["failures"] == 0


# --- construction and URLs -----------------------------------------------------------


def test_from_url() -> None:
    sink = FalconAgentSink.from_url(
        "falcon-agent://10.0.0.5:1999?endpoint=web-01&step=60&tags=a=b,c=d&timeout_s=2.5&path=/api/push"
    )
    assert (sink.url, sink.endpoint, sink.step, sink.tags, sink.timeout_s) == (
        "http://10.0.0.5:1999/api/push",
        "web-01",
        60,
        {"a": "b", "c": "d"},
        2.5,
    )
    default = open_sink("falcon-agent://")
    assert isinstance(default, FalconAgentSink)
    assert (default.url, default.endpoint, default.step) == (
        DEFAULT_URL,
        socket.gethostname(),
        None,
    )
    assert open_sink("FALCON-AGENT://127.0.0.1").url == DEFAULT_URL


@pytest.mark.parametrize(
    "url",
    [
        "falcon-agent://127.0.0.1:1988?nope=1",
        "falcon-agent://127.0.0.1:1988?step=60&step=30",
        "falcon-agent://127.0.0.1:1988?step=sixty",
        "falcon-agent://127.0.0.1:1988?step=0",
        "falcon-agent://127.0.0.1:1988?tags=a",
        "falcon-agent://127.0.0.1:1988?tags=a=b,a=c",
        "falcon-agent://127.0.0.1:1988?tags=a=b%20c",
        "falcon-agent://127.0.0.1:1988?endpoint=",
        "falcon-agent://127.0.0.1:1988?timeout_s=-1",
        "falcon-agent://127.0.0.1:1988?path=v1",
        "falcon-agent://127.0.0.1:99999",
        "falcon-agent://127.0.0.1:1988/v1/push",
    ],
)
def test_bad_urls_are_refused_clearly(url: str) -> None:
    with pytest.raises(SinkURLError):
        open_sink(url)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "https://127.0.0.1:1988/v1/push"},
        {"url": "http:///v1/push"},
        {"endpoint": ""},
        {"tags": {"a": "b c"}},
        {"tags": {"": "x"}},
        {"timeout_s": 0},
        {"batch_items": 0},
        {"step": -1},
    ],
)
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FalconAgentSink(**kwargs)


@pytest.mark.parametrize("kwargs", [{"endpoint": 5}, {"tags": ["a=b"]}])
def test_arguments_of_the_wrong_type(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        FalconAgentSink(**kwargs)
