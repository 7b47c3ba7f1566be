"""NavaiConfig: defaults, the environment, blank values, bad values, and a repr without keys."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from navai_core import NavaiConfig, SettingProblem, SettingsError
from navai_core._config import environment_variables


def test_defaults_match_the_contract():
    config = NavaiConfig.from_env({})
    assert config.model == "gpt-realtime-2.1"
    assert config.voice == "marin"
    assert config.instructions == "You are a helpful assistant."
    assert (config.language, config.voice_accent, config.voice_tone) == (None, None, None)
    assert config.client_secret_ttl_seconds == 600
    assert config.allow_api_key_from_request is False
    assert config.openai_api_key is None
    assert config.openai_base_url == "https://api.openai.com/v1"
    assert config.functions_enabled is True
    assert config.max_body_bytes == 1024 * 1024
    assert config.tts_provider == "openai"
    assert config.env_errors == ()
    assert config == NavaiConfig()


def test_every_contract_variable_is_read():
    env = {
        "OPENAI_API_KEY": " sk-env ",
        "OPENAI_REALTIME_MODEL": "gpt-realtime-mini",
        "OPENAI_REALTIME_VOICE": "cedar",
        "OPENAI_REALTIME_INSTRUCTIONS": "Be brief.",
        "OPENAI_REALTIME_LANGUAGE": "Spanish",
        "OPENAI_REALTIME_VOICE_ACCENT": "Colombian",
        "OPENAI_REALTIME_VOICE_TONE": "warm",
        "OPENAI_REALTIME_CLIENT_SECRET_TTL": "120",
        "NAVAI_ALLOW_FRONTEND_API_KEY": "true",
        "NAVAI_FUNCTIONS_FOLDERS": "src/tools",
        "NAVAI_FUNCTIONS_BASE_DIR": "/srv/app",
        "NAVAI_FUNCTIONS_MODULES": "app.tools",
        "NAVAI_AGENTS_FOLDERS": "sales,support",
        "NAVAI_CORS_ORIGIN": "https://a.example, https://b.example/",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "OPENAI_ORG_ID": "org-1",
        "OPENAI_PROJECT_ID": "proj-1",
        "NAVAI_UPSTREAM_TIMEOUT": "2.5",
        "NAVAI_MAX_BODY_BYTES": "2048",
    }
    c = NavaiConfig.from_env(env)
    assert c.openai_api_key == "sk-env"
    assert (c.model, c.voice, c.instructions) == ("gpt-realtime-mini", "cedar", "Be brief.")
    assert (c.language, c.voice_accent, c.voice_tone) == ("Spanish", "Colombian", "warm")
    assert c.client_secret_ttl_seconds == 120
    assert c.allow_api_key_from_request is True
    assert c.functions_folders == "src/tools"
    assert c.functions_base_dir == "/srv/app"
    assert c.functions_modules == "app.tools"
    assert c.agents_folders == "sales,support"
    assert c.cors_origins == ("https://a.example", "https://b.example")
    assert c.openai_base_url == "http://127.0.0.1:9/v1"
    assert (c.openai_organization, c.openai_project) == ("org-1", "proj-1")
    assert c.upstream_timeout_seconds == 2.5
    assert c.max_body_bytes == 2048
    assert c.env_errors == ()


def test_blank_values_count_as_unset():
    env = dict.fromkeys(
        [
            "OPENAI_API_KEY",
            "OPENAI_REALTIME_MODEL",
            "OPENAI_REALTIME_VOICE",
            "OPENAI_REALTIME_INSTRUCTIONS",
            "OPENAI_REALTIME_LANGUAGE",
            "OPENAI_REALTIME_CLIENT_SECRET_TTL",
            "NAVAI_ALLOW_FRONTEND_API_KEY",
            "NAVAI_CORS_ORIGIN",
        ],
        "   ",
    )
    assert NavaiConfig.from_env(env) == NavaiConfig()


def test_allow_frontend_key_is_off_unless_truthy():
    assert (
        NavaiConfig.from_env({"NAVAI_ALLOW_FRONTEND_API_KEY": "false"}).allow_api_key_from_request
        is False
    )
    assert (
        NavaiConfig.from_env({"NAVAI_ALLOW_FRONTEND_API_KEY": "TRUE"}).allow_api_key_from_request
        is True
    )


@pytest.mark.parametrize("raw", ["abc", "12.5", "1e3", "ten"])
def test_non_integer_ttl_is_a_configuration_error_naming_variable_and_value(raw):
    with pytest.raises(SettingsError) as info:
        NavaiConfig.from_env({"OPENAI_REALTIME_CLIENT_SECRET_TTL": raw})
    assert info.value.problems == (
        SettingProblem("OPENAI_REALTIME_CLIENT_SECRET_TTL", raw, "an integer"),
    )
    assert f"OPENAI_REALTIME_CLIENT_SECRET_TTL={raw!r}: expected an integer" in str(info.value)


def test_problems_list_ttl_range_and_missing_key_but_construction_never_raises():
    config = NavaiConfig(client_secret_ttl_seconds=5)
    problems = config.problems()
    assert "OPENAI_REALTIME_CLIENT_SECRET_TTL must be between 10 and 7200. Received: 5" in problems
    assert any("OPENAI_API_KEY is not set" in p for p in problems)
    assert NavaiConfig(openai_api_key="sk-x").problems() == []


def test_overrides_win_over_the_environment():
    config = NavaiConfig.from_env({"OPENAI_REALTIME_MODEL": "a"}, model="b")
    assert config.model == "b"


def test_config_is_immutable():
    config = NavaiConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.model = "x"  # type: ignore[misc]


def test_repr_never_shows_keys():
    config = NavaiConfig.from_env(
        {"OPENAI_API_KEY": "sk-secret-123", "ELEVENLABS_API_KEY": "xi-secret-456"}
    )
    text = repr(config) + str(config)
    assert "sk-secret-123" not in text
    assert "xi-secret-456" not in text
    assert "gpt-realtime" in text  # the repr still says something useful


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("OPENAI_REALTIME_VOICE", "verse")
    assert NavaiConfig.from_env().voice == "verse"


def test_every_setting_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    missing = [
        field.name
        for field in attrs.fields(NavaiConfig)
        if field.name != "env_errors" and f"`{field.name}`" not in doc
    ]
    assert missing == []


def test_every_environment_variable_is_documented():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    source = (root / "navai_core" / "_config.py").read_text()
    doc = (root / "docs" / "configuration.md").read_text()
    names = set(re.findall(r'"((?:NAVAI|OPENAI|ELEVENLABS|AZURE_OPENAI)_[A-Z_]+)"', source))
    assert len(names) > 40
    assert sorted(n for n in names if f"`{n}`" not in doc) == []


def test_each_setting_is_declared_once_with_its_variable():
    # an empty environment gives exactly the declared defaults: no second default anywhere
    assert NavaiConfig.from_env({}) == NavaiConfig()
    variables = environment_variables()
    assert variables["client_secret_ttl_seconds"] == "OPENAI_REALTIME_CLIENT_SECRET_TTL"
    assert variables["allow_api_key_from_request"] == "NAVAI_ALLOW_FRONTEND_API_KEY"
    assert len(set(variables.values())) == len(variables)  # one setting per variable
    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert sorted(v for v in variables.values() if f"`{v}`" not in doc) == []
