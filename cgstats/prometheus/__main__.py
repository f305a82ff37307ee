"""``python -m cgstats.prometheus``: the exporter (see :mod:`cgstats.prometheus.exporter`)."""

from cgstats.prometheus.exporter import run

if __name__ == "__main__":
    run()
