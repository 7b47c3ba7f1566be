# ruff: noqa: F811  (the call fixtures of test_record_calls.py are used by name)
"""A call's events stream, ``GET <calls path>/<call_id>/events`` (CONTRACT section 14), on
real ``navai serve`` processes (ASGI and --wsgi) holding real calls on the fake: transcript,
tool, cost and end in order, several watchers, a watcher that never reads, unknown calls and
other keys; and in process, the pings and the disconnection of a watcher that falls behind."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import httpx2
import pytest
from conftest import SERVER_KEY
from fakes import FakeOpenAI, fn_call, response_done
from test_record_calls import (  # noqa: F401  (fixtures)
    ASSISTANT_SAID,
    COST,
    USAGE,
    USER_SAID,
    Served,
    check_record,
    fake_realtime,
    provider,
    served_all,
    spoken_call,
    start_call,
)

from navai_core import RequestContext

SERVERS = ("asgi-server", "wsgi-server")


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, served_all: dict[str, Served], fake_realtime) -> Served:
    fake_realtime.reset()
    return served_all[request.param]


class Watcher:
    """Reads a call's events stream in a thread: ``(event, data)`` pairs and comments."""

    def __init__(self, base_url: str, call_id: str, headers: dict[str, str] | None = None):
        self.events: list[tuple[str, Any]] = []
        self.comments: list[str] = []
        self.status: int | None = None
        self.content_type = ""
        self.opened = threading.Event()
        self.closed = threading.Event()
        self._url = f"{base_url}/navai/realtime/calls/{call_id}/events"
        self._headers = headers or {}
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.opened.wait(10), "the stream did not open"

    def _read(self) -> None:
        try:
            with (
                httpx2.Client(timeout=30) as http,
                http.stream("GET", self._url, headers=self._headers) as reply,
            ):
                self.status = reply.status_code
                self.content_type = reply.headers.get("content-type", "")
                self.opened.set()
                kind = None
                for line in reply.iter_lines():
                    if line.startswith(":"):
                        self.comments.append(line)
                    elif line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        self.events.append((kind or "message", json.loads(line[6:])))
        finally:
            self.opened.set()
            self.closed.set()

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.kinds().count(kind) < count:
            assert time.monotonic() < deadline, f"no {kind}: {self.events}"
            time.sleep(0.01)


def test_a_watcher_reads_transcript_tool_cost_and_end_in_order(
    server: Served, fake_realtime: FakeOpenAI
) -> None:
    call_id = start_call(server)
    watcher = Watcher(str(server.http.base_url), call_id)
    assert watcher.status == 200
    assert watcher.content_type.startswith("text/event-stream")
    second = Watcher(str(server.http.base_url), call_id)
    call = spoken_call(fake_realtime, call_id)
    watcher.wait_for("transcript", 2)
    call.end()
    assert watcher.closed.wait(10) and second.closed.wait(10)
    kinds = watcher.kinds()
    # The caller's turn, the response's cost and its two tools (which end when they end),
    # the answer, the record.
    assert kinds[0] == "transcript" and kinds[-2:] == ["transcript", "end"]
    assert sorted(kinds[1:-2]) == ["cost", "tool", "tool"]
    said = [data for kind, data in watcher.events if kind == "transcript"]
    assert [(t["role"], t["text"]) for t in said] == [
        ("user", USER_SAID),
        ("assistant", ASSISTANT_SAID),
    ]
    tools = sorted((data for kind, data in watcher.events if kind == "tool"), key=str)
    assert {(t["call_id"], t["name"], t["ok"], t["error"]) for t in tools} == {
        ("c1", "add", True, None),
        ("c2", "city", False, "City not found"),
    }
    assert all(set(t) == {"call_id", "name", "ok", "error", "ms"} for t in tools)
    cost = next(data for kind, data in watcher.events if kind == "cost")
    assert cost == {"cost_usd": pytest.approx(COST), "usage": USAGE}
    end = watcher.events[-1][1]
    check_record(end, call_id)
    assert end == server.record_of(call_id)  # the very record of the call log
    assert watcher.comments[0] == f": navai call {call_id}"
    # The second watcher saw the same events.
    assert second.events == watcher.events
    # Once the call ended, its stream is gone.
    gone = server.http.get(f"/navai/realtime/calls/{call_id}/events")
    assert gone.status_code == 404 and gone.json() == {"error": "Unknown call."}


