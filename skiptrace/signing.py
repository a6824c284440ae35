"""Signed, expiring links to a run's artifacts (``report.json``, ``enriched.csv``).

A link needs no bearer token: ``/api/artifacts/<run_id>/<name>?token=<expires_at>.<signature>``.
The signature is an HMAC (``django.core.signing.Signer``, salt ``convexa.artifact``, keyed by
SECRET_KEY, SECRET_KEY_FALLBACKS honoured on verification) over run_id, file name and expiry, so a
token for one run or one file is worthless for another, and the expiry cannot be edited.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import quote

from django.conf import settings
from django.core import signing

ARTIFACTS = {"report.json": "application/json", "enriched.csv": "text/csv; charset=utf-8"}
SALT = "convexa.artifact"
ARTIFACTS_URL_PREFIX = "/api/artifacts"


def _signer() -> signing.Signer:
    return signing.Signer(salt=SALT)


def _payload(run_id: str, name: str, expires_at: int) -> str:
    # JSON keeps the three fields unambiguous whatever characters a run_id holds.
    return json.dumps([str(run_id), str(name), int(expires_at)], separators=(",", ":"))


def sign_artifact(run_id: str, name: str, *, expires_at: int) -> str:
    """Token ``<expires_at>.<signature>`` for ``name`` of ``run_id``, valid until ``expires_at`` (epoch s)."""
    if name not in ARTIFACTS:
        raise ValueError(f"unknown artifact {name!r}")
    signer = _signer()
    signed = signer.sign(_payload(run_id, name, expires_at))
    signature = signed.rsplit(signer.sep, 1)[1]
    return f"{int(expires_at)}.{signature}"


def verify_artifact(run_id: str, name: str, token: str, *, now: int) -> bool:
    """True when ``token`` was issued for this run and file and has not expired at ``now``."""
    if name not in ARTIFACTS or not isinstance(token, str):
        return False
    expires_raw, dot, signature = token.partition(".")
    # An expiry is an epoch second: more than 12 digits is no token we issued (and int() of a
    # 5,000-digit string raises).
    if not dot or not signature or not expires_raw.isascii() or not expires_raw.isdigit() or len(expires_raw) > 12:
        return False
    expires_at = int(expires_raw)
    if now >= expires_at:
        return False
    signer = _signer()
    try:
        signer.unsign(f"{_payload(run_id, name, expires_at)}{signer.sep}{signature}")
    except signing.BadSignature:
        return False
    return True


def _iso_utc(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat().replace("+00:00", "Z")


def artifact_url(run_id: str, name: str, *, expires_at: int, base_url: str = "") -> str:
    token = sign_artifact(run_id, name, expires_at=expires_at)
    return f"{base_url.rstrip('/')}{ARTIFACTS_URL_PREFIX}/{quote(str(run_id), safe='')}/{name}?token={token}"


def artifact_urls(run_id: str, *, now: int, base_url: str = "") -> dict:
    """``{"expires_at", "report_json_url", "enriched_csv_url"}``; links live ARTIFACT_URL_TTL_S seconds."""
    expires_at = int(now) + int(settings.ARTIFACT_URL_TTL_S)
    return {
        "expires_at": _iso_utc(expires_at),
        "report_json_url": artifact_url(run_id, "report.json", expires_at=expires_at, base_url=base_url),
        "enriched_csv_url": artifact_url(run_id, "enriched.csv", expires_at=expires_at, base_url=base_url),
    }
