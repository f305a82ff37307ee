"""Standard output after its reader went away (``| head``)."""

from __future__ import annotations

import os
import sys


def silence_stdout() -> None:
    """After EPIPE on stdout: point it at /dev/null, so later flushes (the
    interpreter's last one too) cannot fail again ("Exception ignored", status 120)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a descriptor (embedded, tests)
        pass
