"""What integrators build on: scoped API keys, signed webhooks, login throttling.

Webhook receivers are tiny HTTP servers on 127.0.0.1; time is an injected clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from integrations.models import ApiKey, DeliveryState, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from integrations.webhooks import WebhookThread, deliver_due, scan_runs, sign
from skiptrace.intake import LeadInput
from skiptrace.runs import run_create, run_pause
from skiptrace.service import Policy
from skiptrace.worker import Worker
from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db

SECRET = "whsec-test-0123456789abcdef"


def make_leads(n: int, prefix: str = "W") -> list[LeadInput]:
    return [LeadInput(lead_id=f"{prefix}-{i}", first_name="Pat", last_name=f"Owner{i}", street=f"{400 + i} Birch St",
                      city="Tampa", state="FL", zip="33610") for i in range(n)]


def new_key(name: str, scope: str) -> str:
    out = StringIO()
    call_command("api_key", "create", name, "--scope", scope, stdout=out, stderr=StringIO())
    return out.getvalue().split()[-1]


# --- scoped API keys ---------------------------------------------------------------------------------


def test_a_key_is_shown_once_and_only_its_hash_is_stored():
    key = new_key("crm", "read")
    row = ApiKey.objects.get(name="crm")
    assert key.startswith("cvx_") and len(key) > 40
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in json.dumps(list(ApiKey.objects.values()), default=str)
    out = StringIO()
    call_command("api_key", "list", stdout=out)
    assert "crm\tread" in out.getvalue() and key not in out.getvalue()
    with pytest.raises(CommandError, match="taken"):
        call_command("api_key", "create", "crm", "--scope", "write", stdout=StringIO(), stderr=StringIO())


def test_scopes_read_write_admin(sandbox):
    read, write, admin = new_key("r", "read"), new_key("w", "write"), new_key("a", "admin")
    body = {"source_label": "k", "leads": [{"lead_id": "K-1", "street": "1 Main St", "city": "Tampa", "state": "FL",
                                            "zip": "33610"}]}
    reader = ApiClient(token=read)
    assert reader.get("/api/health").status_code == 200
    assert reader.get("/api/metrics").status_code == 200
    denied = reader.post_json("/api/skiptrace-runs", body)
    assert denied.status_code == 403 and denied.json()["error"] == "Forbidden"
    assert denied.json()["required_scope"] == "write"
    created = ApiClient(token=write).post_json("/api/skiptrace-runs", body)
    assert created.status_code == 200, created.content
    run_id = created.json()["run_id"]
    assert reader.get(f"/api/skiptrace-runs/{run_id}/status").status_code == 200
    assert ApiClient(token=admin).post_json("/api/skiptrace-runs", body).status_code == 200
    assert ApiKey.objects.get(name="r").last_used_at is not None


def test_a_revoked_or_unknown_key_is_refused_at_once():
    key = new_key("old", "admin")
    client = ApiClient(token=key)
    assert client.get("/api/metrics").status_code == 200
    call_command("api_key", "revoke", "old", stdout=StringIO())
    refused = client.get("/api/metrics")
    assert refused.status_code == 401 and refused.json()["error"] == "Unauthorized"
    assert ApiClient(token="cvx_" + "x" * 43).get("/api/metrics").status_code == 401
    with pytest.raises(CommandError):
        call_command("api_key", "revoke", "old", stdout=StringIO())


def test_the_admin_token_stays_an_admin_key(api_client):
    assert api_client.get("/api/metrics").status_code == 200


# --- webhooks -----------------------------------------------------------------------------------------


class Receiver:
    """Records what it receives; answers ``statuses`` in turn (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.received: list[dict] = []
        self.statuses = list(statuses or [])
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                outer.received.append({"headers": dict(self.headers), "body": body})
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def events(receiver: Receiver) -> list[dict]:
    return [json.loads(r["body"]) for r in receiver.received]


def test_run_finished_is_signed_and_delivered_once(receiver, sandbox, clock):
    WebhookEndpoint.objects.create(name="crm", url=receiver.url, secret=SECRET)
    run = run_create(source_label="hook", leads=make_leads(3), policy=Policy(), now=clock()).run
    scan_runs(now=clock())  # first sight: queued, nothing to announce
    Worker(concurrency=1, clock=clock, idle_sleep_s=0).process_one_batch()
    thread = WebhookThread(clock=clock)
    thread.step()
    thread.step()  # a second scan announces nothing new
    [event] = events(receiver)
    assert event["event"] == "run.finished" and event["id"].startswith("evt_")
    assert event["data"]["run_id"] == run.run_id and event["data"]["state"] == "finished"
    assert event["data"]["done"] == 3
    headers = receiver.received[0]["headers"]
    timestamp = int(headers["X-Convexa-Timestamp"])
    expected = "sha256=" + hmac.new(SECRET.encode(), f"{timestamp}.{receiver.received[0]['body']}".encode(),
                                    hashlib.sha256).hexdigest()
    assert headers["X-Convexa-Signature"] == expected == sign(SECRET, timestamp, receiver.received[0]["body"])
    assert abs(timestamp - clock().timestamp()) < 2
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == DeliveryState.DELIVERED and delivery.attempts == 1


def test_a_busy_database_costs_the_webhook_thread_one_warning_line_and_it_goes_on(monkeypatch, caplog):
    from django.db import OperationalError

    steps: list[int] = []
    thread = WebhookThread(every_s=0.01)

    def step() -> None:
        steps.append(1)
        if len(steps) == 1:
            raise OperationalError("couldn't get a connection after 10.00 sec")
        thread._stop.set()

    monkeypatch.setattr(thread, "step", step)
    with caplog.at_level(logging.INFO, logger="convexa.webhooks"):
        thread._loop()  # in this thread: the first step fails, the second runs and stops it
    assert len(steps) == 2
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "couldn't get a connection after 10.00 sec" in warning.getMessage()
    assert warning.exc_info is None  # a busy pool is not a traceback in the worker's log


def test_run_paused_carries_its_reason_and_budget_reached_is_sent_once_a_day(receiver, sandbox, clock, settings):
    WebhookEndpoint.objects.create(name="crm", url=receiver.url, secret=SECRET)
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 2 * settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    first = run_create(source_label="a", leads=make_leads(5, "A"), policy=Policy(), now=clock()).run
    run_create(source_label="b", leads=make_leads(5, "B"), policy=Policy(), now=clock())
    worker = Worker(concurrency=1, clock=clock, idle_sleep_s=0)
    for _ in range(5):
        worker.process_one_batch()
    thread = WebhookThread(clock=clock)
    thread.step()
    thread.step()
    got = [(e["event"], e["data"]["run_id"], e["data"].get("reason")) for e in events(receiver)]
    assert ("run.paused", first.run_id, "daily_budget") in got
    assert [g[0] for g in got].count("budget.reached") == 1  # once a budget day, not once per run


def test_an_operators_pause_is_announced_with_its_reason(receiver, clock):
    WebhookEndpoint.objects.create(name="crm", url=receiver.url, secret=SECRET)
    run = run_create(source_label="p", leads=make_leads(2), policy=Policy(), now=clock()).run
    thread = WebhookThread(clock=clock)
    thread.step()
    assert events(receiver) == []
    run_pause(run=run)
    thread.step()
    [event] = events(receiver)
    assert (event["event"], event["data"]["run_id"], event["data"]["state"]) == ("run.paused", run.run_id, "paused")
    assert "operator" in (event["data"].get("reason") or "")


def test_a_failing_endpoint_is_retried_with_backoff_then_given_up_after_a_day(sandbox, clock):
    failing = Receiver(statuses=[500, 503])
    try:
        WebhookEndpoint.objects.create(name="flaky", url=failing.url, secret=SECRET)
        run_create(source_label="f", leads=make_leads(1), policy=Policy(), now=clock())
        Worker(concurrency=1, clock=clock, idle_sleep_s=0).process_one_batch()
        scan_runs(now=clock())
        assert deliver_due(now=clock()) == 1  # 500
        assert deliver_due(now=clock()) == 0  # not due yet: backoff
        clock.advance(seconds=12)
        assert deliver_due(now=clock()) == 1  # 503
        clock.advance(seconds=12)
        assert deliver_due(now=clock()) == 0  # the second wait is ~20 s
        clock.advance(seconds=12)
        assert deliver_due(now=clock()) == 1  # 200
        delivery = WebhookDelivery.objects.get()
        assert delivery.state == DeliveryState.DELIVERED and delivery.attempts == 3
        assert list(WebhookAttempt.objects.values_list("status_code", flat=True)) == [500, 503, 200]
        assert len({r["body"] for r in failing.received}) == 1  # the same event each time
    finally:
        failing.close()

    dead = WebhookEndpoint.objects.create(name="dead", url="http://127.0.0.1:9/hook", secret=SECRET)
    WebhookDelivery.objects.create(event_id="evt_x", event="run.finished", endpoint=dead, body="{}",
                                   next_attempt_at=clock(), created_at=clock())
    for _ in range(40):  # bounded: 24 h of backoff is ~17 attempts
        deliver_due(now=clock())
        clock.advance(hours=1)
    gone = WebhookDelivery.objects.get(event_id="evt_x")
    assert gone.state == DeliveryState.FAILED and 10 <= gone.attempts <= 30
    assert gone.last_error  # connection refused, recorded


def test_the_env_endpoint_comes_from_webhook_url(receiver, settings, clock):
    settings.WEBHOOK_URL, settings.WEBHOOK_SECRET = receiver.url, SECRET
    WebhookThread(clock=clock).step()
    assert WebhookEndpoint.objects.get(name="env").url == receiver.url
    settings.WEBHOOK_URL = None
    thread = WebhookThread(clock=clock)
    thread.step()
    assert not WebhookEndpoint.objects.get(name="env").active


def test_deliveries_and_attempts_are_visible_in_the_console(receiver, sandbox, clock, admin_client):
    WebhookEndpoint.objects.create(name="crm", url=receiver.url, secret=SECRET)
    run_create(source_label="c", leads=make_leads(1), policy=Policy(), now=clock())
    Worker(concurrency=1, clock=clock, idle_sleep_s=0).process_one_batch()
    WebhookThread(clock=clock).step()
    delivery = WebhookDelivery.objects.get()
    page = admin_client.get("/admin/integrations/webhookdelivery/")
    assert page.status_code == 200 and b"run.finished" in page.content
    detail = admin_client.get(f"/admin/integrations/webhookdelivery/{delivery.pk}/change/")
    assert detail.status_code == 200 and b"200" in detail.content
    assert admin_client.get("/admin/integrations/webhookendpoint/").status_code == 200
    assert SECRET.encode() not in admin_client.get("/admin/integrations/webhookendpoint/").content


# --- login throttling ---------------------------------------------------------------------------------


def test_the_admin_login_locks_after_repeated_failures(settings):
    settings.AXES_ENABLED = True
    User.objects.create_superuser("ops", "ops@example.com", "right-password-123")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/?next=/admin/", {"username": "ops", "password": "wrong"})
    locked = client.post("/admin/login/?next=/admin/", {"username": "ops", "password": "right-password-123"})
    assert locked.status_code in (403, 429)
    assert "_auth_user_id" not in client.session
    other = Client()  # another user is not locked out by ops's failures
    User.objects.create_superuser("ops2", "ops2@example.com", "right-password-456")
    ok = other.post("/admin/login/?next=/admin/", {"username": "ops2", "password": "right-password-456"})
    assert ok.status_code == 302


def test_a_login_within_the_limit_succeeds(settings):
    settings.AXES_ENABLED = True
    User.objects.create_superuser("ops", "ops@example.com", "right-password-123")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        client.post("/admin/login/?next=/admin/", {"username": "ops", "password": "wrong"})
    assert client.post("/admin/login/?next=/admin/",
                       {"username": "ops", "password": "right-password-123"}).status_code == 302



# --- the API: lists, pause, strict bodies, idempotency, budget answers -------------------------------------

RUNS = "/api/skiptrace-runs"


def lead_json(i: int = 0, **extra) -> dict:
    return {"lead_id": f"J-{i}", "first_name": "Pat", "last_name": f"Owner{i}", "street": f"{500 + i} Cedar St",
            "city": "Tampa", "state": "FL", "zip": "33610", **extra}


def test_runs_are_listed_newest_first_a_page_at_a_time(api_client, clock):
    ids = [run_create(source_label="list" if n % 2 else "other", leads=make_leads(1, f"P{n}"), policy=Policy(),
                      now=clock.advance(seconds=1) or clock()).run.run_id for n in range(5)]
    first = api_client.get(RUNS, {"limit": 2}).json()
    assert [r["run_id"] for r in first["runs"]] == ids[::-1][:2] and first["next"]
    second = api_client.get(RUNS, {"limit": 2, "cursor": first["next"]}).json()
    third = api_client.get(RUNS, {"limit": 2, "cursor": second["next"]}).json()
    assert [r["run_id"] for r in second["runs"] + third["runs"]] == ids[::-1][2:] and third["next"] is None
    labelled = api_client.get(RUNS, {"label": "list"}).json()["runs"]
    assert [r["run_id"] for r in labelled] == [ids[3], ids[1]]
    assert api_client.get(RUNS, {"state": "finished"}).json() == {"runs": [], "next": None}
    assert api_client.get(RUNS, {"state": "queued"}).json()["runs"][0]["state"] == "queued"
    assert api_client.get(RUNS, {"state": "lost"}).status_code == 400
    assert api_client.get(RUNS, {"cursor": "garbage"}).json()["error"] == "ValidationError"


def test_a_run_is_paused_through_the_api(api_client):
    run_id = api_client.post_json(RUNS, {"leads": [lead_json()]}).json()["run_id"]
    paused = api_client.post(f"{RUNS}/{run_id}/pause")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    assert not Worker(concurrency=1, idle_sleep_s=0).process_one_batch()  # nothing is claimed
    resumed = api_client.post(f"{RUNS}/{run_id}/resume")
    assert resumed.status_code == 200
    assert api_client.get(f"{RUNS}/{run_id}/status").json()["state"] != "paused"


@pytest.mark.parametrize(("body", "field"), [
    ({"leads": [lead_json()], "forse": True}, "forse"),
    ({"leads": [lead_json()], "policy": {"forse": True}}, "policy.forse"),
    ({"leads": [lead_json(phone="8135550142")]}, "leads[0].phone"),
])
def test_an_unknown_key_is_refused_by_name(api_client, body, field):
    response = api_client.post_json(RUNS, body)
    assert response.status_code == 400 and response.json()["error"] == "ValidationError"
    assert field in response.json()["fields"]
    one = api_client.post_json("/api/skiptrace", {"lead": lead_json(), "policy": {"forse": True}})
    assert one.status_code == 400 and "policy.forse" in one.json()["fields"]


def test_an_idempotency_key_answers_what_the_first_request_answered(api_client):
    body = {"source_label": "idem", "leads": [lead_json()]}
    first = api_client.post_json(RUNS, body, HTTP_IDEMPOTENCY_KEY="order-42")
    again = api_client.post_json(RUNS, body, HTTP_IDEMPOTENCY_KEY="order-42")
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and again["Idempotent-Replayed"] == "true"
    from skiptrace.models import Run

    assert Run.objects.count() == 1
    other = api_client.post_json(RUNS, {**body, "source_label": "other"}, HTTP_IDEMPOTENCY_KEY="order-42")
    assert other.status_code == 409 and other.json()["error"] == "IdempotencyConflict"
    # another credential's same key is its own
    mine = ApiClient(token=new_key("second", "write")).post_json(RUNS, body, HTTP_IDEMPOTENCY_KEY="order-42")
    assert mine.status_code == 200 and mine.json()["run_id"] != first.json()["run_id"]
    assert api_client.post_json(RUNS, body, HTTP_IDEMPOTENCY_KEY="has space").status_code == 400


def test_an_idempotency_key_expires_after_a_day(api_client):
    from integrations.models import IdempotencyRecord

    body = {"leads": [lead_json()]}
    first = api_client.post_json(RUNS, body, HTTP_IDEMPOTENCY_KEY="k-day").json()["run_id"]
    IdempotencyRecord.objects.update(created_at=IdempotencyRecord.objects.get().created_at - dt.timedelta(hours=25))
    assert api_client.post_json(RUNS, body, HTTP_IDEMPOTENCY_KEY="k-day").json()["run_id"] != first


@pytest.mark.django_db(transaction=True)
def test_concurrent_force_calls_with_one_key_pay_once(sandbox):
    sandbox.update_config(latency_s=0.2)
    body = {"lead": lead_json(7), "policy": {"force": True}}
    answers: list = []

    def call() -> None:
        try:
            answers.append(ApiClient().post_json("/api/skiptrace", body, HTTP_IDEMPOTENCY_KEY="force-7"))
        finally:
            # Django's test client does not close connections at the end of a request (gunicorn
            # does): a thread that ends without this keeps a pooled connection from the others.
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == 20 and {a.status_code for a in answers} == {200}
    assert len({json.dumps(a.json(), sort_keys=True) for a in answers}) == 1
    assert sandbox.stats.snapshot()["requests"] == 1  # paid once


def test_overriding_the_budget_needs_the_admin_scope(api_client, settings):
    run_id = api_client.post_json(RUNS, {"leads": [lead_json()]}).json()["run_id"]
    writer = ApiClient(token=new_key("writer", "write"))
    denied = writer.post(f"{RUNS}/{run_id}/resume?overrideBudget=1")
    assert denied.status_code == 403 and denied.json()["required_scope"] == "admin"
    assert writer.post(f"{RUNS}/{run_id}/resume?overrideBudget=0").status_code == 200
    assert ApiClient(token=new_key("boss", "admin")).post(f"{RUNS}/{run_id}/resume?overrideBudget=1").status_code == 200


def test_a_budget_pause_says_the_cap_the_spend_and_when_it_resets(api_client, settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 0
    response = api_client.post_json("/api/skiptrace", {"lead": lead_json(9)})
    body = response.json()
    assert response.status_code == 429 and body["error"] == "BudgetPause"
    assert body["daily_cap_usd"] == 0 and body["spent_usd"] == 0
    resets = dt.datetime.fromisoformat(body["resets_at"].replace("Z", "+00:00"))
    assert resets > dt.datetime.now(dt.UTC) and int(response["Retry-After"]) == body["retry_after"]


def test_a_dry_run_quotes_and_creates_nothing(api_client, sandbox, settings):
    from skiptrace.models import ProviderCall, Run

    first = api_client.post_json(RUNS, {"leads": [lead_json(0)]}).json()["run_id"]
    Worker(concurrency=1, idle_sleep_s=0).process_one_batch()  # lead 0 is now cached
    assert Run.objects.get(run_id=first).state == "finished"
    leads = [lead_json(0, lead_id="Q-0"), lead_json(1), lead_json(1, lead_id="Q-1b"), lead_json(2),
             lead_json(3, street="")]
    quote = api_client.post_json(RUNS + "?dry_run=1", {"leads": leads}).json()["quote"]
    assert quote == {"rows": 5, "invalid": 1, "duplicates": 1, "cached": 1, "billable": 2,
                     "worst_case_usd": round(2 * settings.SKIP_TRACE_COST_PER_MATCH_CENTS / 100, 2),
                     "budget_left_usd": round((settings.SKIP_TRACE_DAILY_BUDGET_CENTS
                                               - settings.SKIP_TRACE_COST_PER_MATCH_CENTS) / 100, 2)}
    assert Run.objects.count() == 1 and ProviderCall.objects.count() == 1  # nothing created, nothing sent
    forced = api_client.post_json(RUNS + "?dry_run=1", {"leads": leads, "policy": {"force": True}}).json()["quote"]
    assert (forced["cached"], forced["billable"]) == (0, 3)
    assert api_client.post_json(RUNS + "?dry_run=yes", {"leads": leads}).status_code == 400
