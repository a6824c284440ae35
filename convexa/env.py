"""The one place that reads the environment.

Every key of the contract's configuration table is read here through django-environ, with the
contract's default. A bad value stops start-up with ``ImproperlyConfigured`` naming the key, so an
operator never finds out at 3 a.m. that ``SKIP_TRACE_RPS=abc`` silently meant "unlimited".
"""

from __future__ import annotations

import decimal
import os
import secrets
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import environ
from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")

env = environ.Env()


def _read(key: str, default: T, cast: Callable[[str], T]) -> T:
    raw = env.str(key, default=None)
    if raw is None or raw.strip() == "":
        return default
    try:
        return cast(raw.strip())
    except (ValueError, TypeError, decimal.InvalidOperation) as exc:
        raise ImproperlyConfigured(f"{key}={raw!r} is not valid: {exc}") from None


def _check(key: str, value: T, ok: bool, why: str) -> T:
    if not ok:
        raise ImproperlyConfigured(f"{key}={value!r} is not valid: {why}")
    return value


def text(key: str, default: str = "") -> str:
    return _read(key, default, str)


def optional_text(key: str) -> str | None:
    value = _read(key, "", str)
    return value or None


def integer(key: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _read(key, default, int)
    if minimum is not None:
        _check(key, value, value >= minimum, f"must be at least {minimum}")
    if maximum is not None:
        _check(key, value, value <= maximum, f"must be at most {maximum}")
    return value


def number(key: str, default: float, *, minimum: float | None = None, maximum: float | None = None,
           exclusive_minimum: bool = False) -> float:
    value = _read(key, default, float)
    _check(key, value, value == value and value not in (float("inf"), float("-inf")), "must be a finite number")
    if minimum is not None:
        if exclusive_minimum:
            _check(key, value, value > minimum, f"must be greater than {minimum}")
        else:
            _check(key, value, value >= minimum, f"must be at least {minimum}")
    if maximum is not None:
        _check(key, value, value <= maximum, f"must be at most {maximum}")
    return value


def money_cents(key: str, default: str) -> int:
    """A dollar amount such as ``200.00`` as whole cents (money is never a float)."""
    value = _read(key, decimal.Decimal(default), decimal.Decimal)
    _check(key, str(value), value.is_finite(), "must be a number of dollars such as 200.00")
    _check(key, str(value), value >= 0, "must not be negative")
    cents = value * 100
    _check(key, str(value), cents == cents.to_integral_value(), "must have at most two decimals")
    return int(cents)


def boolean(key: str, default: bool) -> bool:
    truthy = {"1", "true", "yes", "on"}
    falsy = {"0", "false", "no", "off"}

    def cast(raw: str) -> bool:
        if raw.lower() in truthy:
            return True
        if raw.lower() in falsy:
            return False
        raise ValueError("must be true or false")

    return _read(key, default, cast)


def choice(key: str, default: str, choices: tuple[str, ...]) -> str:
    value = _read(key, default, str).lower()
    return _check(key, value, value in choices, f"must be one of {', '.join(choices)}")


def timezone(key: str, default: str) -> str:
    def cast(raw: str) -> str:
        try:
            zoneinfo.ZoneInfo(raw)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone") from None
        return raw

    return _read(key, default, cast)


def url(key: str, default: str) -> str:
    def cast(raw: str) -> str:
        if not raw.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return raw.rstrip("/")

    return _read(key, default, cast)


def database(key: str) -> dict[str, Any] | None:
    raw = optional_text(key)
    if raw is None:
        return None
    try:
        config = environ.Env.db_url_config(raw)
    except Exception as exc:  # django-environ raises several types for a malformed URL
        raise ImproperlyConfigured(f"{key} is not a valid database URL: {exc}") from None
    engine = config.get("ENGINE", "")
    if "postgresql" not in engine:
        raise ImproperlyConfigured(f"{key} must be a postgres:// URL (SQLite is configured with SQLITE_DB_PATH)")
    return config


def secret_key(key: str, *, debug: bool, data_dir: Path) -> str:
    """The Django secret key.

    Unset: a random key is generated once and kept (owner-only) in the data folder, so signed
    artifact links survive a restart and no well-known default is ever used. A known-insecure
    value is refused unless DEBUG is on.
    """
    value = optional_text(key)
    if value:
        # Django's own deploy check (security.W009): 50+ characters, 5+ distinct, no "django-insecure-".
        insecure = (value.startswith("django-insecure") or value in {"change-me", "changeme", "secret"}
                    or len(value) < 50 or len(set(value)) < 5)
        if insecure and not debug:
            raise ImproperlyConfigured(
                f"{key} is insecure (too short or a well-known default). Set it to 50 random characters, "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'"
            )
        return value
    path = data_dir / ".secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race; read its key
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


def proxy_ssl_header(key: str) -> tuple[str, str] | None:
    """``X-Forwarded-Proto=https`` -> ``("HTTP_X_FORWARDED_PROTO", "https")`` (Django's SECURE_PROXY_SSL_HEADER)."""

    def cast(raw: str) -> tuple[str, str]:
        name, sep, value = raw.replace(":", "=").partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ValueError("must look like X-Forwarded-Proto=https")
        meta = name.upper().replace("-", "_")
        return (meta if meta.startswith("HTTP_") else "HTTP_" + meta), value

    return _read(key, None, cast)


def text_list(key: str, default: str = "") -> list[str]:
    return [part.strip() for part in text(key, default).split(",") if part.strip()]


def private_sqlite_file(path: Path) -> None:
    """Create the SQLite database file owner-only (0600) before SQLite does (it would honour the umask).

    SQLite creates the ``-wal`` and ``-shm`` files with the permissions of the database file, so
    they are owner-only too. The folder, when this creates it, is owner-only (0700). An existing
    file keeps the permissions its owner gave it.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ImproperlyConfigured(f"SQLITE_DB_PATH={str(path)!r} is not valid: {exc.strerror}") from None
    os.fchmod(fd, 0o600)  # whatever the umask was
    os.close(fd)
