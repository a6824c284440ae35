"""Running it: loopback only, the command line (``manage.py batchdata_sandbox``, ``python -m
devtools.sandbox``), serving until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from devtools.sandbox.config import FAULTS, UNREADABLE_KINDS, SandboxConfig, _coerce_config_value
from devtools.sandbox.server import SandboxServer


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_until_signal(server: SandboxServer, announce: Callable[[str], None]) -> None:
    """Serve until SIGINT or SIGTERM (main thread only), then stop the server and return."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        announce(f"BatchData sandbox listening on {server.url} (set BATCHDATA_BASE_URL to this)")
        while not stop.wait(0.2):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options shared by ``manage.py batchdata_sandbox`` and ``python -m devtools.sandbox``."""
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port (default 8787; 0 = any free port)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds of latency per request")
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="fraction of requests answered with an error"
    )
    parser.add_argument(
        "--error-status", type=int, default=500, help="status of --error-rate errors (default 500)"
    )
    parser.add_argument("--match-rate", type=float, default=0.7, help="fraction of inputs that match")
    parser.add_argument("--token", default=None, help="require exactly this bearer token (default: any)")
    parser.add_argument("--seed", type=int, default=7, help="seed of every deterministic choice")
    parser.add_argument("--fault", choices=FAULTS, default=None, help="force a fault on every request")
    parser.add_argument("--hang", type=float, default=30.0, help="seconds the timeout fault hangs")
    parser.add_argument("--retry-after", type=int, default=None, help="Retry-After header on 429")
    parser.add_argument(
        "--unreadable-rate",
        type=float,
        default=0.0,
        help="fraction of 200 answers replaced by a billed 200 the client cannot map",
    )
    parser.add_argument(
        "--unreadable-kinds",
        default=None,
        help=f"comma-separated rotation of unreadable kinds (default all: {','.join(UNREADABLE_KINDS)})",
    )
    parser.add_argument(
        "--match-count-extra",
        type=int,
        default=0,
        help="add this to matchCount of every 200 answer (capped at the request count)",
    )
    parser.add_argument(
        "--accept-x-api-key",
        action="store_true",
        help="also accept the token in X-API-Key (AUTH_STYLE=x-api-key)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request line to stderr")


def config_from_options(options: dict[str, Any]) -> SandboxConfig:
    """A SandboxConfig from parsed options; raises ValueError naming a bad option."""
    for name in ("latency", "error_rate", "match_rate", "hang", "unreadable_rate", "match_count_extra"):
        value = options.get(name)
        if value is not None and value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must not be negative")
    for name in ("error_rate", "match_rate", "unreadable_rate"):
        if options.get(name) is not None and options[name] > 1:
            raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 1")
    try:
        kinds = _coerce_config_value("unreadable_kinds", options.get("unreadable_kinds"))
    except ValueError as exc:
        raise ValueError(f"--unreadable-kinds: {exc}") from None
    return SandboxConfig(
        latency_s=options.get("latency") or 0.0,
        error_rate=options.get("error_rate") or 0.0,
        error_status=options.get("error_status") or 500,
        fault=options.get("fault"),
        hang_s=30.0 if options.get("hang") is None else options["hang"],
        retry_after=options.get("retry_after"),
        token=options.get("token") or None,
        match_rate=0.7 if options.get("match_rate") is None else options["match_rate"],
        seed=7 if options.get("seed") is None else options["seed"],
        accept_x_api_key=bool(options.get("accept_x_api_key")),
        unreadable_rate=options.get("unreadable_rate") or 0.0,
        unreadable_kinds=kinds,
        match_count_extra=options.get("match_count_extra") or 0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.sandbox",
                                     description="A local simulator of the BatchData property skip-trace endpoint, V1 and V3.")
    add_arguments(parser)
    args = vars(parser.parse_args(argv))
    if not is_loopback(args["host"]):
        parser.error(f"refusing to listen on {args['host']!r}: the sandbox binds loopback only")
    try:
        config = config_from_options(args)
    except ValueError as exc:
        parser.error(str(exc))
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args["verbose"] else None
    server = SandboxServer(args["host"], args["port"], config, log=log)
    serve_until_signal(server, lambda line: print(line, flush=True))
    return 0

