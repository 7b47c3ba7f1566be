"""GPT-Live calls, the signalling as pure functions: no I/O (CONTRACT.md section 11).

GPT-Live (``gpt-live-1``, ``gpt-live-1.1``) is OpenAI's second voice runtime: the Live model
speaks while a backend Responses model does the work ("delegation"). There are no browser
client secrets, so navai creates the session for the browser, exactly like a Realtime call
(section 8), over the Live surface:

- the session (:func:`live_session`) is built from the very choices the Realtime session is
  built from (:func:`session_choices`: defaults, instruction lines, allow-lists, lengths),
  with the registry's functions as the backend's tools and a browser data channel that may
  watch but not steer;
- ``POST <base>/live/sessions`` creates it (:func:`plan_live_call`,
  :func:`parse_live_call_response`); ``/live/sessions/<id>/hangup|accept|reject|refer``
  control it (:func:`build_live_control_request`, :func:`build_live_verdict_request`);
  ``<ws base>/live/sessions/<id>/attach`` is its control connection
  (:func:`live_sideband_url`);
- ``live.transport.incoming`` (and the deprecated ``live.call.incoming``) announce a phone
  call (:func:`parse_live_incoming_call`); :func:`incoming_call_runtime` says which of the two
  announcements of one pending call navai acts on.

What happens on the control connection is :class:`navai_core.calls.live_sideband.LiveToolLoop`.
The requests use the provider's base URL and headers of :class:`RealtimeTarget` (Azure
OpenAI serves Live under ``<endpoint>/openai/v1/live``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from .._config import NavaiConfig
from .._errors import BadRequest, UpstreamError
from .._json import JsonObject, JsonValue, dumps
from .._policy import clean
from ..functions.registry import FunctionRegistry
from ..sessions.client_secret import (
    ClientSecretOptions,
    deep_merge,
    session_choices,
)
from ..upstream.messages import UpstreamRequest, parse_json_reply, upstream_failure
from ..upstream.providers import LIVE, RealtimeTarget, realtime_target
from .plans import (
    SDP_REQUIRED,
    CallAnswer,
    CallOptions,
    CallPlan,
    build_call_control_request,
    call_session,
    function_tools,
    valid_call_id,
)
from .sip import (
    INCOMING_CALL,
    AcceptCall,
    CallVerdict,
    IncomingCall,
    RejectCall,
    WebhookEvent,
    parse_incoming_call,
)

LIVE_LABEL = "OpenAI Live"
NO_SESSION = "OpenAI Live answered without a session id or an SDP answer."
JSON_CONTENT_TYPE = "application/json"

# The server events a page may see on its data channel: enough to show captions and know when
# the session started and ended. Selectors of openai-python's ``DataChannelConfig``
# (``{"type"}``; a nested Responses event would be ``{"type": "response.event",
# "response_event": ...}``). Backend work (``response.event``), usage and errors stay on the
# server's control connection.
LIVE_ALLOWED_SERVER_EVENTS: tuple[str, ...] = (
    "session.started",
    "session.input_transcript.delta",
    "session.output_transcript.delta",
    "session.closed",
)

# Webhook event types of a phone call offered to the Live runtime.
LIVE_TRANSPORT_INCOMING = "live.transport.incoming"
LIVE_CALL_INCOMING = "live.call.incoming"  # deprecated twin: no data.type
LIVE_INCOMING_EVENTS = (LIVE_TRANSPORT_INCOMING, LIVE_CALL_INCOMING)
BAD_LIVE_INCOMING = "{type} without a valid data.session_id."

Runtime = Literal["realtime", "live"]


# ----- the session -----------------------------------------------------------------------------


def data_channel(
    server_events: Sequence[str] = LIVE_ALLOWED_SERVER_EVENTS,
) -> JsonObject:
    """The browser's data channel: it may send nothing (``allowed_client_events: []``: no
    ``session.update``, no ``response.create``) and receive ``server_events``."""
    return {
        "allowed_client_events": [],
        "allowed_server_events": [{"type": kind} for kind in server_events],
    }


def live_session(
    config: NavaiConfig,
    options: ClientSecretOptions,
    registry: FunctionRegistry | None = None,
    *,
    client: bool = True,
    server_events: Sequence[str] = LIVE_ALLOWED_SERVER_EVENTS,
) -> JsonObject:
    """The Live session for a client's choices.

    ``{"model", "instructions", "audio": {"output": {"voice"}}, "delegation": {"type":
    "responses", "responses": {"model", "instructions"?, "tools"}}, "client": {"data_channel":
    ...}}``. Model, voice and instructions follow the section 2 rules (request value first
    when the server allows it, then ``NAVAI_LIVE_MODEL`` / the configured voice and
    instructions; the language, accent and tone lines); the backend model and prompt are
    ``NAVAI_LIVE_BACKEND_MODEL`` and ``NAVAI_LIVE_BACKEND_INSTRUCTIONS`` (omitted when unset);
    the backend's tools are the registry's functions when the function routes are on.
    ``client=False`` leaves out the ``client`` part (a phone call has no browser).

    The Realtime session template (``NAVAI_SESSION_JSON``) and an ElevenLabs speech provider
    do not apply: a Live session speaks with its own voice and refuses unknown fields.
    Raises 400 for a choice the server does not allow.
    """
    choices = session_choices(config, options)
    tools: list[JsonValue] = []
    if registry is not None and config.functions_enabled:
        tools = function_tools(registry)
    backend: JsonObject = {"model": config.live_backend_model}
    if instructions := clean(config.live_backend_instructions):
        backend["instructions"] = instructions
    backend["tools"] = tools
    session: JsonObject = {
        "model": choices.model or config.live_model,
        "instructions": choices.instructions,
        "audio": {"output": {"voice": choices.voice}},
        "delegation": {"type": "responses", "responses": backend},
    }
    if client:
        session["client"] = {"data_channel": data_channel(server_events)}
    return session


# ----- creating a session ----------------------------------------------------------------------


def plan_live_call(
    config: NavaiConfig,
    options: CallOptions,
    registry: FunctionRegistry | None = None,
) -> CallPlan:
    """The upstream ``POST <base>/live/sessions`` for a browser's offer, and the key it uses.

    Body ``{"session": <live_session>, "transport": {"type": "webrtc", "sdp": <offer,
    unchanged>}}``. 400 for a blank offer (checked first) or a choice the server does not
    allow, then the key policy's 401/403.
    """
    if not options.sdp.strip():
        raise BadRequest(SDP_REQUIRED)
    session = live_session(config, options.session, registry)
    target = realtime_target(config, options.session.api_key, LIVE)
    body = {"session": session, "transport": {"type": "webrtc", "sdp": options.sdp}}
    request = UpstreamRequest(
        method="POST",
        url=target.calls_url(),
        headers=(
            *target.headers,
            ("Accept", JSON_CONTENT_TYPE),
            ("Content-Type", JSON_CONTENT_TYPE),
        ),
        content=dumps(body),
        label=LIVE_LABEL,
        secrets=target.secrets,
    )
    return CallPlan(request, target, session)


def parse_live_call_response(
    request: UpstreamRequest,
    status: int,
    content: bytes,
    headers: Mapping[str, str] | None = None,
) -> CallAnswer:
    """The session id and the SDP answer of ``{"session": {"id"}, "transport": {"type":
    "webrtc", "sdp"}}``, or the error to answer with: the upstream's status with ``OpenAI Live
    failed: <upstream body>`` (secrets redacted) for a non-2xx reply, 502 for a reply without
    a usable id or answer."""
    if not 200 <= status <= 299:
        raise upstream_failure(request, status, content, headers)
    data = parse_json_reply(request, content)
    session, transport = data.get("session"), data.get("transport")
    session_id = session.get("id") if isinstance(session, dict) else None
    sdp = transport.get("sdp") if isinstance(transport, dict) else None
    if not valid_call_id(session_id) or not isinstance(sdp, str) or not sdp.strip():
        raise UpstreamError(NO_SESSION)
    return CallAnswer(session_id, sdp)


# ----- controlling a session -------------------------------------------------------------------


def live_target(target: RealtimeTarget) -> RealtimeTarget:
    """``target`` (the provider's base URL and the call's key) with the Live runtime's paths
    (``upstream/providers.py``: ``LIVE``)."""
    return target if target.runtime is LIVE else attrs.evolve(target, runtime=LIVE)


def build_live_control_request(
    target: RealtimeTarget, session_id: str, action: str, body: JsonObject | None = None
) -> UpstreamRequest:
    """``POST <base>/live/sessions/<session_id>/<action>`` (``hangup``, ``accept``,
    ``reject``, ``refer``) with an optional JSON body: the Realtime control request on the
    Live runtime's paths."""
    live = live_target(target)
    return build_call_control_request(live, session_id, action, body, label=LIVE_LABEL)


