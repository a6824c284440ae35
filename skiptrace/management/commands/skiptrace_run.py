"""``manage.py skiptrace_run FILE [--wait] [--log-file PATH]``: a run from a CSV, the operator's tool.

With ``--wait`` the run is worked here and a progress bar shows done / failed / cached, the run's
provider calls and settled spend (``selectors.run_money``: the same count as the run page and the
report), rate and ETA. The bar has its own line: log records are printed above it (the console log
handler is swapped for ``AboveTheBar`` while it is shown) or go to ``--log-file``. Not a terminal:
a plain line every ``PLAIN_EVERY_S``. The summary goes to stdout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from skiptrace import admission, reports, runs
from skiptrace.intake import IntakeError, iter_csv_leads
from skiptrace.models import AuditAction, AuditEvent, Run
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
        parser.add_argument("--log-file", default=None,
                            help="with --wait: write log records to this file instead of above the progress bar")

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
        Run.objects.filter(pk=run.pk).update(created_via="cli")
        AuditEvent.record(AuditAction.RUN_CREATED, run_id=run.run_id, via="cli",
                          detail=f"{path.name}: {created.total} leads")
        self.stdout.write(run.run_id)
        self.stderr.write(f"{created.total} leads, {created.invalid} invalid (failed at intake)", style_func=_plain)
        refusal = admission.admit(admission.run_signatures(run), policy=policy, now=run.created_at).refusal
        if refusal is not None:  # the operator's run is kept: it waits (see skiptrace.admission)
            self.stderr.write(admission.operator_warning(refusal))
        if options["wait"]:
            self._wait(run, options["concurrency"], options["log_file"])

    def _wait(self, run: Run, concurrency: int | None, log_file: str | None = None) -> None:
        from skiptrace.worker import Worker

        worker = Worker(concurrency=concurrency, run_id=run.run_id)

        def stop(signum, frame):  # noqa: ARG001
            worker.shutdown = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        def work() -> None:
            try:
                worker.run(exit_when_idle=True)
            finally:
                connection.close()  # this thread's own (the worker's threads close theirs)

        thread = threading.Thread(target=work, daemon=True)
        start = time.monotonic()
        progress = Progress(self.stderr, total=run.total or 0)
        with logs_beside(progress, log_file):
            thread.start()
            while thread.is_alive():
                thread.join(timeout=TICK_S)
                run.refresh_from_db()
                progress.show(run, time.monotonic() - start)
            run.refresh_from_db()
            progress.show(run, time.monotonic() - start, final=True)  # the last state, once, on its own line
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


TICK_S = 0.5  # how often the bar is redrawn (a terminal)
PLAIN_EVERY_S = 5.0  # how often a progress line is printed when stderr is not a terminal
SPEND_EVERY_S = 0.5  # how often the run's spend and provider calls are read again (one indexed aggregate)
CLEAR_LINE = "\r\x1b[K"  # back to column 0, erase to the end of the line


def run_money(run_id: str) -> dict:
    """The run's provider calls and settled / in-flight spend, by the one definition every page and
    report uses (``selectors.run_money``)."""
    try:
        from skiptrace.selectors import run_money as shared
    except ImportError:  # pragma: no cover - an older selectors module: the same definition here
        shared = None
    if shared is not None:
        return shared([run_id])[run_id]
    from django.db.models import Count, Q, Sum

    from skiptrace.models import OPEN_CALL_STATES, ProviderCall

    return ProviderCall.objects.filter(run_id=run_id).aggregate(
        provider_calls=Count("id"),
        settled_cents=Sum("cost_cents", filter=~Q(state__in=OPEN_CALL_STATES), default=0),
        in_flight_cents=Sum("estimate_cents", filter=Q(state__in=OPEN_CALL_STATES), default=0),
    )


class Progress:
    """The progress bar, on its own line: done/failed/cached, provider calls, settled spend (and
    the worst case in flight), rate and ETA.

    On a terminal it is redrawn in place (``\\r``); a log record is printed *above* it (``above``:
    clear the bar's line, print the record and a newline, draw the bar again), so the two never
    share a line. Not a terminal (a pipe, a log file): a plain line every ``PLAIN_EVERY_S`` and
    the final one, never a ``\\r``.
    """

    def __init__(self, out, *, total: int, tty: bool | None = None, clock=time.monotonic) -> None:
        self.out, self.total = out, max(total, 1)
        self.tty = _isatty(out) if tty is None else tty
        self.clock = clock
        self.lock = threading.RLock()
        self.line = ""  # the bar as last drawn (a terminal: what is on its line now)
        self._drawn = False
        self._last_plain: float | None = None
        self._money: dict = {}
        self._money_at: float | None = None

    def _write(self, text: str) -> None:
        if hasattr(self.out, "style_func"):  # a command's OutputWrapper: no ending added, no error colour
            self.out.write(text, style_func=_plain, ending="")
        else:
            self.out.write(text)
        self.out.flush()

    def money(self, run: Run, *, fresh: bool = False) -> dict:
        now = self.clock()
        if fresh or self._money_at is None or now - self._money_at >= SPEND_EVERY_S:
            self._money, self._money_at = run_money(run.run_id), now
        return self._money

    def render(self, run: Run, elapsed: float, money: dict) -> str:
        settled = (run.done or 0) + (run.failed or 0)
        rate = settled / elapsed if elapsed > 0 else 0.0
        eta = (self.total - settled) / rate if rate > 0 else float("inf")
        width = 24
        filled = min(width, int(width * settled / self.total))
        bar = "#" * filled + "-" * (width - filled)
        spend = f"${money.get('settled_cents', 0) / 100:.2f}"
        if money.get("in_flight_cents"):
            spend += f" (+${money['in_flight_cents'] / 100:.2f} in flight)"
        return (f"[{bar}] {settled}/{self.total} done {run.done or 0} failed {run.failed or 0} "
                f"cached {run.cache_hits} | calls {money.get('provider_calls', 0)} spent {spend} | "
                f"{rate:.0f}/s ETA {'-' if eta == float('inf') else f'{eta:.0f}s'} {run.state}")

    def show(self, run: Run, elapsed: float, *, final: bool = False) -> None:
        line = self.render(run, elapsed, self.money(run, fresh=final))
        with self.lock:
            self.line = line
            if self.tty:
                self._write(CLEAR_LINE + line + ("\n" if final else ""))
                self._drawn = not final
                if final:
                    self.line = ""
                return
            now = self.clock()
            if final or self._last_plain is None or now - self._last_plain >= PLAIN_EVERY_S:
                self._write(line + "\n")
                self._last_plain = now

    def above(self, text: str) -> None:
        """Print ``text`` (a log record) on its own line above the bar."""
        with self.lock:
            if self.tty and self._drawn:
                self._write(CLEAR_LINE + text + "\n" + self.line)
            else:
                self._write(text + "\n")


def _plain(text: str) -> str:
    return text


def _isatty(out) -> bool:
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):
        return False


class AboveTheBar(logging.Handler):
    """A log handler that prints each record above the progress bar (``Progress.above``)."""

    def __init__(self, progress: Progress, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.progress.above(self.format(record))
        except Exception:  # pragma: no cover - logging must never break the run
            self.handleError(record)


@contextlib.contextmanager
def logs_beside(progress: Progress, log_file: str | None):
    """While the bar is shown, the console's log handler (a plain StreamHandler on the terminal)
    is replaced: by ``AboveTheBar`` (records above the bar), or by a file (``--log-file``, created
    owner-only). Same format, level and filters (the redaction) as the handler it replaces."""
    root = logging.getLogger()
    consoles = [h for h in root.handlers if type(h) is logging.StreamHandler]
    model = consoles[0] if consoles else None
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = AboveTheBar(progress)
    if model is not None:
        handler.setFormatter(model.formatter)
        handler.setLevel(model.level)
        for f in model.filters:
            handler.addFilter(f)
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        from skiptrace.logs import RedactFilter

        handler.addFilter(RedactFilter())
    for h in consoles:
        root.removeHandler(h)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for h in consoles:
            root.addHandler(h)
        handler.close()
