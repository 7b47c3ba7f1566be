"""README's curl walk-through, run line by line with the real curl against a real
``navai serve`` (the example functions, the fake OpenAI and ElevenLabs upstream)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess

import pytest
from conftest import REPO, SERVER_KEY, NavaiProcess, hermetic_env
from fakes import FakeOpenAI

README = REPO / "README.md"


def curl_lines() -> list[str]:
    section = README.read_text().split("### Every route, with curl", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block
    return block.group(1).strip().splitlines()


def test_the_walk_through_covers_every_route():
    served = {
        "/health",
        "/openapi.json",
        "/navai/functions",
        "/navai/functions/execute",
        "/navai/realtime/client-secret",
        "/navai/realtime/transcription-secret",
        "/navai/speech/synthesize",
    }
    shown = {re.search(r"http://127\.0\.0\.1:3000(\S+)", line).group(1) for line in curl_lines()}
    assert shown == served


@pytest.mark.slow  # starts real processes
def test_readme_curl_walk_through(tmp_path, fake_upstream: FakeOpenAI):
    if shutil.which("curl") is None:
        # .ci/run installs curl, so CI always runs this walk-through; a developer's machine
        # without curl skips it, visibly.
        if os.environ.get("CI") == "true":
            pytest.fail("curl is not installed (apt-get install -y curl)")
        pytest.skip("curl is not installed (apt-get install -y curl)")
    fake_upstream.reset()
    env = hermetic_env(
        {
            "OPENAI_API_KEY": SERVER_KEY,
            "OPENAI_BASE_URL": fake_upstream.base_url,
            "NAVAI_FUNCTIONS_FOLDERS": "examples/functions",
            "NAVAI_TTS_PROVIDER": "elevenlabs",
            "ELEVENLABS_API_KEY": "xi-test-key",
            "ELEVENLABS_VOICE_ID": "voice-1",
            "ELEVENLABS_BASE_URL": f"http://127.0.0.1:{fake_upstream.port}",
        }
    )
    server = NavaiProcess(["--port", "0"], env, REPO, tmp_path, "readme")
    try:
        url = server.wait_ready()
        outputs = []
        for line in curl_lines():
            command = shlex.split(line.replace("http://127.0.0.1:3000", url))
            done = subprocess.run(command, capture_output=True, timeout=30, check=False)
            assert done.returncode == 0, (line, done.stderr)
            outputs.append(done.stdout.decode())
    finally:
        server.stop()
    health, document, listed, executed, secret, transcription, speech, preflight = outputs
    assert json.loads(health) == {"ok": True}
    paths = json.loads(document)["paths"]
    # Every route: the walk-through's seven and the three call routes (docs/calls.md).
    assert len(paths) == 10 and "/navai/realtime/calls/{call_id}/hangup" in paths
    assert "/navai/realtime/calls/{call_id}/events" in paths
    assert "get_weather" in {item["name"] for item in json.loads(listed)["items"]}
    assert json.loads(executed)["ok"] is True
    assert json.loads(secret)["value"].startswith("ek_")
    assert json.loads(transcription)["value"].startswith("ek_")
    assert json.loads(speech)["provider"] == "elevenlabs"
    assert preflight.startswith("HTTP/1.1 204")
    assert "access-control-allow-origin: http://localhost:5173" in preflight.lower()