def build_live_hangup_request(target: RealtimeTarget, session_id: str) -> UpstreamRequest:
    return build_live_control_request(target, session_id, "hangup")


def live_sideband_url(target: RealtimeTarget, session_id: str) -> str:
    """``<base, http→ws, https→wss>/live/sessions/<session_id>/attach``: the session's
    control connection (navai sends no ``session.start`` there: the session runs already)."""
    return live_target(target).sideband_url(session_id)


# ----- phone calls -----------------------------------------------------------------------------


def parse_live_incoming_call(
    event: WebhookEvent, webhook_id: str | None = None
) -> IncomingCall | None:
    """The phone call of a ``live.transport.incoming`` or ``live.call.incoming`` event, its
    ``call_id`` being the Live ``session_id``; SIP headers kept as for Realtime. ``None``
    for a transport that is not a phone call (``data.type`` other than ``"sip"``; the
    deprecated event has no ``data.type``). 400 without a usable ``session_id``."""
    session_id = event.data.get("session_id")
    if not valid_call_id(session_id):
        raise BadRequest(BAD_LIVE_INCOMING.format(type=event.type))
    kind = event.data.get("type")
    if kind is not None and kind != "sip":
        return None
    as_realtime = WebhookEvent(event.type, event.event_id, {**event.data, "call_id": session_id})
    return attrs.evolve(parse_incoming_call(as_realtime, webhook_id), runtime="live")


