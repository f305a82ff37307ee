"""Open-Falcon transfers on loopback for the sink tests: the Go one and a Python stand-in.

:class:`GoTransfer` runs ``tests/falcon/transfer`` (Go's ``net/rpc/jsonrpc``,
the codec the real transfer serves); :class:`PyTransfer` is an in-process
stand-in with the same interface, modes and answers, for fast unit tests
(``tests/sinks/test_falcon_transfer_go.py`` checks that the two agree). Both
append every accepted item to ``out_path`` as one JSON line before they reply,
so :meth:`accepted` after a reply is exactly what the transfer took.

The stand-in's decoding and checks are written here from the transfer's
rules (docs/falcon.md, falcon-plus ``receiver/rpc/rpc_transfer.go``), not
taken from :mod:`cgstats.sinks.falcon_metrics`, so tests never check the
library against itself.

Usage from a test (``kind`` is ``"go"`` or ``"py"``)::

    with falcon_transfers.pool(kind, tmp_path, 3) as nodes:
        sink = FalconSink([n.address for n in nodes], ...)
        ...
        nodes[1].kill(); ...; nodes[1].restart()
        received = set().union(*(n.accepted() for n in nodes))
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional, Union

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
GO_SOURCE = os.path.join(TESTS, "falcon", "transfer")
ENV = "CGSTATS_FALCON_TRANSFER"
MODES = ("ok", "silent", "error", "close")
START_TIMEOUT_S = 10.0
BUILD_TIMEOUT_S = 300.0

Key = tuple[str, str, str, int]


# --- the Go binary -------------------------------------------------------------


def build_go(directory: str) -> tuple[Optional[str], str]:
    """Build the Go transfer into ``directory``: (path, "") or (None, why not)."""
    go = shutil.which("go")
    if go is None:
        return None, "no go toolchain (apt-get install golang-go)"
    binary = os.path.join(directory, "falcon-transfer")
    cache = os.path.join(REPO, "build", "go-build")  # the cache .ci/run uses too
    os.makedirs(cache, exist_ok=True)
    env = dict(os.environ, GO111MODULE="off", GOFLAGS="", GOCACHE=cache)
    try:
        done = subprocess.run(
            [go, "build", "-o", binary, "."],
            cwd=GO_SOURCE,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return None, f"go build took over {BUILD_TIMEOUT_S:.0f} s"
    if done.returncode != 0:
        return None, f"go build failed: {done.stderr.strip()[-2000:]}"
    return binary, ""


@functools.cache
def _built() -> tuple[Optional[str], str]:
    directory = tempfile.mkdtemp(prefix="cgstats-falcon-transfer-")
    atexit.register(shutil.rmtree, directory, True)
    return build_go(directory)


def go_binary() -> str:
    """The Go transfer: ``$CGSTATS_FALCON_TRANSFER``, else built once per session.

    Without Go the calling test skips, except with ``CI=true`` (``.ci/run``
    installs Go and builds ``build/falcon-transfer``): then it fails.
    """
    given = os.environ.get(ENV)
    if given:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            pytest.fail(f"{ENV}={given} is not an executable file")
        return given
    binary, reason = _built()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true, yet the Go test transfer is unavailable: {reason}")
        pytest.skip(f"Go test transfer unavailable: {reason}")
    return binary


# --- what both transfers share: the file of accepted items ---------------------

# Started transfers, so that none outlives the test session (killed at exit).
_LIVE: set[_Transfer] = set()


@atexit.register
def _kill_strays() -> None:
    for transfer in list(_LIVE):
        with contextlib.suppress(Exception):
            transfer.kill()


class _Transfer:
    """Interface of both transfers; a context manager that stops it on exit."""

    def __init__(self, out_path: Union[str, os.PathLike[str]], mode: str, port: int) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.out_path = os.fspath(out_path)
        self.mode = mode
        self.port = port

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the address a sink is given (the port once started)."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.kill()

    @property
    def running(self) -> bool:
        raise NotImplementedError

    def restart(self, mode: Optional[str] = None) -> None:
        """Kill if running, then start again on the same port, same file (and ``mode``)."""
        if mode is not None:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
            self.mode = mode
        if self.running:
            self.kill()
        self.start()

    def accepted_items(self) -> list[dict[str, Any]]:
        """Every item recorded so far, in order (across restarts)."""
        try:
            with open(self.out_path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return []
        # A batch is written before its reply. A SIGKILL in the middle of the
        # write leaves a torn last line, never acknowledged (so sent again
        # elsewhere); a restarted Go transfer ends that line before its own.
        items = []
        for line in text.split("\n")[:-1]:
            try:
                items.append(json.loads(line))
            except ValueError:
                continue  # the torn record
        return items

    def accepted(self) -> set[Key]:
        """(endpoint, metric, tags, timestamp) of every recorded item."""
        return {
            (i["endpoint"], i["metric"], i["tags"], i["timestamp"]) for i in self.accepted_items()
        }

    def __enter__(self) -> _Transfer:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the Go transfer -----------------------------------------------------------


class GoTransfer(_Transfer):
    """``tests/falcon/transfer`` in a process of its own: the real codec.

    ``kill()`` is SIGKILL (connections die with the process, in-flight calls
    get no reply); ``stop()`` is SIGTERM, then SIGKILL after 5 s.
    """

    def __init__(
        self,
        binary: str,
        out_path: Union[str, os.PathLike[str]],
        mode: str = "ok",
        port: int = 0,
    ) -> None:
        super().__init__(out_path, mode, port)
        self.binary = binary
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.stderr_path = self.out_path + ".stderr"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"transfer at {self.address} is already running")
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            error = self._try_start(deadline)
            if error is None:
                return
            # A restart on a port whose old socket the kernel has not quite let go of.
            if "address already in use" not in error or time.monotonic() > deadline:
                raise RuntimeError(f"falcon-transfer did not start: {error}")
            time.sleep(0.05)

    def _try_start(self, deadline: float) -> Optional[str]:
        with open(self.stderr_path, "ab") as stderr:
            process = subprocess.Popen(
                [
                    self.binary,
                    "-listen",
                    f"127.0.0.1:{self.port}",
                    "-out",
                    self.out_path,
                    "-mode",
                    self.mode,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        self.process = process
        _LIVE.add(self)
        assert process.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([process.stdout], [], [], max(left, 0))
            if not ready:
                self.kill()
                return f"no 'listening' line within {START_TIMEOUT_S:.0f} s"
            chunk = os.read(process.stdout.fileno(), 256)
            if not chunk:
                self.kill()
                with open(self.stderr_path, encoding="utf-8", errors="replace") as handle:
                    text = handle.read().strip()
                return text.splitlines()[-1] if text else f"exited with {process.wait()}"
            line += chunk
        match = re.fullmatch(rb"listening 127\.0\.0\.1:(\d+)\n", line)
        if match is None:
            self.kill()
            return f"unexpected output {line!r}"
        self.port = int(match.group(1))
        return None

    def kill(self) -> None:
        self._end(signal.SIGKILL, 0.0)

    def stop(self) -> None:
        self._end(signal.SIGTERM, 5.0)

    def _end(self, sig: int, grace_s: float) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=grace_s or None)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        _LIVE.discard(self)


# --- the Python stand-in -------------------------------------------------------


class _TypeError(Exception):
    """What Go's json.Unmarshal reports for a value of the wrong JSON type."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


