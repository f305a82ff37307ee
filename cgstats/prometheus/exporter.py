"""The exporter: ``python -m cgstats.prometheus --port 9101``.

Usage: ``python -m cgstats.prometheus [--port P] [--addr A] [--root DIR] [CONTAINER ...]``.

Serves :class:`~cgstats.prometheus.CgroupCollector` over HTTP (every path
answers with the exposition; ``/metrics`` is the usual one) from a WSGI
server on one thread: scrapes are read one after the other, which a
:class:`~cgstats.Host` wants anyway. Ctrl-C or SIGTERM ends it with status 0.
Errors are one line on stderr: 1 for a port that cannot be listened on, no
cgroup filesystem or prometheus_client missing; 2 for usage errors (a name
that is not a container name at all).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from cgstats.discovery import parse_spec
from cgstats.errors import CgstatsError, InvalidContainerId
from cgstats.host import Host

if TYPE_CHECKING:
    from cgstats.prometheus.collector import CgroupCollector

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
DEFAULT_PORT = 9101
DEFAULT_ADDR = "0.0.0.0"

log = logging.getLogger("cgstats.prometheus")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cgstats.prometheus",
        description="Serve cAdvisor-named container metrics, read from the cgroup "
        "filesystem at every scrape, for Prometheus.",
    )
    parser.add_argument(
        "containers",
        nargs="*",
        metavar="CONTAINER",
        help="container ID, unique prefix, cgroup path or pid:N (default: every container)",
    )
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help="TCP port (default 9101)")
    parser.add_argument(
        "--addr", default=DEFAULT_ADDR, help="address to listen on (default 0.0.0.0, all)"
    )
    parser.add_argument(
        "--root", help="look up /proc and /sys under DIR (the host's / mounted in a container)"
    )
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535: {text!r}")
    return port


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape on stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server6(WSGIServer):
    address_family = socket.AF_INET6


def make_exporter(collector: CgroupCollector, addr: str, port: int) -> WSGIServer:
    """A WSGI server answering every request with the collector's exposition.

    Raises :class:`OSError` if it cannot listen. ``port`` 0 takes a free port
    (``server.server_port`` says which).
    """
    from prometheus_client import CollectorRegistry, make_wsgi_app

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server_class = _Server6 if ":" in addr else WSGIServer
    return make_server(
        addr, port, make_wsgi_app(registry), server_class=server_class, handler_class=_QuietHandler
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    for spec in args.containers:
        try:
            parse_spec(spec)
        except InvalidContainerId as error:
            print(f"cgstats.prometheus: {error}", file=sys.stderr)
            return EXIT_USAGE
    try:
        from cgstats.prometheus.collector import CgroupCollector
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("prometheus_client"):
            raise
        from cgstats.prometheus import INSTALL_HINT

        print(f"cgstats.prometheus: {INSTALL_HINT}", file=sys.stderr)
        return EXIT_ERROR
    logging.basicConfig(level=logging.WARNING, format="cgstats.prometheus: %(message)s")
    try:
        host = Host(args.root)
    except CgstatsError as error:
        print(f"cgstats.prometheus: {error}", file=sys.stderr)
        return EXIT_ERROR
    try:
        with CgroupCollector(host, args.containers or None) as collector:
            try:
                server = make_exporter(collector, args.addr, args.port)
            except OSError as error:
                reason = error.strerror or str(error)
                print(
                    f"cgstats.prometheus: cannot listen on {args.addr}:{args.port}: {reason}",
                    file=sys.stderr,
                )
                return EXIT_ERROR
            with server:
                return _serve(server, args.addr)
    finally:
        host.close()


def _serve(server: WSGIServer, addr: str) -> int:
    """Serve on a thread until SIGINT or SIGTERM, then shut the server down.

    The signals only set an event: raised as KeyboardInterrupt inside a
    request, wsgiref's handler would catch it (a bare ``except``), print a
    traceback and keep serving.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=server.serve_forever, name="cgstats-exporter", daemon=True)
    thread.start()
    shown = f"[{addr}]" if ":" in addr else addr
    print(
        f"cgstats.prometheus: serving http://{shown}:{server.server_port}/metrics",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.wait(1.0):
            if not thread.is_alive():  # serve_forever itself failed
                return EXIT_ERROR
    finally:
        server.shutdown()
        thread.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


def run() -> None:
    """Entry point: never lets a traceback reach the terminal."""
    try:
        code = main()
    except KeyboardInterrupt:
        code = EXIT_OK
    except SystemExit:
        raise
    except Exception as error:  # the last line of defence of the CLI
        message = f"internal error: {type(error).__name__}: {error}"
        print(f"cgstats.prometheus: {message}", file=sys.stderr)
        code = EXIT_ERROR
    sys.exit(code)
