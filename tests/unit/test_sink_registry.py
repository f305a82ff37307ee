"""``open_sink``: URLs to sinks, through built-ins and real entry points (group ``cgstats.sinks``).

The third-party sinks are throwaway distributions written into ``tmp_path``
(a ``*.dist-info`` with METADATA and entry_points.txt, and a module), put on
``sys.path``: what ``importlib.metadata`` finds there is exactly what it
finds for an installed wheel.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import cgstats.sinks
from cgstats.sinks import SinkLoadError, SinkURLError, open_sink, sink_schemes, url_scheme

MODULE = "cgstats_test_mysink"

MODULE_SOURCE = '''
from cgstats.sinks import Sink


class MySink(Sink):
    def __init__(self, url):
        self.url = url

    @classmethod
    def from_url(cls, url):
        return cls(url)

    def emit(self, readings):
        pass


class Plain:
    """Not a Sink subclass and no from_url: called with the URL."""

    def __init__(self, url):
        self.url = url

    def emit(self, readings):
        pass


def make(url):
    return MySink("made:" + url)


def not_a_sink(url):
    return 42


VALUE = 42
'''


def write_distribution(
    where: Path, name: str, entry_points: dict[str, str], module_source: str = ""
) -> None:
    """A distribution as pip leaves it in site-packages: its dist-info and its module."""
    info = where / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = [f"{scheme} = {target}" for scheme, target in entry_points.items()]
    (info / "entry_points.txt").write_text("[cgstats.sinks]\n" + "\n".join(lines) + "\n")
    if module_source:
        (where / f"{MODULE}.py").write_text(textwrap.dedent(module_source))


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The throwaway distribution ``cgstats-test-mysink`` on sys.path."""
    site = tmp_path / "site"
    write_distribution(
        site,
        "cgstats-test-mysink",
        {
            "myscheme": f"{MODULE}:MySink",
            "my-factory": f"{MODULE}:make",
            "plain": f"{MODULE}:Plain",
            "broken": "cgstats_test_no_such_module:Thing",
            "notasink": f"{MODULE}:not_a_sink",
            "notcallable": f"{MODULE}:VALUE",
            "msgpack": f"{MODULE}:MySink",  # a built-in name: must be ignored
        },
        MODULE_SOURCE,
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(cgstats.sinks, "_warned", set())
    yield site
    sys.modules.pop(MODULE, None)


def test_an_entry_point_class_is_built_by_from_url(installed: Path) -> None:
    sink = open_sink("myscheme://collector.example:9000/path?x=1")
    assert type(sink).__name__ == "MySink" and type(sink).__module__ == MODULE
    assert sink.url == "myscheme://collector.example:9000/path?x=1"  # type: ignore[attr-defined]
    assert isinstance(sink, cgstats.sinks.Sink)


def test_an_entry_point_callable_or_plain_class_is_called_with_the_url(installed: Path) -> None:
    made = open_sink("My-Factory:anything")  # schemes match case-insensitively
    assert made.url == "made:My-Factory:anything"  # type: ignore[attr-defined]
    plain = open_sink("plain:x")
    assert type(plain).__name__ == "Plain" and plain.url == "plain:x"  # type: ignore[attr-defined]


def test_registered_schemes_are_listed_after_the_built_ins(installed: Path) -> None:
    schemes = sink_schemes()
    builtins = sorted(cgstats.sinks.BUILTIN_SINKS)
    assert schemes[: len(builtins)] == builtins
    assert {"myscheme", "my-factory", "plain", "broken"} <= set(schemes[len(builtins) :])
    assert schemes.count("msgpack") == 1


def test_an_entry_point_named_like_a_built_in_is_ignored_with_a_warning(
    installed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cgstats.sinks")
    sink = open_sink("msgpack:-")  # the built-in, not the distribution's MySink
    assert type(sink).__module__ == "cgstats.sinks.msgpack_stream"
    sink_schemes()
    warnings = [r.getMessage() for r in caplog.records if "built in" in r.getMessage()]
    assert warnings == [
        "distribution 'cgstats-test-mysink' registers sink scheme 'msgpack', "
        "which is built in: ignored"
    ]  # once per process, not on every scan


def test_an_entry_point_that_fails_to_load_names_its_distribution(installed: Path) -> None:
    with pytest.raises(SinkLoadError) as error:
        open_sink("broken://x")
    message = str(error.value)
    assert "'cgstats-test-mysink'" in message and "cgstats_test_no_such_module:Thing" in message
    assert "ModuleNotFoundError" in message


@pytest.mark.parametrize("scheme", ["notasink", "notcallable"])
def test_an_entry_point_that_gives_no_sink_is_a_load_error(installed: Path, scheme: str) -> None:
    with pytest.raises(SinkLoadError, match=scheme):
        open_sink(f"{scheme}:x")


def test_two_distributions_with_one_scheme_the_first_on_the_path_wins(
    installed: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    later = tmp_path / "later"
    write_distribution(later, "cgstats-test-rival", {"myscheme": "cgstats_test_rival:Rival"})
    monkeypatch.syspath_prepend(str(installed))  # installed stays first: later goes after it
    monkeypatch.setattr(sys, "path", [*sys.path, str(later)])
    caplog.set_level(logging.WARNING, logger="cgstats.sinks")
    assert type(open_sink("myscheme:x")).__name__ == "MySink"
    assert any(
        "'cgstats-test-rival' registers sink scheme 'myscheme', already registered by "
        "'cgstats-test-mysink'" in r.getMessage()
        for r in caplog.records
    )


def test_an_unknown_scheme_lists_the_known_ones(installed: Path) -> None:
    with pytest.raises(SinkURLError) as error:
        open_sink("statsd://127.0.0.1:8125")
    assert isinstance(error.value, ValueError)
    message = str(error.value)
    assert "unknown sink scheme 'statsd'" in message
    assert "jsonl" in message and "falcon-agent" in message and "myscheme" in message


@pytest.mark.parametrize("url", ["", "   ", "/var/log/cgstats.jsonl", "://x", "-", "1abc:x"])
def test_a_string_without_a_scheme_is_no_sink_url(url: str) -> None:
    with pytest.raises(SinkURLError, match="not a sink URL"):
        open_sink(url)


def test_a_url_must_be_a_string() -> None:
    with pytest.raises(SinkURLError, match="is a str"):
        url_scheme(b"jsonl:-")  # type: ignore[arg-type]


def test_a_built_in_that_cannot_be_imported_is_a_load_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(cgstats.sinks.BUILTIN_SINKS, "gone", "cgstats.sinks.no_such:GoneSink")
    with pytest.raises(SinkLoadError, match=r"built-in sink 'gone' \(cgstats.sinks.no_such"):
        open_sink("gone://x")


def test_built_ins_resolve_lazily_from_the_table() -> None:
    for scheme, target in cgstats.sinks.BUILTIN_SINKS.items():
        module, _, name = target.partition(":")
        assert module.startswith("cgstats.sinks.") and name.endswith("Sink"), scheme
    assert url_scheme(" JSONL:- ") == "jsonl"


def test_importing_cgstats_imports_no_sink_module() -> None:
    code = (
        "import sys, cgstats, cgstats.sinks\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('cgstats.sinks'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cgstats.sinks", "cgstats.sinks._worker", "cgstats.sinks.base"]
