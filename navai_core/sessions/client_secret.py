"""The client-secret operation as pure functions: no I/O, every rule of CONTRACT.md section 2.

``build_client_secret_request`` turns the server's configuration and a request body into
the exact upstream request; ``parse_client_secret_response`` turns the upstream reply
into a :class:`ClientSecret` or raises a :class:`NavaiError` that knows its HTTP answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .._config import NavaiConfig
from .._errors import BadRequest, ConfigurationError, NavaiError, UpstreamError
from .._json import JsonObject, JsonValue, dumps
from .._policy import (
    check_client_choices,
    check_transcription_choices,
    clean,
    current_key,
    elevenlabs_key,
    resolve_api_key,
    uses_azure_token,
    validate_ttl,
)
from ..routes.body import read_string_fields
from .template import session_problems

# What of an upstream reply navai reads and echoes at most (a larger reply is a 502; a longer
# error body is cut): a faulty or hostile upstream cannot make an answer, or memory, balloon.
MAX_REPLY_BYTES = 1024 * 1024
MAX_ECHOED_CHARS = 2000
MAX_REQUEST_ID_CHARS = 200

# Request field name -> attribute of ClientSecretOptions.
CLIENT_SECRET_FIELDS: Mapping[str, str] = {
    "model": "model",
    "voice": "voice",
    "instructions": "instructions",
    "language": "language",
    "voiceAccent": "voice_accent",
    "voiceTone": "voice_tone",
    "apiKey": "api_key",
}


@attrs.frozen(kw_only=True)
class ClientSecretOptions:
    """The optional fields a client may send to the client-secret route."""

    model: str | None = None
    voice: str | None = None
    instructions: str | None = None
    language: str | None = None
    voice_accent: str | None = None
    voice_tone: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class UpstreamRequest:
    """One HTTP request to an upstream API, ready to send. Headers are hidden from repr."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = attrs.field(repr=False)
    content: bytes = attrs.field(repr=False)
    # What failures are called in error texts, e.g. "OpenAI client_secrets".
    label: str = "upstream"
    # Values that must never appear in an error text built from this request.
    secrets: tuple[str, ...] = attrs.field(default=(), repr=False, eq=False)
    # The most of the reply (decoded, so a compressed bomb counts its inflated size) that is
    # read; a larger reply is a 502.
    max_reply_bytes: int = attrs.field(default=MAX_REPLY_BYTES, repr=False, eq=False)

    def reply_too_large(self) -> UpstreamError:
        return UpstreamError(f"{self.label} replied with more than {self.max_reply_bytes} bytes.")


@attrs.frozen
class UpstreamReply:
    """What an upstream answered: status, headers (any case-insensitive mapping), body."""

    status: int
    headers: Mapping[str, str] = attrs.field(repr=False)
    content: bytes = attrs.field(repr=False)


@attrs.frozen
class ClientSecret:
    """An ephemeral client secret minted by OpenAI."""

    value: str = attrs.field(repr=False)
    expires_at: int

    def to_body(self, speech_provider: str = "openai") -> JsonObject:
        return {
            "value": self.value,
            "expires_at": self.expires_at,
            "speech": {"provider": speech_provider},
        }


def parse_client_secret_body(body: object) -> ClientSecretOptions:
    values = read_string_fields(body, CLIENT_SECRET_FIELDS)
    return ClientSecretOptions(
        **{attr: values[field] for field, attr in CLIENT_SECRET_FIELDS.items()}
    )


def build_instructions(
    base: str,
    language: str | None = None,
    voice_accent: str | None = None,
    voice_tone: str | None = None,
) -> str:
    """The session instructions: the base text, then one line per non-blank option."""
    lines = [base.strip()]
    if language := clean(language):
        lines.append(f"Always reply in {language}.")
    if voice_accent := clean(voice_accent):
        lines.append(f"Use a {voice_accent} accent while speaking.")
    if voice_tone := clean(voice_tone):
        lines.append(f"Use a {voice_tone} tone while speaking.")
    return "\n".join(lines)


