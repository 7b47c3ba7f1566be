"""An OpenAPI 3.1 document of the routes a Navai instance serves (custom paths included)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _string() -> dict[str, Any]:
    return {"type": "string"}


def _error() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
        "additionalProperties": True,
    }


def _optional_strings(
    defaults: dict[str, str] | None = None, **limits: int | None
) -> dict[str, Any]:
    """An object of optional string fields, each with its maximum length (None: no limit)
    and the server's default where it has one."""
    properties: dict[str, Any] = {}
    for name, limit in limits.items():
        properties[name] = {"type": ["string", "null"]}
        if limit is not None:
            properties[name]["maxLength"] = limit
        if defaults and name in defaults:
            properties[name]["default"] = defaults[name]
    return {"type": "object", "properties": properties, "additionalProperties": True}


def _secret_reply() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["value", "expires_at", "speech"],
        "properties": {
            "value": _string(),
            "expires_at": {"type": "integer"},
            "speech": {
                "type": "object",
                "properties": {"provider": {"enum": ["openai", "elevenlabs"]}},
            },
        },
    }


def _function_list() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "warnings"],
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "description", "source"],
                    "properties": {
                        "name": _string(),
                        "description": _string(),
                        "source": _string(),
                        "parameters": {"type": "object"},
                    },
                },
            },
            "warnings": {"type": "array", "items": _string()},
        },
    }


def _execute_body() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["function_name"],
        "properties": {
            "function_name": {"type": "string", "pattern": "\\S"},
            "payload": {"type": ["object", "null"], "additionalProperties": True},
        },
        "additionalProperties": True,
    }


def _execute_reply() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["ok"],
        "properties": {
            "ok": {"type": "boolean"},
            "function_name": _string(),
            "source": _string(),
            "result": {},
            "error": _string(),
            "details": {},
        },
    }


def _speech_body() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["text"],
        "properties": {
            "text": _string(),
            "voiceId": _string(),
            "modelId": _string(),
            "outputFormat": _string(),
            "optimizeStreamingLatency": {"type": "number"},
            "voiceSettings": {
                "type": "object",
                "properties": {
                    "stability": {"type": "number"},
                    "similarityBoost": {"type": "number"},
                    "style": {"type": "number"},
                    "useSpeakerBoost": {"type": "boolean"},
                },
            },
        },
    }


def _speech_reply() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["provider", "mimeType", "audioBase64"],
        "properties": {
            "provider": {"const": "elevenlabs"},
            "mimeType": _string(),
            "audioBase64": _string(),
        },
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "Invalid request (the error names the problem).",
        401: "Not authorised.",
        403: "Forbidden.",
        404: "Unknown function.",
        405: "Method not allowed.",
        413: "Request body too large.",
        415: "Content-Type is not JSON.",
        429: "Rate limited; see Retry-After.",
        500: "Server error or misconfiguration.",
        502: "Upstream unreachable or invalid reply.",
        504: "Upstream or function timed out.",
    }
    return {
        str(s): {"description": texts.get(s, "Upstream error."), "content": _json(_error())}
        for s in statuses
    }


_COMMON = (400, 401, 403, 405, 413, 415, 429, 500)
_UPSTREAM = (502, 503, 504)


def _call_body(option: int, instructions: int, defaults: dict[str, str]) -> dict[str, Any]:
    body = _optional_strings(
        {"model": defaults["model"], "voice": defaults["voice"]},
        model=option,
        voice=option,
        instructions=instructions,
        language=option,
        voiceAccent=option,
        voiceTone=option,
        apiKey=None,
    )
    body["properties"] = {"sdp": {"type": "string", "pattern": "\\S"}, **body["properties"]}
    body["required"] = ["sdp"]
    return body


