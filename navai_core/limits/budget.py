"""How long a client may talk: the call-time budget (``NAVAI_CALL_BUDGET``).

Minutes of call time per rate-limit key per window, counted in seconds on the rate limits'
storage (the same process dict or the same Redis) through :class:`RateLimiter`, with its
storage-outage rule. The calls route asks :meth:`CallBudgets.check` before a new call;
a running call is charged with :meth:`CallBudgets.acharge` as it goes.
"""

from __future__ import annotations

import math
import time

import attrs
from limits import RateLimitItem

from .._errors import TooManyRequests
from .rate import RateLimiter, parse_limit

BUDGET_SPENT = "Call-time budget spent. Try again in {seconds} seconds."


@attrs.frozen
class CallBudget:
    """``NAVAI_CALL_BUDGET`` such as ``60/day``: minutes of call time per rate-limit key per
    window. Counted in seconds on the rate limits' storage (a fixed window: one counter per
    key, so a Redis store shares it between processes at one INCRBY per charge)."""

    minutes: int
    item: RateLimitItem = attrs.field(repr=False)

    @classmethod
    def parse(cls, text: str | None) -> CallBudget | None:
        """``None`` when off (unset, blank, ``off``); ValueError when unreadable."""
        parsed = parse_limit(text)
        if parsed is None:
            return None
        seconds = type(parsed)(parsed.amount * 60, parsed.multiples, namespace="CALLTIME")
        return cls(parsed.amount, seconds)

    @property
    def seconds(self) -> int:
        """Call seconds allowed per window."""
        return int(self.item.amount)

    @staticmethod
    def ahead(elapsed: float, tick: float, charged: int) -> int:
        """Whole seconds to charge now, ``elapsed`` seconds into a call of which ``charged``
        were charged, so that it has paid for the next ``tick`` seconds too: a call never
        runs on time it has not paid for, and once a charge does not fit it ends."""
        return max(0, math.ceil(elapsed + tick) - charged)

    @staticmethod
    def settle(elapsed: float, charged: int) -> int:
        """What a call of ``elapsed`` seconds still owes when it ends (every started second
        counts); negative: the seconds paid ahead and not used, given back."""
        return math.ceil(elapsed) - charged


def budget_spent(reset_time: float, now: float) -> TooManyRequests:
    """The 429 for a new call from a key whose budget is spent, with ``Retry-After``."""
    seconds = max(1, math.ceil(reset_time - now))
    return TooManyRequests(
        BUDGET_SPENT.format(seconds=seconds),
        extra={"retry_after": seconds},
        headers=[("Retry-After", str(seconds))],
    )


class CallBudgets:
    """Call-time budgets on the rate limits' storage, through :class:`RateLimiter` and its
    storage-outage rule (503, or through when failing open, while the store fails)."""

    BUCKET = "call_budget"

    def __init__(self, budget: CallBudget | None, rate_limiter: RateLimiter) -> None:
        self.budget = budget
        self._limiter = rate_limiter

    @classmethod
    def from_setting(cls, text: str | None, rate_limiter: RateLimiter) -> CallBudgets:
        """The budgets of ``NAVAI_CALL_BUDGET`` (none when unreadable: ``problems()`` says so)."""
        try:
            return cls(CallBudget.parse(text), rate_limiter)
        except ValueError:
            return cls(None, rate_limiter)

    def check(self, key: str) -> None:
        """429 with ``Retry-After`` when ``key`` has no second of call time left."""
        if self.budget is None:
            return
        reset = self._limiter.spent(self.budget.item, self.BUCKET, key)
        if reset is not None:
            raise budget_spent(reset, time.time())

    async def acheck(self, key: str) -> None:
        if self.budget is None:
            return
        reset = await self._limiter.aspent(self.budget.item, self.BUCKET, key)
        if reset is not None:
            raise budget_spent(reset, time.time())

    async def acharge(self, key: str, seconds: int) -> bool | None:
        """Count ``seconds`` of call time (counted even when they do not fit): False when
        the count is past the budget, None when the store failed (nothing counted: charged
        again at the next tick). Negative ``seconds`` give time back."""
        if self.budget is None or seconds == 0:
            return True
        return await self._limiter.acharge(self.budget.item, self.BUCKET, key, seconds)
