"""The pure speech pair: build_speech_request and parse_speech_response (CONTRACT section 7).

No mocks: the functions take values and return values (or raise errors that know their answer).
"""

from __future__ import annotations

import base64
import json
import math

import httpx2
import pytest

from navai_core import (
    BadRequest,
    ConfigurationError,
    NavaiConfig,
    NavaiError,
    SettingProblem,
    SettingsError,
    UpstreamError,
    UpstreamReply,
    build_speech_request,
    parse_speech_body,
    parse_speech_response,
    speech_mime_type,
)
from navai_core.sessions.speech import format_mime_type, round_half_up

KEY = "xi-test-key-1234567890"
VOICE = "voice123"
BASE = "https://api.elevenlabs.io/v1/text-to-speech/"
DISABLED = 'Speech synthesis is only available when NAVAI_TTS_PROVIDER is set to "elevenlabs".'
ALL_BYTES = bytes(range(256))


def config(**overrides):
    values = {
        "tts_provider": "elevenlabs",
        "elevenlabs_api_key": KEY,
        "elevenlabs_voice_id": VOICE,
    }
    values.update(overrides)
    return NavaiConfig(**values)


def build(body, **overrides):
    return build_speech_request(config(**overrides), body)


def sent(request):
    """(url, header dict, JSON body) of an UpstreamRequest."""
    return request.url, dict(request.headers), json.loads(request.content)


def error_of(body, **overrides) -> NavaiError:
    with pytest.raises(NavaiError) as info:
        build(body, **overrides)
    return info.value


# ----- the request ------------------------------------------------------------------


def test_defaults_build_the_contract_request():
    request = build({"text": "  Hello there  "})
    assert request.method == "POST"
    assert request.url == BASE + "voice123?output_format=mp3_44100_128"
    assert request.headers == (
        ("xi-api-key", KEY),
        ("Content-Type", "application/json"),
        ("Accept", "audio/mpeg"),
    )
    assert json.loads(request.content) == {"text": "Hello there"}
    assert request.label == "ElevenLabs synthesize"
    assert request.secrets == (KEY,)
    assert KEY not in repr(request)


@pytest.mark.parametrize(
    ("settings", "body", "query", "payload"),
    [
        # model id: configured, request wins, blank request falls back
        ({"elevenlabs_model_id": "eleven_flash_v2_5"}, {}, "", {"model_id": "eleven_flash_v2_5"}),
        (
            {"elevenlabs_model_id": "eleven_flash_v2_5"},
            {"modelId": " eleven_v3 "},
            "",
            {"model_id": "eleven_v3"},
        ),
        ({"elevenlabs_model_id": "m1"}, {"modelId": "  "}, "", {"model_id": "m1"}),
        ({}, {"modelId": "eleven_v3"}, "", {"model_id": "eleven_v3"}),
        # optimize_streaming_latency: rounded half up like JavaScript's Math.round
        ({"elevenlabs_optimize_streaming_latency": 2.5}, {}, "&optimize_streaming_latency=3", {}),
        ({"elevenlabs_optimize_streaming_latency": 2.4}, {}, "&optimize_streaming_latency=2", {}),
        (
            {"elevenlabs_optimize_streaming_latency": 3},
            {"optimizeStreamingLatency": 0},
            "&optimize_streaming_latency=0",
            {},
        ),
        ({}, {"optimizeStreamingLatency": 1.5}, "&optimize_streaming_latency=2", {}),
        ({}, {"optimizeStreamingLatency": 4}, "&optimize_streaming_latency=4", {}),
        ({}, {"optimizeStreamingLatency": None}, "", {}),
        # voice settings: only the keys that are set, request over configuration key by key
        (
            {
                "elevenlabs_stability": 0.3,
                "elevenlabs_similarity_boost": 0.8,
                "elevenlabs_style": 0.1,
                "elevenlabs_use_speaker_boost": True,
            },
            {},
            "",
            {
                "voice_settings": {
                    "stability": 0.3,
                    "similarity_boost": 0.8,
                    "style": 0.1,
                    "use_speaker_boost": True,
                }
            },
        ),
        (
            {"elevenlabs_stability": 0.3, "elevenlabs_use_speaker_boost": True},
            {"voiceSettings": {"stability": 0.9, "style": 0, "useSpeakerBoost": False}},
            "",
            {"voice_settings": {"stability": 0.9, "style": 0, "use_speaker_boost": False}},
        ),
        (
            {"elevenlabs_similarity_boost": 0.75},
            {"voiceSettings": {"useSpeakerBoost": True}},
            "",
            {"voice_settings": {"similarity_boost": 0.75, "use_speaker_boost": True}},
        ),
        (
            {"elevenlabs_use_speaker_boost": False},
            {},
            "",
            {"voice_settings": {"use_speaker_boost": False}},
        ),
        ({}, {"voiceSettings": {}}, "", {}),
        ({}, {"voiceSettings": None}, "", {}),
        ({}, {"voiceSettings": {"stability": None, "unknown": "x"}}, "", {}),
        (
            {},
            {"voiceSettings": {"similarityBoost": 1}},
            "",
            {"voice_settings": {"similarity_boost": 1}},
        ),
    ],
)
def test_settings_and_request_values_combine(settings, body, query, payload):
    url, headers, content = sent(build({"text": "Hi", **body}, **settings))
    assert url == BASE + "voice123?output_format=mp3_44100_128" + query
    assert content == {"text": "Hi", **payload}
    assert headers["Accept"] == "audio/mpeg"