def _operations(
    option: int, instructions: int, defaults: dict[str, str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every operation navai may serve, with the configured length limits and defaults."""
    return {
        "client_secret": (
            "post",
            {
                "summary": "Mint an ephemeral OpenAI Realtime client secret",
                "operationId": "createClientSecret",
                "requestBody": {
                    "required": False,
                    "content": _json(
                        _optional_strings(
                            {"model": defaults["model"], "voice": defaults["voice"]},
                            model=option,
                            voice=option,
                            instructions=instructions,
                            language=option,
                            voiceAccent=option,
                            voiceTone=option,
                            apiKey=None,
                        )
                    ),
                },
                "responses": {
                    "200": {"description": "A client secret.", "content": _json(_secret_reply())},
                    **_errors(*_COMMON, *_UPSTREAM),
                },
            },
        ),
        "transcription_secret": (
            "post",
            {
                "summary": "Mint a client secret for a transcription-only session",
                "operationId": "createTranscriptionSecret",
                "requestBody": {
                    "required": False,
                    "content": _json(
                        _optional_strings(
                            {"model": defaults["transcription_model"]},
                            model=option,
                            language=option,
                            prompt=instructions,
                            apiKey=None,
                        )
                    ),
                },
                "responses": {
                    "200": {"description": "A client secret.", "content": _json(_secret_reply())},
                    **_errors(*_COMMON, *_UPSTREAM),
                },
            },
        ),
        "list_functions": (
            "get",
            {
                "summary": "List the backend functions the voice agent may call",
                "operationId": "listFunctions",
                "responses": {
                    "200": {"description": "The functions.", "content": _json(_function_list())},
                    **_errors(401, 403, 405, 429, 500),
                },
            },
        ),
        "execute": (
            "post",
            {
                "summary": "Run one backend function",
                "operationId": "executeFunction",
                "requestBody": {"required": True, "content": _json(_execute_body())},
                "responses": {
                    "200": {
                        "description": "The function's result.",
                        "content": _json(_execute_reply()),
                    },
                    "400": {
                        "description": "Invalid request or arguments.",
                        "content": _json(_error()),
                    },
                    "404": {"description": "Unknown function.", "content": _json(_error())},
                    "500": {
                        "description": "The function failed.",
                        "content": _json({"anyOf": [_execute_reply(), _error()]}),
                    },
                    "504": {
                        "description": "The function timed out.",
                        "content": _json(_execute_reply()),
                    },
                    **_errors(401, 403, 405, 413, 415, 429),
                },
            },
        ),
        "calls": (
            "post",
            {
                "summary": "Start a server-controlled Realtime call (WebRTC offer/answer)",
                "description": "Relays the browser's SDP offer to OpenAI with the session of "
                "the client-secret route plus the backend functions as tools; navai runs the "
                "function calls on the server. See docs/calls.md.",
                "operationId": "createCall",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/sdp": {"schema": _string()},
                        **_json(_call_body(option, instructions, defaults)),
                    },
                },
                "responses": {
                    "201": {
                        "description": "The SDP answer; Location names the call.",
                        "headers": {"Location": {"schema": _string()}},
                        "content": {"application/sdp": {"schema": _string()}},
                    },
                    **_errors(*_COMMON, *_UPSTREAM),
                },
            },
        ),
        "call_hangup": (
            "post",
            {
                "summary": "End a call navai created or accepted",
                "operationId": "hangupCall",
                "parameters": [
                    {"name": "call_id", "in": "path", "required": True, "schema": _string()}
                ],
                "responses": {
                    "200": {
                        "description": "The call is ended.",
                        "content": _json(
                            {
                                "type": "object",
                                "required": ["ok", "call_id"],
                                "properties": {"ok": {"const": True}, "call_id": _string()},
                            }
                        ),
                    },
                    **_errors(401, 403, 404, 405, 429, 500, *_UPSTREAM),
                },
            },
        ),
        "call_events": (
            "get",
            {
                "summary": "Follow a call's events as they happen (server-sent events)",
                "description": (
                    "While the call lives: `event: transcript` ({role, text, at}), "
                    "`event: tool` ({call_id, name, ok, error, ms}), `event: cost` "
                    "({cost_usd, usage}) after each model response, and last `event: end` "
                    "(the whole call record), after which the stream closes. Each `data:` "
                    "is one JSON line; a `: ping` comment comes at least every 15 s. A "
                    "watcher that leaves 256 events unread is disconnected."
                ),
                "operationId": "callEvents",
                "parameters": [
                    {"name": "call_id", "in": "path", "required": True, "schema": _string()}
                ],
                "responses": {
                    "200": {
                        "description": "The call's events, until it ends.",
                        "content": {"text/event-stream": {"schema": _string()}},
                    },
                    **_errors(401, 403, 404, 405, 429, 500),
                },
            },
        ),
        "speech": (
            "post",
            {
                "summary": "Speak a text with ElevenLabs",
                "operationId": "synthesizeSpeech",
                "requestBody": {"required": True, "content": _json(_speech_body())},
                "responses": {
                    "200": {"description": "Audio, base64.", "content": _json(_speech_reply())},
                    **_errors(*_COMMON, *_UPSTREAM),
                },
            },
        ),
        "openapi": (
            "get",
            {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {
                    "200": {"description": "OpenAPI 3.1.", "content": _json({"type": "object"})}
                },
            },
        ),
        "health": (
            "get",
            {
                "summary": "Liveness",
                "operationId": "health",
                "responses": {
                    "200": {
                        "description": "Up.",
                        "content": _json({"type": "object", "properties": {"ok": {"const": True}}}),
                    }
                },
            },
        ),
    }


def openapi_document(
    routes: Iterable[Any],
    version: str,
    *,
    option_chars: int,
    instructions_chars: int,
    defaults: dict[str, str],
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes`` (``Route`` values with name/path).

    ``defaults`` holds the server's ``model``, ``voice`` and ``transcription_model``.
    """
    operations = _operations(option_chars, instructions_chars, defaults)
    paths: dict[str, Any] = {}
    for route in routes:
        if route.name not in operations:
            continue
        method, operation = operations[route.name]
        paths[route.path] = {method: operation}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "navai",
            "version": version,
            "description": "Ephemeral OpenAI Realtime client secrets and backend functions "
            "for voice agents.",
        },
        "paths": paths,
    }
