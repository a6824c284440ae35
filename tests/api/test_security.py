"""Security of the HTTP surface: token compare, CSRF, signed links, body limits, deploy check, file modes."""

from __future__ import annotations

import hmac
import json
import os
import secrets
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from django.core import signing as django_signing
from django.test import Client

from skiptrace import api, signing
from skiptrace.models import Run
from skiptrace.worker import Worker
from tests.conftest import ADMIN_TOKEN, ApiClient
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
REAL_COMPARE_DIGEST = hmac.compare_digest
LEAD = {"lead_id": "SEC-1", "first_name": "Dana", "last_name": "Reyes", "street": "100 ALWAYSMATCH Rd",
        "city": "Tampa", "state": "FL", "zip": "33610"}


def finished_run(api_client, lead_id: str = "SEC-1") -> str:
    response = api_client.post_json("/api/skiptrace-runs", {"leads": [{**LEAD, "lead_id": lead_id}]})
    assert response.status_code == 200, response.content
    worker = Worker(concurrency=1)
    while worker.process_one_batch():
        pass
    return response.json()["run_id"]


def link(api_client, run_id: str, key: str = "report_json_url") -> str:
    url = api_client.get(f"/api/skiptrace-runs/{run_id}/artifacts").json()[key]
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def fetch(client, url: str):
    response = client.get(url)
    if response.streaming:
        response.read_bytes = b"".join(response.streaming_content)
    return response


def subprocess_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "SKIP_TRACE", "CIRCUIT", "BATCHDATA")) and k != "DATABASE_URL"}
    env.update({"SQLITE_DB_PATH": str(tmp_path / "data" / "convexa.db"), "CONVEXA_IGNORE_DOTENV": "1"})
    env.update(overrides)
    return env


# --- the admin token ------------------------------------------------------------------------------


def test_token_ok_compares_with_hmac_compare_digest(monkeypatch, settings):
    calls = []

    def spy(a, b):
        calls.append((a, b))
        return REAL_COMPARE_DIGEST(a, b)

    monkeypatch.setattr(api.hmac, "compare_digest", spy)

    assert api.token_ok(f"Bearer {ADMIN_TOKEN}") is True
    assert api.token_ok("Bearer wrong") is False
    assert api.token_ok("Bearer " + ADMIN_TOKEN[:-1]) is False  # a prefix: no early exit on length either

    assert calls == [(ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode()), (b"wrong", ADMIN_TOKEN.encode()),
                     (ADMIN_TOKEN[:-1].encode(), ADMIN_TOKEN.encode())]


def test_every_api_call_goes_through_the_constant_time_compare(monkeypatch, api_client, anon_client):
    seen = []
    monkeypatch.setattr(api.hmac, "compare_digest", lambda a, b: seen.append(a) or REAL_COMPARE_DIGEST(a, b))

    assert api_client.get("/api/metrics").status_code == 200
    assert anon_client.get("/api/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 401

    assert seen == [ADMIN_TOKEN.encode(), b"nope"]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"HTTP_AUTHORIZATION": f"Basic {ADMIN_TOKEN}"}, id="basic-scheme"),
        pytest.param({"HTTP_AUTHORIZATION": f"Token {ADMIN_TOKEN}"}, id="token-scheme"),
        pytest.param({"HTTP_AUTHORIZATION": f"Bearer {ADMIN_TOKEN}x"}, id="token-plus-one"),
        pytest.param({"HTTP_AUTHORIZATION": f"Bearer {ADMIN_TOKEN.upper()}"}, id="token-upper-case"),
        pytest.param({"HTTP_X_API_KEY": ADMIN_TOKEN}, id="other-header"),
        pytest.param({"HTTP_AUTHORIZATION": "Bearer \u00e9\u00e9"}, id="non-ascii"),
    ],
)
def test_anything_but_the_exact_bearer_token_is_401(anon_client, extra):
    assert_error(anon_client.get("/api/metrics", **extra), 401, "Unauthorized")