@pytest.mark.parametrize(
    ("settings", "body", "fmt", "accept"),
    [
        ({}, {}, "mp3_44100_128", "audio/mpeg"),
        ({"elevenlabs_output_format": "pcm_16000"}, {}, "pcm_16000", "audio/pcm"),
        (
            {"elevenlabs_output_format": "pcm_16000"},
            {"outputFormat": "ulaw_8000"},
            "ulaw_8000",
            "audio/basic",
        ),
        ({}, {"outputFormat": " wav_44100 "}, "wav_44100", "audio/wav"),
        ({}, {"outputFormat": "opus_48000_64"}, "opus_48000_64", "audio/mpeg"),
        (
            {"elevenlabs_output_format": "mp3_22050_32"},
            {"outputFormat": ""},
            "mp3_22050_32",
            "audio/mpeg",
        ),
        ({"elevenlabs_output_format": "  "}, {}, "mp3_44100_128", "audio/mpeg"),
    ],
)
def test_output_format_sets_query_and_accept(settings, body, fmt, accept):
    url, headers, _ = sent(build({"text": "Hi", **body}, **settings))
    assert url == f"{BASE}voice123?output_format={fmt}"
    assert headers["Accept"] == accept


@pytest.mark.parametrize(
    ("settings", "body", "path"),
    [
        ({}, {"voiceId": "other"}, "other"),
        ({}, {"voiceId": "   "}, VOICE),
        ({"elevenlabs_voice_id": None}, {"voiceId": "from-request"}, "from-request"),
        ({}, {"voiceId": "a/b c?d#é&x=1"}, "a%2Fb%20c%3Fd%23%C3%A9%26x%3D1"),
        ({"elevenlabs_voice_id": " ../admin "}, {}, "..%2Fadmin"),
    ],
)
def test_voice_id_is_one_url_encoded_path_segment(settings, body, path):
    request = build({"text": "Hi", **body}, **settings)
    assert request.url == f"{BASE}{path}?output_format=mp3_44100_128"
    # httpx2 sends the path exactly as built (no decoding of %2F).
    raw = httpx2.Request("POST", request.url).url.raw_path
    assert raw == f"/v1/text-to-speech/{path}?output_format=mp3_44100_128".encode()


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://127.0.0.1:9999", "http://127.0.0.1:9999/v1/text-to-speech/"),
        ("http://proxy.local/eleven/", "http://proxy.local/eleven/v1/text-to-speech/"),
        ("   ", BASE),
    ],
)
def test_base_url_is_configurable(base, expected):
    request = build({"text": "Hi"}, elevenlabs_base_url=base)
    assert request.url == expected + "voice123?output_format=mp3_44100_128"


