"""Model lifecycle: the default model, shutdown notices, session fields of current models."""

from __future__ import annotations

import datetime
import json
import logging
import time

import jsonschema
import pytest
from conftest import SCHEMA, Target, Targets, validate_upstream_request

from navai_core import ClientSecretOptions, Navai, NavaiConfig, build_client_secret_request
from navai_core._models import DEPRECATED_MODELS, ModelNotices, deprecation
from navai_core.sessions.template import REASONING_EFFORTS, session_problems

KEY = "sk-test-models-0123456789"
KINDS = ("asgi-server", "wsgi-server")
REALTIME_SHUTDOWN = datetime.date(2027, 1, 20)
ANNOUNCED_REALTIME = (
    "gpt-realtime",
    "gpt-realtime-2025-08-28",
    "gpt-realtime-mini",
    "gpt-realtime-mini-2025-12-15",
    "gpt-audio-mini",
    "gpt-audio-mini-2025-12-15",
)


def session_of(config: NavaiConfig, options: ClientSecretOptions | None = None) -> dict:
    request = build_client_secret_request(config, options or ClientSecretOptions())
    body = json.loads(request.content)
    validate_upstream_request(body)
    return body["session"]


# ----- defaults ---------------------------------------------------------------------------


def test_the_default_model_is_current_and_is_what_goes_upstream():
    config = NavaiConfig(openai_api_key=KEY)
    assert config.model == "gpt-realtime-2.1"
    assert NavaiConfig.from_env({}).model == "gpt-realtime-2.1"
    assert session_of(config)["model"] == "gpt-realtime-2.1"
    assert deprecation(config.model) is None


def test_no_default_has_an_announced_shutdown():
    config = NavaiConfig.from_env({})
    assert deprecation(config.transcription_model) is None
    assert config.model_notices() == []


@pytest.mark.parametrize("model", ANNOUNCED_REALTIME)
def test_every_announced_realtime_model_is_in_the_table(model: str):
    gone = deprecation(model)
    assert gone is not None
    assert gone.shutdown == REALTIME_SHUTDOWN
    expected = "gpt-realtime-2.1-mini" if "mini" in model else "gpt-realtime-2.1"
    assert gone.replacement == expected


def test_replacements_are_models_openai_lists_and_are_not_deprecated_themselves():
    listed = SCHEMA["$defs"]["RealtimeSessionCreateRequestGA"]["properties"]["model"]["anyOf"][1]
    for gone in DEPRECATED_MODELS.values():
        assert deprecation(gone.replacement) is None
        if gone.shutdown == REALTIME_SHUTDOWN:
            assert gone.replacement in listed["enum"]
            assert gone.model in listed["enum"]


def test_lookup_ignores_case_and_spaces_and_other_values():
    assert deprecation("  GPT-Realtime ") is not None
    assert deprecation("gpt-realtime-2") is None
    assert deprecation(None) is None
    assert deprecation(5) is None


# ----- start-up notices ----------------------------------------------------------------------


def test_configured_models_on_the_table_are_start_up_notices():
    config = NavaiConfig(
        openai_api_key=KEY,
        model="gpt-realtime",
        allowed_models=("gpt-realtime-2.1", "gpt-realtime-mini"),
        transcription_model="gpt-4o-transcribe",
        session={"model": "gpt-audio-mini"},
    )
    notices = config.model_notices()
    assert notices == [
        'OPENAI_REALTIME_MODEL uses model "gpt-realtime", which OpenAI shuts down on '
        '2027-01-20; use "gpt-realtime-2.1" instead.',
        'NAVAI_TRANSCRIPTION_MODEL uses model "gpt-4o-transcribe", which OpenAI shuts down on '
        '2027-02-26; use "gpt-live-transcribe" instead.',
        'NAVAI_ALLOWED_MODELS uses model "gpt-realtime-mini", which OpenAI shuts down on '
        '2027-01-20; use "gpt-realtime-2.1-mini" instead.',
        'NAVAI_SESSION_JSON uses model "gpt-audio-mini", which OpenAI shuts down on '
        '2027-01-20; use "gpt-realtime-2.1-mini" instead.',
    ]
    # A notice, not a misconfiguration: requests are still answered.
    assert config.problems() == []
    assert notices == [p for p in Navai(config).startup_report() if "shuts down" in p]


def test_start_up_notices_go_to_their_own_logger_so_they_can_be_silenced(caplog):
    navai = Navai(NavaiConfig(openai_api_key=KEY, model="gpt-realtime", functions_enabled=False))
    with caplog.at_level(logging.WARNING, logger="navai"):
        navai.log_startup()
    assert [(r.name, r.levelname) for r in caplog.records if "shuts down" in r.getMessage()] == [
        ("navai.models", "WARNING")
    ]
    caplog.clear()
    logging.getLogger("navai.models").setLevel(logging.ERROR)
    try:
        with caplog.at_level(logging.WARNING, logger="navai"):
            navai.log_startup()
    finally:
        logging.getLogger("navai.models").setLevel(logging.NOTSET)
    assert not [r for r in caplog.records if "shuts down" in r.getMessage()]


