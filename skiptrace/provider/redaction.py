"""Redaction, the one place for it: masks and ``sanitize_for_debug`` for stored request/response JSON
(debug API, console), and ``redact`` / ``RedactFilter`` for log records at INFO and above.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from typing import Any


def mask_phone(number: str) -> str:
    """ "+18135550142" -> "+1813***0142"; other shapes keep at most their last 4 digits."""
    digits = re.sub(r"\D", "", str(number))
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) == 10:
        return f"+1{digits[:3]}***{digits[-4:]}"
    if len(digits) >= 7:
        return "***" + digits[-4:]
    return "***"


def mask_email(address: str) -> str:
    """ "d.alvarez@example.com" -> "d***@example.com"."""
    text = str(address).strip()
    local, sep, domain = text.rpartition("@")
    if not sep or not domain:
        return "***"
    return f"{local[:1]}***@{domain}"


_SECRET_KEYS = frozenset({"authorization", "x-api-key", "api-key", "apikey", "api_key", "password", "secret"})
# A phone number inside any string: 10 digits, optionally +1/1 and the usual punctuation.
_PHONE_SEARCH_RE = re.compile(r"(?<![\d+])(?:\+?1[\s.\-]?)?\(?\d{3}\)?[\s.\-]?\d{3}[\s.\-]?\d{4}(?!\d)")
_EMAIL_SEARCH_RE = re.compile(r"[^@\s\"'<>(),;:]+@[^@\s\"'<>(),;:]+\.[A-Za-z]{2,}")


def _is_secret_key(key: Any) -> bool:
    k = str(key).strip().lower()
    return k in _SECRET_KEYS or "token" in k


def _sanitize(obj: Any, phone_context: bool) -> Any:
    """phone_context: inside a key that names a phone ("phoneNumbers", "phone", ...), where any
    value with 7+ digits is taken for a number, whatever its shape."""
    if isinstance(obj, dict):
        return {
            key: _sanitize(value, phone_context or "phone" in str(key).lower())
            for key, value in obj.items()
            if not _is_secret_key(key)
        }
    if isinstance(obj, list | tuple):
        return [_sanitize(v, phone_context) for v in obj]
    if isinstance(obj, str):
        if phone_context and len(re.sub(r"\D", "", obj)) >= 7 and not re.search(r"[A-Za-z@]", obj):
            return mask_phone(obj)
        text = _PHONE_SEARCH_RE.sub(lambda m: mask_phone(m.group(0)), obj)
        return _EMAIL_SEARCH_RE.sub(lambda m: mask_email(m.group(0)), text)
    if isinstance(obj, int) and not isinstance(obj, bool) and phone_context and abs(obj) >= 1_000_000:
        return mask_phone(str(obj))
    return copy.deepcopy(obj)


def sanitize_for_debug(obj: Any) -> Any:
    """Deep copy of request/response JSON with every phone number and email masked and every
    authorization/token-like key removed. A JSON string is sanitized and returned as a string."""
    if isinstance(obj, str | bytes):
        text = obj.decode("utf-8", "replace") if isinstance(obj, bytes) else obj
        try:
            parsed = json.loads(text)
        except ValueError:
            return _sanitize(text, False)
        if isinstance(parsed, dict | list):
            return json.dumps(_sanitize(parsed, False), ensure_ascii=False)
        return _sanitize(text, False)
    return _sanitize(obj, False)


# --- log records: what no handler may see at INFO or above ---------------------------------------
#
# Code never passes contact values to INFO+ log calls in the first place; this filter is the second
# line: it rewrites anything that looks like a bearer token, an e-mail address or a North-American
# phone number in INFO+ records before a handler sees them. Its phone pattern is stricter than the
# one for stored JSON above: not inside a longer word, so a hex batch id or a request id that happens
# to hold ten digits is not rewritten in a log line.

_BEARER = re.compile(r"(?i)(bearer\s+|token[=:]\s*|x-api-key[=:]\s*)[A-Za-z0-9._~+/=-]{4,}")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Not inside a longer word: a hex batch id or a request id that happens to hold ten digits is not a phone.
_PHONE = re.compile(r"(?<![\w+])(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}(?!\w)")


def redact(text: str) -> str:
    text = _BEARER.sub(lambda m: m.group(1) + "****", text)
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub("[phone]", text)


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string must not take logging down
                return True
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
            if record.exc_info or record.exc_text:
                # A traceback (e.g. a database error's DETAIL) is formatted later from exc_info:
                # format it now, redacted, so every handler prints this text instead.
                text = record.exc_text or logging.Formatter().formatException(record.exc_info)
                record.exc_text = redact(text)
            if record.stack_info:
                record.stack_info = redact(record.stack_info)
        return True
