"""Open-Falcon items from readings: the metric naming table and the transfer's rules.

Pure functions, no I/O, shared by the transfer sink (:mod:`cgstats.sinks.falcon`)
and the agent sink (:mod:`cgstats.sinks.falcon_agent`). An item is the dict the
transfer's ``Transfer.Update`` and the agent's ``/v1/push`` take: ``endpoint``,
``metric``, ``value``, ``step``, ``counterType``, ``tags``, ``timestamp``.
:data:`METRICS` says which fields of a :class:`~cgstats.Reading` become which
metric (documented in docs/falcon.md); :func:`item_problem` applies the checks
the transfer applies, so that an item it would drop, or a value that would make
it reject the whole batch, is never sent.
"""

from __future__ import annotations

import functools
import math
import socket
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import attrs

from cgstats.collector import Reading

GAUGE = "GAUGE"
COUNTER_TYPES = frozenset({"GAUGE", "COUNTER", "DERIVE"})
# The transfer's limit on len(metric) + len(tags), in bytes (Go's len of a string).
MAX_METRIC_TAGS_BYTES = 510
# Go decodes step and timestamp into int64: a larger number fails the whole call.
_INT64_MAX = (1 << 63) - 1
#: The largest timestamp :func:`item_problem` lets through (2077-09). The
#: transfer replaces one above twice its clock with its clock; twice any
#: clock from 2023-11 on is above this, so no clock needs asking.
MAX_TIMESTAMP = 3_400_000_000
_FIELDS = ("endpoint", "metric", "value", "step", "counterType", "tags", "timestamp")

Getter = Callable[["Reading"], Optional[float]]
#: A sink's ``endpoint``: the host name (``None``), a string, or a callable of the reading.
Endpoint = Union[None, str, Callable[["Reading"], str]]
#: A sink's ``tags``: none, a mapping, or a callable of the reading returning one.
Tags = Union[None, Mapping[str, str], Callable[["Reading"], Mapping[str, str]]]


@attrs.frozen
class FalconMetric:
    """One row of the naming table.

    ``source`` names where the value comes from: ``rates.<field>`` is a
    :class:`~cgstats.Rates` field, ``<section>.<field>`` a field of the
    sample (docs/metrics.md). ``net_counted_only`` metrics are emitted only
    for readings whose ``net_counted`` is true, so that containers sharing a
    network namespace report its traffic once.
    """

    name: str
    unit: str
    source: str
    counter_type: str
    get: Getter = attrs.field(repr=False, eq=False)
    net_counted_only: bool = False

    def value(self, reading: Reading) -> Optional[float]:
        """The value for ``reading``; ``None`` when unknown (then no item is made)."""
        if self.net_counted_only and reading.net_counted is not True:
            return None
        return self.get(reading)


def _rate(field: str) -> tuple[str, Getter]:
    def get(reading: Reading) -> Optional[float]:
        value: Optional[float] = getattr(reading.rates, field)
        return value

    return f"rates.{field}", get


def _gauge(section: str, field: str) -> tuple[str, Getter]:
    def get(reading: Reading) -> Optional[float]:
        record = getattr(reading.sample, section)
        if record is None:
            return None
        value: Optional[float] = getattr(record, field)
        return value

    return f"{section}.{field}", get


def _memory_usage_percent(reading: Reading) -> Optional[float]:
    memory = reading.sample.memory
    if memory is None or memory.usage_bytes is None or not memory.limit_bytes:
        return None  # no memory controller, or no limit (None), or a 0 limit
    return memory.usage_bytes / memory.limit_bytes * 100.0


def _metric(name: str, unit: str, source: tuple[str, Getter], net: bool = False) -> FalconMetric:
    return FalconMetric(name, unit, source[0], GAUGE, source[1], net_counted_only=net)