def test_text_is_sent_trimmed_with_unicode_intact():
    request = build({"text": "\n ¿Qué tal? 👋 \t"})
    assert json.loads(request.content) == {"text": "¿Qué tal? 👋"}
    assert "¿Qué tal? 👋".encode() in request.content


def test_unknown_body_fields_are_ignored():
    request = build({"text": "Hi", "voice": 5, "apiKey": "sk-x", "extra": {"a": 1}})
    assert json.loads(request.content) == {"text": "Hi"}


def test_huge_integer_latency_is_a_number():
    body = json.loads('{"text": "Hi", "optimizeStreamingLatency": 100000000000000000000000}')
    assert build(body).url.endswith("&optimize_streaming_latency=100000000000000000000000")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.5, 1),
        (1.5, 2),
        (2.5, 3),
        (-0.5, 0),
        (-2.5, -2),
        (-2.6, -3),
        (0.49999999999999994, 0),
        (7, 7),
    ],
)
def test_round_half_up_matches_javascript(value, expected):
    assert round_half_up(value) == expected


# ----- errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [{"text": "Hi"}, None, {}, {"text": 5}, {"voiceSettings": "x"}],
)
def test_provider_not_enabled_is_400_whatever_the_body(body):
    for settings in (
        {"tts_provider": "openai"},
        {"tts_provider": "openai", "elevenlabs_api_key": None},
    ):
        error = error_of(body, **settings)
        assert isinstance(error, BadRequest)
        assert (error.status_code, error.message) == (400, DISABLED)


def test_default_configuration_has_speech_disabled():
    with pytest.raises(BadRequest, match="NAVAI_TTS_PROVIDER is set to"):
        build_speech_request(NavaiConfig(), {"text": "Hi"})


@pytest.mark.parametrize("key", [None, "", "   "])
def test_missing_key_is_a_configuration_error(key):
    error = error_of({"text": "Hi", "voiceId": "v"}, elevenlabs_api_key=key)
    assert isinstance(error, ConfigurationError)
    assert error.status_code == 400
    assert error.message == "NAVAI_TTS_PROVIDER is elevenlabs but ELEVENLABS_API_KEY is not set."


@pytest.mark.parametrize("voice", [None, "", "  "])
def test_missing_voice_id_is_a_configuration_error_unless_the_request_names_one(voice):
    error = error_of({"text": "Hi"}, elevenlabs_voice_id=voice)
    assert isinstance(error, ConfigurationError)
    assert error.status_code == 400
    assert error.message == (
        "NAVAI_TTS_PROVIDER is elevenlabs but ELEVENLABS_VOICE_ID is not set "
        "and the request has no voiceId."
    )
    assert build({"text": "Hi", "voiceId": "v"}, elevenlabs_voice_id=voice).url.startswith(
        BASE + "v?"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"ELEVENLABS_STABILITY": "high"},
            "ELEVENLABS_STABILITY must be a number. Received: 'high'",
        ),
        ({"ELEVENLABS_STYLE": "nan"}, "ELEVENLABS_STYLE must be a number. Received: 'nan'"),
        (
            {"ELEVENLABS_USE_SPEAKER_BOOST": "maybe"},
            "ELEVENLABS_USE_SPEAKER_BOOST must be true or false. Received: 'maybe'",
        ),
        (
            {"NAVAI_SPEECH_MAX_TEXT_CHARS": "lots"},
            "NAVAI_SPEECH_MAX_TEXT_CHARS must be an integer. Received: 'lots'",
        ),
    ],
)
def test_unreadable_speech_setting_stops_the_configuration(env, message):
    [(name, value)] = env.items()
    with pytest.raises(SettingsError) as info:
        NavaiConfig.from_env(
            {
                "NAVAI_TTS_PROVIDER": "elevenlabs",
                "ELEVENLABS_API_KEY": KEY,
                "ELEVENLABS_VOICE_ID": VOICE,
                **env,
            }
        )
    [problem] = info.value.problems
    assert (problem.variable, problem.value) == (name, value)
    assert message.split(" must be ")[1].split(". Received")[0] in problem.expected


@pytest.mark.parametrize("value", [math.nan, math.inf, "0.5", True])
def test_configured_non_number_is_a_configuration_error(value):
    error = error_of({"text": "Hi"}, elevenlabs_stability=value)
    assert isinstance(error, ConfigurationError)
    assert error.message == f"ELEVENLABS_STABILITY must be a number. Received: {value!r}"


