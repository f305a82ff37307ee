"""The Open-Falcon sink's spool: file format, directory index, byte cap, damaged files.

Spooled items are real ones: readings built on samples cgstats read from the
captured fixture trees (tests/unit/samples.py), turned into items by
:func:`cgstats.sinks.falcon_metrics.reading_items`. Damage is done to real
spool files: cut short, overwritten with garbage, left half-written.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Any

import fixture_trees
import pytest
from hypothesis import given
from hypothesis import strategies as st
from unit.samples import advance, captured

from cgstats import Reading, rates
from cgstats.sinks import _spool
from cgstats.sinks._spool import Spool, SpoolBusy, SpoolCorrupt
from cgstats.sinks.falcon_metrics import format_tags, reading_items

Unit = tuple[str, list[dict[str, Any]]]

# docs/falcon-deploy.md sizes the spool with this many bytes per item.
DOC_BYTES_PER_ITEM = 48


def container_id(n: int) -> str:
    return f"{n:064x}"


def real_units(count: int, *, tick: int = 0) -> list[Unit]:
    """The items of ``count`` containers' readings at one tick, as the sink spools them."""
    tree = fixture_trees.available()[0]
    first = captured(tree)
    later = advance(first, cpu_ns=2_000_000_000, read_bytes=1 << 20, timestamp_s=10.0 + 60 * tick)
    computed, _ = rates.compute(first, later, 10.0, 2)
    units = []
    for n in range(count):
        ident = container_id(n)
        reading = Reading(later, computed, net_counted=True)
        tags = format_tags({"app": "web", "env": "prod", "container": ident[:12]})
        units.append((ident, reading_items(reading, endpoint="web-01.example", tags=tags, step=60)))
    return units


def write_one(spool: Spool, units: list[Unit]) -> _spool.SpoolFile:
    """Write ``units``, which must fit in one file."""
    result = spool.write(units)
    assert len(result.written) == 1 and result.unwritten_items == 0
    return result.written[0]


pytestmark = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")


def test_a_file_holds_exactly_what_was_written(tmp_path: Any) -> None:
    units = real_units(5)
    spool = Spool(str(tmp_path), 1 << 20)
    result = spool.write(units)
    assert len(result.written) == 1 and result.removed == () and result.unwritten_items == 0
    (file,) = result.written
    assert file.items == sum(len(items) for _key, items in units)
    assert sorted(os.listdir(tmp_path)) == sorted([_spool.LOCK_NAME, file.name])
    assert spool.load(file) == units
    spool.remove(file)
    assert spool.files == [] and os.listdir(tmp_path) == [_spool.LOCK_NAME]


def test_bytes_per_item_is_what_the_deployment_guide_says(tmp_path: Any) -> None:
    """100 containers' readings in one real spool file: the figure docs/falcon-deploy.md uses."""
    units = real_units(100)
    spool = Spool(str(tmp_path), 1 << 30)
    written = write_one(spool, units)
    assert written is not None
    size = os.path.getsize(os.path.join(tmp_path, written.name))
    assert size == written.size_bytes == spool.total_bytes
    per_item = size / written.items
    assert per_item <= DOC_BYTES_PER_ITEM, f"{per_item:.1f} bytes per item"


def test_names_sort_by_age_and_survive_a_reopen(tmp_path: Any) -> None:
    spool = Spool(str(tmp_path), 1 << 20)
    written = [write_one(spool, real_units(1, tick=n)) for n in range(4)]
    spool.close()
    reopened = Spool(str(tmp_path), 1 << 20)
    assert reopened.files == written == sorted(written, key=lambda f: f.name)
    later = write_one(reopened, real_units(1, tick=9))
    assert later is not None and later.name > max(f.name for f in written if f is not None)
    oldest = reopened.oldest()
    assert oldest is not None and reopened.load(oldest) == real_units(1, tick=0)


