"""`python -m cgstats.dump --watch --sink URL` on captured trees: files, stdout, a TCP receiver."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import fixture_trees
import msgpack  # type: ignore[import-untyped]
import pytest

from cgstats import dump

pytestmark = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")


@pytest.fixture(params=fixture_trees.available() or ["none"])
def tree(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def watched_ids(tree: str) -> set[str]:
    return {c["id"] for c in fixture_trees.capture(tree)["containers"] if c["expect_container"]}


def watch(capsys: pytest.CaptureFixture[str], tree: str, *args: str) -> tuple[int, str, str]:
    code = dump.main(["--root", fixture_trees.root(tree), "--watch", "--step", "0.05", *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def split_documents(documents: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    events = [d["event"] for d in documents if "event" in d]
    readings = [d for d in documents if "event" not in d]
    return events, readings


def test_a_file_sink_beside_the_table(
    capsys: pytest.CaptureFixture[str], tree: str, tmp_path: Path
) -> None:
    path = tmp_path / "out.jsonl"
    code, out, err = watch(capsys, tree, "--count", "2", "--all", "--sink", f"jsonl://{path}")
    assert code == 0 and err == ""
    assert out.count("CONTAINER") == 2  # the table, once per step
    events, readings = split_documents([json.loads(line) for line in path.read_text().splitlines()])
    ids = watched_ids(tree)
    assert [r["id"] for r in readings[: len(ids)]] == [r["id"] for r in readings[len(ids) :]]
    assert {r["id"] for r in readings} == ids and len(readings) == 2 * len(ids)
    assert sorted(e["container_id"] for e in events) == sorted(ids)
    assert {e["kind"] for e in events} == {"appeared"}


def test_a_sink_on_stdout_replaces_the_table(capsys: pytest.CaptureFixture[str], tree: str) -> None:
    code, out, err = watch(capsys, tree, "--count", "2", "--all", "--json", "--sink", "jsonl:-")
    assert code == 0 and err == ""
    events, readings = split_documents([json.loads(line) for line in out.splitlines()])
    assert len(readings) == 2 * len(watched_ids(tree))  # once each: not also as --json
    assert len(events) == len(watched_ids(tree))


def test_quiet_prints_nothing_but_the_sinks_get_everything(
    capsys: pytest.CaptureFixture[str], tree: str, tmp_path: Path
) -> None:
    path = tmp_path / "out.msgpack"
    code, out, err = watch(
        capsys, tree, "--count", "3", "--all", "--quiet", "--sink", f"msgpack://{path}"
    )
    assert (code, out, err) == (0, "", "")
    with open(path, "rb") as written:
        _events, readings = split_documents(list(msgpack.Unpacker(written, raw=False)))
    assert len(readings) == 3 * len(watched_ids(tree))


def test_a_tcp_receiver_gets_every_step(capsys: pytest.CaptureFixture[str], tree: str) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    received = bytearray()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            while data := connection.recv(65536):
                received.extend(data)

    receiver = threading.Thread(target=serve, daemon=True)
    receiver.start()
    url = f"msgpack+tcp://127.0.0.1:{listener.getsockname()[1]}"
    try:
        code, _out, err = watch(capsys, tree, "--count", "2", "--all", "--quiet", "--sink", url)
        assert code == 0 and err == ""
        receiver.join(60)  # the watch closed the sink, so the connection ended
        assert not receiver.is_alive()
    finally:
        listener.close()
    events, readings = split_documents(list(_unpack(bytes(received))))
    assert {r["id"] for r in readings} == watched_ids(tree)
    assert len(readings) == 2 * len(watched_ids(tree)) and len(events) == len(watched_ids(tree))


def _unpack(data: bytes) -> list[Any]:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    return list(unpacker)


def test_a_receiver_that_is_down_is_reported_in_one_line_each(
    capsys: pytest.CaptureFixture[str], tree: str
) -> None:
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    url = f"msgpack+tcp://127.0.0.1:{refusing.getsockname()[1]}"
    try:
        code, out, err = watch(capsys, tree, "--count", "2", "--all", "--sink", url)
    finally:
        refusing.close()
    assert code == 0 and out.count("CONTAINER") == 2
    lines = err.splitlines()
    assert len(lines) == 2, err  # the first failure (the rest are rate-limited), and the summary
    assert lines[0].startswith("cgstats: sink <MsgpackSink msgpack+tcp://127.0.0.1:")
    assert "ConnectionRefusedError" in lines[0]
    assert lines[1].endswith(">: 3 errors")  # step 1: events and readings; step 2: readings


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuch://x", "unknown sink scheme 'nosuch'"),
        ("/var/log/cgstats.jsonl", "not a sink URL"),
        ("jsonl://host/x", "names a host"),
        ("msgpack+tcp://127.0.0.1", "needs host:port"),
    ],
)
def test_a_bad_sink_url_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], tree: str, url: str, message: str
) -> None:
    code, out, err = watch(capsys, tree, "--count", "1", "--all", "--sink", url)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"cgstats: --sink {url}: ") and message in err


def test_a_sink_that_cannot_be_made_is_status_2(
    capsys: pytest.CaptureFixture[str], tree: str, tmp_path: Path
) -> None:
    url = f"jsonl://{tmp_path}/missing/out.jsonl"
    good = tmp_path / "good.jsonl"
    code, out, err = watch(
        capsys, tree, "--count", "1", "--all", "--sink", f"jsonl://{good}", "--sink", url
    )
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "No such file or directory" in err and good.read_text() == ""


def test_two_sinks_on_stdout_are_refused(capsys: pytest.CaptureFixture[str], tree: str) -> None:
    code, out, err = watch(capsys, tree, "--all", "--sink", "jsonl:-", "--sink", "msgpack:-")
    assert code == 2 and out == "" and "at most one sink can write to stdout" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sink", "jsonl:-", "--all"], "--sink needs --watch"),
        (["--watch", "--quiet", "--all"], "--quiet needs --sink"),
    ],
)
def test_usage_errors(
    capsys: pytest.CaptureFixture[str], tree: str, args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        dump.main(["--root", fixture_trees.root(tree), *args])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_reader_closing_the_pipe_of_a_stdout_sink_ends_the_watch(tree: str) -> None:
    # `... --sink jsonl:- | head -1`: an endless watch ends quietly with status 0.
    argv = ["--root", fixture_trees.root(tree), "--watch", "--step", "0.05", "--all"]
    process = subprocess.Popen(
        [sys.executable, "-m", "cgstats.dump", *argv, "--sink", "jsonl:-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    first = json.loads(process.stdout.readline())
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=120) == 0 and err == "", err
    assert first["event"]["kind"] == "appeared"
