"""The retry policy for upstream calls, pure: it decides, the senders sleep.

``attempts(policy, now)`` is a small sans-I/O generator that both senders drive: it yields
what to do next (send with a timeout, or sleep), is sent back what happened, and returns
the final reply or raises the final error. Sync and async code share every rule here.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Generator, Mapping
from typing import TypeAlias

import attrs

from .._errors import NavaiError
from .messages import UpstreamReply

RETRY_STATUSES = frozenset({408, 409, 429})


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How upstream calls are retried (defaults follow the official OpenAI SDK)."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    # A server's Retry-After is honoured when it is at most this long; else backoff applies.
    max_retry_after: float = 60.0
    # The whole operation, every attempt and sleep included, never takes longer than this.
    total_timeout: float = 15.0
    connect_timeout: float = 5.0
    jitter: Callable[[], float] = attrs.field(default=random.random, eq=False, repr=False)

    def retryable_status(self, status: int) -> bool:
        return status in RETRY_STATUSES or status >= 500

    def backoff(self, retry: int) -> float:
        """Exponential backoff for the ``retry``-th retry (0-based), with up to 25% jitter off."""
        base = min(self.initial_delay * 2.0**retry, self.max_delay)
        return base * (1 - 0.25 * self.jitter())

    def delay(self, retry: int, headers: Mapping[str, str] | None) -> float:
        """How long to wait before the ``retry``-th retry, honouring a short Retry-After."""
        hinted = retry_after_seconds(headers or {})
        if hinted is not None and 0 <= hinted <= self.max_retry_after:
            return hinted
        return self.backoff(retry)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if (ms := lowered.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - (time.time() if now is None else now)


@attrs.frozen
class Send:
    """Send the request once, with this timeout (seconds) for the whole attempt."""

    timeout: float
    connect_timeout: float


@attrs.frozen
class Sleep:
    seconds: float


@attrs.frozen
class Outcome:
    """What one attempt gave: the upstream's reply, or the error it ended with."""

    reply: UpstreamReply | None = None
    error: NavaiError | None = None

    def result(self) -> UpstreamReply:
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        return self.reply


Step: TypeAlias = "Send | Sleep"


def attempts(
    policy: RetryPolicy, clock: Callable[[], float] = time.monotonic
) -> Generator[Step, Outcome | None, Outcome]:
    """Drive one upstream operation: yields steps, is sent outcomes, returns the last one.

    The returned outcome is the one to answer with (a reply, or an error to raise).
    """
    deadline = clock() + policy.total_timeout
    retry = 0
    while True:
        remaining = deadline - clock()
        outcome = yield Send(remaining, min(policy.connect_timeout, remaining))
        assert outcome is not None
        if retry >= policy.max_retries or not _worth_retrying(policy, outcome):
            return outcome
        wait = policy.delay(retry, outcome.reply.headers if outcome.reply else None)
        # Never sleep into the deadline: a retry needs time left to be useful.
        if clock() + wait >= deadline - 0.05:
            return outcome
        if wait > 0:
            yield Sleep(wait)
        retry += 1


def _worth_retrying(policy: RetryPolicy, outcome: Outcome) -> bool:
    if outcome.reply is None:
        # Transport failures (refused, reset, timed out) are worth another try.
        return True
    return policy.retryable_status(outcome.reply.status)