def _decode(line: bytes) -> Any:
    """One JSON value as Go's decoder reads it: no NaN/Infinity, bad UTF-8 replaced."""
    return json.loads(line.decode("utf-8", "replace"), parse_constant=_reject_constant)


def _go_string(value: Any, field: str) -> str:
    if value is None:
        return ""  # JSON null leaves a Go string empty
    if not isinstance(value, str):
        raise _unmarshal_error(value, f"struct field {field} of type string")
    # Go replaces a lone surrogate escape with U+FFFD and joins valid pairs.
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _go_int64(value: Any, field: str) -> int:
    if value is None:
        return 0
    if type(value) is not int or not -(1 << 63) <= value < (1 << 63):
        raise _unmarshal_error(value, f"struct field {field} of type int64")
    return value


def _go_interface(value: Any) -> Any:
    """A value decoded into interface{}: numbers become float64, too large is an error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _go_string(value, "value") if isinstance(value, str) else value
    try:
        number = float(value)
    except OverflowError:
        number = float("inf")
    if number in (float("inf"), float("-inf")):
        raise _TypeError(f"json: cannot unmarshal number {value} into Go value of type float64")
    return number


def _unmarshal_error(value: Any, target: str) -> _TypeError:
    return _TypeError(f"json: cannot unmarshal {_json_kind(value)} into Go {target}")


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return f"number {value}"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")


_ITEM_FIELDS = {
    "endpoint": "Endpoint",
    "metric": "Metric",
    "value": "Value",
    "step": "Step",
    "countertype": "Type",
    "tags": "Tags",
    "timestamp": "Timestamp",
}

# strconv.ParseFloat's decimal syntax, plus inf/infinity/nan in any case.
_GO_FLOAT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)", re.I)
_GO_SPECIAL = re.compile(r"[+-]?(?:inf(?:inity)?|nan)", re.I)


def _metric_value(raw: Any) -> Optional[dict[str, Any]]:
    """An element of Update's array as Go decodes it into *MetricValue (None: nil)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _unmarshal_error(raw, "value of type MetricValue")
    item: dict[str, Any] = {
        "Endpoint": "",
        "Metric": "",
        "Value": None,
        "Step": 0,
        "Type": "",
        "Tags": "",
        "Timestamp": 0,
    }
    for key, value in raw.items():
        field = _ITEM_FIELDS.get(key.lower())  # Go matches JSON keys case-insensitively
        if field is None:
            continue
        if field == "Value":
            item[field] = _go_interface(value)
        elif field in ("Step", "Timestamp"):
            item[field] = _go_int64(value, f"MetricValue.{key}")
        else:
            item[field] = _go_string(value, f"MetricValue.{key}")
    return item


