"""The ops console in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven
by Selenium 4) against ``live_server`` and the bundled sandbox: log in, upload a CSV, watch the run
page follow the worker, resume a failed item, download the report and the enriched CSV, filter the
contacts by "Has phone" and export them. Screenshots go to ``test-artifacts/``.

The worker runs in this process (a background thread, or one batch at a time), exactly as
``manage.py run_skiptrace_worker`` would; the admin itself never calls the provider.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests
from django.db import connections
from django.urls import reverse

from skiptrace.models import Run, RunItem
from skiptrace.worker import Worker

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WAIT_S = 20

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
        reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
    ),
]

LEADS_CSV = "\n".join([
    "Lead ID,Owner First Name,Owner Last Name,Property Address,Property City,Property State,Property Zip",
    "W-01,Denise,Alvarez,4410 Oak Hollow Dr,Tampa,FL,33610",
    "W-02,Owen,Price,77 Bayview Ter,Baltimore,MD,21224",
    "W-03,José,Núñez,12 Palm Ave,Miami,FL,33101",
    "W-04,Grace,Kim,9 Cedar Ln,Orlando,FL,32801",
    "W-05,Hal,Moss,31 Birch Ct,Austin,TX,78701",
    "W-06,Ivy,Stone,5 Lake View Rd,Denver,CO,80202",
    "W-07,Jon,Reyes,88 Harbor Blvd,Seattle,WA,98101",
    "W-08,Kay,Ortiz,14 Ridge Way,Phoenix,AZ,85004",
    "W-09,Lou,Park,,Phoenix,AZ,85004",  # no street: refused at intake
]) + "\n"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Logins here test permissions, not password strength: skip the deliberately slow hasher."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install .[dev])")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=1440,1000")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(predicate, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # the page is reloading under us: try again
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def field(driver, name: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'[data-field="{name}"]').text


def screenshot(driver, name: str, width: int = 1440) -> Path:
    """A full-page PNG under test-artifacts/ (Chromium's own capture beyond the viewport)."""
    import base64

    ARTIFACTS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": min(max(height, 900), 4000), "deviceScaleFactor": 1, "mobile": False})
    try:
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path = ARTIFACTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def session_for(driver) -> requests.Session:
    """A requests session carrying the browser's cookies (its admin login)."""
    session = requests.Session()
    for cookie in driver.get_cookies():
        session.cookies.set(cookie["name"], cookie["value"])
    return session


def work_in_background(run_id: str) -> threading.Thread:
    def work() -> None:
        try:
            Worker(concurrency=1, batch_size=1, run_id=run_id, idle_sleep_s=0.05).run(exit_when_idle=True)
        finally:
            connections.close_all()  # this thread's own connection (housekeeping), or the test DB stays busy

    thread = threading.Thread(target=work, name="test-worker", daemon=True)
    thread.start()
    return thread


def test_ops_console_end_to_end(browser, live_server, sandbox, settings, django_user_model, tmp_path):
    from selenium.webdriver.common.by import By

    settings.SKIP_TRACE_MAX_ATTEMPTS = 1  # a provider 500 fails the item at once (resumable)
    django_user_model.objects.create_superuser("ops", "ops@example.com", "correct-horse-battery")
    base = live_server.url

    # Log in with Django's own admin login.
    browser.get(base + "/admin/")
    browser.find_element(By.NAME, "username").send_keys("ops")
    browser.find_element(By.NAME, "password").send_keys("correct-horse-battery")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(lambda: browser.find_element(By.ID, "ops-summary"), "the admin index with the ops summary")
    assert "SPEND TODAY" in browser.find_element(By.ID, "ops-budget").text.upper()
    assert "closed" in browser.find_element(By.ID, "ops-breaker").text.lower()
    screenshot(browser, "admin-index.png")

    # Upload a CSV: the run is created and its page opens, listing the refused row.
    leads_file = tmp_path / "september.csv"
    leads_file.write_text(LEADS_CSV, encoding="utf-8")
    browser.get(base + reverse("admin:skiptrace_run_upload"))
    browser.find_element(By.ID, "toggle-nav-sidebar").click()  # more room for the tables (remembered)
    browser.find_element(By.NAME, "file").send_keys(str(leads_file))
    browser.find_element(By.NAME, "label").send_keys("September list")
    browser.find_element(By.NAME, "_upload").click()
    # The quote first: nothing is created until it is confirmed.
    wait_for(lambda: browser.find_elements(By.ID, "upl-quote"), "the quote")
    quote = browser.find_element(By.ID, "upl-quote").text
    assert "Rows in the file 9" in quote and "Refused at intake (never sent, free) 1" in quote
    assert not Run.objects.exists()
    screenshot(browser, "upload-quote.png")
    browser.find_element(By.NAME, "_confirm").click()
    wait_for(lambda: browser.find_elements(By.ID, "run-state"), "the run page")
    messages = browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    assert "9 leads, 1 refused at intake" in messages
    assert "Row 9 (lead W-09): invalid_input:" in messages
    run = Run.objects.get()
    assert field(browser, "queued") == "8" and browser.find_element(By.ID, "run-state").text == "queued"

    # One item meets a provider 500 and fails (one attempt allowed).
    sandbox.update_config(fault="500")
    assert Worker(concurrency=1, batch_size=1, run_id=run.run_id).process_one_batch()
    sandbox.update_config(fault=None)

    # The page follows the worker by itself: counters move without a reload (one more lead is
    # served while the page is open), then it reloads once when the run finishes and shows the
    # downloads.
    browser.refresh()
    wait_for(lambda: browser.find_element(By.ID, "run-state").text == "running", "state running")
    assert field(browser, "failed") == "2"  # the 500 and the refused row
    browser.execute_script("window.__notReloaded = true;")
    assert Worker(concurrency=1, batch_size=1, run_id=run.run_id).process_one_batch()
    wait_for(lambda: field(browser, "done") == "1" and field(browser, "queued") == "6"
             and browser.execute_script("return window.__notReloaded"), "live counters")
    screenshot(browser, "admin-run-page-running.png")
    worker = work_in_background(run.run_id)
    wait_for(lambda: browser.find_element(By.ID, "run-state").text == "finished", "state finished")
    worker.join(timeout=WAIT_S)
    assert browser.execute_script("return window.__notReloaded") is None  # it reloaded on the state change
    assert field(browser, "done") == "7" and field(browser, "failed") == "2"
    errors = browser.find_element(By.ID, "errors").text
    assert "provider_error" in errors and "invalid_input" in errors

    # Resume the failed item: Resume requeues it (not the refused row), the worker serves it.
    browser.find_element(By.ID, "btn-resume").click()
    wait_for(lambda: "Resumed 1 run (1 item requeued)" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text,
             "the resume message")
    worker = work_in_background(run.run_id)
    wait_for(lambda: browser.find_element(By.ID, "run-state").text == "finished" and field(browser, "done") == "8",
             "the resumed run to finish")
    worker.join(timeout=WAIT_S)
    assert field(browser, "failed") == "1"
    assert RunItem.objects.filter(run=run, status="failed").get().last_error.startswith("invalid_input")
    shot = screenshot(browser, "admin-run-page.png")
    assert shot.stat().st_size > 10_000

    browser.get(base + reverse("admin:skiptrace_run_changelist"))
    assert "finished" in browser.find_element(By.CSS_SELECTOR, "#result_list td.field-state_badge").text
    screenshot(browser, "admin-runs.png")
    browser.back()

    # Download both files with the browser's session.
    http = session_for(browser)
    report_href = browser.find_element(By.ID, "download-report").get_attribute("href")
    csv_href = browser.find_element(By.ID, "download-csv").get_attribute("href")
    report = http.get(report_href, timeout=10)
    assert report.status_code == 200 and "attachment" in report.headers["Content-Disposition"]
    body = report.json()
    assert body["run_id"] == run.run_id and body["totals"]["done"] == 8 and body["totals"]["failed"] == 1
    enriched = http.get(csv_href, timeout=10)
    assert enriched.status_code == 200 and enriched.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(enriched.content.decode("utf-8-sig"))))
    assert rows[0][:4] == ["LeadID", "Address", "Owner", "Phone1"] and len(rows) == 10
    assert requests.get(csv_href, timeout=10, allow_redirects=False).status_code == 302  # no session, no file

    # Contacts: /admin/contacts/ lands on the list; filter "Has phone: Yes"; export what matches.
    browser.get(base + "/admin/contacts/")
    wait_for(lambda: browser.find_elements(By.ID, "result_list"), "the contacts list")
    assert browser.find_element(By.CSS_SELECTOR, "#content h1").text == "Contacts"
    browser.find_element(By.LINK_TEXT, "Yes (callable)").click()
    wait_for(lambda: "has_phone=yes" in browser.current_url, "the Has phone filter")
    shown = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert shown, "the sandbox matched no lead with a callable phone"
    for row in shown:
        assert row.find_element(By.CSS_SELECTOR, "td.field-phone1").text.startswith("(")
    screenshot(browser, "admin-contacts.png", width=1680)  # an ops desktop; the list has 11 columns
    export_link = browser.find_element(By.ID, "export-all-link")
    assert f"EXPORT ALL {len(shown)} MATCHING" in export_link.text.upper()
    exported = http.get(export_link.get_attribute("href"), timeout=10)
    assert exported.status_code == 200 and exported.headers["Content-Type"] == "text/csv; charset=utf-8"
    export_rows = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert export_rows[0] == rows[0] and len(export_rows) == len(shown) + 1
    assert all(len(r[3]) == 10 and r[3].isdigit() for r in export_rows[1:])

    # A lead's page: its phones and emails with provenance; the call it links to is sanitized.
    browser.find_element(By.CSS_SELECTOR, "#result_list th.field-lead a").click()
    wait_for(lambda: browser.find_elements(By.ID, "phones-group"), "the lead page")
    lead_page = browser.find_element(By.ID, "content-main").text
    assert "Mobile" in lead_page or "Landline" in lead_page
    screenshot(browser, "admin-lead-page.png")
    numbers = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#phones-group td.field-phone")]
    browser.find_element(By.CSS_SELECTOR, "div.field-served_by_call a").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "pre.ops-json"), "the provider call page")
    call_page = browser.find_element(By.ID, "content-main").text
    assert numbers and not any(n[-8:] in call_page for n in numbers)  # "555-0142" never in full
    screenshot(browser, "admin-provider-call.png")
    browser.back()
    browser.back()
    wait_for(lambda: browser.find_elements(By.ID, "result_list"), "the filtered contacts list")

    # The export action on the selected rows, through the changelist's own form (CSRF and all):
    # the browser downloads the file.
    from selenium.webdriver.support.ui import Select

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.find_element(By.ID, "action-toggle").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("export_dialer_csv")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    saved = wait_for(lambda: [p for p in downloads.glob("contacts-*.csv")], "the exported file")
    assert saved[0].read_bytes().decode("utf-8-sig") == exported.content.decode("utf-8-sig")


