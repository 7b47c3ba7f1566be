"""The fake OpenAI on a loopback port: its HTTP API and its sideband WebSocket, one server,
one state (a test sees the calls it created over HTTP on the sideband, and every request).

    with FakeOpenAI() as fake:                     # or FakeOpenAI(key=KEY): calls want it
        config = NavaiConfig(openai_base_url=fake.base_url, ...)
        fake.behave(status=500, body=b'{"error": "boom"}')
        fake.answer(Answer(drop=True), Answer(200, body, trickle=0.05))
        call = fake.open_call(); call.send(fn_call("c1", "add", {"a": 1, "b": 2}))

Routes: :mod:`fakes.routes`; sideband: :mod:`fakes.sideband`; scripting: :mod:`fakes.state`.
Here only the serving: a raw ASGI app on uvicorn (whose WebSocket protocol is the
``websockets`` library's) in a daemon thread with its own event loop, which adds the parts a
socket has: a delay before the status line (a hang), a body trickled byte by byte, a
dropped connection. Delays and trickles end at ``stop()``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import uvicorn
from starlette.websockets import WebSocket

from fakes import live, routes, sideband
from fakes.state import OpenAIState


class _Server(uvicorn.Server):
    """uvicorn's server, stopped by an event rather than found stopped by its 0.1 s tick, and
    shut down without its fixed 0.1 s pauses: a test starts and stops a fake in milliseconds.
    The shutdown is uvicorn's own otherwise: connections are asked to close (a sideband gets
    its 1012 close frame) and waited for, within ``timeout_graceful_shutdown``, then any task
    left is cancelled."""

    def __init__(self, config: uvicorn.Config, fake: FakeOpenAI) -> None:
        super().__init__(config)
        self._fake = fake

    async def main_loop(self) -> None:
        assert self._fake._stopping is not None
        await self._fake._stopping.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_graceful_shutdown
        while (self.server_state.connections or self.server_state.tasks) and (
            loop.time() < deadline
        ):
            await asyncio.sleep(0.005)
        for task in self.server_state.tasks:
            task.cancel()
        for server in self.servers:
            await server.wait_closed()


class FakeOpenAI(OpenAIState):
    """The fake on a free loopback port; use as a context manager (or ``start``/``stop``)."""

    def __init__(self, *, key: str | None = None, webrtc: bool = False, port: int = 0) -> None:
        super().__init__(key=key)
        # Answer each WebRTC offer with a real loopback peer (fakes_webrtc): a browser's data
        # channel opens and audio flows, and the sideband's events are mirrored on it.
        self.webrtc = webrtc
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
        # without it a reply written in two parts (status line, then body) waits for the
        # client's delayed ACK, 40 ms on every request of a kept-alive connection.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", port))  # 0: a free port
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            http="httptools",
            ws="websockets-sansio",
            interface="asgi3",
            proxy_headers=False,
            lifespan="off",
            ws_ping_interval=None,
            timeout_graceful_shutdown=1,
        )
        self._server = _Server(config, self)
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-openai")

    @property
    def base_url(self) -> str:
        """What ``OPENAI_BASE_URL`` should be set to."""
        return f"http://127.0.0.1:{self.port}/v1"

    # ----- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._server.should_exit = True
        self._thread.join(10)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._loop.run_until_complete(self._server.serve(sockets=[self._sock]))

    def call(self, call_id: str | None = None, timeout: float = 10.0) -> Any:
        """The call (see :meth:`OpenAIState.call`); with ``webrtc=True``, once its peer is
        there (it is created before its answer is made)."""
        found = super().call(call_id, timeout)
        deadline = time.monotonic() + timeout
        while self.webrtc and found.peer is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"call {found.call_id} has no WebRTC peer")
            time.sleep(0.01)
        return found

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    # ----- serving -------------------------------------------------------------------------------

    async def _with_peer(self, reply: routes.Reply) -> routes.Reply:
        """A created call's answer from a real WebRTC peer instead of the canned SDP (a
        Realtime call's SDP body, or a Live session's ``transport.sdp``)."""
        location = reply.headers.get("Location", "")
        call = self.calls.get(location.rsplit("/", 1)[-1]) if reply.status == 201 else None
        created: Any = None
        if call is None and reply.status == 200 and reply.body.startswith(b'{"session"'):
            created = json.loads(reply.body)
            call = self.calls.get(created["session"]["id"])
        if call is None:
            return reply
        from fakes_webrtc import answer as webrtc_answer

        # Seen by tests only once its peer is there (as OpenAI's call exists with its answer).
        del self.calls[call.call_id]
        call.peer = await webrtc_answer(call.sdp)
        self.calls[call.call_id] = call
        if created is not None:
            created["transport"]["sdp"] = call.peer.sdp
            return routes.Reply(200, json.dumps(created).encode(), reply.headers)
        return routes.Reply(201, call.peer.sdp.encode(), reply.headers)

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            attach = live.ATTACH_PATH.match(scope["path"])
            if scope["path"] == routes.SIDEBAND_PATH:
                await sideband.serve(self, WebSocket(scope, receive, send))
            elif attach is not None:
                await sideband.serve(self, WebSocket(scope, receive, send), attach["call_id"])
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            path += "?" + scope["query_string"].decode("latin-1")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        recorded = self.record(scope["method"], path, headers, body)
        behaviour = self.behaviour_for(recorded)
        if behaviour.drop:
            cycle = send.__self__  # uvicorn's request cycle: close without a status line
            cycle.transport.abort()
            cycle.disconnected = True
            return
        if behaviour.delay and await self._stopped_within(behaviour.delay):
            return
        reply = behaviour.reply(self, recorded)
        if self.webrtc:
            reply = await self._with_peer(reply)
        out = [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
        out.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": out})
        if not behaviour.trickle:
            await send({"type": "http.response.body", "body": reply.body})
            return
        for i in range(len(reply.body)):
            await send(
                {"type": "http.response.body", "body": reply.body[i : i + 1], "more_body": True}
            )
            if await self._stopped_within(behaviour.trickle):
                return
        await send({"type": "http.response.body", "body": b""})

    async def _stopped_within(self, seconds: float) -> bool:
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True
