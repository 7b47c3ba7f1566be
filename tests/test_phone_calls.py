"""Phone calls through OpenAI's signed webhooks (CONTRACT.md section 9), end to end against the
loopback Realtime fake: the webhook route on both adapters and real ``navai serve``, the
/accept, /reject and /refer requests the fake receives, the call's control connection after
accept (tools, budget key, summary), duplicate deliveries, and the hook."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from conftest import KINDS, SERVER_KEY, LogCapture, Setup, in_process, start_server, stop_all
from fakes import FakeOpenAI, fn_call
from fakes import response_done as done

from navai_core import Navai, NavaiConfig
from navai_core.calls import manager as _manager
from navai_core.calls import phone as _phone
from navai_core.calls.manager import CallSummary
from navai_core.calls.sip import AcceptCall, IncomingCall, ReferCall, RejectCall
from navai_core.calls.webhooks import webhook_headers
from navai_core.concurrency import owner as _owner

WEBHOOK_SECRET = "whsec_bmF2YWktdGVzdC13ZWJob29rLXNlY3JldC0zMmJ5dGU="
WEBHOOK_PATH = "/navai/realtime/webhook"
CALLER = "+14155550100"
FROM = f'"Alice" <sip:{CALLER}@sip.example.com>;tag=64eg'


def incoming_event(call_id: str, *, from_header: str = FROM) -> bytes:
    return json.dumps(
        {
            "object": "event",
            "id": "evt_" + uuid.uuid4().hex,
            "type": "realtime.call.incoming",
            "created_at": int(time.time()),
            "data": {
                "call_id": call_id,
                "sip_headers": [
                    {"name": "From", "value": from_header},
                    {"name": "To", "value": "<sip:+14155550199@sip.example.com>"},
                    {"name": "X-Secret-Marker", "value": "body-must-not-be-logged"},
                ],
            },
        }
    ).encode()


def deliver(http: httpx2.Client, body: bytes, *, webhook_id: str | None = None) -> httpx2.Response:
    signed = webhook_headers(WEBHOOK_SECRET, webhook_id or "wh_" + uuid.uuid4().hex, body)
    return http.post(
        WEBHOOK_PATH, content=body, headers={**signed, "Content-Type": "application/json"}
    )


def control_requests(fake: FakeOpenAI, call_id: str) -> list:
    return [r for r in list(fake.requests) if r.path.startswith(f"/v1/realtime/calls/{call_id}/")]


def wait_control(fake: FakeOpenAI, call_id: str, count: int = 1, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = control_requests(fake, call_id)
        if len(found) >= count:
            return found
        time.sleep(0.01)
    raise AssertionError(f"no upstream control request for {call_id}: {fake.requests!r}")


# ----- navai served four ways, against one Realtime fake ----------------------------------------


@pytest.fixture(scope="module")
def realtime() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(key=SERVER_KEY) as fake:
        yield fake


def phone_env(realtime: FakeOpenAI, functions_dir) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": realtime.base_url,
        "OPENAI_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "NAVAI_UPSTREAM_MAX_RETRIES": "0",
        "NAVAI_UPSTREAM_TIMEOUT": "5",
        "NAVAI_FUNCTIONS_BASE_DIR": str(functions_dir),
        "NAVAI_FUNCTIONS_FOLDERS": "functions",
    }


@dataclass
class Phone:
    """navai served one way, with phone calls on."""

    kind: str
    http: httpx2.Client
    log_text: Callable[[], str]
    navai: Navai | None = None  # in process only

    def log_mark(self) -> int:
        return len(self.log_text())

    def logs_since(self, mark: int) -> str:
        return self.log_text()[mark:]

    def wait_log(self, mark: int, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            log = self.logs_since(mark)
            if text in log or time.monotonic() > deadline:
                assert text in log, log
                return log
            time.sleep(0.02)


class Server:
    """One Navai on one adapter, in process (the ASGI lifespan's end hangs up held calls)."""

    def __init__(self, kind: str, navai: Navai) -> None:
        self.kind = kind
        self.navai = navai
        self._stack = contextlib.ExitStack()
        self.http: httpx2.Client = self._stack.enter_context(in_process(navai, kind))

    def close(self) -> None:
        self._stack.close()  # a second call does nothing


@pytest.fixture(scope="module")
def capture() -> Iterator[LogCapture]:
    found = LogCapture()
    logger = logging.getLogger("navai")
    level = logger.level
    logger.addHandler(found)
    logger.setLevel(logging.INFO)
    yield found
    logger.removeHandler(found)
    logger.setLevel(level)


@pytest.fixture(scope="module")
def phones(realtime, functions_dir, capture, tmp_path_factory) -> Iterator[dict[str, Phone]]:
    env = phone_env(realtime, functions_dir)
    root = tmp_path_factory.mktemp("phone")
    setup = Setup("phone", env, {"OPENAI_API_KEY": SERVER_KEY})
    processes = {kind: start_server(setup, kind == "wsgi-server", root) for kind in KINDS[2:]}
    servers = [
        Server(kind, Navai(NavaiConfig.from_env({**env, "OPENAI_API_KEY": SERVER_KEY})))
        for kind in KINDS[:2]
    ]
    found = {s.kind: Phone(s.kind, s.http, capture.text, s.navai) for s in servers}
    try:
        for kind, process in processes.items():
            http = httpx2.Client(base_url=process.wait_ready(), timeout=10)
            found[kind] = Phone(kind, http, process.stderr)
        yield found
    finally:
        for server in servers:
            server.close()
        codes = dict(zip(processes, stop_all(list(processes.values())), strict=True))
        for phone in found.values():
            if phone.navai is None:
                phone.http.close()
        assert all(code == 0 for code in codes.values()), codes


@pytest.fixture(params=KINDS)
def phone(request, phones, realtime) -> Iterator[Phone]:
    yield phones[request.param]
    for call in list(realtime.calls.values()):
        if not call.ended:
            call.end()  # the caller hangs up: no control connection outlives its test


def test_incoming_call_is_accepted_and_held_like_a_webrtc_call(phone, realtime):
    call = realtime.open_call()
    mark = phone.log_mark()
    response = deliver(phone.http, incoming_event(call.call_id))
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    (accept,) = wait_control(realtime, call.call_id)
    assert accept.path == f"/v1/realtime/calls/{call.call_id}/accept"
    assert accept.headers["authorization"] == f"Bearer {SERVER_KEY}"
    assert accept.headers["content-type"] == "application/json"
    session = json.loads(accept.body)
    # The session object's fields at the top level of the body, as openai-python sends them:
    # the same session and tools as a WebRTC call.
    assert session["type"] == "realtime"
    assert session["instructions"] == "You are a helpful assistant."
    assert session["audio"] == {
        "output": {"voice": "marin"},
        "input": {"transcription": {"model": "gpt-live-transcribe"}},  # for the call record
    }
    assert "session" not in session
    listed = phone.http.get("/navai/functions").json()["items"]
    assert {t["name"] for t in session["tools"]} == {f["name"] for f in listed}
    assert all(t["type"] == "function" and "parameters" in t for t in session["tools"])
    # The control connection: the same tool loop as a WebRTC call.
    call.wait_for(lambda c: c.connections == 1)
    assert call.sideband_authorization == [f"Bearer {SERVER_KEY}"]
    call.send(fn_call("fc_1", "add", {"a": 2, "b": 3}), done("resp_1", ("fc_1", "add", {})))
    call.wait_for(lambda c: len(c.of_type("response.create")) == 1)
    assert call.output_of("fc_1")["result"] == 5
    call.end()
    # One summary line, the budget keyed by the caller's number.
    log = phone.wait_log(mark, f"call {call.call_id} ended")
    assert f"phone call {call.call_id} accepted" in log
    assert f"key {CALLER}" in log
    assert "1 function call(s)" in log
    assert WEBHOOK_SECRET not in log and SERVER_KEY not in log


@pytest.mark.parametrize(
    "tamper",
    ["signature", "body", "id", "stale", "future", "missing-signature", "missing-id", "secret"],
)
def test_bad_deliveries_answer_400_and_nothing_happens(phone, realtime, tamper):
    call = realtime.open_call()
    body = incoming_event(call.call_id)
    headers = webhook_headers(WEBHOOK_SECRET, "wh_" + uuid.uuid4().hex, body)
    now = int(time.time())
    if tamper == "signature":
        headers["webhook-signature"] = "v1," + "A" * 43 + "="
    elif tamper == "body":
        body = body.replace(CALLER.encode(), b"+14155550101")
    elif tamper == "id":
        headers["webhook-id"] = "wh_other"
    elif tamper in ("stale", "future"):
        # The server reads its clock after this test does (and now is cut to whole seconds),
        # so post-dated needs a margin: the exact 300 s edge is tested with a fixed clock in
        # tests/test_webhooks.py.
        ts = now - 301 if tamper == "stale" else now + 330
        headers = webhook_headers(WEBHOOK_SECRET, "wh_" + uuid.uuid4().hex, body, timestamp=ts)
    elif tamper == "missing-signature":
        del headers["webhook-signature"]
    elif tamper == "missing-id":
        del headers["webhook-id"]
    else:
        other = "whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC0zMmJ5dGU="
        headers = webhook_headers(other, "wh_" + uuid.uuid4().hex, body)
    mark = phone.log_mark()
    response = phone.http.post(WEBHOOK_PATH, content=body, headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json()["error"], str)
    time.sleep(0.2)  # time for a wrongly started background answer to reach the fake
    log = phone.logs_since(mark)
    # Logged, once per client address per 300 s (a flood writes one line).
    assert "webhook refused" in phone.log_text()
    assert control_requests(realtime, call.call_id) == []
    assert call.connections == 0
    assert "body-must-not-be-logged" not in log
    assert call.call_id not in log
    assert WEBHOOK_SECRET not in log


def test_other_event_types_answer_200_and_are_ignored(phone, realtime):
    before = len(realtime.requests)
    mark = phone.log_mark()
    body = json.dumps(
        {"id": "evt_1", "type": "batch.completed", "created_at": 1, "data": {"id": "batch_1"}}
    ).encode()
    response = deliver(phone.http, body)
    assert (response.status_code, response.json()) == (200, {"ok": True})
    time.sleep(0.2)
    assert len(realtime.requests) == before
    assert "batch.completed" not in phone.logs_since(mark)  # debug only


def test_duplicate_delivery_is_handled_once(phone, realtime):
    call = realtime.open_call()
    body = incoming_event(call.call_id)
    webhook_id = "wh_" + uuid.uuid4().hex
    first = deliver(phone.http, body, webhook_id=webhook_id)
    # OpenAI delivers again with the same id (and a fresh timestamp and signature).
    second = deliver(phone.http, body, webhook_id=webhook_id)
    assert first.status_code == second.status_code == 200
    wait_control(realtime, call.call_id)
    call.wait_for(lambda c: c.connections == 1)
    time.sleep(0.3)
    assert len(control_requests(realtime, call.call_id)) == 1
    assert call.connections == 1


def test_route_is_off_without_a_secret(client):
    response = deliver(client.http, incoming_event("rtc_" + uuid.uuid4().hex))
    assert response.status_code == 404


def test_only_post(phone):
    response = phone.http.get(WEBHOOK_PATH)
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]