def test_the_token_in_the_query_string_is_not_accepted(anon_client):
    assert_error(anon_client.get("/api/metrics", {"token": ADMIN_TOKEN}), 401, "Unauthorized")
    assert_error(anon_client.get("/api/metrics", {"access_token": ADMIN_TOKEN}), 401, "Unauthorized")


def test_an_admin_session_cookie_does_not_open_the_api(django_user_model):
    django_user_model.objects.create_superuser("boss", password="pw-123456-long")
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="boss", password="pw-123456-long")

    assert_error(client.get("/api/metrics"), 401, "Unauthorized")
    response = client.post("/api/skiptrace-runs", json.dumps({"leads": [LEAD]}), content_type="application/json")
    assert_error(response, 401, "Unauthorized")
    assert Run.objects.count() == 0


# --- CSRF on the admin ----------------------------------------------------------------------------


def test_admin_login_post_without_the_csrf_token_is_403(django_user_model):
    django_user_model.objects.create_superuser("boss", password="pw-123456-long")
    client = Client(enforce_csrf_checks=True)

    response = client.post("/admin/login/", {"username": "boss", "password": "pw-123456-long"})

    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


def test_admin_login_post_with_the_csrf_token_logs_in(django_user_model):
    django_user_model.objects.create_superuser("boss", password="pw-123456-long")
    client = Client(enforce_csrf_checks=True)
    client.get("/admin/login/")
    token = client.cookies["csrftoken"].value

    response = client.post("/admin/login/", {"username": "boss", "password": "pw-123456-long",
                                             "csrfmiddlewaretoken": token, "next": "/admin/"})

    assert response.status_code == 302
    assert client.session["_auth_user_id"]


def test_a_logged_in_admin_post_without_the_csrf_token_is_403(django_user_model):
    django_user_model.objects.create_superuser("boss", password="pw-123456-long")
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.get(username="boss"))

    response = client.post("/admin/logout/")

    assert response.status_code == 403
    assert client.session.get("_auth_user_id")


def test_csrf_and_session_cookies_are_http_only_and_same_site(settings):
    assert settings.CSRF_COOKIE_HTTPONLY and settings.SESSION_COOKIE_HTTPONLY
    assert settings.SESSION_COOKIE_SAMESITE == "Lax" and settings.CSRF_COOKIE_SAMESITE == "Lax"


# --- signed artifact links ------------------------------------------------------------------------


class FrozenTime:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_an_artifact_link_works_until_its_ttl_and_is_403_after(api_client, anon_client, sandbox, settings, monkeypatch):
    settings.ARTIFACT_URL_TTL_S = 600
    run_id = finished_run(api_client)
    issued = int(time.time())
    monkeypatch.setattr("skiptrace.views.time", FrozenTime(issued))
    url = link(api_client, run_id)

    monkeypatch.setattr("skiptrace.views.time", FrozenTime(issued + 599))
    assert fetch(anon_client, url).status_code == 200
    monkeypatch.setattr("skiptrace.views.time", FrozenTime(issued + 600))
    assert_error(fetch(anon_client, url), 403, "Forbidden")
    monkeypatch.setattr("skiptrace.views.time", FrozenTime(issued + 86_400))
    assert_error(fetch(anon_client, url), 403, "Forbidden")


def test_an_artifact_link_cannot_be_forged(api_client, anon_client, sandbox, settings):
    run_id = finished_run(api_client)
    good = link(api_client, run_id)
    path = good.split("?")[0]
    expires = int(time.time()) + 3600
    payload = json.dumps([run_id, "report.json", expires], separators=(",", ":"))

    unsalted = django_signing.Signer().sign(payload).rsplit(":", 1)[1]
    other_key = django_signing.Signer(key="x" * 60, salt=signing.SALT).sign(payload).rsplit(":", 1)[1]
    plain_hmac = hmac.new(settings.SECRET_KEY.encode(), payload.encode(), "sha256").hexdigest()
    for token in (f"{expires}.{unsalted}", f"{expires}.{other_key}", f"{expires}.{plain_hmac}", f"{expires}.",
                  "", f"{expires + 10**12}.{good.split('.')[-1]}", "9" * 5000 + ".x"):
        assert_error(fetch(anon_client, f"{path}?token={quote(token)}"), 403, "Forbidden")
    assert fetch(anon_client, good).status_code == 200


