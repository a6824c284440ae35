"""The budget in the console and the audit trail: the caps are changed on one page by whoever has
the permission (audited, old → new); runs record who created them; pause, resume and the budget
override are logged with actor and time and shown on the run page; the override needs its own
permission and a confirmation that shows what the run may still spend."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.utils import timezone

from skiptrace.guards import budget as budget_guard
from skiptrace.models import AuditAction, AuditEvent, BudgetSetting, Run
from tests.admin.test_admin import GOOD_CSV, RUNS, action, fail_items, make_run, messages_of, page_of, upload

pytestmark = pytest.mark.django_db

BUDGET = "/admin/skiptrace/budgetsetting/1/change/"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def staff(client, django_user_model, name: str, *codenames: str):
    user = django_user_model.objects.create_user(name, password="pw-123456", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label="skiptrace"))
    client.login(username=name, password="pw-123456")
    return user


def budget_paused_run(n: int = 3) -> Run:
    run = make_run(n)
    Run.objects.filter(pk=run.pk).update(soft_paused=True, reason="daily_budget", started_at=timezone.now())
    run.refresh_from_db()
    return run


# --- the caps in the console ---------------------------------------------------------------------------


def test_the_budget_page_shows_the_environments_cap_until_it_is_saved(admin_client, settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 12_345
    page = admin_client.get(BUDGET).content.decode()
    assert 'value="123.45"' in page and "the environment" in page
    assert not BudgetSetting.objects.exists()
    assert admin_client.get("/admin/skiptrace/budgetsetting/").url == BUDGET  # the list is the one page


def test_changing_the_cap_stores_it_audits_it_and_every_reader_sees_it(client, django_user_model, settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 20_000
    user = staff(client, django_user_model, "finance", "view_budgetsetting", "change_budgetsetting")
    response = client.post(BUDGET, {"daily_cap_usd": "150.00", "run_cap_usd": "20"}, follow=True)
    assert "Saved: daily cap $150.00, per-run cap $20.00" in messages_of(response)[0]
    assert budget_guard.budget_caps() == (15_000, 2_000, True)
    event = AuditEvent.objects.get(action=AuditAction.CAP_CHANGED)
    assert event.actor == user and event.actor_label == "finance"
    assert event.detail.startswith("daily cap $200.00, per-run cap none → daily cap $150.00, per-run cap $20.00")
    assert LogEntry.objects.filter(user=user, change_message__contains="$150.00").exists()  # "Recent actions"

    client.post(BUDGET, {"daily_cap_usd": "175", "run_cap_usd": ""})
    assert budget_guard.budget_caps() == (17_500, None, True)
    latest = AuditEvent.objects.filter(action=AuditAction.CAP_CHANGED).first()
    assert latest.detail == "daily cap $150.00, per-run cap $20.00 → daily cap $175.00, per-run cap none"
    assert "$175.00" in client.get(BUDGET).content.decode()  # the page lists the recent changes


def test_without_the_permission_the_cap_cannot_be_changed(client, django_user_model):
    staff(client, django_user_model, "viewer", "view_budgetsetting")
    page = client.get(BUDGET)
    assert page.status_code == 200 and 'name="daily_cap_usd"' not in page.content.decode()
    assert client.post(BUDGET, {"daily_cap_usd": "1"}).status_code == 403
    assert not BudgetSetting.objects.exists() and not AuditEvent.objects.exists()
    client.logout()
    staff(client, django_user_model, "runs_only", "view_run", "change_run")
    assert client.get(BUDGET).status_code == 403


@pytest.mark.parametrize("value", ["abc", "-5", "99999999", "1.234"])
def test_a_bad_cap_is_a_clear_form_error_not_a_500(admin_client, value):
    response = admin_client.post(BUDGET, {"daily_cap_usd": value, "run_cap_usd": ""})
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert not BudgetSetting.objects.exists()


def test_a_raised_cap_lets_budget_paused_runs_go_on_at_once(admin_client, settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 0
    run = budget_paused_run()
    admin_client.post(BUDGET, {"daily_cap_usd": "50", "run_cap_usd": ""})
    run.refresh_from_db()
    assert not run.soft_paused and run.reason is None and run.state != "paused"


# --- who created a run ------------------------------------------------------------------------------


def test_a_console_upload_records_who_created_the_run(admin_client, admin_user):
    response = upload(admin_client, GOOD_CSV)
    run = Run.objects.get()
    assert run.created_by == admin_user and run.created_via == "console"
    assert AuditEvent.objects.filter(action=AuditAction.RUN_CREATED, run_id=run.run_id, actor=admin_user).exists()
    page = admin_client.get(page_of(run)).content.decode()
    assert 'id="run-creator">admin<' in page
    assert response.status_code == 200


# --- pause, resume and the override: audited, on the run page --------------------------------------


def test_pause_and_resume_are_audited_with_actor_and_shown_on_the_run_page(client, django_user_model):
    run = make_run(2)
    staff(client, django_user_model, "ops1", "view_run", "change_run")
    client.post(f"/admin/skiptrace/run/{run.run_id}/pause/")
    client.post(f"/admin/skiptrace/run/{run.run_id}/resume/")
    events = list(AuditEvent.objects.filter(run_id=run.run_id).order_by("at", "id"))
    assert [(e.action, e.actor_label) for e in events] == [("run_paused", "ops1"), ("run_resumed", "ops1")]
    page = client.get(page_of(run)).content.decode()
    trail = page[page.index('id="audit-trail"'):page.index('id="errors"')]
    assert "ops1" in trail and "paused" in trail and "resumed" in trail
    assert LogEntry.objects.filter(object_id=run.run_id).count() == 2


def test_the_pause_action_on_the_list_is_audited_too(admin_client):
    run = make_run(2)
    action(admin_client, RUNS, "pause_runs", [run.pk])
    assert AuditEvent.objects.filter(run_id=run.run_id, action=AuditAction.RUN_PAUSED, actor_label="admin").exists()


def test_the_override_needs_its_own_permission(client, django_user_model):
    run = budget_paused_run()
    staff(client, django_user_model, "ops2", "view_run", "change_run")
    page = client.get(page_of(run)).content.decode()
    assert "btn-resume-override" not in page
    assert client.post(f"/admin/skiptrace/run/{run.run_id}/resume-override/", {"confirm": "yes"}).status_code == 403
    assert "resume_runs_override_budget" not in client.get(RUNS).content.decode()
    run.refresh_from_db()
    assert run.soft_paused and not run.override_budget and not AuditEvent.objects.exists()


def test_the_override_asks_first_showing_what_the_run_may_still_spend(client, django_user_model, settings):
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 1_000
    run = budget_paused_run(3)
    staff(client, django_user_model, "lead_ops", "view_run", "change_run", "override_budget")
    page = client.get(page_of(run)).content.decode()
    assert "btn-resume-override" in page
    confirm = client.post(f"/admin/skiptrace/run/{run.run_id}/resume-override/")
    text = confirm.content.decode()
    assert confirm.status_code == 200 and "btn-confirm-override" in text
    assert "$0.21" in text  # 3 items left x $0.07, every one a paid match
    assert "Today's budget left: <b>$10.00</b>" in text
    run.refresh_from_db()
    assert not run.override_budget  # nothing happened yet

    response = client.post(f"/admin/skiptrace/run/{run.run_id}/resume-override/", {"confirm": "yes"}, follow=True)
    assert messages_of(response)[0].startswith("Resumed 1 run past today's budget")
    run.refresh_from_db()
    assert run.override_budget and not run.soft_paused
    event = AuditEvent.objects.get(run_id=run.run_id)
    assert event.action == AuditAction.BUDGET_OVERRIDE and event.actor_label == "lead_ops"
    assert "3 items left, worst case $0.21" in event.detail and "daily_budget" in event.detail
    assert "resumed past the budget" in response.content.decode()  # on the run page's trail


def test_the_override_action_confirms_for_the_selected_runs(admin_client, settings):
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 10
    one, two = budget_paused_run(2), budget_paused_run(1)
    first = action(admin_client, RUNS, "resume_runs_override_budget", [one.pk, two.pk])
    text = first.content.decode()
    assert "btn-confirm-override" in text and one.run_id in text and two.run_id in text
    assert "All together at worst: <b>$0.30</b>" in text
    assert not Run.objects.filter(override_budget=True).exists()
    done = action(admin_client, RUNS, "resume_runs_override_budget", [one.pk, two.pk], confirm="yes")
    assert messages_of(done)[0].startswith("Resumed 2 runs past today's budget")
    assert AuditEvent.objects.filter(action=AuditAction.BUDGET_OVERRIDE).count() == 2


def test_a_finished_run_offers_no_override(admin_client):
    run = make_run(2)
    fail_items(run)
    page = admin_client.get(page_of(run)).content.decode()
    assert "btn-resume-override" not in page and "btn-resume" in page
