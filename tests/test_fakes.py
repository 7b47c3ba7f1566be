"""The fake OpenAI speaks OpenAI's API as openai-python knows it: its own client drives the
HTTP routes and the sideband, and its own types accept every shape the fakes send. The mock
transport answers from the same route table without a socket."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from conftest import validate_upstream_reply
from fakes import (
    ANSWER_SDP,
    Answer,
    FakeOpenAI,
    MockUpstream,
    OpenAIState,
    client_secret_reply,
    fn_call,
    response_done,
)
from openai.types.realtime import ClientSecretCreateResponse, RealtimeServerEvent
from pydantic import TypeAdapter

KEY = "sk-fake-check-0123456789"
SERVER_EVENT = TypeAdapter(RealtimeServerEvent)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(key=KEY) as server:
        yield server


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    fake.reset()
    with openai.OpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0) as found:
        yield found


def test_client_secret_reply_is_openais_shape(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    secret = client.realtime.client_secrets.create(
        session={"type": "realtime", "model": "gpt-realtime"}
    )
    assert isinstance(secret, ClientSecretCreateResponse)
    assert secret.value == "ek_fake_1" and secret.session.type == "realtime"
    assert secret.session.model == "gpt-realtime"
    validate_upstream_reply(fake.requests[0].json() | client_secret_reply({}, 1))
    validate_upstream_reply(client_secret_reply(fake.requests[0].json(), 1))


def test_a_call_over_http_and_its_sideband(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    answer = client.realtime.calls.create(
        sdp="v=0\r\n", session={"type": "realtime", "model": "gpt-realtime"}
    )
    assert answer.text == ANSWER_SDP
    call = fake.call()
    assert call.session["model"] == "gpt-realtime" and call.authorization == f"Bearer {KEY}"
    events = [
        fn_call("c1", "add", {"a": 1, "b": 2}),
        response_done("resp_1", ("c1", "add", {"a": 1, "b": 2})),
    ]
    for event in events:
        SERVER_EVENT.validate_python(event)  # OpenAI's own type accepts the shape
    call.send(*events)
    with client.realtime.connect(call_id=call.call_id) as connection:
        got = [connection.recv(), connection.recv()]
        assert [e.type for e in got] == [e["type"] for e in events]
        assert got[0].arguments == '{"a": 1, "b": 2}'
        connection.response.create()
        call.wait_for(lambda c: bool(c.of_type("response.create")))
    assert call.connections == 1 and call.sideband_authorization == [f"Bearer {KEY}"]
    client.realtime.calls.accept(call.call_id, type="realtime", model="gpt-realtime")
    client.realtime.calls.refer(call.call_id, target_uri="tel:+15550100")
    client.realtime.calls.hangup(call.call_id)
    assert call.ended and call.hangups == 1
    with pytest.raises(openai.NotFoundError):
        client.realtime.calls.hangup(call.call_id)
    paths = [r.path.removeprefix(f"/v1/realtime/calls/{call.call_id}") for r in fake.requests]
    assert paths == ["/v1/realtime/calls", "/accept", "/refer", "/hangup", "/hangup"]


def test_a_wrong_key_is_refused_on_calls_and_sideband(fake: FakeOpenAI) -> None:
    fake.reset()
    call = fake.open_call()
    with openai.OpenAI(api_key="sk-wrong", base_url=fake.base_url, max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            wrong.realtime.calls.hangup(call.call_id)
        with pytest.raises(Exception, match="403"), wrong.realtime.connect(call_id=call.call_id):
            pass
    assert call.connections == 0 and not call.ended


def test_scripted_answers_reach_the_client(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    fake.answer(Answer.json(429, {"error": {"message": "slow down"}}))
    with pytest.raises(openai.RateLimitError, match="slow down"):
        client.realtime.client_secrets.create()
    assert client.realtime.client_secrets.create().value == "ek_fake_2"


def test_the_mock_transport_answers_from_the_same_routes_without_a_socket() -> None:
    state = OpenAIState()
    base = "https://openai.invalid/v1"
    with MockUpstream(openai=state), openai.OpenAI(api_key=KEY, base_url=base) as client:
        secret = client.realtime.client_secrets.create(session={"type": "realtime"})
        assert isinstance(secret, ClientSecretCreateResponse) and secret.value == "ek_fake_1"
        created = client.realtime.calls.create(sdp="v=0\r\n", session={"type": "realtime"})
        assert created.text == ANSWER_SDP
        call = state.call()
        client.realtime.calls.hangup(call.call_id)
        assert call.ended
        state.answer(Answer.json(400, {"error": {"message": "no"}}))
        with pytest.raises(openai.BadRequestError):
            client.realtime.client_secrets.create()
    assert [r.path for r in state.requests][-1] == "/v1/realtime/client_secrets"
    assert len(state.requests) == 4
