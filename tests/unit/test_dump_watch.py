"""``python -m cgstats.dump --watch`` on trees captured from real kernels.

A captured tree does not change between reads, so every computed rate is
exactly zero: what these tests check is the shape, the count and the exits.
"""

from __future__ import annotations

import json
from typing import Any

import fixture_trees
import pytest
from test_rates import REQUIRED_KEYS

from cgstats import dump

pytestmark = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")


@pytest.fixture(params=fixture_trees.available() or ["none"])
def tree(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def watch(capsys: pytest.CaptureFixture[str], tree: str, *args: str) -> tuple[int, str, str]:
    code = dump.main(["--root", fixture_trees.root(tree), "--watch", "--step", "0.05", *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def test_json_lines_add_rates_to_the_core_contract(
    capsys: pytest.CaptureFixture[str], tree: str
) -> None:
    data: dict[str, Any] = fixture_trees.capture(tree)
    main = fixture_trees.container(data, "main")
    code, out, _err = watch(capsys, tree, "--json", "--count", "3", main["short_id"])
    assert code == 0
    documents = [json.loads(line) for line in out.splitlines()]
    assert [d["id"] for d in documents] == [main["id"]] * 3
    first, *later = documents
    assert first["rates"].keys() >= REQUIRED_KEYS and first["reset"] is False
    assert all(first["rates"][key] is None for key in REQUIRED_KEYS)
    assert [e["kind"] for e in first["events"]] == ["appeared"]
    for document in later:
        rates = document["rates"]
        assert rates["interval_s"] > 0
        assert rates["cpu_cores"] == 0.0 and rates["net_rx_bytes_per_s"] == 0.0
        assert rates["blkio_read_bytes_per_s"] == 0.0 and rates["pgfault_per_s"] == 0.0
        assert "events" not in document


def test_table_for_people(capsys: pytest.CaptureFixture[str], tree: str) -> None:
    code, out, _err = watch(capsys, tree, "--count", "2", "--all")
    assert code == 0
    blocks = [block for block in out.split("\n\n") if block.strip()]
    assert len(blocks) == 2
    header, *rows = blocks[1].splitlines()
    assert header.split()[:4] == ["CONTAINER", "RUNTIME", "CPU", "CPU%"]
    assert len(rows) == len(fixture_trees.capture(tree)["containers"]) - sum(
        not c["expect_container"] for c in fixture_trees.capture(tree)["containers"]
    )
    assert any(" 0.00 " in row for row in rows)


@pytest.mark.parametrize(
    "args",
    [["--count", "0"], ["--count", "x"], ["--step", "0"], ["--step", "nan"], ["--step", "soon"]],
)
def test_bad_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tree: str, args: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        dump.main(["--root", fixture_trees.root(tree), "--watch", *args, "--all"])
    assert exit_.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "status"), [("0" * 64, 1), ("../../etc", 2), ("abc", 2)])
def test_bad_names_fail_before_watching(
    capsys: pytest.CaptureFixture[str], tree: str, name: str, status: int
) -> None:
    code, out, err = watch(capsys, tree, "--count", "1", name)
    assert code == status and out == "" and err.count("\n") == 1 and err.startswith("cgstats: ")


def test_count_needs_watch(capsys: pytest.CaptureFixture[str], tree: str) -> None:
    with pytest.raises(SystemExit):
        dump.main(["--root", fixture_trees.root(tree), "--count", "2", "--all"])
    assert "--count needs --watch" in capsys.readouterr().err
