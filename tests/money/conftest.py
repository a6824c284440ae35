"""Fixtures of the money-path tests."""

from __future__ import annotations

import pytest
import responses


@pytest.fixture
def provider():
    """The provider as ``tests.money.test_service.FakeBatchData`` behind ``responses`` (no socket)."""
    from tests.money.test_service import URL, FakeBatchData

    fake = FakeBatchData()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.POST, URL, callback=fake)
        yield fake
