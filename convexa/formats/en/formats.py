"""Times in the ops console to the second, in an unambiguous order ("2026-12-03 15:04:05"), instead
of English's "Dec. 3, 2026, 3:04 p.m." (no seconds, no 24-hour clock)."""

DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
