"""Log hygiene: no phone number, email or token at INFO or above.

The filter lives with the rest of the redaction in ``skiptrace.provider.redaction``; this module keeps
the name the ``LOGGING`` setting uses (``skiptrace.logs.RedactFilter``).
"""

from skiptrace.provider.redaction import RedactFilter, redact

__all__ = ["RedactFilter", "redact"]
