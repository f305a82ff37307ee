"""JsonLinesSink behind a real Collector reading captured trees: files, stdout, a closed pipe."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import fixture_trees
import pytest

from cgstats import Collector, Event
from cgstats.sinks import SinkURLError, open_sink
from cgstats.sinks.jsonl import JsonLinesSink

pytestmark = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")


@pytest.fixture(params=fixture_trees.available() or ["none"])
def root(request: pytest.FixtureRequest) -> str:
    return fixture_trees.root(str(request.param))


def plain(value: Any) -> Any:
    """``value`` with tuples as lists: JSON has only arrays."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def expected_documents(collector: Collector, events: list[Event], ticks: int) -> list[Any]:
    """Tick ``ticks`` times; return what a reader must find: each tick's events, then readings."""
    documents: list[Any] = []
    for _ in range(ticks):
        seen = len(events)
        readings = collector.tick()
        documents += [{"event": event.to_dict()} for event in events[seen:]]
        documents += [reading.to_dict() for reading in readings]
    return plain(documents)


def test_a_file_gets_one_line_per_reading_and_per_event(root: str, tmp_path: Path) -> None:
    path = tmp_path / "cgstats.jsonl"
    path.write_text('{"kept": true}\n')  # appended to, never truncated
    sink = open_sink(f"jsonl://{path}")  # jsonl:///tmp/...
    assert isinstance(sink, JsonLinesSink) and repr(sink) == f"<JsonLinesSink jsonl:{path}>"
    events: list[Event] = []
    with Collector(root=root, step=1.0, sinks=[sink], on_event=events.append) as collector:
        expected = expected_documents(collector, events, 3)
        assert collector.flush(timeout=60)
        lines = path.read_text().splitlines()  # flushed after every batch: all there now
        assert [json.loads(line) for line in lines] == [{"kept": True}, *expected]
    assert events and events[0].kind == "appeared"
    assert sink.written_lines == len(expected)


def test_stdout(root: str, capsys: pytest.CaptureFixture[str]) -> None:
    sink = open_sink("jsonl:-")
    assert isinstance(sink, JsonLinesSink) and sink.uses_stdout
    events: list[Event] = []
    with Collector(root=root, step=1.0, sinks=[sink], on_event=events.append) as collector:
        expected = expected_documents(collector, events, 2)
    out = capsys.readouterr().out
    assert [json.loads(line) for line in out.splitlines()] == expected


def test_a_closed_stdout_pipe_ends_quietly(root: str) -> None:
    # The sink writes to a pipe whose reader leaves after one line (as `| head -1`).
    script = textwrap.dedent(
        f"""
        import logging, sys
        from cgstats import Collector
        logging.getLogger("cgstats.collector").setLevel(logging.CRITICAL)  # overruns: noise
        from cgstats.sinks import open_sink
        sink = open_sink("jsonl:-")
        with Collector(root={root!r}, step=0.01, sinks=[sink]) as collector:
            sink.on_pipe_closed = collector.stop
            collector.start()
            assert collector.flush(timeout=60)
            while not sink.pipe_closed:
                collector.flush(timeout=60)
        print(sink.dropped_lines > 0, sink.written_lines > 0, file=sys.stderr)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=120) == 0, err
    assert "id" in json.loads(first) or "event" in json.loads(first)
    assert err == "True True\n"  # no traceback, no "Exception ignored"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("jsonl://logs.example/x.jsonl", "names a host"),
        ("jsonl:", "names no file"),
        ("jsonl:///tmp/x.jsonl?rotate=1", "unknown option 'rotate'"),
        ("jsonl:///tmp/x.jsonl#top", "no #fragment"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(SinkURLError, match=message):
        open_sink(url)


def test_a_file_that_cannot_be_opened_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_sink(f"jsonl://{tmp_path}/no/such/dir/x.jsonl")


def test_relative_and_single_slash_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    relative = open_sink("jsonl:out/x.jsonl")
    absolute = open_sink(f"jsonl:{tmp_path}/y.jsonl")
    assert isinstance(relative, JsonLinesSink) and relative.path == "out/x.jsonl"
    assert isinstance(absolute, JsonLinesSink) and absolute.path == f"{tmp_path}/y.jsonl"
    for sink in (relative, absolute):
        sink.close()
    assert (tmp_path / "out" / "x.jsonl").exists() and (tmp_path / "y.jsonl").exists()
