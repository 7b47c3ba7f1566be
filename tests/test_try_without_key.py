"""README's "Try it without an OpenAI key", run as written: the fake's command and the
``navai serve`` line it prints, as subprocesses on free loopback ports.

Through navai: a client secret is the fake's ``ek_`` value; a call made with a real SDP offer
(an aiortc peer here, as a browser's would be) connects to the fake's WebRTC peer, its data
channel opens, and the ``--demo`` turn plays: the caller's words, a call of ``get_weather``
that navai runs from examples/functions (its output comes back on the data channel), and the
assistant's words quoting the result. Then navai hangs the call up and Ctrl-C stops the fake.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from conftest import NAVAI_BIN, REPO, NavaiProcess, hermetic_env, stop_all

pytestmark = pytest.mark.slow

WAIT = 30.0  # seconds: the longest any single wait may take


def readme_commands() -> tuple[list[str], str]:
    """The section's two bash blocks: the fake's command (argv) and the navai line."""
    text = (REPO / "README.md").read_text()
    [section] = re.findall(r"\n## Try it without an OpenAI key\n(.*?)\n## ", text, re.S)
    first, second = re.findall(r"```bash\n(.*?)\n```", section, re.S)
    fake = shlex.split(first.split("&&")[-1])
    return fake, second.strip()


class Lines:
    """A process's stdout, line by line, read in a thread (waits on it are bounded)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        self._thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._thread.start()

    def wait_for(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} in {self.lines!r}")


@pytest.fixture
def fake_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    """The README's first command (on a free port)."""
    argv, _ = readme_commands()
    assert argv == [".venv/bin/python", "examples/fake_openai.py", "--demo"]
    process = subprocess.Popen(
        [sys.executable, *argv[1:], "--port", "0"],  # the same command on a free port
        cwd=REPO,
        env=hermetic_env({}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "fake.err").open("w"),
        text=True,
    )
    try:
        yield process, Lines(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)


def navai_from(line: str, tmp_path: Path) -> NavaiProcess:
    """The printed ``VAR=value ... <navai> serve`` line as a process (on a free port)."""
    words = shlex.split(line)
    settings = dict(word.split("=", 1) for word in words if re.match(r"^[A-Z_]+=", word))
    command = words[len(settings) :]
    assert Path(command[0]).name == "navai" and command[1:] == ["serve"], command
    assert (REPO / command[0]).resolve() == NAVAI_BIN.resolve()
    return NavaiProcess(["--port", "0"], hermetic_env(settings), REPO, tmp_path, "navai")


