"""Assertions and steps the API test files share."""

from __future__ import annotations

import re

from skiptrace.worker import Worker


def assert_error(response, status: int, code: str) -> dict:
    """A JSON error of the contract's shape: ``{"error": code, "detail": "...", ...}``, no traceback."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    assert "Traceback" not in response.content.decode("utf-8", "replace")
    return body


def run_leads(client, leads, *, label: str = "test") -> str:
    """Create a run through the API and work it in this thread; returns its run_id."""
    response = client.post_json("/api/skiptrace-runs", {"source_label": label, "leads": leads})
    assert response.status_code == 200, response.content
    worker = Worker(concurrency=1)
    for _ in range(20):
        if not worker.process_one_batch():
            break
    return response.json()["run_id"]


_POST_LINE = re.compile(r"(\d\d):(\d\d):(\d\d),(\d{3}) INFO convexa.provider batchdata POST .*?elapsed=([\d.]+)s")


def provider_send_times(outputs: list[str]) -> list[float]:
    """When worker processes (LOG_LEVEL=info) sent their provider requests, in seconds of the day.

    A POST is logged when its answer is in, with its elapsed time, so it left at the log time minus
    that. This is the fleet-wide rate limiter's own guarantee, free of the sandbox's arrival clock,
    which on a loaded host stalls with the test process and bunches arrivals together.
    """
    return sorted(
        int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 - float(elapsed)
        for out in outputs
        for h, m, s, ms, elapsed in _POST_LINE.findall(out)
    )


def densest_window(times: list[float]) -> list[int]:
    """The times (ms from its first) in the busiest half-open 1 s window."""
    times = sorted(times)
    best: list[int] = []
    for i, first in enumerate(times):
        window = [round(1000 * (t - first)) for t in times[i:] if t - first < 1.0]
        best = max(best, window, key=len)
    return best
