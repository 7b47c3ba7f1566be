"""Sending an :class:`UpstreamRequest` with httpx2: one sync and one async driver.

Every decision (retry or not, how long to wait, when to give up) is made by the pure
``attempts`` generator of ``_retry``; these drivers only perform its steps. Transport
failures become errors that know their HTTP answer (502 unreachable, 504 timeout), and
the whole operation never outlasts ``RetryPolicy.total_timeout``, even against an
upstream that trickles its reply byte by byte.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore2
import httpx2
from httpcore2 import SOCKET_OPTION

from .._errors import UpstreamTimeout, UpstreamUnavailable
from .messages import UpstreamReply, UpstreamRequest
from .retry import Outcome, RetryPolicy, Send, Sleep, Step, attempts

logger = logging.getLogger("navai")

CertTypes = str | tuple[str, str] | tuple[str, str, str]  # (httpx2's, not exported)


class _TooSlow(Exception):
    """The reply was still arriving at the deadline."""


class _Driver:
    """Feeds outcomes to the ``attempts`` generator and logs each retry."""

    def __init__(self, request: UpstreamRequest, policy: RetryPolicy) -> None:
        self.request = request
        self._steps = attempts(policy)
        self.outcome: Outcome | None = None
        self._final: Outcome | None = None

    def next(self) -> Step | None:
        try:
            step = self._steps.send(self.outcome)
        except StopIteration as stop:
            self._final = stop.value
            return None
        if isinstance(step, Sleep) and self.outcome is not None:
            failure = (
                self.outcome.error or f"status {self.outcome.reply and self.outcome.reply.status}"
            )
            logger.warning(
                "%s attempt failed (%s); retrying in %.2fs",
                self.request.label,
                failure,
                step.seconds,
            )
        self.outcome = None
        return step

    def result(self) -> UpstreamReply:
        assert self._final is not None
        return self._final.result()

    def failed(self, exc: Exception) -> Outcome:
        """The outcome of an attempt that raised ``exc`` (re-raised when it is not transport)."""
        label = self.request.label
        if isinstance(exc, (httpx2.TimeoutException, _TooSlow, asyncio.TimeoutError)):
            return Outcome(error=UpstreamTimeout(f"{label} timed out."))
        if isinstance(exc, httpx2.HTTPError):
            # Only the class is shown: nothing of the request (headers, key) can leak.
            return Outcome(
                error=UpstreamUnavailable(f"{label} could not be reached ({type(exc).__name__}).")
            )
        raise exc


def _build(
    client: httpx2.Client | httpx2.AsyncClient, r: UpstreamRequest, step: Send
) -> httpx2.Request:
    timeout = httpx2.Timeout(max(step.timeout, 0.001), connect=max(step.connect_timeout, 0.001))
    return client.build_request(
        r.method, r.url, headers=r.headers, content=r.content, timeout=timeout
    )


def _until(deadline: float, chunks: Iterator[bytes], request: UpstreamRequest) -> Iterator[bytes]:
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > request.max_reply_bytes:
            raise request.reply_too_large()
        yield chunk
        if time.monotonic() > deadline:
            raise _TooSlow


def _fetch(client: httpx2.Client, request: UpstreamRequest, step: Send) -> Outcome:
    # The deadline of this attempt, for a DeadlineClient's sockets (any other client
    # ignores it and is only checked between chunks of the body).
    deadline = time.monotonic() + step.timeout
    local = client.deadlines if isinstance(client, DeadlineClient) else _Deadlines()
    local.deadline = deadline
    try:
        response = client.send(_build(client, request, step), stream=True)
        try:
            content = b"".join(_until(deadline, response.iter_bytes(), request))
        finally:
            response.close()
    finally:
        local.deadline = None
    return Outcome(UpstreamReply(response.status_code, response.headers, content))


async def _afetch(client: httpx2.AsyncClient, request: UpstreamRequest, step: Send) -> Outcome:
    response = await client.send(_build(client, request, step), stream=True)
    try:
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > request.max_reply_bytes:
                raise request.reply_too_large()
            chunks.append(chunk)
        content = b"".join(chunks)
    finally:
        await response.aclose()
    return Outcome(UpstreamReply(response.status_code, response.headers, content))


def send(client: httpx2.Client, request: UpstreamRequest, policy: RetryPolicy) -> UpstreamReply:
    """Send ``request`` with retries per ``policy``; return the final reply or raise."""
    driver = _Driver(request, policy)
    while (step := driver.next()) is not None:
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            continue
        try:
            driver.outcome = _fetch(client, request, step)
        except Exception as exc:
            driver.outcome = driver.failed(exc)
    return driver.result()


async def asend(
    client: httpx2.AsyncClient, request: UpstreamRequest, policy: RetryPolicy
) -> UpstreamReply:
    """Like :func:`send` on an event loop; each attempt is cut off exactly at the deadline."""
    driver = _Driver(request, policy)
    while (step := driver.next()) is not None:
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            continue
        try:
            driver.outcome = await asyncio.wait_for(_afetch(client, request, step), step.timeout)
        except Exception as exc:
            driver.outcome = driver.failed(exc)
    return driver.result()


#: The pool of each client navai creates: up to 100 upstream connections, all kept alive while
#: idle (for 5 s), so N concurrent mints keep N warm connections (httpcore2's pool reuses them:
#: benchmarks/bench_upstream_pool.py).
UPSTREAM_LIMITS = httpx2.Limits(
    max_connections=100, max_keepalive_connections=100, keepalive_expiry=5.0
)


# ----- sync callers: a total deadline without an event loop ---------------------------------
#
# A sync httpx2 client bounds each read, not the reply: an upstream that trickles its headers
# byte by byte resets the read timeout with every byte. navai's own sync client carries the
# deadline down to the sockets instead: ``_fetch`` sets the current thread's deadline, and the
# client's httpcore2 network backend clamps every connect, TLS handshake, read and write to
# the time left before it (and fails at once when none is left). One blocking sync request
# runs on one thread from start to end, so a thread-local deadline is the request's own: each
# DeadlineClient holds its own (``deadlines``), shared with its transports' backends.
#
# What httpx2 offers no public hook for, and tests/test_upstream_deadline.py pins:
# ``httpx2.Client`` builds its transports with ``_init_transport`` / ``_init_proxy_transport``
# (so the proxies of the environment get the deadline transport too), and
# ``httpx2.HTTPTransport`` sends through the httpcore2 pool it keeps in ``_pool``.


class _Deadlines(threading.local):
    """This thread's deadline (``None``: none set), one per DeadlineClient."""

    deadline: float | None = None


