"""The servers ``navai serve`` runs, configured for navai: uvicorn (ASGI) and waitress (WSGI).

Both get the same protections against clients that hold connections without finishing a
request (see docs/deployment.md, "Limits"):

- a cap on open connections per worker; at the cap, the connections that are idle or still
  sending their request head are closed, oldest first, so that a new client always gets in
  (a server that stops accepting at its cap locks every client out);
- a deadline for the request head and one for the body, counted from the request's first
  byte (trickling a byte at a time does not extend them), and an idle keep-alive timeout;
- a file-descriptor limit raised to the hard limit at start-up, and a connection cap kept
  below it, so that accepting never fails with "Too many open files";
- forwarded headers (``X-Forwarded-For``) trusted only from the addresses given.

The module imports neither server at import time: ``check`` says which package is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from navai_core import NavaiError
from navai_core.concurrency.threads import FunctionThreads
from navai_core.routes.body import too_large

from ._common import response_parts

logger = logging.getLogger("navai")

#: Default cap on open connections per worker (lowered to fit the file-descriptor limit).
DEFAULT_MAX_CONNECTIONS = 1000
#: Default request threads of the WSGI server: minting waits on OpenAI (I/O), so one thread
#: per concurrent mint; 64 threads at 20 ms per mint allow 3,200 mints/s, beyond one core.
DEFAULT_THREADS = 64
#: Seconds a client has to send a request head (from its first byte, or from connecting).
HEAD_TIMEOUT = 10.0
#: Seconds a client has to send a request body, once its head arrived.
BODY_TIMEOUT = 30.0
#: Seconds an idle keep-alive connection is kept open.
IDLE_TIMEOUT = 5.0
#: File descriptors kept free for everything but client connections (upstream connection
#: pool, Redis, log files, the functions' own files).
FD_RESERVE = 256
_FD_CEILING = 65536


@dataclass(frozen=True)
class Limits:
    """What one server process allows its clients."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    threads: int = DEFAULT_THREADS
    head_timeout: float = HEAD_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    max_body_bytes: int = 1024 * 1024
    forwarded_allow_ips: str | None = None  # None: forwarded headers are ignored
    access_log: bool = False


def required_packages(wsgi: bool) -> list[str]:
    """The packages the chosen server needs that are not importable (empty: all there)."""
    names = ["waitress"] if wsgi else ["uvicorn", "httptools"]
    return [name for name in names if importlib.util.find_spec(name) is None]


def raise_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (at most 65,536) and
    return the soft limit in force; 0 where there is no such limit (Windows)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = _FD_CEILING if hard == resource.RLIM_INFINITY else min(hard, _FD_CEILING)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return _FD_CEILING if soft == resource.RLIM_INFINITY else int(soft)


