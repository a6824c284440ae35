from __future__ import annotations

import datetime as dt
import json

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from skiptrace.reparse import reparse, unreadable_batches


def _since(text: str) -> dt.datetime:
    """An ISO date or date-time (UTC when no zone is given), or a duration: ``36h``, ``7d``."""
    text = text.strip()
    if text[:-1].isdigit() and text[-1:] in ("h", "d"):
        hours = int(text[:-1]) * (24 if text.endswith("d") else 1)
        return timezone.now() - dt.timedelta(hours=hours)
    when = parse_datetime(text)
    if when is None:
        day = parse_date(text)
        if day is None:
            raise CommandError(f"--since {text!r}: give an ISO date (2026-12-01), a date-time or a duration (36h, 7d)")
        when = dt.datetime.combine(day, dt.time(0))
    if timezone.is_naive(when):
        when = when.replace(tzinfo=dt.UTC)
    return when


class Command(BaseCommand):
    help = ("Read stored unreadable provider answers again (after a parser fix) and serve their items "
            "without paying again. Sends nothing to the provider.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--call-ids", nargs="+", type=int, default=None, metavar="ID",
                            help="only these provider calls (each selects its whole provider request)")
        parser.add_argument("--since", default=None,
                            help="only answers received since then: ISO date/date-time, or 36h / 7d")
        parser.add_argument("--dry-run", action="store_true", help="list what would be read, change nothing")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, **options) -> None:
        since = _since(options["since"]) if options["since"] else None
        if options["dry_run"]:
            batches = unreadable_batches(call_ids=options["call_ids"], since=since)
            self.stdout.write(f"{len(batches)} unreadable provider requests would be read again")
            return
        result = reparse(call_ids=options["call_ids"], since=since).as_dict()
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
            return
        self.stdout.write(
            f"read {result['batches_examined']} unreadable provider requests again: "
            f"{result['batches_served']} now readable, {result['calls_served']} calls, "
            f"{result['items_served']} items served without a new provider call"
        )
        for b in result["served"]:
            self.stdout.write(
                f"  served batch {b['batch_id']}: calls {b['provider_call_ids'][0]}..{b['provider_call_ids'][-1]}, "
                f"{b['items_served']} items, runs {', '.join(b['runs']) or '-'}, "
                f"cost {b['cost_cents_before']} -> {b['cost_cents_after']} cents"
            )
        for b in result["still_unreadable"]:
            self.stdout.write(f"  still unreadable batch {b['batch_id']}: {b['problem']}")
