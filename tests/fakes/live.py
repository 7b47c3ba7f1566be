"""The GPT-Live surface of the fake OpenAI: its HTTP routes and its event builders.

HTTP (rows of :mod:`fakes.routes`, answered from the shared :class:`OpenAIState`):

- ``POST /v1/live/sessions`` takes JSON ``{"session": {...}, "transport": {"type": "webrtc",
  "sdp"}}`` (strictly: nothing else, a ``model`` in the session) and answers 200 ``{"session":
  {"id": "live_..."}, "transport": {"type": "webrtc", "sdp": <answer>}}``;
- ``POST /v1/live/sessions/<id>/accept`` (``{"session": {"type": "live", "model", ...}}``, no
  ``client`` part), ``/reject`` (``{"status_code"}``), ``/refer`` (``{"target_uri"}``) and
  ``/hangup`` (no body) answer 200 and are recorded on the call; a hangup ends the session
  (``session.closed`` with ``close_requested``, then a normal close), a reject ends it.

The sideband is ``/v1/live/sessions/<id>/attach`` (:mod:`fakes.sideband`, the same scripted
socket as Realtime's). The builders below make Live's server events (the nested
``response.event`` stream, ``session.usage.updated``, ``session.closed``, transcripts) and the
phone call webhook bodies. Every shape is checked against openai-python's own Live client and
types (tests/test_live_fake.py).
"""

from __future__ import annotations

import itertools
import json
import re
from typing import TYPE_CHECKING, Any

from fakes.routes import Reply

if TYPE_CHECKING:
    from fakes.state import OpenAIState, Recorded

ANSWER_SDP = "v=0\r\no=- 4343 2 IN IP4 127.0.0.1\r\ns=fake live answer\r\n"
ACTIONS = ("accept", "reject", "refer", "hangup")
# The WebSocket path of a Live session's control connection.
ATTACH_PATH = re.compile(r"^/v1/live/sessions/(?P<call_id>[^/]+)/attach$")
_ids = itertools.count(1)


def _event_id() -> str:
    return f"event_fake{next(_ids)}"


# ----- HTTP ------------------------------------------------------------------------------------


def _error(status: int, message: str) -> Reply:
    return Reply.json(status, {"error": {"message": message}})


def create_session(state: OpenAIState, request: Recorded, params: dict[str, str]) -> Reply:
    """``POST /v1/live/sessions``."""
    headers = request.headers
    if not state.authorized(headers):
        return _error(401, "bad key")
    if state.create_status is not None:
        return Reply(
            state.create_status, state.create_body or b"", dict(state.create_headers or {})
        )
    try:
        assert headers.get("content-type", "").startswith("application/json")
        body = json.loads(request.body)
        assert isinstance(body, dict) and set(body) == {"session", "transport"}, body
        transport, session = body["transport"], body["session"]
        assert transport.get("type") == "webrtc" and isinstance(transport.get("sdp"), str)
        assert set(transport) == {"type", "sdp"}, transport
        assert isinstance(session, dict) and isinstance(session.get("model"), str)
    except (AssertionError, ValueError, AttributeError) as exc:
        return _error(400, f"bad request: {exc!r}")
    call = state.new_call(
        transport["sdp"], session, headers.get("authorization", ""), runtime="live"
    )
    return Reply.json(
        200, {"session": {"id": call.call_id}, "transport": {"type": "webrtc", "sdp": ANSWER_SDP}}
    )


def control_session(state: OpenAIState, request: Recorded, params: dict[str, str]) -> Reply:
    """``POST /v1/live/sessions/<id>/{accept,reject,refer,hangup}``."""
    action = params["action"]
    if action not in ACTIONS:
        return _error(404, "no such action")
    if not state.authorized(request.headers):
        return _error(401, "bad key")
    live = state.calls.get(params["call_id"])
    if live is None or live.ended or live.runtime != "live":
        return _error(404, "session not found")
    try:
        body = json.loads(request.body) if request.body else None
    except ValueError:
        return _error(400, "not JSON")
    if action == "hangup":
        live.hangups += 1
        live.close("close_requested")
    elif action == "accept":
        session = body.get("session") if isinstance(body, dict) else None
        if not (isinstance(session, dict) and session.get("type") == "live"):
            return _error(400, "session.type must be live")
        if "client" in session or not isinstance(session.get("model"), str):
            return _error(400, "bad session")
        live.accepted.append(body)
        live.session = {k: v for k, v in session.items() if k != "type"}
    elif action == "reject":
        live.rejected.append(body)
        live.ended = True
    else:
        live.referred.append(body)
    return Reply(200, b"")


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
