"""Block IO per device.

v1 files (one variant per cgroup, probed once when the container is opened):
``blkio.io_service_bytes_recursive`` / ``blkio.io_serviced_recursive`` (CFQ),
``blkio.bfq.io_service_bytes_recursive`` / ``..._serviced_recursive`` (BFQ),
``blkio.throttle.io_service_bytes_recursive`` / ``..._serviced_recursive`` and
the non-recursive throttle pair. Lines are ``MAJ:MIN Op N``, then ``Total N``.

The throttle counters are kept only on disks where throttling has been
activated: since blk-throttle's setup became lazy (about 6.9; measured on
6.18), the kernel allocates a queue's throttle data the first time any cgroup
sets a throttle rule for that disk, and from then until reboot it counts every
cgroup's IO there (``blk_should_throtl()``); IO on other disks is not counted
at all. Older kernels count every disk from boot. A cgroup whose file lists
no device is therefore ambiguous: the hierarchy root's recursive file tells
whether any disk is counted (the caller reads it and passes
``throttle_counted``). If none is, the section is ``available: false`` with
the reason, rather than zero traffic.

v2 file: ``io.stat``, lines ``MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N
dios=N`` for devices that saw IO (other keys such as ``cost.*`` are ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Optional

from cgstats.errors import ParseError
from cgstats.model import BlkioDevice, BlkioStats
from cgstats.readers._parse import parse_nested_keyed, to_int

DeviceNames = Callable[[int, int], Optional[str]]

# (bytes file, ops file), in order of preference.
V1_VARIANTS = (
    ("blkio.io_service_bytes_recursive", "blkio.io_serviced_recursive"),
    ("blkio.bfq.io_service_bytes_recursive", "blkio.bfq.io_serviced_recursive"),
    ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive"),
    ("blkio.throttle.io_service_bytes", "blkio.throttle.io_serviced"),
)
# Read from the hierarchy root when a cgroup's throttle file lists no device.
THROTTLE_ROOT_FILE = "blkio.throttle.io_service_bytes_recursive"
V2_FILES = ("io.stat",)

NO_THROTTLE_ACCOUNTING = (
    "the kernel counts v1 blkio throttle IO only on disks for which some cgroup has "
    "set a throttle rule (blkio.throttle.*_device) since boot, and no disk is counted yet"
)

Device = tuple[int, int]


def v1_files(exists: Callable[[str], bool]) -> list[str]:
    """The files of the first v1 variant that exists (probed once per container)."""
    for bytes_file, ops_file in V1_VARIANTS:
        if exists(bytes_file) and exists(ops_file):
            return [bytes_file, ops_file]
    return []


def lists_no_device(text: str) -> bool:
    """True when a v1 rwstat file has only its ``Total`` line."""
    return ":" not in text


def parse_device(token: str, what: str) -> Device:
    """``MAJ:MIN`` as a pair of ints."""
    major, colon, minor = token.partition(":")
    if not colon:
        raise ParseError(what, f"expected MAJ:MIN, got {token[:40]!r}")
    return to_int(major, what), to_int(minor, what)


def parse_v1_rwstat(text: str, what: str) -> dict[Device, dict[str, int]]:
    """A v1 ``io_service_bytes``/``io_serviced`` file: device → op → count."""
    result: dict[Device, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 2 and parts[0] == "Total":
            to_int(parts[1], what)
            continue
        if len(parts) != 3:
            raise ParseError(what, f"expected 'MAJ:MIN Op N', got {line[:60]!r}")
        device = parse_device(parts[0], what)
        result.setdefault(device, {})[parts[1]] = to_int(parts[2], what)
    return result


def parse_io_stat(text: str, what: str) -> dict[Device, dict[str, int]]:
    """v2 ``io.stat``: device → key → value (integers only; ``cost.*`` kept too)."""
    result: dict[Device, dict[str, int]] = {}
    for name, fields in parse_nested_keyed(text, what):
        device = parse_device(name, what)
        values = {}
        for key, value in fields.items():
            if key in ("rbytes", "wbytes", "rios", "wios", "dbytes", "dios"):
                values[key] = to_int(value, what)
        result[device] = values
    return result


def build_v1(
    texts: Mapping[str, str],
    problems: list[str],
    device_names: DeviceNames,
    throttle_counted: bool = True,
) -> BlkioStats:
    """BlkioStats from the v1 variant present in ``texts``.

    ``throttle_counted`` says whether the kernel counts throttle IO on any
    disk at all (see the module docstring); it only matters when the
    throttle files list no device.
    """
    for bytes_file, ops_file in V1_VARIANTS:
        if bytes_file in texts or ops_file in texts:
            break
    else:
        reason = "no blkio statistics file is readable"
        return BlkioStats(available=False, reason=reason, devices=())
    try:
        service_bytes = parse_v1_rwstat(texts.get(bytes_file, ""), bytes_file)
        serviced = parse_v1_rwstat(texts.get(ops_file, ""), ops_file)
    except ParseError as err:
        problems.append(f"{err.what}: {err.reason}")
        return BlkioStats(
            available=False, reason=f"{err.what}: {err.reason}", devices=(), source=bytes_file
        )
    if not service_bytes and not serviced and ".throttle." in bytes_file and not throttle_counted:
        return BlkioStats(
            available=False, reason=NO_THROTTLE_ACCOUNTING, devices=(), source=bytes_file
        )
    merged: dict[Device, dict[str, int]] = {}
    for counts, names in ((service_bytes, _V1_BYTES), (serviced, _V1_OPS)):
        for device, ops in counts.items():
            values = merged.setdefault(device, {})
            for op, key in names.items():
                if op in ops:
                    values[key] = ops[op]
    return BlkioStats(
        available=True, reason=None, devices=_devices(merged, device_names), source=bytes_file
    )


def build_v2(
    texts: Mapping[str, str], problems: list[str], device_names: DeviceNames
) -> BlkioStats:
    """BlkioStats from v2 ``io.stat``."""
    text = texts.get("io.stat")
    if text is None:
        return BlkioStats(available=False, reason="io.stat is not readable", devices=())
    try:
        stat = parse_io_stat(text, "io.stat")
    except ParseError as err:
        problems.append(f"io.stat: {err.reason}")
        return BlkioStats(available=False, reason=f"io.stat: {err.reason}", devices=())
    return BlkioStats(
        available=True, reason=None, devices=_devices(stat, device_names), source="io.stat"
    )


# v1 operation names, as the v2 io.stat keys they correspond to.
_V1_BYTES = {"Read": "rbytes", "Write": "wbytes", "Discard": "dbytes"}
_V1_OPS = {"Read": "rios", "Write": "wios", "Discard": "dios"}


def _devices(
    stat: Mapping[Device, Mapping[str, int]], device_names: DeviceNames
) -> tuple[BlkioDevice, ...]:
    """One record per device, from io.stat-style keys (rbytes wbytes rios wios dbytes dios)."""
    return tuple(
        BlkioDevice(
            major=device[0],
            minor=device[1],
            device=device_names(*device),
            read_bytes=values.get("rbytes"),
            write_bytes=values.get("wbytes"),
            read_ops=values.get("rios"),
            write_ops=values.get("wios"),
            discard_bytes=values.get("dbytes"),
            discard_ops=values.get("dios"),
        )
        for device, values in sorted(stat.items())
    )