def _pick(request_value: str | None, default: str) -> str:
    return clean(request_value) or default


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top; nested objects merge, everything else replaces."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(value, dict) and isinstance(below, dict):
            merged[key] = deep_merge(below, value)
        else:
            merged[key] = value
    return merged


def _check_template(template: object, name: str, kind: str) -> None:
    if problems := session_problems(template, name, kind):
        raise ConfigurationError("Invalid session template: " + " ".join(problems), status_code=500)


@attrs.frozen
class SessionChoices:
    """What the section 2 rules make of a client's choices, for either voice runtime
    (Realtime, GPT-Live): the model asked for (``None``: the runtime's default), the voice
    and the instruction text."""

    model: str | None
    voice: str
    instructions: str


def resolve_choices(config: NavaiConfig, options: ClientSecretOptions) -> SessionChoices:
    """Request value first, then the configured default; the instruction lines joined.
    ``options`` must already have passed :func:`check_client_choices`."""
    instructions = build_instructions(
        _pick(options.instructions, config.instructions),
        options.language if clean(options.language) else config.language,
        options.voice_accent if clean(options.voice_accent) else config.voice_accent,
        options.voice_tone if clean(options.voice_tone) else config.voice_tone,
    )
    return SessionChoices(clean(options.model), _pick(options.voice, config.voice), instructions)


def session_choices(config: NavaiConfig, options: ClientSecretOptions) -> SessionChoices:
    """A client's choices checked (allow-lists, lengths, the instructions switch; 400 for a
    choice the server does not allow) and resolved: the one copy of these rules that both
    runtimes' sessions are built from."""
    return resolve_choices(config, check_client_choices(config, options))


def build_session(config: NavaiConfig, options: ClientSecretOptions) -> JsonObject:
    """The Realtime session: the configured template with the request's choices on top."""
    _check_template(config.session, "NAVAI_SESSION_JSON", "realtime")
    choices = resolve_choices(config, options)
    default_model = config.model
    if config.provider == "azure" and (deployment := clean(config.azure_deployment)):
        default_model = deployment
    chosen: JsonObject = {
        "type": "realtime",
        "model": choices.model or default_model,
        "instructions": choices.instructions,
    }
    if config.tts_provider == "elevenlabs":
        chosen["output_modalities"] = ["text"]
    else:
        chosen["audio"] = {"output": {"voice": choices.voice}}
    session = deep_merge(config.session or {}, chosen)
    if config.tts_provider == "elevenlabs":
        # Text only: the browser speaks through ElevenLabs, so no output voice is sent.
        audio = session.get("audio")
        if isinstance(audio, dict) and isinstance(audio.get("output"), dict):
            audio["output"].pop("voice", None)
    return session


@attrs.frozen
class RealtimeTarget:
    """Where and as whom to call the Realtime API: the base URL (``.../v1``) and the
    authentication headers, resolved once by the key policy. Hidden from repr."""

    base_url: str
    headers: tuple[tuple[str, str], ...] = attrs.field(repr=False)
    # Values that must never appear in an error text or a log line.
    secrets: tuple[str, ...] = attrs.field(default=(), repr=False, eq=False)
    # The key the headers carry (a call's later requests use the key that created it).
    key: str = attrs.field(default="", repr=False, eq=False)


def realtime_target(config: NavaiConfig, request_key: str | None = None) -> RealtimeTarget:
    """The configured provider's Realtime base URL and auth headers, per the key policy
    (the backend key always wins; 401/403 otherwise)."""
    allow = config.allow_api_key_from_request
    if config.provider == "azure" and uses_azure_token(config):
        assert config.azure_token_provider is not None
        key = resolve_api_key(config.azure_token_provider(), None, allow)
    else:
        key = resolve_api_key(current_key(config.backend_key_source()), request_key, allow)
    target = target_for_key(config, key)
    secrets = tuple(k for k in (key, clean(request_key)) if k)
    return attrs.evolve(target, secrets=secrets)


