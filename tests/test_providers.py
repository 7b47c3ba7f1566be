"""Where and how navai sends: the provider table of navai_core/upstream/providers.py."""

from __future__ import annotations

import attrs
import pytest

from navai_core import ConfigurationError, NavaiConfig
from navai_core.upstream.providers import (
    AZURE,
    LIVE,
    OPENAI,
    REALTIME,
    RUNTIMES,
    Runtime,
    provider_for,
    realtime_target,
    speech_url,
    target_for_key,
)

KEY = "sk-provider-key"

# A third runtime, declared as data only.
OTHER = Runtime(name="other", calls="/other", call="/other/{call_id}", sideband="/other/{call_id}")


def test_openai_realtime_urls_and_headers() -> None:
    config = NavaiConfig(openai_api_key=KEY, openai_organization="org-1", openai_project="p")
    target = realtime_target(config)
    assert target.client_secrets_url() == "https://api.openai.com/v1/realtime/client_secrets"
    assert target.calls_url() == "https://api.openai.com/v1/realtime/calls"
    assert (
        target.call_url("rtc_1", "hangup")
        == "https://api.openai.com/v1/realtime/calls/rtc_1/hangup"
    )
    assert target.sideband_url("rtc 1") == "wss://api.openai.com/v1/realtime?call_id=rtc%201"
    assert target.headers == (
        ("Authorization", f"Bearer {KEY}"),
        ("OpenAI-Organization", "org-1"),
        ("OpenAI-Project", "p"),
    )
    assert KEY not in repr(target)


def test_azure_base_key_header_token_and_deployment() -> None:
    config = NavaiConfig(
        provider="azure",
        azure_endpoint="https://example.openai.azure.com/",
        azure_api_key=KEY,
        azure_deployment="my-deployment",
    )
    assert provider_for(config) is AZURE
    target = realtime_target(config)
    assert target.calls_url() == "https://example.openai.azure.com/openai/v1/realtime/calls"
    assert target.headers == (("api-key", KEY),)
    assert AZURE.default_model(config) == "my-deployment"
    entra = attrs.evolve(config, azure_api_key=None, azure_token_provider=lambda: "token-1")
    assert realtime_target(entra, "sk-ignored").headers == (("Authorization", "Bearer token-1"),)


def test_the_live_runtime_is_data_served_by_openai_and_azure() -> None:
    config = NavaiConfig(openai_api_key=KEY, openai_base_url="http://127.0.0.1:9/v1")
    assert RUNTIMES == {"realtime": REALTIME, "live": LIVE}
    assert LIVE in OPENAI.runtimes and LIVE in AZURE.runtimes
    with pytest.raises(ConfigurationError, match="not served"):
        target_for_key(config, KEY, OTHER)  # no provider lists it
    assert attrs.evolve(OPENAI, runtimes=(REALTIME, OTHER)).runtimes[-1] is OTHER
    target = target_for_key(config, KEY, LIVE)
    assert target.calls_url() == "http://127.0.0.1:9/v1/live/sessions"
    assert target.call_url("s_1", "accept") == "http://127.0.0.1:9/v1/live/sessions/s_1/accept"
    assert target.sideband_url("s_1") == "ws://127.0.0.1:9/v1/live/sessions/s_1/attach"
    with pytest.raises(ConfigurationError, match="no client secrets"):
        target.client_secrets_url()


def test_elevenlabs_speech_url() -> None:
    config = NavaiConfig(elevenlabs_base_url="http://127.0.0.1:9/")
    url = speech_url(config, "voice/1", [("output_format", "mp3_44100_128")])
    assert url == "http://127.0.0.1:9/v1/text-to-speech/voice%2F1?output_format=mp3_44100_128"
