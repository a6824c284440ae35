from __future__ import annotations

import signal

from django.core.management.base import BaseCommand, CommandParser

from skiptrace.worker import Worker


class Command(BaseCommand):
    help = "Work every run's queued items until SIGTERM/SIGINT (which finish what is in flight, then exit 0)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, default=None, help="threads (default SKIP_TRACE_CONCURRENCY)")
        parser.add_argument("--exit-when-idle", action="store_true", help="stop when no run has work left")

    def handle(self, *args, **options) -> None:
        if options["concurrency"] is not None and options["concurrency"] < 1:
            from django.core.management.base import CommandError

            raise CommandError("--concurrency must be at least 1")
        worker = Worker(concurrency=options["concurrency"])

        def stop(signum, frame):  # noqa: ARG001 - signal handler signature
            worker.shutdown = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        worker.run(exit_when_idle=options["exit_when_idle"])