def test_signed_but_not_an_event_is_400(phone):
    response = deliver(phone.http, b"not json")
    assert response.status_code == 400
    assert response.json() == {"error": "Webhook body is not a JSON event object."}


# ----- the hook, in process (both adapters) ----------------------------------------------------


@pytest.fixture(params=KINDS[:2])
def serve(request, realtime, functions_dir):
    servers: list[Server] = []

    def start(**changes) -> Server:
        env = {**phone_env(realtime, functions_dir), "OPENAI_API_KEY": SERVER_KEY}
        server = Server(request.param, Navai(NavaiConfig.from_env(env, **changes)))
        servers.append(server)
        return server

    yield start
    for call in list(realtime.calls.values()):
        if not call.ended:
            call.end()
    for server in servers:
        server.close()


def test_hook_sees_the_call_and_rejects(serve, realtime):
    seen: list[IncomingCall] = []

    def on_incoming_call(call: IncomingCall):
        seen.append(call)
        return RejectCall(486)

    server = serve(on_incoming_call=on_incoming_call)
    call = realtime.open_call()
    assert deliver(server.http, incoming_event(call.call_id)).status_code == 200
    (reject,) = wait_control(realtime, call.call_id)
    assert reject.path.endswith("/reject")
    assert json.loads(reject.body) == {"status_code": 486}
    (incoming,) = seen
    assert (incoming.call_id, incoming.caller, incoming.callee) == (
        call.call_id,
        CALLER,
        "+14155550199",
    )
    assert incoming.header("x-secret-marker") == "body-must-not-be-logged"
    time.sleep(0.2)
    assert call.connections == 0  # a rejected call has no control connection


