"""A recording fake of OpenAI's Realtime call endpoints on 127.0.0.1, for tests and benchmarks.

HTTP (``/v1`` is the base path, so point ``OPENAI_BASE_URL`` at :attr:`FakeRealtime.base_url`):

- ``POST /v1/realtime/calls`` checks the multipart body strictly (an ``sdp`` part of type
  ``application/sdp`` and a ``session`` part of type ``application/json``, nothing else) and
  answers 201 with an SDP answer and ``Location: /v1/realtime/calls/<id>``;
- ``POST /v1/realtime/calls/<id>/hangup`` ends a call (200; unknown id 404);
  ``/accept``, ``/reject`` and ``/refer`` are recorded and answer 200 too (phone calls).

WebSocket ``/v1/realtime?call_id=<id>``: the call's control connection ("sideband"). It
checks the ``Authorization`` header, plays the server events a test queues with
:meth:`FakeCall.send` and records every event navai sends. A call that ended refuses new
connections (HTTP 404 on the handshake). :meth:`FakeCall.drop` breaks the connection without
ending the call; :meth:`FakeCall.end` is the caller hanging up (close code 1000).

``FakeRealtime(webrtc=True)`` answers each offer with a real WebRTC peer on loopback
(:mod:`fakes_webrtc`, ``FakeCall.peer``): a browser's data channel opens and audio flows, and
the sideband's events are mirrored on the data channel as OpenAI does.

The server is Starlette on uvicorn, whose WebSocket protocol is the ``websockets`` library's,
in a daemon thread with its own event loop. Every method is thread-safe.
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
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

ANSWER_SDP = "v=0\r\no=- 4242 2 IN IP4 127.0.0.1\r\ns=fake answer\r\n"


@dataclass
class FakeCall:
    """One call the fake created; what the sideband received and how it behaves."""

    call_id: str
    sdp: str
    session: dict[str, Any]
    authorization: str
    fake: FakeRealtime = field(repr=False)
    ended: bool = False
    hangups: int = 0
    connections: int = 0
    sideband_authorization: list[str] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
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
            self.fake._call_soon(self._put, event)

    def drop(self) -> None:
        """Break the control connection abnormally; the call goes on."""
        self.fake._call_soon(self._put, _DROP)

    def end(self) -> None:
        """The caller hangs up: the sideband closes normally and the call is over."""
        self.ended = True
        self.fake._call_soon(self._put, _END)
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
        return [
            e["item"]
            for e in self.of_type("conversation.item.create")
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


_DROP = object()
_END = object()


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeRealtime:
    """The fake on a free loopback port; use as a context manager."""

    def __init__(self, *, key: str | None = None, webrtc: bool = False) -> None:
        self.key = key  # when set, requests must carry Bearer <key>
        self.webrtc = webrtc  # answer offers with a real loopback WebRTC peer (fakes_webrtc)
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[Recorded] = []
        self.create_status: int | None = None  # answer POST /realtime/calls with this instead
        self.create_headers: dict[str, str] | None = None
        self.create_body: bytes | None = None
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        app = Starlette(
            routes=[
                Route("/v1/realtime/calls", self._create, methods=["POST"]),
                Route("/v1/realtime/calls/{call_id}/{action}", self._control, methods=["POST"]),
                WebSocketRoute("/v1/realtime", self._sideband),
            ]
        )
        config = uvicorn.Config(
            app, log_level="warning", ws="websockets-sansio", lifespan="off", ws_ping_interval=None
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-realtime")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeRealtime:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake Realtime server did not start")
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

    def reset(self) -> None:
        self.calls.clear()
        self.requests.clear()
        self.create_status = self.create_headers = self.create_body = None

    def call(self, call_id: str | None = None, timeout: float = 10.0) -> FakeCall:
        """The call with ``call_id``, or the only one there is (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            calls = list(self.calls.values())
            if call_id is not None and call_id in self.calls:
                return self.calls[call_id]
            if call_id is None and len(calls) == 1:
                return calls[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no such call {call_id!r}: {list(self.calls)}")
            time.sleep(0.01)

    def open_call(self, session: dict[str, Any] | None = None) -> FakeCall:
        """A call as if created over HTTP (tests of the sideband alone)."""
        call_id = f"rtc_fake{next(self._ids)}"
        call = FakeCall(call_id, "v=0", session or {}, f"Bearer {self.key}", self)
        self.calls[call_id] = call
        return call

    def live_sidebands(self) -> int:
        return self._open

    _open = 0

    # ----- HTTP ---------------------------------------------------------------------------------

    def _authorized(self, headers: Any) -> bool:
        return self.key is None or headers.get("authorization") == f"Bearer {self.key}"

    async def _create(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Recorded("POST", request.url.path, headers, body))
        if not self._authorized(headers):
            return JSONResponse({"error": {"message": "bad key"}}, 401)
        if self.create_status is not None:
            return Response(
                self.create_body or b"", self.create_status, headers=self.create_headers
            )
        try:
            parts = parse_multipart(headers.get("content-type", ""), body)
            sdp_type, sdp = parts.pop("sdp")
            session_type, session = parts.pop("session")
            assert sdp_type == "application/sdp" and session_type == "application/json"
            assert not parts, f"unexpected parts {sorted(parts)}"
            assert headers.get("accept") == "application/sdp"
            session_value = json.loads(session)
        except (AssertionError, KeyError, ValueError) as exc:
            return JSONResponse({"error": {"message": f"bad multipart: {exc}"}}, 400)
        call_id = f"rtc_fake{next(self._ids)}"
        authorization = headers.get("authorization", "")
        call = FakeCall(call_id, sdp.decode(), session_value, authorization, self)
        answer = ANSWER_SDP
        if self.webrtc:
            from fakes_webrtc import answer as webrtc_answer

            call.peer = await webrtc_answer(call.sdp)
            answer = call.peer.sdp
        self.calls[call_id] = call
        headers_out = {"Location": f"/v1/realtime/calls/{call_id}"}
        if self.create_headers is not None:
            headers_out = self.create_headers
        return Response(answer, 201, headers=headers_out, media_type="application/sdp")

    async def _control(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Recorded("POST", request.url.path, headers, body))
        call = self.calls.get(request.path_params["call_id"])
        action = request.path_params["action"]
        if action not in ("hangup", "accept", "reject", "refer"):
            return JSONResponse({"error": {"message": "no such action"}}, 404)
        if not self._authorized(headers):
            return JSONResponse({"error": {"message": "bad key"}}, 401)
        if call is None or call.ended:
            return JSONResponse({"error": {"message": "call not found"}}, 404)
        if action in ("hangup", "reject"):
            call.hangups += 1
            call.end()
        return PlainTextResponse("", 200)

    # ----- the sideband ---------------------------------------------------------------------------

    async def _sideband(self, websocket: WebSocket) -> None:
        call = self.calls.get(websocket.query_params.get("call_id", ""))
        auth = websocket.headers.get("authorization", "")
        if call is None or call.ended or not self._authorized(websocket.headers):
            await websocket.close(code=1008)  # before accept: the handshake answers 403
            return
        call.sideband_authorization.append(auth)
        await websocket.accept()
        call.connections += 1
        FakeRealtime._open += 1
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        for event in call._pending:
            outbox.put_nowait(event)
        call._pending.clear()
        call._outbox = outbox
        reader = asyncio.ensure_future(self._read(websocket, call))
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
            FakeRealtime._open -= 1

    async def _read(self, websocket: WebSocket, call: FakeCall) -> None:
        try:
            while True:
                text = await websocket.receive_text()
                event = json.loads(text)
                item = event.get("item") or {}
                if item.get("type") == "function_call_output":
                    call.output_at[item.get("call_id")] = time.perf_counter()
                call.received.append(event)
                if call.peer is not None and isinstance(event, dict):
                    call.peer.mirror_client_event(event)
        except (WebSocketDisconnect, RuntimeError, KeyError):
            return


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str, bytes]]:
    """Parse ``multipart/form-data`` strictly: name -> (content type, bytes)."""
    kind, _, params = content_type.partition(";")
    assert kind.strip() == "multipart/form-data", content_type
    boundary = params.strip().removeprefix("boundary=").strip('"')
    assert boundary, "no boundary"
    marker = f"--{boundary}".encode()
    assert body.startswith(marker + b"\r\n") and body.endswith(marker + b"--\r\n"), "framing"
    found: dict[str, tuple[str, bytes]] = {}
    for chunk in body[: -len(marker) - 4].split(marker + b"\r\n")[1:]:
        assert chunk.endswith(b"\r\n"), "part end"
        head, sep, data = chunk[:-2].partition(b"\r\n\r\n")
        assert sep, "part head"
        fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        disposition = fields["Content-Disposition"]
        assert disposition.startswith('form-data; name="'), disposition
        name = disposition.split('name="', 1)[1].split('"', 1)[0]
        assert name not in found, f"duplicate part {name}"
        found[name] = (fields["Content-Type"], data)
    return found


def fn_call(call_id: str, name: str, arguments: dict[str, Any], response: str = "resp_1") -> dict:
    """The server event of a function call whose arguments are complete."""
    return {
        "type": "response.function_call_arguments.done",
        "response_id": response,
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(arguments),
    }