def test_configured_non_number_latency_is_a_configuration_error():
    error = error_of({"text": "Hi"}, elevenlabs_optimize_streaming_latency=math.inf)
    assert error.message == "ELEVENLABS_OPTIMIZE_STREAMING_LATENCY must be a number. Received: inf"


@pytest.mark.parametrize("body", [None, {}, {"text": None}, {"text": ""}, {"text": " \n\t "}])
def test_blank_text_is_required(body):
    error = error_of(body)
    assert isinstance(error, BadRequest)
    assert (error.status_code, error.message) == (400, "text is required.")


@pytest.mark.parametrize("body", [[], "text", 5])
def test_body_must_be_an_object(body):
    assert error_of(body).message == "Request body must be a JSON object."


@pytest.mark.parametrize("field", ["text", "voiceId", "modelId", "outputFormat"])
@pytest.mark.parametrize("value", [5, 1.5, True, ["Hi"], {"a": "b"}])
def test_string_fields_of_wrong_type_name_the_field(field, value):
    body = {"text": "Hi", field: value}
    error = error_of(body)
    assert (error.status_code, error.message) == (400, f'Field "{field}" must be a string.')


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"optimizeStreamingLatency": "3"}, "optimizeStreamingLatency"),
        ({"optimizeStreamingLatency": True}, "optimizeStreamingLatency"),
        ({"optimizeStreamingLatency": [1]}, "optimizeStreamingLatency"),
        ({"optimizeStreamingLatency": math.inf}, "optimizeStreamingLatency"),
        ({"optimizeStreamingLatency": math.nan}, "optimizeStreamingLatency"),
        ({"voiceSettings": {"stability": "0.5"}}, "voiceSettings.stability"),
        ({"voiceSettings": {"stability": False}}, "voiceSettings.stability"),
        ({"voiceSettings": {"similarityBoost": {}}}, "voiceSettings.similarityBoost"),
        ({"voiceSettings": {"style": -math.inf}}, "voiceSettings.style"),
    ],
)
def test_numbers_must_be_finite_numbers_not_bools(body, field):
    error = error_of({"text": "Hi", **body})
    assert (error.status_code, error.message) == (400, f'Field "{field}" must be a number.')


def test_json_overflow_to_infinity_is_not_a_number():
    body = json.loads('{"text": "Hi", "voiceSettings": {"style": 1e400}}')
    assert error_of(body).message == 'Field "voiceSettings.style" must be a number.'


@pytest.mark.parametrize("value", ["x", [], 5, True])
def test_voice_settings_must_be_an_object(value):
    error = error_of({"text": "Hi", "voiceSettings": value})
    assert (error.status_code, error.message) == (400, 'Field "voiceSettings" must be an object.')


@pytest.mark.parametrize("value", ["true", 1, 0, {}])
def test_use_speaker_boost_must_be_a_boolean(value):
    error = error_of({"text": "Hi", "voiceSettings": {"useSpeakerBoost": value}})
    assert error.message == 'Field "voiceSettings.useSpeakerBoost" must be true or false.'


def test_text_has_a_maximum_length_counted_after_trimming():
    assert build({"text": "  " + "x" * 10 + "  "}, speech_max_text_chars=10)
    error = error_of({"text": "x" * 11}, speech_max_text_chars=10)
    assert (error.status_code, error.message) == (400, 'Field "text" is longer than 10 characters.')


def test_default_maximum_text_length_is_5000():
    assert NavaiConfig().speech_max_text_chars == 5000
    assert build({"text": "é" * 5000})
    assert error_of({"text": "é" * 5001}).message == 'Field "text" is longer than 5000 characters.'


@pytest.mark.parametrize("field", ["voiceId", "modelId", "outputFormat"])
def test_option_fields_are_limited_like_other_client_options(field):
    assert build({"text": "Hi", field: "v" * 100})
    error = error_of({"text": "Hi", field: "v" * 101})
    assert error.message == f'Field "{field}" is longer than 100 characters.'
    assert build({"text": "Hi", field: "v" * 30}, max_option_chars=30)


