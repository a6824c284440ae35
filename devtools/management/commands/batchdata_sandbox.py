"""``manage.py batchdata_sandbox``: serve the local BatchData simulator (V1 and V3 paths) on loopback.

Point the product at it with ``BATCHDATA_BASE_URL``; the product never imports the sandbox.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Serve a local simulator of the BatchData skip-trace endpoint (V1 and V3) on loopback "
        "until SIGINT/SIGTERM."
    )

    # The sandbox needs neither the database nor the system checks; it must start on a bare clone.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        from devtools import sandbox

        sandbox.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from devtools import sandbox

        host = options.get("host") or "127.0.0.1"
        if not sandbox.is_loopback(host):
            raise CommandError(
                f"Refusing to listen on {host!r}: the BatchData sandbox binds loopback only "
                "(127.x.x.x, localhost or ::1)."
            )
        try:
            config = sandbox.config_from_options(options)
        except ValueError as exc:
            raise CommandError(str(exc)) from None

        def log(line: str) -> None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

        try:
            server = sandbox.SandboxServer(
                host, options.get("port", 8787), config, log=log if options.get("verbose") else None
            )
        except OSError as exc:
            raise CommandError(f"Cannot listen on {host}:{options.get('port')}: {exc}") from None

        def announce(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        sandbox.serve_until_signal(server, announce)
        stats = server.stats.snapshot()
        announce(f"BatchData sandbox stopped after {stats['requests']} requests ({stats['items']} items)")
