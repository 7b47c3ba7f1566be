"""The speech route through Navai.handle / Navai.ahandle, with httpx2's MockTransport
standing in for ElevenLabs.

Every test runs twice: once through the sync tail (``handle``, in a worker thread as a WSGI
server would) and once through the async tail (``ahandle``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import anyio.to_thread
import httpx2
import pytest
from fakes import MockUpstream

from navai_core import Navai, NavaiConfig, Reply, RequestContext, RetryPolicy
from navai_core.functions.registry import FunctionRegistry

KEY = "xi-http-secret-key-0987"
OPENAI_KEY = "sk-openai-http-key"
VOICE = "voice123"
TTS = "https://api.elevenlabs.io/v1/text-to-speech/"
OPENAI_URL = "https://api.openai.com/v1/realtime/client_secrets"
SPEECH_PATH = "/navai/speech/synthesize"
DISABLED = 'Speech synthesis is only available when NAVAI_TTS_PROVIDER is set to "elevenlabs".'
AUDIO = bytes(range(256)) * 16


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(params=["sync", "async"])
def answer(request):
    """``answer(navai, context, body)``: the reply from ``handle`` or ``ahandle``."""

    async def sync(navai: Navai, context: RequestContext, body: bytes = b"") -> Reply:
        return await anyio.to_thread.run_sync(navai.handle, context, body)

    async def asynchronous(navai: Navai, context: RequestContext, body: bytes = b"") -> Reply:
        return await navai.ahandle(context, body)

    return sync if request.param == "sync" else asynchronous


def ctx(method="POST", path=SPEECH_PATH, **headers):
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    headers.setdefault("content-type", "application/json")
    return RequestContext(method, path, headers, "127.0.0.1")


def make(**overrides) -> Navai:
    values = {
        "tts_provider": "elevenlabs",
        "elevenlabs_api_key": KEY,
        "elevenlabs_voice_id": VOICE,
        "openai_api_key": OPENAI_KEY,
        "functions_enabled": False,
        "upstream_max_retries": 0,
    }
    values.update(overrides)
    return Navai(NavaiConfig(**values))


def payload(value) -> bytes:
    return json.dumps(value).encode()


def audio_reply(content=AUDIO, content_type="audio/mpeg"):
    headers = {"content-type": content_type} if content_type else {}
    return httpx2.Response(200, content=content, headers=headers)


# ----- success -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_synthesize_returns_the_audio_as_base64(answer):
    async with make() as navai:
        with MockUpstream(assert_all_called=True) as mock:
            route = mock.post(url__startswith=TTS).mock(return_value=audio_reply())
            reply = await answer(navai, ctx(), payload({"text": "  Hello!  "}))
    assert reply.status == 200
    assert reply.body == {
        "provider": "elevenlabs",
        "mimeType": "audio/mpeg",
        "audioBase64": base64.b64encode(AUDIO).decode(),
    }
    assert base64.b64decode(json.loads(reply.content)["audioBase64"]) == AUDIO
    assert ("Cache-Control", "no-store") in reply.headers
    sent = route.calls.last.request
    assert str(sent.url) == TTS + "voice123?output_format=mp3_44100_128"
    assert sent.headers["xi-api-key"] == KEY
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["accept"] == "audio/mpeg"
    assert "authorization" not in sent.headers
    assert json.loads(sent.content) == {"text": "Hello!"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("settings", "body", "raw_path", "sent_body", "accept"),
    [
        (
            {
                "elevenlabs_model_id": "eleven_flash_v2_5",
                "elevenlabs_output_format": "pcm_16000",
                "elevenlabs_optimize_streaming_latency": 2.5,
                "elevenlabs_stability": 0.4,
                "elevenlabs_use_speaker_boost": False,
            },
            {"text": "Hi"},
            "/v1/text-to-speech/voice123?output_format=pcm_16000&optimize_streaming_latency=3",
            {
                "text": "Hi",
                "model_id": "eleven_flash_v2_5",
                "voice_settings": {"stability": 0.4, "use_speaker_boost": False},
            },
            "audio/pcm",
        ),
        (
            {"elevenlabs_model_id": "eleven_flash_v2_5", "elevenlabs_stability": 0.4},
            {
                "text": "Hi",
                "voiceId": "a/b c",
                "modelId": "eleven_v3",
                "outputFormat": "ulaw_8000",
                "optimizeStreamingLatency": 0,
                "voiceSettings": {"similarityBoost": 0.9, "style": 0.2, "useSpeakerBoost": True},
            },
            "/v1/text-to-speech/a%2Fb%20c?output_format=ulaw_8000&optimize_streaming_latency=0",
            {
                "text": "Hi",
                "model_id": "eleven_v3",
                "voice_settings": {
                    "stability": 0.4,
                    "similarity_boost": 0.9,
                    "style": 0.2,
                    "use_speaker_boost": True,
                },
            },
            "audio/basic",
        ),
        (
            {},
            {"text": "Hi", "outputFormat": "wav_22050"},
            "/v1/text-to-speech/voice123?output_format=wav_22050",
            {"text": "Hi"},
            "audio/wav",
        ),
    ],
)
async def test_the_request_on_the_wire(answer, settings, body, raw_path, sent_body, accept):
    async with make(**settings) as navai:
        with MockUpstream(assert_all_called=True) as mock:
            route = mock.post(url__startswith=TTS).mock(return_value=audio_reply())
            reply = await answer(navai, ctx(), payload(body))
    assert reply.status == 200
    sent = route.calls.last.request
    assert sent.url.raw_path == raw_path.encode()
    assert sent.headers["accept"] == accept
    assert json.loads(sent.content) == sent_body


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fmt", "content_type", "mime"),
    [
        ("pcm_16000", None, "audio/pcm"),
        ("ulaw_8000", None, "audio/basic"),
        ("mp3_44100_128", "audio/mpeg; charset=binary", "audio/mpeg"),
        ("pcm_16000", "audio/L16", "audio/l16"),
    ],
)
async def test_mime_type_of_the_answer(answer, fmt, content_type, mime):
    async with make(elevenlabs_output_format=fmt) as navai:
        with MockUpstream(assert_all_called=True) as mock:
            mock.post(url__startswith=TTS).mock(return_value=audio_reply(b"\x00\x01", content_type))
            reply = await answer(navai, ctx(), payload({"text": "Hi"}))
    assert reply.body["mimeType"] == mime


# ----- errors that never reach ElevenLabs -----------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("settings", "body", "status", "error"),
    [
        ({"tts_provider": "openai"}, payload({"text": "Hi"}), 400, DISABLED),
        ({"tts_provider": "openai"}, b"", 400, DISABLED),
        ({}, b"", 400, "text is required."),
        ({}, payload({"text": "   "}), 400, "text is required."),
        ({}, payload({"text": 5}), 400, 'Field "text" must be a string.'),
        (
            {},
            payload({"text": "Hi", "voiceSettings": []}),
            400,
            'Field "voiceSettings" must be an object.',
        ),
        (
            {},
            payload({"text": "Hi", "optimizeStreamingLatency": True}),
            400,
            'Field "optimizeStreamingLatency" must be a number.',
        ),
        (
            {"speech_max_text_chars": 4},
            payload({"text": "Hello"}),
            400,
            'Field "text" is longer than 4 characters.',
        ),
        ({}, b"{", 400, "Request body is not valid JSON."),
        ({}, b"[]", 400, "Request body must be a JSON object."),
        (
            {"elevenlabs_api_key": None},
            payload({"text": "Hi"}),
            400,
            "NAVAI_TTS_PROVIDER is elevenlabs but ELEVENLABS_API_KEY is not set.",
        ),
        (
            {"elevenlabs_voice_id": None},
            payload({"text": "Hi"}),
            400,
            "NAVAI_TTS_PROVIDER is elevenlabs but ELEVENLABS_VOICE_ID is not set "
            "and the request has no voiceId.",
        ),
        (
            {"max_body_bytes": 10},
            payload({"text": "Hello there"}),
            413,
            "Request body is larger than 10 bytes.",
        ),
    ],
)
async def test_errors_answer_json_without_calling_elevenlabs(answer, settings, body, status, error):
    async with make(**settings) as navai:
        with MockUpstream(assert_all_called=False) as mock:
            route = mock.post(url__startswith=TTS).mock(return_value=audio_reply())
            reply = await answer(navai, ctx(), body)
    assert (reply.status, reply.body) == (status, {"error": error})
    assert json.loads(reply.content) == {"error": error}
    assert not route.called


@pytest.mark.anyio
async def test_a_non_json_content_type_is_refused(answer):
    async with make() as navai, MockUpstream(assert_all_called=False) as mock:
        route = mock.post(url__startswith=TTS)
        reply = await answer(navai, ctx(content_type="text/plain"), payload({"text": "Hi"}))
    assert (reply.status, reply.body) == (415, {"error": "Content-Type must be application/json."})
    assert not route.called


@pytest.mark.anyio
async def test_other_methods_are_405_and_preflight_works(answer):
    async with make() as navai:
        wrong = await answer(navai, ctx("GET"))
        preflight = await answer(
            navai,
            ctx(
                "OPTIONS",
                origin="http://localhost:5173",
                access_control_request_method="POST",
                access_control_request_headers="content-type",
            ),
        )
    assert wrong.status == 405
    assert ("Allow", "OPTIONS, POST") in wrong.headers
    assert preflight.status == 204
    assert ("Allow", "POST, OPTIONS") in preflight.headers
    assert ("Access-Control-Allow-Origin", "http://localhost:5173") in preflight.headers


@pytest.mark.anyio
async def test_the_path_is_configurable(answer):
    async with make(speech_path="/voice/tts") as navai:
        with MockUpstream(assert_all_called=True) as mock:
            mock.post(url__startswith=TTS).mock(return_value=audio_reply())
            moved = await answer(navai, ctx(path="/voice/tts"), payload({"text": "Hi"}))
        old = await answer(navai, ctx(), payload({"text": "Hi"}))
    assert moved.status == 200
    assert old.status == 404


# ----- upstream failures ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_upstream_error_keeps_its_status_and_hides_the_key(answer, caplog):
    caplog.set_level(logging.DEBUG)
    upstream = f'{{"detail": {{"status": "invalid_api_key", "message": "Invalid key {KEY}"}}}}'
    async with make() as navai:
        with MockUpstream(assert_all_called=True) as mock:
            mock.post(url__startswith=TTS).mock(return_value=httpx2.Response(401, text=upstream))
            reply = await answer(navai, ctx(), payload({"text": "Hi"}))
    assert reply.status == 401
    expected = upstream.replace(KEY, "[redacted]")
    assert reply.body == {"error": f"ElevenLabs synthesize failed: {expected}"}
    assert KEY not in reply.content.decode()
    assert KEY not in caplog.text
    assert "ElevenLabs synthesize failed" in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (
            httpx2.ConnectError("refused"),
            502,
            "ElevenLabs synthesize could not be reached (ConnectError).",
        ),
        (httpx2.ReadTimeout("slow"), 504, "ElevenLabs synthesize timed out."),
    ],
)
async def test_transport_failures(answer, caplog, error, status, message):
    caplog.set_level(logging.DEBUG)
    async with make() as navai:
        with MockUpstream(assert_all_called=True) as mock:
            mock.post(url__startswith=TTS).mock(side_effect=error)
            reply = await answer(navai, ctx(), payload({"text": "Hi"}))
    assert (reply.status, reply.body) == (status, {"error": message})
    assert KEY not in caplog.text


@pytest.mark.anyio
async def test_retries_are_shared_with_the_openai_call(answer, caplog):
    caplog.set_level(logging.DEBUG)
    async with make(upstream_max_retries=2) as navai:
        assert navai.retry_policy.max_retries == 2
        navai.retry_policy = RetryPolicy(max_retries=2, initial_delay=0.01)  # fast backoff
        with MockUpstream(assert_all_called=True) as mock:
            route = mock.post(url__startswith=TTS).mock(
                side_effect=[httpx2.Response(503, text="busy"), audio_reply()]
            )
            ok = await answer(navai, ctx(), payload({"text": "Hi"}))
            assert route.call_count == 2
            route.side_effect = None
            route.return_value = httpx2.Response(422, json={"detail": "bad voice"})
            refused = await answer(navai, ctx(), payload({"text": "Hi"}))
            assert route.call_count == 3  # a 4xx other than 408/409/429 is never retried
    assert ok.status == 200
    assert base64.b64decode(ok.body["audioBase64"]) == AUDIO
    assert refused.status == 422
    assert "ElevenLabs synthesize attempt failed (status 503)" in caplog.text
    assert KEY not in caplog.text


# ----- protection ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_client_secret_authorisation_hook_guards_speech(answer):
    seen = []

    def deny(context):
        seen.append(context.path)
        return False

    async with make(authorize_client_secret=deny) as navai:
        with MockUpstream(assert_all_called=False) as mock:
            route = mock.post(url__startswith=TTS).mock(return_value=audio_reply())
            reply = await answer(navai, ctx(), payload({"text": "Hi"}))
    assert reply.status == 403
    assert seen == [SPEECH_PATH]
    assert not route.called


@pytest.mark.anyio
async def test_speech_has_its_own_rate_limit(answer):
    async with make(rate_limit_speech="2/minute") as navai:
        with MockUpstream(assert_all_called=True) as mock:
            route = mock.post(url__startswith=TTS).mock(return_value=audio_reply())
            statuses = [
                (await answer(navai, ctx(), payload({"text": "Hi"}))).status for _ in range(3)
            ]
    assert statuses == [200, 200, 429]
    assert route.call_count == 2


# ----- the OpenAI provider is unchanged ----------------------------------------------------------


def registry() -> FunctionRegistry:
    functions = FunctionRegistry()

    @functions.function
    def add_numbers(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    return functions


@pytest.mark.anyio
async def test_with_the_provider_unset_everything_else_behaves_as_before(answer):
    config = NavaiConfig(
        openai_api_key=OPENAI_KEY, upstream_max_retries=0, functions_folders="none"
    )
    assert config.tts_provider == "openai"
    async with Navai(config, functions=registry()) as navai:
        with MockUpstream(assert_all_called=False) as mock:
            openai = mock.post(OPENAI_URL).mock(
                return_value=httpx2.Response(200, json={"value": "ek_1", "expires_at": 1730000000})
            )
            eleven = mock.post(url__startswith="https://api.elevenlabs.io")
            secret = await answer(navai, ctx(path="/navai/realtime/client-secret"), b"{}")
            listed = await answer(navai, ctx("GET", "/navai/functions"))
            executed = await answer(
                navai,
                ctx(path="/navai/functions/execute"),
                payload({"function_name": "add_numbers", "payload": {"a": 2, "b": 3}}),
            )
            speech = await answer(navai, ctx(), payload({"text": "Hi"}))
    assert secret.status == 200
    assert secret.body == {
        "value": "ek_1",
        "expires_at": 1730000000,
        "speech": {"provider": "openai"},
    }
    session = json.loads(openai.calls.last.request.content)["session"]
    assert session["audio"] == {"output": {"voice": "marin"}}
    assert "output_modalities" not in session
    assert [item["name"] for item in listed.body["items"]] == ["add_numbers"]
    assert executed.status == 200
    assert executed.body["ok"] is True
    assert executed.body["result"] == 5
    assert (speech.status, speech.body) == (400, {"error": DISABLED})
    assert not eleven.called


@pytest.mark.anyio
async def test_with_elevenlabs_the_client_secret_is_text_only(answer):
    async with make() as navai:
        with MockUpstream(assert_all_called=True) as mock:
            openai = mock.post(OPENAI_URL).mock(
                return_value=httpx2.Response(200, json={"value": "ek_2", "expires_at": 1730000001})
            )
            secret = await answer(
                navai, ctx(path="/navai/realtime/client-secret"), payload({"voice": "ash"})
            )
    assert secret.body == {
        "value": "ek_2",
        "expires_at": 1730000001,
        "speech": {"provider": "elevenlabs"},
    }
    session = json.loads(openai.calls.last.request.content)["session"]
    assert session["output_modalities"] == ["text"]
    assert "audio" not in session
    assert KEY not in openai.calls.last.request.content.decode()
    assert KEY not in str(openai.calls.last.request.headers)


def test_the_speech_route_exists_whatever_the_provider():
    for provider in ("openai", "elevenlabs"):
        navai = Navai(NavaiConfig(tts_provider=provider, functions_enabled=False))
        route = navai.match(SPEECH_PATH)
        assert route is not None
        assert (route.name, route.methods) == ("speech", ("POST",))


# ----- docs/speech.md ------------------------------------------------------------------------


def test_the_python_example_of_the_docs_runs(monkeypatch):
    text = (Path(__file__).parent.parent / "docs" / "speech.md").read_text()
    section = text.split("## From Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    for name in list(os.environ):
        if name.startswith(("NAVAI_", "ELEVENLABS_")):
            monkeypatch.delenv(name)
    for name, value in {
        "NAVAI_TTS_PROVIDER": "elevenlabs",
        "ELEVENLABS_API_KEY": KEY,
        "ELEVENLABS_VOICE_ID": VOICE,
    }.items():
        monkeypatch.setenv(name, value)
    namespace: dict = {}
    with MockUpstream(assert_all_called=True) as mock:
        route = mock.post(TTS + "voice123?output_format=mp3_44100_128").mock(
            return_value=audio_reply()
        )
        exec(compile(code, "docs/speech.md", "exec"), namespace)
    assert route.calls.last.request.headers["xi-api-key"] == KEY
    assert namespace["answer"] == {
        "provider": "elevenlabs",
        "mimeType": "audio/mpeg",
        "audioBase64": base64.b64encode(AUDIO).decode(),
    }
