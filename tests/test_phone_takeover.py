"""A phone call outlives the worker that accepted it (CONTRACT §9 and §13), with real
processes: a throwaway redis-server, the fake OpenAI in this process, and two ``navai serve``
workers sharing both. OpenAI's webhook reaches one worker, which accepts the call and holds
it under a lease; that worker is killed (``kill -9``) and the other takes the call over."""

from __future__ import annotations

import json
import time
import uuid

import httpx2
import pytest

from benchmarks.takeover_soak import Cluster, answered, tool_round
from navai_core.calls.webhooks import webhook_headers

pytestmark = pytest.mark.slow  # real processes

LEASE = 2.0
SECRET = "whsec_bmF2YWktdGVzdC13ZWJob29rLXNlY3JldC0zMmJ5dGU="
CALLER = "+14155550123"


def wait(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def incoming(call_id: str) -> bytes:
    return json.dumps(
        {
            "object": "event",
            "id": "evt_" + uuid.uuid4().hex,
            "type": "realtime.call.incoming",
            "created_at": int(time.time()),
            "data": {
                "call_id": call_id,
                "sip_headers": [{"name": "From", "value": f"<sip:{CALLER}@sip.example.com>"}],
            },
        }
    ).encode()


def test_kill_9_of_the_worker_that_accepted_a_phone_call_another_takes_it_over(tmp_path):
    cluster = Cluster(tmp_path, lease=LEASE, OPENAI_WEBHOOK_SECRET=SECRET)
    try:
        first, second = cluster.start_workers(2)
        call = cluster.fake.open_call()  # a call OpenAI holds for acceptance
        body = incoming(call.call_id)
        signed = webhook_headers(SECRET, "wh_" + uuid.uuid4().hex, body)
        reply = httpx2.post(
            f"{first.url}/navai/realtime/webhook",
            content=body,
            headers={**signed, "content-type": "application/json"},
            timeout=10,
        )
        assert reply.status_code == 200
        call.wait_for(lambda c: c.connections == 1 and c._outbox is not None)
        wait(lambda: cluster.owner(call.call_id) is first, 5)
        paths = [r.path for r in cluster.fake.requests if call.call_id in r.path]
        assert paths == [f"/v1/realtime/calls/{call.call_id}/accept"]
        entry = json.loads(cluster.stored(call.call_id)["entry"])
        assert entry["transport"] == "sip" and entry["key"] == CALLER
        tool_round(call, "fc_before")
        wait(lambda: answered(call, "fc_before"), 5)

        first.kill()
        tool_round(call, "fc_after")
        wait(lambda: answered(call, "fc_after"), LEASE + 2)
        assert cluster.owner(call.call_id) is second
        assert json.loads(call.outputs()[-1]["output"])["result"] == 3
        assert call.hangups == 0 and not call.ended
        assert cluster.stored(call.call_id)["workers"] == "2"
        assert cluster.peak[call.call_id] == 1  # never two sidebands at once
        # The successor holds it as the phone call it is: the caller's budget, its record.
        call.end()
        wait(lambda: f"call {call.call_id} ended" in second.output(), 5)
        line = next(x for x in second.output().splitlines() if f"call {call.call_id} ended" in x)
        assert f"key {CALLER}" in line
    finally:
        cluster.close()
