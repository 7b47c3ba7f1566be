"""Calls that outlive a worker (CONTRACT §13), with real processes: a throwaway redis-server,
the fake OpenAI in this process, and several ``navai serve`` processes on 127.0.0.1 sharing
both (``NAVAI_RATE_LIMIT_STORAGE=redis://...``, a 2 s lease)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import httpx2
import pytest
from fakes import FakeCall, fn_call

from benchmarks.takeover_soak import Cluster, Worker, answered, soak, tool_round

pytestmark = pytest.mark.slow  # real processes

LEASE = 2.0


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, lease=LEASE, NAVAI_CALL_MAX_SECONDS="6")
    try:
        yield made
    finally:
        made.close()


def wait(predicate, timeout: float, step: float = 0.02) -> float:
    """Seconds until ``predicate()`` holds (fails after ``timeout``)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError("timed out")
        time.sleep(step)
    return time.monotonic() - started


def owned_call(cluster: Cluster, worker: Worker) -> FakeCall:
    call = cluster.create_call(worker)
    wait(lambda: cluster.owner(call.call_id) is worker, 5)
    tool_round(call, "fc_before")
    wait(lambda: answered(call, "fc_before"), 5)
    return call


def takeovers(workers: list[Worker], call_id: str) -> int:
    return sum(w.output().count(f"call {call_id} taken over") for w in workers)


def test_kill_9_of_the_owner_another_worker_attaches_and_answers_the_next_tool(cluster):
    first, second = cluster.start_workers(2)
    call = owned_call(cluster, first)
    first.kill()
    killed = time.monotonic()
    tool_round(call, "fc_after")
    wait(lambda: answered(call, "fc_after"), LEASE + 2)
    assert time.monotonic() - killed <= LEASE + 2
    assert cluster.owner(call.call_id) is second
    assert json.loads(call.outputs()[-1]["output"])["result"] == 3
    assert call.hangups == 0 and not call.ended
    stored = cluster.stored(call.call_id)
    assert stored["workers"] == "2"
    assert not [k for k in stored if k.startswith("fc:")]
    assert cluster.peak[call.call_id] == 1  # never two sidebands at once


def test_a_tool_running_at_the_owners_death_gets_its_interrupted_output(cluster):
    first, second = cluster.start_workers(2)
    call = owned_call(cluster, first)
    call.send(fn_call("fc_slow", "slow", {"seconds": 30}, response="resp_slow"))
    wait(lambda: "fc:fc_slow" in cluster.stored(call.call_id), 5)
    first.kill()
    wait(lambda: answered(call, "fc_slow"), LEASE + 3)
    output = call.output_of("fc_slow")
    assert output["ok"] is False and output["function_name"] == "slow"
    assert "interrupted" in output["details"]
    # exactly one response.create after the orphaned output, and the call goes on
    wait(lambda: len(call.of_type("response.create")) >= 1, 2)
    time.sleep(0.3)
    assert len(call.of_type("response.create")) == 1
    tool_round(call, "fc_next")
    wait(lambda: answered(call, "fc_next"), 5)
    assert call.output_of("fc_next")["result"] == 3
    assert cluster.owner(call.call_id) is second


def test_max_length_counts_from_the_original_start(cluster):
    # NAVAI_CALL_MAX_SECONDS=6, owner killed at 2 s: hung up at 6 s, not 8 s.
    first, second = cluster.start_workers(2)
    started = time.monotonic()
    call = owned_call(cluster, first)
    time.sleep(max(0.0, 2 - (time.monotonic() - started)))
    first.kill()
    wait(lambda: call.hangups == 1, 10)
    lasted = time.monotonic() - started
    assert 5.5 <= lasted <= 7.0, lasted
    wait(lambda: "ended (max_seconds)" in second.output(), 5)
    assert second.output().count(f"call {call.call_id} ended") == 1


def test_sigterm_hands_calls_over_without_hanging_up(cluster):
    first, second = cluster.start_workers(2)
    call = owned_call(cluster, first)
    first.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    wait(lambda: cluster.owner(call.call_id) is second, 4)
    assert time.monotonic() - signalled <= 2.5
    assert first.process.wait(10) == 0
    assert call.hangups == 0 and not call.ended
    assert f"call {call.call_id} ended" not in first.output()  # no record: not ended
    tool_round(call, "fc_after")
    wait(lambda: answered(call, "fc_after"), 3)
    assert cluster.stored(call.call_id)["workers"] == "2"


def test_two_survivors_never_both_attach(cluster):
    first, *survivors = cluster.start_workers(3)
    calls = [owned_call(cluster, first) for _ in range(4)]
    first.kill()
    for call in calls:
        wait(lambda call=call: cluster.owner(call.call_id) in survivors, LEASE + 3)
    time.sleep(LEASE)  # a second claimant would have attached by now
    for call in calls:
        assert takeovers(survivors, call.call_id) == 1
        assert call.connections == 2  # the first owner's sideband, then one successor's
        assert cluster.peak[call.call_id] == 1
        assert cluster.stored(call.call_id)["workers"] == "2"


def test_hangup_through_a_worker_that_does_not_own_the_call(cluster):
    owner, other = cluster.start_workers(2)
    call = owned_call(cluster, owner)
    path = f"/navai/realtime/calls/{call.call_id}/hangup"
    reply = httpx2.post(f"{other.url}{path}", json={}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"ok": True, "call_id": call.call_id}
    assert call.hangups == 1
    # the owner sees its sideband close and writes the call's one record
    wait(lambda: f"call {call.call_id} ended (ended)" in owner.output(), 5)
    assert f"call {call.call_id} ended" not in other.output()
    wait(lambda: not cluster.stored(call.call_id), 3)  # forgotten by its owner
    nobody = f"{other.url}/navai/realtime/calls/rtc_nobody/hangup"
    unknown = httpx2.post(nobody, json={}, timeout=10)
    assert unknown.status_code == 404


def test_a_short_soak(tmp_path):
    # The soak of benchmarks/takeover_soak.py, short: 12 calls, 3 workers, 10 s, kills every 3 s.
    result = soak(tmp_path, calls=12, workers=3, seconds=10, kill_every=3, every=1.0, lease=LEASE)
    assert result["kills"] >= 2
    assert result["final_unanswered"] == 0
    assert result["hung_up"] == 0
    assert result["max_open_sidebands_per_call"] == 1
    assert result["takeover_gap_s"]["never"] == 0
    assert result["takeover_gap_s"]["max"] <= LEASE + 2.5
