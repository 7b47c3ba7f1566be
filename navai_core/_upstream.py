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
import time
from collections.abc import Callable, Iterator

import httpx2

from . import _background
from ._client_secret import UpstreamReply, UpstreamRequest
from ._errors import UpstreamTimeout, UpstreamUnavailable
from ._retry import Outcome, RetryPolicy, Send, Sleep, Step, attempts

logger = logging.getLogger("navai")


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
    deadline = time.monotonic() + step.timeout
    response = client.send(_build(client, request, step), stream=True)
    try:
        content = b"".join(_until(deadline, response.iter_bytes(), request))
    finally:
        response.close()
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


# ----- sync callers, async client -----------------------------------------------------------


class BackgroundClient:
    """An async httpx2 client on navai's background loop, for sync callers (WSGI).

    A sync httpx2 client can only bound each read of a reply, so an upstream that trickles
    its headers byte by byte could hold a sync caller for ever; through this client a sync
    caller gets exactly the async deadline (``asend``). The client is made on first use by
    ``make``, on the loop, and made again if the loop was restarted.
    """

    def __init__(self, make: Callable[[], httpx2.AsyncClient]) -> None:
        self._make = make
        self._client: httpx2.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def send(self, request: UpstreamRequest, policy: RetryPolicy) -> UpstreamReply:
        return _background.run(self._asend(request, policy))

    async def _asend(self, request: UpstreamRequest, policy: RetryPolicy) -> UpstreamReply:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = self._make(), loop  # (a dead loop's client is dropped)
        return await asend(self._client, request, policy)

    def close(self) -> None:
        client, loop, self._client, self._loop = self._client, self._loop, None, None
        if client is None or not _background.running() or _background.inside():
            return
        if loop is _background.loop():  # (a client of a closed loop is only dropped)
            _background.run(client.aclose())


# ----- the clients -------------------------------------------------------------------------

#: The pool of each client navai creates: up to 100 upstream connections, all kept alive while
#: idle (for 5 s), so N concurrent mints keep N warm connections (httpcore2's pool reuses them:
#: benchmarks/bench_upstream_pool.py).
UPSTREAM_LIMITS = httpx2.Limits(
    max_connections=100, max_keepalive_connections=100, keepalive_expiry=5.0
)


def new_client(timeout: float) -> httpx2.Client:
    """A sync client as navai creates it (HTTPS_PROXY / NO_PROXY from the environment apply)."""
    return httpx2.Client(timeout=timeout, limits=UPSTREAM_LIMITS)


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
