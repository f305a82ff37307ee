"""JSON Lines: one JSON document per reading (and per event), appended to a file or stdout.

A reading's line is ``json.dumps(reading.to_dict())`` (compact separators):
the same document as ``python -m cgstats.dump --watch --json``. An event's
line is ``{"event": event.to_dict()}``, so a reader tells the two apart by
the top-level ``event`` key. A tick's event lines come before its reading
lines; events of a container that has a reading that tick are in its
``events`` too.

URLs: ``jsonl:///var/log/cgstats.jsonl`` (or ``jsonl:/abs/path``,
``jsonl:relative/path``) appends to that file, created if need be;
``jsonl:-`` writes to stdout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, Optional

from cgstats._stdout import silence_stdout
from cgstats.sinks import _targets
from cgstats.sinks.base import Sink

if TYPE_CHECKING:
    from cgstats.collector import Reading
    from cgstats.events import Event

log = logging.getLogger("cgstats.sinks.jsonl")


def reading_line(reading: Reading) -> str:
    """A reading's JSON line (without the newline)."""
    return json.dumps(reading.to_dict(), separators=(",", ":"))


def event_line(event: Event) -> str:
    """An event's JSON line: ``{"event": {...}}`` (without the newline)."""
    return json.dumps({"event": event.to_dict()}, separators=(",", ":"))


class JsonLinesSink(Sink):
    """Appends JSON lines to ``path``, or to stdout when ``path`` is ``None`` or ``"-"``.

    The file is opened (in append mode, UTF-8) when the sink is made, so a
    path that cannot be written fails at once with :class:`OSError`. Each
    batch is written and flushed as one. When stdout's reader goes away
    (EPIPE, as with ``| head``), the sink stops writing quietly: it sets
    :attr:`pipe_closed`, counts what it no longer writes in
    :attr:`dropped_lines` and calls :attr:`on_pipe_closed` (if set) once.
    """

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = None if path in (None, _targets.STDOUT) else path
        self._file: Optional[IO[str]] = None
        if self.path is not None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (held until close)
        #: True once stdout's reader went away (EPIPE); nothing is written after that.
        self.pipe_closed = False
        #: Lines not written because the pipe was closed.
        self.dropped_lines = 0
        #: Lines written so far.
        self.written_lines = 0
        #: Called once (with no arguments) when the pipe closes, if set.
        self.on_pipe_closed: Optional[Callable[[], Any]] = None

    @classmethod
    def from_url(cls, url: str) -> JsonLinesSink:
        """``jsonl:-`` (stdout) or ``jsonl:///path``; no options."""
        parts = _targets.split(url)
        _targets.options(url, parts, {})
        return cls(_targets.file_path(url, parts))

    @property
    def uses_stdout(self) -> bool:
        return self.path is None

    def emit(self, readings: Sequence[Reading]) -> None:
        self._write([reading_line(reading) for reading in readings])

    def emit_events(self, events: Sequence[Event]) -> None:
        self._write([event_line(event) for event in events])

    def flush(self) -> None:
        if not self.pipe_closed:
            try:
                self._stream().flush()
            except BrokenPipeError:
                self._lost_stdout(0)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        else:
            self.flush()

    def _stream(self) -> IO[str]:
        # stdout is looked up at each write: the one in place now (redirected, captured)
        return self._file if self._file is not None else sys.stdout

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        if self.pipe_closed:
            self.dropped_lines += len(lines)
            return
        stream = self._stream()
        try:
            stream.write("".join(line + "\n" for line in lines))
            stream.flush()
        except BrokenPipeError:
            if self._file is not None:
                raise  # a file on a FIFO whose reader left: an error like any other
            self._lost_stdout(len(lines))
            return
        self.written_lines += len(lines)

    def _lost_stdout(self, lines: int) -> None:
        self.pipe_closed = True
        self.dropped_lines += lines
        silence_stdout()
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()  # what was buffered goes to /dev/null now
        log.info("jsonl:-: stdout was closed; further output is dropped")
        if self.on_pipe_closed is not None:
            self.on_pipe_closed()

    def __repr__(self) -> str:
        return f"<JsonLinesSink jsonl:{self.path if self.path is not None else '-'}>"
