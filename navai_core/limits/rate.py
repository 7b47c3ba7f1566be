"""How often a client may call a route: rate limits.

The facade asks the route's hook (``_hooks``) and :meth:`RateLimiter.check` /
:meth:`RateLimiter.acheck` before any other work is done.
Rate limiting uses the ``limits`` package (moving window), in process by default or in
Redis (``redis://...``) so that several workers or machines share one budget.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TypeAlias

import limits
import limits.aio.storage
import limits.aio.strategies
import limits.storage
import limits.strategies

from .._errors import RateLimitUnavailable, TooManyRequests
from .._http import RequestContext

logger = logging.getLogger("navai")

KeyHook: TypeAlias = "Callable[[RequestContext], str | None]"


def parse_limit(text: str | None) -> limits.RateLimitItem | None:
    """``"10/minute"``, ``"100 per hour"``...; ``None``, blank, ``off`` or ``none`` turn it off."""
    if text is None or text.strip().lower() in ("", "off", "none", "0"):
        return None
    return limits.parse(text)


def limit_problem(name: str, text: str | None) -> str | None:
    try:
        parse_limit(text)
    except ValueError:
        return f'{name} is not a rate limit such as "10/minute". Received: {text!r}'
    return None


# A shared store (Redis) gets this long to answer; a request never waits longer for it.
STORAGE_TIMEOUT_SECONDS = 0.5
# After the store failed, it is left alone this long (requests are answered at once), then
# tried again by the next request: an outage costs no request more than one timeout.
STORAGE_RETRY_SECONDS = 5.0
UNAVAILABLE = "Rate limiting is unavailable. Try again in {seconds} seconds."


class StorageOutage:
    """Whether the shared store is failing, and since when: pure state, shared by the sync
    and the async tails. Logs once when an outage starts and once when it ends."""

    def __init__(self, fail_open: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.fail_open = fail_open
        self._clock = clock
        self._since: float | None = None
        self._retry_at = 0.0

    def skip(self) -> bool:
        """True while the store is left alone (the request is answered without it)."""
        return self._since is not None and self._clock() < self._retry_at

    def failed(self, exc: BaseException) -> None:
        now = self._clock()
        self._retry_at = now + STORAGE_RETRY_SECONDS
        if self._since is None:
            self._since = now
            then = (
                "letting requests through without a rate limit (NAVAI_RATE_LIMIT_FAIL_OPEN)"
                if self.fail_open
                else "answering 503 (set NAVAI_RATE_LIMIT_FAIL_OPEN=true to let requests through)"
            )
            # The exception's class only: its text may name the store's address or password.
            logger.error(
                "the rate-limit storage failed (%s); %s until it answers again",
                type(exc).__name__,
                then,
            )

    def ok(self) -> None:
        if self._since is not None:
            logger.warning(
                "the rate-limit storage answers again after %.0f s",
                self._clock() - self._since,
            )
            self._since = None

    def answer(self) -> None:
        """What a request gets while the store is failing: through, or 503."""
        if self.fail_open:
            return
        seconds = max(1, math.ceil(self._retry_at - self._clock()))
        raise RateLimitUnavailable(
            UNAVAILABLE.format(seconds=seconds),
            extra={"retry_after": seconds},
            headers=[("Retry-After", str(seconds))],
        )


class RateLimiter:
    """Counts hits per (route, client key) and answers 429 with ``Retry-After`` past the limit.

    When a shared store fails (down, or slower than ``STORAGE_TIMEOUT_SECONDS``), requests
    answer 503 with ``Retry-After`` (fail closed), or go through unlimited with
    ``fail_open``; either way the outage is logged once, and the store is tried again every
    ``STORAGE_RETRY_SECONDS`` until it answers.
    """

    def __init__(self, storage_uri: str = "memory://", *, fail_open: bool = False) -> None:
        self.storage_uri = storage_uri
        self.outage = StorageOutage(fail_open)
        self._lock = threading.Lock()
        self._sync: limits.strategies.MovingWindowRateLimiter | None = None
        self._async: limits.aio.strategies.MovingWindowRateLimiter | None = None
        self._fixed: limits.strategies.FixedWindowRateLimiter | None = None
        self._afixed: limits.aio.strategies.FixedWindowRateLimiter | None = None

    @property
    def shared(self) -> bool:
        return not self.storage_uri.startswith("memory://")

    def _options(self) -> dict[str, float]:
        # Keyword options of the Redis client (a timeout in the URI's query wins).
        if not self.shared:
            return {}
        return {
            "socket_timeout": STORAGE_TIMEOUT_SECONDS,
            "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS,
        }

    def _sync_limiter(self) -> limits.strategies.MovingWindowRateLimiter:
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    storage = limits.storage.storage_from_string(
                        self.storage_uri, **self._options()
                    )
                    self._sync = limits.strategies.MovingWindowRateLimiter(storage)
        return self._sync

    def _async_limiter(self) -> limits.aio.strategies.MovingWindowRateLimiter:
        if self._async is None:
            storage = limits.aio.storage.RedisStorage(
                self.storage_uri,
                implementation="redispy",
                socket_timeout=STORAGE_TIMEOUT_SECONDS,
                socket_connect_timeout=STORAGE_TIMEOUT_SECONDS,
            )
            self._async = limits.aio.strategies.MovingWindowRateLimiter(storage)
        return self._async

    def check(self, item: limits.RateLimitItem | None, route: str, key: str) -> None:
        if item is None:
            return
        if self.outage.skip():
            return self.outage.answer()
        limiter = self._sync_limiter()
        try:
            allowed = limiter.hit(item, route, key)
            reset = None if allowed else limiter.get_window_stats(item, route, key).reset_time
        except Exception as exc:  # the store failed, whatever its client raised
            self.outage.failed(exc)
            return self.outage.answer()
        self.outage.ok()
        if reset is not None:
            raise _too_many(reset)

    async def acheck(self, item: limits.RateLimitItem | None, route: str, key: str) -> None:
        if item is None:
            return
        if not self.shared:
            # The in-process store is a dict behind a lock: safe and instant on a loop.
            self.check(item, route, key)
            return
        if self.outage.skip():
            return self.outage.answer()
        limiter = self._async_limiter()
        try:
            allowed = await limiter.hit(item, route, key)
            reset = None
            if not allowed:
                reset = (await limiter.get_window_stats(item, route, key)).reset_time
        except Exception as exc:  # the store failed, whatever its client raised
            self.outage.failed(exc)
            return self.outage.answer()
        self.outage.ok()
        if reset is not None:
            raise _too_many(reset)

    # ----- a budget of a cost per fixed window (the call-time budget) ------------------------

    def _fixed_window(self) -> limits.strategies.FixedWindowRateLimiter:
        if self._fixed is None:
            storage = self._sync_limiter().storage
            self._fixed = limits.strategies.FixedWindowRateLimiter(storage)
        return self._fixed

    def _afixed_window(self) -> limits.aio.strategies.FixedWindowRateLimiter:
        if self._afixed is None:
            storage = self._async_limiter().storage
            self._afixed = limits.aio.strategies.FixedWindowRateLimiter(storage)
        return self._afixed

    def spent(self, item: limits.RateLimitItem, bucket: str, key: str) -> float | None:
        """When ``key`` has nothing left of ``item`` (a fixed window), the window's reset
        time; else None. A failing store answers as for :meth:`check` (503, or None when
        failing open)."""
        if self.outage.skip():
            self.outage.answer()
            return None
        strategy = self._fixed_window()
        try:
            reset = None
            if not strategy.test(item, bucket, key):
                reset = strategy.get_window_stats(item, bucket, key).reset_time
        except Exception as exc:  # the store failed, whatever its client raised
            self.outage.failed(exc)
            self.outage.answer()
            return None
        self.outage.ok()
        return reset

    async def aspent(self, item: limits.RateLimitItem, bucket: str, key: str) -> float | None:
        """:meth:`spent` from async code."""
        if not self.shared:
            return self.spent(item, bucket, key)  # a dict behind a lock
        if self.outage.skip():
            self.outage.answer()
            return None
        strategy = self._afixed_window()
        try:
            reset = None
            if not await strategy.test(item, bucket, key):
                reset = (await strategy.get_window_stats(item, bucket, key)).reset_time
        except Exception as exc:  # the store failed, whatever its client raised
            self.outage.failed(exc)
            self.outage.answer()
            return None
        self.outage.ok()
        return reset

    async def acharge(
        self, item: limits.RateLimitItem, bucket: str, key: str, cost: int
    ) -> bool | None:
        """Count ``cost`` against ``key``'s window: False once it is spent, None when the
        store fails or is left alone (nothing counted; the outage is logged once)."""
        if self.outage.skip():
            return None
        try:
            if not self.shared:
                counted = self._fixed_window().hit(item, bucket, key, cost=cost)
            else:
                counted = await self._afixed_window().hit(item, bucket, key, cost=cost)
        except Exception as exc:  # the store failed, whatever its client raised
            self.outage.failed(exc)
            return None
        self.outage.ok()
        return counted

    def reset(self) -> None:
        """Forget every count, in this process or in Redis (tests, or after an incident)."""
        self._sync_limiter().storage.reset()


def _too_many(reset_time: float) -> TooManyRequests:
    seconds = max(1, math.ceil(reset_time - time.time()))
    return TooManyRequests(
        f"Too many requests. Try again in {seconds} seconds.",
        extra={"retry_after": seconds},
        headers=[("Retry-After", str(seconds))],
    )


def client_key(hook: KeyHook | None, context: RequestContext) -> str:
    """The rate-limit key: the hook's value (a user id, say) or the client address."""
    if hook is not None and (key := hook(context)):
        return key
    return context.client or "unknown"