def test_the_signature_covers_the_bytes_as_received(serve, realtime):
    # Pretty-printed, non-ASCII JSON: any re-encoding would change the signed bytes.
    server = serve()
    call = realtime.open_call()
    event = json.loads(incoming_event(call.call_id, from_header=f'"Zoë" <sip:{CALLER}@x.org>'))
    body = json.dumps(event, indent=3, ensure_ascii=False).encode() + b"\n\n"
    assert deliver(server.http, body).status_code == 200
    (accept,) = wait_control(realtime, call.call_id)
    assert accept.path.endswith("/accept")


def test_a_body_over_the_limit_is_413_and_nothing_happens(serve, realtime):
    server = serve(max_body_bytes=2000)
    call = realtime.open_call()
    event = json.loads(incoming_event(call.call_id))
    event["data"]["sip_headers"].append({"name": "X-Pad", "value": "x" * 3000})
    response = deliver(server.http, json.dumps(event).encode())
    assert response.status_code == 413
    assert "error" in response.json()
    time.sleep(0.2)
    assert control_requests(realtime, call.call_id) == []


def test_the_webhook_is_openais_route_not_a_browsers(serve, realtime):
    # No authorisation hook or rate limit of the browser routes applies (the signature is its
    # authorisation), and the served OpenAPI document leaves it out.
    server = serve(
        authorize_client_secret=lambda context: False,
        authorize_functions=lambda context: False,
        openapi_path="/openapi.json",
    )
    document = server.http.get("/openapi.json").json()
    assert WEBHOOK_PATH not in document["paths"]
    assert "/navai/realtime/calls" in document["paths"]
    call = realtime.open_call()
    assert deliver(server.http, incoming_event(call.call_id)).status_code == 200
    (accept,) = wait_control(realtime, call.call_id)
    assert accept.path.endswith("/accept")


