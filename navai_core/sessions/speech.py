"""ElevenLabs speech as pure functions: no I/O, every rule of CONTRACT.md section 7.

``build_speech_request`` turns the server's configuration and a request body into the exact
``POST <base>/v1/text-to-speech/<voice id>`` request (or raises the error to answer with);
``parse_speech_response`` turns ElevenLabs' reply into the JSON answer
``{"provider": "elevenlabs", "mimeType": ..., "audioBase64": ...}``. Sending is done by the
same senders (timeouts, retries, pooled clients) as the OpenAI call.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeGuard
from urllib.parse import parse_qs, urlsplit

import attrs

from .._config import DEFAULT_ELEVENLABS_OUTPUT_FORMAT, NavaiConfig
from .._errors import BadRequest, ConfigurationError, UpstreamError
from .._json import JsonObject, dumps
from .._policy import check_length, elevenlabs_key
from .._policy import clean as _clean
from ..routes.body import read_string_fields
from ..upstream.messages import UpstreamReply, UpstreamRequest, upstream_failure
from ..upstream.providers import speech_headers, speech_url

SPEECH_DISABLED = (
    'Speech synthesis is only available when NAVAI_TTS_PROVIDER is set to "elevenlabs".'
)
TEXT_REQUIRED = "text is required."
MISSING_VOICE_ID = (
    "NAVAI_TTS_PROVIDER is elevenlabs but ELEVENLABS_VOICE_ID is not set "
    "and the request has no voiceId."
)
SPEECH_LABEL = "ElevenLabs synthesize"
SPEECH_MAX_TEXT_ENV = "NAVAI_SPEECH_MAX_TEXT_CHARS"
DEFAULT_MIME_TYPE = "audio/mpeg"
# The most audio one reply may carry: 5,000 characters of speech as 44.1 kHz PCM is ~26 MB.
MAX_AUDIO_BYTES = 32 * 1024 * 1024

# Output format prefix -> MIME type, checked in order (CONTRACT section 7).
FORMAT_MIME_TYPES: tuple[tuple[str, str], ...] = (
    ("mp3", "audio/mpeg"),
    ("pcm", "audio/pcm"),
    ("wav", "audio/wav"),
    ("ulaw", "audio/basic"),
)

_STRING_FIELDS = ("text", "voiceId", "modelId", "outputFormat")
# voiceSettings field -> (ElevenLabs key, environment variable of the configured default).
_VOICE_NUMBERS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "stability": ("stability", "ELEVENLABS_STABILITY"),
        "similarityBoost": ("similarity_boost", "ELEVENLABS_SIMILARITY_BOOST"),
        "style": ("style", "ELEVENLABS_STYLE"),
    }
)


@attrs.frozen(kw_only=True)
class SpeechOptions:
    """The fields a client may send to the speech route, type-checked (not yet resolved)."""

    text: str | None = None
    voice_id: str | None = None
    model_id: str | None = None
    output_format: str | None = None
    optimize_streaming_latency: float | None = None
    stability: float | None = None
    similarity_boost: float | None = None
    style: float | None = None
    use_speaker_boost: bool | None = None


def format_mime_type(output_format: str | None) -> str:
    """The MIME type of an ElevenLabs output format, by its prefix (``audio/mpeg`` if unknown)."""
    normal = (_clean(output_format) or "").lower()
    for prefix, mime in FORMAT_MIME_TYPES:
        if normal.startswith(prefix):
            return mime
    return DEFAULT_MIME_TYPE


def speech_mime_type(output_format: str | None, content_type: str | None) -> str:
    """The ``mimeType`` to answer with: the upstream Content-Type, else by output format.

    Only the media type of the Content-Type is kept, lower-cased and without parameters
    (``audio/mpeg; charset=x`` gives ``audio/mpeg``), so it can type a browser ``Blob``.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type or format_mime_type(output_format)


def parse_speech_body(body: object) -> SpeechOptions:
    """Type-check a speech request body; ``None`` (an empty body) counts as ``{}``.

    A field of the wrong type is a 400 naming it. Unlisted keys are ignored.
    """
    strings = read_string_fields(body, _STRING_FIELDS)
    fields = body if isinstance(body, dict) else {}
    settings = fields.get("voiceSettings")
    if settings is None:
        settings = {}
    elif not isinstance(settings, dict):
        raise BadRequest('Field "voiceSettings" must be an object.')
    boost = settings.get("useSpeakerBoost")
    if boost is not None and not isinstance(boost, bool):
        raise BadRequest('Field "voiceSettings.useSpeakerBoost" must be true or false.')
    return SpeechOptions(
        text=strings["text"],
        voice_id=strings["voiceId"],
        model_id=strings["modelId"],
        output_format=strings["outputFormat"],
        optimize_streaming_latency=_request_number(
            fields.get("optimizeStreamingLatency"), "optimizeStreamingLatency"
        ),
        stability=_request_number(settings.get("stability"), "voiceSettings.stability"),
        similarity_boost=_request_number(
            settings.get("similarityBoost"), "voiceSettings.similarityBoost"
        ),
        style=_request_number(settings.get("style"), "voiceSettings.style"),
        use_speaker_boost=boost,
    )


