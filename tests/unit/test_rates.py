"""Rates between two samples: exact arithmetic on captured samples, resets, nulls."""

from __future__ import annotations

import attrs
import fixture_trees
import pytest
from hypothesis import given
from hypothesis import strategies as st
from samples import advance, captured, with_interface

from cgstats import rates
from cgstats.model import BlkioDevice, Sample

pytestmark = pytest.mark.skipif(not fixture_trees.available(), reason="no fixture tree captured")

REQUIRED_KEYS = set(
    [
        "interval_s",
        "cpu_cores",
        "cpu_user_cores",
        "cpu_system_cores",
        "cpu_percent",
        "throttled_ratio",
        "blkio_read_bytes_per_s",
        "blkio_write_bytes_per_s",
        "blkio_read_ops_per_s",
        "blkio_write_ops_per_s",
        "net_rx_bytes_per_s",
        "net_tx_bytes_per_s",
        "net_rx_packets_per_s",
        "net_tx_packets_per_s",
        "pgfault_per_s",
        "pgmajfault_per_s",
    ]
)


@pytest.fixture(params=fixture_trees.available() or ["none"])
def sample(request: pytest.FixtureRequest) -> Sample:
    return captured(str(request.param))


def test_first_sample_has_every_key_and_no_value() -> None:
    first = rates.first().to_dict()
    assert set(first) >= REQUIRED_KEYS
    assert all(first[key] is None for key in REQUIRED_KEYS)


def test_cpu_in_cores_and_percent_of_the_limit(sample: Sample) -> None:
    later = advance(sample, cpu_ns=1_000_000_000, user_ns=750_000_000, system_ns=250_000_000)
    result, backwards = rates.compute(sample, later, 2.0, host_cpus=2)
    assert not backwards
    assert result.interval_s == 2.0
    assert result.cpu_cores == pytest.approx(0.5)
    assert result.cpu_user_cores == pytest.approx(0.375)
    assert result.cpu_system_cores == pytest.approx(0.125)
    assert sample.cpu is not None and sample.cpu.limit_cores == 0.5  # the captured quota
    assert result.cpu_percent == pytest.approx(100.0)


def test_cpu_percent_of_the_host_without_a_limit(sample: Sample) -> None:
    assert sample.cpu is not None
    unlimited = attrs.evolve(sample, cpu=attrs.evolve(sample.cpu, limit_cores=None))
    later = advance(unlimited, cpu_ns=500_000_000)
    result, _ = rates.compute(unlimited, later, 1.0, host_cpus=4)
    assert result.cpu_cores == pytest.approx(0.5)
    assert result.cpu_percent == pytest.approx(12.5)


def test_throttled_ratio_of_elapsed_periods(sample: Sample) -> None:
    result, _ = rates.compute(sample, advance(sample, periods=10, throttled=4), 1.0, 2)
    assert result.throttled_ratio == pytest.approx(0.4)
    idle, _ = rates.compute(sample, advance(sample), 1.0, 2)
    assert idle.throttled_ratio is None  # no CFS period elapsed: no ratio, not 0


def test_block_io_per_device_and_total(sample: Sample) -> None:
    later = advance(sample, read_bytes=4096 * 10, write_bytes=8192, read_ops=10, write_ops=2)
    assert later.blkio is not None
    extra = BlkioDevice(8, 16, "sdb", 1000, 0, 1, 0)
    later = attrs.evolve(
        later, blkio=attrs.evolve(later.blkio, devices=(*later.blkio.devices, extra))
    )
    result, backwards = rates.compute(sample, later, 2.0, 2)
    assert not backwards
    by_device = {(d.major, d.minor): d for d in result.blkio_devices}
    assert by_device[(254, 0)].read_bytes_per_s == pytest.approx(20480)
    assert by_device[(254, 0)].write_ops_per_s == pytest.approx(1)
    # a device listed for the first time counts from zero: the kernel lists it
    # once the cgroup has done IO on it
    assert by_device[(8, 16)].read_bytes_per_s == pytest.approx(500)
    assert result.blkio_read_bytes_per_s == pytest.approx(20980)
    assert result.blkio_write_bytes_per_s == pytest.approx(4096)
    assert result.blkio_read_ops_per_s == pytest.approx(5.5)
    assert result.blkio_write_ops_per_s == pytest.approx(1)