def test_async_hook_refers(serve, realtime):
    async def on_incoming_call(call: IncomingCall):
        await asyncio.sleep(0)
        return ReferCall("tel:+14155550123")

    server = serve(on_incoming_call=on_incoming_call)
    call = realtime.open_call()
    deliver(server.http, incoming_event(call.call_id))
    (refer,) = wait_control(realtime, call.call_id)
    assert refer.path.endswith("/refer")
    assert json.loads(refer.body) == {"target_uri": "tel:+14155550123"}


def test_hook_session_overrides_and_budget_key(serve, realtime):
    summaries: list[CallSummary] = []

    def on_incoming_call(call: IncomingCall):
        return AcceptCall(
            session={"instructions": f"Caller {call.caller}.", "audio": {"output": {"speed": 1.2}}},
            budget_key="customer-42",
        )

    server = serve(on_incoming_call=on_incoming_call, on_call_end=summaries.append)
    call = realtime.open_call()
    deliver(server.http, incoming_event(call.call_id))
    (accept,) = wait_control(realtime, call.call_id)
    body = json.loads(accept.body)
    assert body["instructions"] == f"Caller {CALLER}."
    assert body["audio"] == {
        "output": {"voice": "marin", "speed": 1.2},
        "input": {"transcription": {"model": "gpt-live-transcribe"}},  # for the call record
    }
    assert body["type"] == "realtime"
    call.wait_for(lambda c: c.connections == 1)
    (live,) = [c for c in server.navai.calls.live() if c.call_id == call.call_id]
    assert (live.key, live.transport) == ("customer-42", "sip")
    call.end()
    deadline = time.monotonic() + 10
    while not summaries and time.monotonic() < deadline:
        time.sleep(0.01)
    (summary,) = summaries
    assert (summary.call_id, summary.key, summary.transport) == (call.call_id, "customer-42", "sip")
    assert summary.end_reason == "ended"


def test_spent_budget_rejects_the_call_as_busy(serve, realtime):
    server = serve(call_budget="1/day")
    # The caller's number spent its minute of the day already.
    asyncio.run(server.navai.calls.budgets.acharge(CALLER, 60))
    call = realtime.open_call()
    deliver(server.http, incoming_event(call.call_id))
    (reject,) = wait_control(realtime, call.call_id)
    assert reject.path.endswith("/reject")
    assert json.loads(reject.body) == {"status_code": 486}
    # Another caller still gets through.
    other = realtime.open_call()
    deliver(server.http, incoming_event(other.call_id, from_header="<sip:+15550001111@x>"))
    (accept,) = wait_control(realtime, other.call_id)
    assert accept.path.endswith("/accept")


