"""``manage.py refresh_stale`` and the console's "Re-trace stale DNC" action: quote first, then ONE
forced run through the money path that pays once per distinct input and stops at the budget.

Driven against the bundled simulator with an injected clock: leads are traced at T0, the clock moves
32 days, their DNC status is stale; the refresh re-traces them at T0 + 32 days.
"""

from __future__ import annotations

import datetime as dt
import io
from collections import Counter

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum

from contacts.export import lead_dialer_rows
from contacts.models import Lead, Phone
from skiptrace.dialer import DIALER_HEADER
from skiptrace.intake import LeadInput
from skiptrace.models import ProviderCall, Run
from skiptrace.runs import run_create
from skiptrace.service import Policy
from skiptrace.worker import Worker

pytestmark = pytest.mark.django_db

MAX_STEPS = 200
LEADS = "/admin/contacts/lead/"


def make_leads(n: int, prefix: str = "R") -> list[LeadInput]:
    return [LeadInput(lead_id=f"{prefix}-{i}", first_name="Pat", last_name=f"Owner{i}",
                      street=f"{100 + i} ALWAYSMATCH St", city="Tampa", state="FL", zip="33610") for i in range(n)]


def drain(clock) -> None:
    worker = Worker(concurrency=1, clock=clock, idle_sleep_s=0)
    for _ in range(MAX_STEPS):
        if not worker.process_one_batch():
            return
    raise AssertionError("the queue never ran dry")


def trace(clock, leads: list[LeadInput], label: str = "first") -> Run:
    run = run_create(source_label=label, leads=leads, policy=Policy(), now=clock()).run
    drain(clock)
    return run


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def refresh_stale(clock, *args: str, stdin=None) -> str:
    out = io.StringIO()
    call_command("refresh_stale", *args, now=clock(), stdout=out, stdin=stdin or io.StringIO())
    return out.getvalue()


def phone1(lead_id: str, clock) -> str:
    row = next(lead_dialer_rows(Lead.objects.filter(lead_id=lead_id), now=clock()))
    return dict(zip(DIALER_HEADER, row, strict=True))["Phone1"]


@pytest.fixture
def stale_leads(sandbox, clock):
    """Four leads traced at T0 (two of them the same input under two ids), then 32 days pass (to about
    the real time, so the console, which reads the real clock, sees the same ages)."""
    clock.now = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=32, seconds=5)
    leads = make_leads(3)
    leads.append(LeadInput(lead_id="R-dup", first_name="Pat", last_name="Owner0", street="100 ALWAYSMATCH St",
                           city="Tampa", state="FL", zip="33610"))
    trace(clock, leads)
    assert phone1("R-0", clock) != ""
    clock.advance(days=32)
    sandbox.stats.reset()
    return [lead.lead_id for lead in leads]


def test_a_quote_comes_first_and_a_dry_run_spends_nothing(stale_leads, clock, settings):
    assert phone1("R-0", clock) == ""  # 32 days: stale, out of Phone1..3
    out = refresh_stale(clock, "--dry-run")
    assert "4 lead(s) to re-trace" in out
    assert "billable inputs after de-duplication: 3" in out
    assert "worst case (every input matched): $0.21" in out
    assert "budget left today: $200.00" in out
    assert "dry run: nothing was sent" in out
    assert Run.objects.filter(source_label="refresh_stale").count() == 0


def test_without_yes_and_without_a_terminal_it_refuses(stale_leads, clock, sandbox):
    with pytest.raises(CommandError, match="--yes"):
        refresh_stale(clock)
    with pytest.raises(CommandError, match="not confirmed"):
        refresh_stale(clock, stdin=Tty("n\n"))
    assert Run.objects.filter(source_label="refresh_stale").count() == 0
    assert sandbox.stats.snapshot()["requests"] == 0


