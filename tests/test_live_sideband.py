"""The Live tool loop (CONTRACT.md section 11) as a pure state machine: which delegated function
calls run, when the one ``response.create`` goes out, what the call's summary learns."""

from __future__ import annotations

import json
import random

from fakes.live import (
    function_call,
    response_completed,
    response_created,
    response_ended,
    response_event,
    session_closed,
    transcript_delta,
    usage,
    usage_updated,
)

from navai_core.calls.live_sideband import (
    CLOSED_MEMORY,
    MAX_CALLS_PER_RESPONSE,
    MAX_OPEN_DELEGATIONS,
    TOO_MANY_CALLS,
    EndCall,
    LiveToolLoop,
    output_event,
)
from navai_core.calls.sideband import RunFunction, SendEvent

CREATE = SendEvent({"type": "response.create"})


def out(call_id: str, text: str = '{"ok": true}') -> SendEvent:
    return SendEvent(output_event(call_id, text))


def test_a_call_runs_and_one_create_follows_completion_and_its_output():
    loop = LiveToolLoop()
    [run] = loop.feed(function_call("call_1", "get_weather", {"city": "Oslo"}))
    assert run == RunFunction("call_1", "get_weather", '{"city": "Oslo"}', "del_1")
    assert loop.running == 1 and loop.function_calls == 1
    assert loop.feed(response_completed("resp_1")) == []  # the output is missing: no create
    assert loop.output_ready("call_1", '{"ok": true}') == [out("call_1"), CREATE]
    assert loop.running == 0 and loop.responses_created == 1 and loop.open_responses == 0


def test_an_output_before_completion_waits_for_it():
    loop = LiveToolLoop()
    loop.feed(function_call("call_1", "f", {}))
    assert loop.output_ready("call_1", "{}") == [out("call_1", "{}")]
    assert loop.feed(response_completed("resp_1")) == [CREATE]


def test_one_create_after_every_output_of_the_response():
    loop = LiveToolLoop()
    runs = [loop.feed(function_call(f"call_{i}", "f", {}, output_index=i))[0] for i in range(3)]
    assert [r.call_id for r in runs] == ["call_0", "call_1", "call_2"]  # type: ignore[union-attr]
    assert loop.output_ready("call_2", "{}") == [out("call_2", "{}")]
    assert loop.feed(response_completed("resp_1")) == []
    assert loop.output_ready("call_0", "{}") == [out("call_0", "{}")]
    assert loop.output_ready("call_1", "{}") == [out("call_1", "{}"), CREATE]
    assert loop.responses_created == 1


def test_each_call_id_runs_once_and_a_repeated_end_is_ignored():
    loop = LiveToolLoop()
    assert len(loop.feed(function_call("call_1", "f", {}))) == 1
    assert loop.feed(function_call("call_1", "f", {})) == []
    assert loop.feed(function_call("call_1", "f", {}, delegation="del_2")) == []
    completed = response_completed("resp_1", tokens=usage(10, 5))
    assert loop.feed(completed) == []
    assert loop.output_ready("call_1", "{}")[-1] == CREATE
    assert loop.feed(completed) == []
    assert loop.feed(function_call("call_1", "f", {})) == []
    assert loop.function_calls == 1 and loop.responses_created == 1
    assert loop.usage["total_tokens"] == 15  # counted once


def test_the_next_response_of_a_delegation_runs_its_own_calls():
    loop = LiveToolLoop()
    loop.feed(function_call("call_1", "f", {}))
    loop.feed(response_completed("resp_1"))
    assert loop.output_ready("call_1", "{}")[-1] == CREATE
    loop.feed(response_created("resp_2"))
    [run] = loop.feed(function_call("call_2", "g", {}))
    assert run.call_id == "call_2"  # type: ignore[union-attr]
    assert loop.feed(response_completed("resp_2")) == []
    assert loop.output_ready("call_2", "{}") == [out("call_2", "{}"), CREATE]
    loop.feed(response_completed("resp_3"))  # the final answer: no calls, no create
    assert loop.responses_created == 2
    assert loop.usage["total_tokens"] == 45


def test_a_failed_or_incomplete_response_sends_outputs_of_started_calls_and_no_create():
    for status in ("failed", "incomplete"):
        loop = LiveToolLoop()
        loop.feed(function_call("call_1", "f", {}))
        assert loop.feed(response_ended("resp_1", status)) == []
        assert loop.feed(function_call("call_2", "f", {})) == []  # not started: never runs
        assert loop.output_ready("call_1", "{}") == [out("call_1", "{}")]
        assert loop.responses_created == 0 and loop.open_responses == 0
        # a new response on the delegation runs its calls again; the skipped one stays skipped
        loop.feed(response_created("resp_2"))
        assert loop.feed(function_call("call_2", "f", {})) == []
        assert len(loop.feed(function_call("call_3", "f", {}))) == 1


