"""Where the built-in stream sinks write: URL parts to paths and addresses, and stdout.

Pure parsing of ``scheme:-``, ``scheme:///path``, ``scheme://host:port`` and
``?name=value`` options (raising :class:`~cgstats.sinks.SinkURLError`), plus
the one piece of I/O they share: giving up quietly on a stdout whose reader
went away.
"""

from __future__ import annotations

import logging
import math
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from cgstats.sinks import SinkURLError

log = logging.getLogger("cgstats.sinks")

STDOUT = "-"


def split(url: str) -> urllib.parse.SplitResult:
    """``url`` split into its parts; :class:`SinkURLError` for one urllib rejects."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018  (validates a port, if there is one)
    except ValueError as error:
        raise SinkURLError(f"malformed sink URL {url!r}: {error}") from None
    if parts.fragment:
        raise SinkURLError(f"a sink URL has no #fragment: {url!r}")
    return parts


def file_path(url: str, parts: urllib.parse.SplitResult) -> str:
    """The file a ``scheme:PATH`` URL names: ``-`` (stdout), ``///abs``, ``/abs`` or ``rel``."""
    if parts.netloc:
        raise SinkURLError(
            f"{url!r} names a host ({parts.netloc!r}); a file is scheme:///absolute/path, "
            "scheme:relative/path or scheme:- (stdout)"
        )
    path = urllib.parse.unquote(parts.path)
    if not path:
        raise SinkURLError(f"{url!r} names no file (scheme:///path, or scheme:- for stdout)")
    return path


def host_port(url: str, parts: urllib.parse.SplitResult) -> tuple[str, int]:
    """The ``host:port`` of a network sink URL (IPv6 literals in brackets)."""
    if not parts.hostname or parts.port is None:
        raise SinkURLError(f"{url!r} needs host:port, e.g. {parts.scheme}://127.0.0.1:24224")
    if parts.path not in ("", "/") or parts.username or parts.password:
        raise SinkURLError(f"{url!r}: only host:port (and ?options) are allowed")
    return parts.hostname, parts.port


def options(
    url: str, parts: urllib.parse.SplitResult, known: Mapping[str, Callable[[str], Any]]
) -> dict[str, Any]:
    """The ``?name=value`` options, each converted by ``known[name]``; others are errors."""
    found: dict[str, Any] = {}
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if name not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise SinkURLError(f"unknown option {name!r} in {url!r} (known: {allowed})")
        try:
            found[name] = known[name](value)
        except ValueError as error:
            raise SinkURLError(f"option {name}={value!r} in {url!r}: {error}") from None
    return found


def seconds(text: str) -> float:
    """A non-negative, finite number of seconds."""
    value = float(text)
    if not value >= 0 or math.isinf(value):
        raise ValueError("not a non-negative number of seconds")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value
