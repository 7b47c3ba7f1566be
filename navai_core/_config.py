"""navai's configuration: one immutable value, built in code or from the environment."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, TypeAlias, TypeVar

import attrs
from limits import RateLimitItem

from ._errors import SettingProblem, SettingsError
from ._models import deprecation_notices
from ._policy import KeySource, elevenlabs_problems, key_problem, ttl_problem
from ._policy import clean as _clean
from .calls.webhooks import webhook_secret_problem
from .concurrency.threads import DEFAULT_FUNCTION_THREADS
from .limits.rate import parse_limit
from .records.cost import read_prices_file
from .routes.cors import cors_problems
from .sessions.template import session_problems

DEFAULT_MODEL = "gpt-realtime-2.1"
DEFAULT_VOICE = "marin"
DEFAULT_INSTRUCTIONS = "You are a helpful assistant."
DEFAULT_TTL_SECONDS = 600
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_ELEVENLABS_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_ELEVENLABS_OUTPUT_FORMAT = "mp3_44100_128"
DEFAULT_SPEECH_MAX_TEXT_CHARS = 5000
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_FUNCTION_TIMEOUT_SECONDS = 30.0
DEFAULT_CALL_MAX_SECONDS = 1800.0
DEFAULT_CALL_LEASE_SECONDS = 5.0
DEFAULT_CALL_MAX_LIVE = 1000
# Per client and route: a voice agent calls a tool every few seconds at most.
DEFAULT_FUNCTIONS_LIMIT = "120/minute"

SpeechProvider = Literal["openai", "elevenlabs"]
Provider = Literal["openai", "azure"]
DEFAULT_TRANSCRIPTION_MODEL = "gpt-live-transcribe"
CallRuntime = Literal["realtime", "live"]
CALL_RUNTIMES: tuple[CallRuntime, ...] = ("realtime", "live")
DEFAULT_LIVE_MODEL = "gpt-live-1.1"
# What navai does when a browser changes the session of a Realtime call (the session guard).
CLIENT_UPDATE_MODES = ("restore", "hangup")
# The Responses model OpenAI's GPT-Live WebRTC guide delegates to in its example.
DEFAULT_LIVE_BACKEND_MODEL = "gpt-5.6-terra"

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

D = TypeVar("D")
V = TypeVar("V")


#: What a rate-limit setting expects (``NAVAI_RATE_LIMIT_*``, ``NAVAI_CALL_BUDGET``).
LIMIT_EXPECTED = 'a rate limit such as "10/minute" or "60/day", or "off"'


def _split_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(part.strip() for part in value.split(",") if part.strip())
    return items or None


class _EnvReader:
    """Reads typed values from an environment mapping, collecting what it cannot read."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[SettingProblem] = []
        # (variable, "<variable> must be <expected>. Received: ...") from readers that report
        # this way; read as problems too.
        self.errors: list[tuple[str, str]] = []

    def all_problems(self) -> list[SettingProblem]:
        found = list(self.problems)
        for name, message in self.errors:
            expected = message.partition(" must be ")[2].partition(". Received")[0]
            found.append(SettingProblem(name, self.raw(name) or "", expected or message))
        return found

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
            self.problems.append(SettingProblem(name, raw, kind))
            return default

    def limit(self, name: str, default: D) -> str | D:
        """A rate limit (``10/minute``, ``off``), kept as text."""
        return self._parse(name, default, _limit_text, LIMIT_EXPECTED)

    def integer(self, name: str, default: int) -> int:
        return self._parse(name, default, int, "an integer")

    def number(self, name: str, default: D) -> float | D:
        return self._parse(name, default, _finite_float, "a number")

    def flag(self, name: str, default: D) -> bool | D:
        return self._parse(name, default, _flag, "true or false (also 1/0, yes/no, on/off)")

    def json_object(self, name: str, default: D) -> dict[str, Any] | D:
        return self._parse(name, default, _json_object, "a JSON object")

    def items(self, name: str, default: D) -> tuple[str, ...] | D:
        """A comma list (blank items dropped); nothing listed counts as unset."""
        return _split_list(self.raw(name)) or default

    def origins(self, name: str, default: D) -> tuple[str, ...] | D:
        """A comma list of origins, trailing ``/`` dropped."""
        listed = _split_list(self.raw(name))
        return tuple(origin.rstrip("/") for origin in listed) if listed else default


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