async def call_through(url: str) -> dict[str, Any]:
    """A WebRTC call through navai, from a real offer; what its data channel carried."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from fakes_webrtc import CHANNEL, ToneTrack, _loopback_only, loopback_candidates

    _loopback_only()  # this process's peer, too, uses 127.0.0.1 only
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    events: list[dict[str, Any]] = []
    opened = asyncio.Event()
    channel = pc.createDataChannel(CHANNEL)
    channel.on("open", opened.set)
    channel.on("message", lambda message: events.append(json.loads(message)))
    pc.addTrack(ToneTrack())  # the microphone
    try:
        await pc.setLocalDescription(await pc.createOffer())
        answer = await asyncio.to_thread(
            httpx2.post,
            f"{url}/navai/realtime/calls",
            content=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp"},
            timeout=WAIT,
        )
        assert answer.status_code == 201, answer.text
        location = answer.headers["location"]
        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=loopback_candidates(answer.text), type="answer")
        )
        await asyncio.wait_for(opened.wait(), WAIT)

        def said(kind: str) -> list[dict[str, Any]]:
            return [e for e in events if e.get("type") == kind]

        deadline = time.monotonic() + WAIT
        while not said("response.output_audio_transcript.done"):
            assert time.monotonic() < deadline, events
            await asyncio.sleep(0.05)
        hangup = await asyncio.to_thread(
            httpx2.post, f"{url}{location}/hangup", json={}, timeout=WAIT
        )
        assert hangup.status_code == 200, hangup.text
        return {"location": location, "events": events, "said": said}
    finally:
        await asyncio.wait_for(pc.close(), WAIT)


def printed_navai_line(lines: Lines) -> str:
    """The line the fake prints: the README's second command, but for the port (the
    README's is the fake's default, 3001)."""
    _, documented = readme_commands()
    base = lines.wait_for(r"fake OpenAI on (http://127\.0\.0\.1:\d+/v1) ").group(1)
    printed = lines.wait_for(r"^    (OPENAI_API_KEY=.* serve)$").group(1)
    assert printed == documented.replace("http://127.0.0.1:3001/v1", base)
    return printed


def test_the_fake_listens_on_the_documented_port_by_default() -> None:
    from fakes.__main__ import PORT

    _, documented = readme_commands()
    assert f"OPENAI_BASE_URL=http://127.0.0.1:{PORT}/v1 " in documented


def test_the_readme_commands_run_a_call_with_the_demo_turn(fake_process, tmp_path: Path) -> None:
    fake, lines = fake_process
    navai = navai_from(printed_navai_line(lines), tmp_path)
    try:
        url = navai.wait_ready()
        secret = httpx2.post(f"{url}/navai/realtime/client-secret", json={}, timeout=WAIT)
        assert secret.status_code == 200, secret.text
        assert secret.json()["value"].startswith("ek_fake_")
        names = [f["name"] for f in httpx2.get(f"{url}/navai/functions").json()["items"]]
        assert "get_weather" in names

        seen = asyncio.run(asyncio.wait_for(call_through(url), 3 * WAIT))
        said = seen["said"]
        [user] = said("conversation.item.input_audio_transcription.completed")
        assert user["transcript"] == "What's the weather in Bogota?"
        [called] = said("response.function_call_arguments.done")
        assert called["name"] == "get_weather"
        assert json.loads(called["arguments"]) == {"city": "Bogota"}
        # navai ran the function on the server and sent its output on the sideband; the
        # fake's peer shows it on the data channel, as OpenAI does.
        outputs = [
            e["item"]
            for e in said("conversation.item.added")
            if e["item"].get("type") == "function_call_output"
        ]
        [output] = [json.loads(o["output"]) for o in outputs if o["call_id"] == called["call_id"]]
        assert output["ok"] is True and output["function_name"] == "get_weather"
        assert output["result"]["city"] == "Bogotá"
        [reply] = said("response.output_audio_transcript.done")
        assert reply["transcript"].startswith("get_weather answered: {")
        assert '"city": "Bogotá"' in reply["transcript"]
        call_id = seen["location"].rsplit("/", 1)[1]
        lines.wait_for(rf"^{call_id}: call created \(tools offered: .*get_weather")
        lines.wait_for(rf"^{call_id}: navai sent the output of get_weather: ")
    finally:
        [navai_code] = stop_all([navai])
    assert navai_code == 0, navai.describe()

    fake.send_signal(signal.SIGINT)  # Ctrl-C, as the fake's banner says
    assert fake.wait(WAIT) == 0
    lines.wait_for(r"^fake OpenAI stopped$")


def test_the_playground_shows_the_demo_turn(fake_process, tmp_path: Path) -> None:
    """What a newcomer sees: the playground's call connects and shows the turn."""
    from test_playground_browser import Browser, chromium_binary

    _, lines = fake_process
    navai = navai_from(printed_navai_line(lines), tmp_path)
    profile = tmp_path / "profile"
    profile.mkdir()
    browser = None
    try:
        url = navai.wait_ready()
        browser = Browser(chromium_binary(), profile, tmp_path / "chromium.log")
        browser.open(f"{url}/")
        browser.wait("!document.querySelector('#start').disabled", what="the Start button")
        assert browser.evaluate("document.querySelector('#notices').innerText") == ""
        browser.click("#start")
        browser.wait(
            "document.querySelector('#channel-state').textContent.includes('open')",
            what="the data channel to open",
        )
        browser.wait(
            "document.querySelector('#transcript').innerText.includes('get_weather answered')",
            what="the assistant's words",
        )
        transcript = browser.text("#transcript")
        assert "What's the weather in Bogota?" in transcript
        row = browser.text('#tools tr[data-call-id="call_demo_1"]')
        assert "get_weather" in row and "✓" in row and "Bogotá" in row
        lines.wait_for(r": navai sent the output of get_weather: ")
        browser.click("#hangup")
        browser.wait(
            "document.querySelector('#call-state').textContent.startsWith('ended')",
            what="the page to hang up",
        )
        assert browser.errors == []
    finally:
        if browser is not None:
            browser.close()
        [navai_code] = stop_all([navai])
    assert navai_code == 0, navai.describe()
