"""NAVAI_CORS_ALLOW_CREDENTIALS: cookies from a page on another origin, never with ``*``.

The core's decision (handle and ahandle), the setting read from the environment and reported
when combined with ``*``, and a real browser (headless Chromium) on one loopback origin
calling navai on another with ``credentials: "include"``.
"""

from __future__ import annotations

import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from conftest import REPO, hermetic_env

from navai_core import Navai, NavaiConfig, RequestContext, SettingsError

LIST = "/navai/functions"
CREDENTIALS = "Access-Control-Allow-Credentials"


@pytest.fixture(params=["sync", "async"])
def call(request):
    def sync(navai, context):
        return navai.handle(context, b"")

    def asynchronous(navai, context):
        return anyio.run(navai.ahandle, context, b"")

    return sync if request.param == "sync" else asynchronous


def context(method: str, origin: str) -> RequestContext:
    headers = {"origin": origin, "access-control-request-method": "GET"}
    return RequestContext(method, LIST, headers, "127.0.0.1")


@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
@pytest.mark.parametrize(
    ("origins", "origin", "expected"),
    [
        (("https://app.example",), "https://app.example", "true"),
        (None, "http://localhost:5173", "true"),  # the local default echoes the origin
        (("https://app.example",), "https://evil.example", None),
        (("*",), "https://app.example", None),  # never with *
    ],
)
def test_credentials_only_for_an_echoed_origin(call, method, origins, origin, expected):
    navai = Navai(NavaiConfig(cors_origins=origins, cors_allow_credentials=True))
    reply = call(navai, context(method, origin))
    headers = dict(reply.headers)
    assert headers.get(CREDENTIALS) == expected
    if expected:
        assert headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
def test_off_by_default(call, method):
    navai = Navai(NavaiConfig(cors_origins=("https://app.example",)))
    reply = call(navai, context(method, "https://app.example"))
    assert dict(reply.headers)["Access-Control-Allow-Origin"] == "https://app.example"
    assert CREDENTIALS not in dict(reply.headers)


def test_read_from_the_environment_and_reported_with_a_star():
    named = NavaiConfig.from_env(
        {"NAVAI_CORS_ALLOW_CREDENTIALS": "true", "NAVAI_CORS_ORIGIN": "https://app.example"}
    )
    assert named.cors_allow_credentials is True
    assert not [p for p in named.problems() if "CREDENTIALS" in p]
    star = NavaiConfig.from_env({"NAVAI_CORS_ALLOW_CREDENTIALS": "yes", "NAVAI_CORS_ORIGIN": "*"})
    [problem] = [p for p in star.problems() if "NAVAI_CORS_ALLOW_CREDENTIALS" in p]
    assert '"*"' in problem
    with pytest.raises(SettingsError, match="NAVAI_CORS_ALLOW_CREDENTIALS='sometimes'"):
        NavaiConfig.from_env({"NAVAI_CORS_ALLOW_CREDENTIALS": "sometimes"})


# ----- a real browser ----------------------------------------------------------------------

PAGE = """<!doctype html>
<html><body><pre id="out">pending</pre><script>
fetch("%(navai)s/navai/functions/execute", {
  method: "POST",
  credentials: "include",
  headers: {"Content-Type": "application/json"},
  body: JSON.stringify({function_name: "my_orders"}),
})
  .then((answer) => answer.json())
  .then((body) => { document.getElementById("out").textContent = JSON.stringify(body); })
  .catch((error) => { document.getElementById("out").textContent = "failed: " + error; });
</script></body></html>
"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "headless Chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # .ci/run installs it: CI always runs this test
        pytest.skip(message)  # a developer's machine without it skips, visibly
    return found


class PageServer:
    """The other origin: serves PAGE with a session cookie for 127.0.0.1 (cookies ignore the
    port, so the browser sends it to navai's port too; both ports are the same site)."""

    def __init__(self) -> None:
        self.page = b""
        self.cookie = ""
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Set-Cookie", f"{owner.cookie}; Path=/; SameSite=Lax; HttpOnly")
                self.send_header("Content-Length", str(len(owner.page)))
                self.end_headers()
                self.wfile.write(owner.page)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def start_uvicorn(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The security page's FastAPI example (session cookie) on a real uvicorn."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("uvicorn")),
                "docs.examples.auth_fastapi:app",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ],
            cwd=REPO,
            env=hermetic_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        found = re.search(r"running on (http://127\.0\.0\.1:\d+)", log.read_text())
        if found:
            return process, found.group(1)
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"uvicorn did not start\n{log.read_text()}")


def browse(browser: str, url: str, profile: Path) -> str:
    """What the page wrote into its <pre>, once its fetch has settled."""
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        timeout=90,
        check=False,
    )
    found = re.search(r'<pre id="out">(.*?)</pre>', done.stdout.decode(errors="replace"), re.S)
    assert found, f"no page dumped (exit {done.returncode})\n{done.stderr.decode()[-2000:]}"
    return html.unescape(found.group(1))


@pytest.mark.slow  # starts real processes
@pytest.mark.parametrize("allow_credentials", [True, False])
def test_a_page_on_another_origin_sends_its_session_cookie(tmp_path, allow_credentials):
    browser = chromium()
    page = PageServer()
    try:
        env = {
            "NAVAI_CORS_ORIGIN": page.origin,
            "NAVAI_FUNCTIONS_BASE_DIR": str(tmp_path),
            **({"NAVAI_CORS_ALLOW_CREDENTIALS": "true"} if allow_credentials else {}),
        }
        process, navai_url = start_uvicorn(env, tmp_path / "uvicorn.log")
        try:
            assert navai_url.rsplit(":", 1)[1] != page.origin.rsplit(":", 1)[1]
            login = httpx2.post(f"{navai_url}/login", timeout=10)
            page.cookie = login.headers["set-cookie"].split(";")[0]  # the signed session
            page.page = (PAGE % {"navai": navai_url}).encode()
            shown = browse(browser, f"{page.origin}/", tmp_path / "profile")
        finally:
            process.terminate()
            process.wait(timeout=15)
    finally:
        page.close()
    if allow_credentials:
        # The cookie reached navai's router (its dependency let the call through) and the
        # browser let the page read the answer.
        assert json.loads(shown) == {
            "ok": True,
            "function_name": "my_orders",
            "source": "docs.examples.auth_fastapi#my_orders",
            "result": ["A-100", "A-101"],
        }
    else:
        assert shown.startswith("failed: TypeError"), shown  # the browser hid the answer
