"""Where and how navai sends each upstream request, in one place: OpenAI and Azure OpenAI (the
voice runtimes) and ElevenLabs (speech).

What differs between them is data here, not branches in the request builders:

- a :class:`Runtime` is the set of paths of one OpenAI voice runtime under a provider's base
  URL (``.../v1``): client secrets, new calls, one call's actions (``hangup``, ``accept``,
  ``reject``, ``refer``) and the call's control WebSocket (the sideband);
- a :class:`Provider` is a base URL, the headers that carry a key, where its key comes from,
  and the runtimes it serves;
- a :class:`RealtimeTarget` is one provider and runtime resolved for one key: every URL a
  request builder needs is a method of it.

A second runtime is one more :class:`Runtime` value, listed by each provider that serves it
(see docs/providers.md); nothing that builds a request compares provider names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from urllib.parse import quote, urlencode

import attrs

from .._config import DEFAULT_ELEVENLABS_BASE_URL, NavaiConfig
from .._errors import ConfigurationError
from .._policy import clean, current_key, resolve_api_key

Headers = tuple[tuple[str, str], ...]


# ----- runtimes: the paths of a voice runtime under a provider's base URL -------------------


@attrs.frozen(kw_only=True)
class Runtime:
    """The paths of one OpenAI voice runtime, relative to a provider's base URL (``.../v1``).

    ``{call_id}`` stands for a call's id (quoted as a path segment, or as a query value in
    ``sideband``); a call's actions are ``<call>/<action>``.
    """

    name: str
    # POST: a new call (the browser's WebRTC offer).
    calls: str
    # One call; ``<call>/hangup``, ``/accept``, ``/reject``, ``/refer`` control it.
    call: str
    # The call's control WebSocket, under the ws:// or wss:// form of the base URL.
    sideband: str
    # POST: an ephemeral client secret for a browser; None when the runtime has none.
    client_secrets: str | None = None


REALTIME = Runtime(
    name="realtime",
    client_secrets="/realtime/client_secrets",
    calls="/realtime/calls",
    call="/realtime/calls/{call_id}",
    sideband="/realtime?call_id={call_id}",
)

#: OpenAI GPT-Live (CONTRACT.md section 11): sessions, their actions and ``/attach``; no
#: browser client secrets (a Live session is created by a server).
LIVE = Runtime(
    name="live",
    calls="/live/sessions",
    call="/live/sessions/{call_id}",
    sideband="/live/sessions/{call_id}/attach",
)

#: Every runtime navai knows, by name.
RUNTIMES: Mapping[str, Runtime] = MappingProxyType({r.name: r for r in (REALTIME, LIVE)})


# ----- providers: base URL, headers, key -----------------------------------------------------


@attrs.frozen(kw_only=True)
class Provider:
    """One API that serves OpenAI's voice runtimes: how to reach it and authenticate."""

    name: str
    # The base URL (``.../v1``) under which every runtime path lies.
    base_url: Callable[[NavaiConfig], str]
    # The headers that authenticate ``key``.
    auth_headers: Callable[[NavaiConfig, str], Headers]
    # A callable asked for a bearer token instead of a key (Entra ID), or None.
    token_source: Callable[[NavaiConfig], Callable[[], str] | None] = lambda config: None
    # The model a session gets when the request names none.
    default_model: Callable[[NavaiConfig], str] = lambda config: config.model
    runtimes: tuple[Runtime, ...] = (REALTIME,)


def _openai_headers(config: NavaiConfig, key: str) -> Headers:
    headers = [("Authorization", f"Bearer {key}")]
    if org := clean(config.openai_organization):
        headers.append(("OpenAI-Organization", org))
    if project := clean(config.openai_project):
        headers.append(("OpenAI-Project", project))
    return tuple(headers)


def uses_azure_token(config: NavaiConfig) -> bool:
    """Azure with an Entra ID token provider and no API key: bearer tokens."""
    return config.azure_token_provider is not None and not current_key(config.azure_api_key)


def _azure_headers(config: NavaiConfig, key: str) -> Headers:
    return (("Authorization", f"Bearer {key}") if uses_azure_token(config) else ("api-key", key),)


OPENAI = Provider(
    name="openai",
    base_url=lambda config: config.openai_base_url.rstrip("/"),
    auth_headers=_openai_headers,
    runtimes=(REALTIME, LIVE),
)

