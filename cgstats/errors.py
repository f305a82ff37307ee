"""Every exception cgstats raises.

Callers catch :class:`CgstatsError` to handle them all; raw ``OSError`` from
cgroupfs or procfs is translated here, at the boundary, and never escapes.
"""

from __future__ import annotations

from collections.abc import Sequence


class CgstatsError(Exception):
    """Base class of every cgstats error."""


class NoCgroupFilesystem(CgstatsError):
    """No cgroup v1 hierarchy and no cgroup2 mount was found under the root."""


class InvalidContainerId(CgstatsError):
    """A container spec that is not a valid ID, path or ``pid:N``.

    Raised before any path is built from the spec, so nothing outside the
    cgroup root is ever opened because of it.
    """

    def __init__(self, spec: str, reason: str) -> None:
        self.spec = spec
        self.reason = reason
        super().__init__(f"invalid container {spec!r}: {reason}")


class ContainerNotFound(CgstatsError):
    """No container (or cgroup, or process) matches the spec."""

    def __init__(self, spec: str, reason: str = "no such container") -> None:
        self.spec = spec
        self.reason = reason
        super().__init__(f"container {spec!r} not found: {reason}")


class AmbiguousContainer(CgstatsError):
    """An ID prefix matches more than one container.

    ``candidates`` holds the full IDs (or cgroup paths) that matched, sorted.
    """

    def __init__(self, spec: str, candidates: Sequence[str]) -> None:
        self.spec = spec
        self.candidates = tuple(sorted(candidates))
        listed = ", ".join(self.candidates)
        super().__init__(
            f"container prefix {spec!r} is ambiguous: matches {len(self.candidates)} "
            f"containers: {listed}"
        )


class ContainerGone(CgstatsError):
    """The container's cgroup disappeared between or during reads.

    The kernel reports it as ENODEV on a kept file descriptor or ENOENT on a
    file or directory that existed when the container was opened.
    """

    def __init__(self, container_id: str, detail: str = "") -> None:
        self.container_id = container_id
        self.detail = detail
        message = f"container {container_id!r} is gone"
        super().__init__(f"{message}: {detail}" if detail else message)


class ParseError(CgstatsError, ValueError):
    """A cgroup or procfs file had content that does not follow its format."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"cannot parse {what}: {reason}")
