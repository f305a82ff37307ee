"""Per-controller readers: pure functions from file text to records.

Each module lists the files it needs for cgroup v1 and v2 and builds its
record from a mapping of file name to text. The caller (``cgstats.container``)
does the I/O; files that were absent are missing from the mapping, and their
fields come out as ``None``. On hybrid hosts, files of the container's
unified-tree cgroup are keyed with the prefix ``unified:``.
"""
