"""The client-secret operation as pure functions: no I/O, every rule of CONTRACT.md section 2.

``build_client_secret_request`` turns the server's configuration and a request body into
the exact upstream request; ``parse_client_secret_response`` turns the upstream reply
into a :class:`ClientSecret` or raises a :class:`NavaiError` that knows its HTTP answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from .._config import NavaiConfig
from .._errors import BadRequest, ConfigurationError, UpstreamError
from .._json import JsonObject, dumps
from .._policy import (
    check_allowed,
    check_length,
    check_one_line,
    check_ttl,
    clean,
    elevenlabs_key,
)
from ..routes.body import read_string_fields
from ..upstream.messages import UpstreamRequest, parse_json_reply, upstream_failure
from ..upstream.providers import provider_for, realtime_target
from .template import session_problems

# Request field name -> attribute of ClientSecretOptions.
CLIENT_SECRET_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "model": "model",
        "voice": "voice",
        "instructions": "instructions",
        "language": "language",
        "voiceAccent": "voice_accent",
        "voiceTone": "voice_tone",
        "apiKey": "api_key",
    }
)


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
    default_model = provider_for(config).default_model(config)
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


def _upstream_request(
    config: NavaiConfig, options_key: str | None, session: JsonObject
) -> UpstreamRequest:
    """POST ``session`` to ``<base>/realtime/client_secrets`` of the configured provider."""
    ttl = validate_ttl(config)
    body = {"expires_after": {"anchor": "created_at", "seconds": ttl}, "session": session}
    target = realtime_target(config, options_key)
    return UpstreamRequest(
        method="POST",
        url=target.client_secrets_url(),
        headers=(*target.headers, ("Content-Type", "application/json")),
        content=dumps(body),
        label="OpenAI client_secrets",
        secrets=target.secrets,
    )


def validate_ttl(config: NavaiConfig) -> int:
    """The configured TTL, or the 400 every mint answers when it is not an integer in
    10..7200 (the contract's text, naming ``clientSecretTtlSeconds``)."""
    return check_ttl(config.client_secret_ttl_seconds, config.env_errors)


def check_client_choices(config: NavaiConfig, options: ClientSecretOptions) -> ClientSecretOptions:
    """Apply what the server lets a browser choose: allow-lists, lengths, one-line fields,
    the instructions switch. Returns the options to use (client instructions dropped when
    they are not allowed)."""
    check_allowed("model", options.model, config.allowed_models)
    check_allowed("voice", options.voice, config.allowed_voices)
    if not config.allow_client_instructions:
        options = attrs.evolve(options, instructions=None)
    check_length("instructions", options.instructions, config.max_instructions_chars)
    for field, value in (
        ("language", options.language),
        ("voiceAccent", options.voice_accent),
        ("voiceTone", options.voice_tone),
        ("model", options.model),
        ("voice", options.voice),
    ):
        check_length(field, value, config.max_option_chars)
        check_one_line(field, value)
    return options


def check_transcription_choices(
    config: NavaiConfig, model: str | None, language: str | None, prompt: str | None
) -> None:
    """The same rules for a transcription secret's ``model``, ``language`` and ``prompt``."""
    check_length("model", model, config.max_option_chars)
    check_length("language", language, config.max_option_chars)
    check_length("prompt", prompt, config.max_instructions_chars)
    check_one_line("model", model)
    check_one_line("language", language)
    check_allowed("model", model, config.allowed_transcription_models)


def build_realtime_session(config: NavaiConfig, options: ClientSecretOptions) -> JsonObject:
    """The section 2 session for a client's choices: every rule in one place (speech
    provider, allow-lists, lengths, defaults, instruction lines, session template).

    Shared by the client-secret request and the server-controlled call request. A GPT-Live
    model is a 400 (:data:`LIVE_MODEL_REFUSED`): Live sessions are built by ``calls.live``.
    """
    if config.tts_provider == "elevenlabs":
        elevenlabs_key(config.elevenlabs_api_key)
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
