"""``manage.py skiptrace_run FILE --wait`` (issue 16 item 9): the progress bar on its own line, log
records above it (or in ``--log-file``), the run's provider calls and settled spend in the bar."""

from __future__ import annotations

import io
import logging
import re
import stat
import threading
import time

import pytest
from django.core.management import call_command

from skiptrace.management.commands import skiptrace_run
from skiptrace.models import Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BAR = re.compile(r"\[[#-]{24}\] \d+/\d+ ")
TICK = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING convexa\.test tick \d+$")
ROWS = 120


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(raw: str) -> list[str]:
    """What a terminal shows for ``raw``: ``\\r`` goes back to column 0, ``ESC[K`` erases to the end."""
    lines, line, col = [], [], 0
    i = 0
    while i < len(raw):
        if raw.startswith("\x1b[K", i):
            del line[col:]
            i += 3
            continue
        ch = raw[i]
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(line))
            line, col = [], 0
        else:
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
        i += 1
    if line:
        lines.append("".join(line))
    return lines


@pytest.fixture
def leads_csv(tmp_path):
    path = tmp_path / "leads.csv"
    rows = [f"P-{i:03d},Dana,Reyes,{100 + i} Cedar Rd,Tampa,FL,33610" for i in range(ROWS)]
    path.write_text("LeadID,First Name,Last Name,Street,City,State,Zip\r\n" + "\r\n".join(rows) + "\r\n")
    return path


@pytest.fixture
def slow_sandbox(sandbox, settings):
    sandbox.update_config(latency_s=0.03)
    settings.SKIP_TRACE_BATCH_SIZE = 5  # 24 requests: the bar is drawn many times
    return sandbox


@pytest.fixture
def ticker():
    """Log a WARNING every 20 ms from another thread, as the worker's threads do."""
    stop = threading.Event()
    sent = []

    def tick() -> None:
        n = 0
        while not stop.is_set():
            logging.getLogger("convexa.test").warning("tick %d", n)
            sent.append(n)
            n += 1
            time.sleep(0.02)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    yield sent
    stop.set()
    thread.join(5)


def run_cli(path, *args, stderr):
    out = io.StringIO()
    call_command("skiptrace_run", str(path), "--wait", "--concurrency", "1", *args, stdout=out, stderr=stderr)
    return out.getvalue()


def final_numbers() -> tuple[Run, dict]:
    run = Run.objects.get()
    return run, skiptrace_run.run_money(run.run_id)


def test_on_a_terminal_log_records_go_above_the_bar_never_onto_its_line(leads_csv, slow_sandbox, ticker):
    err = Terminal()
    summary = run_cli(leads_csv, stderr=err)
    raw = err.getvalue()
    assert raw.count("\r\x1b[K[") >= 3  # the bar is redrawn in place
    shown = screen(raw)
    ticks = [line for line in shown if "convexa.test" in line]
    assert len(ticks) >= 10  # records that came while the bar was up are printed, not lost
    for line in ticks:
        assert TICK.match(line), f"a log line shares its line with something: {line!r}"
    bars = [line for line in shown if BAR.search(line)]
    for line in bars:
        assert BAR.match(line) and "tick" not in line, f"the bar shares its line: {line!r}"
    # the bar is redrawn under the records: the last thing on the screen before the summary is the final bar
    last = [line for line in shown if line.strip()][-1]
    run, money = final_numbers()
    assert run.state == "finished"
    assert last.startswith(f"[{'#' * 24}] {ROWS}/{ROWS} done {run.done} failed {run.failed} ")
    assert f"| calls {money['provider_calls']} spent ${money['settled_cents'] / 100:.2f} |" in last
    assert money["provider_calls"] == ROWS and money["settled_cents"] > 0
    # the summary goes to stdout, whole
    assert f"total {ROWS}  done {run.done}  failed {run.failed}" in summary
    assert f"provider calls {money['provider_calls']}" in summary
    assert "report.json:" in summary and "enriched.csv:" in summary
    assert "convexa.test" not in summary and "\r" not in summary


def test_not_a_terminal_gets_plain_lines_every_few_seconds_and_no_carriage_returns(leads_csv, slow_sandbox, ticker,
                                                                               monkeypatch):
    monkeypatch.setattr(skiptrace_run, "PLAIN_EVERY_S", 0.3)
    err = io.StringIO()
    run_cli(leads_csv, stderr=err)
    raw = err.getvalue()
    assert "\r" not in raw and "\x1b" not in raw
    lines = raw.splitlines()
    bars = [line for line in lines if BAR.search(line)]
    assert 2 <= len(bars) < 40  # a line every 0.3 s, not one per 0.5 s tick... nor one per change
    assert all(BAR.match(line) for line in bars)
    assert all(TICK.match(line) for line in lines if "convexa.test" in line)
    run, money = final_numbers()
    assert bars[-1].startswith(f"[{'#' * 24}] {ROWS}/{ROWS} ")
    assert f"calls {money['provider_calls']} spent ${money['settled_cents'] / 100:.2f}" in bars[-1]


def test_log_file_takes_the_records_and_the_terminal_keeps_only_the_bar(leads_csv, slow_sandbox, ticker, tmp_path):
    log_path = tmp_path / "run.log"
    err = Terminal()
    run_cli(leads_csv, "--log-file", str(log_path), stderr=err)
    shown = [line for line in screen(err.getvalue()) if line.strip()]
    assert not any("convexa.test" in line for line in shown)
    assert BAR.match(shown[-1]) and f"{ROWS}/{ROWS}" in shown[-1]
    logged = log_path.read_text().splitlines()
    assert len([line for line in logged if TICK.match(line)]) >= 10
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
    # the console handler is back once the bar is gone
    root = logging.getLogger()
    assert any(type(h) is logging.StreamHandler for h in root.handlers)
    assert not any(isinstance(h, skiptrace_run.AboveTheBar) or getattr(h, "baseFilename", "") == str(log_path)
                   for h in root.handlers)
