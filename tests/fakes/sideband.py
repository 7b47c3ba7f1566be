"""The sideband: a call's control WebSocket, ``/v1/realtime?call_id=<id>`` (Realtime) or
``/v1/live/sessions/<id>/attach`` (GPT-Live; :meth:`FakeCall.close` is OpenAI closing the
session: ``session.closed``, then a normal close).

It checks the ``Authorization`` header, plays the server events a test queues with
:meth:`FakeCall.send` and records every event navai sends. A call that ended (or an unknown
one, or a wrong key) refuses the connection: the handshake answers 403. :meth:`FakeCall.drop`
breaks the connection without ending the call; :meth:`FakeCall.end` is the caller hanging up
(close code 1000).

Scripted replies: :data:`SCRIPTS` maps a client event type to a function that returns the
server events to send back (a call's own ``script`` adds to or replaces them). The fake
answers nothing by itself today; a new runtime's events go here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

if TYPE_CHECKING:
    from fakes.state import OpenAIState

Script = Callable[["FakeCall", dict[str, Any]], list[Any]]
SCRIPTS: dict[str, Script] = {}


@dataclass
class FakeCall:
    """One call the fake created; what the sideband received and how it behaves."""

    call_id: str
    sdp: str
    session: dict[str, Any]
    authorization: str
    fake: OpenAIState = field(repr=False)
    runtime: str = "realtime"  # or "live": a GPT-Live session
    ended: bool = False
    hangups: int = 0
    connections: int = 0
    sideband_authorization: list[str] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    # Live phone calls: the bodies of /accept, /reject and /refer.
    accepted: list[Any] = field(default_factory=list)
    rejected: list[Any] = field(default_factory=list)
    referred: list[Any] = field(default_factory=list)
    script: dict[str, Script] = field(default_factory=dict, repr=False)
    # Turnaround bookkeeping: when a function call was sent, when its output came back.
    sent_at: dict[str, float] = field(default_factory=dict)
    output_at: dict[str, float] = field(default_factory=dict)
    peer: Any = field(default=None, repr=False)  # fakes_webrtc.WebRTCPeer with webrtc=True
    _outbox: asyncio.Queue[Any] | None = field(default=None, repr=False)
    _pending: list[Any] = field(default_factory=list, repr=False)

    # ----- driving the call (from any thread) -------------------------------------------------

    def send(self, *events: Any) -> None:
        """Queue server events (dicts, or raw text for garbage) for the sideband."""
        for event in events:
            self.fake.call_soon(self._put, event)

    def drop(self) -> None:
        """Break the control connection abnormally; the call goes on."""
        self.fake.call_soon(self._put, _DROP)

    def end(self) -> None:
        """The caller hangs up: the sideband closes normally and the call is over."""
        self.ended = True
        self.fake.call_soon(self._put, _END)
        if self.peer is not None:
            self.peer.close()

    def close(self, reason: str = "remote_hangup", seconds: float = 1) -> None:
        """OpenAI ends a Live session: ``session.closed``, then the socket closes normally."""
        from fakes.live import session_closed

        self.ended = True
        self.send(session_closed(self.call_id, reason, seconds, self.session))
        self.fake.call_soon(self._put, _END)
        if self.peer is not None:
            self.peer.close()

    def wait_for(self, predicate: Callable[[FakeCall], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting on {self.call_id}: {self.received!r}")
            time.sleep(0.01)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.received) if e.get("type") == kind]

    def outputs(self) -> list[dict[str, Any]]:
        """The function outputs navai sent (``conversation.item.create`` on Realtime,
        ``response.item.create`` on Live)."""
        kind = "response.item.create" if self.runtime == "live" else "conversation.item.create"
        return [
            e["item"]
            for e in self.of_type(kind)
            if e.get("item", {}).get("type") == "function_call_output"
        ]

    def output_of(self, call_id: str) -> dict[str, Any]:
        found = [json.loads(o["output"]) for o in self.outputs() if o["call_id"] == call_id]
        assert len(found) == 1, found
        return found[0]

    # ----- inside the fake's loop -----------------------------------------------------------------

    def _put(self, event: Any) -> None:
        if self._outbox is None:
            self._pending.append(event)
        else:
            self._outbox.put_nowait(event)

    def _heard(self, event: dict[str, Any]) -> None:
        item = event.get("item") or {}
        if item.get("type") == "function_call_output":
            self.output_at[item.get("call_id")] = time.perf_counter()
        self.received.append(event)
        if self.peer is not None:
            self.peer.mirror_client_event(event)
        reply = self.script.get(str(event.get("type"))) or SCRIPTS.get(str(event.get("type")))
        if reply is not None:
            for answer in reply(self, event):
                self._put(answer)


_DROP = object()
_END = object()


async def serve(state: OpenAIState, websocket: WebSocket, live_id: str | None = None) -> None:
    """One sideband connection, in the fake server's loop (``live_id``: a Live session's
    ``/attach``)."""
    call_id = websocket.query_params.get("call_id", "") if live_id is None else live_id
    call = state.calls.get(call_id)
    auth = websocket.headers.get("authorization", "")
    runtime = "realtime" if live_id is None else "live"
    refused = call is None or call.ended or call.runtime != runtime
    if refused or not state.authorized(websocket.headers):
        await websocket.close(code=1008)  # before accept: the handshake answers 403
        return
    call.sideband_authorization.append(auth)
    await websocket.accept()
    call.connections += 1
    state._open += 1
    outbox: asyncio.Queue[Any] = asyncio.Queue()
    for event in call._pending:
        outbox.put_nowait(event)
    call._pending.clear()
    call._outbox = outbox
    reader = asyncio.ensure_future(_read(websocket, call))
    try:
        while True:
            getter = asyncio.ensure_future(outbox.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                getter.cancel()
                break
            event = getter.result()
            if event is _DROP:
                await websocket.close(code=1011)
                break
            if event is _END:
                await websocket.close(code=1000)
                break
            if isinstance(event, dict):
                if event.get("type") == "response.function_call_arguments.done":
                    call.sent_at[str(event.get("call_id"))] = time.perf_counter()
                elif (item := _live_call_item(event)) is not None:
                    call.sent_at[str(item.get("call_id"))] = time.perf_counter()
                await websocket.send_text(json.dumps(event))
                if call.peer is not None:
                    call.peer.mirror_server_event(event)
            else:
                await websocket.send_text(str(event))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        reader.cancel()
        if call._outbox is outbox:
            call._outbox = None
        state._open -= 1


def _live_call_item(event: dict[str, Any]) -> dict[str, Any] | None:
    """The function call a Live ``response.event`` carries, if any."""
    if event.get("type") != "response.event":
        return None
    nested = event.get("event") or {}
    item = nested.get("item") or {}
    if nested.get("type") == "response.output_item.done" and item.get("type") == "function_call":
        return item  # type: ignore[no-any-return]
    return None


async def _read(websocket: WebSocket, call: FakeCall) -> None:
    try:
        while True:
            call._heard(json.loads(await websocket.receive_text()))
    except (WebSocketDisconnect, RuntimeError, KeyError):
        return
