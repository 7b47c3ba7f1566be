"""Sending an :class:`UpstreamRequest` with httpx2: one sync and one async driver.

Every decision (retry or not, how long to wait, when to give up) is made by the pure
``attempts`` generator of ``_retry``; these drivers only perform its steps. Transport
failures become errors that know their HTTP answer (502 unreachable, 504 timeout), and
the whole operation never outlasts ``RetryPolicy.total_timeout``, even against an
upstream that trickles its reply byte by byte.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

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


# ----- connection lanes --------------------------------------------------------------------

MAX_UPSTREAM_CONNECTIONS = 100
UPSTREAM_KEEPALIVE_SECONDS = 5.0


def _one_connection() -> httpx2.Limits:
    return httpx2.Limits(
        max_connections=1, max_keepalive_connections=1, keepalive_expiry=UPSTREAM_KEEPALIVE_SECONDS
    )


def _pool_timeout(request: httpx2.Request) -> float | None:
    timeout = request.extensions.get("timeout", {})
    value = timeout.get("pool") if isinstance(timeout, dict) else None
    return float(value) if value is not None else None


class _Releasing(httpx2.SyncByteStream):
    def __init__(self, stream: httpx2.SyncByteStream, release: Callable[[], None]) -> None:
        self._stream, self._release = stream, release

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        release, self._release = self._release, _nothing
        try:
            self._stream.close()
        finally:
            release()


class _AsyncReleasing(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream, self._release = stream, release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        release, self._release = self._release, _nothing
        try:
            await self._stream.aclose()
        finally:
            release()


def _nothing() -> None:
    pass


class LaneTransport(httpx2.BaseTransport):
    """An httpx transport that keeps one upstream connection alive per concurrent request.

    httpcore's pool rescans every connection it holds on each request (quadratically, with
    system calls for idle ones) and closes idle connections as soon as it holds more than
    ``max_keepalive_connections``: at a few dozen concurrent mints it reconnects for almost
    every request, or, with a larger keep-alive limit, spends its time scanning. Here each
    lane is an httpx transport of exactly one connection. A request takes the most recently
    freed lane (its connection is warm) or opens a new one, up to ``max_lanes``; beyond that
    it waits for a free lane (at most the request's pool timeout).
    """

    def __init__(self, max_lanes: int = MAX_UPSTREAM_CONNECTIONS) -> None:
        self._max = max_lanes
        self._free: list[httpx2.HTTPTransport] = []
        self._lanes: list[httpx2.HTTPTransport] = []
        self._ready = threading.Condition()
        self._ssl: ssl.SSLContext | None = None

    def _take(self, timeout: float | None) -> httpx2.HTTPTransport:
        with self._ready:
            if not self._ready.wait_for(
                lambda: self._free or len(self._lanes) < self._max, timeout
            ):
                raise httpx2.PoolTimeout("No upstream connection became free in time.")
            if self._free:
                return self._free.pop()
            if self._ssl is None:
                self._ssl = httpx2.create_ssl_context()
            lane = httpx2.HTTPTransport(verify=self._ssl, limits=_one_connection())
            self._lanes.append(lane)
            return lane

    def _give_back(self, lane: httpx2.HTTPTransport) -> None:
        with self._ready:
            if lane in self._lanes:
                self._free.append(lane)
                self._ready.notify()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        lane = self._take(_pool_timeout(request))
        try:
            response = lane.handle_request(request)
        except BaseException:
            self._give_back(lane)
            raise
        assert isinstance(response.stream, httpx2.SyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_Releasing(response.stream, lambda: self._give_back(lane)),
            extensions=response.extensions,
        )

    def close(self) -> None:
        with self._ready:
            lanes, self._lanes, self._free = self._lanes, [], []
        for lane in lanes:
            lane.close()


class AsyncLaneTransport(httpx2.AsyncBaseTransport):
    """:class:`LaneTransport` for an asyncio event loop."""

    def __init__(self, max_lanes: int = MAX_UPSTREAM_CONNECTIONS) -> None:
        self._max = max_lanes
        self._free: list[httpx2.AsyncHTTPTransport] = []
        self._lanes: list[httpx2.AsyncHTTPTransport] = []
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ssl: ssl.SSLContext | None = None

    async def _take(self, timeout: float | None) -> httpx2.AsyncHTTPTransport:
        while not self._free and len(self._lanes) >= self._max:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                raise httpx2.PoolTimeout("No upstream connection became free in time.") from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were woken but leave: pass the lane on
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        if self._free:
            return self._free.pop()
        if self._ssl is None:
            self._ssl = httpx2.create_ssl_context()
        lane = httpx2.AsyncHTTPTransport(verify=self._ssl, limits=_one_connection())
        self._lanes.append(lane)
        return lane

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _give_back(self, lane: httpx2.AsyncHTTPTransport) -> None:
        if lane in self._lanes:
            self._free.append(lane)
            self._wake_one()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        lane = await self._take(_pool_timeout(request))
        try:
            response = await lane.handle_async_request(request)
        except BaseException:
            self._give_back(lane)
            raise
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_AsyncReleasing(response.stream, lambda: self._give_back(lane)),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        lanes, self._lanes, self._free = self._lanes, [], []
        for lane in lanes:
            await lane.aclose()