def test_an_artifact_link_cannot_be_pointed_at_another_run_or_file(api_client, anon_client, sandbox):
    run_a = finished_run(api_client, "SEC-A")
    run_b = finished_run(api_client, "SEC-B")
    url_a = link(api_client, run_a)
    token_a = url_a.split("token=")[1]

    for path in (f"/api/artifacts/{run_b}/report.json", f"/api/artifacts/{run_a}/enriched.csv",
                 f"/api/artifacts/{run_a.upper()}/report.json", f"/api/artifacts/{run_a}%20/report.json"):
        assert_error(fetch(anon_client, f"{path}?token={token_a}"), 403, "Forbidden")
    assert fetch(anon_client, url_a).status_code == 200


@pytest.mark.parametrize("name", ["..%2F..%2Fconvexa%2Fsettings.py", "..%2Freport.json", ".secret_key",
                                  "report.json%00.png", "REPORT.JSON", "report.json%2F"])
def test_an_artifact_name_outside_the_two_files_is_refused(api_client, anon_client, sandbox, name):
    run_id = finished_run(api_client)
    token = link(api_client, run_id).split("token=")[1]

    response = fetch(anon_client, f"/api/artifacts/{run_id}/{name}?token={token}")

    assert response.status_code in (403, 404), response.status_code
    assert response["Content-Type"].startswith("application/json")


def test_verify_artifact_refuses_an_absurdly_long_expiry_without_raising():
    assert signing.verify_artifact("run-a", "report.json", "9" * 5000 + ".x", now=int(time.time())) is False


def test_the_admin_token_is_no_substitute_for_the_signed_token(api_client, sandbox):
    run_id = finished_run(api_client)

    assert_error(fetch(api_client, f"/api/artifacts/{run_id}/report.json"), 403, "Forbidden")


def test_a_downloaded_artifact_is_an_attachment_that_browsers_do_not_sniff(api_client, anon_client, sandbox):
    run_id = finished_run(api_client)

    response = fetch(anon_client, link(api_client, run_id, "enriched_csv_url"))

    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Type"].startswith("text/csv")


# --- upload size limits ---------------------------------------------------------------------------


def test_django_upload_limits_are_set_and_match_the_api_limit(settings):
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == settings.MAX_REQUEST_BYTES == 50 * 1024 * 1024
    assert settings.DATA_UPLOAD_MAX_NUMBER_FIELDS is not None
    assert settings.FILE_UPLOAD_MAX_MEMORY_SIZE is not None


@pytest.mark.parametrize("url", ["/api/skiptrace-runs", "/api/skiptrace"])
def test_a_body_declared_over_the_limit_is_413_json_before_it_is_read(api_client, url):
    response = api_client.post(url, b"{}", CONTENT_LENGTH=str(50 * 1024 * 1024 + 1))

    assert_error(response, 413, "PayloadTooLarge")


@pytest.mark.parametrize("url", ["/api/skiptrace-runs", "/api/skiptrace"])
def test_a_body_over_djangos_data_upload_max_memory_size_is_413_json(api_client, settings, url):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"leads": [{**LEAD, "first_name": "x" * 2000}], "lead": LEAD})

    assert_error(api_client.post(url, body), 413, "PayloadTooLarge")
    assert Run.objects.count() == 0


def test_an_oversized_admin_form_post_is_a_400_not_a_500(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    client = Client(raise_request_exception=False)

    response = client.post("/admin/login/", {"username": "x" * 5000, "password": "y"})

    assert response.status_code in (400, 403)


# --- production settings: check --deploy ----------------------------------------------------------


PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_ALLOWED_HOSTS": "skiptrace.example.com",
    "DJANGO_SECURE_SSL_REDIRECT": "true",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto=https",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "DJANGO_SECURE_HSTS_PRELOAD": "true",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://skiptrace.example.com",
    "ADMIN_TOKEN": "t" + secrets.token_urlsafe(32),
}


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = subprocess_env(tmp_path, **PRODUCTION, DJANGO_SECRET_KEY=secrets.token_urlsafe(50))

    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "DEBUG"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)" in result.stdout