# Rates and gauges alike are GAUGE: rates are already per second, so the
# transfer stores them as they are (COUNTER would make it derive them again and
# truncate them to integers).
METRICS: tuple[FalconMetric, ...] = (
    _metric("container.cpu.usage.cores", "cores", _rate("cpu_cores")),
    _metric("container.cpu.user.cores", "cores", _rate("cpu_user_cores")),
    _metric("container.cpu.system.cores", "cores", _rate("cpu_system_cores")),
    _metric("container.cpu.usage.percent", "%", _rate("cpu_percent")),
    _metric("container.cpu.limit.cores", "cores", _gauge("cpu", "limit_cores")),
    _metric("container.cpu.throttled.ratio", "ratio (0 to 1)", _rate("throttled_ratio")),
    _metric("container.cpu.throttled.seconds_per_s", "s/s", _rate("throttled_s_per_s")),
    _metric("container.memory.usage.bytes", "bytes", _gauge("memory", "usage_bytes")),
    _metric("container.memory.working_set.bytes", "bytes", _gauge("memory", "working_set_bytes")),
    _metric("container.memory.rss.bytes", "bytes", _gauge("memory", "rss_bytes")),
    _metric("container.memory.cache.bytes", "bytes", _gauge("memory", "cache_bytes")),
    _metric("container.memory.swap.bytes", "bytes", _gauge("memory", "swap_bytes")),
    _metric("container.memory.limit.bytes", "bytes", _gauge("memory", "limit_bytes")),
    _metric(
        "container.memory.usage.percent",
        "%",
        ("100 * memory.usage_bytes / memory.limit_bytes", _memory_usage_percent),
    ),
    _metric("container.memory.pgfault.per_s", "faults/s", _rate("pgfault_per_s")),
    _metric("container.memory.pgmajfault.per_s", "faults/s", _rate("pgmajfault_per_s")),
    _metric("container.memory.oom_kills", "count", _gauge("memory", "oom_kills")),
    _metric("container.blkio.read.bytes_per_s", "B/s", _rate("blkio_read_bytes_per_s")),
    _metric("container.blkio.write.bytes_per_s", "B/s", _rate("blkio_write_bytes_per_s")),
    _metric("container.blkio.read.ops_per_s", "ops/s", _rate("blkio_read_ops_per_s")),
    _metric("container.blkio.write.ops_per_s", "ops/s", _rate("blkio_write_ops_per_s")),
    _metric("container.net.rx.bytes_per_s", "B/s", _rate("net_rx_bytes_per_s"), net=True),
    _metric("container.net.tx.bytes_per_s", "B/s", _rate("net_tx_bytes_per_s"), net=True),
    _metric("container.net.rx.packets_per_s", "packets/s", _rate("net_rx_packets_per_s"), True),
    _metric("container.net.tx.packets_per_s", "packets/s", _rate("net_tx_packets_per_s"), True),
    _metric("container.net.rx.errors_per_s", "errors/s", _rate("net_rx_errors_per_s"), True),
    _metric("container.net.tx.errors_per_s", "errors/s", _rate("net_tx_errors_per_s"), True),
    _metric("container.net.rx.dropped_per_s", "packets/s", _rate("net_rx_dropped_per_s"), True),
    _metric("container.net.tx.dropped_per_s", "packets/s", _rate("net_tx_dropped_per_s"), True),
    _metric("container.pids.current", "tasks", _gauge("pids", "current")),
    _metric("container.pids.limit", "tasks", _gauge("pids", "limit")),
    _metric("container.psi.cpu.some.us_per_s", "µs/s", _rate("pressure_cpu_some_us_per_s")),
    _metric("container.psi.cpu.full.us_per_s", "µs/s", _rate("pressure_cpu_full_us_per_s")),
    _metric("container.psi.memory.some.us_per_s", "µs/s", _rate("pressure_memory_some_us_per_s")),
    _metric("container.psi.memory.full.us_per_s", "µs/s", _rate("pressure_memory_full_us_per_s")),
    _metric("container.psi.io.some.us_per_s", "µs/s", _rate("pressure_io_some_us_per_s")),
    _metric("container.psi.io.full.us_per_s", "µs/s", _rate("pressure_io_full_us_per_s")),
)


def format_tags(tags: Mapping[str, str]) -> str:
    """``k=v`` pairs sorted by key and joined by ``,``: the form the transfer stores."""
    return ",".join(f"{key}={tags[key]}" for key in sorted(tags))


def short_id(container_id: str) -> str:
    """The first 12 characters of a container ID (Docker's short form)."""
    return container_id[:12]


def align_timestamp(unix_s: float, step: int) -> int:
    """``unix_s`` truncated to whole seconds, then aligned down to a multiple of ``step`` (s)."""
    _check_step(step)
    seconds = int(unix_s)
    return seconds - seconds % step


