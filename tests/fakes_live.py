"""A recording, scriptable fake of OpenAI's GPT-Live surface on 127.0.0.1, for tests.

HTTP (``/v1`` is the base path: point ``OPENAI_BASE_URL``, or ``openai.OpenAI(base_url=...)``,
at :attr:`FakeLive.base_url`):

- ``POST /v1/live/sessions`` takes JSON ``{"session": {...}, "transport": {"type": "webrtc",
  "sdp"}}`` (strictly: nothing else, a ``model`` in the session) and answers 200 ``{"session":
  {"id": "live_..."}, "transport": {"type": "webrtc", "sdp": <answer>}}``;
- ``POST /v1/live/sessions/<id>/accept`` (``{"session": {"type": "live", "model", ...}}``),
  ``/reject`` (``{"status_code"}``), ``/refer`` (``{"target_uri"}``) and ``/hangup`` (no
  body) answer 200 and are recorded; a hangup or reject ends the session.

The routes table :attr:`FakeLive.replies` scripts another answer for one of these actions
(``"create"``, ``"accept"``, ``"reject"``, ``"refer"``, ``"hangup"``): ``fake.replies["create"]
= Reply(500, {"error": {...}})``.

WebSocket ``/v1/live/sessions/<id>/attach``: the session's sideband. It checks the
``Authorization`` header, plays the server events a test scripts with
:meth:`FakeLiveSession.script` (builders below: :func:`function_call`,
:func:`response_completed`, :func:`session_closed`, ...) and records every client event it
receives. :meth:`FakeLiveSession.close` is OpenAI ending the session: ``session.closed``, then a
normal close. :func:`live_transport_incoming` and :func:`live_call_incoming` build the webhook
bodies of a phone call.

Every shape here is checked against openai-python's own Live client and types
(tests/test_live_fake.py). Starlette on uvicorn in a daemon thread; every method is
thread-safe. Self-contained: it shares nothing with the Realtime fakes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

ANSWER_SDP = "v=0\r\no=- 4343 2 IN IP4 127.0.0.1\r\ns=fake live answer\r\n"
ACTIONS = ("accept", "reject", "refer", "hangup")
_ids = itertools.count(1)


def _event_id() -> str:
    return f"event_fake{next(_ids)}"


@dataclass(frozen=True)
class Reply:
    """A scripted HTTP answer: a status and a JSON value (or raw bytes)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        if isinstance(self.body, bytes):
            return Response(self.body, self.status, headers=self.headers)
        if self.body is None:
            return Response(b"", self.status, headers=self.headers)
        return JSONResponse(self.body, self.status, headers=self.headers)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class FakeLiveSession:
    """One Live session: created over HTTP, or pending (a phone call) until accepted."""

    session_id: str
    config: dict[str, Any]
    fake: FakeLive = field(repr=False)
    sdp: str = ""
    authorization: str = ""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    referred: list[dict[str, Any]] = field(default_factory=list)
    hangups: int = 0
    ended: bool = False
    connections: int = 0
    sideband_authorization: list[str] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    _outbox: asyncio.Queue[Any] | None = field(default=None, repr=False)
    _pending: list[Any] = field(default_factory=list, repr=False)

    # ----- the sideband script (from any thread) -----------------------------------------------

    def script(self, *events: Any) -> None:
        """Queue server events (dicts, or raw text for garbage) for the sideband."""
        for event in events:
            self.fake._call_soon(self._put, event)

    def close(self, reason: str = "remote_hangup", seconds: float = 1) -> None:
        """OpenAI ends the session: ``session.closed``, then the socket closes normally."""
        self.ended = True
        self.script(session_closed(self.session_id, reason, seconds, self.config))
        self.fake._call_soon(self._put, _END)

    def drop(self) -> None:
        """Break the sideband abnormally; the session goes on."""
        self.fake._call_soon(self._put, _DROP)

    def wait_for(self, predicate: Callable[[FakeLiveSession], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out on {self.session_id}: {self.received!r}")
            time.sleep(0.01)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.received) if e.get("type") == kind]

    def outputs(self) -> list[dict[str, Any]]:
        return [
            e["item"]
            for e in self.of_type("response.item.create")
            if e.get("item", {}).get("type") == "function_call_output"
        ]

    def output_of(self, call_id: str) -> Any:
        found = [json.loads(o["output"]) for o in self.outputs() if o["call_id"] == call_id]
        assert len(found) == 1, found
        return found[0]

    def _put(self, event: Any) -> None:
        if self._outbox is None:
            self._pending.append(event)
        else:
            self._outbox.put_nowait(event)


_DROP = object()
_END = object()


