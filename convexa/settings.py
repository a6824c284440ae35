"""Django settings. Every value comes from convexa.env (the one reader of the environment)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import environ

from convexa import env as E

BASE_DIR = Path(__file__).resolve().parent.parent

# A .env file beside manage.py is read when present; real environment variables win.
if (BASE_DIR / ".env").exists() and not os.environ.get("CONVEXA_IGNORE_DOTENV"):
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = E.boolean("DJANGO_DEBUG", False)

# --- database ---------------------------------------------------------------------------------
SQLITE_DB_PATH = Path(E.text("SQLITE_DB_PATH", "data/convexa.db"))
if not SQLITE_DB_PATH.is_absolute():
    SQLITE_DB_PATH = BASE_DIR / SQLITE_DB_PATH
SQLITE_BUSY_TIMEOUT_MS = E.integer("SQLITE_BUSY_TIMEOUT_MS", 5000, minimum=0, maximum=600_000)
# SQLite: how long a writer waits behind the same process's other writers (they queue in the
# process, convexa/db/sqlite3) before its statement fails as "database is locked".
SQLITE_WRITE_QUEUE_TIMEOUT_S = E.number("SQLITE_WRITE_QUEUE_TIMEOUT_S", 120.0, minimum=1, maximum=3600)
# PostgreSQL connections one process holds at most (Django's connection pool). A worker's threads
# wait on provider sockets without one, so this does not grow with SKIP_TRACE_CONCURRENCY.
DATABASE_POOL_MAX = E.integer("DATABASE_POOL_MAX", 6, minimum=1, maximum=100)
# How long a request or a worker thread waits for a pooled connection before the database counts
# as unavailable (the API answers 503 with Retry-After).
DATABASE_POOL_TIMEOUT_S = E.number("DATABASE_POOL_TIMEOUT_S", 10.0, minimum=0.1, maximum=600)
_pg = E.database("DATABASE_URL")
if _pg is not None:
    _pg["CONN_MAX_AGE"] = 0  # the pool keeps connections; Django's persistent connections are off
    _pg.setdefault("OPTIONS", {})
    _pg["OPTIONS"]["pool"] = {
        "min_size": 1, "max_size": DATABASE_POOL_MAX, "timeout": DATABASE_POOL_TIMEOUT_S,
        "max_idle": 300, "name": "convexa",
    }
    DATABASES = {"default": _pg}
else:
    DATABASES = {
        "default": {
            # Django's SQLite backend, with write transactions queued inside the process
            # (convexa/db/sqlite3): 64 threads never race SQLite's busy timeout.
            "ENGINE": "convexa.db.sqlite3",
            "NAME": str(SQLITE_DB_PATH),
            "OPTIONS": {
                # IMMEDIATE: a transaction takes the write lock when it begins, so two writers queue
                # on the busy timeout instead of one failing with "database is locked" on upgrade.
                "transaction_mode": "IMMEDIATE",
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                "init_command": (
                    "PRAGMA journal_mode=WAL;"
                    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS};"
                    "PRAGMA synchronous=NORMAL;"
                    "PRAGMA foreign_keys=ON;"
                ),
            },
            # Tests use a real file (not :memory:) so threads and worker subprocesses share it, in WAL.
            "TEST": {"NAME": os.environ.get("CONVEXA_TEST_SQLITE_PATH") or str(SQLITE_DB_PATH.parent / "test_convexa.db")},
        }
    }
DATA_DIR = SQLITE_DB_PATH.parent
DATA_DIR.mkdir(parents=True, mode=0o700, exist_ok=True)  # mode: only when created here
if _pg is None:
    # Leads, phones and emails live in this file: owner-only (0600), and so its -wal and -shm.
    E.private_sqlite_file(SQLITE_DB_PATH)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SECRET_KEY = E.secret_key("DJANGO_SECRET_KEY", debug=DEBUG, data_dir=DATA_DIR)
ALLOWED_HOSTS = [h.strip() for h in E.text("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]

# --- the product's keys (README, "Configuration") -------------------------------------------
PORT = E.integer("PORT", 6001, minimum=1, maximum=65535)
BATCHDATA_BASE_URL = E.url("BATCHDATA_BASE_URL", "https://api.batchdata.com")
BATCHDATA_SKIPTRACE_PATH = E.text("BATCHDATA_SKIPTRACE_PATH", "/api/v1/property/skip-trace")
if not re.fullmatch(r"/api/v[13]/[A-Za-z0-9/_.\-]*", BATCHDATA_SKIPTRACE_PATH):
    # The wire format follows the version in the path (V1 or V3): any other path would be spoken
    # to in a format we cannot promise, so it stops start-up.
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"BATCHDATA_SKIPTRACE_PATH={BATCHDATA_SKIPTRACE_PATH!r} is not valid: must start with /api/v1/ or /api/v3/"
    )
BATCHDATA_AUTH_STYLE = E.choice("BATCHDATA_AUTH_STYLE", "bearer", ("bearer", "x-api-key"))
BATCHDATA_API_TOKEN = E.optional_text("BATCHDATA_API_TOKEN")
PROVIDER_TIMEOUT_S = E.number("PROVIDER_TIMEOUT_S", 30.0, minimum=0, exclusive_minimum=True, maximum=600)
SKIP_TRACE_BATCH_SIZE = E.integer("SKIP_TRACE_BATCH_SIZE", 100, minimum=1, maximum=100)
SKIP_TRACE_RPS = E.number("SKIP_TRACE_RPS", 4.0, minimum=0, exclusive_minimum=True, maximum=1000)
SKIP_TRACE_CONCURRENCY = E.integer("SKIP_TRACE_CONCURRENCY", 6, minimum=1, maximum=64)
SKIP_TRACE_COST_PER_MATCH_CENTS = E.money_cents("SKIP_TRACE_COST_PER_MATCH_USD", "0.07")
SKIP_TRACE_DAILY_BUDGET_CENTS = E.money_cents("SKIP_TRACE_DAILY_BUDGET_USD", "200.00")
SKIP_TRACE_BUDGET_TZ = E.timezone("SKIP_TRACE_BUDGET_TZ", "UTC")
SKIP_TRACE_MAX_ATTEMPTS = E.integer("SKIP_TRACE_MAX_ATTEMPTS", 5, minimum=1, maximum=50)
CIRCUIT_BREAKER_ERROR_RATE = E.number("CIRCUIT_BREAKER_ERROR_RATE", 0.30, minimum=0, exclusive_minimum=True, maximum=1)
CIRCUIT_MIN_SAMPLES = E.integer("CIRCUIT_MIN_SAMPLES", 30, minimum=1, maximum=10_000)
CIRCUIT_PROBE_INTERVAL_S = E.number("CIRCUIT_PROBE_INTERVAL_S", 60.0, minimum=0, exclusive_minimum=True, maximum=86_400)
CACHE_TTL_DAYS = E.number("CACHE_TTL_DAYS", 7.0, minimum=0, exclusive_minimum=True, maximum=3650)
L1_CACHE_TTL_S = 600
# A National DNC status older than this is stale: never dialed (16 CFR 310.4(b)(3)(iv): 31 days); 0 = all stale.
DNC_MAX_AGE_DAYS = E.number("DNC_MAX_AGE_DAYS", 31.0, minimum=0, maximum=3650)
SANITIZED_RETRY_ENABLED = E.boolean("SANITIZED_RETRY_ENABLED", True)
ADMIN_TOKEN = E.optional_text("ADMIN_TOKEN")
ARTIFACT_URL_TTL_S = E.integer("ARTIFACT_URL_TTL_S", 3600, minimum=1, maximum=30 * 86_400)
RUN_REPORTS_DIR = Path(E.text("RUN_REPORTS_DIR", "run_reports"))
if not RUN_REPORTS_DIR.is_absolute():
    RUN_REPORTS_DIR = BASE_DIR / RUN_REPORTS_DIR
MAX_REQUEST_BYTES = 50 * 1024 * 1024
MAX_LEADS_PER_REQUEST = 100_000
# Webhooks (more endpoints can be added in the console; this one is the endpoint named "env")
WEBHOOK_URL = E.optional_text("WEBHOOK_URL")
WEBHOOK_SECRET = E.optional_text("WEBHOOK_SECRET")
if WEBHOOK_URL:
    from django.core.exceptions import ImproperlyConfigured

    if not WEBHOOK_URL.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"WEBHOOK_URL={WEBHOOK_URL!r} is not valid: must start with http:// or https://")
    if not WEBHOOK_SECRET or len(WEBHOOK_SECRET) < 16:
        raise ImproperlyConfigured("WEBHOOK_SECRET is not valid: WEBHOOK_URL is set, so a secret of 16+ characters "
                                   "is needed to sign the events")
WEBHOOK_RETRY_HOURS = E.number("WEBHOOK_RETRY_HOURS", 24.0, minimum=0, exclusive_minimum=True, maximum=24 * 14)
# Admin login throttling (django-axes): this many failures per user and address lock it for the cool-off.
AXES_FAILURE_LIMIT = E.integer("LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=100)
AXES_COOLOFF_TIME = E.number("LOGIN_COOLOFF_MINUTES", 15.0, minimum=0, exclusive_minimum=True, maximum=24 * 60) / 60
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

# --- Django ----------------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "skiptrace",
    "contacts",
    "devtools",  # the BatchData sandbox and manage.py batchdata_sandbox (no models)
    "integrations",
    "axes",
]

AUTHENTICATION_BACKENDS = [
    # First, so that a locked-out login is refused before the password is even checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

MIDDLEWARE = [
    # First, so that whatever any other layer answers under /api/ (a CSRF page, a 400 for a bad Host,
    # a 500 from a middleware) is turned into the API's JSON error body.
    "skiptrace.middleware.ApiErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a lock-out into its answer (403 with the cool-off).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "convexa.urls"
WSGI_APPLICATION = "convexa.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
FORMAT_MODULE_PATH = ["convexa.formats"]  # times to the second: "2026-12-03 15:04:05"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "data" / "static"

# The API takes up to 50 MB of JSON; Django's own 2.5 MB guard would answer those with a 400 page.
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 10_000

# --- HTTPS and browser hardening (`manage.py check --deploy` is clean with the production values) ---
# Defaults are safe for `make serve` on plain HTTP (nothing sticky, nobody locked out); behind a TLS
# proxy set DJANGO_SECURE_SSL_REDIRECT=true (cookies then default to Secure), the proxy header, and HSTS.
SECURE_SSL_REDIRECT = E.boolean("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^api/health$"]  # load-balancer probes may speak plain HTTP inside the network
SECURE_PROXY_SSL_HEADER = E.proxy_ssl_header("DJANGO_SECURE_PROXY_SSL_HEADER")
SESSION_COOKIE_SECURE = E.boolean("DJANGO_SESSION_COOKIE_SECURE", SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = E.boolean("DJANGO_CSRF_COOKIE_SECURE", SECURE_SSL_REDIRECT)
SECURE_HSTS_SECONDS = E.integer("DJANGO_SECURE_HSTS_SECONDS", 0, minimum=0, maximum=2 * 365 * 86_400)
SECURE_HSTS_INCLUDE_SUBDOMAINS = E.boolean("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = E.boolean("DJANGO_SECURE_HSTS_PRELOAD", False)
CSRF_TRUSTED_ORIGINS = E.text_list("DJANGO_CSRF_TRUSTED_ORIGINS")
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("http://", "https://")):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"DJANGO_CSRF_TRUSTED_ORIGINS={_origin!r} is not valid: must start with https://")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

LOG_LEVEL = E.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "skiptrace.logs.RedactFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL.upper()},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "urllib3": {"level": "WARNING"},
    },
}