def _limit_text(raw: str) -> str:
    parse_limit(raw)  # ValueError when it is not one
    return raw


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)


# ----- declaring a setting once ---------------------------------------------------------------

_ENV = "navai.env"
#: ``read(reader, variable, default)``: the setting's value from the environment.
Read: TypeAlias = "Callable[[_EnvReader, str, Any], Any]"


def setting(default: Any, env: str, read: Read = _EnvReader.text, *, secret: bool = False) -> Any:
    """A setting of :class:`NavaiConfig`, declared once: its default, the environment variable
    :meth:`NavaiConfig.from_env` reads it from, and how (text by default; blank is unset and
    gives the default). ``secret`` keeps it out of ``repr()``."""
    return attrs.field(default=default, metadata={_ENV: (env, read)}, repr=not secret)


def environment_variables() -> dict[str, str]:
    """Every setting read from the environment: ``{field name: variable}``."""
    return {
        field.name: field.metadata[_ENV][0]
        for field in attrs.fields(NavaiConfig)
        if _ENV in field.metadata
    }


def _read_provider(reader: _EnvReader, name: str, default: Provider) -> Provider:
    """``NAVAI_PROVIDER=azure``, or, when it is unset, an ``AZURE_OPENAI_ENDPOINT``."""
    explicit = reader.raw(name)
    if explicit is not None:
        return "azure" if explicit.lower() == "azure" else "openai"
    return "azure" if reader.raw("AZURE_OPENAI_ENDPOINT") else default


def _read_runtime(reader: _EnvReader, name: str, default: CallRuntime) -> CallRuntime:
    """``realtime`` or ``live`` (any case); anything else is reported and gives the default."""
    raw = reader.raw(name)
    if raw is None:
        return default
    for runtime in CALL_RUNTIMES:
        if raw.lower() == runtime:
            return runtime
    reader.errors.append((name, f"{name} must be realtime or live. Received: {raw!r}"))
    return default


def _read_client_update(reader: _EnvReader, name: str, default: str) -> str:
    """``restore`` or ``hangup`` (any case); anything else is reported and gives the default."""
    raw = reader.raw(name)
    if raw is None:
        return default
    if raw.lower() in CLIENT_UPDATE_MODES:
        return raw.lower()
    reader.errors.append((name, f"{name} must be restore or hangup. Received: {raw!r}"))
    return default


def _read_tts_provider(reader: _EnvReader, name: str, default: SpeechProvider) -> SpeechProvider:
    """``elevenlabs`` selects it; anything else is ``openai``."""
    return "elevenlabs" if (reader.raw(name) or "").lower() == "elevenlabs" else default


