"""Server-controlled calls, the signalling as pure functions: no I/O (CONTRACT.md section 8).

navai relays a browser's SDP offer to ``POST <base>/realtime/calls`` with the very session
the client-secret route would mint (one copy of every rule: :func:`build_realtime_session`),
learns the call id from the ``Location`` of the answer, and later controls the call
(``/hangup``, and ``/accept``, ``/reject``, ``/refer`` for phone calls) through the same
base URL and key. What happens on the call's control connection lives in ``_sideband``;
this module only builds requests and reads replies.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import TypeGuard

import attrs

from .._config import NavaiConfig
from .._errors import BadRequest, UpstreamError
from .._json import JsonObject, JsonValue, dumps
from ..functions.registry import FunctionRegistry
from ..routes.body import read_string_fields
from ..sessions.client_secret import (
    CLIENT_SECRET_FIELDS,
    ClientSecretOptions,
    build_realtime_session,
)
from ..upstream.messages import UpstreamRequest, upstream_failure
from ..upstream.providers import RealtimeTarget, realtime_target

SDP_REQUIRED = "sdp is required."
CALLS_LABEL = "OpenAI calls"
NO_CALL_ID = "OpenAI calls answered without a call id (no usable Location header)."
SDP_CONTENT_TYPE = "application/sdp"

# Call ids OpenAI hands out look like ``rtc_...``; anything else is refused before it is put
# in a URL or a log line.
_CALL_ID = re.compile(r"[A-Za-z0-9_\-]{1,200}")


@attrs.frozen(kw_only=True)
class CallOptions:
    """A browser's offer and the session choices of the client-secret route."""

    sdp: str = attrs.field(repr=False)
    session: ClientSecretOptions = attrs.field(factory=ClientSecretOptions)


@attrs.frozen
class CallPlan:
    """The upstream request that creates a call, and the key it uses (the call's key)."""

    request: UpstreamRequest
    target: RealtimeTarget = attrs.field(repr=False)
    # The session the call is created with (what navai set: the session guard keeps it).
    session: JsonObject | None = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen
class CallAnswer:
    """What the upstream answered to a new call: its id and the SDP answer."""

    call_id: str
    sdp: str = attrs.field(repr=False)


def valid_call_id(call_id: object) -> TypeGuard[str]:
    return isinstance(call_id, str) and _CALL_ID.fullmatch(call_id) is not None


# ----- the request body ------------------------------------------------------------------------


def parse_call_offer(content: bytes) -> CallOptions:
    """A raw ``application/sdp`` body: the offer, session choices from the defaults."""
    try:
        sdp = content.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The SDP offer must be UTF-8 text.") from None
    return CallOptions(sdp=sdp)


def parse_call_body(body: object) -> CallOptions:
    """A JSON body ``{"sdp", model?, voice?, instructions?, language?, voiceAccent?,
    voiceTone?, apiKey?}`` (strings; 400 naming a field of the wrong type)."""
    values = read_string_fields(body, ("sdp", *CLIENT_SECRET_FIELDS))
    options = ClientSecretOptions(
        **{attr: values[field] for field, attr in CLIENT_SECRET_FIELDS.items()}
    )
    return CallOptions(sdp=values["sdp"] or "", session=options)


# ----- creating a call -------------------------------------------------------------------------


def function_tools(registry: FunctionRegistry) -> list[JsonValue]:
    """One ``{"type": "function", name, description, parameters}`` per registry function,
    ``parameters`` being the JSON Schema the function list shows."""
    return [
        {
            "type": "function",
            "name": entry.name,
            "description": entry.description,
            "parameters": entry.parameters,
        }
        for entry in registry.entries()
    ]


def call_session(
    config: NavaiConfig, options: ClientSecretOptions, registry: FunctionRegistry | None
) -> JsonObject:
    """The section 2 session plus, when the function routes are on, the registry's tools
    (after any tools of the session template)."""
    session = build_realtime_session(config, options)
    _ask_input_transcription(config, session)
    if registry is not None and config.functions_enabled:
        template_tools = session.get("tools")
        kept = list(template_tools) if isinstance(template_tools, list) else []
        session["tools"] = [*kept, *function_tools(registry)]
    return session


def _ask_input_transcription(config: NavaiConfig, session: JsonObject) -> None:
    """For the call record's user turns (CONTRACT section 12): ask OpenAI to transcribe the
    caller (``audio.input.transcription.model``: ``NAVAI_TRANSCRIPTION_MODEL``), unless the
    session template sets its own transcription or ``NAVAI_CALL_TRANSCRIPTS=false``."""
    if not config.call_transcripts:
        return
    audio = session.setdefault("audio", {})
    if not isinstance(audio, dict):
        return
    heard = audio.setdefault("input", {})
    if isinstance(heard, dict) and "transcription" not in heard:
        heard["transcription"] = {"model": config.transcription_model}