class FakeLive:
    """The fake on a free loopback port; use as a context manager."""

    def __init__(self, *, key: str | None = None) -> None:
        self.key = key  # when set, every request must carry Bearer <key>
        self.sessions: dict[str, FakeLiveSession] = {}
        self.requests: list[Recorded] = []
        self.replies: dict[str, Reply] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        app = Starlette(
            routes=[
                Route("/v1/live/sessions", self._create, methods=["POST"]),
                Route("/v1/live/sessions/{session_id}/{action}", self._control, methods=["POST"]),
                WebSocketRoute("/v1/live/sessions/{session_id}/attach", self._sideband),
            ]
        )
        config = uvicorn.Config(
            app, log_level="warning", ws="websockets-sansio", lifespan="off", ws_ping_interval=None
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-live")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeLive:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake Live server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._server.serve(sockets=[self._sock]))

    def _call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    def session(self, session_id: str | None = None, timeout: float = 10) -> FakeLiveSession:
        """The session with ``session_id``, or the only one there is (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            if session_id is not None and session_id in self.sessions:
                return self.sessions[session_id]
            if session_id is None and len(self.sessions) == 1:
                return next(iter(self.sessions.values()))
            if time.monotonic() > deadline:
                raise AssertionError(f"no such session {session_id!r}: {list(self.sessions)}")
            time.sleep(0.01)

    def pending_call(self, session_id: str | None = None) -> FakeLiveSession:
        """A phone call OpenAI holds for acceptance (announce it with
        :func:`live_transport_incoming`)."""
        sid = session_id or f"live_fake{next(_ids)}"
        self.sessions[sid] = FakeLiveSession(sid, {}, self)
        return self.sessions[sid]

    # ----- HTTP ---------------------------------------------------------------------------------

    def _authorized(self, headers: Any) -> bool:
        return self.key is None or headers.get("authorization") == f"Bearer {self.key}"

    async def _record(self, request: Request) -> Recorded:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        recorded = Recorded("POST", request.url.path, headers, body)
        self.requests.append(recorded)
        return recorded

    async def _create(self, request: Request) -> Response:
        recorded = await self._record(request)
        if not self._authorized(recorded.headers):
            return JSONResponse({"error": {"message": "bad key"}}, 401)
        if (scripted := self.replies.get("create")) is not None:
            return scripted.response()
        try:
            assert recorded.headers.get("content-type", "").startswith("application/json")
            body = json.loads(recorded.body)
            assert isinstance(body, dict) and set(body) == {"session", "transport"}, body
            transport, session = body["transport"], body["session"]
            assert transport.get("type") == "webrtc" and isinstance(transport.get("sdp"), str)
            assert set(transport) == {"type", "sdp"}, transport
            assert isinstance(session, dict) and isinstance(session.get("model"), str)
        except (AssertionError, ValueError, AttributeError) as exc:
            return JSONResponse({"error": {"message": f"bad request: {exc!r}"}}, 400)
        sid = f"live_fake{next(_ids)}"
        self.sessions[sid] = FakeLiveSession(
            sid, session, self, transport["sdp"], recorded.headers.get("authorization", "")
        )
        return JSONResponse(
            {"session": {"id": sid}, "transport": {"type": "webrtc", "sdp": ANSWER_SDP}}
        )

    async def _control(self, request: Request) -> Response:
        recorded = await self._record(request)
        action = request.path_params["action"]
        if action not in ACTIONS:
            return JSONResponse({"error": {"message": "no such action"}}, 404)
        if not self._authorized(recorded.headers):
            return JSONResponse({"error": {"message": "bad key"}}, 401)
        if (scripted := self.replies.get(action)) is not None:
            return scripted.response()
        live = self.sessions.get(request.path_params["session_id"])
        if live is None or live.ended:
            return JSONResponse({"error": {"message": "session not found"}}, 404)
        try:
            body = recorded.json()
        except ValueError:
            return JSONResponse({"error": {"message": "not JSON"}}, 400)
        if action == "hangup":
            live.hangups += 1
            live.close("close_requested")
        elif action == "accept":
            session = body.get("session") if isinstance(body, dict) else None
            if not (isinstance(session, dict) and session.get("type") == "live"):
                return JSONResponse({"error": {"message": "session.type must be live"}}, 400)
            if "client" in session or not isinstance(session.get("model"), str):
                return JSONResponse({"error": {"message": "bad session"}}, 400)
            live.accepted.append(body)
            live.config = {k: v for k, v in session.items() if k != "type"}
        elif action == "reject":
            live.rejected.append(body)
            live.ended = True
        else:
            live.referred.append(body)
        return Response(b"", 200)

    # ----- the sideband ---------------------------------------------------------------------------

    async def _sideband(self, websocket: WebSocket) -> None:
        live = self.sessions.get(websocket.path_params["session_id"])
        if live is None or live.ended or not self._authorized(websocket.headers):
            await websocket.close(code=1008)  # before accept: the handshake answers 403
            return
        live.sideband_authorization.append(websocket.headers.get("authorization", ""))
        await websocket.accept()
        live.connections += 1
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        for event in live._pending:
            outbox.put_nowait(event)
        live._pending.clear()
        live._outbox = outbox
        reader = asyncio.ensure_future(self._read(websocket, live))
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
                await websocket.send_text(json.dumps(event) if isinstance(event, dict) else event)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            reader.cancel()
            if live._outbox is outbox:
                live._outbox = None

    async def _read(self, websocket: WebSocket, live: FakeLiveSession) -> None:
        try:
            while True:
                live.received.append(json.loads(await websocket.receive_text()))
        except (WebSocketDisconnect, RuntimeError, ValueError):
            return


# ----- server events ---------------------------------------------------------------------------


def response_event(nested: dict[str, Any], delegation: str | None = "del_1") -> dict[str, Any]:
    """A nested Responses streaming event as Live sends it on the sideband."""
    event: dict[str, Any] = {"type": "response.event", "event_id": _event_id(), "event": nested}
    if delegation is not None:
        event["delegation_id"] = delegation
    return event


def function_call(
    call_id: str,
    name: str,
    arguments: dict[str, Any] | str,
    delegation: str | None = "del_1",
    output_index: int = 0,
) -> dict[str, Any]:
    """The backend model called a function: ``response.output_item.done`` with the item."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    item = {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": text,
        "status": "completed",
    }
    nested = {
        "type": "response.output_item.done",
        "item": item,
        "output_index": output_index,
        "sequence_number": next(_ids),
    }
    return response_event(nested, delegation)


