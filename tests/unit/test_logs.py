"""The redaction filter: the second line of defence for invariant 5."""

from __future__ import annotations

import logging

import pytest

from skiptrace.provider import RedactFilter, redact


@pytest.mark.parametrize(
    "text",
    ["+18135550142", "8135550142", "813-555-0142", "(813) 555-0142", "813.555.0142", "d.alvarez@example.com",
     "Bearer abcdefghijklmnop", "token=abcdefghijklmnop"],
)
def test_contact_values_and_tokens_are_masked(text):
    cleaned = redact(f"value {text} end")
    assert text not in cleaned and cleaned.startswith("value ") and cleaned.endswith(" end")


@pytest.mark.parametrize("text", ["batch f004bb8135550142ac0f86 failed", "run_8135550142abcd", "provider_call_ids=1..4"])
def test_ids_that_hold_digits_are_left_alone(text):
    assert redact(text) == text


def test_filter_rewrites_info_records_and_leaves_debug_alone():
    info = logging.LogRecord("x", logging.INFO, __file__, 1, "phone %s", ("8135550142",), None)
    debug = logging.LogRecord("x", logging.DEBUG, __file__, 1, "phone %s", ("8135550142",), None)
    RedactFilter().filter(info)
    RedactFilter().filter(debug)
    assert info.getMessage() == "phone [phone]"
    assert debug.getMessage() == "phone 8135550142"