def _left(deadlines: _Deadlines, timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` clamped to the time left before this thread's deadline, if one is set."""
    deadline = deadlines.deadline
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the upstream deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore2.NetworkStream):
    def __init__(self, stream: httpcore2.NetworkStream, deadlines: _Deadlines) -> None:
        self._stream = stream
        self._deadlines = deadlines

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(self._deadlines, timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(self._deadlines, timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.NetworkStream:
        left = _left(self._deadlines, timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, left), self._deadlines
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def _addresses(host: str, port: int) -> list[str]:
    """The IP addresses ``host`` resolves to, in the resolver's order (DNS is not bounded by
    the deadline: see docs/providers.md)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise httpcore2.ConnectError(str(exc)) from exc
    return [str(sockaddr[0]) for *_, sockaddr in found]


class _DeadlineBackend(httpcore2.NetworkBackend):
    """httpcore2's sync backend, every timeout clamped to the thread's deadline."""

    def __init__(self, deadlines: _Deadlines) -> None:
        self._backend = httpcore2.SyncBackend()
        self._deadlines = deadlines

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore2.NetworkStream:
        # socket.create_connection would give each address of ``host`` the whole timeout:
        # the addresses are tried here one by one, each with only the time left.
        failure: httpcore2.ConnectError | httpcore2.ConnectTimeout | None = None
        for address in _addresses(host, port):
            left = _left(self._deadlines, timeout, httpcore2.ConnectTimeout)
            try:
                stream = self._backend.connect_tcp(
                    address, port, left, local_address, socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc
                continue
            return _DeadlineStream(stream, self._deadlines)
        assert failure is not None  # (getaddrinfo gives at least one address or raises)
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore2.NetworkStream:
        left = _left(self._deadlines, timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(
            self._backend.connect_unix_socket(path, left, socket_options), self._deadlines
        )

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _DeadlineTransport(httpx2.HTTPTransport):
    """``httpx2.HTTPTransport`` on a pool whose network backend is ``_DeadlineBackend``."""

    def __init__(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx2.Limits = UPSTREAM_LIMITS,
        proxy: httpx2.Proxy | None = None,
        deadlines: _Deadlines | None = None,
    ) -> None:
        self._pool = httpcore2.ConnectionPool(
            ssl_context=httpx2.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env),
            proxy=None
            if proxy is None
            else httpcore2.Proxy(
                url=str(proxy.url),
                auth=proxy.raw_auth,
                headers=proxy.headers.raw,
                ssl_context=proxy.ssl_context,
            ),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=http1,
            http2=http2,
            network_backend=_DeadlineBackend(_Deadlines() if deadlines is None else deadlines),
        )


class DeadlineClient(httpx2.Client):
    """The sync client navai creates: ``send`` keeps its total deadline on it, headers
    included, without an event loop. Built like any ``httpx2.Client``: the proxies of the
    environment (HTTPS_PROXY, NO_PROXY, ...) apply, through deadline transports too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # (Set before httpx2.Client.__init__, which builds the transports.)
        self.deadlines = _Deadlines()
        super().__init__(*args, **kwargs)

    def _init_transport(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx2.Limits = UPSTREAM_LIMITS,
        transport: httpx2.BaseTransport | None = None,
    ) -> httpx2.BaseTransport:
        if transport is not None:
            return transport
        return _DeadlineTransport(
            verify, cert, trust_env, http1, http2, limits, deadlines=self.deadlines
        )

    def _init_proxy_transport(
        self,
        proxy: httpx2.Proxy,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx2.Limits = UPSTREAM_LIMITS,
    ) -> httpx2.BaseTransport:
        return _DeadlineTransport(
            verify, cert, trust_env, http1, http2, limits, proxy, self.deadlines
        )


# ----- the clients -------------------------------------------------------------------------


def new_client(timeout: float) -> httpx2.Client:
    """A sync client as navai creates it (HTTPS_PROXY / NO_PROXY from the environment apply),
    on which ``send`` keeps its total deadline (``DeadlineClient``)."""
    return DeadlineClient(timeout=timeout, limits=UPSTREAM_LIMITS)


def new_async_client(timeout: float) -> httpx2.AsyncClient:
    """An async client as navai creates it (HTTPS_PROXY / NO_PROXY from the environment apply)."""
    return httpx2.AsyncClient(timeout=timeout, limits=UPSTREAM_LIMITS)


def check_client(name: str, client: object, expected: type[object]) -> None:
    """Refuse a client that is not an ``httpx2`` one (an ``httpx`` client, say) up front,
    naming what was passed and what is needed, rather than failing on the first request."""
    if client is not None and not isinstance(client, expected):
        kind = type(client)
        raise TypeError(
            f"{name} must be an httpx2.{expected.__qualname__}, not "
            f"{kind.__module__}.{kind.__qualname__}: navai runs on httpx2 "
            f"(`import httpx2`, `httpx2.{expected.__qualname__}(...)`)."
        )
