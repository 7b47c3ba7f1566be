"""Settings that cannot be read stop navai before it serves anything, all of them listed in
one error; values that can be read but are unwise stay start-up warnings."""

from __future__ import annotations

import pytest

from navai_core import ConfigurationError, Navai, NavaiConfig, SettingProblem, SettingsError

RATE = 'a rate limit such as "10/minute" or "60/day", or "off"'


def test_every_unreadable_variable_is_listed_in_one_error():
    env = {
        "NAVAI_CALL_MAX_SECONDS": "abc",
        "NAVAI_RATE_LIMIT_CALLS": "ten",
        "NAVAI_FUNCTIONS_ENABLED": "sure",
        "NAVAI_SESSION_JSON": "[1]",
        "OPENAI_REALTIME_CLIENT_SECRET_TTL": "soon",
    }
    with pytest.raises(SettingsError) as info:
        NavaiConfig.from_env(env)
    assert set(info.value.problems) == {
        SettingProblem("NAVAI_CALL_MAX_SECONDS", "abc", "a number"),
        SettingProblem("NAVAI_RATE_LIMIT_CALLS", "ten", RATE),
        SettingProblem(
            "NAVAI_FUNCTIONS_ENABLED", "sure", "true or false (also 1/0, yes/no, on/off)"
        ),
        SettingProblem("NAVAI_SESSION_JSON", "[1]", "a JSON object"),
        SettingProblem("OPENAI_REALTIME_CLIENT_SECRET_TTL", "soon", "an integer"),
    }
    message = str(info.value)
    assert message.startswith("5 settings cannot be read:\n")
    assert "  NAVAI_CALL_MAX_SECONDS='abc': expected a number" in message.splitlines()
    # Callers that catch the configuration errors of navai catch this one too.
    assert isinstance(info.value, ConfigurationError)


def test_navai_built_from_the_environment_raises_the_same_error(monkeypatch):
    monkeypatch.setenv("NAVAI_CALL_BUDGET", "an hour")
    with pytest.raises(SettingsError, match="NAVAI_CALL_BUDGET='an hour'"):
        Navai()


def test_a_rate_limit_given_in_code_is_checked_when_navai_is_built():
    config = NavaiConfig(rate_limit_functions="lots", rate_limit_speech="5/minute")
    assert config.unreadable() == [SettingProblem("NAVAI_RATE_LIMIT_FUNCTIONS", "lots", RATE)]
    with pytest.raises(SettingsError) as info:
        Navai(config)
    assert [p.variable for p in info.value.problems] == ["NAVAI_RATE_LIMIT_FUNCTIONS"]


def test_an_override_replaces_the_variable_it_would_have_read():
    config = NavaiConfig.from_env({"NAVAI_CALL_MAX_SECONDS": "abc"}, call_max_seconds=60)
    assert config.call_max_seconds == 60


@pytest.mark.parametrize(
    "env",
    [
        {"NAVAI_CALL_MAX_SECONDS": "60"},
        {"NAVAI_RATE_LIMIT_CALLS": "off"},
        {"NAVAI_RATE_LIMIT_CALLS": "100 per hour"},
        {"NAVAI_FUNCTIONS_ENABLED": "OFF"},
        {"NAVAI_CALL_MAX_SECONDS": "   "},  # blank is unset
    ],
)
def test_readable_values_pass(env):
    assert NavaiConfig.from_env(env).unreadable() == []


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"call_max_seconds": -5}, "NAVAI_CALL_MAX_SECONDS must be more than 0"),
        ({"function_threads": 1}, "NAVAI_FUNCTION_THREADS must be at least 2"),
        ({"client_secret_ttl_seconds": 5}, "OPENAI_REALTIME_CLIENT_SECRET_TTL must be between"),
        ({"cors_origins": ("*",), "cors_allow_credentials": True}, "NAVAI_CORS_ALLOW_CREDENTIALS"),
    ],
)
def test_legal_but_unwise_values_stay_warnings(settings, fragment):
    navai = Navai(NavaiConfig(openai_api_key="sk-test-key", **settings))
    assert any(fragment in line for line in navai.config.problems())


def test_a_reader_that_reports_a_message_is_read_as_a_problem():
    from navai_core._config import _EnvReader

    reader = _EnvReader({"NAVAI_X": "maybe"})
    reader.errors.append(("NAVAI_X", "NAVAI_X must be realtime or live. Received: 'maybe'"))
    assert reader.all_problems() == [SettingProblem("NAVAI_X", "maybe", "realtime or live")]
