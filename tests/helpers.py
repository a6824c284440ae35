"""Assertions and steps the API test files share."""

from __future__ import annotations

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
