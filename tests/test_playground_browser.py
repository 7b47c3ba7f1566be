"""The playground page and docs/calls.md's browser snippet in a real headless Chromium.

Everything is real and on 127.0.0.1: ``navai serve`` (a subprocess) pointed at the fake OpenAI
(``FakeOpenAI(webrtc=True)``, tests/fakes) whose calls endpoint answers with a real WebRTC peer
(aiortc, tests/fakes_webrtc.py), and Chromium with fake media devices, driven over the DevTools
protocol.
A call starts, ICE connects on loopback, the data channel opens and audio flows both ways; a
function call sent over the sideband is run by navai and shows up on the page with its result;
the page hangs up. The events stream (CONTRACT §14) is rendered from a canned stream served
with the page by a small test server.

Set ``NAVAI_UPDATE_SCREENSHOT=1`` to write docs/images/playground.png from the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from conftest import NAVAI_BIN, REPO, hermetic_env, stop_process
from fakes import FakeOpenAI, fn_call
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from websockets.sync.client import connect

from navai_adapters import playground

pytestmark = pytest.mark.slow

KEY = "sk-test-playground"
WAIT = 30.0  # seconds: the longest any single wait may take
SCREENSHOT = REPO / "docs" / "images" / "playground.png"

TOOLS_PY = '''
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


def weather(city: str, unit: str = "celsius") -> dict:
    """The weather in a city (made up)."""
    return {"city": city, "unit": unit, "temperature": 21}
'''


# ----- Chromium over the DevTools protocol ----------------------------------------------------


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "headless Chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # .ci/run installs it: CI always runs these tests
        pytest.skip(message)  # a developer's machine without it skips, visibly
    return found


FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    # WebRTC on loopback only: the fake's peer offers 127.0.0.1 alone, and Chromium leaves
    # its loopback interface out of ICE unless told; host candidates are plain addresses
    # (no mDNS names, which would be resolved by multicast).
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,1000",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class Browser:
    """One headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(
        self, binary: str, profile: Path, log: Path, flags: list[str] | None = None
    ) -> None:
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                *(FLAGS if flags is None else flags),
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.log_path = log
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + WAIT
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            assert self.process.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        pages: list[dict[str, Any]] = []
        while not pages:
            targets = httpx2.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            pages = [t for t in targets if t.get("type") == "page"]
            assert pages or time.monotonic() < deadline, targets
            time.sleep(0.05)
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=WAIT)
        self.ws.__enter__()
        self._ids = iter(range(1, 1_000_000))
        self.console: list[str] = []
        self.errors: list[str] = []
        self.send("Runtime.enable")
        self.send("Page.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + WAIT
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == ident:
                assert "error" not in message, message
                return dict(message.get("result", {}))
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        params = message.get("params", {})
        if message.get("method") == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(a.get("value", "")) for a in params.get("args", [])))
        elif message.get("method") == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(params.get("exceptionDetails", {}))[:2000])

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
            userGesture=True,
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = WAIT, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(f"!!({expression})")
            if value:
                return value
            if time.monotonic() > deadline:
                body = self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(
                    f"timed out waiting for {what or expression}\n--- page ---\n{body}\n"
                    f"--- console ---\n{self.console}\n--- errors ---\n{self.errors}"
                )
            time.sleep(0.1)

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait("document.readyState === 'complete'", what=f"{url} to load")

    def click(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def text(self, selector: str) -> str:
        return str(self.evaluate(f"document.querySelector({json.dumps(selector)}).innerText"))

    def screenshot(self, path: Path) -> None:
        import base64

        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            stop_process(self.process, timeout=10)
            self._log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    binary = chromium_binary()
    profile = tmp_path / "profile"
    profile.mkdir()
    opened = Browser(binary, profile, tmp_path / "chromium.log")
    try:
        yield opened
    finally:
        opened.close()


# ----- navai serve, pointed at the fake with a real WebRTC peer --------------------------------


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(key=KEY, webrtc=True) as running:
        yield running


def serve(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """``navai serve`` on a free loopback port in ``tmp_path`` (functions in ./functions)."""
    (tmp_path / "functions").mkdir(exist_ok=True)
    (tmp_path / "functions" / "tools.py").write_text(TOOLS_PY)
    out = tmp_path / "navai.out"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [str(NAVAI_BIN), "serve", "--host", "127.0.0.1", "--port", "0", *args],
            cwd=tmp_path,
            env=hermetic_env({"NAVAI_FUNCTIONS_FOLDERS": "functions", **env}),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + WAIT
    while True:
        assert process.poll() is None, out.read_text()
        found = re.search(r"serving on (http://127\.0\.0\.1:\d+)", out.read_text())
        if found:
            url = found.group(1)
            try:
                if httpx2.get(f"{url}/health", timeout=2).status_code == 200:
                    return process, url
            except httpx2.TransportError:
                pass
        assert time.monotonic() < deadline, f"navai serve did not start\n{out.read_text()}"
        time.sleep(0.05)


@pytest.fixture
def navai(tmp_path: Path, fake: FakeOpenAI) -> Iterator[str]:
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.base_url}
    process, url = serve(tmp_path, env)
    try:
        yield url
    finally:
        stop_process(process)


def start_call(browser: Browser, fake: FakeOpenAI) -> Any:
    """Click Start; return the fake's call once the page's data channel is open."""
    browser.wait("!document.querySelector('#start').disabled", what="the Start button")
    browser.click("#start")
    browser.wait(
        "document.querySelector('#channel-state').textContent.includes('open')",
        what="the data channel to open",
    )
    return fake.call(timeout=WAIT)


def test_a_call_from_the_playground(browser: Browser, fake: FakeOpenAI, navai: str, tmp_path):
    browser.open(f"{navai}/")
    assert browser.evaluate("document.title") == "navai playground"
    # The functions, with their schemas and a form each.
    browser.wait("document.querySelectorAll('#functions .fn').length === 2", what="2 functions")
    assert "Add two whole numbers." in browser.text("#functions")
    assert browser.evaluate("document.querySelector('#notices').innerText") == ""

    call = start_call(browser, fake)
    peer = call.peer
    assert peer is not None
    # (The page sees its channel open first; the fake's peer hears of it a moment later.)
    peer.wait_for(lambda p: p.channel_open.is_set(), timeout=WAIT)
    # The session navai asked for carries the functions as tools.
    assert {t["name"] for t in call.session["tools"]} == {"add", "weather"}
    browser.wait("document.querySelector('#peer-state').textContent === 'peer: connected'")
    # Audio both ways: the fake hears the fake microphone, the page receives the tone.
    peer.wait_for(lambda p: p.audio_frames >= 25, timeout=WAIT)
    received = """(async () => {
        const stats = await window.playground.pc.getStats();
        let bytes = 0;
        stats.forEach((s) => {
            if (s.type === "inbound-rtp" && s.kind === "audio") bytes += s.bytesReceived;
        });
        return bytes > 2000;
    })()"""
    browser.wait(received, what="the agent's audio to arrive")
    assert browser.evaluate("document.querySelector('#voice').srcObject !== null")
    # ICE chose loopback on both sides.
    pair = """(async () => {
        const stats = await window.playground.pc.getStats();
        const found = [];
        stats.forEach((s) => {
            if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
                found.push([stats.get(s.localCandidateId).address,
                            stats.get(s.remoteCandidateId).address]);
            }
        });
        return found;
    })()"""
    assert browser.evaluate(pair) == [["127.0.0.1", "127.0.0.1"]]
    # The browser's session.update reaches the peer over the data channel.
    browser.evaluate(
        "window.playground.channel.send(JSON.stringify({type: 'session.update', session: {}}))"
    )
    peer.wait_for(lambda p: bool(p.of_type("session.update")), timeout=WAIT)

    # The model calls a function over the sideband; navai runs it and answers.
    call.wait_for(lambda c: c.connections >= 1, timeout=WAIT)
    done = {
        "type": "response.done",
        "response": {
            "id": "resp_1",
            "status": "completed",
            "output": [
                {
                    "type": "function_call",
                    "call_id": "fc_add",
                    "name": "add",
                    "arguments": '{"a": 2, "b": 40}',
                }
            ],
        },
    }
    call.send(fn_call("fc_add", "add", {"a": 2, "b": 40}), done)
    call.wait_for(lambda c: len(c.outputs()) == 1, timeout=WAIT)
    assert call.output_of("fc_add")["result"] == 42
    # The page shows it: name, arguments and result (mirrored on the data channel, as OpenAI
    # sends the call's events to every connection).
    row = "document.querySelector('#tools tr[data-call-id=\"fc_add\"]')"
    browser.wait(f"{row} && {row}.querySelector('.result pre.ok')", what="the tool's result")
    text = browser.text('#tools tr[data-call-id="fc_add"]')
    assert "add" in text and '"a": 2' in text and "42" in text

    # Captions from navai's events stream (GET <calls path>/<id>/events): the model's words
    # reach navai on the sideband, its call record keeps them and streams them to the page.
    browser.wait("document.querySelector('#stream-state').textContent === 'events: live'")
    call.send({"type": "response.output_audio_transcript.done", "transcript": "It is 42."})
    browser.wait("document.querySelector('#transcript').innerText.includes('It is 42.')")

    browser.screenshot(tmp_path / "playground.png")
    if os.environ.get("NAVAI_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "playground.png", SCREENSHOT)

    browser.click("#hangup")
    browser.wait("document.querySelector('#call-state').textContent.startsWith('ended')")
    call.wait_for(lambda c: c.hangups == 1 and c.ended, timeout=WAIT)
    assert [r.path for r in fake.requests if r.path.endswith("/hangup")] == [
        f"/v1/realtime/calls/{call.call_id}/hangup"
    ]
    peer.wait_for(lambda p: p.closed.is_set(), timeout=WAIT)
    assert browser.errors == []


def test_a_function_run_by_hand(browser: Browser, navai: str):
    browser.open(f"{navai}/")
    form = "#functions .fn[data-function='add'] form"
    browser.wait(f"document.querySelector({json.dumps(form)})", what="the add form")
    browser.evaluate(
        f"""(() => {{
        const form = document.querySelector({json.dumps(form)});
        form.elements.a.value = "20";
        form.elements.b.value = "22";
        form.querySelector("button").click();
    }})()"""
    )
    result = "#functions .fn[data-function='add'] pre.result"
    browser.wait(
        f"document.querySelector({json.dumps(result)}).textContent.includes('HTTP 200')",
        what="the execute route's answer",
    )
    answer = json.loads(browser.text(result).split("\n", 1)[1])
    assert answer == {"ok": True, "function_name": "add", "source": answer["source"], "result": 42}


def test_what_is_missing(browser: Browser, tmp_path: Path):
    """No key, no functions, execute off: the page says so, and Start stays disabled."""
    process, url = serve(tmp_path, {"NAVAI_FUNCTIONS_FOLDERS": "nothing-here"})
    try:
        browser.open(f"{url}/")
        browser.wait("document.querySelectorAll('#notices li').length >= 2", what="notices")
        notices = browser.text("#notices")
        assert "No OPENAI_API_KEY on the server" in notices
        assert "No backend functions" in notices
        assert browser.evaluate("document.querySelector('#start').disabled") is True
    finally:
        stop_process(process)


def test_no_microphone_permission(tmp_path: Path, fake: FakeOpenAI, navai: str):
    """A browser that refuses the microphone: the page says so and starts nothing."""
    binary = chromium_binary()
    profile = tmp_path / "deny"
    profile.mkdir()
    deny = [f for f in FLAGS if f != "--use-fake-ui-for-media-stream"]
    opened = Browser(binary, profile, tmp_path / "deny.log", deny)
    try:
        opened.open(f"{navai}/")
        opened.wait("!document.querySelector('#start').disabled")
        # Headless Chromium without the fake UI denies at once (nobody to ask).
        opened.click("#start")
        opened.wait(
            "document.querySelector('#notices').innerText.includes('No microphone permission')",
            what="the microphone notice",
        )
        assert opened.text("#call-state") == "idle"
        assert fake.calls == {}
    finally:
        opened.close()


# ----- the events stream (CONTRACT §14), canned -----------------------------------------------

CANNED = [
    ("transcript", {"role": "user", "text": "What is two plus forty?", "at": 1.2}),
    ("tool", {"call_id": "fc_1", "name": "add", "ok": True, "error": None, "ms": 3.4}),
    (
        "tool",
        {"call_id": "fc_2", "name": "weather", "ok": False, "error": "City not found", "ms": 12},
    ),
    ("transcript", {"role": "assistant", "text": "Forty-two.", "at": 2.5}),
    ("cost", {"cost_usd": 0.0123, "usage": {"total_tokens": 512}}),
    (
        "end",
        {
            "call_id": "rtc_canned",
            "end_reason": "hangup",
            "seconds": 4.25,
            "cost_usd": 0.0125,
            "transcript": [],
            "tools": [],
        },
    ),
]


def canned_stream() -> Iterator[str]:
    yield ": ping\n\n"
    for kind, data in CANNED:
        yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"


class CannedServer:
    """The page, its status, and a calls route that answers with the fake's WebRTC peer and
    a canned events stream per §14 (until navai's own route exists, and after)."""

    def __init__(self) -> None:
        self.peers: list[Any] = []

        async def index(request: Request) -> Response:
            body = playground.page()
            headers = dict(playground._headers())
            return Response(body, headers=headers)

        async def status(request: Request) -> Response:
            return JSONResponse(
                {
                    "api_key": True,
                    "api_key_setting": "OPENAI_API_KEY",
                    "api_key_from_request": False,
                    "calls_path": "/navai/realtime/calls",
                    "functions_path": None,
                    "execute_path": None,
                    "model": "gpt-realtime-2.1",
                    "voice": "marin",
                }
            )

        async def calls(request: Request) -> Response:
            from fakes_webrtc import answer

            peer = await answer((await request.body()).decode())
            self.peers.append(peer)
            location = "/navai/realtime/calls/rtc_canned"
            return Response(
                peer.sdp, 201, headers={"Location": location}, media_type="application/sdp"
            )

        async def events(request: Request) -> Response:
            return StreamingResponse(canned_stream(), media_type="text/event-stream")

        async def hangup(request: Request) -> Response:
            return JSONResponse({"ok": True, "call_id": "rtc_canned"})

        app = Starlette(
            routes=[
                Route("/", index),
                Route("/playground.json", status),
                Route("/navai/realtime/calls", calls, methods=["POST"]),
                Route("/navai/realtime/calls/rtc_canned/events", events),
                Route("/navai/realtime/calls/rtc_canned/hangup", hangup, methods=["POST"]),
            ]
        )
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True
        )

    def __enter__(self) -> CannedServer:
        self.thread.start()
        deadline = time.monotonic() + WAIT
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive()
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        for peer in self.peers:
            peer.close()
        self.server.should_exit = True
        self.thread.join(WAIT)


def test_the_events_stream_is_shown(browser: Browser):
    with CannedServer() as canned:
        browser.open(f"{canned.url}/")
        browser.wait("!document.querySelector('#start').disabled")
        browser.click("#start")
        browser.wait(
            "document.querySelector('#record-summary')", what="the call record from the stream"
        )
        assert browser.text("#stream-state") == "events: ended"
        transcript = browser.text("#transcript")
        assert "You" in transcript and "What is two plus forty?" in transcript
        assert "Agent" in transcript and "Forty-two." in transcript
        ok = browser.text('#tools tr[data-call-id="fc_1"]')
        assert "add" in ok and "✓" in ok and "3" in ok
        failed = browser.text('#tools tr[data-call-id="fc_2"]')
        assert "weather" in failed and "✗ City not found" in failed and "12" in failed
        assert browser.text("#cost") == "cost: $0.0125"  # the record's total wins
        assert browser.text("#record-summary") == "Call ended (hangup) after 4.3 s, $0.0125"
        assert browser.text("#call-state") == "ended (hangup)"
        assert browser.errors == []


# ----- docs/calls.md's browser snippet, for real ----------------------------------------------


def snippet() -> str:
    text = (REPO / "docs" / "calls.md").read_text()
    [found] = re.findall(r"## The browser\n.*?```html\n(.*?)```", text, re.S)
    return found


def test_the_docs_snippet(browser: Browser, fake: FakeOpenAI, navai: str, tmp_path: Path):
    """The snippet as a user copies it, on a page of another loopback origin (navai's default
    CORS allows local pages), against navai and the fake's real WebRTC peer."""
    run_snippet(browser, fake, navai, tmp_path, "response.created")
    assert "session.created" in browser.console


def test_the_docs_snippet_against_a_live_navai(browser: Browser, fake: FakeOpenAI, tmp_path: Path):
    """The same snippet, unchanged, against a navai with NAVAI_CALL_RUNTIME=live: navai creates
    a GPT-Live session (the fake's real peer answers its offer) and hangs it up with Live's
    /hangup."""
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.base_url, "NAVAI_CALL_RUNTIME": "live"}
    process, url = serve(tmp_path, env)
    try:
        call = run_snippet(browser, fake, url, tmp_path, "session.output_transcript.delta")
    finally:
        stop_process(process)
    assert call.runtime == "live" and call.call_id.startswith("live_")
    assert call.session["client"]["data_channel"]["allowed_client_events"] == []
    assert f"/v1/live/sessions/{call.call_id}/hangup" in [r.path for r in fake.requests]


