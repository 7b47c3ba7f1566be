"""Phone calls (SIP), the decisions as pure functions: no I/O (CONTRACT.md section 9).

OpenAI posts a signed ``realtime.call.incoming`` webhook for each call its SIP trunk
receives. navai reads it (:func:`parse_webhook_event`, :func:`parse_incoming_call`), asks the
``on_incoming_call`` hook for a verdict (:class:`AcceptCall`, :class:`RejectCall`,
:class:`ReferCall`; checked by :func:`check_verdict`) and turns the verdict into the upstream
``/accept``, ``/reject`` or ``/refer`` request (:func:`build_verdict_request`). Running the
hook, sending the request and attaching the call's control connection happen in
``_phone``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeAlias
from urllib.parse import unquote

import attrs

from .._errors import BadRequest
from .._json import JsonObject, dumps, loads
from ..sessions.client_secret import deep_merge
from ..upstream.messages import UpstreamRequest
from ..upstream.providers import RealtimeTarget
from .plans import build_call_control_request, valid_call_id

INCOMING_CALL = "realtime.call.incoming"
DEFAULT_REJECT_STATUS = 603  # SIP "Decline"
# The budget key of a caller whose number cannot be read: such callers share one budget.
UNKNOWN_CALLER = "anonymous"

NOT_AN_EVENT = "Webhook body is not a JSON event object."
BAD_INCOMING_CALL = "realtime.call.incoming without a valid data.call_id."

MAX_SIP_HEADERS = 200
MAX_SIP_HEADER_CHARS = 4096
MAX_TARGET_URI_CHARS = 2048
MAX_BUDGET_KEY_CHARS = 200

# What a caller's user part may hold to become a budget key (phone numbers, extensions).
_CALLER = re.compile(r"[A-Za-z0-9+*#._\-]{1,64}")
_PHONE_VISUAL = re.compile(r"[\s\-.()]")
_PHONE = re.compile(r"\+?[0-9]{1,32}")
_URI_SCHEMES = ("sip:", "sips:", "tel:")


@attrs.frozen
class WebhookEvent:
    """One webhook delivery's event: ``{"id", "type", "data", ...}``."""

    type: str
    event_id: str | None
    data: Mapping[str, Any] = attrs.field(repr=False)


@attrs.frozen
class IncomingCall:
    """A phone call OpenAI offers to navai. Everything but ``call_id`` comes from the caller's
    SIP INVITE: treat it as untrusted (anyone can put any number in ``From``)."""

    call_id: str
    # (name, value) pairs in the order OpenAI sent them; repeated names are kept.
    sip_headers: tuple[tuple[str, str], ...] = attrs.field(repr=False)
    event_id: str | None = None
    webhook_id: str | None = None
    # The voice runtime the call is offered on: "realtime" (realtime.call.incoming) or
    # "live" (live.transport.incoming; call_id is then the Live session id).
    runtime: str = "realtime"

    def header(self, name: str) -> str | None:
        """The first SIP header called ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.sip_headers:
            if key.lower() == wanted:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every SIP header called ``name`` (case-insensitive), in order."""
        wanted = name.lower()
        return [value for key, value in self.sip_headers if key.lower() == wanted]

    @property
    def caller(self) -> str | None:
        """The caller's number (or SIP user) from the ``From`` header, or None."""
        return sip_user(self.header("From") or self.header("f"))

    @property
    def callee(self) -> str | None:
        """The number (or SIP user) that was dialled, from the ``To`` header, or None."""
        return sip_user(self.header("To") or self.header("t"))


@attrs.frozen(kw_only=True)
class AcceptCall:
    """Answer the call. ``session``: fields laid over navai's session (objects merge, other
    values replace; e.g. ``{"instructions": ...}`` or ``{"audio": {"output": {"voice":
    ...}}}``). ``budget_key``: whose call-time budget the call spends (default: the caller's
    number)."""

    session: Mapping[str, Any] | None = None
    budget_key: str | None = None


@attrs.frozen
class RejectCall:
    """Refuse the call with a SIP status (default 603 Decline: the caller hears the network's
    "call rejected" tone or message)."""

    status_code: int = DEFAULT_REJECT_STATUS


@attrs.frozen
class ReferCall:
    """Transfer the call (SIP REFER) to ``target_uri``, e.g. ``"tel:+14155550123"`` or
    ``"sip:support@example.com"``."""

    target_uri: str


CallVerdict: TypeAlias = "AcceptCall | RejectCall | ReferCall"


# ----- the webhook body ------------------------------------------------------------------------


def parse_webhook_event(body: bytes) -> WebhookEvent:
    """The event of a (verified) webhook body; 400 when it is not a JSON object with a
    string ``type``."""
    try:
        data = loads(body)
    except (ValueError, RecursionError):
        raise BadRequest(NOT_AN_EVENT) from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise BadRequest(NOT_AN_EVENT)
    event_id = data.get("id")
    payload = data.get("data")
    return WebhookEvent(
        type=data["type"],
        event_id=event_id if isinstance(event_id, str) else None,
        data=payload if isinstance(payload, dict) else {},
    )