def test_parse_speech_body_reads_every_field():
    options = parse_speech_body(
        {
            "text": "Hi",
            "voiceId": "v",
            "modelId": "m",
            "outputFormat": "pcm_16000",
            "optimizeStreamingLatency": 2,
            "voiceSettings": {
                "stability": 0.1,
                "similarityBoost": 0.2,
                "style": 0.3,
                "useSpeakerBoost": True,
            },
        }
    )
    assert (options.text, options.voice_id, options.model_id, options.output_format) == (
        "Hi",
        "v",
        "m",
        "pcm_16000",
    )
    assert options.optimize_streaming_latency == 2
    assert (options.stability, options.similarity_boost, options.style) == (0.1, 0.2, 0.3)
    assert options.use_speaker_boost is True


# ----- the reply --------------------------------------------------------------------


def reply(status=200, content=ALL_BYTES * 4, headers=None):
    return UpstreamReply(status, headers if headers is not None else {}, content)


def test_audio_bytes_round_trip_as_base64():
    request = build({"text": "Hi"})
    body = parse_speech_response(request, reply(headers={"Content-Type": "audio/mpeg"}))
    assert body == {
        "provider": "elevenlabs",
        "mimeType": "audio/mpeg",
        "audioBase64": base64.b64encode(ALL_BYTES * 4).decode("ascii"),
    }
    assert base64.b64decode(body["audioBase64"], validate=True) == ALL_BYTES * 4
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize(
    ("headers", "mime"),
    [
        ({"Content-Type": "audio/wav"}, "audio/wav"),
        ({"content-type": "Audio/MPEG; charset=binary"}, "audio/mpeg"),
        ({"CONTENT-TYPE": " audio/ogg ;codecs=opus"}, "audio/ogg"),
        (httpx2.Headers({"content-type": "audio/pcm;rate=16000"}), "audio/pcm"),
        ({"Content-Type": "application/octet-stream"}, "application/octet-stream"),
    ],
)
def test_mime_type_is_the_upstream_media_type(headers, mime):
    request = build({"text": "Hi", "outputFormat": "ulaw_8000"})
    assert parse_speech_response(request, reply(headers=headers))["mimeType"] == mime


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [
        ("mp3_44100_128", "audio/mpeg"),
        ("pcm_24000", "audio/pcm"),
        ("wav_16000", "audio/wav"),
        ("ulaw_8000", "audio/basic"),
        ("opus_48000_128", "audio/mpeg"),
        ("alaw_8000", "audio/mpeg"),
    ],
)
@pytest.mark.parametrize("headers", [{}, {"Content-Type": ""}, {"Content-Type": "  ;x=y"}])
def test_without_upstream_content_type_the_format_decides(fmt, mime, headers):
    request = build({"text": "Hi", "outputFormat": fmt})
    assert parse_speech_response(request, reply(headers=headers))["mimeType"] == mime


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [
        ("mp3_44100_128", "audio/mpeg"),
        ("MP3_22050_32", "audio/mpeg"),
        ("pcm_16000", "audio/pcm"),
        (" PCM_44100", "audio/pcm"),
        ("wav_44100", "audio/wav"),
        ("ulaw_8000", "audio/basic"),
        ("opus_48000_32", "audio/mpeg"),
        ("", "audio/mpeg"),
        (None, "audio/mpeg"),
        ("xmp3", "audio/mpeg"),
        ("xpcm", "audio/mpeg"),
    ],
)
def test_format_mime_rules(fmt, mime):
    assert format_mime_type(fmt) == mime
    assert speech_mime_type(fmt, None) == mime
    assert speech_mime_type(fmt, "audio/flac") == "audio/flac"


@pytest.mark.parametrize("status", [400, 401, 404, 422, 429, 500, 503])
def test_upstream_failure_keeps_status_and_body(status):
    request = build({"text": "Hi"})
    upstream = b'{"detail": {"status": "quota_exceeded", "message": "No credits left."}}'
    with pytest.raises(UpstreamError) as info:
        parse_speech_response(
            request, reply(status, upstream, {"content-type": "application/json"})
        )
    assert info.value.status_code == status
    assert info.value.message == f"ElevenLabs synthesize failed: {upstream.decode()}"
    assert info.value.body()["error"] == info.value.message


