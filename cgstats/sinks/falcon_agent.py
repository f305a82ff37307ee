"""The falcon agent's HTTP push: readings as Open-Falcon items to ``/v1/push``.

:class:`FalconAgentSink` posts JSON arrays of items (docs/falcon.md) to the
falcon agent on the same host, which forwards them to its transfers. The
agent is local, so nothing is spooled: a failed post raises from
:meth:`FalconAgentSink.emit`, and the collector's worker for the sink counts
and logs it.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

from cgstats.sinks import SinkURLError
from cgstats.sinks.base import Sink
from cgstats.sinks.falcon_metrics import (
    Endpoint,
    SeriesNames,
    Tags,
    falcon_step,
    short_id,
)

if TYPE_CHECKING:
    from cgstats.collector import Reading

log = logging.getLogger("cgstats.sinks.falcon_agent")

DEFAULT_URL = "http://127.0.0.1:1988/v1/push"
DEFAULT_TIMEOUT_S = 15.0  # the agent forwards synchronously to transfers (10 s call timeout)
BATCH_ITEMS = 200  # the transfer's own batch size
# How many distinct (metric, problem) pairs are logged at warning level; then debug.
_LOGGED_PROBLEMS_MAX = 256


class AgentPushError(OSError):
    """A post the agent did not take: connection error, timeout or non-2xx status."""


class FalconAgentSink(Sink):
    """Post each tick's items to the falcon agent's ``/v1/push``.

    ``endpoint`` is a string or a callable of the :class:`~cgstats.Reading`
    (default: the host name). ``tags`` is a dict or a callable of the reading
    returning one; every item also gets ``container=<short id>``, which a
    caller's tags cannot replace. ``step`` is the item step in seconds
    (default: the collector's step, rounded to whole seconds, at least 1).
    ``timeout_s`` bounds the connect and each response (s). Items go out in
    posts of at most ``batch_items``; an item that fails
    :func:`~cgstats.sinks.falcon_metrics.item_problem` is counted, logged and
    not sent. :meth:`emit` raises :class:`AgentPushError` when a post fails;
    the rest of that tick's items are then not sent either (counted in
    ``failed_items``).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        endpoint: Endpoint = None,
        tags: Tags = None,
        *,
        step: Optional[float] = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        batch_items: int = BATCH_ITEMS,
    ) -> None:
        self.url = url
        self._host, self._port, self._path = _http_target(url)
        self._names = SeriesNames(endpoint, tags)
        self.endpoint = self._names.endpoint
        self.tags = self._names.tags
        self.step = None if step is None else falcon_step(step)
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number of seconds, not {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        if isinstance(batch_items, bool) or not isinstance(batch_items, int) or batch_items < 1:
            raise ValueError(f"batch_items must be an int >= 1, not {batch_items!r}")
        self.batch_items = batch_items
        self._collector_step: Optional[int] = None
        self._connection: Optional[http.client.HTTPConnection] = None
        self._logged_problems: set[tuple[str, str]] = set()
        self._counts = dict.fromkeys(
            ("posts", "items", "invalid", "errors", "failures", "failed_items"), 0
        )

    def __repr__(self) -> str:
        return f"FalconAgentSink({self.url!r})"

    @classmethod
    def from_url(cls, url: str) -> FalconAgentSink:
        """``falcon-agent://[HOST[:PORT]][?endpoint=&tags=&step=&timeout_s=&path=]``.

        Host and port default to ``127.0.0.1:1988``, ``path`` to ``/v1/push``;
        ``tags`` is ``k=v`` pairs joined by ``,``. Raises
        :class:`~cgstats.sinks.SinkURLError` for anything malformed.
        """
        try:
            return cls(**_url_options(url))
        except (ValueError, TypeError) as error:
            raise SinkURLError(f"{url!r}: {error}") from None

    # -- the Sink interface --------------------------------------------------------

    def open(self, step: float) -> None:
        """Take the collector's step (s), used unless the sink was given one."""
        self._collector_step = falcon_step(step)

    def emit(self, readings: Sequence[Reading]) -> None:
        """Post the items of ``readings``; :class:`AgentPushError` if a post fails."""
        step = self.step or self._collector_step
        if step is None:
            raise RuntimeError("FalconAgentSink: call open(step) first, or give step=")
        items = []
        for reading in readings:
            try:
                good, bad = self._names.items_of(reading, step)
            except Exception as error:  # a caller's callable failed: skip this container only
                self._counts["errors"] += 1
                self._log_problem(reading.id, "endpoint/tags", f"{type(error).__name__}: {error}")
                continue
            items.extend(good)
            for metric, problem in bad:
                self._counts["invalid"] += 1
                self._log_problem(reading.id, metric, problem)
        for start in range(0, len(items), self.batch_items):
            batch = items[start : start + self.batch_items]
            try:
                self._post(json.dumps(batch, allow_nan=False).encode())
            except AgentPushError:
                self._counts["failures"] += 1
                self._counts["failed_items"] += len(items) - start
                raise
            self._counts["posts"] += 1
            self._counts["items"] += len(batch)

    def close(self) -> None:
        """Close the connection to the agent."""
        self._disconnect()

    def stats(self) -> dict[str, int]:
        """Counters since the sink was made.

        ``posts`` and ``items`` delivered, ``invalid`` items not sent,
        ``errors`` readings skipped because an endpoint or tags callable
        raised, ``failures`` posts that failed and ``failed_items`` the items
        they and the rest of their tick held.
        """
        return dict(self._counts)

    # -- internals -------------------------------------------------------------------

    def _log_problem(self, container_id: str, what: str, problem: str) -> None:
        """Warn once per kind of problem (then debug): an invalid item recurs every tick."""
        kind = (what, problem)
        if kind in self._logged_problems:
            log.debug("%s: %s: %s", short_id(container_id), what, problem)
            return
        if len(self._logged_problems) < _LOGGED_PROBLEMS_MAX:
            self._logged_problems.add(kind)
        log.warning("%s: %s: %s (not sent; counted)", short_id(container_id), what, problem)

    def _post(self, body: bytes) -> None:
        """One POST; a kept-alive connection the agent has dropped is retried once, fresh."""
        reused = self._connection is not None
        try:
            try:
                self._request(body)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
                self._disconnect()
                self._request(body)  # a duplicate is harmless: same series, same timestamp
        except AgentPushError:
            self._disconnect()
            raise
        except (OSError, http.client.HTTPException) as error:
            self._disconnect()
            raise AgentPushError(f"{self.url}: {type(error).__name__}: {error}") from error

    def _request(self, body: bytes) -> None:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(
                self._host, self._port, timeout=self.timeout_s
            )
        connection = self._connection
        connection.request(
            "POST", self._path, body=body, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        text = response.read()
        if response.will_close:
            self._disconnect()
        if not 200 <= response.status < 300:
            raise AgentPushError(
                f"{self.url}: the agent answered {response.status} {response.reason}: "
                f"{text[:200].decode('utf-8', 'replace').strip()}"
            )

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _http_target(url: str) -> tuple[str, int, str]:
    """(host, port, path with query) of an ``http://`` URL; ValueError otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"the agent's URL is http://HOST:PORT/PATH, not {url!r}")
    try:
        port = parts.port or 80
    except ValueError as error:
        raise ValueError(f"bad port in {url!r}: {error}") from None
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, path


def _parse_tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for piece in text.split(","):
        key, equals, value = piece.partition("=")
        if not equals or not key or not value:
            raise ValueError(f"tag {piece!r} is not key=value (in {text!r})")
        if key in tags:
            raise ValueError(f"tag {key!r} given twice (in {text!r})")
        tags[key] = value
    return tags


def _parse_timeout(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"timeout_s must be a number of seconds, not {text!r}") from None


def _parse_step(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"step must be a number of seconds, not {text!r}") from None


_URL_PARAMETERS: dict[str, Callable[[str], Any]] = {
    "endpoint": str,
    "tags": _parse_tags,
    "step": _parse_step,
    "timeout_s": _parse_timeout,
    "path": str,
}


def _url_options(url: str) -> dict[str, Any]:
    """The keyword arguments of :class:`FalconAgentSink` a ``falcon-agent://`` URL names."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise ValueError(f"malformed URL: {error}") from None
    if parts.scheme.lower() != "falcon-agent":
        raise ValueError(f"not a falcon-agent:// URL (scheme {parts.scheme!r})")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError("a falcon-agent URL has no path or #fragment; options go after '?'")
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    options: dict[str, Any] = {}
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if parts.query and not pairs:
        raise ValueError(f"cannot parse the query {parts.query!r}")
    for name, value in pairs:
        parse = _URL_PARAMETERS.get(name)
        if parse is None:
            known = ", ".join(sorted(_URL_PARAMETERS))
            raise ValueError(f"unknown parameter {name!r}; known: {known}")
        if name in options:
            raise ValueError(f"parameter {name!r} given twice")
        options[name] = parse(value)
    path = options.pop("path", "/v1/push")
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/', not {path!r}")
    options["url"] = f"http://{host}:{port or 1988}{path}"
    return options