def test_a_full_process_rejects_the_call_as_busy(serve, realtime):
    server = serve(call_max_live=1)
    held = realtime.open_call()
    deliver(server.http, incoming_event(held.call_id))
    wait_control(realtime, held.call_id)
    held.wait_for(lambda c: c.connections == 1)
    call = realtime.open_call()
    deliver(server.http, incoming_event(call.call_id, from_header="<sip:+15550003333@x>"))
    (reject,) = wait_control(realtime, call.call_id)
    assert reject.path.endswith("/reject")
    assert json.loads(reject.body) == {"status_code": 486}
    assert [c.call_id for c in server.navai.calls.live()] == [held.call_id]


def wait_answered(server: Server, timeout: float = 10.0) -> None:
    """Until no incoming call is being answered (hook, verdict, attach) any more."""
    deadline = time.monotonic() + timeout
    while server.navai.phone_calls().pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.navai.phone_calls().pending == 0


def test_a_burst_of_calls_accepts_only_as_many_as_there_are_places(serve, realtime):
    """Ten calls ring at once against a cap of three: each reserves its place before its
    ``/accept``, so three are accepted and held, the other seven are rejected as busy; none
    is accepted and then hung up for want of a place, and no fourth sideband opens."""
    server = serve(call_max_live=3)
    calls = [realtime.open_call() for _ in range(10)]
    bodies = [
        incoming_event(call.call_id, from_header=f"<sip:+1555000{i:04d}@x>")
        for i, call in enumerate(calls)
    ]
    realtime.behave(None, delay=0.5)  # OpenAI takes its time: the burst lands meanwhile
    try:
        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda body: deliver(server.http, body), bodies))
        assert [a.status_code for a in answers] == [200] * len(bodies)
        for call in calls:
            wait_control(realtime, call.call_id)
        wait_answered(server)
    finally:
        realtime.behave(None)
    actions = {
        c.call_id: [r.path.rsplit("/", 1)[1] for r in control_requests(realtime, c.call_id)]
        for c in calls
    }
    sent = [action for done in actions.values() for action in done]
    assert sent.count("accept") == 3, actions
    accepted = [c for c in calls if actions[c.call_id] == ["accept"]]
    rejected = [c for c in calls if actions[c.call_id] == ["reject"]]
    assert (len(accepted), len(rejected)) == (3, 7), actions
    for call in rejected:
        (reject,) = control_requests(realtime, call.call_id)
        assert json.loads(reject.body) == {"status_code": 486}
    for call in accepted:
        call.wait_for(lambda c: c.connections == 1)
    # No call ended, so every sideband ever opened is still open: three at most at any time.
    assert sum(c.connections for c in calls) == 3
    assert {c.call_id for c in server.navai.calls.live()} == {c.call_id for c in accepted}
    assert server.navai.calls.places.reserved == 0


def test_a_call_being_accepted_as_the_server_stops_is_hung_up_not_left_unheld(serve, realtime):
    """The server stops while OpenAI answers a call's ``/accept``: the shutdown waits for the
    answer (within its grace) instead of dropping it, and hangs the call up: a call accepted
    then is never left running without an owner."""
    server = serve()
    call = realtime.open_call()
    realtime.behave(None, delay=0.5)  # the /accept is in flight when the shutdown begins
    try:
        deliver(server.http, incoming_event(call.call_id))
        wait_control(realtime, call.call_id)
        server.close()
    finally:
        realtime.behave(None)
    accept, hangup = wait_control(realtime, call.call_id, count=2)
    assert (accept.path, hangup.path) == (
        f"/v1/realtime/calls/{call.call_id}/accept",
        f"/v1/realtime/calls/{call.call_id}/hangup",
    )
    assert call.hangups == 1 and call.connections == 0
    assert server.navai.phone_calls().pending == 0
    assert server.navai.calls.places.reserved == 0