def test_unavailable_block_io_has_no_rates(sample: Sample) -> None:
    assert sample.blkio is not None
    off = attrs.evolve(sample, blkio=attrs.evolve(sample.blkio, available=False, devices=()))
    result, _ = rates.compute(off, advance(sample, read_bytes=1), 1.0, 2)
    assert result.blkio_read_bytes_per_s is None and result.blkio_devices == ()


def test_network_totals_leave_out_loopback(sample: Sample) -> None:
    before = with_interface(sample, "eth0", 1000, 2000)
    later = with_interface(advance(sample, rx_bytes=500, tx_bytes=500), "eth0", 5000, 2500)
    result, _ = rates.compute(before, later, 2.0, 2)
    by_name = {i.name: i for i in result.net_interfaces}
    assert by_name["lo"].rx_bytes_per_s == pytest.approx(250)
    assert by_name["eth0"].rx_bytes_per_s == pytest.approx(2000)
    assert result.net_rx_bytes_per_s == pytest.approx(2000)
    assert result.net_tx_bytes_per_s == pytest.approx(250)
    assert result.net_rx_packets_per_s == pytest.approx(0)


def test_another_network_namespace_restarts_network_deltas(sample: Sample) -> None:
    later = advance(sample, rx_bytes=500, cpu_ns=10)
    assert later.net is not None
    moved = attrs.evolve(later, net=attrs.evolve(later.net, netns=later.net.netns + 1))
    result, _ = rates.compute(sample, moved, 1.0, 2)
    assert result.net_rx_bytes_per_s is None and result.net_interfaces == ()
    assert result.cpu_cores is not None


def test_page_faults_and_pressure(sample: Sample) -> None:
    result, _ = rates.compute(
        sample, advance(sample, pgfault=300, pgmajfault=3, cpu_some_us=250_000), 3.0, 2
    )
    assert result.pgfault_per_s == pytest.approx(100)
    assert result.pgmajfault_per_s == pytest.approx(1)
    assert result.pressure_cpu_some_us_per_s == pytest.approx(250_000 / 3)
    assert result.pressure_io_some_us_per_s == pytest.approx(0)


def test_a_counter_going_backwards_restarts_only_its_delta(sample: Sample) -> None:
    later = advance(sample, cpu_ns=-1000, read_bytes=1000)
    result, backwards = rates.compute(sample, later, 1.0, 2)
    assert backwards
    assert result.cpu_cores is None and result.cpu_percent is None
    assert result.blkio_read_bytes_per_s == pytest.approx(1000)


def test_a_tiny_interval_gives_no_rates(sample: Sample) -> None:
    result, backwards = rates.compute(sample, advance(sample, cpu_ns=10**9), 0.0, 2)
    assert result == rates.first() and not backwards


def test_absent_sections_give_none_not_zero(sample: Sample) -> None:
    bare = attrs.evolve(sample, cpu=None, memory=None, blkio=None, net=None, pressure=None)
    result, _ = rates.compute(bare, bare, 1.0, 2)
    assert all(result.to_dict()[key] is None for key in REQUIRED_KEYS - {"interval_s"})


@given(
    steps=st.lists(
        st.tuples(
            st.integers(-(10**9), 10**10),
            st.integers(-(10**6), 10**9),
            st.floats(0.0, 100.0, allow_nan=False),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_rates_are_never_negative(steps: list[tuple[int, int, float]]) -> None:
    previous = captured(fixture_trees.available()[0])
    for cpu_ns, read_bytes, interval in steps:
        current = advance(previous, cpu_ns=cpu_ns, read_bytes=read_bytes, rx_bytes=abs(read_bytes))
        result, backwards = rates.compute(previous, current, interval, 2)
        values = [v for v in result.to_dict().values() if isinstance(v, float)]
        assert all(v >= 0 for v in values)
        if interval >= rates.MIN_INTERVAL_S:
            assert backwards == (cpu_ns < 0 or read_bytes < 0)
            assert (result.cpu_cores is None) == (cpu_ns < 0)
        previous = current
