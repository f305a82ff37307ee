"""``python -m cgstats.dump``: show what containers are doing, now or every step.

Without ``--watch`` every container is read once. With ``--watch`` a
:class:`~cgstats.collector.Collector` samples them every ``--step`` seconds
(``--count`` times, or until interrupted) and shows rates: a refreshing table,
or with ``--json`` one object per container per step with ``rates`` (and
``events`` when any). Events of containers without a reading (``gone``,
``error``) go to stderr.

``--sink URL`` (repeatable, needs ``--watch``) also feeds each step to a
sink named by URL (see :func:`cgstats.sinks.open_sink` and docs/sinks.md).
The table or ``--json`` output stays on stdout, unless ``--quiet`` is given
or a sink writes to stdout itself (``jsonl:-``, ``msgpack:-``): then that
sink's output is all stdout carries. Sink failures are one line each on
stderr (at most one a minute per sink) and a summary at the end; they do
not change the exit status.

Exit status: 0 on success (also when ``--watch`` is interrupted); 1 when a
named container cannot be found, resolved (ambiguous prefix) or read (gone);
2 on usage errors, including a CONTAINER that is not a valid name at all
(checked before anything is read) and a ``--sink`` URL that names no sink
or a sink that cannot be made (a file that cannot be opened). Errors are one line on stderr; no
traceback reaches the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
from collections.abc import Sequence
from typing import Any, Optional, TextIO

from cgstats._stdout import silence_stdout
from cgstats.collector import Collector, Reading
from cgstats.discovery import parse_spec
from cgstats.errors import CgstatsError, ContainerGone, InvalidContainerId
from cgstats.events import Event
from cgstats.host import ROOT_ENV, Host
from cgstats.report import format_sample, format_watch_table
from cgstats.sinks import open_sink

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
    parser.add_argument(
        "--sink",
        action="append",
        default=[],
        metavar="URL",
        help="with --watch, also send every step to the sink URL names (repeatable): "
        "jsonl:///var/log/cgstats.jsonl, jsonl:-, msgpack+tcp://127.0.0.1:24224, "
        "falcon://10.0.0.1:8433?endpoint=web-01, ... (docs/sinks.md)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="with --sink, print no table or JSON (only the sinks get the readings)",
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
    if not args.watch and args.sink:
        parser.error("--sink needs --watch (--watch --count 1 sends one sample)")
    if args.quiet and not args.sink:
        parser.error("--quiet needs --sink")
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
        silence_stdout()
        return EXIT_OK


def _open_sinks(urls: Sequence[str], err: TextIO) -> Optional[list[Any]]:
    """The sinks ``urls`` name, or None (after one line on ``err``) if one cannot be made."""
    sinks: list[Any] = []
    for url in urls:
        try:
            sinks.append(open_sink(url))
        except Exception as error:  # SinkURLError, SinkLoadError, OSError, a sink's own
            print(f"cgstats: --sink {url}: {error}", file=err)
            for sink in sinks:
                with contextlib.suppress(Exception):
                    sink.close()
            return None
    if sum(bool(getattr(sink, "uses_stdout", False)) for sink in sinks) > 1:
        print("cgstats: --sink: at most one sink can write to stdout", file=err)
        for sink in sinks:
            with contextlib.suppress(Exception):
                sink.close()
        return None
    return sinks


class _OneLine(logging.Formatter):
    """Log records as ``cgstats: message: ExceptionType: text``, never a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"cgstats: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text += f": {type(error).__name__}: {error}"
        return text


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
    """The watch's sink: prints each tick's readings (unless ``quiet``) and the
    events of trouble; stops the collector on a closed pipe."""

    def __init__(
        self, collector: Collector, out: TextIO, err: TextIO, as_json: bool, quiet: bool = False
    ) -> None:
        self.collector = collector
        self.out = out
        self.err = err
        self.as_json = as_json
        self.quiet = quiet
        self.refresh = not as_json and not quiet and out.isatty()

    def emit(self, readings: Sequence[Reading]) -> None:
        if self.quiet:
            return
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
            silence_stdout()
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
    sink_log = logging.getLogger("cgstats.sinks")
    handler = logging.StreamHandler(err)
    handler.setFormatter(_OneLine())
    handler.setLevel(logging.WARNING)
    sink_log.addHandler(handler)
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
        sinks = _open_sinks(args.sink, err)
        if sinks is None:
            return EXIT_USAGE
        collector = Collector(targets, step=args.step, host=host, rescan_s=max(args.step, 2.0))
        # A sink on stdout owns it: a table between its lines would corrupt them.
        on_stdout = [sink for sink in sinks if getattr(sink, "uses_stdout", False)]
        printer = _Printer(collector, out, err, args.json, quiet=args.quiet or bool(on_stdout))
        for sink in on_stdout:
            sink.on_pipe_closed = collector.stop  # | head: end the watch, as the table does
        collector.sinks.extend([printer, *sinks])
        with collector, contextlib.suppress(KeyboardInterrupt):  # how an endless watch ends
            collector.run(args.count)
        _report_sinks(collector, err)
        return EXIT_OK
    finally:
        sink_log.removeHandler(handler)
        host.close()


def _report_sinks(collector: Collector, err: TextIO) -> None:
    """One line per sink that failed or dropped data during the watch."""
    for stats in collector.sink_stats():
        problems = [
            f"{stats[key]} {label}"
            for key, label in (
                ("errors", "errors"),
                ("dropped_batches", "steps dropped"),
            )
            if stats[key]
        ]
        if stats["abandoned"]:
            problems.append("still busy at exit, abandoned")
        if problems:
            print(f"cgstats: sink {stats['sink']}: {', '.join(problems)}", file=err)


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