def _is_number(value: object) -> TypeGuard[float]:
    """A finite JSON number (an int or a float), never a bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _request_number(value: object, name: str) -> float | None:
    if value is None:
        return None
    if not _is_number(value):
        raise BadRequest(f'Field "{name}" must be a number.')
    return value


def _config_number(value: object, env_name: str) -> float | None:
    if value is None:
        return None
    if not _is_number(value):
        raise ConfigurationError(f"{env_name} must be a number. Received: {value!r}")
    return value


def round_half_up(value: float) -> int:
    """Round like JavaScript's ``Math.round`` (halves go up), exactly."""
    if isinstance(value, int):
        return value
    floor = math.floor(value)
    return floor + 1 if value - floor >= 0.5 else floor


def _check_speech_config(config: NavaiConfig) -> str:
    """The ElevenLabs key, or the error every speech request answers with."""
    if config.tts_provider != "elevenlabs":
        raise BadRequest(SPEECH_DISABLED)
    for name, message in config.env_errors:
        if name.startswith("ELEVENLABS_") or name == SPEECH_MAX_TEXT_ENV:
            raise ConfigurationError(message)
    return elevenlabs_key(config.elevenlabs_api_key)


def _voice_settings(config: NavaiConfig, options: SpeechOptions) -> JsonObject:
    """``voice_settings``, key by key: the request's value, else the configured one."""
    configured: Mapping[str, object] = {
        "stability": config.elevenlabs_stability,
        "similarityBoost": config.elevenlabs_similarity_boost,
        "style": config.elevenlabs_style,
    }
    requested: Mapping[str, float | None] = {
        "stability": options.stability,
        "similarityBoost": options.similarity_boost,
        "style": options.style,
    }
    settings: JsonObject = {}
    for field, (key, env_name) in _VOICE_NUMBERS.items():
        value = requested[field]
        if value is None:
            value = _config_number(configured[field], env_name)
        if value is not None:
            settings[key] = value
    boost = options.use_speaker_boost
    if boost is None:
        boost = config.elevenlabs_use_speaker_boost
    if boost is not None:
        settings["use_speaker_boost"] = bool(boost)
    return settings


def build_speech_request(config: NavaiConfig, body: object) -> UpstreamRequest:
    """The upstream ``POST <base>/v1/text-to-speech/<voice id>`` for a request body.

    Raises, in this order: 400 when the provider is not ElevenLabs; the configuration
    error (400) when an ``ELEVENLABS_*`` setting is unreadable or the key is missing; 400
    for a field of the wrong type, a blank ``text`` or a value over its length limit; the
    configuration error when neither the request nor the server names a voice.
    """
    key = _check_speech_config(config)
    options = parse_speech_body(body)
    text = _clean(options.text)
    if text is None:
        raise BadRequest(TEXT_REQUIRED)
    check_length("text", text, config.speech_max_text_chars)
    for name, value in (
        ("voiceId", options.voice_id),
        ("modelId", options.model_id),
        ("outputFormat", options.output_format),
    ):
        check_length(name, value, config.max_option_chars)

    voice_id = _clean(options.voice_id) or _clean(config.elevenlabs_voice_id)
    if voice_id is None:
        raise ConfigurationError(MISSING_VOICE_ID)
    if voice_id in (".", ".."):  # a path segment of its own: it would move the upstream path
        if _clean(options.voice_id):
            raise BadRequest('Field "voiceId" is not a voice id.')
        raise ConfigurationError(f"ELEVENLABS_VOICE_ID is not a voice id: {voice_id!r}")
    model_id = _clean(options.model_id) or _clean(config.elevenlabs_model_id)
    output_format = (
        _clean(options.output_format)
        or _clean(config.elevenlabs_output_format)
        or DEFAULT_ELEVENLABS_OUTPUT_FORMAT
    )
    latency = options.optimize_streaming_latency
    if latency is None:
        latency = _config_number(
            config.elevenlabs_optimize_streaming_latency, "ELEVENLABS_OPTIMIZE_STREAMING_LATENCY"
        )
    settings = _voice_settings(config, options)

    query: list[tuple[str, str]] = [("output_format", output_format)]
    if latency is not None:
        query.append(("optimize_streaming_latency", str(round_half_up(latency))))
    url = speech_url(config, voice_id, query)

    payload: JsonObject = {"text": text}
    if model_id is not None:
        payload["model_id"] = model_id
    if settings:
        payload["voice_settings"] = settings
    return UpstreamRequest(
        method="POST",
        url=url,
        headers=(
            *speech_headers(key),
            ("Content-Type", "application/json"),
            ("Accept", format_mime_type(output_format)),
        ),
        content=dumps(payload),
        label=SPEECH_LABEL,
        secrets=(key,),
        max_reply_bytes=MAX_AUDIO_BYTES,
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def parse_speech_response(request: UpstreamRequest, reply: UpstreamReply) -> JsonObject:
    """Turn ElevenLabs' reply into the speech answer, or raise the error to answer with.

    A non-2xx reply is ``ElevenLabs synthesize failed: <body>`` with its status; a 2xx
    reply without audio is a 502. The MIME type is the upstream Content-Type, else the
    one of the ``output_format`` the request asked for.
    """
    if not 200 <= reply.status <= 299:
        raise upstream_failure(request, reply.status, reply.content, reply.headers)
    if not reply.content:
        raise UpstreamError(f"{request.label} returned no audio.")
    asked = parse_qs(urlsplit(request.url).query).get("output_format", [None])[0]
    return {
        "provider": "elevenlabs",
        "mimeType": speech_mime_type(asked, _header(reply.headers, "content-type")),
        "audioBase64": base64.b64encode(reply.content).decode("ascii"),
    }
