"""Samples for the rate and collector tests: a captured sample, then advanced.

The first sample of a series is what cgstats reads from a fixture tree
captured from a real kernel (the "main" container: CPU quota, throttling,
block IO, a private network namespace, PSI). Later samples add known amounts
to its counters, so every expected rate is exact arithmetic.
"""

from __future__ import annotations

import functools
from typing import Optional

import attrs
import fixture_trees

from cgstats import Host
from cgstats.model import NetInterface, Sample


@functools.cache
def captured(tree: str, name: str = "main") -> Sample:
    """The sample cgstats reads from ``name`` in the captured ``tree``."""
    data = fixture_trees.capture(tree)
    with Host(fixture_trees.root(tree)) as host:
        return host.read(fixture_trees.container(data, name)["id"])


def advance(
    sample: Sample,
    *,
    cpu_ns: int = 0,
    user_ns: int = 0,
    system_ns: int = 0,
    periods: int = 0,
    throttled: int = 0,
    read_bytes: int = 0,
    write_bytes: int = 0,
    read_ops: int = 0,
    write_ops: int = 0,
    rx_bytes: int = 0,
    tx_bytes: int = 0,
    rx_packets: int = 0,
    tx_packets: int = 0,
    pgfault: int = 0,
    pgmajfault: int = 0,
    cpu_some_us: int = 0,
    working_set_bytes: Optional[int] = None,
    timestamp_s: float = 1.0,
) -> Sample:
    """``sample`` with its counters increased by the given amounts (may be negative)."""
    cpu = sample.cpu
    assert cpu is not None and cpu.usage_ns is not None
    assert cpu.user_ns is not None and cpu.system_ns is not None
    assert cpu.periods is not None and cpu.throttled_periods is not None
    cpu = attrs.evolve(
        cpu,
        usage_ns=cpu.usage_ns + cpu_ns,
        user_ns=cpu.user_ns + user_ns,
        system_ns=cpu.system_ns + system_ns,
        periods=cpu.periods + periods,
        throttled_periods=cpu.throttled_periods + throttled,
    )
    blkio = sample.blkio
    assert blkio is not None and blkio.devices
    first = blkio.devices[0]
    assert first.read_bytes is not None and first.write_bytes is not None
    assert first.read_ops is not None and first.write_ops is not None
    device = attrs.evolve(
        first,
        read_bytes=first.read_bytes + read_bytes,
        write_bytes=first.write_bytes + write_bytes,
        read_ops=first.read_ops + read_ops,
        write_ops=first.write_ops + write_ops,
    )
    blkio = attrs.evolve(blkio, devices=(device, *blkio.devices[1:]))
    net = sample.net
    assert net is not None
    interfaces = tuple(
        attrs.evolve(
            i,
            rx_bytes=i.rx_bytes + rx_bytes,
            tx_bytes=i.tx_bytes + tx_bytes,
            rx_packets=i.rx_packets + rx_packets,
            tx_packets=i.tx_packets + tx_packets,
        )
        for i in net.interfaces
    )
    net = attrs.evolve(net, interfaces=interfaces)
    memory = sample.memory
    assert memory is not None and memory.stat is not None
    stat = dict(memory.stat)
    stat["pgfault"] += pgfault
    stat["pgmajfault"] += pgmajfault
    memory = attrs.evolve(
        memory,
        stat=stat,
        working_set_bytes=memory.working_set_bytes
        if working_set_bytes is None
        else working_set_bytes,
    )
    pressure = sample.pressure
    assert pressure is not None and pressure.cpu is not None and pressure.cpu.some is not None
    some = attrs.evolve(pressure.cpu.some, total_us=pressure.cpu.some.total_us + cpu_some_us)
    pressure = attrs.evolve(pressure, cpu=attrs.evolve(pressure.cpu, some=some))
    return attrs.evolve(
        sample,
        cpu=cpu,
        blkio=blkio,
        net=net,
        memory=memory,
        pressure=pressure,
        timestamp=sample.timestamp + timestamp_s,
    )


def with_interface(sample: Sample, name: str, rx_bytes: int, tx_bytes: int) -> Sample:
    """``sample`` with one more interface in its network namespace."""
    assert sample.net is not None
    extra = NetInterface(name, rx_bytes, 1, 0, 0, tx_bytes, 1, 0, 0)
    return attrs.evolve(
        sample, net=attrs.evolve(sample.net, interfaces=(*sample.net.interfaces, extra))
    )