def test_a_failed_response_without_calls_halts_its_delegation_until_a_new_response():
    loop = LiveToolLoop()
    assert loop.feed(response_ended("resp_1", "failed")) == []
    assert loop.feed(function_call("late", "f", {})) == []
    assert len(loop.feed(function_call("other", "f", {}, delegation="del_2"))) == 1
    loop.feed(response_created("resp_2"))
    assert len(loop.feed(function_call("call_2", "f", {}))) == 1


def test_tokens_are_summed_from_completed_responses():
    loop = LiveToolLoop()
    loop.feed(response_completed("r1", tokens=usage(100, 20)))
    loop.feed(response_completed("r2", "del_2", tokens=usage(50, 5)))
    loop.feed(response_ended("r3", "failed", tokens=usage(7, 7)))
    assert loop.usage == {
        "input_tokens": 150,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 25,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 175,
    }


def test_interleaved_delegations_settle_on_their_own():
    loop = LiveToolLoop()
    loop.feed(function_call("a1", "f", {}, delegation="del_a"))
    loop.feed(function_call("b1", "f", {}, delegation="del_b"))
    loop.feed(response_completed("ra", "del_a"))
    loop.feed(response_completed("rb", "del_b"))
    assert loop.output_ready("b1", "{}") == [out("b1", "{}"), CREATE]
    assert loop.output_ready("a1", "{}") == [out("a1", "{}"), CREATE]
    assert loop.responses_created == 2


def test_a_delegation_without_an_id_still_works():
    loop = LiveToolLoop()
    loop.feed(function_call("call_1", "f", {}, delegation=None))
    assert loop.feed(response_completed("resp_1", delegation=None)) == []
    assert loop.output_ready("call_1", "{}")[-1] == CREATE


def test_billed_seconds_and_the_end_of_the_session():
    loop = LiveToolLoop()
    assert loop.seconds is None
    assert loop.feed(usage_updated(12)) == []
    assert loop.seconds == 12.0
    loop.feed(usage_updated(30.0))
    assert loop.seconds == 30.0  # cumulative: the last one counts, never a sum
    assert loop.feed(session_closed("live_1", "expired", 61)) == [EndCall("expired")]
    assert (loop.closed, loop.close_reason, loop.seconds) == (True, "expired", 61.0)
    assert loop.feed(session_closed("live_1", "expired", 61)) == []
    assert loop.feed({"type": "session.closed"}) == []


def test_nothing_new_starts_and_no_create_goes_out_after_the_session_closed():
    loop = LiveToolLoop()
    loop.feed(function_call("call_1", "f", {}))
    loop.feed(response_completed("resp_1"))
    loop.feed(session_closed("live_1", "remote_hangup", 5))
    assert loop.feed(function_call("call_2", "f", {})) == []
    assert loop.output_ready("call_1", "{}") == [out("call_1", "{}")]
    assert loop.responses_created == 0


def test_events_it_does_not_use_and_garbage_are_ignored():
    loop = LiveToolLoop()
    junk = [
        None,
        "text",
        [],
        {},
        {"type": "response.event"},
        {"type": "response.event", "event": "x"},
        response_event({"type": "response.output_item.done", "item": {"type": "message"}}),
        response_event({"type": "response.output_item.done", "item": "x"}),
        response_event({"type": "response.output_item.done", "item": {"type": "function_call"}}),
        response_event({"type": "response.output_text.delta", "delta": "hi"}),
        response_event({"type": "response.completed", "response": "x"}),
        response_event({"type": "response.completed"}),
        transcript_delta("Hello"),
        {"type": "session.usage.updated", "usage": {"seconds": True}},
        {"type": "session.usage.updated", "usage": {"seconds": -1}},
        {"type": "error", "error": {"message": "bad"}},
    ]
    for event in junk:
        assert loop.feed(event) == [], event
    assert loop.seconds is None and loop.usage == {} and loop.function_calls == 0
    odd = response_event(
        {
            "type": "response.output_item.done",
            "item": {"type": "function_call", "call_id": "c", "name": "f", "arguments": 7},
        }
    )
    assert loop.feed(odd) == [RunFunction("c", "f", "{}", "del_1")]


def test_calls_past_the_bound_of_a_response_get_an_error_output_at_once():
    loop = LiveToolLoop()
    for i in range(MAX_CALLS_PER_RESPONSE):
        assert isinstance(loop.feed(function_call(f"c{i}", "f", {}))[0], RunFunction)
    [refused] = loop.feed(function_call("extra", "f", {}))
    assert isinstance(refused, SendEvent)
    item = refused.event["item"]
    assert refused.event["type"] == "response.item.create" and item["call_id"] == "extra"
    assert json.loads(item["output"])["error"] == TOO_MANY_CALLS
    loop.feed(response_completed("resp_1"))
    for i in range(MAX_CALLS_PER_RESPONSE - 1):
        assert loop.output_ready(f"c{i}", "{}") == [out(f"c{i}", "{}")]
    assert loop.output_ready(f"c{MAX_CALLS_PER_RESPONSE - 1}", "{}")[-1] == CREATE


