"""The provider client's last check of a rate permit runs on the connection, right before the
request's bytes are written: after ``requests`` has prepared the request and after a new
connection's set-up, with nothing but the write left. Real sockets on 127.0.0.1 (the sandbox), as
``responses`` replaces the adapter and would never reach the hook."""

from __future__ import annotations

import time

import pytest

from skiptrace.provider import BatchDataClient, TraceRequest
from tests.conftest import PROVIDER_TOKEN


def request(n: int = 1) -> TraceRequest:
    return TraceRequest(request_id=str(n), street=f"{n} Oak St", city="Tampa", state="FL", zip="33610",
                        first="Pat", last="Lee")


@pytest.fixture
def client(sandbox) -> BatchDataClient:
    return BatchDataClient(base_url=sandbox.url, path="/api/v1/property/skip-trace", token=PROVIDER_TOKEN, timeout=5)


def test_before_write_runs_after_before_send_on_a_set_up_connection_before_the_provider_sees_the_request(
        client, sandbox):
    events: list[tuple[str, float]] = []

    def before_write() -> None:
        time.sleep(0.3)  # nothing has reached the provider while the last check runs (a permit's wait)
        events.append(("write", time.monotonic()))

    for n in range(2):  # a new connection, then a kept-alive one
        result = client.skip_trace([request(n)], before_send=lambda: events.append(("send", time.monotonic())),
                                   before_write=before_write)
        assert result.elapsed_s < 0.3  # the provider's time, from the write: not the wait before it
    assert [e for e, _ in events] == ["send", "write", "send", "write"]
    arrivals = sandbox.stats.snapshot()["request_times"]  # the sandbox's monotonic clock: this process's
    assert len(arrivals) == 2
    assert events[1][1] < arrivals[0] and events[3][1] < arrivals[1]
    assert events[1][1] - events[0][1] >= 0.3


def test_a_last_check_that_raises_sends_nothing_and_its_exception_comes_out_as_it_is(client, sandbox):
    class Withheld(Exception):
        pass

    def refuse() -> None:
        raise Withheld("breaker opened")

    with pytest.raises(Withheld):
        client.skip_trace([request()], before_write=refuse)
    assert sandbox.stats.snapshot()["requests"] == 0
    # the hook was for that one POST: the next goes without it
    assert len(client.skip_trace([request(2)]).results) == 1
    assert sandbox.stats.snapshot()["requests"] == 1
