"""The prometheus_client custom collector: cAdvisor's metrics read at scrape time.

:class:`CgroupCollector` keeps one open :class:`~cgstats.Container` per
container across scrapes (descriptors stay open, see :mod:`cgstats._fileio`);
each ``collect()`` lists the containers (or resolves the
names it was given), reads every one once and turns the samples into metric
families through the table in :mod:`cgstats.prometheus.metrics`. A container
that is gone is simply absent from that scrape on; one that fails otherwise is
left out of the scrape, logged and counted (``cgstats_scrape_errors_total``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Optional, Union

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cgstats._closing import Closing
from cgstats.container import Container, ContainerRef, ContainerSpec, checked_spec, spec_key
from cgstats.errors import CgstatsError, ContainerGone, ContainerNotFound
from cgstats.host import Host
from cgstats.model import NetInterface, Sample
from cgstats.prometheus.metrics import (
    CADVISOR_IGNORED_INTERFACES,
    CONTAINER_LABELS,
    COUNTER,
    METRICS,
    SCRAPE_ERROR,
    SCRAPE_ERRORS_TOTAL,
    MetricSpec,
    Observation,
    interface_ignored,
)

log = logging.getLogger("cgstats.prometheus")

LabelsFunc = Callable[[ContainerRef], Mapping[str, str]]

_INVALID_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")
# Label names the table's own series use: a caller's label may not take them.
_RESERVED_LABELS = frozenset({"id"} | {label for spec in METRICS for label in spec.labels})


def sanitize_label_name(name: str) -> str:
    """cAdvisor's sanitizeLabelName (anything but ``[a-zA-Z0-9_]`` becomes ``_``),
    with ``_`` put in front of a leading digit so the name stays valid."""
    clean = _INVALID_LABEL_CHAR.sub("_", name)
    return "_" + clean if clean[:1].isdigit() else clean


def default_labels(ref: ContainerRef) -> dict[str, str]:
    """``id`` is the cgroup path (cAdvisor's container name), ``name`` the container ID.

    cAdvisor's ``name`` is the runtime's container name and ``image`` its
    image; cgstats reads neither from a runtime, so ``name`` is the ID and
    ``image`` empty unless a ``labels`` callable says otherwise.
    """
    return {"id": ref.cgroup, "name": ref.id, "image": ""}


@attrs.define
class _Held:
    """What the collector keeps per open container."""

    handle: Container
    labels: dict[str, str]
    procs_path: str
    started: Optional[float] = None
    last_error: Optional[str] = None


class CgroupCollector(Collector, Closing):
    """cAdvisor-named container metrics for ``prometheus_client``, read at scrape time.

    ``REGISTRY.register(CgroupCollector())`` exposes every container on the
    host; ``containers`` names some instead (IDs, unique prefixes, cgroup paths
    or ``pid:N``, as :meth:`cgstats.Host.resolve` takes them; a name that is not
    a container name at all raises :class:`~cgstats.InvalidContainerId` here,
    one not found yet is looked for again at every scrape).

    ``host`` is a :class:`~cgstats.Host` the caller owns (and closes); without
    it the collector makes one for ``root`` (``$CGSTATS_ROOT`` or ``/``) with
    ``max_open_files`` at the first scrape, and closes it in :meth:`close`.
    ``labels(ref)`` returns extra labels per container, e.g. ``name``, ``image``
    or ``pod`` from the runtime; it is called once when a container is first
    seen. Label names are sanitized as cAdvisor does; ``id`` and the names the
    metrics use themselves (``cpu``, ``device``, ``interface`` ...) cannot be
    set. ``ignored_interfaces`` are the interface name prefixes left out
    (cAdvisor's by default). :meth:`describe` does no I/O. Scrapes from several
    threads are served one at a time.
    """

    def __init__(
        self,
        host: Optional[Host] = None,
        containers: Optional[Iterable[ContainerSpec]] = None,
        *,
        root: Optional[str] = None,
        labels: Optional[LabelsFunc] = None,
        ignored_interfaces: Sequence[str] = CADVISOR_IGNORED_INTERFACES,
        max_open_files: Optional[int] = None,
    ) -> None:
        self._specs: Optional[list[ContainerSpec]] = None
        if containers is not None:
            self._specs = [checked_spec(spec) for spec in containers]
        self._host = host
        self._own_host = host is None
        self._root = root
        self._max_open_files = max_open_files
        self._labels_func = labels
        self.ignored_interfaces = tuple(prefix.lower() for prefix in ignored_interfaces)
        self.scrape_errors = 0
        self._held: dict[str, _Held] = {}  # by cgroup path
        self._spec_cgroups: dict[object, str] = {}  # a name given -> the cgroup it resolved to
        self._lock = threading.Lock()
        self._closed = False

    # -- prometheus_client's Collector -----------------------------------------

    def describe(self) -> list[Metric]:
        """Every family this collector can expose, without samples (no I/O)."""
        families: list[Metric] = [_family(spec.name, spec.kind, spec.help) for spec in METRICS]
        families += [
            _family(metric.name, metric.kind, metric.help)
            for metric in (SCRAPE_ERROR, SCRAPE_ERRORS_TOTAL)
        ]
        return families

    def collect(self) -> list[Metric]:
        """Read every container now and return the metric families."""
        with self._lock:
            if self._closed:
                raise ValueError("collect() on a closed CgroupCollector")
            seen = time.time()
            read, failed = self._scrape()
        observations = observe(
            [(sample, procs, held.started) for sample, procs, held in read],
            seen,
            self.ignored_interfaces,
        )
        label_sets = [held.labels for _sample, _procs, held in read]
        families = container_families(observations, label_sets)
        error = GaugeMetricFamily(SCRAPE_ERROR.name, SCRAPE_ERROR.help)
        error.add_metric([], 1.0 if failed else 0.0)
        total = CounterMetricFamily(SCRAPE_ERRORS_TOTAL.name, SCRAPE_ERRORS_TOTAL.help)
        total.add_metric([], float(self.scrape_errors))
        return [*families, error, total]

    # -- reading ------------------------------------------------------------

    def _scrape(self) -> tuple[list[tuple[Sample, Optional[int], _Held]], bool]:
        """(sample, process count, holder) per container read, and whether anything failed."""
        try:
            host = self._get_host()
        except CgstatsError as error:
            self._count_error(f"cannot read the cgroup filesystem: {error}")
            return [], True
        failed = False
        wanted: Optional[dict[str, ContainerRef]]
        if self._specs is None:
            try:
                wanted = {ref.cgroup: ref for ref in host.containers()}
            except Exception as error:  # the mount went away: read what is open
                log.warning("listing containers failed: %s", error)
                failed = True
                wanted = None
            if wanted is not None:
                for cgroup in [c for c in self._held if c not in wanted]:
                    self._drop(cgroup)
                for cgroup, ref in wanted.items():
                    if cgroup not in self._held:
                        failed |= not self._open(host, ref)
        else:
            wanted = None
            for spec in self._specs:
                failed |= not self._open_spec(host, spec)
        read = []
        for cgroup in list(self._held):
            result = self._read(host, cgroup, wanted)
            if result is None:
                failed |= cgroup in self._held  # still held: it failed, it is not gone
            else:
                read.append(result)
        return read, failed

    def _get_host(self) -> Host:
        if self._host is None:
            self._host = Host(self._root, max_open_files=self._max_open_files)
        return self._host

    def _open_spec(self, host: Host, spec: ContainerSpec) -> bool:
        """Open the container ``spec`` names unless it is open; False on an error."""
        if self._spec_cgroups.get(spec_key(spec)) in self._held:
            return True  # resolved before and still open: no walk of the tree
        try:
            ref = spec if isinstance(spec, ContainerRef) else host.resolve(spec)
        except ContainerNotFound:
            return True  # not running (yet): no series, not an error
        except CgstatsError as error:
            self._count_error(f"{spec}: {error}")
            return False
        self._spec_cgroups[spec_key(spec)] = ref.cgroup
        if ref.cgroup in self._held:
            return True
        return self._open(host, ref)

    def _open(self, host: Host, ref: ContainerRef) -> bool:
        """Open ``ref`` and hold it; False if that failed for another reason than its going."""
        try:
            handle = host.open(ref)
        except ContainerGone:
            return True
        except Exception as error:
            self._count_error(f"{ref.id[:12]}: {type(error).__name__}: {error}")
            return False
        directories = handle.directories
        directory = directories.get("cpu", directories.get("unified", ref.directory))
        self._held[ref.cgroup] = _Held(
            handle,
            self._labels_of(ref),
            os.path.join(directory, "cgroup.procs"),
            started=creation_time(directories, handle.version),
        )
        return True

    def _read(
        self, host: Host, cgroup: str, wanted: Optional[dict[str, ContainerRef]]
    ) -> Optional[tuple[Sample, Optional[int], _Held]]:
        held = self._held[cgroup]
        try:
            sample = held.handle.read()
        except ContainerGone:
            self._drop(cgroup)
            ref = held.handle.ref
            # Removed and made again under the same path since the last scrape?
            if (wanted is None or cgroup in wanted) and self._open(host, ref):
                again = self._held.get(cgroup)
                if again is not None:
                    try:
                        return again.handle.read(), self._processes(host, again), again
                    except ContainerGone:
                        self._drop(cgroup)
            return None
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            if message != held.last_error:
                log.warning("%s: %s", held.handle.ref.id[:12], message)
            held.last_error = message
            self.scrape_errors += 1
            return None
        held.last_error = None
        return sample, self._processes(host, held), held

    @staticmethod
    def _processes(host: Host, held: _Held) -> Optional[int]:
        """Number of pids in ``cgroup.procs`` (kept open like the counters), or ``None``."""
        try:
            data = host.files.read(held.procs_path)
        except OSError:
            return None
        return sum(1 for token in data.split() if token.isdigit())

    def _labels_of(self, ref: ContainerRef) -> dict[str, str]:
        labels = default_labels(ref)
        if self._labels_func is None:
            return labels
        try:
            extra = dict(self._labels_func(ref))
        except Exception:
            log.exception("labels callable failed for %s", ref.id[:12])
            return labels
        for key, value in extra.items():
            name = sanitize_label_name(str(key))
            if name in _RESERVED_LABELS or name.startswith("__") or not name:
                log.warning("label %r from the labels callable is reserved, ignored", key)
                continue
            labels[name] = str(value)
        return labels

    def _count_error(self, message: str) -> None:
        log.warning("%s", message)
        self.scrape_errors += 1

    def _drop(self, cgroup: str) -> None:
        held = self._held.pop(cgroup, None)
        if held is None:
            return
        host = held.handle.host
        host.files.forget(held.procs_path)
        try:
            held.handle.close()
        except Exception:
            log.debug("closing %r failed", held.handle, exc_info=True)

    # -- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Close every container and, if the collector made it, the host. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for cgroup in list(self._held):
                self._drop(cgroup)
            if self._own_host and self._host is not None:
                self._host.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def watched(self) -> list[ContainerRef]:
        """The containers open as of the last scrape."""
        return [held.handle.ref for held in list(self._held.values())]

    def __repr__(self) -> str:
        mode = "all containers" if self._specs is None else f"{len(self._specs)} containers"
        return f"<cgstats.prometheus.CgroupCollector {mode}>"


def creation_time(directories: Mapping[str, str], version: int) -> Optional[float]:
    """cAdvisor's container creation time: the earliest mtime (Unix s) of the cgroup's
    directories and of their ``cgroup.events`` (v2) or ``cgroup.clone_children`` (v1).

    A directory's mtime moves when a child cgroup is made in it; those two files
    are rarely touched after the container's start, so the earliest time wins
    (container/common/helpers.go, getSpecInternal). ``None`` if nothing could
    be stat'ed.
    """
    times = []
    for key, directory in directories.items():
        marker = "cgroup.events" if version == 2 or key == "unified" else "cgroup.clone_children"
        for path in (directory, os.path.join(directory, marker)):
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            if mtime > 0:
                times.append(mtime)
    return min(times) if times else None


def _family(
    name: str, kind: str, documentation: str, labels: Sequence[str] = ()
) -> Union[CounterMetricFamily, GaugeMetricFamily]:
    if kind == COUNTER:
        return CounterMetricFamily(name, documentation, labels=labels)
    return GaugeMetricFamily(name, documentation, labels=labels)


def counted_interfaces(
    samples: Sequence[Sample], ignored: Sequence[str] = CADVISOR_IGNORED_INTERFACES
) -> list[tuple[NetInterface, ...]]:
    """The interfaces each sample reports, so that every namespace is counted once.

    Containers sharing a network namespace (a pod) report the same counters;
    only the one with the lowest ID reports them (as ``Reading.net_counted``
    in :mod:`cgstats.collector`), and containers in the host's namespace
    report none (those are the host's counters). cAdvisor's ignored interface
    names are left out.
    """
    by_netns: dict[int, str] = {}
    for sample in samples:
        net = sample.net
        if net is not None and not net.shared_with_host:
            holder = by_netns.get(net.netns)
            if holder is None or sample.id < holder:
                by_netns[net.netns] = sample.id
    out: list[tuple[NetInterface, ...]] = []
    for sample in samples:
        net = sample.net
        if net is None or net.shared_with_host or by_netns.get(net.netns) != sample.id:
            out.append(())
            continue
        out.append(tuple(i for i in net.interfaces if not interface_ignored(i.name, ignored)))
    return out


def observe(
    read: Sequence[tuple[Sample, Optional[int], Optional[float]]],
    seen: float,
    ignored: Sequence[str] = CADVISOR_IGNORED_INTERFACES,
) -> list[Observation]:
    """An :class:`~cgstats.prometheus.metrics.Observation` per (sample, process count,
    start time) read in one scrape at Unix time ``seen``."""
    samples = [sample for sample, _procs, _started in read]
    interfaces = counted_interfaces(samples, ignored)
    return [
        Observation(sample, procs, ifaces, seen, started)
        for (sample, procs, started), ifaces in zip(read, interfaces)
    ]


def container_families(
    observations: Sequence[Observation],
    label_sets: Sequence[Mapping[str, str]],
    metrics: Sequence[MetricSpec] = METRICS,
) -> list[Metric]:
    """The metric families of one scrape, one per metric that has a sample.

    Every series carries the same label names, as in cAdvisor: ``id``,
    ``name``, ``image``, then the union of the callers' extra labels (sorted;
    ``""`` where a container has none), then the metric's own.
    """
    extra = sorted({key for labels in label_sets for key in labels} - set(CONTAINER_LABELS))
    names = [*CONTAINER_LABELS, *extra]
    values = [[labels.get(name, "") for name in names] for labels in label_sets]
    families: list[Metric] = []
    for spec in metrics:
        family = _family(spec.name, spec.kind, spec.help, [*names, *spec.labels])
        for observation, base in zip(observations, values):
            for own, value in spec.values(observation):
                family.add_metric([*base, *own], value)
        if family.samples:
            families.append(family)
    return families