def test_responses_in_progress_are_bounded():
    loop = LiveToolLoop()
    for i in range(MAX_OPEN_DELEGATIONS):
        assert isinstance(loop.feed(function_call(f"c{i}", "f", {}, f"d{i}"))[0], RunFunction)
    [refused] = loop.feed(function_call("extra", "f", {}, "d_extra"))
    assert isinstance(refused, SendEvent) and loop.open_responses == MAX_OPEN_DELEGATIONS
    for i in range(MAX_OPEN_DELEGATIONS):
        loop.feed(response_completed(f"r{i}", f"d{i}"))
        loop.output_ready(f"c{i}", "{}")
    assert loop.open_responses == 0 and loop.running == 0


def test_memory_stays_bounded_over_a_long_session():
    loop = LiveToolLoop()
    for i in range(CLOSED_MEMORY * 3):
        delegation = f"d{i}"
        loop.feed(function_call(f"c{i}", "f", {}, delegation))
        loop.feed(response_ended(f"r{i}", "failed" if i % 2 else "completed", delegation))
        loop.output_ready(f"c{i}", "{}")
    assert loop.open_responses == 0 and loop.running == 0
    assert len(loop._closed) <= CLOSED_MEMORY and len(loop._halted) <= CLOSED_MEMORY


def test_random_interleavings_keep_every_rule():
    for seed in range(300):
        rng = random.Random(seed)
        loop = LiveToolLoop()
        responses = []  # (delegation, response id, call ids, status)
        for d in range(rng.randint(1, 3)):
            for r in range(rng.randint(1, 2)):
                calls = [f"c{d}_{r}_{i}" for i in range(rng.randint(0, 3))]
                status = rng.choice(["completed", "completed", "failed", "incomplete"])
                responses.append((f"d{d}", f"r{d}_{r}", calls, status))
        # One response at a time per delegation; delegations interleave at random.
        queues: dict[str, list] = {}
        for delegation, response_id, calls, status in responses:
            steps = queues.setdefault(delegation, [])
            steps.append(("event", response_created(response_id, delegation)))
            steps += [("event", function_call(c, "f", {}, delegation)) for c in calls]
            steps.append(("event", response_ended(response_id, status, delegation)))
            steps.append(("barrier", response_id))
        sent: list[dict] = []
        running: list[str] = []
        ran: list[str] = []
        ended: set[str] = set()
        waiting = {d: q for d, q in queues.items()}
        while waiting or running:
            choices = [d for d, q in waiting.items() if q and q[0][0] == "event"]
            if running and (not choices or rng.random() < 0.4):
                call_id = running.pop(rng.randrange(len(running)))
                actions = loop.output_ready(call_id, "{}")
            elif choices:
                delegation = rng.choice(choices)
                _, event = waiting[delegation].pop(0)
                nested = event["event"]
                if "response" in nested and nested["type"] != "response.created":
                    ended.add(nested["response"]["id"])
                actions = loop.feed(event)
            else:
                # every delegation waits on a barrier: pass the ones whose response settled
                for q in waiting.values():
                    if q and q[0][0] == "barrier":
                        q.pop(0)
                for d in [d for d, q in waiting.items() if not q]:
                    del waiting[d]
                continue
            for action in actions:
                if isinstance(action, RunFunction):
                    assert action.call_id not in ran
                    ran.append(action.call_id)
                    running.append(action.call_id)
                elif isinstance(action, SendEvent):
                    sent.append(action.event)
            for d, q in list(waiting.items()):
                if (
                    q
                    and q[0][0] == "barrier"
                    and q[0][1] in ended
                    and not any(c.startswith(f"c{q[0][1][1:]}_") for c in running)
                ):
                    q.pop(0)
                if not q:
                    del waiting[d]
        outputs = [e["item"]["call_id"] for e in sent if e["type"] == "response.item.create"]
        assert sorted(outputs) == sorted(ran)  # every call that ran has exactly one output
        expected_creates = sum(1 for _, _, calls, s in responses if s == "completed" and calls)
        assert loop.responses_created == len([e for e in sent if e["type"] == "response.create"])
        assert loop.responses_created == expected_creates, seed
        assert loop.open_responses == 0 and loop.running == 0
        # a create never precedes an output of its response's calls
        for _, _, calls, status in responses:
            if status == "completed" and calls:
                last = max(outputs.index(c) for c in calls)
                position = [i for i, e in enumerate(sent) if e["type"] == "response.item.create"]
                after = position[last]
                assert any(e["type"] == "response.create" for e in sent[after + 1 :])
