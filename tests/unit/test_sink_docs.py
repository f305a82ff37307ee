"""The sink of docs/sinks.md, "Writing a sink", run as a new user would: copied, registered, used.

The example's code block, and its entry point in both the pyproject.toml and
the setup.cfg syntax, are taken from the page itself, installed as a
throwaway distribution in ``tmp_path``, opened by URL and fed by a collector
reading a captured tree; the CSV it writes is read back.
"""

from __future__ import annotations

import configparser
import csv
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import fixture_trees
import pytest

from cgstats import Collector, Event
from cgstats.sinks import open_sink, sink_schemes

pytestmark = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "sinks.md"
MODULE = "cgstats_csv"


def code_blocks(language: str) -> list[str]:
    text = GUIDE.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def example_source() -> str:
    (source,) = [block for block in code_blocks("python") if "class CsvSink(Sink)" in block]
    return source


def documented_entry_points() -> dict[str, str]:
    """The entry points the page registers, from its setup.cfg block (and its pyproject one)."""
    (ini,) = code_blocks("ini")
    parser = configparser.ConfigParser()
    parser.read_string(ini)
    lines = parser["options.entry_points"]["cgstats.sinks"].strip().splitlines()
    from_cfg = dict(line.replace(" ", "").split("=", 1) for line in lines)
    (toml,) = code_blocks("toml")
    if sys.version_info >= (3, 11):
        import tomllib

        from_toml = tomllib.loads(toml)["project"]["entry-points"]["cgstats.sinks"]
        assert from_toml == from_cfg
    return from_cfg


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    site = tmp_path / "site"
    info = site / "cgstats_csv-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cgstats-csv\nVersion: 1.0\n")
    entry_points = "".join(f"{k} = {v}\n" for k, v in documented_entry_points().items())
    (info / "entry_points.txt").write_text("[cgstats.sinks]\n" + entry_points)
    (site / f"{MODULE}.py").write_text(example_source())
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop(MODULE, None)


def test_the_guides_csv_sink_registered_by_its_entry_point(installed: None, tmp_path: Path) -> None:
    assert documented_entry_points() == {"csv": f"{MODULE}:CsvSink"}
    assert "csv" in sink_schemes()
    path = tmp_path / "cgstats.csv"
    sink = open_sink(f"csv://{path}")
    assert type(sink).__name__ == "CsvSink"
    events: list[Event] = []
    root = fixture_trees.root(fixture_trees.available()[0])
    with Collector(root=root, step=1.0, sinks=[sink], on_event=events.append) as collector:
        first, second = collector.tick(), collector.tick()
    assert collector.sink_errors == 0
    with open(path, newline="", encoding="utf-8") as written:
        header, *rows = list(csv.reader(written))
    assert header == ["time", "container", "cpu_cores", "working_set_bytes", "event"]
    assert len(rows) == len(events) + len(first) + len(second)
    event_rows, first_rows, second_rows = (
        rows[: len(events)],
        rows[len(events) : len(events) + len(first)],
        rows[len(events) + len(first) :],
    )
    assert [(r[1], r[4]) for r in event_rows] == [(e.container_id[:12], e.kind) for e in events]
    for row, reading in zip(first_rows + second_rows, first + second):
        assert row[1] == reading.id[:12] and float(row[0]) == pytest.approx(
            reading.sample.timestamp, abs=1e-3
        )
        memory = reading.sample.memory
        expected = memory.working_set_bytes if memory is not None else None
        assert row[3] == ("" if expected is None else str(expected))
    assert all(row[2] == "" for row in first_rows)  # no rate on a first reading
    assert [float(row[2]) for row in second_rows] == [r.rates.cpu_cores for r in second]


def test_the_guides_url_check(installed: None) -> None:
    with pytest.raises(ValueError, match=re.escape("expected csv:///path/to/file.csv")):
        open_sink("csv://somehost/x.csv")