def target_for_key(config: NavaiConfig, key: str) -> RealtimeTarget:
    """The Realtime base URL and the headers that authenticate ``key`` with the configured
    provider (a key that already passed the policy, e.g. the one that created a call)."""
    headers: list[tuple[str, str]] = []
    if config.provider == "azure":
        base = (config.azure_endpoint or "").rstrip("/") + "/openai/v1"
        headers.append(
            ("Authorization", f"Bearer {key}") if uses_azure_token(config) else ("api-key", key)
        )
    else:
        base = config.openai_base_url.rstrip("/")
        headers.append(("Authorization", f"Bearer {key}"))
        if org := clean(config.openai_organization):
            headers.append(("OpenAI-Organization", org))
        if project := clean(config.openai_project):
            headers.append(("OpenAI-Project", project))
    return RealtimeTarget(base, tuple(headers), (key,), key=key)


def _upstream_request(
    config: NavaiConfig, options_key: str | None, session: JsonObject
) -> UpstreamRequest:
    """POST ``session`` to ``<base>/realtime/client_secrets`` of the configured provider."""
    ttl = validate_ttl(config)
    body = {"expires_after": {"anchor": "created_at", "seconds": ttl}, "session": session}
    target = realtime_target(config, options_key)
    return UpstreamRequest(
        method="POST",
        url=target.base_url + "/realtime/client_secrets",
        headers=(*target.headers, ("Content-Type", "application/json")),
        content=dumps(body),
        label="OpenAI client_secrets",
        secrets=target.secrets,
    )


def build_realtime_session(config: NavaiConfig, options: ClientSecretOptions) -> JsonObject:
    """The section 2 session for a client's choices: every rule in one place (speech
    provider, allow-lists, lengths, defaults, instruction lines, session template).

    Shared by the client-secret request and the server-controlled call request. A GPT-Live
    model is a 400 (:data:`LIVE_MODEL_REFUSED`): Live sessions are built by ``calls.live``.
    """
    if config.tts_provider == "elevenlabs":
        elevenlabs_key(config)
    session = build_session(config, check_client_choices(config, options))
    model = session.get("model")
    if isinstance(model, str) and is_live_model(model):
        raise BadRequest(LIVE_MODEL_REFUSED.format(model=model))
    return session


# GPT-Live models (gpt-live-1, gpt-live-1.1, dated snapshots) are a separate protocol with no
# browser client secrets; ``gpt-live-transcribe`` is a Realtime transcription model, not one.
_LIVE_MODEL = re.compile(r"gpt-live-\d")
LIVE_MODEL_REFUSED = (
    "{model} is a GPT-Live model: it has no browser client secrets and no Realtime session. "
    "Use the calls route with NAVAI_CALL_RUNTIME=live."
)


def is_live_model(model: str) -> bool:
    """Whether ``model`` names a GPT-Live model (``gpt-live-1``, ``gpt-live-1.1``, ...)."""
    return _LIVE_MODEL.match(model.strip().lower()) is not None


def build_client_secret_request(
    config: NavaiConfig, options: ClientSecretOptions
) -> UpstreamRequest:
    """The upstream ``POST <base>/realtime/client_secrets`` for these options.

    Raises 400 for a bad TTL or a choice the server does not allow, then 401/403 per the
    API key policy, 500 for a bad template.
    """
    session = build_realtime_session(config, options)
    return _upstream_request(config, options.api_key, session)


TRANSCRIPTION_FIELDS = ("model", "language", "prompt", "apiKey")