def test_the_cap_removes_the_oldest_files_first(tmp_path: Any) -> None:
    one = len(_spool.encode(real_units(2)))
    spool = Spool(str(tmp_path), 3 * one + one // 2)  # room for three files
    written = [spool.write(real_units(2, tick=n)) for n in range(5)]
    assert [r.removed for r in written[:3]] == [(), (), ()]
    assert written[3].removed == written[0].written
    assert written[4].removed == written[1].written
    assert spool.files == [file for r in written[2:] for file in r.written]
    assert spool.total_bytes <= spool.max_bytes
    assert spool.total_items == 3 * sum(len(items) for _key, items in real_units(2))


def test_a_file_being_replayed_is_not_removed_by_the_cap(tmp_path: Any) -> None:
    one = len(_spool.encode(real_units(2)))
    spool = Spool(str(tmp_path), 2 * one + one // 2)
    first = write_one(spool, real_units(2, tick=0))
    second = write_one(spool, real_units(2, tick=1))
    assert first is not None and second is not None
    spool.load(first)  # pinned while it replays
    assert spool.oldest() == second
    third = spool.write(real_units(2, tick=2))
    assert third.removed == (second,)
    assert spool.files == [first, *third.written]
    spool.unpin(first)
    assert spool.oldest() == first


def test_a_chunk_over_the_cap_is_split_and_keeps_its_newest_units(tmp_path: Any) -> None:
    units = real_units(6)
    one = len(_spool.encode(units[:2]))
    spool = Spool(str(tmp_path), one + one // 4)  # room for two units and a bit
    result = spool.write(units)
    assert result.unwritten_items == 0 and len(result.written) > 1
    kept = [unit for file in spool.files for unit in spool.load(file)]
    assert kept == units[len(units) - len(kept) :] and len(kept) == 2
    assert sum(f.items for f in result.removed) == sum(len(i) for _k, i in units[:-2])
    assert spool.total_bytes <= spool.max_bytes


def test_one_unit_over_the_cap_by_itself_is_not_written(tmp_path: Any) -> None:
    units = real_units(3)
    spool = Spool(str(tmp_path), len(_spool.encode(units[:1])) - 1)
    result = spool.write(units)
    assert result == _spool.WriteResult((), (), sum(len(items) for _key, items in units))
    assert spool.files == []


def test_a_truncated_file_is_skipped_with_a_warning(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(str(tmp_path), 1 << 20)
    good = write_one(spool, real_units(2, tick=0))
    cut = write_one(spool, real_units(2, tick=1))
    assert good is not None and cut is not None
    path = spool.path(cut)
    with open(path, "r+b") as handle:
        handle.truncate(cut.size_bytes // 2)
    with (
        caplog.at_level(logging.WARNING, logger="cgstats.sinks.falcon"),
        pytest.raises(SpoolCorrupt),
    ):
        spool.load(cut)
    assert "skipped" in caplog.text and cut.name in caplog.text
    assert spool.files == [good] and spool.corrupt_files == 1
    assert os.path.exists(path + _spool.CORRUPT_SUFFIX) and not os.path.exists(path)
    assert spool.load(good) == real_units(2, tick=0)


def test_garbage_inside_a_file_is_caught_by_its_checksum(tmp_path: Any) -> None:
    spool = Spool(str(tmp_path), 1 << 20)
    file = write_one(spool, real_units(3))
    assert file is not None
    with open(spool.path(file), "r+b") as handle:
        handle.seek(file.size_bytes - 200)
        handle.write(b"\x00garbage\xff" * 10)
    with pytest.raises(SpoolCorrupt, match="checksum"):
        spool.load(file)
    assert spool.files == []


@pytest.mark.parametrize(
    "damage",
    ["truncate-header", "garbage", "empty", "size", "other-format"],
)
def test_damaged_files_found_at_start_are_set_aside(
    tmp_path: Any, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(str(tmp_path), 1 << 20)
    kept = write_one(spool, real_units(1, tick=0))
    bad = write_one(spool, real_units(1, tick=1))
    assert kept is not None and bad is not None
    spool.close()
    path = os.path.join(tmp_path, bad.name)
    with open(path, "rb") as handle:
        data = handle.read()
    damaged = {
        "truncate-header": data[:10],
        "garbage": os.urandom(len(data)),
        "empty": b"",
        "size": data + b"more",
        "other-format": _spool.msgpack.packb({"format": "something else", "version": 1}),
    }[damage]
    with open(path, "wb") as handle:
        handle.write(damaged)
    with caplog.at_level(logging.WARNING, logger="cgstats.sinks.falcon"):
        reopened = Spool(str(tmp_path), 1 << 20)
    assert reopened.files == [kept]
    assert reopened.corrupt_files == 1 and bad.name in caplog.text
    assert sorted(os.listdir(tmp_path)) == sorted(
        [_spool.LOCK_NAME, kept.name, bad.name + _spool.CORRUPT_SUFFIX]
    )


def test_a_write_interrupted_before_the_rename_leaves_a_partial_that_is_set_aside(
    tmp_path: Any,
) -> None:
    data = _spool.encode(real_units(2))
    partial = os.path.join(tmp_path, f".{1:020d}.spool.tmp")
    with open(partial, "wb") as handle:
        handle.write(data[: len(data) // 3])  # what a crash mid-write leaves
    spool = Spool(str(tmp_path), 1 << 20)
    assert spool.files == [] and spool.corrupt_files == 1
    assert os.path.exists(os.path.join(tmp_path, f"{1:020d}.spool.corrupt"))
    written = write_one(spool, real_units(1))
    assert written is not None and not written.name.startswith(".")


def test_one_holder_per_directory(tmp_path: Any) -> None:
    first = Spool(str(tmp_path), 1 << 20)
    with pytest.raises(SpoolBusy):
        Spool(str(tmp_path), 1 << 20)
    first.close()
    Spool(str(tmp_path), 1 << 20).close()


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_number = st.one_of(
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
_item = st.fixed_dictionaries(
    {
        "endpoint": _text,
        "metric": _text,
        "value": _number,
        "step": st.integers(min_value=1, max_value=86400),
        "counterType": st.sampled_from(["GAUGE", "COUNTER", "DERIVE"]),
        "tags": _text,
        "timestamp": st.integers(min_value=1, max_value=1 << 40),
    }
)


@given(st.lists(st.tuples(_text, st.lists(_item, max_size=8)), max_size=6))
def test_any_items_round_trip(units: list[Unit]) -> None:
    decoded = _spool.decode(_spool.encode(units))
    assert [key for key, _ in decoded] == [key for key, _ in units]
    for (_, got), (_, sent) in zip(decoded, units):
        assert sorted(map(_comparable, got)) == sorted(map(_comparable, sent))


def _comparable(item: dict[str, Any]) -> tuple[Any, ...]:
    value = item["value"]
    return (*(item[k] for k in sorted(item) if k != "value"), repr(value), math.copysign(1, value))


@given(st.binary(max_size=300))
def test_no_byte_string_crashes_the_decoder(data: bytes) -> None:
    with contextlib.suppress(SpoolCorrupt):
        _spool.decode(data)  # anything else raised fails the test
