"""A bad setting stops start-up with a message naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def start(env_overrides: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKIP_TRACE", "CIRCUIT", "BATCHDATA"))}
    env.pop("DATABASE_URL", None)
    env.update({"SQLITE_DB_PATH": str(tmp_path / "db" / "x.db"), "CONVEXA_IGNORE_DOTENV": "1"})
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SKIP_TRACE_RPS", "abc"),
        ("SKIP_TRACE_RPS", "0"),
        ("SKIP_TRACE_DAILY_BUDGET_USD", "-5"),
        ("SKIP_TRACE_DAILY_BUDGET_USD", "lots"),
        ("SKIP_TRACE_BATCH_SIZE", "500"),
        ("SKIP_TRACE_CONCURRENCY", "0"),
        ("CIRCUIT_BREAKER_ERROR_RATE", "1.5"),
        ("CACHE_TTL_DAYS", "-1"),
        ("SANITIZED_RETRY_ENABLED", "maybe"),
        ("SKIP_TRACE_BUDGET_TZ", "Mars/Olympus"),
        ("BATCHDATA_BASE_URL", "ftp://x"),
        ("BATCHDATA_AUTH_STYLE", "basic"),
        ("BATCHDATA_SKIPTRACE_PATH", "/api/v2/property/skip-trace"),
        ("BATCHDATA_SKIPTRACE_PATH", "/property/skip-trace"),
        ("PORT", "70000"),
        ("DATABASE_URL", "mysql://x@localhost/db"),
    ],
)
def test_bad_value_stops_startup_naming_the_key(key, value, tmp_path):
    result = start({key: value}, tmp_path)
    assert result.returncode != 0
    assert key in result.stderr
    assert "Traceback" not in result.stderr.splitlines()[-1]


def test_defaults_start_and_create_the_data_folder(tmp_path):
    result = start({}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "db").is_dir()
    secret = tmp_path / "db" / ".secret_key"
    assert secret.exists() and (secret.stat().st_mode & 0o077) == 0


def test_insecure_secret_key_refused_without_debug(tmp_path):
    result = start({"DJANGO_SECRET_KEY": "django-insecure-abc"}, tmp_path)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_settings_carry_contract_defaults(settings):
    assert settings.PORT == 6001
    assert settings.SKIP_TRACE_BATCH_SIZE == 100
    assert settings.SKIP_TRACE_COST_PER_MATCH_CENTS == 7
    assert settings.SKIP_TRACE_DAILY_BUDGET_CENTS == 20000
    assert settings.CIRCUIT_MIN_SAMPLES == 30
    assert settings.BATCHDATA_SKIPTRACE_PATH == "/api/v1/property/skip-trace"
    assert settings.DEBUG is False


def test_env_example_lists_every_key_settings_read():
    import re

    read = set(re.findall(r'E\.\w+\("([A-Z_]+)"', (ROOT / "convexa" / "settings.py").read_text()))
    listed = set(re.findall(r"^#?\s?([A-Z_]+)=", (ROOT / ".env.example").read_text(), flags=re.M))
    assert read <= listed, f"missing from .env.example: {sorted(read - listed)}"


def test_a_v3_path_starts(tmp_path):
    result = start({"BATCHDATA_SKIPTRACE_PATH": "/api/v3/property/skip-trace"}, tmp_path)
    assert result.returncode == 0, result.stderr