def test_a_call_accepted_but_not_held_for_any_reason_is_hung_up(serve, realtime, monkeypatch):
    """Whatever stops an accepted call from being held (here its parts fail to assemble),
    the call is hung up, never left running without an owner, and its place is given
    back."""
    server = serve(call_max_live=1)

    def broken(*args, **kwargs):
        raise RuntimeError("the call's parts could not be made")

    monkeypatch.setattr(_manager._Call, "assemble", broken)
    call = realtime.open_call()
    deliver(server.http, incoming_event(call.call_id))
    accept, hangup = wait_control(realtime, call.call_id, count=2)
    assert (accept.path, hangup.path) == (
        f"/v1/realtime/calls/{call.call_id}/accept",
        f"/v1/realtime/calls/{call.call_id}/hangup",
    )
    wait_answered(server)
    assert call.connections == 0 and server.navai.calls.live() == []
    monkeypatch.undo()
    # The one place is free again: the next call is accepted and held.
    other = realtime.open_call()
    deliver(server.http, incoming_event(other.call_id, from_header="<sip:+15550005555@x>"))
    (accept,) = wait_control(realtime, other.call_id)
    assert accept.path.endswith("/accept")
    other.wait_for(lambda c: c.connections == 1)


def test_a_failed_accept_gives_its_place_back(serve, realtime):
    server = serve(call_max_live=1)
    gone = "rtc_" + uuid.uuid4().hex  # a call the fake does not know: /accept answers 404
    deliver(server.http, incoming_event(gone))
    wait_control(realtime, gone)
    wait_answered(server)
    assert server.navai.calls.places.reserved == 0
    call = realtime.open_call()
    deliver(server.http, incoming_event(call.call_id, from_header="<sip:+15550006666@x>"))
    (accept,) = wait_control(realtime, call.call_id)
    assert accept.path.endswith("/accept")
    call.wait_for(lambda c: c.connections == 1)


@pytest.mark.parametrize("failure", ["raises", "bad-value"])
def test_failing_hook_rejects_with_603(serve, realtime, failure, caplog):
    def on_incoming_call(call: IncomingCall):
        if failure == "raises":
            raise RuntimeError("hook broke")
        return "yes"

    server = serve(on_incoming_call=on_incoming_call)
    call = realtime.open_call()
    with caplog.at_level("ERROR", logger="navai"):
        assert deliver(server.http, incoming_event(call.call_id)).status_code == 200
        (reject,) = wait_control(realtime, call.call_id)
    assert json.loads(reject.body) == {"status_code": 603}
    assert "on_incoming_call" in caplog.text


def test_webhook_is_answered_before_the_hook_finishes(serve, realtime):
    release = threading.Event()
    started = threading.Event()

    def on_incoming_call(call: IncomingCall):
        started.set()
        release.wait(10)

    server = serve(on_incoming_call=on_incoming_call)
    call = realtime.open_call()
    try:
        response = deliver(server.http, incoming_event(call.call_id))
        # OpenAI has its 200 while the hook is still deciding.
        assert response.status_code == 200
        assert started.wait(5)
        assert control_requests(realtime, call.call_id) == []
    finally:
        release.set()
    (accept,) = wait_control(realtime, call.call_id)
    assert accept.path.endswith("/accept")


def test_slow_hook_rejects_at_its_time_limit(serve, realtime, monkeypatch):
    monkeypatch.setattr(_phone, "HOOK_TIMEOUT_SECONDS", 0.2)

    async def on_incoming_call(call: IncomingCall):
        await asyncio.sleep(30)

    server = serve(on_incoming_call=on_incoming_call)
    call = realtime.open_call()
    deliver(server.http, incoming_event(call.call_id))
    (reject,) = wait_control(realtime, call.call_id)
    assert json.loads(reject.body) == {"status_code": 603}