def run_snippet(browser: Browser, fake: FakeOpenAI, navai: str, tmp_path: Path, kind: str) -> Any:
    """Open the snippet's page, start a call, see a server event of type ``kind`` arrive on
    the data channel and audio flow, hang up; the fake's call."""
    page = snippet()
    assert 'const NAVAI = "http://localhost:3000";' in page
    page = page.replace("http://localhost:3000", navai)
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(f"<!doctype html><html><body>{page}</body></html>")
    server = subprocess.Popen(
        [
            str(Path(NAVAI_BIN).with_name("python")),
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "0",
        ],
        cwd=site,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().decode()  # "Serving HTTP on 127.0.0.1 port N ..."
        port = re.search(r"port (\d+)", line)
        assert port, line
        # http://localhost:<port> is an origin navai's local CORS default allows.
        browser.open(f"http://localhost:{port.group(1)}/index.html")
        browser.click("#start")
        call = fake.call(timeout=WAIT)
        call.peer.wait_for(lambda p: p.channel_open.is_set(), timeout=WAIT)
        call.peer.send({"type": kind, "response": {}})
        # The snippet logs each data-channel event's type.
        deadline = time.monotonic() + WAIT
        while kind not in browser.console:
            assert time.monotonic() < deadline, browser.console
            browser.evaluate("0")  # reads the console events that arrived meanwhile
            time.sleep(0.1)
        call.peer.wait_for(lambda p: p.audio_frames >= 10, timeout=WAIT)
        browser.click("#stop")
        call.wait_for(lambda c: c.hangups == 1 and c.ended, timeout=WAIT)
        assert browser.errors == []
        return call
    finally:
        stop_process(server)
