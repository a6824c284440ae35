from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from skiptrace.signing import ARTIFACTS, artifact_urls, sign_artifact, verify_artifact

NOW = 1_758_200_000
EXP = NOW + 600


def test_artifact_names_and_content_types():
    assert ARTIFACTS == {"report.json": "application/json", "enriched.csv": "text/csv; charset=utf-8"}


@pytest.mark.parametrize("name", list(ARTIFACTS))
def test_valid_token_verifies_until_it_expires(name):
    token = sign_artifact("run-a", name, expires_at=EXP)
    assert verify_artifact("run-a", name, token, now=NOW)
    assert verify_artifact("run-a", name, token, now=EXP - 1)


def test_expired_token_is_refused():
    token = sign_artifact("run-a", "report.json", expires_at=EXP)
    assert not verify_artifact("run-a", "report.json", token, now=EXP)
    assert not verify_artifact("run-a", "report.json", token, now=EXP + 3600)


def test_token_for_one_run_is_refused_for_another():
    token = sign_artifact("run-a", "report.json", expires_at=EXP)
    assert not verify_artifact("run-b", "report.json", token, now=NOW)


def test_token_for_one_file_is_refused_for_the_other():
    token = sign_artifact("run-a", "report.json", expires_at=EXP)
    assert not verify_artifact("run-a", "enriched.csv", token, now=NOW)


def test_extending_the_expiry_in_the_token_breaks_it():
    token = sign_artifact("run-a", "report.json", expires_at=EXP)
    _, sig = token.split(".", 1)
    assert not verify_artifact("run-a", "report.json", f"{EXP + 86_400}.{sig}", now=NOW)


def test_tampered_signature_is_refused():
    token = sign_artifact("run-a", "report.json", expires_at=EXP)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert not verify_artifact("run-a", "report.json", flipped, now=NOW)


@pytest.mark.parametrize(
    "token", ["", ".", "abc", f"{EXP}", f"{EXP}.", "x.y", f"-{EXP}.abc", "１２.abc", None]
)
def test_malformed_tokens_are_refused(token):
    assert not verify_artifact("run-a", "report.json", token, now=NOW)


def test_unknown_artifact_name_cannot_be_signed_or_verified():
    with pytest.raises(ValueError):
        sign_artifact("run-a", "secrets.txt", expires_at=EXP)
    token = sign_artifact("run-a", "report.json", expires_at=EXP)
    assert not verify_artifact("run-a", "../report.json", token, now=NOW)


def test_token_signed_with_another_secret_key_is_refused(settings):
    token = sign_artifact("run-a", "report.json", expires_at=EXP)
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    assert not verify_artifact("run-a", "report.json", token, now=NOW)


def test_token_signed_with_a_rotated_out_key_still_verifies(settings):
    old = settings.SECRET_KEY
    token = sign_artifact("run-a", "report.json", expires_at=EXP)
    settings.SECRET_KEY = "new-secret-key-" + "y" * 40
    settings.SECRET_KEY_FALLBACKS = [old]
    assert verify_artifact("run-a", "report.json", token, now=NOW)


def test_artifact_urls_point_at_the_artifacts_route_and_expire_after_the_ttl(settings):
    settings.ARTIFACT_URL_TTL_S = 900
    urls = artifact_urls("run-a", now=NOW, base_url="http://testserver")
    assert set(urls) == {"expires_at", "report_json_url", "enriched_csv_url"}
    assert datetime.fromisoformat(urls["expires_at"]) == datetime.fromtimestamp(NOW + 900, tz=UTC)
    assert urls["expires_at"].endswith("Z")
    for key, name in (("report_json_url", "report.json"), ("enriched_csv_url", "enriched.csv")):
        parts = urlsplit(urls[key])
        assert f"{parts.scheme}://{parts.netloc}" == "http://testserver"
        assert parts.path == f"/api/artifacts/run-a/{name}"
        (token,) = parse_qs(parts.query)["token"]
        assert verify_artifact("run-a", name, token, now=NOW + 899)
        assert not verify_artifact("run-a", name, token, now=NOW + 900)


def test_artifact_urls_without_base_url_are_paths():
    urls = artifact_urls("run-a", now=NOW)
    assert urls["report_json_url"].startswith("/api/artifacts/run-a/report.json?token=")