def _response(response_id: str, status: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    # A lifecycle snapshot: Live clears output, instructions and tools to keep it small.
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": 1_800_000_000,
        "model": "gpt-5.6-terra",
        "status": status,
        "output": [],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    if usage is not None:
        response["usage"] = usage
    return response


def usage(input_tokens: int = 10, output_tokens: int = 5) -> dict[str, Any]:
    """A Responses token usage."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def response_created(response_id: str, delegation: str | None = "del_1") -> dict[str, Any]:
    nested = {
        "type": "response.created",
        "response": _response(response_id, "in_progress", None),
        "sequence_number": next(_ids),
    }
    return response_event(nested, delegation)


def response_ended(
    response_id: str,
    status: str = "completed",
    delegation: str | None = "del_1",
    tokens: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``response.completed``, ``response.failed`` or ``response.incomplete`` (by status)."""
    snapshot = _response(response_id, status, tokens)
    if status == "failed":
        snapshot["error"] = {"code": "server_error", "message": "The backend failed."}
    if status == "incomplete":
        snapshot["incomplete_details"] = {"reason": "max_output_tokens"}
    nested = {"type": f"response.{status}", "response": snapshot, "sequence_number": next(_ids)}
    return response_event(nested, delegation)


def response_completed(
    response_id: str, delegation: str | None = "del_1", tokens: dict[str, Any] | None = None
) -> dict[str, Any]:
    return response_ended(response_id, "completed", delegation, tokens or usage())


def usage_updated(seconds: float) -> dict[str, Any]:
    return {"type": "session.usage.updated", "event_id": _event_id(), "usage": {"seconds": seconds}}


def session_closed(
    session_id: str,
    reason: str = "remote_hangup",
    seconds: float = 1,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    snapshot = {
        "id": session_id,
        "expires_at": 1_800_003_600,
        "model": (config or {}).get("model", "gpt-live-1.1"),
        "status": "active",
    }
    return {
        "type": "session.closed",
        "event_id": _event_id(),
        "reason": reason,
        "session": snapshot,
        "usage": {"seconds": seconds},
    }


def transcript_delta(text: str, who: str = "output", start_ms: int = 0) -> dict[str, Any]:
    return {
        "type": f"session.{who}_transcript.delta",
        "event_id": _event_id(),
        "delta": text,
        "start_ms": start_ms,
        "end_ms": start_ms + 100,
    }


# ----- webhook bodies --------------------------------------------------------------------------


def _sip_headers(caller: str) -> list[dict[str, str]]:
    return [
        {"name": "From", "value": f'"Caller" <sip:{caller}@trunk.example>;tag=1'},
        {"name": "To", "value": "<sip:+15550001111@sip.api.openai.com>"},
        {"name": "Call-ID", "value": "abc@trunk.example"},
    ]


def live_transport_incoming(session_id: str, caller: str = "+14155550100") -> dict[str, Any]:
    """The ``live.transport.incoming`` webhook event of a pending phone call."""
    return {
        "id": f"evt_{next(_ids)}",
        "object": "event",
        "created_at": 1_800_000_000,
        "type": "live.transport.incoming",
        "data": {"session_id": session_id, "type": "sip", "sip_headers": _sip_headers(caller)},
    }


def live_call_incoming(session_id: str, caller: str = "+14155550100") -> dict[str, Any]:
    """The deprecated ``live.call.incoming`` twin (no ``data.type``)."""
    return {
        "id": f"evt_{next(_ids)}",
        "object": "event",
        "created_at": 1_800_000_000,
        "type": "live.call.incoming",
        "data": {"session_id": session_id, "sip_headers": _sip_headers(caller)},
    }
