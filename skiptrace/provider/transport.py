"""The provider's HTTP transport: requests' adapter with a hook right before the request's bytes go
onto the socket.

A rate permit is good for PERMIT_MAX_AGE_S (see skiptrace.guards.rate). The money path checks it
before ``Session.post``, but what ``requests`` does after that (preparing the request, the
environment's proxy settings, taking a pooled connection, a new connection's TCP and TLS set-up)
takes the CPU of a busy host, or a TLS handshake's round trips: time the permit's margin in the
window was not sized for. ``before_write`` runs once more inside urllib3, on a connection already
set up, immediately before ``HTTPConnection.request`` writes to the socket.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_hook = threading.local()


def _before_write(conn: HTTPConnection) -> None:
    fn = getattr(_hook, "fn", None)
    if fn is None:
        return
    _hook.fn = None  # once per POST
    if conn.sock is None:
        conn.connect()  # a new connection's set-up comes before the check, not between it and the write
    fn()
    _hook.written_at = time.perf_counter()


class _HookedHTTPConnection(HTTPConnection):
    def request(self, *args, **kwargs):  # noqa: ANN002, ANN003 - urllib3's signature
        _before_write(self)
        return super().request(*args, **kwargs)


class _HookedHTTPSConnection(HTTPSConnection):
    def request(self, *args, **kwargs):  # noqa: ANN002, ANN003 - urllib3's signature
        _before_write(self)
        return super().request(*args, **kwargs)


class _HookedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HookedHTTPConnection


class _HookedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HookedHTTPSConnection


class SendHookAdapter(HTTPAdapter):
    """``HTTPAdapter`` whose connections run this thread's hook (see ``before_write_hook``)."""

    def init_poolmanager(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - requests' signature
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HookedHTTPConnectionPool,
                                                   "https": _HookedHTTPSConnectionPool}


@contextlib.contextmanager
def before_write_hook(fn: Callable[[], None] | None) -> Iterator[None]:
    """Within the block, the next request this thread writes through a ``SendHookAdapter`` first
    calls ``fn`` (which may raise: nothing is written then, and the exception comes out of
    ``Session.post``)."""
    _hook.fn, _hook.written_at = fn, None
    try:
        yield
    finally:
        _hook.fn = None


def written_at() -> float | None:
    """When (``time.perf_counter()``) this thread's last hooked request passed its hook and was
    written: a POST's elapsed time counts from there, not from a post-dated permit's wait."""
    return getattr(_hook, "written_at", None)