def test_upstream_failure_never_shows_the_key():
    request = build({"text": "Hi"})
    upstream = f"invalid api key {KEY}".encode()
    with pytest.raises(UpstreamError) as info:
        parse_speech_response(request, reply(401, upstream))
    assert KEY not in info.value.message
    assert info.value.message == "ElevenLabs synthesize failed: invalid api key [redacted]"


def test_upstream_failure_passes_the_request_id():
    request = build({"text": "Hi"})
    with pytest.raises(UpstreamError) as info:
        parse_speech_response(request, reply(500, b"boom", {"x-request-id": "req_42"}))
    assert info.value.body() == {
        "error": "ElevenLabs synthesize failed: boom",
        "request_id": "req_42",
    }


@pytest.mark.parametrize("status", [301, 304, 100])
def test_a_non_error_non_2xx_status_is_a_bad_gateway(status):
    with pytest.raises(UpstreamError) as info:
        parse_speech_response(build({"text": "Hi"}), reply(status, b"moved"))
    assert (info.value.status_code, info.value.message) == (
        502,
        "ElevenLabs synthesize failed: moved",
    )


@pytest.mark.parametrize("status", [200, 204])
def test_a_2xx_without_audio_is_a_bad_gateway(status):
    with pytest.raises(UpstreamError) as info:
        parse_speech_response(build({"text": "Hi"}), reply(status, b""))
    assert (info.value.status_code, info.value.message) == (
        502,
        "ElevenLabs synthesize returned no audio.",
    )


# ----- configuration ------------------------------------------------------------------


def test_max_text_chars_is_read_from_the_environment():
    assert NavaiConfig.from_env({}).speech_max_text_chars == 5000
    assert (
        NavaiConfig.from_env({"NAVAI_SPEECH_MAX_TEXT_CHARS": " 250 "}).speech_max_text_chars == 250
    )
    with pytest.raises(SettingsError) as info:
        NavaiConfig.from_env({"NAVAI_SPEECH_MAX_TEXT_CHARS": "2.5"})
    assert info.value.problems == (
        SettingProblem("NAVAI_SPEECH_MAX_TEXT_CHARS", "2.5", "an integer"),
    )


def speech_problems(cfg):
    return [p for p in cfg.problems() if "ELEVENLABS" in p or "SPEECH" in p or "TTS" in p]


def test_problems_warn_about_out_of_range_elevenlabs_settings():
    cfg = config(
        elevenlabs_stability=1.5,
        elevenlabs_similarity_boost=-0.1,
        elevenlabs_style=2,
        elevenlabs_optimize_streaming_latency=5,
        speech_max_text_chars=0,
    )
    assert speech_problems(cfg) == [
        "ELEVENLABS_STABILITY should be between 0 and 1. Received: 1.5",
        "ELEVENLABS_SIMILARITY_BOOST should be between 0 and 1. Received: -0.1",
        "ELEVENLABS_STYLE should be between 0 and 1. Received: 2",
        "ELEVENLABS_OPTIMIZE_STREAMING_LATENCY should be between 0 and 4. Received: 5",
        "NAVAI_SPEECH_MAX_TEXT_CHARS must be at least 1. Received: 0",
    ]


def test_problems_accept_in_range_settings_and_ignore_them_without_elevenlabs():
    in_range = config(
        elevenlabs_stability=0,
        elevenlabs_similarity_boost=1,
        elevenlabs_style=0.5,
        elevenlabs_optimize_streaming_latency=4,
    )
    assert speech_problems(in_range) == []
    off = NavaiConfig(elevenlabs_stability=7, speech_max_text_chars=0)
    assert speech_problems(off) == []


def test_problems_report_missing_key_and_voice():
    assert speech_problems(config(elevenlabs_api_key=None, elevenlabs_voice_id=" ")) == [
        "NAVAI_TTS_PROVIDER is elevenlabs but ELEVENLABS_API_KEY is not set.",
        "NAVAI_TTS_PROVIDER is elevenlabs but ELEVENLABS_VOICE_ID is not set.",
    ]
