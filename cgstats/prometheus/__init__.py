"""cAdvisor's Prometheus metrics from cgstats (the optional extra ``cgstats[prometheus]``).

>>> from prometheus_client import REGISTRY                  # doctest: +SKIP
>>> from cgstats.prometheus import CgroupCollector
>>> REGISTRY.register(CgroupCollector())                   # doctest: +SKIP

``python -m cgstats.prometheus --port 9101`` serves them over HTTP. The
metric table (names, types, labels, sources, units) is
``cgstats.prometheus.metrics.METRICS``; docs/prometheus.md explains it.
prometheus_client is imported only when :class:`CgroupCollector` is first
used, so the table and the exporter's error message need no prometheus_client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cgstats.prometheus.metrics import METRICS, SELF_METRICS, MetricSpec, Observation

if TYPE_CHECKING:
    from cgstats.prometheus.collector import CgroupCollector, default_labels

# Not "pip install cgstats[prometheus]": the name cgstats on PyPI is another project.
INSTALL_HINT = (
    "cgstats.prometheus needs prometheus_client: pip install prometheus_client"
    " (or, in a cgstats checkout, pip install '.[prometheus]')"
)

__all__ = [
    "INSTALL_HINT",
    "METRICS",
    "SELF_METRICS",
    "CgroupCollector",
    "MetricSpec",
    "Observation",
    "default_labels",
]


def __getattr__(name: str) -> Any:
    if name in ("CgroupCollector", "default_labels"):
        try:
            from cgstats.prometheus import collector
        except ModuleNotFoundError as error:
            if error.name != "prometheus_client" and not str(error.name).startswith(
                "prometheus_client."
            ):
                raise
            raise ModuleNotFoundError(INSTALL_HINT, name="prometheus_client") from error
        return getattr(collector, name)
    raise AttributeError(f"module 'cgstats.prometheus' has no attribute {name!r}")
