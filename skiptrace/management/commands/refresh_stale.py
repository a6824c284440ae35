"""``manage.py refresh_stale [--older-than DAYS] [--yes] [--dry-run]``: re-trace the leads whose DNC
status is stale, after quoting what it may cost.

Prints the quote (leads, billable inputs after de-duplication, worst-case cost, budget left), asks
for confirmation on a terminal unless ``--yes`` (without a terminal and without ``--yes`` it refuses
and exits 1: it never spends on a guess), then creates ONE forced run of those leads; the worker
works it through the money path (budgeted, one charge per input). See ``contacts.refresh``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from contacts import refresh


def _days(value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        raise CommandError(f"--older-than {value!r} is not a number of days") from None
    if not days >= 0 or days == float("inf"):
        raise CommandError(f"--older-than {value!r} must be a finite number of days >= 0")
    return days


def _now(value: str) -> dt.datetime:
    when = parse_datetime(value)
    if when is None:
        raise CommandError(f"--now {value!r} is not an ISO date-time")
    return when if timezone.is_aware(when) else when.replace(tzinfo=dt.UTC)


class Command(BaseCommand):
    help = "Re-trace (force, budgeted) the leads whose National DNC status is older than the maximum age."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", dest="older_than", default=None, metavar="DAYS",
                            help="a DNC status older than this many days is stale (default: DNC_MAX_AGE_DAYS)")
        parser.add_argument("--yes", action="store_true", help="do not ask: spend up to the quoted worst case")
        parser.add_argument("--dry-run", action="store_true", help="print the quote only")
        parser.add_argument("--now", type=_now, default=None, help=argparse.SUPPRESS)  # an injected clock (tests)

    def handle(self, *args, **options) -> None:
        now = options["now"] or timezone.now()
        older_than = None if options["older_than"] is None else _days(options["older_than"])
        leads = refresh.stale_leads(now=now, older_than_days=older_than)
        inputs = refresh.lead_inputs(leads.iterator(chunk_size=2000))
        quote = refresh.quote(inputs, now=now, max_age_days=older_than)
        for line in quote.lines():
            self.stdout.write(line)
        if not inputs:
            self.stdout.write("nothing to re-trace")
            return
        if options["dry_run"]:
            self.stdout.write("dry run: nothing was sent")
            return
        if not options["yes"]:
            stdin = options.get("stdin") or sys.stdin
            if not stdin.isatty():
                raise CommandError("refusing to spend without a confirmation: no terminal to ask on; "
                                   "re-run with --yes to accept the quote above")
            self.stdout.write(f"Re-trace {quote.leads} lead(s), up to ${quote.worst_case_cents / 100:,.2f}? [y/N] ",
                              ending="")
            self.stdout.flush()
            answer = stdin.readline().strip().lower()
            if answer not in ("y", "yes"):
                raise CommandError("not confirmed: nothing was sent")
        run = refresh.refresh(inputs, now=now)
        self.stdout.write(f"run {run.run_id} created: {run.total} lead(s), {run.queued} queued "
                          f"(the worker sends them; watch /api/skiptrace-runs/{run.run_id}/status)")
        self.stdout.write(run.run_id)
