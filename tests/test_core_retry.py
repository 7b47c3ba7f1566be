"""The pure retry policy: decisions only, driven here with a fake clock."""

from __future__ import annotations

import email.utils
import time

import pytest

from navai_core import RetryPolicy, UpstreamReply
from navai_core._errors import UpstreamTimeout, UpstreamUnavailable
from navai_core.upstream.retry import Outcome, Send, Sleep, attempts, retry_after_seconds


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def reply(status, **headers):
    return Outcome(UpstreamReply(status, headers, b""))


def drive(policy, outcomes, clock=None):
    """Run the generator against a list of outcomes; return the steps and the final outcome."""
    clock = clock or Clock()
    steps = attempts(policy, clock)
    seen = []
    outcomes = list(outcomes)
    try:
        step = next(steps)
        while True:
            seen.append(step)
            if isinstance(step, Sleep):
                clock.now += step.seconds
                step = steps.send(None)
            else:
                step = steps.send(outcomes.pop(0))
    except StopIteration as stop:
        return seen, stop.value


NO_JITTER = {"jitter": lambda: 0.0}


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses(status):
    steps, final = drive(RetryPolicy(**NO_JITTER), [reply(status), reply(status), reply(200)])
    assert final.reply.status == 200
    assert [type(s) for s in steps] == [Send, Sleep, Send, Sleep, Send]
    assert [s.seconds for s in steps if isinstance(s, Sleep)] == [0.5, 1.0]


@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404, 422])
def test_other_statuses_are_final(status):
    steps, final = drive(RetryPolicy(), [reply(status)])
    assert final.reply.status == status
    assert len(steps) == 1


def test_transport_errors_are_retried_and_the_last_one_is_raised():
    errors = [Outcome(error=UpstreamUnavailable("down")) for _ in range(3)]
    steps, final = drive(RetryPolicy(**NO_JITTER), errors)
    assert len([s for s in steps if isinstance(s, Send)]) == 3
    with pytest.raises(UpstreamUnavailable):
        final.result()


def test_max_retries_zero_means_one_attempt():
    steps, final = drive(RetryPolicy(max_retries=0), [Outcome(error=UpstreamTimeout("t"))])
    assert steps == [Send(15.0, 5.0)]
    assert isinstance(final.error, UpstreamTimeout)


def test_backoff_doubles_is_capped_and_jitter_only_shortens():
    policy = RetryPolicy(initial_delay=0.5, max_delay=3.0, **NO_JITTER)
    assert [policy.backoff(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = RetryPolicy(jitter=lambda: 1.0)
    assert jittered.backoff(0) == 0.375


def test_retry_after_is_honoured_when_short_else_backoff():
    policy = RetryPolicy(**NO_JITTER)
    assert policy.delay(0, {"Retry-After": "3"}) == 3.0
    assert policy.delay(0, {"retry-after-ms": "250"}) == 0.25
    assert policy.delay(0, {"Retry-After": "600"}) == 0.5  # too long: ordinary backoff
    assert policy.delay(1, {}) == 1.0


def test_retry_after_as_http_date():
    now = time.time()
    date = email.utils.formatdate(now + 5, usegmt=True)
    assert 3.5 < retry_after_seconds({"retry-after": date}, now=now) <= 5.0
    assert retry_after_seconds({"retry-after": "garbage"}) is None


def test_each_attempt_gets_what_is_left_of_the_deadline():
    clock = Clock()
    policy = RetryPolicy(total_timeout=10.0, connect_timeout=5.0, **NO_JITTER)
    steps = attempts(policy, clock)
    first = next(steps)
    assert first == Send(10.0, 5.0)
    clock.now += 8.0  # the first attempt took 8 s and failed
    sleep = steps.send(reply(500))
    assert sleep == Sleep(0.5)
    clock.now += 0.5
    second = steps.send(None)
    assert second == Send(pytest.approx(1.5), pytest.approx(1.5))


def test_no_retry_when_the_wait_would_pass_the_deadline():
    clock = Clock()
    policy = RetryPolicy(total_timeout=2.0, **NO_JITTER)
    steps = attempts(policy, clock)
    next(steps)
    clock.now += 1.9
    with pytest.raises(StopIteration) as stop:
        steps.send(reply(503))
    assert stop.value.value.reply.status == 503