def build_transcription_request(config: NavaiConfig, body: object) -> UpstreamRequest:
    """A client secret for a ``type: "transcription"`` session (speech-to-text only).

    Body fields (all optional strings): ``model`` (transcription model), ``language``
    (ISO-639-1), ``prompt``, ``apiKey`` (same policy as the realtime route).
    """
    _check_template(
        config.transcription_session, "NAVAI_TRANSCRIPTION_SESSION_JSON", "transcription"
    )
    fields = read_string_fields(body, TRANSCRIPTION_FIELDS)
    check_transcription_choices(config, fields["model"], fields["language"], fields["prompt"])
    transcription: JsonObject = {"model": _pick(fields["model"], config.transcription_model)}
    language = clean(fields["language"]) or clean(config.language)
    if language:
        transcription["language"] = language
    if prompt := clean(fields["prompt"]):
        transcription["prompt"] = prompt
    chosen: JsonObject = {
        "type": "transcription",
        "audio": {"input": {"transcription": transcription}},
    }
    session = deep_merge(config.transcription_session or {}, chosen)
    return _upstream_request(config, fields["apiKey"], session)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``[redacted]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def _redact_value(value: Any, secrets: tuple[str, ...]) -> Any:
    """A decoded JSON value with every secret in its strings (keys too) redacted."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [_redact_value(item, secrets) for item in value]
    if isinstance(value, dict):
        return {redact(k, secrets): _redact_value(v, secrets) for k, v in value.items()}
    return value


def upstream_failure(
    request: UpstreamRequest,
    status: int,
    content: bytes,
    headers: Mapping[str, str] | None = None,
) -> NavaiError:
    """The error for a non-2xx upstream reply: its status and ``<label> failed: <body>``.

    The JSON answer also carries the upstream ``request_id`` (from ``x-request-id``) and
    the upstream error's ``message``/``type``/``code`` as ``upstream_error`` when present.
    Every value from the upstream is redacted *after* decoding (a key written with JSON
    escapes is still a key) and shortened: the body to ``MAX_ECHOED_CHARS``.
    """
    secrets = request.secrets
    text = redact(content.decode("utf-8", errors="replace"), secrets)
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if data is not None:
        clean = _redact_value(data, secrets)
        if clean != data:  # a secret hid behind escapes: echo the decoded, redacted JSON
            text = dumps(clean).decode()
        data = clean
    # Only a client or server error status is passed on; anything else is a bad gateway.
    passed = status if 400 <= status <= 599 else 502
    extra: dict[str, JsonValue] = {}
    if request_id := _request_id(headers):
        extra["request_id"] = _shorten(redact(request_id, secrets), MAX_REQUEST_ID_CHARS)
    if details := _upstream_error_fields(data):
        extra["upstream_error"] = details
    message = f"{request.label} failed: {_shorten(text, MAX_ECHOED_CHARS)}"
    retry_after = _header(headers, "retry-after")
    kept = (
        (("Retry-After", retry_after.strip()),)
        if passed in (429, 503) and retry_after and _RETRY_AFTER.match(retry_after.strip())
        else ()
    )
    return UpstreamError(message, status_code=passed, extra=extra, headers=kept)


# Seconds, or an HTTP date (RFC 9110 section 10.2.3), and nothing else passes on.
_RETRY_AFTER = re.compile(
    r"^(\d{1,9}|[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT)$"
)


def _header(headers: Mapping[str, str] | None, wanted: str) -> str | None:
    for name, value in (headers or {}).items():
        if name.lower() == wanted:
            return value
    return None


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def _request_id(headers: Mapping[str, str] | None) -> str | None:
    return _header(headers, "x-request-id") or _header(headers, "apim-request-id")


def _upstream_error_fields(data: object) -> JsonObject | None:
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    kept: JsonObject = {
        k: _shorten(v, MAX_ECHOED_CHARS) if isinstance(v, str) else v
        for k, v in error.items()
        if k in ("message", "type", "code") and (v is None or isinstance(v, (str, int)))
    }
    return kept or None


def parse_json_reply(request: UpstreamRequest, content: bytes) -> JsonObject:
    try:
        data: JsonValue = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        raise UpstreamError(f"{request.label} returned a reply that is not JSON.") from None
    if not isinstance(data, dict):
        raise UpstreamError(f"{request.label} returned JSON that is not an object.")
    return data


def parse_client_secret_response(
    request: UpstreamRequest,
    status: int,
    content: bytes,
    headers: Mapping[str, str] | None = None,
) -> ClientSecret:
    """Turn OpenAI's reply into a :class:`ClientSecret`, or raise the error to answer with."""
    if not 200 <= status <= 299:
        raise upstream_failure(request, status, content, headers)
    data = parse_json_reply(request, content)
    value = data.get("value")
    expires_at = data.get("expires_at")
    if not isinstance(value, str) or not value:
        raise UpstreamError(f'{request.label} reply has no "value".')
    if not isinstance(expires_at, int) or isinstance(expires_at, bool):
        raise UpstreamError(f'{request.label} reply has no integer "expires_at".')
    return ClientSecret(value=value, expires_at=expires_at)
