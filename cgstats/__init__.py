"""cgstats: container resource counters straight from the kernel's cgroup filesystem.

>>> import cgstats
>>> with cgstats.Host() as host:                       # doctest: +SKIP
...     for ref in host.containers():
...         print(host.read(ref).to_dict())
"""

from cgstats.collector import Collector, Reading
from cgstats.container import Container, ContainerRef
from cgstats.errors import (
    AmbiguousContainer,
    CgstatsError,
    ContainerGone,
    ContainerNotFound,
    InvalidContainerId,
    NoCgroupFilesystem,
    ParseError,
)
from cgstats.events import Event
from cgstats.host import Host, read
from cgstats.model import (
    BlkioDevice,
    BlkioStats,
    CpuStats,
    MemoryStats,
    NetInterface,
    NetStats,
    PidsStats,
    Pressure,
    PressureLine,
    PressureResource,
    Sample,
)
from cgstats.rates import Rates

__version__ = "0.1.0"

__all__ = [
    "AmbiguousContainer",
    "BlkioDevice",
    "BlkioStats",
    "CgstatsError",
    "Collector",
    "Container",
    "ContainerGone",
    "ContainerNotFound",
    "ContainerRef",
    "CpuStats",
    "Event",
    "Host",
    "InvalidContainerId",
    "MemoryStats",
    "NetInterface",
    "NetStats",
    "NoCgroupFilesystem",
    "ParseError",
    "PidsStats",
    "Pressure",
    "PressureLine",
    "PressureResource",
    "Rates",
    "Reading",
    "Sample",
    "__version__",
    "read",
]
