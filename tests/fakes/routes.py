"""The fake's HTTP routes, in one table: ``(method, path pattern, handler)``.

A handler is pure: it gets the fake's shared state, the recorded request and the path
parameters, and returns a :class:`Reply`. Both the loopback server (:mod:`fakes.server`) and
the mock transport (:mod:`fakes.mock`) answer through :func:`route`, so a new surface (a route
of OpenAI's) is one handler and one row here; its WebSocket events go in :mod:`fakes.sideband`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fakes import shapes

if TYPE_CHECKING:
    from fakes.state import OpenAIState, Recorded


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: object, **headers: str) -> Reply:
        return cls(
            status, json.dumps(data).encode(), {"Content-Type": "application/json", **headers}
        )


Handler = Callable[["OpenAIState", "Recorded", dict[str, str]], Reply]

# The WebSocket path of a call's control connection ("sideband"): /v1/realtime?call_id=<id>.
SIDEBAND_PATH = "/v1/realtime"


def client_secrets(state: OpenAIState, request: Recorded, params: dict[str, str]) -> Reply:
    """``POST /v1/realtime/client_secrets`` (and, as the fake always did, any path no row
    names): OpenAI's success reply, echoing the session asked for."""
    try:
        asked = json.loads(request.body) if request.body else {}
    except ValueError:
        asked = {}
    if not isinstance(asked, dict):
        asked = {}
    return Reply.json(200, shapes.client_secret_reply(asked, request.number))


def create_call(state: OpenAIState, request: Recorded, params: dict[str, str]) -> Reply:
    """``POST /v1/realtime/calls``: a strict multipart body (an ``sdp`` part of type
    ``application/sdp`` and a ``session`` part of type ``application/json``, nothing else);
    201 with an SDP answer and ``Location: /v1/realtime/calls/<id>``."""
    headers = request.headers
    if not state.authorized(headers):
        return Reply.json(401, {"error": {"message": "bad key"}})
    if state.create_status is not None:
        return Reply(
            state.create_status, state.create_body or b"", dict(state.create_headers or {})
        )
    try:
        parts = shapes.parse_multipart(headers.get("content-type", ""), request.body)
        sdp_type, sdp = parts.pop("sdp")
        session_type, session = parts.pop("session")
        assert sdp_type == "application/sdp" and session_type == "application/json"
        assert not parts, f"unexpected parts {sorted(parts)}"
        assert headers.get("accept") == "application/sdp"
        session_value = json.loads(session)
    except (AssertionError, KeyError, ValueError) as exc:
        return Reply.json(400, {"error": {"message": f"bad multipart: {exc}"}})
    call = state.new_call(sdp.decode(), session_value, headers.get("authorization", ""))
    location = {"Location": f"/v1/realtime/calls/{call.call_id}"}
    out = location if state.create_headers is None else dict(state.create_headers)
    return Reply(201, shapes.ANSWER_SDP.encode(), {"Content-Type": "application/sdp", **out})


CONTROL_ACTIONS = ("hangup", "accept", "reject", "refer")


def control_call(state: OpenAIState, request: Recorded, params: dict[str, str]) -> Reply:
    """``POST /v1/realtime/calls/<id>/{hangup,accept,reject,refer}``: 200 (hangup and reject
    end the call); an unknown or ended call 404."""
    if params["action"] not in CONTROL_ACTIONS:
        return Reply.json(404, {"error": {"message": "no such action"}})
    if not state.authorized(request.headers):
        return Reply.json(401, {"error": {"message": "bad key"}})
    call = state.calls.get(params["call_id"])
    if call is None or call.ended or call.runtime != "realtime":
        return Reply.json(404, {"error": {"message": "call not found"}})
    if params["action"] in ("hangup", "reject"):
        call.hangups += 1
        call.end()
    return Reply(200, b"", {"Content-Type": "text/plain; charset=utf-8"})


# GPT-Live's routes (its handlers answer with Reply, defined above).
from fakes import live  # noqa: E402

ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/v1/realtime/client_secrets", client_secrets),
    ("POST", "/v1/realtime/calls", create_call),
    ("POST", "/v1/realtime/calls/{call_id}/{action}", control_call),
    ("POST", "/v1/live/sessions", live.create_session),
    ("POST", "/v1/live/sessions/{call_id}/{action}", live.control_session),
]
FALLBACK: Handler = client_secrets


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")


_COMPILED = [(method, _compile(pattern), handler) for method, pattern, handler in ROUTES]


def route(state: OpenAIState, request: Recorded) -> Reply:
    """The answer of the first row matching ``request`` (its path without the query)."""
    path = request.path.partition("?")[0]
    for method, pattern, handler in _COMPILED:
        found = pattern.match(path)
        if found and request.method == method:
            return handler(state, request, found.groupdict())
    return FALLBACK(state, request, {})
