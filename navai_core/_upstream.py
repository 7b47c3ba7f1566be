"""Sending an :class:`UpstreamRequest` with httpx: one sync and one async driver.

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
from collections.abc import Iterator

import httpx

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
        if isinstance(exc, (httpx.TimeoutException, _TooSlow, asyncio.TimeoutError)):
            return Outcome(error=UpstreamTimeout(f"{label} timed out."))
        if isinstance(exc, httpx.HTTPError):
            # Only the class is shown: nothing of the request (headers, key) can leak.
            return Outcome(
                error=UpstreamUnavailable(f"{label} could not be reached ({type(exc).__name__}).")
            )
        raise exc


def _build(
    client: httpx.Client | httpx.AsyncClient, r: UpstreamRequest, step: Send
) -> httpx.Request:
    timeout = httpx.Timeout(max(step.timeout, 0.001), connect=max(step.connect_timeout, 0.001))
    return client.build_request(
        r.method, r.url, headers=r.headers, content=r.content, timeout=timeout
    )


def _until(deadline: float, chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk
        if time.monotonic() > deadline:
            raise _TooSlow


def _fetch(client: httpx.Client, request: UpstreamRequest, step: Send) -> Outcome:
    deadline = time.monotonic() + step.timeout
    response = client.send(_build(client, request, step), stream=True)
    try:
        content = b"".join(_until(deadline, response.iter_bytes()))
    finally:
        response.close()
    return Outcome(UpstreamReply(response.status_code, response.headers, content))


async def _afetch(client: httpx.AsyncClient, request: UpstreamRequest, step: Send) -> Outcome:
    response = await client.send(_build(client, request, step), stream=True)
    try:
        content = b"".join([chunk async for chunk in response.aiter_bytes()])
    finally:
        await response.aclose()
    return Outcome(UpstreamReply(response.status_code, response.headers, content))


def send(client: httpx.Client, request: UpstreamRequest, policy: RetryPolicy) -> UpstreamReply:
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
    client: httpx.AsyncClient, request: UpstreamRequest, policy: RetryPolicy
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