def falcon_step(step_s: float) -> int:
    """The Open-Falcon step (an int >= 1) for a collector step in seconds.

    The nearest whole second, halves rounded up, at least 1: 10.0 gives 10,
    0.5 gives 1, 2.5 gives 3. :class:`ValueError` unless ``step_s`` is a
    positive finite number.
    """
    if isinstance(step_s, bool) or not isinstance(step_s, (int, float)):
        raise ValueError(f"step must be a number of seconds, not {step_s!r}")
    if not math.isfinite(step_s) or step_s <= 0:
        raise ValueError(f"step must be a positive number of seconds, not {step_s!r}")
    return max(1, math.floor(step_s + 0.5))


class SeriesNames:
    """The endpoint and tags of each container's items, as a sink's caller gave them.

    ``endpoint``: ``None`` for the host name, a string, or a callable of the
    :class:`~cgstats.Reading`. ``tags``: ``None``, a mapping, or a callable
    of the reading returning one; every item also gets
    ``container=<short id>``, which a caller's tags cannot replace (two
    containers never share a series). A mapping is checked at once against
    the transfer's rules (:class:`ValueError`); what a callable returns is
    checked with each item. The tag string of a mapping is kept per
    container, so it is formatted once.
    """

    def __init__(self, endpoint: Endpoint = None, tags: Tags = None) -> None:
        if isinstance(endpoint, str) and not endpoint:
            raise ValueError("endpoint must not be empty")
        if endpoint is not None and not isinstance(endpoint, str) and not callable(endpoint):
            raise TypeError(f"endpoint must be a str or a callable, not {type(endpoint).__name__}")
        if isinstance(tags, Mapping):
            tags = {str(key): str(value) for key, value in tags.items()}
            probe = {"endpoint": "e", "metric": "m", "value": 0, "step": 1}
            probe.update(counterType=GAUGE, tags=_with_container(tags, "0" * 12), timestamp=1)
            problem = item_problem(probe)
            if problem is not None:
                raise ValueError(f"tags {tags!r}: {problem}")
        elif tags is not None and not callable(tags):
            raise TypeError(f"tags must be a mapping or a callable, not {type(tags).__name__}")
        self.endpoint: Union[str, Callable[[Reading], str]] = (
            socket.gethostname() if endpoint is None else endpoint
        )
        self.tags = tags
        self._tags_by_id: dict[str, str] = {}

    def endpoint_of(self, reading: Reading) -> str:
        """The endpoint of ``reading``'s items (a caller's callable may raise)."""
        endpoint = self.endpoint
        return endpoint if isinstance(endpoint, str) else str(endpoint(reading))

    def items_of(
        self, reading: Reading, step: int
    ) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """``reading``'s items the transfer would accept, and ``(metric, problem)`` of
        each it would drop (:func:`item_problem`). A caller's callable may raise."""
        items = reading_items(
            reading, endpoint=self.endpoint_of(reading), tags=self.tags_of(reading), step=step
        )
        good: list[dict[str, Any]] = []
        bad: list[tuple[str, str]] = []
        for item in items:
            problem = item_problem(item)
            if problem is None:
                good.append(item)
            else:
                bad.append((str(item.get("metric")), problem))
        return good, bad

    def tags_of(self, reading: Reading) -> str:
        """The tag string of ``reading``'s items (a caller's callable may raise)."""
        tags = self.tags
        if callable(tags):
            given = {str(key): str(value) for key, value in tags(reading).items()}
            return _with_container(given, short_id(reading.id))
        text = self._tags_by_id.get(reading.id)
        if text is None:
            if len(self._tags_by_id) >= 65536:  # containers come and go: bound the memo
                self._tags_by_id.clear()
            text = _with_container(tags or {}, short_id(reading.id))
            self._tags_by_id[reading.id] = text
        return text


def _with_container(tags: Mapping[str, str], container: str) -> str:
    return format_tags({**tags, "container": container})


def reading_items(reading: Reading, *, endpoint: str, tags: str, step: int) -> list[dict[str, Any]]:
    """The items of one reading: one per :data:`METRICS` row whose value is known.

    ``tags`` is the already formatted tag string (:func:`format_tags`); the
    timestamp is the sample's, aligned by :func:`align_timestamp`. Unknown
    values (``None``) make no item: absent is not zero.
    """
    timestamp = align_timestamp(reading.sample.timestamp, step)
    items = []
    for metric in METRICS:
        value = metric.value(reading)
        if value is not None:
            items.append(
                {
                    "endpoint": endpoint,
                    "metric": metric.name,
                    "value": value,
                    "step": step,
                    "counterType": metric.counter_type,
                    "tags": tags,
                    "timestamp": timestamp,
                }
            )
    return items


