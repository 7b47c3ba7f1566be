"""The server's rules about what a request may do, each in one place: the secret's lifetime
(TTL), the API key policy, the checks of what a browser may choose, and the ElevenLabs key.
Each rule gives the text a client gets on the wire (the contract's) and the start-up warning
an operator reads (naming the environment variable), from one check.

The rules read values, not the configuration: ``NavaiConfig.problems()`` asks them for its
warnings, and the request builders (``sessions/``) hand them the settings they apply to.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TypeAlias

from ._errors import BadRequest, ConfigurationError, Forbidden, Unauthorized
from ._logging import logger

KeySource: TypeAlias = "str | Callable[[], str] | None"


def clean(value: str | None) -> str | None:
    """Trim ``value``; blank counts as unset."""
    if value is None:
        return None
    value = value.strip()
    return value or None


# ----- the client secret's lifetime (CONTRACT section 2) -----------------------------------

TTL_ENV = "OPENAI_REALTIME_CLIENT_SECRET_TTL"
TTL_MIN = 10
TTL_MAX = 7200


def _ttl_ok(ttl: object) -> bool:
    return isinstance(ttl, int) and not isinstance(ttl, bool) and TTL_MIN <= ttl <= TTL_MAX


def check_ttl(ttl: int, env_errors: tuple[tuple[str, str], ...]) -> int:
    """The configured TTL, or the 400 every mint answers when it is not an integer in
    10..7200 (the contract's text, naming ``clientSecretTtlSeconds``); ``env_errors`` are the
    settings the environment reader could not read."""
    for name, message in env_errors:
        if name == TTL_ENV:
            raise ConfigurationError(message)
    if not _ttl_ok(ttl):
        raise ConfigurationError(
            f"clientSecretTtlSeconds must be between {TTL_MIN} and {TTL_MAX}. Received: {ttl}"
        )
    return ttl


def ttl_problem(ttl: object, env_errors: tuple[tuple[str, str], ...]) -> str | None:
    """The same rule as a start-up warning, naming the variable (an unreadable value is
    already reported by the environment reader)."""
    if any(name == TTL_ENV for name, _ in env_errors) or _ttl_ok(ttl):
        return None
    return f"{TTL_ENV} must be between {TTL_MIN} and {TTL_MAX}. Received: {ttl}"


# ----- the API key policy (CONTRACT section 2) -------------------------------------------------

MISSING_KEY = "Missing API key. Configure openaiApiKey or send apiKey in request."
REQUEST_KEY_DISABLED = (
    "Passing apiKey from request is disabled. Set allowApiKeyFromRequest=true to enable it."
)


def resolve_api_key(backend_key: str | None, request_key: str | None, allow_request: bool) -> str:
    """The key to call OpenAI with, per the policy table: the backend key always wins."""
    if key := clean(backend_key):
        return key
    if key := clean(request_key):
        if allow_request:
            return key
        # The wire text is the contract's (the Node package's names); the log names ours.
        logger.warning(
            "refused with 403: the request sent its own apiKey, which needs "
            "NAVAI_ALLOW_FRONTEND_API_KEY=true, and the server has no key (OPENAI_API_KEY)"
        )
        raise Forbidden(REQUEST_KEY_DISABLED)
    logger.warning(
        "refused with 401: the server has no key (set OPENAI_API_KEY, or AZURE_OPENAI_API_KEY "
        "with NAVAI_PROVIDER=azure) and the request sent no apiKey"
    )
    raise Unauthorized(MISSING_KEY)


def current_key(source: KeySource) -> str | None:
    """A key from a string or a callable (asked now), trimmed; blank is missing."""
    return clean(source() if callable(source) else source)


def key_problem(name: str, configured: bool, allow_request: bool) -> str | None:
    """The key policy as a start-up warning: what every mint will answer without a key.
    ``name``: the variable of the provider's key; ``configured``: a key or token source is
    set."""
    if configured:
        return None
    if allow_request:
        return f"{name} is not set: each request must send apiKey."
    return (
        f"{name} is not set and NAVAI_ALLOW_FRONTEND_API_KEY is off: "
        "client-secret requests will answer 401."
    )


# ----- what a browser may choose (docs/security.md) ----------------------------------------------

# C0/C1 control characters and the Unicode line and paragraph separators: a field that
# becomes part of one instruction line must not start another (instructions may).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_allowed(field: str, value: str | None, allowed: tuple[str, ...] | None) -> None:
    chosen = clean(value)
    if chosen is not None and allowed is not None and chosen not in allowed:
        raise BadRequest(f'Field "{field}" must be one of: {", ".join(allowed)}.')


def check_one_line(field: str, value: str | None) -> None:
    if value is not None and _CONTROL.search(value):
        raise BadRequest(f'Field "{field}" must not contain control characters.')


def check_length(field: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise BadRequest(f'Field "{field}" is longer than {limit} characters.')


# ----- the ElevenLabs key (CONTRACT section 7) ----------------------------------------------------

MISSING_ELEVENLABS_KEY = "NAVAI_TTS_PROVIDER is elevenlabs but ELEVENLABS_API_KEY is not set."


def elevenlabs_key(configured: str | None) -> str:
    """The ElevenLabs key, or the error every request that needs it answers: a text-only
    session with nothing to speak it would be a silent agent."""
    key = clean(configured)
    if key is None:
        raise ConfigurationError(MISSING_ELEVENLABS_KEY)
    return key


# ElevenLabs settings and the range ElevenLabs accepts (values outside are only warned about:
# ElevenLabs decides, and its ranges may widen).
_SPEECH_RANGES = (
    ("ELEVENLABS_STABILITY", 0.0, 1.0),
    ("ELEVENLABS_SIMILARITY_BOOST", 0.0, 1.0),
    ("ELEVENLABS_STYLE", 0.0, 1.0),
    ("ELEVENLABS_OPTIMIZE_STREAMING_LATENCY", 0.0, 4.0),
)


def elevenlabs_problems(settings: Mapping[str, object]) -> list[str]:
    """Start-up warnings of the ElevenLabs settings (none unless it is the provider);
    ``settings``: each setting's value by its environment variable."""
    if settings.get("NAVAI_TTS_PROVIDER") != "elevenlabs":
        return []
    found = []
    if not _text(settings.get("ELEVENLABS_API_KEY")):
        found.append(MISSING_ELEVENLABS_KEY)
    if not _text(settings.get("ELEVENLABS_VOICE_ID")):
        found.append("NAVAI_TTS_PROVIDER is elevenlabs but ELEVENLABS_VOICE_ID is not set.")
    for env_name, low, high in _SPEECH_RANGES:
        value = settings.get(env_name)
        if value is not None and not (
            isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
        ):
            found.append(f"{env_name} should be between {low:g} and {high:g}. Received: {value!r}")
    limit = settings.get("NAVAI_SPEECH_MAX_TEXT_CHARS")
    if not (isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1):
        found.append(f"NAVAI_SPEECH_MAX_TEXT_CHARS must be at least 1. Received: {limit!r}")
    return found


def _text(value: object) -> str | None:
    return clean(value) if isinstance(value, str) else None