def test_unknown_calls_and_other_keys_get_404(server: Served, fake_realtime) -> None:
    unknown = server.http.get("/navai/realtime/calls/rtc_unknown123/events")
    assert unknown.status_code == 404 and unknown.json() == {"error": "Unknown call."}
    call_id = start_call(server)
    # Another rate-limit key (the client's address: navai serve takes X-Forwarded-For from
    # no one, so another key is another address on the loopback).
    _, port = str(server.http.base_url).rsplit("//", 1)[1].split(":")
    other = _get_from("127.0.0.2", int(port), f"/navai/realtime/calls/{call_id}/events")
    assert other.startswith(b"HTTP/1.1 404"), other[:200]
    assert b'{"error":"Unknown call."}' in other
    server.http.post(f"/navai/realtime/calls/{call_id}/hangup", json={})


def _get_from(source: str, port: int, path: str) -> bytes:
    """A GET sent from the loopback address ``source`` (another client, another key)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_watcher_that_never_reads_does_not_slow_the_tools(
    server: Served, fake_realtime: FakeOpenAI
) -> None:
    call_id = start_call(server)
    _, port = str(server.http.base_url).rsplit("//", 1)[1].split(":")
    # A watcher that sends its request and never reads a byte of the answer.
    stuck = socket.create_connection(("127.0.0.1", int(port)), timeout=5)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    path = f"/navai/realtime/calls/{call_id}/events"
    stuck.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    call = fake_realtime.call(call_id)
    call.wait_for(lambda c: c.connections == 1)
    big = "x" * 3000  # each transcript event about 3 KB: the socket fills within a few
    turnarounds = []
    try:
        for n in range(40):
            call.send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": f"item_{n}",
                    "content_index": 0,
                    "transcript": f"{n} {big}",
                },
                fn_call(f"t{n}", "add", {"a": n, "b": 1}, response=f"resp_{n}"),
                response_done(f"resp_{n}", (f"t{n}", "add", {"a": n, "b": 1}), usage=USAGE),
            )
            call.wait_for(lambda c, n=n: f"t{n}" in c.output_at, timeout=5)
            turnarounds.append(call.output_at[f"t{n}"] - call.sent_at[f"t{n}"])
    finally:
        stuck.close()
    server.http.post(f"/navai/realtime/calls/{call_id}/hangup", json={})
    turnarounds.sort()
    assert turnarounds[-1] < 1.0, turnarounds  # a tool run never waits for the watcher
    record = server.record_of(call_id)
    assert len(record["tools"]) == 40


# ----- in process: pings and a watcher that falls behind --------------------------------------


def test_pings_and_a_watcher_that_falls_behind_is_disconnected(make_navai) -> None:
    from navai_core.calls.events import CallSummary, LiveCall, ToolRun
    from navai_core.records.events import record_events

    navai = make_navai(None, openai_api_key=SERVER_KEY)
    recorder = navai.recorder
    recorder.ping_seconds = 0.05
    recorder.watch_limit = 5

    async def run() -> tuple[list[bytes], list[bytes]]:
        live = LiveCall("rtc_watch1", "k", time.time(), "webrtc", 0)
        events = record_events(recorder, live, runtime="realtime", model="gpt-realtime-2.1")
        slow, quick = events.stream(), events.stream()
        slow_seen = [await slow.__anext__()]  # subscribed, then never read again
        quick_seen = [await quick.__anext__()]
        quick_seen.append(await quick.__anext__())  # idle: a ping
        for n in range(8):
            events.tool_ran("rtc_watch1", ToolRun(f"c{n}", "add", "{}", True, None, 1.0))
            quick_seen.append(await quick.__anext__())
        summary = CallSummary("rtc_watch1", "k", live.started_at, time.time(), 1.0, "ended", 8)
        published = events.ended(events.finish(summary))
        assert published is not None
        await published
        quick_seen += [chunk async for chunk in quick]
        slow_seen += [chunk async for chunk in slow]
        return slow_seen, quick_seen

    slow_seen, quick_seen = asyncio.run(run())
    assert quick_seen[1] == b": ping\n\n"
    assert sum(chunk.startswith(b"event: tool\n") for chunk in quick_seen) == 8
    assert quick_seen[-1].startswith(b"event: end\n")
    # The slow one had 5 unread events when the 6th came: disconnected, its queue let go.
    assert slow_seen[1:] == [b": too slow\n\n"]
    assert "rtc_watch1" not in recorder.calls


def test_the_route_answers_a_stream_in_process(make_navai, fake_realtime: FakeOpenAI) -> None:
    """The core answers the events route with a streaming reply (``Reply.stream``)."""
    navai = make_navai(fake_realtime, rate_limit_calls=None)
    fake_realtime.reset()

    async def run() -> tuple[int, str, list[bytes]]:
        created = await navai.ahandle(
            RequestContext(
                "POST", "/navai/realtime/calls", {"content-type": "application/sdp"}, "1.2.3.4"
            ),
            b"v=0\r\n",
        )
        assert created.status == 201, created.body
        call_id = dict(created.headers)["Location"].rsplit("/", 1)[1]
        path = f"/navai/realtime/calls/{call_id}/events"
        other = await navai.ahandle(RequestContext("GET", path, client="5.6.7.8"))
        assert other.status == 404 and other.stream is None
        reply = await navai.ahandle(RequestContext("GET", path, client="1.2.3.4"))
        assert reply.stream is not None
        chunks = []
        hung = asyncio.ensure_future(navai.calls.ahangup(call_id))
        async for chunk in reply.stream:
            chunks.append(chunk)
        await hung
        return reply.status, reply.content_type, chunks

    status, content_type, chunks = asyncio.run(run())
    assert status == 200 and content_type == "text/event-stream"
    assert chunks[-1].startswith(b"event: end\n")


def test_the_flask_integration_streams_the_events(make_navai, fake_realtime: FakeOpenAI) -> None:
    """A framework integration on WSGI (Flask): the worker iterates the stream's chunks,
    each made on navai's background loop that holds the call."""
    import flask

    from navai_adapters.flask import NavaiFlask

    fake_realtime.reset()
    app = flask.Flask(__name__)
    navai = make_navai(fake_realtime, rate_limit_calls=None)
    NavaiFlask(app, navai)
    client = app.test_client()
    created = client.post(
        "/navai/realtime/calls", data="v=0\r\n", headers={"Content-Type": "application/sdp"}
    )
    assert created.status_code == 201
    call_id = created.headers["Location"].rsplit("/", 1)[1]
    reply = client.get(f"/navai/realtime/calls/{call_id}/events", buffered=False)
    assert reply.status_code == 200 and reply.mimetype == "text/event-stream"
    chunks = reply.response  # the body as the server sends it, chunk by chunk
    first = next(iter(chunks))
    assert first == f": navai call {call_id}\n\n".encode()
    call = fake_realtime.call(call_id)
    call.wait_for(lambda c: c.connections == 1)
    call.send(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "transcript": USER_SAID,
        }
    )
    said = next(iter(chunks))
    assert said.startswith(b"event: transcript\n") and USER_SAID.encode() in said
    call.end()
    rest = list(chunks)
    reply.close()
    assert rest[-1].startswith(b"event: end\n")