def fit_connections(requested: int, file_limit: int) -> int:
    """The connection cap that fits the file-descriptor limit (``file_limit`` 0: none):
    ``FD_RESERVE`` descriptors (a quarter of a small limit) stay free for everything else."""
    if file_limit <= 0:
        return requested
    return max(8, min(requested, file_limit - min(FD_RESERVE, file_limit // 4)))


class _Throttled:
    """Logs a warning at most once a minute (a flood of clients must not flood the log)."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.last = -1e9
        self.skipped = 0

    def warn(self, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < 60:
            self.skipped += 1
            return
        more = f" ({self.skipped} more since the last report)" if self.skipped else ""
        logger.warning(self.message + more, *args)
        self.last, self.skipped = now, 0


# ----- ASGI: uvicorn ------------------------------------------------------------------------


def asgi_protocol(limits: Limits) -> type[Any]:
    """uvicorn's httptools protocol with navai's connection cap and read deadlines."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    full = _Throttled("%d open connections (the cap): closing idle ones to let new clients in")

    class NavaiHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _idle_since = 0.0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._idle_since = time.monotonic()
            self._arm(limits.head_timeout)
            if len(self.connections) > limits.max_connections:
                full.warn(limits.max_connections)
                self._make_room()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # a new request on a kept-alive connection
                self._arm(limits.head_timeout)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm(limits.body_timeout)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._idle_since = time.monotonic()

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()

        def _idle(self) -> bool:
            return self.cycle is None or bool(self.cycle.response_complete)

        def _make_room(self) -> None:
            """Close the connection idle the longest (or this one, if none is idle)."""
            connections: set[Any] = self.connections
            idle = [c for c in connections if c is not self and c._idle()]
            victim = min(idle, key=lambda c: c._idle_since) if idle else self
            if not victim.transport.is_closing():
                victim.transport.close()

    return NavaiHttpToolsProtocol


def run_asgi(app: Any, sock: socket.socket, limits: Limits) -> None:
    """Serve ``app`` on uvicorn (uvloop when installed, httptools) until Ctrl-C/SIGTERM."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=asgi_protocol(limits),
        loop="auto",  # uvloop where it is installed (not on Windows), else asyncio
        lifespan="on",
        timeout_keep_alive=max(1, round(limits.idle_timeout)),
        timeout_graceful_shutdown=10,
        proxy_headers=limits.forwarded_allow_ips is not None,
        forwarded_allow_ips=limits.forwarded_allow_ips or "",
        server_header=False,
        access_log=limits.access_log,
    )
    # uvicorn handles SIGINT/SIGTERM itself, then re-raises the signal once it has shut
    # down: that arrives here as KeyboardInterrupt.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])


# ----- WSGI: waitress -----------------------------------------------------------------------


def wsgi_server(app: Any, sock: socket.socket, limits: Limits) -> Any:
    """A waitress server for ``app`` on ``sock`` with navai's limits (call ``run()``)."""
    from waitress.adjustments import Adjustments  # type: ignore[import-untyped]
    from waitress.channel import HTTPChannel  # type: ignore[import-untyped]
    from waitress.parser import HTTPRequestParser  # type: ignore[import-untyped]
    from waitress.server import TcpWSGIServer  # type: ignore[import-untyped]
    from waitress.task import ThreadedTaskDispatcher  # type: ignore[import-untyped]
    from waitress.utilities import Error  # type: ignore[import-untyped]

    full = _Throttled("%d open connections (the cap): closing idle ones to let new clients in")

    class JSONError(Error):  # type: ignore[misc]
        """waitress's own refusals (413 body, 400/431 head), answered like navai's errors."""

        def __init__(self, error: Any) -> None:
            super().__init__(error.body)
            self.code, self.reason = error.code, error.reason

        def to_response(self, ident: str | None = None) -> tuple[str, list[Any], bytes]:
            error = (
                too_large(limits.max_body_bytes)
                if self.code == 413
                else NavaiError(f"{self.reason}.", status_code=self.code)
            )
            _, headers, body = response_parts(error.to_reply())
            return f"{self.code} {self.reason}", [*headers, ("Cache-Control", "no-store")], body

    class Parser(HTTPRequestParser):  # type: ignore[misc]
        def received(self, data: bytes) -> int:
            consumed = int(super().received(data))
            error: Any = getattr(self, "error", None)
            if error is not None and not isinstance(error, JSONError):
                self.error = JSONError(error)
            return consumed

    class Channel(HTTPChannel):  # type: ignore[misc]
        parser_class = Parser
        request_started = 0.0

        def received(self, data: bytes) -> bool:
            if self.request is None and data:
                self.request_started = time.monotonic()
            return bool(super().received(data))

        def send_continue(self) -> None:
            # A request waitress already refuses (a declared body over navai's limit) is
            # answered at once: the client is never asked to send that body.
            if getattr(self.request, "error", None) is not None:
                self.request.expect_continue = False
                return
            super().send_continue()

    class Server(TcpWSGIServer):  # type: ignore[misc]
        channel_class = Channel

        def readable(self) -> bool:
            if self.accepting and len(self.active_channels) >= limits.max_connections:
                full.warn(limits.max_connections)
                self._make_room()
            return bool(super().readable())

        def _make_room(self) -> None:
            idle = [
                c
                for c in self.active_channels.values()
                if not c.requests and not c.will_close and not c.close_when_flushed
            ]
            idle.sort(key=lambda c: c.last_activity)
            surplus = len(self.active_channels) - limits.max_connections + 1
            for channel in idle[: max(1, surplus)]:
                channel.will_close = True

        def maintenance(self, now: float) -> None:
            super().maintenance(now)  # waitress's own inactivity backstop: channel_timeout
            mono = time.monotonic()
            for channel in self.active_channels.values():
                if channel.requests:
                    continue  # a request is being answered
                request = channel.request
                if request is None:  # idle: never used (head deadline) or kept alive
                    unused = channel.last_activity == channel.creation_time
                    allowed = limits.head_timeout if unused else limits.idle_timeout
                    if now - channel.last_activity > allowed:
                        channel.will_close = True
                elif not request.completed:
                    allowed = limits.head_timeout
                    if request.headers_finished:
                        allowed += limits.body_timeout
                    if mono - channel.request_started > allowed:
                        channel.will_close = True

    settings: dict[str, Any] = {
        "ident": "navai",
        "threads": limits.threads,
        "connection_limit": limits.max_connections + 8,  # ours closes idle ones first
        "channel_timeout": max(1, round(limits.head_timeout + limits.body_timeout)),
        "cleanup_interval": 1,
        "asyncore_use_poll": True,  # select() stops at 1,024 descriptors
        # Each write goes out at once (waitress holds up to 18,000 bytes by default): a
        # call's events stream is small events, each wanted now.
        "send_bytes": 1,
        # A declared body over navai's limit is refused before it is read (413), never
        # spooled to a temporary file; navai reads at most max_body_bytes + 1 of the rest.
        "max_request_body_size": limits.max_body_bytes + 1,
        "sockets": [sock],
    }
    if limits.forwarded_allow_ips is not None:
        settings["trusted_proxy"] = limits.forwarded_allow_ips
        settings["trusted_proxy_headers"] = {"x-forwarded-for", "x-forwarded-proto"}
    adj = Adjustments(**settings)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    sockinfo = (sock.family, sock.type, sock.proto, sock.getsockname())
    return Server(
        app, {}, True, sock, dispatcher=dispatcher, adj=adj, bind_socket=False, sockinfo=sockinfo
    )


def request_threads_reserve(threads: int) -> int:
    """Request threads of the WSGI server kept from function calls: an eighth, at least 4
    (at most half, on a server of few threads)."""
    return min(max(4, threads // 8), threads // 2)


def keep_request_threads(functions: FunctionThreads, threads: int) -> None:
    """Fit the sync-function budget ``functions`` to a WSGI server of ``threads`` request
    threads, so that function calls never hold all of them.

    Under WSGI a sync function call holds its request thread while it runs *and* while it
    waits for a function thread. So running calls (at most ``functions.max_threads``) plus
    waiting calls (at most ``functions.max_waiting``) must leave
    :func:`request_threads_reserve` threads free for everything else (/health, minting, the
    other functions): the budget is lowered to fit, and a call that would wait past it is
    answered 503 Busy at once (with ``Retry-After``) instead of holding a thread.
    """
    free = threads - request_threads_reserve(threads)
    running = max(1, min(functions.max_threads, free))
    if running < functions.max_threads:
        logger.warning(
            "%d function threads (NAVAI_FUNCTION_THREADS) would fill the %d request threads "
            "(--threads): at most %d sync functions run at once",
            functions.max_threads,
            threads,
            running,
        )
        functions.max_threads = running
        functions.per_function = max(1, min(functions.per_function, running // 2))
    functions.max_waiting = max(0, free - running)


def run_wsgi(app: Any, sock: socket.socket, limits: Limits, close: Callable[[], None]) -> None:
    """Serve ``app`` on waitress until Ctrl-C/SIGTERM, then ``close()``."""
    server = wsgi_server(app, sock, limits)
    # waitress logs "Task queue depth is N" for every request that waits for a thread: a
    # line per request under load. The connection-cap warning above is navai's, throttled.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    if threading.current_thread() is threading.main_thread():
        # waitress stops on KeyboardInterrupt: from here Ctrl-C and SIGTERM raise it (a
        # forked worker exited at once until now).
        for stop in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop, signal.default_int_handler)
    try:
        server.run()  # returns after Ctrl-C/SIGTERM, once the running requests are done
    finally:
        if threading.current_thread() is threading.main_thread():
            # Ending the calls: another SIGTERM (a process manager's, or a worker's own once
            # its parent is gone) must not cut it short, as under uvicorn; a second Ctrl-C
            # still does.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        server.close()
        close()


__all__ = [
    "BODY_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_THREADS",
    "HEAD_TIMEOUT",
    "IDLE_TIMEOUT",
    "Limits",
    "fit_connections",
    "keep_request_threads",
    "raise_file_limit",
    "request_threads_reserve",
    "required_packages",
    "run_asgi",
    "run_wsgi",
]
