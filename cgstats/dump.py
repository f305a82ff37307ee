"""``python -m cgstats.dump``: show what containers are doing, now or every step.

Without ``--watch`` every container is read once. With ``--watch`` a
:class:`~cgstats.collector.Collector` samples them every ``--step`` seconds
(``--count`` times, or until interrupted) and shows rates: a refreshing table,
or with ``--json`` one object per container per step with ``rates`` (and
``events`` when any). Events of containers without a reading (``gone``,
``error``) go to stderr.

Exit status: 0 on success (also when ``--watch`` is interrupted); 1 when a
named container cannot be found, resolved (ambiguous prefix) or read (gone);
2 on usage errors, including a CONTAINER that is not a valid name at all
(checked before anything is read). Errors are one line on stderr; no
traceback reaches the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import Optional, TextIO

from cgstats.collector import Collector, Reading
from cgstats.discovery import parse_spec
from cgstats.errors import CgstatsError, ContainerGone, InvalidContainerId
from cgstats.events import Event
from cgstats.host import ROOT_ENV, Host
from cgstats.report import format_sample, format_watch_table

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
        "--watch", action="store_true", help="sample every --step seconds and show rates"
    )
    parser.add_argument(
        "--step",
        type=_seconds,
        default=2.0,
        metavar="S",
        help="seconds between samples with --watch (default 2)",
    )
    parser.add_argument(
        "--count",
        type=_count,
        metavar="N",
        help="with --watch, stop after N samples (default: until interrupted)",
    )
    parser.add_argument(
        "--root",
        metavar="DIR",
        help=f"look up /proc and /sys under DIR (default ${ROOT_ENV} or /)",
    )
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.all and not args.containers:
        parser.error("name at least one CONTAINER, or use --all")
    if args.all and args.containers:
        parser.error("--all cannot be combined with CONTAINER arguments")
    if not args.watch and args.count is not None:
        parser.error("--count needs --watch")
    invalid = _invalid_specs(args.containers)
    if invalid:
        for message in invalid:
            print(f"cgstats: {message}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.watch:
            return _watch(args, sys.stdout, sys.stderr)
        return _dump(args, sys.stdout, sys.stderr)
    except CgstatsError as err:
        print(f"cgstats: {err}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null, so the interpreter's last flush of
    what is still buffered does not fail again ("Exception ignored", status 120)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a descriptor (embedded, tests)
        pass


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


class _Printer:
    """The watch's sink: prints each tick's readings; stops the collector on a closed pipe."""

    def __init__(self, collector: Collector, out: TextIO, err: TextIO, as_json: bool) -> None:
        self.collector = collector
        self.out = out
        self.err = err
        self.as_json = as_json
        self.refresh = not as_json and out.isatty()

    def emit(self, readings: Sequence[Reading]) -> None:
        try:
            if self.as_json:
                for reading in readings:
                    self.out.write(json.dumps(reading.to_dict(), separators=(",", ":")) + "\n")
            else:
                if self.refresh:
                    self.out.write("\x1b[H\x1b[2J")  # home and clear, as watch(1) does
                self.out.write(format_watch_table(readings) + ("" if self.refresh else "\n"))
            self.out.flush()
        except BrokenPipeError:
            _silence_stdout()
            self.collector.stop()

    def emit_events(self, events: Sequence[Event]) -> None:
        for event in events:
            if event.kind in ("gone", "error"):
                name = event.container_id
                short = name if name.startswith("/") else name[:12]
                print(f"cgstats: {short}: {event.kind}: {event.detail}", file=self.err)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _watch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    logging.getLogger("cgstats.collector").setLevel(logging.CRITICAL)  # events say it all
    host = Host(args.root, evict_idle_s=2 * args.step)
    try:
        targets: Optional[list[str]] = None
        if not args.all:
            # Resolve up front, so a wrong name fails now, as without --watch; the
            # collector keeps the names, so a container restarted meanwhile is found.
            targets = list(args.containers)
            for spec in targets:
                try:
                    host.resolve(spec)
                except InvalidContainerId as error:
                    print(f"cgstats: {error}", file=err)
                    return EXIT_USAGE
                except CgstatsError as error:
                    print(f"cgstats: {error}", file=err)
                    return EXIT_NOT_FOUND
        collector = Collector(targets, step=args.step, host=host, rescan_s=max(args.step, 2.0))
        printer = _Printer(collector, out, err, args.json)
        collector.sinks.append(printer)
        with collector, contextlib.suppress(KeyboardInterrupt):  # how an endless watch ends
            collector.run(args.count)
        return EXIT_OK
    finally:
        host.close()


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