@attrs.frozen(kw_only=True)
class NavaiConfig:
    """Every setting of a navai server. Build it in code or with :meth:`from_env`.

    A value that cannot be read (text that is not a number, a flag, a JSON object or a
    rate limit where the setting needs one) is an error: :meth:`from_env` and ``Navai(...)``
    raise :class:`SettingsError` listing all of them. A value that can be read but is
    unwise or out of range does not stop a server from booting: :meth:`problems` lists it
    (logged at start-up) and each request that depends on it answers with a clear JSON
    error. Keys never appear in ``repr()``.
    """

    # --- client secret (CONTRACT section 2) ---
    # A string, or a callable asked once per mint (key rotation, vaults).
    openai_api_key: KeySource = setting(None, "OPENAI_API_KEY", secret=True)
    model: str = setting(DEFAULT_MODEL, "OPENAI_REALTIME_MODEL")
    voice: str = setting(DEFAULT_VOICE, "OPENAI_REALTIME_VOICE")
    instructions: str = setting(DEFAULT_INSTRUCTIONS, "OPENAI_REALTIME_INSTRUCTIONS")
    language: str | None = setting(None, "OPENAI_REALTIME_LANGUAGE")
    voice_accent: str | None = setting(None, "OPENAI_REALTIME_VOICE_ACCENT")
    voice_tone: str | None = setting(None, "OPENAI_REALTIME_VOICE_TONE")
    client_secret_ttl_seconds: int = setting(
        DEFAULT_TTL_SECONDS, "OPENAI_REALTIME_CLIENT_SECRET_TTL", _EnvReader.integer
    )
    allow_api_key_from_request: bool = setting(
        False, "NAVAI_ALLOW_FRONTEND_API_KEY", _EnvReader.flag
    )

    # --- what a browser may choose (see docs/security.md) ---
    allowed_models: tuple[str, ...] | None = setting(None, "NAVAI_ALLOWED_MODELS", _EnvReader.items)
    allowed_voices: tuple[str, ...] | None = setting(None, "NAVAI_ALLOWED_VOICES", _EnvReader.items)
    allowed_transcription_models: tuple[str, ...] | None = setting(
        None, "NAVAI_ALLOWED_TRANSCRIPTION_MODELS", _EnvReader.items
    )
    allow_client_instructions: bool = setting(
        True, "NAVAI_ALLOW_CLIENT_INSTRUCTIONS", _EnvReader.flag
    )
    max_instructions_chars: int = setting(4000, "NAVAI_MAX_INSTRUCTIONS_CHARS", _EnvReader.integer)
    max_option_chars: int = setting(100, "NAVAI_MAX_OPTION_CHARS", _EnvReader.integer)

    # --- upstream ---
    openai_base_url: str = setting(DEFAULT_OPENAI_BASE_URL, "OPENAI_BASE_URL")
    openai_organization: str | None = setting(None, "OPENAI_ORG_ID")
    openai_project: str | None = setting(None, "OPENAI_PROJECT_ID")
    upstream_timeout_seconds: float = setting(15.0, "NAVAI_UPSTREAM_TIMEOUT", _EnvReader.number)
    upstream_connect_timeout_seconds: float = setting(
        5.0, "NAVAI_UPSTREAM_CONNECT_TIMEOUT", _EnvReader.number
    )
    upstream_max_retries: int = setting(2, "NAVAI_UPSTREAM_MAX_RETRIES", _EnvReader.integer)
    # Extra Realtime session settings sent with every mint; request fields still win for
    # model, voice and instructions. Checked by problems() for what OpenAI rejects.
    session: dict[str, Any] | None = setting(None, "NAVAI_SESSION_JSON", _EnvReader.json_object)
    transcription_session: dict[str, Any] | None = setting(
        None, "NAVAI_TRANSCRIPTION_SESSION_JSON", _EnvReader.json_object
    )
    transcription_model: str = setting(DEFAULT_TRANSCRIPTION_MODEL, "NAVAI_TRANSCRIPTION_MODEL")

    # --- Azure OpenAI ---
    provider: Provider = setting("openai", "NAVAI_PROVIDER", _read_provider)
    azure_endpoint: str | None = setting(None, "AZURE_OPENAI_ENDPOINT")
    azure_api_key: KeySource = setting(None, "AZURE_OPENAI_API_KEY", secret=True)
    azure_deployment: str | None = setting(None, "AZURE_OPENAI_DEPLOYMENT")
    # Entra ID: a callable returning a bearer token, asked once per mint.
    azure_token_provider: Callable[[], str] | None = attrs.field(default=None, repr=False)

    # --- backend functions (CONTRACT sections 4 and 5) ---
    functions_enabled: bool = setting(True, "NAVAI_FUNCTIONS_ENABLED", _EnvReader.flag)
    functions_base_dir: str | None = setting(None, "NAVAI_FUNCTIONS_BASE_DIR")
    functions_folders: str | None = setting(None, "NAVAI_FUNCTIONS_FOLDERS")
    functions_modules: str | None = setting(None, "NAVAI_FUNCTIONS_MODULES")
    agents_folders: str | None = setting(None, "NAVAI_AGENTS_FOLDERS")
    expose_function_errors: bool = setting(False, "NAVAI_EXPOSE_FUNCTION_ERRORS", _EnvReader.flag)
    # False: the list's warnings (import errors: paths, exception texts) stay in the server
    # log and browsers get one short line instead.
    expose_function_warnings: bool = setting(
        True, "NAVAI_EXPOSE_FUNCTION_WARNINGS", _EnvReader.flag
    )
    # Time limit of one call (504 past it) for functions without their own timeout=;
    # None or 0: no limit.
    function_timeout_seconds: float | None = setting(
        DEFAULT_FUNCTION_TIMEOUT_SECONDS, "NAVAI_FUNCTION_TIMEOUT", _EnvReader.number
    )
    # Threads sync functions may hold at once (one function at most half); see docs/security.md.
    function_threads: int = setting(
        DEFAULT_FUNCTION_THREADS, "NAVAI_FUNCTION_THREADS", _EnvReader.integer
    )

    # --- protection (see docs/security.md) ---
    # Hooks get the RequestContext; None/True allows, False answers 403, or raise
    # Unauthorized/Forbidden for your own status and message. Sync or async.
    authorize_client_secret: Callable[..., Any] | None = attrs.field(default=None, repr=False)
    authorize_functions: Callable[..., Any] | None = attrs.field(default=None, repr=False)
    # The rate-limit key of a request (a user id, say); default: the client address.
    rate_limit_key: Callable[..., str | None] | None = attrs.field(default=None, repr=False)
    rate_limit_client_secret: str | None = setting(
        "10/minute", "NAVAI_RATE_LIMIT_CLIENT_SECRET", _EnvReader.limit
    )
    rate_limit_functions: str | None = setting(
        DEFAULT_FUNCTIONS_LIMIT, "NAVAI_RATE_LIMIT_FUNCTIONS", _EnvReader.limit
    )
    rate_limit_speech: str | None = setting(
        "60/minute", "NAVAI_RATE_LIMIT_SPEECH", _EnvReader.limit
    )
    rate_limit_storage: str = setting("memory://", "NAVAI_RATE_LIMIT_STORAGE")
    # When the shared store (Redis) fails: False answers 503 (fail closed), True lets requests
    # through unlimited until it is back (fail open).
    rate_limit_fail_open: bool = setting(False, "NAVAI_RATE_LIMIT_FAIL_OPEN", _EnvReader.flag)

    # --- server-controlled calls (CONTRACT section 8, docs/calls.md) ---
    calls_path: str | None = "/navai/realtime/calls"
    # navai keeps a control connection to every call it creates and runs the tools there
    # (only when the function routes are on).
    call_sideband: bool = setting(True, "NAVAI_CALL_SIDEBAND", _EnvReader.flag)
    call_max_seconds: float = setting(
        DEFAULT_CALL_MAX_SECONDS, "NAVAI_CALL_MAX_SECONDS", _EnvReader.number
    )
    # Calls one process holds at most; past it a new call answers 503 before going upstream.
    call_max_live: int = setting(DEFAULT_CALL_MAX_LIVE, "NAVAI_CALL_MAX_LIVE", _EnvReader.integer)
    # Minutes of call time per rate-limit key per window, e.g. "60/day"; None: no budget.
    call_budget: str | None = setting(None, "NAVAI_CALL_BUDGET", _EnvReader.limit)
    # With a shared store (rate_limit_storage redis://): seconds a worker's hold on a call
    # lasts unrenewed before another worker takes the call over (docs/deployment.md).
    call_lease_seconds: float = setting(
        DEFAULT_CALL_LEASE_SECONDS, "NAVAI_CALL_LEASE_SECONDS", _EnvReader.number
    )
    rate_limit_calls: str | None = setting("10/minute", "NAVAI_RATE_LIMIT_CALLS", _EnvReader.limit)
    # False closes POST <execute path> (404) while the list stays: tools run on the server.
    browser_execute: bool = setting(True, "NAVAI_BROWSER_EXECUTE", _EnvReader.flag)
    # A browser changed what navai set on a Realtime call (session.update over its data
    # channel): "restore" puts navai's session back, "hangup" ends the call.
    call_on_client_update: str = setting(
        "restore", "NAVAI_CALL_ON_CLIENT_UPDATE", _read_client_update
    )
    # on_call_end(CallSummary) and on_call_event(call_id, event), sync or async.
    on_call_end: Callable[..., Any] | None = attrs.field(default=None, repr=False)
    on_call_event: Callable[..., Any] | None = attrs.field(default=None, repr=False)

    # --- GPT-Live calls (CONTRACT section 11) ---
    # Which OpenAI voice runtime the calls route, the hangup route and phone calls use.
    call_runtime: CallRuntime = setting("realtime", "NAVAI_CALL_RUNTIME", _read_runtime)
    live_model: str = setting(DEFAULT_LIVE_MODEL, "NAVAI_LIVE_MODEL")
    # The Responses model a Live session delegates its work (and navai's functions) to.
    live_backend_model: str = setting(DEFAULT_LIVE_BACKEND_MODEL, "NAVAI_LIVE_BACKEND_MODEL")
    live_backend_instructions: str | None = setting(None, "NAVAI_LIVE_BACKEND_INSTRUCTIONS")
    # --- the call record (CONTRACT section 12, docs/security.md) ---
    # False keeps no text of a call: its transcript and tool arguments stay empty.
    call_transcripts: bool = setting(True, "NAVAI_CALL_TRANSCRIPTS", _EnvReader.flag)
    # redact(text) -> text, run on every transcript and argument text before it is kept.
    redact: Callable[[str], str] | None = attrs.field(default=None, repr=False)
    # A JSON price table merged over navai's own (a model's entry replaces navai's).
    prices_file: str | None = setting(None, "NAVAI_PRICES_FILE")
    # A file that gets one JSON line per ended call.
    call_log: str | None = setting(None, "NAVAI_CALL_LOG")

    # --- HTTP ---
    cors_origins: tuple[str, ...] | None = setting(None, "NAVAI_CORS_ORIGIN", _EnvReader.origins)
    # Access-Control-Allow-Credentials for an allowed origin (never with "*").
    cors_allow_credentials: bool = setting(False, "NAVAI_CORS_ALLOW_CREDENTIALS", _EnvReader.flag)
    max_body_bytes: int = setting(
        DEFAULT_MAX_BODY_BYTES, "NAVAI_MAX_BODY_BYTES", _EnvReader.integer
    )
    client_secret_path: str = "/navai/realtime/client-secret"
    transcription_secret_path: str | None = "/navai/realtime/transcription-secret"
    functions_path: str = "/navai/functions"
    execute_path: str = "/navai/functions/execute"
    speech_path: str = "/navai/speech/synthesize"
    health_path: str | None = setting(None, "NAVAI_HEALTH_PATH")
    openapi_path: str | None = setting(None, "NAVAI_OPENAPI_PATH")

    # --- speech provider (CONTRACT section 7) ---
    tts_provider: SpeechProvider = setting("openai", "NAVAI_TTS_PROVIDER", _read_tts_provider)
    elevenlabs_api_key: str | None = setting(None, "ELEVENLABS_API_KEY", secret=True)
    elevenlabs_voice_id: str | None = setting(None, "ELEVENLABS_VOICE_ID")
    elevenlabs_base_url: str = setting(DEFAULT_ELEVENLABS_BASE_URL, "ELEVENLABS_BASE_URL")
    elevenlabs_model_id: str | None = setting(None, "ELEVENLABS_MODEL_ID")
    elevenlabs_output_format: str = setting(
        DEFAULT_ELEVENLABS_OUTPUT_FORMAT, "ELEVENLABS_OUTPUT_FORMAT"
    )
    elevenlabs_optimize_streaming_latency: float | None = setting(
        None, "ELEVENLABS_OPTIMIZE_STREAMING_LATENCY", _EnvReader.number
    )
    elevenlabs_stability: float | None = setting(None, "ELEVENLABS_STABILITY", _EnvReader.number)
    elevenlabs_similarity_boost: float | None = setting(
        None, "ELEVENLABS_SIMILARITY_BOOST", _EnvReader.number
    )
    elevenlabs_style: float | None = setting(None, "ELEVENLABS_STYLE", _EnvReader.number)
    elevenlabs_use_speaker_boost: bool | None = setting(
        None, "ELEVENLABS_USE_SPEAKER_BOOST", _EnvReader.flag
    )
    # Longest text (characters, after trimming) one speech request may send.
    speech_max_text_chars: int = setting(
        DEFAULT_SPEECH_MAX_TEXT_CHARS, "NAVAI_SPEECH_MAX_TEXT_CHARS", _EnvReader.integer
    )

    # --- phone calls (CONTRACT section 9, docs/phone-calls.md) ---
    # The whsec_... secret of the OpenAI webhook endpoint; unset: no webhook route.
    openai_webhook_secret: str | None = setting(None, "OPENAI_WEBHOOK_SECRET", secret=True)
    webhook_path: str | None = "/navai/realtime/webhook"
    # on_incoming_call(IncomingCall) -> AcceptCall | RejectCall | ReferCall | None; sync or async.
    on_incoming_call: Callable[..., Any] | None = attrs.field(default=None, repr=False)

    # Kept for code that reads it: from_env raises SettingsError instead of recording here.
    env_errors: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> NavaiConfig:
        """Read the variables of CONTRACT.md section 3 (and navai's own) from ``env``.

        ``env`` defaults to ``os.environ``; blank values count as unset. Keyword
        ``overrides`` win over the environment. Raises :class:`SettingsError` naming every
        variable whose value cannot be read (one an override replaces is not read).
        """
        r = _EnvReader(os.environ if env is None else env)
        values: dict[str, object] = {
            field.name: read(r, name, field.default)
            for field in attrs.fields(cls)
            if (spec := field.metadata.get(_ENV)) is not None and field.name not in overrides
            for name, read in [spec]
        }
        values.update(overrides)
        config = cls(**values)  # type: ignore[arg-type]
        found = {problem.variable: problem for problem in r.all_problems()}
        for problem in config.unreadable():
            found.setdefault(problem.variable, problem)
        if found:
            raise SettingsError(found.values())
        return config

    def unreadable(self) -> list[SettingProblem]:
        """The settings that cannot be read: what the environment gave that does not parse
        (see :meth:`from_env`), and rate limits given in code that are not one."""
        found = []
        for field in attrs.fields(NavaiConfig):
            name, read = field.metadata.get(_ENV, (None, None))
            if read is _EnvReader.limit and name is not None:
                value = getattr(self, field.name)
                try:
                    parse_limit(value)
                except (ValueError, AttributeError):
                    found.append(SettingProblem(name, str(value), LIMIT_EXPECTED))
        return found

    def check(self) -> None:
        """Raise :class:`SettingsError` when any setting cannot be read (``Navai(...)`` calls
        this), so a typo never silently becomes a default."""
        if found := self.unreadable():
            raise SettingsError(found)

    def problems(self) -> list[str]:
        """Human-readable values that are legal but wrong or unwise, for one log line each at
        start-up (values that cannot be read at all are :meth:`unreadable`)."""
        return settings_problems(self)

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
        source: KeySource = getattr(self, _KEY_SETTINGS.get(self.provider, "openai_api_key"))
        return _clean(source) if isinstance(source, str) else source