def _accept(item: Optional[dict[str, Any]], now: int) -> Optional[dict[str, Any]]:
    """The transfer's checks: the line it records, or None for an invalid item."""
    if item is None or item["Metric"] in ("", "kernel.hostname") or item["Endpoint"] == "":
        return None
    if item["Type"] not in ("GAUGE", "COUNTER", "DERIVE") or item["Step"] <= 0:
        return None
    if len(item["Metric"].encode()) + len(item["Tags"].encode()) > 510:
        return None
    value = item["Value"]
    if isinstance(value, str):
        if not _GO_FLOAT.fullmatch(value):
            return None
        number = float(value)
        if _GO_SPECIAL.fullmatch(value):
            pass  # ParseFloat takes "NaN" and "Inf"; kept as the string (JSON has no NaN)
        elif number - number != 0:
            return None  # out of range: ParseFloat fails
        else:
            value = number
    elif not isinstance(value, float):
        return None
    timestamp = item["Timestamp"]
    if timestamp <= 0 or timestamp > 2 * now:
        timestamp = now
    pairs = {}
    for piece in item["Tags"].replace(" ", "").split(","):
        key, equals, tag_value = piece.partition("=")
        if equals:
            pairs[key] = tag_value
    tags = ",".join(f"{key}={pairs[key]}" for key in sorted(pairs))
    return {
        "endpoint": item["Endpoint"],
        "metric": item["Metric"],
        "value": value,
        "step": item["Step"],
        "counterType": item["Type"],
        "tags": tags,
        "timestamp": timestamp,
    }


