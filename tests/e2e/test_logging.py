"""Log hygiene and traceability (docs/ARCHITECTURE.md, "Logs").

A whole run goes through the sandbox -- a transient 500, answers with phones and emails
(ALWAYSMATCH streets), a sanitized retry, a lost answer and its resume -- and API calls with the
admin token, while every logger records at DEBUG. Then:

- no phone number (E.164, 10 digits, dashed, dotted, parenthesized) and no email the sandbox
  returned appears in any record at INFO or above -- neither in what the configured console
  handler writes (with the project's RedactFilter) nor in the messages the code logs;
- the provider bearer token and the admin token appear in no record at any level;
- the money-path events (reserve, send, complete, lost, retry) have log lines carrying
  run_id, lead_id and provider_call_id.

The same is checked on a worker subprocess's stderr.
"""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
from django.conf import settings as django_settings
from django.utils.module_loading import import_string

from contacts.models import Email, Phone
from skiptrace.intake import LeadInput
from skiptrace.models import CallState, ProviderCall, Run
from skiptrace.runs import run_create, run_resume
from skiptrace.service import PREDECESSOR_LABEL, Policy
from skiptrace.worker import Worker
from tests.conftest import ADMIN_TOKEN, PROVIDER_TOKEN
from tests.e2e.test_worker import ROOT, subprocess_env

LEADS = [
    LeadInput(lead_id="LG-1", first_name="Denise", last_name="Alvarez", street="4410 ALWAYSMATCH Oak Hollow Dr",
              city="Tampa", state="FL", zip="33610"),
    LeadInput(lead_id="LG-2", first_name="Marcus", last_name="Bell", street="12 ALWAYSMATCH Elm St",
              city="Orlando", state="FL", zip="32801"),
    LeadInput(lead_id="LG-3", first_name="Rita", last_name="Chen", street="908 ALWAYSMATCH Pine Ave",
              city="Austin", state="TX", zip="78701"),
    LeadInput(lead_id="LG-4", first_name="Omar", last_name="Diaz", street="77 ALWAYSMATCH Bay Rd",
              city="Miami", state="FL", zip="33101"),
    # zero contacts with a unit marker: one sanitized retry
    LeadInput(lead_id="LG-5", first_name="Ann", last_name="Eve", street="15 NOMATCH Ter Apt 3",
              city="Tampa", state="FL", zip="33610"),
]
LOST_LEAD = LeadInput(lead_id="LG-9", first_name="Lou", last_name="Fox", street="31 ALWAYSMATCH Gulf Blvd",
                      city="Tampa", state="FL", zip="33606")

_LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


# --- capture -------------------------------------------------------------------------------------


@dataclass
class Captured:
    """Raw records (messages as the code logged them, before any filter) and the console output."""

    raw: list[tuple[int, str, str]] = field(default_factory=list)  # (level, logger, message + exc text)
    # money-path events by their record attributes: (money_event, provider_call_id, run_id, lead_id)
    events: list[tuple[str, int | None, str | None, str]] = field(default_factory=list)
    console: io.StringIO = field(default_factory=io.StringIO)

    def raw_at_or_above(self, level: int) -> list[str]:
        return [m for lvl, _, m in self.raw if lvl >= level]

    def console_records(self) -> list[tuple[str, str]]:
        return split_records(self.console.getvalue())


class _RawHandler(logging.Handler):
    def __init__(self, sink: Captured) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001
            message = str(record.msg)
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        self.sink.raw.append((record.levelno, record.name, message))
        if hasattr(record, "money_event"):
            self.sink.events.append((record.money_event, record.provider_call_id, record.run_id, record.lead_id))


def console_handler_like_settings(stream: io.StringIO) -> logging.Handler:
    """A handler built like settings.LOGGING's console handler (same formatter, same filters)."""
    spec = django_settings.LOGGING["handlers"]["console"]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(django_settings.LOGGING["formatters"][spec["formatter"]]["format"]))
    for name in spec.get("filters", []):
        handler.addFilter(import_string(django_settings.LOGGING["filters"][name]["()"])())
    handler.setLevel(logging.DEBUG)
    return handler


def split_records(text: str) -> list[tuple[str, str]]:
    """Console text -> [(levelname, full record text)]; continuation lines belong to the record above."""
    records: list[tuple[str, str]] = []
    for line in text.splitlines():
        match = _LINE_START.match(line)
        if match:
            records.append((match.group(1), line))
        elif records:
            records[-1] = (records[-1][0], records[-1][1] + "\n" + line)
        else:
            records.append(("UNKNOWN", line))
    return records