@pytest.mark.parametrize("kind", KINDS)
def test_a_real_server_warns_at_start_up_for_a_deprecated_configured_model(
    targets: Targets, kind: str
):
    # "alt" configures OPENAI_REALTIME_MODEL=gpt-realtime-mini; "main" keeps the default.
    deprecated = targets.get("alt", kind).process
    current = targets.get("main", kind).process
    assert deprecated is not None and current is not None
    deprecated.wait_ready()
    current.wait_ready()
    notice = (
        'OPENAI_REALTIME_MODEL uses model "gpt-realtime-mini", which OpenAI shuts down on '
        '2027-01-20; use "gpt-realtime-2.1-mini" instead.'
    )
    # The log file may trail the server's first answers by a moment on a busy machine.
    deadline = time.monotonic() + 10
    while notice not in deprecated.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert notice in deprecated.stderr(), deprecated.describe()
    # Other tests may ask "main" for an old model: only request notices may appear there.
    logged = (current.stdout() + current.stderr()).splitlines()
    unexpected = [line for line in logged if "shuts down" in line and "A request" not in line]
    assert unexpected == [], current.describe()


# ----- request notices -----------------------------------------------------------------------


def test_a_requested_deprecated_model_is_logged_once_per_model(caplog):
    notices = ModelNotices()
    with caplog.at_level(logging.WARNING, logger="navai.models"):
        for model in ("gpt-realtime", " gpt-realtime ", "gpt-realtime-2.1", None, "gpt-realtime"):
            notices.requested(model)
        notices.requested("gpt-realtime-mini")
    assert [r.getMessage() for r in caplog.records] == [
        'A request uses model "gpt-realtime", which OpenAI shuts down on 2027-01-20; '
        'use "gpt-realtime-2.1" instead.',
        'A request uses model "gpt-realtime-mini", which OpenAI shuts down on 2027-01-20; '
        'use "gpt-realtime-2.1-mini" instead.',
    ]


def test_a_request_for_a_deprecated_model_is_served_and_logged_once(client: Target):
    mark = client.log_mark()
    for _ in range(3):
        response = client.http.post(
            "/navai/realtime/client-secret", json={"model": "gpt-realtime-2025-08-28"}
        )
        assert response.status_code == 200, response.text
    logged = client.logs_since(mark)
    line = 'A request uses model "gpt-realtime-2025-08-28", which OpenAI shuts down on 2027-01-20'
    # Once per process: the servers of the suite may have been asked before this test.
    assert logged.count(line) <= 1
    current = client.log_mark()
    client.http.post("/navai/realtime/client-secret", json={"model": "gpt-realtime-2.1"})
    assert "shuts down" not in client.logs_since(current)


# ----- session fields of current models ------------------------------------------------------


@pytest.mark.parametrize("effort", REASONING_EFFORTS)
def test_reasoning_and_parallel_tool_calls_pass_through_the_template(effort: str):
    template = {"reasoning": {"effort": effort}, "parallel_tool_calls": False}
    config = NavaiConfig(openai_api_key=KEY, session=template)
    assert config.problems() == []
    session = session_of(config)  # validated against OpenAI's request schema
    assert session["reasoning"] == {"effort": effort}
    assert session["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ({"reasoning": {"effort": "max"}}, "reasoning.effort must be one of"),
        ({"reasoning": "high"}, 'reasoning must be an object with one optional field, "effort"'),
        ({"reasoning": {"effort": "low", "summary": "auto"}}, "reasoning must be an object"),
        ({"parallel_tool_calls": "yes"}, "parallel_tool_calls must be true or false"),
        ({"output_modalities": ["text", "audio"]}, "output_modalities must be"),
        ({"include": ["logprobs"]}, "include must be a list of"),
        ({"tool_choice": "always"}, "tool_choice must be one of"),
        ({"tools": [{"name": "x"}]}, "tools must be a list of tool objects"),
        ({"tracing": 1}, 'tracing must be "auto", an object or null'),
        ({"truncation": "sometimes"}, "truncation must be"),
        (
            {"truncation": {"type": "retention_ratio", "retention_ratio": 2}},
            "truncation.retention_ratio must be a number from 0 to 1",
        ),
        ({"prompt": {"version": "2"}}, 'prompt must be an object with a string "id"'),
        ({"instructions": 5}, "instructions must be a string"),
        ({"model": 5}, "model must be a string"),
        ({"audio": []}, "audio must be an object"),
    ],
)
def test_wrong_values_are_configuration_errors(template: dict, fragment: str):
    problems = session_problems(template, "NAVAI_SESSION_JSON", "realtime")
    assert len(problems) == 1 and fragment in problems[0], problems
    config = NavaiConfig(openai_api_key=KEY, session=template)
    assert any(fragment in p for p in config.problems())


def test_the_checks_follow_openais_published_values():
    defs = SCHEMA["$defs"]
    assert list(REASONING_EFFORTS) == defs["RealtimeReasoningEffort"]["enum"]
    fields = defs["RealtimeSessionCreateRequestGA"]["properties"]
    assert fields["parallel_tool_calls"]["type"] == "boolean"
    for value in ({"reasoning": {"effort": "max"}}, {"parallel_tool_calls": "yes"}):
        with pytest.raises(jsonschema.ValidationError):
            validate_upstream_request({"session": {"type": "realtime", **value}})


def test_valid_values_of_every_checked_field_pass():
    template = {
        "output_modalities": ["audio"],
        "include": ["item.input_audio_transcription.logprobs"],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "tracing": None,
        "truncation": {"type": "retention_ratio", "retention_ratio": 0.5},
        "prompt": {"id": "pmpt_1"},
        "max_output_tokens": "inf",
        "parallel_tool_calls": True,
        "reasoning": {},
    }
    assert session_problems(template, "NAVAI_SESSION_JSON", "realtime") == []
    session_of(NavaiConfig(openai_api_key=KEY, session=template))