def incoming_call_runtime(event_type: str, runtime: str) -> Runtime | None:
    """Which runtime acts on an incoming-call webhook, or ``None`` (answer 200, do nothing).

    OpenAI announces one pending SIP call on both runtimes (``realtime.call.incoming`` and
    ``live.transport.incoming``/``live.call.incoming``) and the first accept wins, so navai
    accepts on the configured ``runtime`` only: the other runtime's announcement, like any
    other event type, is answered without acting.
    """
    if event_type == INCOMING_CALL:
        return "realtime" if runtime == "realtime" else None
    if event_type in LIVE_INCOMING_EVENTS:
        return "live" if runtime == "live" else None
    return None


def phone_session(config: NavaiConfig, registry: FunctionRegistry | None) -> JsonObject:
    """The session navai accepts a phone call with on the configured runtime: the Realtime
    session of section 8, or the Live session without its ``client`` part."""
    options = ClientSecretOptions()
    if config.call_runtime == "live":
        return live_session(config, options, registry, client=False)
    return call_session(config, options, registry)


def live_accept_body(session: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> JsonObject:
    """The Live ``/accept`` body: ``{"session": {"type": "live", ...}}``, the hook's overrides
    laid over navai's session; never a ``client`` part (a phone call has no browser)."""
    merged = deep_merge(session, overrides or {})
    merged.pop("client", None)
    merged.pop("type", None)
    return {"session": {"type": "live", **merged}}


def build_live_verdict_request(
    target: RealtimeTarget,
    call: IncomingCall,
    verdict: CallVerdict,
    session: Mapping[str, Any] | None = None,
) -> UpstreamRequest:
    """``POST <base>/live/sessions/<session_id>/accept`` with the session (for
    :class:`AcceptCall`; ``session`` is navai's Live session for the call, e.g.
    ``live_session(..., client=False)``), ``/reject`` with ``{"status_code"}`` or ``/refer``
    with ``{"target_uri"}``."""
    body: JsonObject
    if isinstance(verdict, AcceptCall):
        action, body = "accept", live_accept_body(session or {}, verdict.session)
    elif isinstance(verdict, RejectCall):
        action, body = "reject", {"status_code": verdict.status_code}
    else:
        action, body = "refer", {"target_uri": verdict.target_uri}
    return build_live_control_request(target, call.call_id, action, body)