def test_confirmed_refresh_is_one_forced_run_paying_once_per_input(stale_leads, clock, sandbox):
    out = refresh_stale(clock, stdin=Tty("y\n"))
    run = Run.objects.get(source_label="refresh_stale")
    assert run.run_id in out and run.policy_force and not run.policy_retry_sanitized
    assert run.total == 4
    drain(clock)
    calls = ProviderCall.objects.filter(run_id=run.run_id)
    assert calls.count() == 3  # R-0 and R-dup are one input
    assert Counter(sandbox.stats.snapshot()["item_keys"]).most_common(1)[0][1] == 1  # each input sent once
    assert calls.aggregate(s=Sum("cost_cents"))["s"] == 3 * 7
    # the answers are new: the DNC time is the refresh's, the numbers are back in Phone1..3
    assert set(Phone.objects.filter(lead_id__in=stale_leads).values_list("dnc_checked_at", flat=True)) == {clock()}
    assert all(phone1(lead_id, clock) for lead_id in stale_leads)
    assert "nothing to re-trace" in refresh_stale(clock, "--yes")


def test_refresh_stops_at_the_budget(stale_leads, clock, settings, sandbox):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 2 * 7 + 3  # pays two inputs at worst, not three
    out = refresh_stale(clock, "--yes")
    assert "today's budget pays for 2 of the 3 inputs" in out
    drain(clock)
    run = Run.objects.get(source_label="refresh_stale")
    assert ProviderCall.objects.filter(run_id=run.run_id).count() == 2
    run.refresh_from_db()
    assert run.soft_paused and run.reason == "daily_budget"
    assert ProviderCall.objects.filter(budget_day=clock().date()).aggregate(s=Sum("cost_cents"))["s"] <= 17
    assert sandbox.stats.snapshot()["items"] == 2


def test_older_than_overrides_the_maximum_age(stale_leads, clock):
    assert "0 lead(s) to re-trace" in refresh_stale(clock, "--older-than", "40", "--yes")
    assert "4 lead(s) to re-trace" in refresh_stale(clock, "--older-than", "31.5", "--dry-run")
    with pytest.raises(CommandError, match="--older-than"):
        refresh_stale(clock, "--older-than", "-1")


def test_leads_with_only_fresh_or_blocked_numbers_are_not_re_traced(sandbox, clock):
    trace(clock, make_leads(2, "F"))
    clock.advance(days=30)
    assert "0 lead(s) to re-trace" in refresh_stale(clock, "--dry-run")
    Phone.objects.filter(lead_id="F-0").update(is_dnc=True)
    clock.advance(days=5)
    out = refresh_stale(clock, "--dry-run")
    assert "1 lead(s) to re-trace" in out  # F-1 only: F-0's numbers are DNC whatever their age


# --- the console -------------------------------------------------------------------------------------------


def test_console_lists_stale_leads_and_re_traces_them_after_a_quote(stale_leads, clock, admin_client, sandbox):
    listed = admin_client.get(LEADS, {"dnc_stale": "yes"}).context["cl"].result_list
    assert sorted(lead.lead_id for lead in listed) == sorted(stale_leads)
    page = admin_client.get(f"{LEADS}R-0/change/").content.decode()
    assert "DNC stale" in page and "DNC status stale: 1" in page

    selection = {"action": "refresh_stale_dnc", "_selected_action": stale_leads[:2], "index": "0"}
    quote = admin_client.post(LEADS, selection)
    assert quote.status_code == 200
    text = quote.content.decode()
    assert "2 lead(s) to re-trace" in text and "billable inputs after de-duplication: 2" in text
    assert Run.objects.filter(source_label="refresh_stale").count() == 0  # nothing before the confirmation

    confirmed = admin_client.post(LEADS, {"action": "refresh_stale_dnc", "_selected_action": stale_leads[:2],
                                          "confirm": "yes"})
    run = Run.objects.get(source_label="refresh_stale")
    assert confirmed.status_code == 302 and run.run_id in confirmed["Location"]
    assert run.total == 2 and run.policy_force


def test_console_re_trace_needs_the_right_to_start_runs(stale_leads, client, django_user_model, settings):
    from django.contrib.auth.models import Permission

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    user = django_user_model.objects.create_user("viewer", password="pw-123456", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_lead"))
    client.login(username="viewer", password="pw-123456")
    page = client.get(LEADS).content.decode()
    assert "refresh_stale_dnc" not in page and "export_wide_csv" in page
