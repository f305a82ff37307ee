"""Sinks: where the collector's readings and events go, named by URL.

:class:`Sink` is the interface (see :mod:`cgstats.sinks.base`);
:func:`open_sink` builds a sink from a URL such as ``jsonl:-`` or
``msgpack+tcp://127.0.0.1:24224``; :func:`sink_schemes` lists the schemes
known here. Built-in schemes come from :data:`BUILTIN_SINKS` and are imported
only when used. Other distributions add schemes through the entry-point
group ``cgstats.sinks``: the entry point's name is the URL scheme, its object
a class with a ``from_url(url)`` classmethod (a :class:`Sink` subclass) or any
callable taking the URL and returning a sink.

Rules (docs/sinks.md): a scheme is matched case-insensitively; a built-in
scheme always wins over an entry point of the same name (which is ignored,
with a warning naming its distribution); when two distributions register one
scheme, the first on ``sys.path`` wins, with a warning. An unknown scheme or
a string that is no URL raises :class:`SinkURLError` (a :class:`ValueError`);
an entry point or built-in module that cannot be imported raises
:class:`SinkLoadError` naming the distribution. What ``from_url`` itself
raises (a :class:`SinkURLError` for options it rejects, :class:`OSError` for
a file it cannot open) reaches the caller unchanged.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from importlib import metadata
from typing import Any, NamedTuple

from cgstats.sinks.base import Sink

__all__ = [
    "BUILTIN_SINKS",
    "ENTRY_POINT_GROUP",
    "Sink",
    "SinkLoadError",
    "SinkURLError",
    "open_sink",
    "sink_schemes",
    "url_scheme",
]

log = logging.getLogger("cgstats.sinks")

ENTRY_POINT_GROUP = "cgstats.sinks"

#: Built-in URL schemes and the ``module:Class`` that builds each (imported when used).
BUILTIN_SINKS: dict[str, str] = {
    "jsonl": "cgstats.sinks.jsonl:JsonLinesSink",
    "msgpack": "cgstats.sinks.msgpack_stream:MsgpackSink",
    "msgpack+tcp": "cgstats.sinks.msgpack_stream:MsgpackSink",
    "msgpack+udp": "cgstats.sinks.msgpack_stream:MsgpackSink",
    "msgpack+unix": "cgstats.sinks.msgpack_stream:MsgpackSink",
    "falcon": "cgstats.sinks.falcon:FalconSink",
    "falcon-agent": "cgstats.sinks.falcon_agent:FalconAgentSink",
}

# RFC 3986 scheme: a letter, then letters, digits, "+", "-", ".".
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(.*)", re.DOTALL)

_warned: set[tuple[str, str]] = set()  # (scheme, distribution) pairs already warned about


class SinkURLError(ValueError):
    """A sink URL that cannot be used: no scheme, an unknown scheme, or bad options."""


class SinkLoadError(ImportError):
    """The code a sink scheme names could not be imported, or did not give a sink."""


class _Registered(NamedTuple):
    scheme: str
    distribution: str
    entry_point: metadata.EntryPoint


def url_scheme(url: str) -> str:
    """The scheme of a sink URL, lower-cased; :class:`SinkURLError` if it has none."""
    if not isinstance(url, str):
        raise SinkURLError(f"a sink URL is a str, not {type(url).__name__}")
    match = _SCHEME.fullmatch(url.strip())
    if match is None:
        raise SinkURLError(
            f"not a sink URL: {url!r} (expected scheme:..., one of {', '.join(sink_schemes())})"
        )
    return match.group(1).lower()


def sink_schemes() -> list[str]:
    """Every scheme :func:`open_sink` knows: built-ins, then registered ones, sorted."""
    registered = _registered()
    return sorted(BUILTIN_SINKS) + sorted(set(registered) - set(BUILTIN_SINKS))


def open_sink(url: str) -> Sink:
    """Build the sink ``url`` names: a built-in scheme or an entry point's.

    Raises :class:`SinkURLError` for a malformed URL or unknown scheme,
    :class:`SinkLoadError` when the scheme's code cannot be imported, and
    whatever the sink's ``from_url`` raises for options or targets it rejects.
    """
    scheme = url_scheme(url)
    registered = _registered()
    if scheme in BUILTIN_SINKS:
        factory = _builtin_factory(scheme)
    elif scheme in registered:
        factory = _entry_point_factory(registered[scheme])
    else:
        raise SinkURLError(
            f"unknown sink scheme {scheme!r} in {url!r}; known: {', '.join(sink_schemes())}"
        )
    sink: Sink = factory(url.strip())
    if not callable(getattr(sink, "emit", None)):
        raise SinkLoadError(f"the {scheme!r} sink factory returned {sink!r}, which has no emit()")
    return sink


def _builtin_factory(scheme: str) -> Callable[[str], Any]:
    module_name, _, class_name = BUILTIN_SINKS[scheme].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise SinkLoadError(
            f"built-in sink {scheme!r} ({BUILTIN_SINKS[scheme]}) cannot be loaded: "
            f"{type(error).__name__}: {error}"
        ) from error
    return _factory_of(cls)


def _entry_point_factory(entry: _Registered) -> Callable[[str], Any]:
    try:
        target = entry.entry_point.load()
    except Exception as error:  # anything the third-party module raises on import
        raise SinkLoadError(
            f"sink scheme {entry.scheme!r} of distribution {entry.distribution!r} "
            f"({entry.entry_point.value}) cannot be loaded: {type(error).__name__}: {error}"
        ) from error
    if not callable(target):
        raise SinkLoadError(
            f"sink scheme {entry.scheme!r} of distribution {entry.distribution!r} "
            f"({entry.entry_point.value}) is {target!r}: neither a sink class nor a callable"
        )
    return _factory_of(target)


def _factory_of(target: Any) -> Callable[[str], Any]:
    """``target.from_url`` for a sink class, else ``target`` itself (a callable ``url -> sink``)."""
    from_url = getattr(target, "from_url", None) if isinstance(target, type) else None
    factory: Callable[[str], Any] = from_url if callable(from_url) else target
    return factory


def _registered() -> dict[str, _Registered]:
    """Entry points of the group by (lower-cased) scheme; built-in names are warned about.

    Walks the distributions itself (rather than ``entry_points(group=...)``)
    so that each entry point's distribution is known on Python 3.9 too.
    """
    found: dict[str, _Registered] = {}
    seen_distributions: set[str] = set()
    try:
        distributions = list(metadata.distributions())
    except Exception:  # a broken site-packages must not break the built-in sinks
        log.warning("cannot list installed distributions for sinks", exc_info=True)
        return found
    for distribution in distributions:
        try:
            name = distribution.metadata["Name"] or "?"
            entry_points = [ep for ep in distribution.entry_points if ep.group == ENTRY_POINT_GROUP]
        except Exception:
            log.warning("cannot read the entry points of %s", distribution, exc_info=True)
            continue
        key = _normalized(name)
        if key in seen_distributions:
            continue  # the same distribution again, later on sys.path: shadowed, as by import
        seen_distributions.add(key)
        for entry_point in entry_points:
            scheme = entry_point.name.lower()
            if scheme in BUILTIN_SINKS:
                _warn_once(
                    scheme,
                    name,
                    "distribution %r registers sink scheme %r, which is built in: ignored",
                )
            elif scheme in found:
                _warn_once(
                    scheme,
                    name,
                    f"distribution %r registers sink scheme %r, already registered by "
                    f"{found[scheme].distribution!r}: ignored",
                )
            else:
                found[scheme] = _Registered(scheme, name, entry_point)
    return found


def _warn_once(scheme: str, distribution: str, message: str) -> None:
    if (scheme, distribution) not in _warned:
        _warned.add((scheme, distribution))
        log.warning(message, distribution, scheme)


def _normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()