@pytest.fixture
def captured():
    """Every logger at DEBUG; a raw recorder first in line (the RedactFilter rewrites records in
    place), and a console handler configured as in settings.LOGGING. Levels restored afterwards."""
    sink = Captured()
    root = logging.getLogger()
    loggers = [root] + [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    saved = [(lg, lg.level, lg.disabled) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.disabled = False
    raw = _RawHandler(sink)
    console = console_handler_like_settings(sink.console)
    root.handlers.insert(0, raw)
    root.addHandler(console)
    try:
        yield sink
    finally:
        root.removeHandler(raw)
        root.removeHandler(console)
        for lg, level, disabled in saved:
            lg.setLevel(level)
            lg.disabled = disabled


# --- the scenario ---------------------------------------------------------------------------------


def run_scenario(sandbox, clock, settings, api_client) -> list[Run]:
    settings.PROVIDER_TIMEOUT_S = 1.0  # small, yet roomy for a healthy answer on a loaded machine
    sandbox.update_config(hang_s=2.5)
    worker = Worker(concurrency=1, clock=clock, idle_sleep_s=0)

    def drain() -> None:
        for _ in range(100):
            if not worker.process_one_batch():
                return
        raise AssertionError("queue never ran dry")

    run = run_create(source_label="logging", leads=LEADS, policy=Policy(), now=clock()).run
    sandbox.update_config(fault="500")  # a transient error: the batch is retried after its backoff
    drain()
    sandbox.update_config(fault=None)
    for _ in range(10):
        clock.advance(seconds=61)
        drain()
    lost = run_create(source_label="logging-timeout", leads=[LOST_LEAD], policy=Policy(), now=clock()).run
    sandbox.update_config(fault="timeout")  # the answer never comes back: lost
    drain()
    sandbox.update_config(fault=None)
    run_resume(run=lost, override_budget=False, now=clock())
    drain()
    for r in (run, lost):
        r.refresh_from_db()
        assert r.state == "finished"
        assert api_client.get(f"/api/skiptrace-runs/{r.run_id}/status").status_code == 200
        assert api_client.get(f"/api/skiptrace-runs/{r.run_id}/report").status_code == 200
    for lead in [*LEADS, LOST_LEAD]:
        assert api_client.get(f"/api/leads/{lead.lead_id}/contacts").status_code == 200
    assert api_client.get("/api/debug/skiptrace-latest?limit=20").status_code == 200
    assert api_client.get("/api/metrics").status_code == 200
    assert api_client.get("/api/health").status_code == 200
    return [run, lost]


def returned_contacts() -> tuple[set[str], set[str]]:
    """Every phone (as 10 digits) and email the sandbox returned, from the raw answers and the
    contacts tables."""
    phones: set[str] = set()
    emails: set[str] = set()
    for raw in ProviderCall.objects.exclude(response_json=None).values_list("response_json", flat=True):
        person = json.loads(raw)
        for p in person.get("phoneNumbers") or []:
            phones.add(re.sub(r"\D", "", str(p.get("number")))[-10:])
        for e in person.get("emails") or []:
            emails.add(str(e.get("email") or e.get("address")))
    phones |= {re.sub(r"\D", "", n)[-10:] for n in Phone.objects.values_list("number", flat=True)}
    emails |= set(Email.objects.values_list("address", flat=True))
    return phones, emails


def phone_forms(digits: str) -> list[str]:
    a, b, c = digits[:3], digits[3:6], digits[6:]
    return [f"+1{digits}", digits, f"{a}-{b}-{c}", f"({a}) {b}-{c}", f"{a}.{b}.{c}", f"1-{a}-{b}-{c}"]


def leaks(texts: list[str], phones: set[str], emails: set[str]) -> list[str]:
    found = []
    for text in texts:
        lowered = text.lower()
        for digits in phones:
            for form in phone_forms(digits):
                if form in text:
                    found.append(f"phone {form!r} in: {text[:300]}")
        for email in emails:
            if email.lower() in lowered:
                found.append(f"email {email!r} in: {text[:300]}")
    return found


def assert_scenario_had_contacts(phones: set[str], emails: set[str]) -> None:
    assert len(phones) >= 5 and len(emails) >= 5  # the check below is not vacuous


# --- PII and tokens ------------------------------------------------------------------------------

pytestmark = pytest.mark.django_db


def test_no_phone_or_email_in_console_output_at_info_or_above(captured, sandbox, clock, settings, api_client):
    run_scenario(sandbox, clock, settings, api_client)
    phones, emails = returned_contacts()
    assert_scenario_had_contacts(phones, emails)
    records = captured.console_records()
    assert any(level == "DEBUG" for level, _ in records)  # DEBUG really was captured
    info_plus = [text for level, text in records if level in ("INFO", "WARNING", "ERROR", "CRITICAL")]
    assert len(info_plus) >= 10
    assert leaks(info_plus, phones, emails) == []


def test_code_never_logs_a_phone_or_email_at_info_or_above_even_before_redaction(
        captured, sandbox, clock, settings, api_client):
    """The RedactFilter is the second line; the first is that INFO+ calls never get contact values."""
    run_scenario(sandbox, clock, settings, api_client)
    phones, emails = returned_contacts()
    assert_scenario_had_contacts(phones, emails)
    assert leaks(captured.raw_at_or_above(logging.INFO), phones, emails) == []


def test_tokens_appear_in_no_record_at_any_level(captured, sandbox, clock, settings, api_client):
    run_scenario(sandbox, clock, settings, api_client)
    # a request with a wrong token must not log the token it was given either
    from tests.conftest import ApiClient

    wrong = "wrong-token-" + "9" * 20
    assert ApiClient(token=wrong).get("/api/metrics").status_code == 401
    texts = [m for _, _, m in captured.raw] + [t for _, t in captured.console_records()]
    assert len(texts) > 20
    for secret in (PROVIDER_TOKEN, ADMIN_TOKEN, wrong):
        assert [t for t in texts if secret in t] == [], secret


# --- traceability: run_id -> lead_id -> provider_call_id in the money-path log lines -------------
# Read from the records' attributes (``skiptrace.money.trail.log_call``), not from their wording.

EVENTS = {
    # event: (the money_event of its lines, which calls it must cover)
    "reserve": ("reserved", lambda c: True),
    "send": ("sent", lambda c: c.sent_at is not None),
    "complete": ("completed", lambda c: c.state == CallState.COMPLETED),
    "lost": ("lost", lambda c: c.state == CallState.LOST),
    "retry_after_error": ("failed", lambda c: c.state == CallState.ERRORED),
    "retry_sanitized": ("retry_sanitized", lambda c: c.label == PREDECESSOR_LABEL),
}


@pytest.mark.parametrize("event", list(EVENTS))
def test_money_path_events_carry_run_lead_and_call_ids(event, captured, sandbox, clock, settings, api_client):
    run_scenario(sandbox, clock, settings, api_client)
    name, relevant = EVENTS[event]
    traced = {(call_id, run_id, lead_id) for ev, call_id, run_id, lead_id in captured.events if ev == name}
    calls = [c for c in ProviderCall.objects.order_by("id") if relevant(c)]
    assert calls, f"the scenario produced no {event} event"
    untraced = [f"call {c.pk} run {c.run_id} lead {c.lead_id}" for c in calls
                if (c.pk, c.run_id, c.lead_id) not in traced]
    assert untraced == [], (untraced, sorted(traced)[:20])


# --- the RedactFilter itself -----------------------------------------------------------------------


def _filtered_output(msg: str, *args, exc: BaseException | None = None, level: int = logging.INFO) -> str:
    stream = io.StringIO()
    handler = console_handler_like_settings(stream)
    logger = logging.getLogger("convexa.test_logging.redact")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        if exc is not None:
            try:
                raise exc
            except type(exc):
                logger.log(level, msg, *args, exc_info=True)
        else:
            logger.log(level, msg, *args)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


@pytest.mark.parametrize("text", ["+18135550142", "8135550142", "813-555-0142", "(813) 555-0142", "813.555.0142",
                                  '{"number": "+18135550142"}', "tel:813-555-0142,",
                                  "owner.one@example.com", f"Bearer {PROVIDER_TOKEN}"])
def test_redact_filter_rewrites_contacts_and_tokens_at_info(text):
    out = _filtered_output("value=%s", text)
    assert text not in out and "value=" in out


def test_redact_filter_also_rewrites_exception_text():
    out = _filtered_output("batch failed", exc=ValueError("Key (number)=(+18135550142) owner.one@example.com"),
                           level=logging.ERROR)
    assert "ValueError" in out
    assert "8135550142" not in out and "owner.one@example.com" not in out


def test_redact_filter_leaves_ids_alone():
    """Ten digits inside a hex id are not a phone (~4% of uuid4 batch ids and ~2% of run ids hold a
    run of exactly ten digits; they used to come out as 'batch fff[phone]f32ac...' at INFO+)."""
    batch_id, run_id = "fff2345678901f32ac352a541cdfb4ea", "run_0a1234567890bcde"
    out = _filtered_output("batch %s reserved: runs=%s calls=2 provider_call_ids=12..13", batch_id, run_id)
    assert batch_id in out and run_id in out


# --- the same through a worker subprocess -------------------------------------------------------


def _records_of(text: str) -> list[tuple[str, str]]:
    return split_records(text)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("log_level", ["debug", "info"])
def test_worker_subprocess_stderr_has_no_contacts_at_info_and_no_tokens(log_level, sandbox, tmp_path):
    run = run_create(source_label="logging-subprocess", leads=LEADS, policy=Policy()).run
    env = subprocess_env(sandbox.url, tmp_path, LOG_LEVEL=log_level, ADMIN_TOKEN=ADMIN_TOKEN)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_skiptrace_worker", "--exit-when-idle", "--concurrency", "2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    run.refresh_from_db()
    assert run.state == "finished"
    phones, emails = returned_contacts()
    assert_scenario_had_contacts(phones, emails)
    records = _records_of(err) + _records_of(out)
    levels = {level for level, _ in records}
    assert "INFO" in levels and (log_level != "debug" or "DEBUG" in levels), levels
    info_plus = [text for level, text in records if level != "DEBUG"]
    assert leaks(info_plus, phones, emails) == []
    for secret in (PROVIDER_TOKEN, ADMIN_TOKEN):
        assert secret not in err and secret not in out
    assert "database is locked" not in (err + out).lower()
    # the lines that matter carry the run id (or the run is unfindable in the worker's log)
    assert run.run_id in err + out
