"""Scoped API keys: ``read`` may GET, ``write`` may also create, pause and resume runs, ``admin`` may
also override the budget. ``ADMIN_TOKEN`` stays valid as an admin-scope key.

A key is ``cvx_`` + 43 URL-safe characters, shown once at creation; only its SHA-256 is stored, so a
database dump gives nothing usable. Revoking is immediate (the next request is refused).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from integrations.models import SCOPE_RANK, ApiKey, Scope

KEY_PREFIX = "cvx_"
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)  # last use is written at most once a minute per key


@dataclass(frozen=True)
class Principal:
    name: str  # "admin-token" or "key:<name>"
    scope: str

    def allows(self, needed: str) -> bool:
        return SCOPE_RANK[Scope(self.scope)] >= SCOPE_RANK[Scope(needed)]


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(name: str, scope: str, *, now: dt.datetime | None = None) -> tuple[ApiKey, str]:
    """A new key (the row, and the key itself, which is not stored)."""
    if scope not in Scope.values:
        raise ValueError(f"scope must be one of {', '.join(Scope.values)}")
    name = name.strip()
    if not name or len(name) > 64:
        raise ValueError("a key needs a name of 1 to 64 characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey.objects.create(name=name, prefix=key[:10], key_hash=_hash(key), scope=scope,
                                created_at=now or timezone.now())
    return row, key


def revoke_key(name: str, *, now: dt.datetime | None = None) -> bool:
    return bool(ApiKey.objects.filter(name=name, revoked_at__isnull=True).update(revoked_at=now or timezone.now()))


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None
    return presented.strip()


def authenticate(header: str | None, *, now: dt.datetime | None = None) -> Principal | None:
    """The principal behind ``Authorization: Bearer …``, or None. Constant-time for the admin token."""
    presented = bearer(header)
    if presented is None:
        return None
    admin = settings.ADMIN_TOKEN
    if admin and hmac.compare_digest(presented.encode(), admin.encode()):
        return Principal("admin-token", Scope.ADMIN)
    if not presented.startswith(KEY_PREFIX):
        return None
    row = ApiKey.objects.filter(key_hash=_hash(presented), revoked_at__isnull=True).first()
    if row is None:
        return None
    now = now or timezone.now()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        try:
            with transaction.atomic():
                ApiKey.objects.filter(pk=row.pk).update(last_used_at=now)
        except DatabaseError:  # a busy database never refuses a valid key
            pass
    return Principal(f"key:{row.name}", row.scope)
