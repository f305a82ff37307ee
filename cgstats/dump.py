"""``python -m cgstats.dump``: show what containers are doing, now.

Exit status: 0 on success; 1 when a named container cannot be found,
resolved (ambiguous prefix) or read (gone); 2 on usage errors, including a
CONTAINER that is not a valid name at all (checked before anything is read).
Errors are one line on stderr; no traceback reaches the terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Optional, TextIO

from cgstats.discovery import parse_spec
from cgstats.errors import CgstatsError, ContainerGone, InvalidContainerId
from cgstats.host import ROOT_ENV, Host
from cgstats.report import format_sample

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cgstats.dump",
        description="Read container counters straight from the kernel's cgroup filesystem.",
        epilog="A CONTAINER is a 64-hex ID, a unique prefix of at least 4 hex characters, "
        "an absolute cgroup path such as /system.slice/cron.service, or pid:N.",
    )
    parser.add_argument("containers", nargs="*", metavar="CONTAINER")
    parser.add_argument("--all", action="store_true", help="every container on the host")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per container per line"
    )
    parser.add_argument(
        "--root",
        metavar="DIR",
        help=f"look up /proc and /sys under DIR (default ${ROOT_ENV} or /)",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.all and not args.containers:
        parser.error("name at least one CONTAINER, or use --all")
    if args.all and args.containers:
        parser.error("--all cannot be combined with CONTAINER arguments")
    invalid = _invalid_specs(args.containers)
    if invalid:
        for message in invalid:
            print(f"cgstats: {message}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _dump(args, sys.stdout, sys.stderr)
    except CgstatsError as err:
        print(f"cgstats: {err}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except BrokenPipeError:
        return EXIT_OK


def _invalid_specs(specs: Sequence[str]) -> list[str]:
    """Messages for every spec that is not a container name at all (a usage error)."""
    messages = []
    for spec in specs:
        try:
            parse_spec(spec)
        except InvalidContainerId as error:
            messages.append(str(error))
    return messages


def _dump(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    status = EXIT_OK
    with Host(args.root) as host:
        if args.all:
            targets: list[object] = list(host.containers())
            if not targets:
                print("cgstats: no containers found", file=err)
        else:
            targets = list(args.containers)
        for target in targets:
            try:
                sample = host.read(target)  # type: ignore[arg-type]
            except ContainerGone:
                if args.all:
                    continue  # removed since it was listed: nothing to report
                print(f"cgstats: container {target!r} is gone", file=err)
                status = max(status, EXIT_NOT_FOUND)
                continue
            except InvalidContainerId as error:  # e.g. a path whose symlinks lead out
                print(f"cgstats: {error}", file=err)
                status = EXIT_USAGE
                continue
            except CgstatsError as error:
                print(f"cgstats: {error}", file=err)
                status = max(status, EXIT_NOT_FOUND)
                continue
            if args.json:
                out.write(json.dumps(sample.to_dict(), separators=(",", ":")) + "\n")
            else:
                out.write(format_sample(sample) + "\n")
            for problem in sample.errors:
                print(f"cgstats: warning: {sample.id[:12]}: {problem}", file=err)
            out.flush()
    return status


def run() -> None:
    """Entry point: never lets a traceback reach the terminal."""
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exit_:
        raise exit_
    except Exception as error:  # the last line of defence of the CLI
        print(f"cgstats: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        code = EXIT_NOT_FOUND
    sys.exit(code)


if __name__ == "__main__":
    run()