def test_hung_sync_hooks_hold_at_most_their_thread_budget(serve, realtime, monkeypatch):
    monkeypatch.setattr(_phone, "HOOK_TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(_owner, "DEFAULT_HOOK_THREADS", 1)
    release = threading.Event()
    entered: list[str] = []

    def on_incoming_call(call: IncomingCall):
        entered.append(call.call_id)
        release.wait(10)

    server = serve(on_incoming_call=on_incoming_call)
    hung, next_call = realtime.open_call(), realtime.open_call()
    try:
        deliver(server.http, incoming_event(hung.call_id))
        (timed_out,) = wait_control(realtime, hung.call_id)  # at its limit; still running
        assert json.loads(timed_out.body) == {"status_code": 603}
        deliver(server.http, incoming_event(next_call.call_id))
        (refused,) = wait_control(realtime, next_call.call_id)
        # The one thread is still held: the next call is rejected without its hook running.
        assert entered == [hung.call_id]
        assert json.loads(refused.body) == {"status_code": 603}
    finally:
        release.set()


def test_upstream_failure_is_logged(serve, realtime, caplog):
    server = serve()
    call_id = "rtc_" + uuid.uuid4().hex  # a call the fake does not know: 404
    with caplog.at_level("WARNING", logger="navai"):
        deliver(server.http, incoming_event(call_id))
        wait_control(realtime, call_id)
        deadline = time.monotonic() + 5
        while "call not found" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
    assert f"phone call {call_id}: OpenAI calls accept failed" in caplog.text
    assert "call not found" in caplog.text
    assert SERVER_KEY not in caplog.text
    assert call_id not in [c.call_id for c in server.navai.calls.live()]


def test_too_many_calls_being_answered_is_503_and_delivered_again(serve, realtime, monkeypatch):
    monkeypatch.setattr(_phone, "MAX_PENDING_CALLS", 1)
    release = threading.Event()

    def on_incoming_call(call: IncomingCall):
        release.wait(10)
        return RejectCall()

    server = serve(on_incoming_call=on_incoming_call)
    body = incoming_event(realtime.open_call().call_id)
    try:
        assert deliver(server.http, incoming_event(realtime.open_call().call_id)).status_code == 200
        busy = deliver(server.http, body, webhook_id="wh_busy")
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while server.navai.phone_calls().pending and time.monotonic() < deadline:
        time.sleep(0.01)
    # The refused delivery was not remembered: OpenAI's next try is answered.
    assert deliver(server.http, body, webhook_id="wh_busy").status_code == 200


def test_unreadable_secret_answers_500_without_showing_it(serve, realtime):
    secret = "whsec_not-base64-%%%%-secret-value"
    server = serve(openai_webhook_secret=secret)
    assert any("OPENAI_WEBHOOK_SECRET" in p for p in server.navai.config.problems())
    before = len(realtime.requests)
    response = deliver(server.http, incoming_event(realtime.open_call().call_id))
    assert response.status_code == 500
    assert secret not in response.text
    assert "OPENAI_WEBHOOK_SECRET" in response.json()["error"]
    assert len(realtime.requests) == before


def test_shutdown_hangs_up_accepted_calls_and_cancels_pending_answers(serve, realtime):
    release = threading.Event()

    def on_incoming_call(call: IncomingCall):
        if call.caller == "+15550002222":
            release.wait(10)

    server = serve(on_incoming_call=on_incoming_call)
    held = realtime.open_call()
    deliver(server.http, incoming_event(held.call_id))
    held.wait_for(lambda c: c.connections == 1)
    waiting = realtime.open_call()
    deliver(server.http, incoming_event(waiting.call_id, from_header="<sip:+15550002222@x>"))
    deadline = time.monotonic() + 5
    while server.navai.phone_calls().pending == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        server.close()  # does not wait for the held hook (its thread is left behind)
    finally:
        release.set()
    assert server.navai.phone_calls().pending == 0
    assert server.navai.calls.live() == []
    held.wait_for(lambda c: c.ended)
    assert control_requests(realtime, waiting.call_id) == []  # cancelled: never answered


def test_shutdown_does_not_wait_for_a_hung_sync_hook(serve, realtime):
    # A sync hook cannot be stopped; past its answer's cancellation it is left behind, and
    # neither the loop's end nor the process's exit waits for it.
    release = threading.Event()
    daemon: list[bool] = []

    def on_incoming_call(call: IncomingCall):
        daemon.append(threading.current_thread().daemon)  # the process's exit won't wait
        release.wait(30)

    server = serve(on_incoming_call=on_incoming_call)
    call = realtime.open_call()
    deliver(server.http, incoming_event(call.call_id))
    deadline = time.monotonic() + 5
    while not daemon and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.navai.phone_calls().pending == 1
    started = time.monotonic()
    try:
        server.close()
        took = time.monotonic() - started
    finally:
        release.set()
    assert took < 5, took
    assert server.navai.phone_calls().pending == 0
    assert daemon == [True]
    assert control_requests(realtime, call.call_id) == []  # cancelled: never answered


# ----- the guide's example -----------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "phone_calls.py"


def test_the_guides_example_routes_callers(realtime, functions_dir, monkeypatch):
    env = {**phone_env(realtime, functions_dir), "OPENAI_API_KEY": SERVER_KEY}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("phone_calls_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from starlette.testclient import TestClient

    blocked, sales, welcome = (realtime.open_call() for _ in range(3))
    with TestClient(module.app) as http:
        deliver(http, incoming_event(blocked.call_id, from_header="<sip:+15550100000@x>"))
        sales_event = json.loads(incoming_event(sales.call_id))
        sales_event["data"]["sip_headers"].append({"name": "X-Department", "value": "sales"})
        deliver(http, json.dumps(sales_event).encode())
        deliver(http, incoming_event(welcome.call_id))
        (reject,) = wait_control(realtime, blocked.call_id)
        (refer,) = wait_control(realtime, sales.call_id)
        (accept,) = wait_control(realtime, welcome.call_id)
        welcome.wait_for(lambda c: c.connections == 1)
        (live,) = module.navai.calls.live()
        assert live.key == CALLER
        welcome.end()
    assert json.loads(reject.body) == {"status_code": 603}
    assert json.loads(refer.body) == {"target_uri": "sip:sales@pbx.example.com"}
    assert json.loads(accept.body)["instructions"].startswith("You answer the phone")


def test_fastapi_router_dependencies_do_not_refuse_openais_deliveries(realtime, functions_dir):
    # A FastAPI app whose navai routes sit behind a sign-in dependency: OpenAI has no session,
    # so the webhook runs no dependency and is not in the app's OpenAPI document.
    from fastapi import Depends, FastAPI, HTTPException
    from starlette.testclient import TestClient

    from navai_adapters.fastapi import navai_router

    def signed_in() -> None:
        raise HTTPException(status_code=401, detail="Sign in first.")

    env = {**phone_env(realtime, functions_dir), "OPENAI_API_KEY": SERVER_KEY}
    app = FastAPI()
    router = navai_router(Navai(NavaiConfig.from_env(env)))
    app.include_router(router, prefix="/voice", dependencies=[Depends(signed_in)])
    assert "/voice" + WEBHOOK_PATH not in app.openapi()["paths"]
    call = realtime.open_call()
    body = incoming_event(call.call_id)
    with TestClient(app) as http:
        assert http.post("/voice/navai/realtime/client-secret", json={}).status_code == 401
        assert http.post("/voice" + WEBHOOK_PATH, content=body).status_code == 400  # unsigned
        signed = webhook_headers(WEBHOOK_SECRET, "wh_" + uuid.uuid4().hex, body)
        response = http.post("/voice" + WEBHOOK_PATH, content=body, headers=signed)
        assert (response.status_code, response.json()) == (200, {"ok": True})
        (accept,) = wait_control(realtime, call.call_id)
        assert accept.path.endswith("/accept")
        call.wait_for(lambda c: c.connections == 1)
        call.end()


def test_a_shutdown_cancel_landing_during_the_accept_hangs_the_call_up(
    serve, realtime, monkeypatch
):
    """A shutdown picks the answers still deciding and cancels them; under WSGI the cancel
    crosses to the background loop a moment later, and may land while the answer it was meant
    for has gone on to reserve a place and send ``/accept``. The accepted call is hung up, never
    left running without an owner."""
    release = threading.Event()

    def on_incoming_call(call: IncomingCall):
        release.wait(10)  # still deciding when the shutdown picks what to cancel

    server = serve(on_incoming_call=on_incoming_call)
    call = realtime.open_call()
    original = concurrent.futures.Future.cancel

    def late_cancel(self):  # the hook answers between the pick and the cancel landing
        release.set()
        time.sleep(0.3)
        return original(self)

    realtime.behave(None, delay=0.5)  # the /accept is in flight when the cancel lands
    try:
        deliver(server.http, incoming_event(call.call_id))
        deadline = time.monotonic() + 5
        while server.navai.phone_calls().pending == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        monkeypatch.setattr(concurrent.futures.Future, "cancel", late_cancel)
        server.navai.phone_calls().close()
        monkeypatch.undo()
        release.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (
            server.navai.phone_calls().pending
            or server.navai.calls.places.reserved
            or len(control_requests(realtime, call.call_id)) == 1  # accepted, not hung up yet
        ):
            time.sleep(0.02)
    finally:
        realtime.behave(None)
    paths = [r.path.rsplit("/", 1)[1] for r in control_requests(realtime, call.call_id)]
    # (Not accepted at all, where the cancel landed first, is right too.)
    assert paths in ([], ["accept", "hangup"]) or server.navai.calls.live(), paths
    assert server.navai.calls.places.reserved == 0
