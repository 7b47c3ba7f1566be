"""A short scripted turn, for trying navai without an OpenAI key (``--demo`` of the fake's
command, :mod:`fakes.__main__`).

Once a call's data channel is open (a browser, or any WebRTC client, is connected to the fake's
peer), the fake plays one turn on the call's sideband, as OpenAI would:

1. the caller's words: ``conversation.item.input_audio_transcription.completed``;
2. a call of one function: ``response.function_call_arguments.done`` and the ``response.done``
   that holds it (navai runs the function and sends its output, then ``response.create``);
3. on that ``response.create``: the assistant's words, which quote the function's result
   (``response.output_audio_transcript.done``), and their ``response.done``.

The fake's WebRTC peer mirrors every sideband event on the data channel (and each output navai
sends as ``conversation.item.added``), so the page sees the turn as well as navai.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fakes import shapes
from fakes.sideband import FakeCall

# What the demo says and calls by default: examples/functions/weather.py's get_weather.
USER = "What's the weather in Bogota?"
FUNCTION = "get_weather"
ARGUMENTS: dict[str, Any] = {"city": "Bogota"}
CALL_ID = "call_demo_1"
CHANNEL_WAIT = 120.0  # seconds a created call may take to open its data channel
USAGE = {
    "total_tokens": 420,
    "input_tokens": 300,
    "output_tokens": 120,
    "input_token_details": {"text_tokens": 180, "audio_tokens": 120, "cached_tokens": 0},
    "output_token_details": {"text_tokens": 40, "audio_tokens": 80},
}


@dataclass(frozen=True)
class Turn:
    """The scripted turn: what the caller says and which function the model calls."""

    user: str = USER
    function: str = FUNCTION
    arguments: str = json.dumps(ARGUMENTS)  # JSON text, as the model sends it
    pause: float = 1.0  # seconds between the steps, so a person can follow them


def user_said(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "event_id": shapes.event_id(),
        "item_id": "item_demo_user",
        "content_index": 0,
        "transcript": text,
    }


def assistant_said(text: str, response: str) -> dict[str, Any]:
    return {
        "type": "response.output_audio_transcript.done",
        "event_id": shapes.event_id(),
        "response_id": response,
        "item_id": "item_demo_assistant",
        "output_index": 0,
        "content_index": 0,
        "transcript": text,
    }


def answer_text(turn: Turn, output: str | None) -> str:
    """The assistant's words once the function's output (the execute envelope) is back."""
    if output is None:
        return f"I asked {turn.function}, but no answer came back."
    try:
        body = json.loads(output)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("ok") is True:
        return f"{turn.function} answered: {json.dumps(body.get('result'), ensure_ascii=False)}"
    detail = (body.get("details") or body.get("error")) if isinstance(body, dict) else output
    return f"{turn.function} failed: {detail}"


def attach(call: FakeCall, turn: Turn, say: Callable[[str], None]) -> asyncio.Task[None]:
    """Script ``call`` with ``turn`` (on the fake's running loop): the turn starts once the
    call's data channel opens; the returned task ends then, or when the call ends first."""

    def after_output(call: FakeCall, event: dict[str, Any]) -> list[Any]:
        if call.of_type("response.create")[:-1]:
            return []  # the turn answers the first response.create only
        outputs = [o for o in call.outputs() if o.get("call_id") == CALL_ID]
        output = str(outputs[0].get("output")) if outputs else None
        say(f"{call.call_id}: navai sent the output of {turn.function}: {output}")
        text = answer_text(turn, output)
        return [
            assistant_said(text, "resp_demo_2"),
            shapes.response_done("resp_demo_2", usage=USAGE),
        ]

    call.script["response.create"] = after_output
    return asyncio.get_running_loop().create_task(play(call, turn, say))


async def play(call: FakeCall, turn: Turn, say: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CHANNEL_WAIT
    while call.peer is None or not call.peer.channel_open.is_set():
        if call.ended or loop.time() > deadline:
            return
        await asyncio.sleep(0.05)
    say(f"{call.call_id}: data channel open; playing the demo turn")
    await asyncio.sleep(turn.pause)
    call.send(user_said(turn.user))
    await asyncio.sleep(turn.pause)
    say(f"{call.call_id}: the model calls {turn.function} {turn.arguments}")
    call.send(
        shapes.fn_call(CALL_ID, turn.function, turn.arguments, response="resp_demo_1"),
        shapes.response_done(
            "resp_demo_1", (CALL_ID, turn.function, json.loads(turn.arguments)), usage=USAGE
        ),
    )