def settings_problems(config: NavaiConfig) -> list[str]:
    """What :meth:`NavaiConfig.problems` answers (a function of its own, so that the class
    stays the settings' declaration)."""
    found = [message for _, message in config.env_errors]
    threads = config.function_threads
    if not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 2):
        found.append(f"NAVAI_FUNCTION_THREADS must be at least 2. Received: {threads!r}")
    timeout = config.function_timeout_seconds
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout >= 0):
        found.append(f"NAVAI_FUNCTION_TIMEOUT must be 0 (no limit) or more. Received: {timeout!r}")
    for env_name, route_path in (
        ("NAVAI_HEALTH_PATH", config.health_path),
        ("NAVAI_OPENAPI_PATH", config.openapi_path),
    ):
        if route_path is not None and not route_path.startswith("/"):
            found.append(f"{env_name} must start with /. Received: {route_path!r}")
    seconds = config.call_max_seconds
    if not (isinstance(seconds, (int, float)) and seconds > 0):
        found.append(f"NAVAI_CALL_MAX_SECONDS must be more than 0. Received: {seconds!r}")
    lease = config.call_lease_seconds
    if not (isinstance(lease, (int, float)) and lease >= 1):
        found.append(f"NAVAI_CALL_LEASE_SECONDS must be at least 1. Received: {lease!r}")
    live = config.call_max_live
    if not (isinstance(live, int) and not isinstance(live, bool) and live >= 1):
        found.append(f"NAVAI_CALL_MAX_LIVE must be at least 1. Received: {live!r}")
    if config.call_on_client_update not in CLIENT_UPDATE_MODES:
        found.append(
            "NAVAI_CALL_ON_CLIENT_UPDATE must be restore or hangup. "
            f"Received: {config.call_on_client_update!r}"
        )
    if config.call_runtime not in CALL_RUNTIMES:
        found.append(
            f"NAVAI_CALL_RUNTIME must be realtime or live. Received: {config.call_runtime!r}"
        )
    key_variable = environment_variables()[_KEY_SETTINGS.get(config.provider, "openai_api_key")]
    configured = config.backend_key_source() is not None or config.azure_token_provider is not None
    found += [
        p
        for p in (
            ttl_problem(config.client_secret_ttl_seconds, config.env_errors),
            key_problem(key_variable, configured, config.allow_api_key_from_request),
        )
        if p is not None
    ]
    found += cors_problems(config.cors_origins, config.cors_allow_credentials)
    if config.provider == "azure" and not _clean(config.azure_endpoint):
        found.append("NAVAI_PROVIDER is azure but AZURE_OPENAI_ENDPOINT is not set.")
    found += session_problems(config.session, "NAVAI_SESSION_JSON", "realtime")
    found += session_problems(
        config.transcription_session, "NAVAI_TRANSCRIPTION_SESSION_JSON", "transcription"
    )
    found += elevenlabs_problems(
        {env: getattr(config, name) for name, env in environment_variables().items()}
    )
    if problem := webhook_secret_problem(config.openai_webhook_secret):
        found.append(problem)
    if config.prices_file:
        try:
            read_prices_file(config.prices_file)
        except ValueError as exc:
            found.append(str(exc))
    return found


# The setting that holds each provider's key (upstream/providers.py knows the rest of them).
_KEY_SETTINGS: Mapping[str, str] = MappingProxyType(
    {"openai": "openai_api_key", "azure": "azure_api_key"}
)


def rate_limit(config: NavaiConfig, name: str) -> RateLimitItem | None:
    """The parsed rate limit of setting ``name``. One that cannot be read falls back to the
    setting's default (and is reported by :meth:`NavaiConfig.problems`), so a typo never
    switches protection off."""
    try:
        return parse_limit(getattr(config, name))
    except ValueError:
        return parse_limit(attrs.fields_dict(NavaiConfig)[name].default)