def plan_call(
    config: NavaiConfig,
    options: CallOptions,
    registry: FunctionRegistry | None = None,
    *,
    boundary: str | None = None,
) -> CallPlan:
    """The upstream ``POST <base>/realtime/calls`` for an offer, and the key it uses.

    400 for a blank offer (checked first) or a choice the server does not allow, then the
    key policy's 401/403, 500 for a bad session template.
    """
    if not options.sdp.strip():
        raise BadRequest(SDP_REQUIRED)
    session = call_session(config, options.session, registry)
    target = realtime_target(config, options.session.api_key)
    boundary = boundary or secrets.token_hex(16)
    parts = (
        ("sdp", SDP_CONTENT_TYPE, options.sdp.encode("utf-8")),
        ("session", "application/json", dumps(session)),
    )
    request = UpstreamRequest(
        method="POST",
        url=target.calls_url(),
        headers=(
            *target.headers,
            ("Accept", SDP_CONTENT_TYPE),
            ("Content-Type", f"multipart/form-data; boundary={boundary}"),
        ),
        content=multipart_body(parts, boundary),
        label=CALLS_LABEL,
        secrets=target.secrets,
    )
    return CallPlan(request, target, session)


def build_call_request(
    config: NavaiConfig,
    options: CallOptions,
    registry: FunctionRegistry | None = None,
    *,
    boundary: str | None = None,
) -> UpstreamRequest:
    """The exact multipart upstream request that creates a call (see :func:`plan_call`)."""
    return plan_call(config, options, registry, boundary=boundary).request


def multipart_body(parts: tuple[tuple[str, str, bytes], ...], boundary: str) -> bytes:
    """``multipart/form-data`` of ``(name, content type, bytes)`` parts (RFC 7578)."""
    marker = f"--{boundary}".encode("ascii")
    chunks: list[bytes] = []
    for name, content_type, data in parts:
        if marker in data:
            raise ValueError("multipart boundary occurs in a part")
        chunks += [
            marker,
            b"\r\n",
            f'Content-Disposition: form-data; name="{name}"\r\n'.encode("ascii"),
            f"Content-Type: {content_type}\r\n\r\n".encode("ascii"),
            data,
            b"\r\n",
        ]
    chunks += [marker, b"--\r\n"]
    return b"".join(chunks)


def parse_call_response(
    request: UpstreamRequest,
    status: int,
    content: bytes,
    headers: Mapping[str, str] | None = None,
) -> CallAnswer:
    """The call id (from ``Location: /v1/realtime/calls/<id>``) and the SDP answer, or the
    error to answer with: the upstream's status for a non-2xx reply, 502 without an id."""
    if not 200 <= status <= 299:
        raise upstream_failure(request, status, content, headers)
    location = ""
    for name, value in (headers or {}).items():
        if name.lower() == "location":
            location = value
    path = location.split("?", 1)[0].rstrip("/")
    head, _, call_id = path.rpartition("/")
    if not head.endswith("/calls") or not valid_call_id(call_id):
        raise UpstreamError(NO_CALL_ID)
    return CallAnswer(call_id, content.decode("utf-8", errors="replace"))


# ----- controlling a call ----------------------------------------------------------------------


def build_call_control_request(
    target: RealtimeTarget,
    call_id: str,
    action: str,
    body: JsonObject | None = None,
    *,
    label: str = "OpenAI calls",
) -> UpstreamRequest:
    """``POST <one call's path of the target's runtime>/<action>`` (``hangup``, ``accept``,
    ``reject``, ``refer``; on Realtime ``<base>/realtime/calls/<call_id>/<action>``) with an
    optional JSON body; ``label`` names the upstream in errors and logs."""
    if not valid_call_id(call_id):
        raise BadRequest("Invalid call id.")
    headers = target.headers
    if body is not None:
        headers = (*headers, ("Content-Type", "application/json"))
    return UpstreamRequest(
        method="POST",
        url=target.call_url(call_id, action),
        headers=headers,
        content=b"" if body is None else dumps(body),
        label=f"{label} {action}",
        secrets=target.secrets,
    )


def build_hangup_request(target: RealtimeTarget, call_id: str) -> UpstreamRequest:
    return build_call_control_request(target, call_id, "hangup")


def sideband_url(target: RealtimeTarget, call_id: str) -> str:
    """``<base, http→ws, https→wss>/realtime?call_id=<call_id>``: the call's control
    WebSocket."""
    return target.sideband_url(call_id)