class PyTransfer(_Transfer):
    """The transfer's codec and checks in threads of this process.

    Newline-delimited JSON-RPC 1.0 over TCP; each call runs in a thread of
    its own, so pipelined calls are answered as they finish, matched by id.
    What Go's decoder would reject makes the same answer: a value of the
    wrong type in the params (``"step": 60.5``) an error reply, NaN or
    Infinity (not JSON) a closed connection. ``kill()`` aborts every
    connection; calls still running then neither record nor reply.
    """

    def __init__(
        self,
        out_path: Union[str, os.PathLike[str]],
        mode: str = "ok",
        port: int = 0,
    ) -> None:
        super().__init__(out_path, mode, port)
        self._lock = threading.Lock()
        self._listener: Optional[socket.socket] = None
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._generation = 0

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"transfer at {self.address} is already running")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._generation += 1
            self._listener = listener
        _LIVE.add(self)
        self._spawn(self._accept_loop, listener, self._generation)

    def kill(self) -> None:
        with self._lock:
            self._generation += 1  # calls in flight of the old generation go silent
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
        if listener is not None:
            _abort(listener)
        for connection in connections:
            _abort(connection)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5.0)
        _LIVE.discard(self)

    def _spawn(self, target: Any, *args: Any) -> threading.Thread:
        thread = threading.Thread(
            target=target, args=args, daemon=True, name=f"py-transfer-{self.port}"
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return thread

    def _accept_loop(self, listener: socket.socket, generation: int) -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # killed
            with self._lock:
                if generation != self._generation:
                    _abort(connection)
                    return
                self._connections.add(connection)
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self._spawn(self._serve, connection, generation)

    def _serve(self, connection: socket.socket, generation: int) -> None:
        writer = threading.Lock()
        calls: list[threading.Thread] = []
        buffer = b""
        try:
            while True:
                try:
                    chunk = connection.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                if self.mode == "silent":
                    continue
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    if self.mode == "close":
                        return
                    try:
                        request = _decode(line)
                        method = request.get("method") if isinstance(request, dict) else 0
                        if method is not None and not isinstance(method, str):
                            raise ValueError("cannot decode request header")
                    except ValueError:
                        return  # Go's server cannot read a header: it closes the connection
                    calls.append(self._spawn(self._call, connection, writer, request, generation))
        finally:
            for call in calls:  # as Go's ServeCodec: answer what was read, then close
                call.join(timeout=10.0)
            with self._lock:
                self._connections.discard(connection)
            _abort(connection)

    def _call(
        self,
        connection: socket.socket,
        writer: threading.Lock,
        request: dict[str, Any],
        generation: int,
    ) -> None:
        result: Any = None
        error: Optional[str] = None
        try:
            result = self._dispatch(request, generation)
        except _TypeError as exc:
            error = str(exc)
        except _RpcError as exc:
            error = str(exc)
        response = json.dumps({"id": request.get("id"), "result": result, "error": error})
        with self._lock:
            if generation != self._generation:
                return  # killed while the call ran: no reply
        with writer, contextlib.suppress(OSError):
            connection.sendall(response.encode() + b"\n")

    def _dispatch(self, request: dict[str, Any], generation: int) -> Any:
        method = request.get("method") or ""
        service, dot, name = method.rpartition(".")
        if not dot:
            raise _RpcError(f"rpc: service/method request ill-formed: {method}")
        if service != "Transfer":
            raise _RpcError(f"rpc: can't find service {method}")
        if name not in ("Update", "Ping"):
            raise _RpcError(f"rpc: can't find method {method}")
        params = request.get("params")
        if params is None:
            raise _RpcError("jsonrpc: request body missing params")
        if not isinstance(params, list):
            raise _unmarshal_error(params, "value of type [1]interface {}")
        argument = params[0] if params else None
        if name == "Ping":
            if argument is not None and not isinstance(argument, dict):
                raise _unmarshal_error(argument, "value of type NullRpcRequest")
            return {"code": 0}
        if argument is not None and not isinstance(argument, list):
            raise _unmarshal_error(argument, "value of type []*MetricValue")
        items = [_metric_value(raw) for raw in argument or []]  # a type error fails the call
        if self.mode == "error":
            raise _RpcError("py-transfer: -mode error refuses every update")
        now = int(time.time())
        accepted = [line for line in (_accept(item, now) for item in items) if line is not None]
        with self._lock:
            if generation != self._generation:
                raise _RpcError("killed")  # never sent: the caller checks the generation
            if accepted:
                with open(self.out_path, "a", encoding="utf-8") as out:
                    out.write("".join(json.dumps(line) + "\n" for line in accepted))
        return {
            "Message": "ok",
            "Total": len(items),
            "Invalid": len(items) - len(accepted),
            "Latency": 0,
        }


class _RpcError(Exception):
    """An error string net/rpc sends back (unknown method, missing params, the mode)."""


def _abort(sock: socket.socket) -> None:
    """Close ``sock`` at once (RST on a connection), waking a thread blocked on it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# --- factories -------------------------------------------------------------------


def transfer(
    kind: str,
    out_path: Union[str, os.PathLike[str]],
    mode: str = "ok",
    port: int = 0,
) -> _Transfer:
    """A transfer of ``kind`` ``"go"`` or ``"py"``, not started."""
    if kind == "go":
        return GoTransfer(go_binary(), out_path, mode, port)
    if kind == "py":
        return PyTransfer(out_path, mode, port)
    raise ValueError(f"kind must be 'go' or 'py', not {kind!r}")


@contextlib.contextmanager
def pool(
    kind: str,
    directory: Union[str, os.PathLike[str]],
    count: int,
    modes: Optional[list[str]] = None,
) -> Iterator[list[_Transfer]]:
    """``count`` started transfers writing ``directory/transfer-N.jsonl``; all stopped on exit."""
    modes = modes or ["ok"] * count
    nodes = [
        transfer(kind, os.path.join(os.fspath(directory), f"transfer-{n}.jsonl"), modes[n])
        for n in range(count)
    ]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def accepted_by(nodes: list[_Transfer]) -> set[Key]:
    """Everything the transfers of a pool recorded."""
    return set().union(*(node.accepted() for node in nodes))