# --- fit: the lists at 1,400 px without sideways scrolling, the run page and contacts at 390 px -----


def login(browser, base: str, django_user_model, username: str = "ops") -> None:
    from selenium.webdriver.common.by import By

    if not django_user_model.objects.filter(username=username).exists():
        django_user_model.objects.create_superuser(username, f"{username}@example.com", "correct-horse-battery")
    browser.get(base + "/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys("correct-horse-battery")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(lambda: browser.find_elements(By.ID, "ops-summary"), "the admin index")


def at_width(browser, width: int, url: str) -> dict:
    """Load ``url`` in a viewport ``width`` px wide; how wide the page is and what sticks out."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600})
    browser.get(url)
    return browser.execute_script("""
        var doc = document.documentElement;
        var out = [];
        document.querySelectorAll('#content *').forEach(function (el) {
          var r = el.getBoundingClientRect();
          if (r.right > window.innerWidth + 1 && r.width > 0) { out.push(el.tagName + '.' + el.className + '#' + el.id); }
        });
        var table = document.getElementById('result_list');
        var right = table ? Math.round(table.getBoundingClientRect().right) : 0;
        return {scroll: doc.scrollWidth, inner: window.innerWidth, table_right: right, out: out.slice(0, 8)};
    """)


def fit_data():
    """Two runs (one long label, money in flight) and leads with three phones and three long emails."""
    from django.utils import timezone

    from contacts.models import Email, Lead, Phone
    from skiptrace.intake import LeadInput
    from skiptrace.runs import run_create
    from skiptrace.service import Policy

    made = []
    for n, label in enumerate(["September list from the county tax roll, second batch (west side)", "api:crm"]):
        leads = [LeadInput(lead_id=f"F{n}-{i}", first_name="Pat", last_name=f"Owner{i}",
                           street=f"{100 + i} Oak St", city="Tampa", state="FL", zip="33610") for i in range(3)]
        made.append(run_create(source_label=label, leads=leads, policy=Policy()).run)
    Run.objects.filter(pk=made[0].pk).update(started_at=timezone.now(), paused_by_operator=True, soft_paused=True,
                                             reason="daily_budget", cost_cents=123_456)
    from skiptrace.service import runs_refresh

    RunItem.objects.filter(run=made[1]).update(status="failed", last_error="provider_error: http_5xx: boom")
    runs_refresh([made[1].run_id], now=timezone.now(), force=True)  # finished: its downloads show
    for i in range(12):
        lead = Lead.objects.create(
            lead_id=f"LONG-LEAD-{i:04d}", address=f"{1000 + i} Northwest Pinewood Boulevard Apt {i}, Saint Petersburg, FL 33701",
            owner=f"Maximiliana Featherstonehaugh-{i}", source="batchdata", matched=True,
            contacts_updated_at=timezone.now(), cached=bool(i % 2))
        Phone.objects.bulk_create(Phone(lead=lead, number=f"+1813555{i:02d}{k}{k}", type="Mobile", position=k,
                                        confidence=90, dnc_checked_at=timezone.now()) for k in range(4))
        Email.objects.bulk_create(Email(lead=lead, address=f"maximiliana.featherstonehaugh{k}.{i}@longdomain-example.com",
                                        position=k) for k in range(3))
    return made


def test_lists_fit_1400_and_pages_are_usable_at_390(browser, live_server, django_user_model):
    runs = fit_data()
    base = live_server.url
    login(browser, base, django_user_model)
    pages = {
        "runs": base + reverse("admin:skiptrace_run_changelist"),
        "contacts": base + reverse("admin:contacts_lead_changelist"),
        "run": base + reverse("admin:skiptrace_run_change", args=[runs[0].run_id]),
        "finished-run": base + reverse("admin:skiptrace_run_change", args=[runs[1].run_id]),
    }
    for width, names in ((1400, ("runs", "contacts", "run")), (390, ("run", "finished-run", "contacts", "runs"))):
        for name in names:
            fit = at_width(browser, width, pages[name])
            screenshot(browser, f"fit-{name}-{width}.png", width=width)
            # nothing sticks out: neither the page nor a table in its own scrolling box
            assert fit["scroll"] <= fit["inner"] and not fit["out"], f"{name} at {width}px scrolls sideways: {fit}"
            if name == "finished-run":  # the two download buttons side by side or stacked, never overlapping
                boxes = browser.execute_script(
                    "return ['download-report', 'download-csv'].map(function (id) {"
                    " var r = document.getElementById(id).getBoundingClientRect();"
                    " return [r.left, r.top, r.right, r.bottom]; });")
                (l1, t1, r1, b1), (l2, t2, r2, b2) = boxes
                assert r1 <= l2 or r2 <= l1 or b1 <= t2 or b2 <= t1, f"the download buttons overlap: {boxes}"
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# --- pause / resume, the budget pause, the override with its confirmation, the downloads ----------


def test_pause_resume_override_with_confirmation_and_downloads(browser, live_server, sandbox, settings,
                                                               django_user_model):
    from selenium.webdriver.common.by import By

    from skiptrace.intake import LeadInput
    from skiptrace.models import AuditEvent, BudgetSetting
    from skiptrace.runs import run_create
    from skiptrace.service import Policy

    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    BudgetSetting.objects.create(daily_cap_cents=2 * price)  # the console's cap: two calls today
    leads = [LeadInput(lead_id=f"P-{i}", first_name="Pat", last_name=f"Owner{i}", street=f"{200 + i} Oak St",
                       city="Tampa", state="FL", zip="33610") for i in range(5)]
    run = run_create(source_label="Override walk", leads=leads, policy=Policy()).run
    base = live_server.url
    login(browser, base, django_user_model)
    browser.get(base + reverse("admin:skiptrace_budgetsetting_change", args=[1]))  # the caps every worker reads
    assert browser.find_element(By.NAME, "daily_cap_usd").get_attribute("value") == f"{2 * price / 100:.2f}"
    screenshot(browser, "walk-budget-caps-1400.png", width=1400)
    browser.get(base + reverse("admin:skiptrace_run_change", args=[run.run_id]))

    def state() -> str:
        return browser.find_element(By.ID, "run-state").text

    def message() -> str:
        return browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text

    # Pause: only Pause is offered on a queued run; once paused, only Resume, and the page stays live.
    # (the live page reloads itself once when its first poll sees a new state: wait through that)
    wait_for(lambda: browser.find_elements(By.ID, "btn-pause"), "the Pause button of a queued run")
    assert not browser.find_elements(By.ID, "btn-resume")
    browser.find_element(By.ID, "btn-pause").click()
    wait_for(lambda: "Paused 1 run" in message(), "the pause message")
    assert state() == "paused" and not browser.find_elements(By.ID, "btn-pause")
    assert "updating every" in browser.find_element(By.ID, "ops-live-note").text
    screenshot(browser, "walk-paused-1400.png", width=1400)
    browser.find_element(By.ID, "btn-resume").click()
    wait_for(lambda: "Resumed 1 run" in message(), "the resume message")

    # The worker spends today's cap (two calls) and the run waits for the budget: the open page
    # follows it by itself and now highlights "Resume past the budget".
    worker = Worker(concurrency=1, batch_size=1, run_id=run.run_id)
    while worker.process_one_batch():
        pass
    wait_for(lambda: browser.find_elements(By.ID, "btn-resume-override"), "the budget pause on the open page")
    assert "default" in browser.find_element(By.ID, "btn-resume-override").get_attribute("class")
    assert "budget is spent" in browser.find_element(By.ID, "budget-pause-note").text
    screenshot(browser, "walk-budget-paused-1400.png", width=1400)
    screenshot(browser, "walk-budget-paused-390.png", width=390)

    # The override asks first, with what the run may still spend.
    browser.find_element(By.ID, "btn-resume-override").click()
    wait_for(lambda: browser.find_elements(By.ID, "btn-confirm-override"), "the confirmation page")
    estimate = browser.find_element(By.ID, "override-estimate").text
    left = RunItem.objects.filter(run=run, status="queued").count()  # an unmatched answer costs nothing: more fit
    assert left >= 1
    assert f" {left} ${left * price / 100:.2f}" in estimate  # the leads left, each a paid match at worst
    assert "$0.00" in browser.find_element(By.ID, "override-budget-left").text  # today's cap is used up
    screenshot(browser, "walk-override-confirm-1400.png", width=1400)
    screenshot(browser, "walk-override-confirm-390.png", width=390)
    browser.find_element(By.ID, "btn-confirm-override").click()
    wait_for(lambda: "past today's budget" in message(), "the override message")

    # The run finishes past the cap; the downloads appear; the trail says who did what.
    thread = work_in_background(run.run_id)
    wait_for(lambda: state() == "finished", "the run to finish", timeout=WAIT_S)
    thread.join(timeout=WAIT_S)
    trail = browser.find_element(By.ID, "audit-trail").text
    assert "ops" in trail and "paused" in trail and "resumed past the budget" in trail
    assert AuditEvent.objects.filter(run_id=run.run_id).count() == 3
    http = session_for(browser)
    for link_id in ("download-report", "download-csv"):
        response = http.get(browser.find_element(By.ID, link_id).get_attribute("href"), timeout=10)
        assert response.status_code == 200 and "attachment" in response.headers["Content-Disposition"]
    screenshot(browser, "walk-finished-1400.png", width=1400)
    screenshot(browser, "walk-finished-390.png", width=390)
