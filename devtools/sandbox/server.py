"""The HTTP server: routes, faults, the ``/_sandbox/*`` control endpoints.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devtools.sandbox.answers import _error_body, item_key
from devtools.sandbox.answers_v3 import ANSWERS, _entries, _match_count, _true_matches, unreadable_answer
from devtools.sandbox.config import (
    FAULTS,
    MAX_BODY_BYTES,
    SKIPTRACE_PATHS,
    UNREADABLE_KINDS,
    SandboxConfig,
    SandboxStats,
    _coerce_config_value,
)


@dataclass
class _Reply:
    code: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    billed: int = 0  # the matchCount of a 2xx answer (what the provider bills), readable or not
    matched: int = 0  # the same without match_count_extra
    unreadable: str | None = None  # the unreadable kind or fault of a 2xx the client cannot map


class _CloseWithoutAnswer(Exception):
    """Abort the exchange: the connection is dropped without a response."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "BatchDataSandbox/1.0"
    sys_version = ""
    server: _HTTPServer

    # -- plumbing ----------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle + delayed ACK add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log = self.server.sandbox.log
        if log is not None:
            log(f"{self.address_string()} {format % args}")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY_BYTES:
                    raise _CloseWithoutAnswer
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise _CloseWithoutAnswer
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self, code: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    @staticmethod
    def _error_reply(code: int, config: SandboxConfig) -> _Reply:
        headers = {}
        if code == 429 and config.retry_after is not None:
            headers["Retry-After"] = str(config.retry_after)
        payload = _error_body(code)
        if code == 402:
            payload["message"] = "Insufficient credits"
        elif code == 403:  # V3 out of credits
            payload = _error_body(403, "Insufficient balance")
        return _Reply(code, payload, headers)

    def _reset_connection(self) -> None:
        """Drop the connection with a TCP RST, the way a crashed or overloaded proxy would."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        raise _CloseWithoutAnswer

    def _dispatch(self, handler: Callable[[], None]) -> None:
        try:
            handler()
        except _CloseWithoutAnswer:
            self.close_connection = True
            try:
                self.connection.close()
            except OSError:
                pass
        except (TimeoutError, ConnectionError, BrokenPipeError):
            self.close_connection = True

    # -- routes ------------------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch(self._post)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(self._get)

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch(self._other)

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch(self._other)

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch(self._other)

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def _other(self) -> None:
        self._read_body()
        if self._path() in SKIPTRACE_PATHS:
            self._send(405, _error_body(405), {"Allow": "POST"})
        else:
            self._send(404, _error_body(404))

    def _get(self) -> None:
        path = self._path()
        sandbox = self.server.sandbox
        if path == "/_sandbox/stats":
            self._send(200, sandbox.stats.snapshot())
        elif path == "/_sandbox/config":
            self._send(200, dataclasses.asdict(sandbox.config))
        elif path in SKIPTRACE_PATHS:
            self._send(405, _error_body(405), {"Allow": "POST"})
        else:
            self._send(404, _error_body(404))

    def _post(self) -> None:
        path = self._path()
        if path in SKIPTRACE_PATHS:
            self._skiptrace(SKIPTRACE_PATHS[path])
            return
        raw = self._read_body()
        sandbox = self.server.sandbox
        if path == "/_sandbox/reset":
            sandbox.reset()
            self._send(200, {"ok": True})
        elif path == "/_sandbox/config":
            try:
                updates = json.loads(raw or b"{}")
                if not isinstance(updates, dict):
                    raise ValueError("the body must be a JSON object of SandboxConfig fields")
                sandbox.update_config(**updates)
            except (ValueError, TypeError) as exc:
                self._send(400, _error_body(400, str(exc)))
                return
            self._send(200, dataclasses.asdict(sandbox.config))
        else:
            self._send(404, _error_body(404))

    def _authorized(self, config: SandboxConfig) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            token = ""
            if config.accept_x_api_key:
                token = self.headers.get("X-API-Key", "").strip()
        if not token:
            return False
        return config.token is None or token == config.token

    def _skiptrace(self, version: str) -> None:
        arrived = time.monotonic()
        sandbox = self.server.sandbox
        raw = self._read_body()
        try:
            body: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        requests = body.get("requests") if isinstance(body, dict) else None
        keys = [item_key(r) for r in requests if isinstance(r, dict)] if isinstance(requests, list) else []
        sandbox.stats.arrive(arrived, keys, version)
        try:
            reply = self._skiptrace_reply(body, version)
            sandbox.stats.answered(version, reply.code, reply.billed, reply.matched, reply.unreadable)
        finally:
            # Leave before answering, so a client that has its answer never sees its call in progress.
            sandbox.stats.leave()
        self._send(reply.code, reply.payload, reply.headers, reply.raw)

    def _skiptrace_reply(self, body: Any, version: str) -> _Reply:
        """What to answer a skip-trace POST, after latency and hangs; raises to drop the connection."""
        sandbox = self.server.sandbox
        config = copy.copy(sandbox.config)  # one consistent view for this request
        stop = sandbox.stopping
        fault = config.fault
        if fault is not None and fault not in FAULTS:
            return _Reply(500, _error_body(500, f"sandbox: unknown fault {fault!r}"))
        if config.latency_s > 0 and stop.wait(config.latency_s):
            self._reset_connection()  # the server is shutting down: never answer
        if fault == "reset":
            self._reset_connection()
        if fault in ("500", "429", "401", "402"):
            return self._error_reply(int(fault), config)
        if fault == "403_balance":
            return self._error_reply(403, config)
        if fault == "timeout" and stop.wait(config.hang_s):
            self._reset_connection()
        if not self._authorized(config):
            return self._error_reply(401, config)
        if fault == "malformed":  # a 200 that is not JSON, billed as the answer it should have been
            code, payload = ANSWERS[version](body, config) if body is not None else (400, None)
            billed = _match_count(payload, version) if code == 200 else 0
            matched = _true_matches(_entries(payload, version), version) if code == 200 else 0
            return _Reply(
                200, None, raw=_MALFORMED[version], billed=billed, matched=matched, unreadable=fault
            )
        if config.error_rate > 0 and sandbox.draw() < config.error_rate:
            return self._error_reply(config.error_status, config)
        if body is None:
            return _Reply(400, _error_body(400, "The request body must be valid JSON"))
        code, payload = ANSWERS[version](body, config)
        if code != 200:
            return _Reply(code, payload)
        billed = _match_count(payload, version)
        matched = _true_matches(_entries(payload, version), version)
        unreadable: str | None = None
        raw: bytes | None = None
        container = payload["results"] if version == "v1" else payload["result"]
        list_key = "persons" if version == "v1" else "data"
        if fault == "drift":
            container[{"v1": "people", "v3": "records"}[version]] = container.pop(list_key)
            container["meta"] = container.pop("meta")
            unreadable = fault
        elif fault == "short":
            container[list_key] = container[list_key][:-1]
            unreadable = fault
        elif config.unreadable_rate > 0 and sandbox.draw_unreadable() < config.unreadable_rate:
            unreadable = sandbox.next_unreadable_kind(config)
            payload, raw = unreadable_answer(payload, version, unreadable, body, config.seed)
        return _Reply(200, payload, raw=raw, billed=billed, matched=matched, unreadable=unreadable)


_MALFORMED = {
    "v1": b'{"status": {"code": 200, "text": "OK"}, "results": {"persons": [{"_id": ',
    "v3": b'{"status": {"code": 200, "text": "OK"}, "result": {"data": [{"input": ',
}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    sandbox: SandboxServer

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer) -> None:
        self.sandbox = sandbox
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conns_lock:
            if alive:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def drop_connections(self) -> None:
        """Close kept-alive connections so a stopped sandbox answers nothing more."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class SandboxServer:
    """The sandbox on a loopback port. Binds at construction (so ``url`` is known), serves after ``start``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        config: SandboxConfig | None = None,
        *,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config if config is not None else SandboxConfig()
        self.stats = SandboxStats()
        self.log = log
        self.stopping = threading.Event()
        self._rng_lock = threading.Lock()
        self._rng = random.Random(self._config.seed)
        self._unreadable_rng = random.Random(f"unreadable:{self._config.seed}")
        self._unreadable_count = 0
        self._thread: threading.Thread | None = None
        server_class = _HTTPServer6 if ":" in host else _HTTPServer
        self._httpd = server_class((host, port), self)
        self._host = host

    @property
    def config(self) -> SandboxConfig:
        return self._config

    @config.setter
    def config(self, value: SandboxConfig) -> None:
        self._config = value
        self._reseed()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def start(self) -> SandboxServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="batchdata-sandbox",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests held by latency or a ``timeout`` fault are dropped unanswered."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()
        self._httpd.drop_connections()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def update_config(self, **fields: Any) -> SandboxConfig:
        """Validate then apply field updates in place (all or nothing).

        Re-seeds the ``error_rate`` and ``unreadable_rate`` generators and restarts the unreadable-kind
        rotation, so a test that sets its faults gets the same sequence every time.
        """
        values = {name: _coerce_config_value(name, value) for name, value in fields.items()}
        with self._rng_lock:
            for name, value in values.items():
                setattr(self._config, name, value)
        self._reseed()
        return self._config

    def reset(self) -> None:
        self.stats.reset()
        self._reseed()

    def draw(self) -> float:
        """The next number of the seeded ``error_rate`` generator."""
        with self._rng_lock:
            return self._rng.random()

    def draw_unreadable(self) -> float:
        """The next number of the seeded ``unreadable_rate`` generator (apart from ``error_rate``'s)."""
        with self._rng_lock:
            return self._unreadable_rng.random()

    def next_unreadable_kind(self, config: SandboxConfig) -> str:
        """The next kind in the rotation (``config.unreadable_kinds`` or all of them, in order)."""
        kinds = config.unreadable_kinds or list(UNREADABLE_KINDS)
        with self._rng_lock:
            kind = kinds[self._unreadable_count % len(kinds)]
            self._unreadable_count += 1
            return kind

    def _reseed(self) -> None:
        with self._rng_lock:
            self._rng = random.Random(self._config.seed)
            self._unreadable_rng = random.Random(f"unreadable:{self._config.seed}")
            self._unreadable_count = 0