AZURE = Provider(
    name="azure",
    base_url=lambda config: (config.azure_endpoint or "").rstrip("/") + "/openai/v1",
    auth_headers=_azure_headers,
    token_source=lambda config: config.azure_token_provider if uses_azure_token(config) else None,
    # An Azure session names its deployment.
    default_model=lambda config: clean(config.azure_deployment) or config.model,
    # Azure OpenAI serves GPT-Live under <endpoint>/openai/v1/live (docs/providers.md).
    runtimes=(REALTIME, LIVE),
)

#: Every provider, by the name ``NAVAI_PROVIDER`` gives; any other name is OpenAI.
PROVIDERS: Mapping[str, Provider] = MappingProxyType({p.name: p for p in (OPENAI, AZURE)})


def provider_for(config: NavaiConfig) -> Provider:
    """The configured provider."""
    return PROVIDERS.get(config.provider, OPENAI)


# ----- a provider and runtime resolved for one key ------------------------------------------


def _ws(base: str) -> str:
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :]
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :]
    return base


@attrs.frozen
class RealtimeTarget:
    """Where and as whom to call a voice runtime: the base URL (``.../v1``), the
    authentication headers (resolved once by the key policy) and the runtime's paths.
    Headers and keys are hidden from repr."""

    base_url: str
    headers: Headers = attrs.field(repr=False)
    # Values that must never appear in an error text or a log line.
    secrets: tuple[str, ...] = attrs.field(default=(), repr=False, eq=False)
    # The key the headers carry (a call's later requests use the key that created it).
    key: str = attrs.field(default="", repr=False, eq=False)
    runtime: Runtime = REALTIME

    def client_secrets_url(self) -> str:
        path = self.runtime.client_secrets
        if path is None:
            raise ConfigurationError(f"The {self.runtime.name} runtime has no client secrets.")
        return self.base_url + path

    def calls_url(self) -> str:
        return self.base_url + self.runtime.calls

    def call_url(self, call_id: str, action: str) -> str:
        """``<base><call>/<action>``: ``hangup``, ``accept``, ``reject`` or ``refer``."""
        return self.base_url + self.runtime.call.format(call_id=quote(call_id)) + f"/{action}"

    def sideband_url(self, call_id: str) -> str:
        """The call's control WebSocket: the sideband path under ``ws(s)://<base>``."""
        return _ws(self.base_url) + self.runtime.sideband.format(call_id=quote(call_id, safe=""))


def realtime_target(
    config: NavaiConfig, request_key: str | None = None, runtime: Runtime = REALTIME
) -> RealtimeTarget:
    """The configured provider's base URL and auth headers for ``runtime``, per the key
    policy (the backend key always wins; 401/403 otherwise)."""
    allow = config.allow_api_key_from_request
    token = provider_for(config).token_source(config)
    if token is not None:
        key = resolve_api_key(token(), None, allow)
    else:
        key = resolve_api_key(current_key(config.backend_key_source()), request_key, allow)
    target = target_for_key(config, key, runtime)
    secrets = tuple(k for k in (key, clean(request_key)) if k)
    return attrs.evolve(target, secrets=secrets)


def target_for_key(config: NavaiConfig, key: str, runtime: Runtime = REALTIME) -> RealtimeTarget:
    """The base URL and the headers that authenticate ``key`` with the configured provider
    (a key that already passed the policy, e.g. the one that created a call)."""
    provider = provider_for(config)
    if runtime not in provider.runtimes:
        raise ConfigurationError(
            f"The {runtime.name} runtime is not served by the {provider.name} provider."
        )
    headers = provider.auth_headers(config, key)
    return RealtimeTarget(provider.base_url(config), headers, (key,), key=key, runtime=runtime)


# ----- ElevenLabs: speech -----------------------------------------------------------------------

ELEVENLABS_SPEECH_PATH = "/v1/text-to-speech/{voice_id}"


def speech_url(config: NavaiConfig, voice_id: str, query: list[tuple[str, str]]) -> str:
    """``<ElevenLabs base>/v1/text-to-speech/<voice id>?<query>``."""
    base = (clean(config.elevenlabs_base_url) or DEFAULT_ELEVENLABS_BASE_URL).rstrip("/")
    path = ELEVENLABS_SPEECH_PATH.format(voice_id=quote(voice_id, safe=""))
    return f"{base}{path}?{urlencode(query)}"


def speech_headers(key: str) -> Headers:
    """The header that authenticates an ElevenLabs key."""
    return (("xi-api-key", key),)
