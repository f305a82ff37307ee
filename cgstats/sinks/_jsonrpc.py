"""A client connection to an Open-Falcon transfer's JSON-RPC port (Go ``net/rpc/jsonrpc``).

Wire format (docs/falcon-deploy.md, *The wire*): each request is one compact
JSON object and a newline, ``{"method": M, "params": [P], "id": N}``; each
response is ``{"id": N, "result": R, "error": null | "text"}``. The server
runs every call in a goroutine of its own, so pipelined calls may be answered
out of order: responses are matched to requests by ``id``. There is no length
prefix; responses are read as a JSON stream (``raw_decode`` over a buffer).

Two kinds of failure: :class:`RpcError` when the server answered a call with
an error string (the connection stays usable), :class:`TransportError` when
the connection is unusable (refused, reset, timed out, closed, or the peer
sent something that is not a JSON-RPC response); the connection is then closed.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Optional, Union

# Go's json.Decoder has no limit; ours bounds what a peer that never finishes
# a value can make us buffer (a transfer's response is under 100 bytes).
MAX_RESPONSE_CHARS = 1 << 20
_RECV_BYTES = 65536
# What a JSON value cut short by a TCP segment may end with where the decoder
# stops: part of a literal or of a number's fraction or exponent.
_PARTIAL_TOKEN = re.compile(r"-|\.|[eE][+-]?|n|nu|nul|t|tr|tru|f|fa|fal|fals")
# A unicode escape (backslash, u, 4 hex digits) cut short is reported this
# close to the end of the buffer.
_ESCAPE_CHARS = 6
_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


class RpcError(Exception):
    """The server answered the call with an error string (``error`` not null)."""


class TransportError(Exception):
    """The connection failed: refused, reset, timeout, EOF, or a reply that is not JSON-RPC."""


def encode_request(method: str, params: Any, request_id: int) -> bytes:
    """One request as the Go codec reads it: compact JSON and a newline (UTF-8).

    Raises :class:`ValueError` for NaN or Infinity (not JSON) and
    :class:`TypeError` for a value JSON cannot hold.
    """
    text = json.dumps(
        {"method": method, "params": [params], "id": request_id},
        separators=(",", ":"),
        allow_nan=False,
        ensure_ascii=False,
    )
    return text.encode("utf-8") + b"\n"


class ResponseReader:
    """Splits a byte stream into JSON values; says when the stream is not JSON.

    :meth:`feed` takes bytes as they arrive, :meth:`next` returns the next
    complete value or ``None`` if more bytes are needed, and raises
    :class:`TransportError` on bytes that no continuation could make valid
    (or a value longer than :data:`MAX_RESPONSE_CHARS`).
    """

    def __init__(self) -> None:
        self._text = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")

    def feed(self, data: bytes) -> None:
        try:
            self._text += self._utf8.decode(data)
        except UnicodeDecodeError as error:
            raise TransportError(f"reply is not UTF-8: {error}") from error

    def next(self) -> Optional[Any]:
        text = self._text.lstrip(_WHITESPACE)
        self._text = text
        if not text:
            return None
        try:
            value, end = _DECODER.raw_decode(text)
        except json.JSONDecodeError as error:
            if _incomplete(error, text) and len(text) <= MAX_RESPONSE_CHARS:
                return None
            raise TransportError(f"reply is not JSON ({error.msg}): {text[:80]!r}") from error
        self._text = text[end:]
        return value

    @property
    def pending_chars(self) -> int:
        return len(self._text)


def _incomplete(error: json.JSONDecodeError, text: str) -> bool:
    """Whether more input could still complete ``text`` (else it is garbage)."""
    if error.msg.startswith("Unterminated string"):
        return True
    if error.msg.startswith("Invalid \\uXXXX escape"):
        return len(text) - error.pos <= _ESCAPE_CHARS
    rest = text[error.pos :]
    return not rest or _PARTIAL_TOKEN.fullmatch(rest) is not None


Outcome = Union[Any, RpcError]


class Connection:
    """One TCP connection to a transfer, dialled on first use.

    ``dial_timeout_s`` bounds the connect, ``call_timeout_s`` every call (for
    :meth:`call_many`, the whole window of calls). Not thread-safe, except
    :meth:`abort`, which another thread may call to interrupt a blocked call.
    """

    def __init__(
        self, host: str, port: int, *, dial_timeout_s: float = 1.0, call_timeout_s: float = 10.0
    ) -> None:
        self.host = host
        self.port = port
        self.dial_timeout_s = dial_timeout_s
        self.call_timeout_s = call_timeout_s
        self._sock: Optional[socket.socket] = None
        self._reader = ResponseReader()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # guards _sock against abort() from another thread
        self._aborted = False

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        """Dial the transfer if not connected; :class:`TransportError` if it cannot be reached."""
        if self._sock is not None:
            return
        if self._aborted:
            raise TransportError("connection aborted")
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.dial_timeout_s)
        except OSError as error:
            raise TransportError(f"dial {self.host}:{self.port}: {_describe(error)}") from error
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        with self._lock:
            if self._aborted:
                sock.close()
                raise TransportError("connection aborted")
            self._sock = sock
        self._reader = ResponseReader()

    def call(self, method: str, params: Any) -> Any:
        """One call: its result; :class:`RpcError` or :class:`TransportError` on failure."""
        outcome = self.call_many(method, [params])[0]
        if isinstance(outcome, RpcError):
            raise outcome
        return outcome

    def call_many(self, method: str, params_list: Sequence[Any]) -> list[Outcome]:
        """Send every call at once (pipelined), then collect the answers by id.

        Returns, in the order of ``params_list``, each call's result or the
        :class:`RpcError` it was answered with. Raises :class:`TransportError`
        (and closes the connection) if any answer is missing by the deadline.
        """
        self.connect()
        sock = self._sock
        assert sock is not None
        ids = [next(self._ids) for _ in params_list]
        payload = b"".join(
            encode_request(method, params, request_id)
            for params, request_id in zip(params_list, ids)
        )
        deadline = time.monotonic() + self.call_timeout_s
        try:
            sock.settimeout(self.call_timeout_s)
            sock.sendall(payload)
            answers = self._collect(sock, set(ids), deadline)
        except TransportError:
            self.close()
            raise
        except OSError as error:
            self.close()
            raise TransportError(
                f"{method} to {self.host}:{self.port}: {_describe(error)}"
            ) from error
        return [answers[request_id] for request_id in ids]

    def _collect(
        self, sock: socket.socket, waiting: set[int], deadline: float
    ) -> dict[int, Outcome]:
        answers: dict[int, Outcome] = {}
        while waiting:
            response = self._reader.next()
            if response is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TransportError(f"no answer within {self.call_timeout_s:g} s")
                sock.settimeout(remaining)
                try:
                    data = sock.recv(_RECV_BYTES)
                except socket.timeout as error:
                    raise TransportError(f"no answer within {self.call_timeout_s:g} s") from error
                if not data:
                    raise TransportError("connection closed by the transfer")
                self._reader.feed(data)
                continue
            request_id, outcome = _outcome(response)
            if request_id not in waiting:
                raise TransportError(f"answer to an unknown call id {request_id!r}")
            waiting.discard(request_id)
            answers[request_id] = outcome
        return answers

    def close(self) -> None:
        """Close the socket (a later call dials again)."""
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def abort(self) -> None:
        """From another thread: fail the call in progress now and refuse new ones."""
        with self._lock:
            self._aborted = True
            sock = self._sock
        if sock is not None:
            # Not connected (any more): nothing to interrupt.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _outcome(response: Any) -> tuple[object, Outcome]:
    """``(id, result or RpcError)`` of one decoded response; TransportError if it is none."""
    if not isinstance(response, dict) or "id" not in response:
        raise TransportError(f"not a JSON-RPC response: {str(response)[:80]!r}")
    error = response.get("error")
    if error is not None:
        return response["id"], RpcError(error if isinstance(error, str) else json.dumps(error))
    return response["id"], response.get("result")


def _describe(error: OSError) -> str:
    if isinstance(error, socket.timeout):
        return "timed out"
    return error.strerror or str(error) or type(error).__name__
