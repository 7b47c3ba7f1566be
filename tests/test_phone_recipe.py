"""docs/phone-calls.md's local recipe, run as written: the documented body signed with navai's
own signer and posted with curl to a real `navai serve`, which accepts the call (on the fake
upstream here, through OPENAI_BASE_URL). The body is checked against openai's own type."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SERVER_KEY, NavaiProcess, hermetic_env
from fakes import FakeOpenAI

PAGE = (REPO / "docs" / "phone-calls.md").read_text()
BODY = REPO / "docs" / "examples" / "incoming_call.json"


def bash_blocks() -> list[str]:
    start = PAGE.index("## A delivery, and trying one locally")
    section = PAGE[start : PAGE.index("\n## ", start + 1)]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def test_the_page_shows_the_body_verbatim_and_openai_reads_it():
    from openai.types.webhooks import RealtimeCallIncomingWebhookEvent

    assert f"```json\n{BODY.read_text()}```" in PAGE
    event = RealtimeCallIncomingWebhookEvent.model_validate(json.loads(BODY.read_text()))
    assert event.type == "realtime.call.incoming"
    assert event.data.call_id.startswith("rtc_")


@pytest.mark.slow  # starts a real server
@pytest.mark.skipif(shutil.which("curl") is None, reason="the recipe uses curl")
def test_the_recipe_delivers_a_call(tmp_path, fake_upstream: FakeOpenAI):
    serve_block, post_block = bash_blocks()
    [secret] = re.findall(r"export OPENAI_WEBHOOK_SECRET=(\S+)", serve_block)
    assert "navai serve" in serve_block
    env = hermetic_env(
        {
            "OPENAI_WEBHOOK_SECRET": secret,
            "OPENAI_API_KEY": SERVER_KEY,
            "OPENAI_BASE_URL": fake_upstream.base_url,
            "NAVAI_FUNCTIONS_BASE_DIR": str(tmp_path),
        }
    )
    # As in a shell where navai's virtual environment is active.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    call_id = json.loads(BODY.read_text())["data"]["call_id"]
    fake_upstream.open_call(call_id=call_id)  # the pending call OpenAI announces
    server = NavaiProcess(["--port", "0"], env, tmp_path, tmp_path, "phone-recipe")
    try:
        url = server.wait_ready()
        shutil.copy(BODY, tmp_path / "incoming_call.json")
        script = post_block.replace("http://127.0.0.1:3000", url)
        done = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        [printed] = re.findall(r"^curl prints `([^`]+)`", PAGE, re.M)
        assert done.stdout.strip() == printed
        for _ in range(100):
            if f"phone call {call_id} accepted" in server.stderr():
                break
            time.sleep(0.05)
        assert f"phone call {call_id} accepted" in server.stderr(), server.describe()
        # One byte changed after signing: refused.
        (tmp_path / "incoming_call.json").write_text(BODY.read_text().replace("+1", "+2", 1))
        tampered = script.replace("> headers.txt", "> /dev/null")
        again = subprocess.run(
            ["bash", "-e", "-c", tampered], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert again.stdout.strip().endswith(" 400"), again.stdout
    finally:
        server.stop()