def item_problem(item: Mapping[str, Any]) -> Optional[str]:
    """Why the transfer would drop ``item`` or reject its batch; ``None`` if it is fine.

    The transfer drops an item with an empty endpoint or metric, the metric
    ``kernel.hostname``, an unknown counterType, a step <= 0, or
    ``len(metric) + len(tags)`` over 510 bytes; a value of the wrong JSON type
    (a fractional step, a string timestamp) fails the whole call, and NaN or
    Infinity is not JSON at all. Stricter than the transfer on tags and
    timestamps, so that what it stores is exactly what was sent: every tag is
    a non-empty ``k=v`` with no whitespace, ``,`` or ``=`` inside, keys are
    unique, and the timestamp is an int from 1 to :data:`MAX_TIMESTAMP` (it
    would replace one <= 0, or above twice its clock, with its clock).
    """
    try:
        endpoint, metric, tags = item["endpoint"], item["metric"], item["tags"]
        counter_type, step, timestamp = item["counterType"], item["step"], item["timestamp"]
        value = item["value"]
    except KeyError:
        missing = [field for field in _FIELDS if field not in item]
        return f"missing {', '.join(missing)}"
    if type(endpoint) is not str or not endpoint:
        return "endpoint is not a non-empty string"
    if type(metric) is not str or not metric:
        return "metric is not a non-empty string"
    if metric == "kernel.hostname":
        return "metric kernel.hostname is reserved"
    if type(counter_type) is not str or counter_type not in COUNTER_TYPES:
        return f"counterType {counter_type!r} is not GAUGE, COUNTER or DERIVE"
    if type(step) is not int or not 0 < step <= _INT64_MAX:
        return f"step {step!r} is not a positive int"
    if type(timestamp) is not int or not 0 < timestamp <= MAX_TIMESTAMP:
        return f"timestamp {timestamp!r} is not an int from 1 to {MAX_TIMESTAMP}"
    problem = _value_problem(value)
    if problem is not None:
        return problem
    if type(tags) is not str:
        return "tags is not a string"
    # The strings repeat from item to item (one tag string per container, a few
    # dozen metric names), so their checks are cached.
    metric_bytes, tags_bytes = _utf8_length(metric), _utf8_length(tags)
    if _utf8_length(endpoint) < 0 or metric_bytes < 0 or tags_bytes < 0:
        return "a string is not valid Unicode (lone surrogate)"
    if metric_bytes + tags_bytes > MAX_METRIC_TAGS_BYTES:
        return f"metric and tags are {metric_bytes + tags_bytes} bytes, over 510"
    return _tags_problem(tags)


def _value_problem(value: Any) -> Optional[str]:
    """Why ``value`` is not a finite JSON number; ``None`` if it is one."""
    if type(value) is float:
        return None if value - value == 0 else f"value {value!r} is not finite"  # inf - inf is NaN
    if type(value) is not int and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        return f"value {value!r} is not a number"
    try:
        if not math.isfinite(value):
            return f"value {value!r} is not finite"
    except OverflowError:  # an int too large for a float64
        return "value is too large"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@functools.lru_cache(maxsize=16384)
def _utf8_length(text: str) -> int:
    """Length in UTF-8 bytes (as Go's ``len``); -1 if it cannot be encoded (lone surrogate)."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return -1


@functools.lru_cache(maxsize=16384)
def _tags_problem(tags: str) -> Optional[str]:
    """What is wrong with a tag string; cached, since every item of a reading shares one."""
    if not tags:
        return None
    keys = set()
    for piece in tags.split(","):
        key, equals, value = piece.partition("=")
        if not equals:
            return f"tag {piece!r} is not k=v"
        if not key or not value:
            return f"tag {piece!r} has an empty key or value"
        if "=" in value:
            return f"tag {piece!r} has '=' in its value"
        if any(c.isspace() for c in piece):
            return f"tag {piece!r} has whitespace"
        if key in keys:
            return f"tag key {key!r} repeats"
        keys.add(key)
    return None


def _check_step(step: int) -> None:
    if not _is_int(step) or step < 1:
        raise ValueError(f"step must be an int >= 1, not {step!r}")