def test_check_deploy_names_what_the_dev_defaults_leave_open(tmp_path):
    env = subprocess_env(tmp_path, DJANGO_SECRET_KEY=secrets.token_urlsafe(50))

    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)

    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DJANGO_SECURE_SSL_REDIRECT", "sometimes"),
        ("DJANGO_SECURE_HSTS_SECONDS", "a year"),
        ("DJANGO_SECURE_HSTS_SECONDS", "-1"),
        ("DJANGO_SECURE_PROXY_SSL_HEADER", "https"),
        ("DJANGO_CSRF_TRUSTED_ORIGINS", "skiptrace.example.com"),
        ("DJANGO_SECRET_KEY", "a-32-character-key-is-too-short-now-0123"),
        ("DJANGO_SECRET_KEY", "a" * 60),
    ],
)
def test_a_bad_security_setting_stops_startup_naming_the_key(tmp_path, key, value):
    env = subprocess_env(tmp_path, **{key: value})

    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)

    assert result.returncode != 0
    assert key in result.stderr
    assert "Traceback" not in result.stderr.splitlines()[-1]


def test_production_values_redirect_to_https_set_hsts_and_secure_cookies(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.ALLOWED_HOSTS = ["skiptrace.example.com"]
    client = ApiClient(HTTP_HOST="skiptrace.example.com")

    plain = client.get("/api/metrics")
    assert plain.status_code == 301 and plain["Location"].startswith("https://skiptrace.example.com/api/metrics")
    assert client.get("/api/health").status_code == 200  # load-balancer probes stay on plain HTTP
    secure = client.get("/api/metrics", HTTP_X_FORWARDED_PROTO="https")
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_api_answers_carry_the_browser_hardening_headers(api_client):
    response = api_client.get("/api/metrics")

    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"


def test_an_api_request_for_an_unknown_host_is_a_json_400(api_client):
    response = api_client.get("/api/metrics", HTTP_HOST="evil.example.com")

    assert_error(response, 400, "BadRequest")


# --- the SQLite file is owner-only ----------------------------------------------------------------


SQLITE_PROBE = r"""
import json, os, django
os.environ["DJANGO_SETTINGS_MODULE"] = "convexa.settings"
django.setup()
from django.conf import settings
from django.core.management import call_command
call_command("migrate", verbosity=0)
from skiptrace.models import GuardState
GuardState.objects.create(name="probe")  # a write; the connection stays open, so -wal and -shm exist
path = str(settings.SQLITE_DB_PATH)
print(json.dumps({name: oct(os.stat(path + suffix).st_mode & 0o777)
                  for name, suffix in (("db", ""), ("wal", "-wal"), ("shm", "-shm"))}
                 | {"dir": oct(os.stat(os.path.dirname(path)).st_mode & 0o777),
                    "secret": oct(os.stat(os.path.join(os.path.dirname(path), ".secret_key")).st_mode & 0o777)}))
"""


def test_a_new_sqlite_database_and_its_wal_and_shm_are_owner_only(tmp_path):
    env = subprocess_env(tmp_path)

    result = subprocess.run([sys.executable, "-c", SQLITE_PROBE], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120, preexec_fn=lambda: os.umask(0o022))

    assert result.returncode == 0, result.stderr[-2000:]
    modes = json.loads(result.stdout.strip().splitlines()[-1])
    assert modes == {"db": "0o600", "wal": "0o600", "shm": "0o600", "dir": "0o700", "secret": "0o600"}


def test_an_existing_database_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "data" / "convexa.db"
    path.parent.mkdir()
    path.write_bytes(b"")
    path.chmod(0o640)

    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=subprocess_env(tmp_path),
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
