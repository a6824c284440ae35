"""Log hygiene: no phone number, email or token at INFO or above (contract invariant 5).

Code never passes contact values to INFO+ log calls in the first place; this filter is the
second line: it rewrites anything that looks like a bearer token, an e-mail address or a
North-American phone number in INFO+ records before a handler sees them.
"""

from __future__ import annotations

import logging
import re

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
