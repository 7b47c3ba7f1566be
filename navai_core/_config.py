"""navai's configuration: one immutable value, built in code or from the environment."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias, TypeVar

import attrs
from limits import RateLimitItem

from ._models import deprecation_notices
from ._protect import limit_problem, parse_limit
from ._session_template import session_problems

DEFAULT_MODEL = "gpt-realtime-2.1"
DEFAULT_VOICE = "marin"
DEFAULT_INSTRUCTIONS = "You are a helpful assistant."
DEFAULT_TTL_SECONDS = 600
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_FUNCTIONS_FOLDERS = "src/ai/functions-modules"
DEFAULT_ELEVENLABS_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_ELEVENLABS_OUTPUT_FORMAT = "mp3_44100_128"
DEFAULT_SPEECH_MAX_TEXT_CHARS = 5000
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_FUNCTION_TIMEOUT_SECONDS = 30.0
DEFAULT_CALL_MAX_SECONDS = 1800.0
# Per client and route: a voice agent calls a tool every few seconds at most.
DEFAULT_FUNCTIONS_LIMIT = "120/minute"

SpeechProvider = Literal["openai", "elevenlabs"]
Provider = Literal["openai", "azure"]
KeySource: TypeAlias = "str | Callable[[], str] | None"
DEFAULT_TRANSCRIPTION_MODEL = "gpt-live-transcribe"

_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#\s]+$", re.IGNORECASE)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

D = TypeVar("D")
V = TypeVar("V")


@attrs.frozen(kw_only=True)
class NavaiConfig:
    """Every setting of a navai server. Build it in code or with :meth:`from_env`.

    Nothing here raises for a bad value: a misconfiguration must not stop a server
    from booting. :meth:`problems` lists what is wrong (log it at start-up) and each
    request that depends on a broken setting answers with a clear JSON error.
    Keys never appear in ``repr()``.
    """

    # --- client secret (CONTRACT section 2) ---
    # A string, or a callable asked once per mint (key rotation, vaults).
    openai_api_key: KeySource = attrs.field(default=None, repr=False)
    model: str = DEFAULT_MODEL
    voice: str = DEFAULT_VOICE
    instructions: str = DEFAULT_INSTRUCTIONS
    language: str | None = None
    voice_accent: str | None = None
    voice_tone: str | None = None
    client_secret_ttl_seconds: int = DEFAULT_TTL_SECONDS
    allow_api_key_from_request: bool = False

    # --- what a browser may choose (see docs/security.md) ---
    allowed_models: tuple[str, ...] | None = None
    allowed_voices: tuple[str, ...] | None = None
    allowed_transcription_models: tuple[str, ...] | None = None
    allow_client_instructions: bool = True
    max_instructions_chars: int = 4000
    max_option_chars: int = 100

    # --- upstream ---
    openai_base_url: str = DEFAULT_OPENAI_BASE_URL
    openai_organization: str | None = None
    openai_project: str | None = None
    upstream_timeout_seconds: float = 15.0
    upstream_connect_timeout_seconds: float = 5.0
    upstream_max_retries: int = 2
    # Extra Realtime session settings sent with every mint; request fields still win for
    # model, voice and instructions. Checked by problems() for what OpenAI rejects.
    session: dict[str, Any] | None = None
    transcription_session: dict[str, Any] | None = None
    transcription_model: str = DEFAULT_TRANSCRIPTION_MODEL

    # --- Azure OpenAI ---
    provider: Provider = "openai"
    azure_endpoint: str | None = None
    azure_api_key: KeySource = attrs.field(default=None, repr=False)
    azure_deployment: str | None = None
    # Entra ID: a callable returning a bearer token, asked once per mint.
    azure_token_provider: Callable[[], str] | None = attrs.field(default=None, repr=False)

    # --- backend functions (CONTRACT sections 4 and 5) ---
    functions_enabled: bool = True
    functions_base_dir: str | None = None
    functions_folders: str | None = None
    functions_modules: str | None = None
    agents_folders: str | None = None
    expose_function_errors: bool = False
    # Time limit of one call (504 past it) for functions without their own timeout=;
    # None or 0: no limit.
    function_timeout_seconds: float | None = DEFAULT_FUNCTION_TIMEOUT_SECONDS

    # --- protection (see docs/security.md) ---
    # Hooks get the RequestContext; None/True allows, False answers 403, or raise
    # Unauthorized/Forbidden for your own status and message. Sync or async.
    authorize_client_secret: Callable[..., Any] | None = attrs.field(default=None, repr=False)
    authorize_functions: Callable[..., Any] | None = attrs.field(default=None, repr=False)
    # The rate-limit key of a request (a user id, say); default: the client address.
    rate_limit_key: Callable[..., str | None] | None = attrs.field(default=None, repr=False)
    rate_limit_client_secret: str | None = "10/minute"
    rate_limit_functions: str | None = DEFAULT_FUNCTIONS_LIMIT
    rate_limit_speech: str | None = "60/minute"
    rate_limit_storage: str = "memory://"

    # --- server-controlled calls (CONTRACT section 8, docs/calls.md) ---
    calls_path: str | None = "/navai/realtime/calls"
    # navai keeps a control connection to every call it creates and runs the tools there
    # (only when the function routes are on).
    call_sideband: bool = True
    call_max_seconds: float = DEFAULT_CALL_MAX_SECONDS
    # Minutes of call time per rate-limit key per window, e.g. "60/day"; None: no budget.
    call_budget: str | None = None
    rate_limit_calls: str | None = "10/minute"
    # False closes POST <execute path> (404) while the list stays: tools run on the server.
    browser_execute: bool = True
    # on_call_end(CallSummary) and on_call_event(call_id, event), sync or async.
    on_call_end: Callable[..., Any] | None = attrs.field(default=None, repr=False)
    on_call_event: Callable[..., Any] | None = attrs.field(default=None, repr=False)

    # --- HTTP ---
    cors_origins: tuple[str, ...] | None = None
    # Access-Control-Allow-Credentials for an allowed origin (never with "*").
    cors_allow_credentials: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    client_secret_path: str = "/navai/realtime/client-secret"
    transcription_secret_path: str | None = "/navai/realtime/transcription-secret"
    functions_path: str = "/navai/functions"
    execute_path: str = "/navai/functions/execute"
    speech_path: str = "/navai/speech/synthesize"
    health_path: str | None = None
    openapi_path: str | None = None

    # --- speech provider (CONTRACT section 7) ---
    tts_provider: SpeechProvider = "openai"
    elevenlabs_api_key: str | None = attrs.field(default=None, repr=False)
    elevenlabs_voice_id: str | None = None
    elevenlabs_base_url: str = DEFAULT_ELEVENLABS_BASE_URL
    elevenlabs_model_id: str | None = None
    elevenlabs_output_format: str = DEFAULT_ELEVENLABS_OUTPUT_FORMAT
    elevenlabs_optimize_streaming_latency: float | None = None
    elevenlabs_stability: float | None = None
    elevenlabs_similarity_boost: float | None = None
    elevenlabs_style: float | None = None
    elevenlabs_use_speaker_boost: bool | None = None
    # Longest text (characters, after trimming) one speech request may send.
    speech_max_text_chars: int = DEFAULT_SPEECH_MAX_TEXT_CHARS

    # Settings that could not be read from the environment: (variable, message).
    env_errors: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> NavaiConfig:
        """Read the variables of CONTRACT.md section 3 (and navai's own) from ``env``.

        ``env`` defaults to ``os.environ``; blank values count as unset. Keyword
        ``overrides`` win over the environment.
        """
        r = _EnvReader(os.environ if env is None else env)
        values: dict[str, object] = {
            "openai_api_key": r.raw("OPENAI_API_KEY"),
            "model": r.text("OPENAI_REALTIME_MODEL", DEFAULT_MODEL),
            "voice": r.text("OPENAI_REALTIME_VOICE", DEFAULT_VOICE),
            "instructions": r.text("OPENAI_REALTIME_INSTRUCTIONS", DEFAULT_INSTRUCTIONS),
            "language": r.raw("OPENAI_REALTIME_LANGUAGE"),
            "voice_accent": r.raw("OPENAI_REALTIME_VOICE_ACCENT"),
            "voice_tone": r.raw("OPENAI_REALTIME_VOICE_TONE"),
            "client_secret_ttl_seconds": r.integer(
                "OPENAI_REALTIME_CLIENT_SECRET_TTL", DEFAULT_TTL_SECONDS
            ),
            "allow_api_key_from_request": r.flag("NAVAI_ALLOW_FRONTEND_API_KEY", False),
            "allowed_models": _split_list(r.raw("NAVAI_ALLOWED_MODELS")),
            "allowed_voices": _split_list(r.raw("NAVAI_ALLOWED_VOICES")),
            "allowed_transcription_models": _split_list(
                r.raw("NAVAI_ALLOWED_TRANSCRIPTION_MODELS")
            ),
            "allow_client_instructions": r.flag("NAVAI_ALLOW_CLIENT_INSTRUCTIONS", True),
            "max_instructions_chars": r.integer("NAVAI_MAX_INSTRUCTIONS_CHARS", 4000),
            "max_option_chars": r.integer("NAVAI_MAX_OPTION_CHARS", 100),
            "openai_base_url": r.text("OPENAI_BASE_URL", DEFAULT_OPENAI_BASE_URL),
            "openai_organization": r.raw("OPENAI_ORG_ID"),
            "openai_project": r.raw("OPENAI_PROJECT_ID"),
            "upstream_timeout_seconds": r.number("NAVAI_UPSTREAM_TIMEOUT", 15.0),
            "upstream_connect_timeout_seconds": r.number("NAVAI_UPSTREAM_CONNECT_TIMEOUT", 5.0),
            "upstream_max_retries": r.integer("NAVAI_UPSTREAM_MAX_RETRIES", 2),
            "session": r.json_object("NAVAI_SESSION_JSON"),
            "transcription_session": r.json_object("NAVAI_TRANSCRIPTION_SESSION_JSON"),
            "transcription_model": r.text("NAVAI_TRANSCRIPTION_MODEL", DEFAULT_TRANSCRIPTION_MODEL),
            "provider": _provider(r.raw("NAVAI_PROVIDER"), r.raw("AZURE_OPENAI_ENDPOINT")),
            "azure_endpoint": r.raw("AZURE_OPENAI_ENDPOINT"),
            "azure_api_key": r.raw("AZURE_OPENAI_API_KEY"),
            "azure_deployment": r.raw("AZURE_OPENAI_DEPLOYMENT"),
            "functions_enabled": r.flag("NAVAI_FUNCTIONS_ENABLED", True),
            "functions_base_dir": r.raw("NAVAI_FUNCTIONS_BASE_DIR"),
            "functions_folders": r.raw("NAVAI_FUNCTIONS_FOLDERS"),
            "functions_modules": r.raw("NAVAI_FUNCTIONS_MODULES"),
            "agents_folders": r.raw("NAVAI_AGENTS_FOLDERS"),
            "expose_function_errors": r.flag("NAVAI_EXPOSE_FUNCTION_ERRORS", False),
            "function_timeout_seconds": r.number(
                "NAVAI_FUNCTION_TIMEOUT", DEFAULT_FUNCTION_TIMEOUT_SECONDS
            ),
            "cors_origins": _split_origins(r.raw("NAVAI_CORS_ORIGIN")),
            "cors_allow_credentials": r.flag("NAVAI_CORS_ALLOW_CREDENTIALS", False),
            "rate_limit_client_secret": r.text("NAVAI_RATE_LIMIT_CLIENT_SECRET", "10/minute"),
            "rate_limit_functions": r.text("NAVAI_RATE_LIMIT_FUNCTIONS", DEFAULT_FUNCTIONS_LIMIT),
            "rate_limit_speech": r.text("NAVAI_RATE_LIMIT_SPEECH", "60/minute"),
            "rate_limit_storage": r.text("NAVAI_RATE_LIMIT_STORAGE", "memory://"),
            "call_sideband": r.flag("NAVAI_CALL_SIDEBAND", True),
            "call_max_seconds": r.number("NAVAI_CALL_MAX_SECONDS", DEFAULT_CALL_MAX_SECONDS),
            "call_budget": r.raw("NAVAI_CALL_BUDGET"),
            "rate_limit_calls": r.text("NAVAI_RATE_LIMIT_CALLS", "10/minute"),
            "browser_execute": r.flag("NAVAI_BROWSER_EXECUTE", True),
            "max_body_bytes": r.integer("NAVAI_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            "health_path": r.raw("NAVAI_HEALTH_PATH"),
            "openapi_path": r.raw("NAVAI_OPENAPI_PATH"),
            "tts_provider": (
                "elevenlabs"
                if (r.raw("NAVAI_TTS_PROVIDER") or "").lower() == "elevenlabs"
                else "openai"
            ),
            "elevenlabs_api_key": r.raw("ELEVENLABS_API_KEY"),
            "elevenlabs_voice_id": r.raw("ELEVENLABS_VOICE_ID"),
            "elevenlabs_base_url": r.text("ELEVENLABS_BASE_URL", DEFAULT_ELEVENLABS_BASE_URL),
            "elevenlabs_model_id": r.raw("ELEVENLABS_MODEL_ID"),
            "elevenlabs_output_format": r.text(
                "ELEVENLABS_OUTPUT_FORMAT", DEFAULT_ELEVENLABS_OUTPUT_FORMAT
            ),
            "elevenlabs_optimize_streaming_latency": r.number(
                "ELEVENLABS_OPTIMIZE_STREAMING_LATENCY", None
            ),
            "elevenlabs_stability": r.number("ELEVENLABS_STABILITY", None),
            "elevenlabs_similarity_boost": r.number("ELEVENLABS_SIMILARITY_BOOST", None),
            "elevenlabs_style": r.number("ELEVENLABS_STYLE", None),
            "elevenlabs_use_speaker_boost": r.flag("ELEVENLABS_USE_SPEAKER_BOOST", None),
            "speech_max_text_chars": r.integer(
                "NAVAI_SPEECH_MAX_TEXT_CHARS", DEFAULT_SPEECH_MAX_TEXT_CHARS
            ),
        }
        values["env_errors"] = tuple(r.errors)
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def problems(self) -> list[str]:
        """Human-readable misconfigurations, for one log line each at start-up."""
        found = [message for _, message in self.env_errors]
        for name, text in (
            ("NAVAI_RATE_LIMIT_CLIENT_SECRET", self.rate_limit_client_secret),
            ("NAVAI_RATE_LIMIT_FUNCTIONS", self.rate_limit_functions),
            ("NAVAI_RATE_LIMIT_SPEECH", self.rate_limit_speech),
            ("NAVAI_RATE_LIMIT_CALLS", self.rate_limit_calls),
            ("NAVAI_CALL_BUDGET", self.call_budget),
        ):
            if problem := limit_problem(name, text):
                found.append(problem)
        timeout = self.function_timeout_seconds
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout >= 0):
            found.append(
                f"NAVAI_FUNCTION_TIMEOUT must be 0 (no limit) or more. Received: {timeout!r}"
            )
        if self.cors_allow_credentials and self.cors_origins and "*" in self.cors_origins:
            found.append(
                'NAVAI_CORS_ALLOW_CREDENTIALS needs the allowed origins listed, not "*": '
                "credentials are not allowed."
            )
        for env_name, route_path in (
            ("NAVAI_HEALTH_PATH", self.health_path),
            ("NAVAI_OPENAPI_PATH", self.openapi_path),
        ):
            if route_path is not None and not route_path.startswith("/"):
                found.append(f"{env_name} must start with /. Received: {route_path!r}")
        seconds = self.call_max_seconds
        if not (isinstance(seconds, (int, float)) and seconds > 0):
            found.append(f"NAVAI_CALL_MAX_SECONDS must be more than 0. Received: {seconds!r}")
        ttl = self.client_secret_ttl_seconds
        if not any(name == TTL_ENV for name, _ in self.env_errors) and not _ttl_ok(ttl):
            found.append(f"{TTL_ENV} must be between {TTL_MIN} and {TTL_MAX}. Received: {ttl}")
        key_name = "AZURE_OPENAI_API_KEY" if self.provider == "azure" else "OPENAI_API_KEY"
        has_key = self.backend_key_source() is not None or self.azure_token_provider is not None
        if not has_key:
            if self.allow_api_key_from_request:
                found.append(f"{key_name} is not set: each request must send apiKey.")
            else:
                found.append(
                    f"{key_name} is not set and request keys are not allowed: "
                    "client-secret requests will answer 401."
                )
        for origin in self.cors_origins or ():
            if origin != "*" and not _ORIGIN.match(origin):
                found.append(
                    f'NAVAI_CORS_ORIGIN entry "{origin}" has no scheme or is not an origin: '
                    'browsers send "https://host[:port]", which it never matches.'
                )
        if self.provider == "azure" and not _clean(self.azure_endpoint):
            found.append("NAVAI_PROVIDER is azure but AZURE_OPENAI_ENDPOINT is not set.")
        found += session_problems(self.session, "NAVAI_SESSION_JSON", "realtime")
        found += session_problems(
            self.transcription_session, "NAVAI_TRANSCRIPTION_SESSION_JSON", "transcription"
        )
        if self.tts_provider == "elevenlabs":
            if not _clean(self.elevenlabs_api_key):
                found.append("NAVAI_TTS_PROVIDER is elevenlabs but ELEVENLABS_API_KEY is not set.")
            if not _clean(self.elevenlabs_voice_id):
                found.append("NAVAI_TTS_PROVIDER is elevenlabs but ELEVENLABS_VOICE_ID is not set.")
            found += _speech_range_problems(self)
        return found

    def model_notices(self) -> list[str]:
        """A start-up warning for each configured model OpenAI has announced it shuts down
        (the default model, allow-listed models, session templates, transcription)."""
        named: list[tuple[str, object]] = [
            ("OPENAI_REALTIME_MODEL", self.model),
            ("NAVAI_TRANSCRIPTION_MODEL", self.transcription_model),
        ]
        named += [("NAVAI_ALLOWED_MODELS", model) for model in self.allowed_models or ()]
        for env_name, template in (
            ("NAVAI_SESSION_JSON", self.session),
            ("NAVAI_TRANSCRIPTION_SESSION_JSON", self.transcription_session),
        ):
            if isinstance(template, dict):
                named.append((env_name, template.get("model")))
                audio = template.get("audio")
                given = audio.get("input") if isinstance(audio, dict) else None
                heard = given.get("transcription") if isinstance(given, dict) else None
                if isinstance(heard, dict):
                    named.append((env_name, heard.get("model")))
        return deprecation_notices(named)

    def backend_key_source(self) -> KeySource:
        """The server's key for the configured provider (a string or a callable), if any."""
        source = self.azure_api_key if self.provider == "azure" else self.openai_api_key
        if isinstance(source, str):
            return _clean(source)
        return source


# ElevenLabs settings and the range ElevenLabs accepts (values outside are only warned about:
# ElevenLabs decides, and its ranges may widen).
_SPEECH_RANGES = (
    ("elevenlabs_stability", "ELEVENLABS_STABILITY", 0.0, 1.0),
    ("elevenlabs_similarity_boost", "ELEVENLABS_SIMILARITY_BOOST", 0.0, 1.0),
    ("elevenlabs_style", "ELEVENLABS_STYLE", 0.0, 1.0),
    ("elevenlabs_optimize_streaming_latency", "ELEVENLABS_OPTIMIZE_STREAMING_LATENCY", 0.0, 4.0),
)


def _speech_range_problems(config: NavaiConfig) -> list[str]:
    found = []
    for attr, env_name, low, high in _SPEECH_RANGES:
        value = getattr(config, attr)
        if value is not None and not (
            isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
        ):
            found.append(f"{env_name} should be between {low:g} and {high:g}. Received: {value!r}")
    limit = config.speech_max_text_chars
    if not (isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1):
        found.append(f"NAVAI_SPEECH_MAX_TEXT_CHARS must be at least 1. Received: {limit!r}")
    return found


def _provider(explicit: str | None, azure_endpoint: str | None) -> Provider:
    if explicit is not None:
        return "azure" if explicit.lower() == "azure" else "openai"
    return "azure" if azure_endpoint else "openai"


TTL_ENV = "OPENAI_REALTIME_CLIENT_SECRET_TTL"
TTL_MIN = 10
TTL_MAX = 7200


def ttl_error_text(ttl: object) -> str:
    return f"clientSecretTtlSeconds must be between {TTL_MIN} and {TTL_MAX}. Received: {ttl}"


def _ttl_ok(ttl: object) -> bool:
    return isinstance(ttl, int) and not isinstance(ttl, bool) and TTL_MIN <= ttl <= TTL_MAX


def _clean(value: str | None) -> str | None:
    """Trim ``value``; blank counts as unset."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def _split_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(part.strip() for part in value.split(",") if part.strip())
    return items or None


def _split_origins(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    origins = tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())
    return origins or None


class _EnvReader:
    """Reads typed values from an environment mapping, collecting what it cannot read."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[tuple[str, str]] = []

    def raw(self, name: str) -> str | None:
        return _clean(self.env.get(name))

    def text(self, name: str, default: D) -> str | D:
        return self.raw(name) or default

    def _parse(self, name: str, default: D, parse: Callable[[str], V], kind: str) -> V | D:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except ValueError:
            self.errors.append((name, f"{name} must be {kind}. Received: {raw!r}"))
            return default

    def integer(self, name: str, default: int) -> int:
        return self._parse(name, default, int, "an integer")

    def number(self, name: str, default: D) -> float | D:
        return self._parse(name, default, _finite_float, "a number")

    def flag(self, name: str, default: D) -> bool | D:
        return self._parse(name, default, _flag, "true or false")

    def json_object(self, name: str) -> dict[str, Any] | None:
        return self._parse(name, None, _json_object, "a JSON object")


def _finite_float(raw: str) -> float:
    value = float(raw)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(raw)
    return value


def _json_object(raw: str) -> dict[str, Any]:
    value = json.loads(raw)  # JSONDecodeError is a ValueError
    if not isinstance(value, dict):
        raise ValueError(raw)
    return value


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)


def rate_limit(config: NavaiConfig, name: str) -> RateLimitItem | None:
    """The parsed rate limit of setting ``name``. One that cannot be read falls back to the
    setting's default (and is reported by :meth:`NavaiConfig.problems`), so a typo never
    switches protection off."""
    try:
        return parse_limit(getattr(config, name))
    except ValueError:
        return parse_limit(attrs.fields_dict(NavaiConfig)[name].default)
