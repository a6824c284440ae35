from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from skiptrace import admission, reports, runs
from skiptrace.intake import IntakeError, iter_csv_leads
from skiptrace.models import Run
from skiptrace.money import Policy


class Command(BaseCommand):
    help = "Create a run from a CSV file and print its run_id; --wait also works it here with a progress bar."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="CSV of leads (UTF-8 with or without BOM, or Windows-1252)")
        parser.add_argument("--label", default=None, help="source label (default: the file name)")
        parser.add_argument("--force", action="store_true", help="re-fetch even when cached")
        parser.add_argument("--fallback", action="store_true", help="serve expired cache (stale) when the provider is down")
        parser.add_argument("--no-sanitized-retry", action="store_true", help="never retry without the unit")
        parser.add_argument("--wait", action="store_true", help="work the run in this process and print the summary")
        parser.add_argument("--concurrency", type=int, default=None, help="threads with --wait")

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        policy = Policy(
            force=options["force"], fallback=options["fallback"],
            retry_sanitized=runs.default_policy().retry_sanitized and not options["no_sanitized_retry"],
        )
        try:
            with path.open("rb") as fh:
                created = runs.run_create(source_label=options["label"] or path.name, leads=iter_csv_leads(fh), policy=policy)
        except IntakeError as exc:
            raise CommandError(f"{path}: {exc} (nothing was created)") from None
        run = created.run
        self.stdout.write(run.run_id)
        self.stderr.write(f"{created.total} leads, {created.invalid} invalid (failed at intake)")
        refusal = admission.admit(admission.run_signatures(run), policy=policy, now=run.created_at).refusal
        if refusal is not None:  # the operator's run is kept: it waits (see skiptrace.admission)
            self.stderr.write(admission.operator_warning(refusal))
        if options["wait"]:
            self._wait(run, options["concurrency"])

    def _wait(self, run: Run, concurrency: int | None) -> None:
        from skiptrace.worker import Worker

        worker = Worker(concurrency=concurrency, run_id=run.run_id)

        def stop(signum, frame):  # noqa: ARG001
            worker.shutdown = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        thread = threading.Thread(target=worker.run, kwargs={"exit_when_idle": True}, daemon=True)
        start = time.monotonic()
        thread.start()
        progress = Progress(self.stderr, total=run.total or 0)
        while thread.is_alive():
            thread.join(timeout=0.5)
            run.refresh_from_db()
            progress.show(run, time.monotonic() - start)
        run.refresh_from_db()
        progress.show(run, time.monotonic() - start, final=True)  # the last state, once
        if run.state != "finished":
            self.stderr.write(f"run {run.run_id} is {run.state} ({run.reason or 'stopped'}); resume it later")
            return
        report = reports.run_report(run)
        report_path, csv_path = reports.artifact_paths(run.run_id)
        if not report_path.exists():
            report_path, csv_path = reports.write_run_artifacts(run)
        self.stdout.write(summary(report))
        self.stdout.write(f"report.json:  {report_path}")
        self.stdout.write(f"enriched.csv: {csv_path}")


def summary(report: dict) -> str:
    t = report["totals"]
    return "\n".join([
        f"run {report['run_id']} ({report.get('source_label') or '-'}) in {report['duration_s']:.1f}s",
        f"  total {t['total']}  done {t['done']}  failed {t['failed']}",
        f"  cache hits {t['cached_hits']}  provider calls {t['provider_calls']}  cost ${t['cost_usd']:.2f}",
        f"  cache hit ratio {report['cache_hit_ratio']:.1%}  phones {report['hit_rate']['phone_any_pct']}%  "
        f"emails {report['hit_rate']['email_any_pct']}%",
        f"  budget: ${report['budgets']['spent_usd']:.2f} of ${report['budgets']['daily_cap_usd']:.2f} spent today",
        *[f"  errors: {e['reason']} x{e['count']}" for e in report["errors"]],
    ])


class Progress:
    """A one-line progress bar: done/failed/cached, rate and ETA (plain lines when not a terminal)."""

    def __init__(self, out, *, total: int) -> None:
        self.out, self.total = out, max(total, 1)
        self.tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        self._last_key: tuple = ()

    def show(self, run: Run, elapsed: float, *, final: bool = False) -> None:
        settled = (run.done or 0) + (run.failed or 0)
        rate = settled / elapsed if elapsed > 0 else 0.0
        eta = (self.total - settled) / rate if rate > 0 else float("inf")
        width = 30
        filled = int(width * settled / self.total)
        bar = "#" * filled + "-" * (width - filled)
        line = (f"[{bar}] {settled}/{self.total} done {run.done or 0} failed {run.failed or 0} "
                f"cached {run.cache_hits} {rate:.0f}/s ETA {'-' if eta == float('inf') else f'{eta:.0f}s'} {run.state}")
        key = (settled, run.cache_hits, run.state)
        if self.tty:
            self.out.write("\r" + line, ending="\n" if final else "")
            self.out.flush()
        elif key != self._last_key:  # a log file gets a line per change, not per tick
            self.out.write(line)
        self._last_key = key