def parse_incoming_call(event: WebhookEvent, webhook_id: str | None = None) -> IncomingCall:
    """The call of a ``realtime.call.incoming`` event; 400 without a usable ``call_id``.

    SIP headers that are not ``{"name": str, "value": str}`` are skipped; at most
    ``MAX_SIP_HEADERS`` are kept, each value cut to ``MAX_SIP_HEADER_CHARS``.
    """
    call_id = event.data.get("call_id")
    if not valid_call_id(call_id):
        raise BadRequest(BAD_INCOMING_CALL)
    raw = event.data.get("sip_headers")
    headers: list[tuple[str, str]] = []
    for item in raw if isinstance(raw, list) else []:
        if len(headers) >= MAX_SIP_HEADERS:
            break
        if isinstance(item, dict):
            name, value = item.get("name"), item.get("value")
            if isinstance(name, str) and isinstance(value, str) and name:
                headers.append((name[:MAX_SIP_HEADER_CHARS], value[:MAX_SIP_HEADER_CHARS]))
    return IncomingCall(call_id, tuple(headers), event.event_id, webhook_id)


def sip_user(value: str | None) -> str | None:
    """The user part of the URI in a ``From``/``To`` header value, or None.

    ``"Alice" <sip:+1 (415) 555-0100@trunk.example;user=phone>;tag=9`` gives ``+14155550100``;
    ``<tel:+14155550100>`` too. Phone numbers lose their visual separators; anything else is
    kept only when it is a short run of ``[A-Za-z0-9+*#._-]``.
    """
    if not value:
        return None
    text = value.strip()
    if "<" in text:
        inner = text.split("<", 1)[1]
        text = inner.split(">", 1)[0]
    else:
        text = text.split(";", 1)[0]  # header parameters (;tag=...) follow a bare URI
    lowered = text.lower()
    for scheme in _URI_SCHEMES:
        if lowered.startswith(scheme):
            text = text[len(scheme) :]
            break
    else:
        return None
    # sip:user[:password]@host;params, or tel:number;params
    user = unquote(text.split("@", 1)[0].split(";", 1)[0].split(":", 1)[0]).strip()
    phone = _PHONE_VISUAL.sub("", user)
    if _PHONE.fullmatch(phone):
        return phone
    if _CALLER.fullmatch(user):
        return user
    return None


# ----- the hook's verdict ----------------------------------------------------------------------


def check_verdict(value: object) -> CallVerdict:
    """The verdict a hook returned (``None`` accepts with navai's session), checked.

    Raises ``ValueError`` naming the problem: a reject status outside SIP's 400-699, a refer
    target that is not a ``sip:``/``sips:``/``tel:`` URI, session overrides that are not a
    JSON object, a blank or oversized budget key, or any other value.
    """
    if value is None:
        return AcceptCall()
    if isinstance(value, AcceptCall):
        if value.session is not None:
            if not isinstance(value.session, Mapping):
                raise ValueError("AcceptCall.session must be a mapping of session fields.")
            try:
                dumps(dict(value.session))
            except (TypeError, ValueError):  # (a lone surrogate is a UnicodeEncodeError)
                raise ValueError(
                    "AcceptCall.session must be JSON (str keys, JSON values)."
                ) from None
        key = value.budget_key
        if key is not None and (
            not isinstance(key, str) or not key.strip() or len(key) > MAX_BUDGET_KEY_CHARS
        ):
            raise ValueError(
                f"AcceptCall.budget_key must be a non-blank string of at most "
                f"{MAX_BUDGET_KEY_CHARS} characters."
            )
        return value
    if isinstance(value, RejectCall):
        status = value.status_code
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 699:
            raise ValueError("RejectCall.status_code must be a SIP error status (400-699).")
        return value
    if isinstance(value, ReferCall):
        uri = value.target_uri
        if (
            not isinstance(uri, str)
            or not uri.lower().startswith(_URI_SCHEMES)
            or len(uri) > MAX_TARGET_URI_CHARS
            or any(ch.isspace() for ch in uri)
        ):
            raise ValueError("ReferCall.target_uri must be a sip:, sips: or tel: URI.")
        return value
    raise ValueError(
        "on_incoming_call must return None, AcceptCall, RejectCall or ReferCall; "
        f"got {type(value).__name__}."
    )


def budget_key(call: IncomingCall, verdict: AcceptCall) -> str:
    """Whose call-time budget an accepted call spends: the hook's key, else the caller's
    number, else ``UNKNOWN_CALLER``."""
    return (verdict.budget_key or "").strip() or call.caller or UNKNOWN_CALLER


# ----- the upstream requests -------------------------------------------------------------------


def accept_body(session: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> JsonObject:
    """The ``/accept`` body: the session object's fields at the top level (as openai-python's
    ``calls.accept`` sends them), the hook's overrides laid over it; always ``type:
    "realtime"``."""
    merged = deep_merge(session, overrides or {})
    merged["type"] = "realtime"
    return merged


def build_verdict_request(
    target: RealtimeTarget,
    call: IncomingCall,
    verdict: CallVerdict,
    session: Mapping[str, Any] | None = None,
) -> UpstreamRequest:
    """``POST <base>/realtime/calls/<call_id>/accept`` with the session (for
    :class:`AcceptCall`; ``session`` is navai's session for the call), ``/reject`` with
    ``{"status_code"}`` or ``/refer`` with ``{"target_uri"}``."""
    body: JsonObject
    if isinstance(verdict, AcceptCall):
        action, body = "accept", accept_body(session or {}, verdict.session)
    elif isinstance(verdict, RejectCall):
        action, body = "reject", {"status_code": verdict.status_code}
    else:
        action, body = "refer", {"target_uri": verdict.target_uri}
    return build_call_control_request(target, call.call_id, action, body)
