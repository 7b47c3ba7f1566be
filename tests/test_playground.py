"""The playground page: when ``navai serve`` offers it, what it is served with, what its
status tells the page, and that it loads nothing from elsewhere. The page in a real browser:
tests/test_playground_browser.py."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import httpx2
import pytest
from conftest import NAVAI_BIN, hermetic_env, stop_process
from starlette.testclient import TestClient
from werkzeug.test import Client

from navai_adapters import playground
from navai_adapters.asgi import create_app as create_asgi_app
from navai_adapters.wsgi import create_app as create_wsgi_app
from navai_core import Navai, NavaiConfig


@pytest.mark.parametrize(
    ("host", "value", "expected"),
    [
        ("127.0.0.1", "", True),
        ("localhost", "", True),
        ("::1", "", True),
        ("[::1]", "", True),
        ("127.0.0.2", "", True),
        ("0.0.0.0", "", False),
        ("::", "", False),
        ("192.0.2.10", "", False),
        ("example.com", "", False),
        ("0.0.0.0", "true", True),
        ("0.0.0.0", " YES ", True),
        ("127.0.0.1", "false", False),
        ("127.0.0.1", "0", False),
    ],
)
def test_on_by_default_on_loopback_only(host, value, expected):
    assert playground.enabled(host, {playground.ENV: value} if value else {}) is expected


def test_a_value_that_is_no_flag_is_refused():
    with pytest.raises(ValueError, match="NAVAI_PLAYGROUND must be true or false, got 'maybe'"):
        playground.enabled("127.0.0.1", {"NAVAI_PLAYGROUND": "maybe"})


def test_the_page_is_self_contained():
    page = playground.page().decode()
    assert page.startswith("<!doctype html>")
    # No external script, style, font, image or frame; every request goes to its own origin.
    assert not re.search(r"\b(src|href)\s*=", page)
    assert not re.search(r"@import|url\(|https?://", page)
    assert page.count("<script>") == 1 and page.count("<style>") == 1
    # Nothing a Content-Security-Policy with hashes would block.
    assert not re.search(r"\son[a-z]+\s*=|\sstyle\s*=", page)


def test_status_says_what_is_missing():
    bare = playground.status(Navai(NavaiConfig()))
    assert bare["api_key"] is False and bare["api_key_setting"] == "OPENAI_API_KEY"
    assert bare["calls_path"] == "/navai/realtime/calls"
    assert bare["functions_path"] == "/navai/functions"
    assert bare["execute_path"] == "/navai/functions/execute"
    keyed = playground.status(Navai(NavaiConfig(openai_api_key="sk-secret")))
    assert keyed["api_key"] is True
    assert "sk-secret" not in repr(keyed)
    no_execute = playground.status(Navai(NavaiConfig(browser_execute=False)))
    assert no_execute["execute_path"] is None and no_execute["functions_path"]
    off = playground.status(Navai(NavaiConfig(functions_enabled=False)))
    assert off["functions_path"] is None and off["execute_path"] is None


def check_page(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert body == playground.page()
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]{44}';", policy)
    assert headers["cache-control"] == "no-store"


def test_asgi_wrapper():
    navai = Navai(NavaiConfig(openai_api_key="sk-secret"))
    with TestClient(playground.asgi(create_asgi_app(navai), navai)) as client:
        answer = client.get("/")
        check_page(answer.status_code, dict(answer.headers), answer.content)
        assert client.get("/playground.json").json()["api_key"] is True
        assert client.head("/").content == b""
        assert client.post("/").status_code == 405
        # Everything else is navai's.
        assert client.get("/navai/functions").status_code == 200
        assert client.get("/index.html").status_code == 404


def test_wsgi_wrapper():
    navai = Navai(NavaiConfig())
    client = Client(playground.wsgi(create_wsgi_app(navai), navai))
    answer = client.get("/")
    check_page(answer.status_code, dict(answer.headers), answer.get_data())
    assert client.get("/playground.json").get_json()["api_key"] is False
    assert client.post("/").status_code == 405
    assert client.get("/navai/functions").status_code == 200


def test_the_framework_apps_have_no_page():
    navai = Navai(NavaiConfig())
    with TestClient(create_asgi_app(navai)) as client:
        assert client.get("/").status_code == 404
        assert client.get("/playground.json").status_code == 404
    assert Client(create_wsgi_app(navai)).get("/").status_code == 404


# ----- navai serve --------------------------------------------------------------------------


def serve(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], str]:
    out = tmp_path / "serve.out"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [str(NAVAI_BIN), "serve", "--port", "0", *args],
            cwd=tmp_path,
            env=hermetic_env(env),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return process, out.read_text()
        found = re.search(r"serving on (http://127\.0\.0\.1:\d+)", out.read_text())
        if found:
            try:
                httpx2.get(f"{found.group(1)}/health", timeout=2)
                return process, found.group(1)
            except httpx2.TransportError:
                pass
        time.sleep(0.05)
    stop_process(process)
    raise AssertionError(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("wsgi", [False, True], ids=["asgi", "wsgi"])
def test_navai_serve_offers_the_page_on_loopback(tmp_path, wsgi):
    process, url = serve(tmp_path, {}, *(["--wsgi"] if wsgi else []))
    try:
        answer = httpx2.get(f"{url}/", timeout=5)
        check_page(answer.status_code, dict(answer.headers), answer.content)
        assert httpx2.get(f"{url}/playground.json", timeout=5).json()["api_key"] is False
        assert f"navai: playground at {url}/" in (tmp_path / "serve.out").read_text()
    finally:
        stop_process(process)


@pytest.mark.slow
def test_navai_playground_false_turns_it_off(tmp_path):
    process, url = serve(tmp_path, {"NAVAI_PLAYGROUND": "false"})
    try:
        assert httpx2.get(f"{url}/", timeout=5).status_code == 404
        assert httpx2.get(f"{url}/playground.json", timeout=5).status_code == 404
        assert "playground" not in (tmp_path / "serve.out").read_text()
    finally:
        stop_process(process)


@pytest.mark.slow
def test_navai_playground_must_be_a_flag(tmp_path):
    process, output = serve(tmp_path, {"NAVAI_PLAYGROUND": "maybe"})
    assert process.wait(10) == 2
    assert "NAVAI_PLAYGROUND must be true or false, got 'maybe'" in output
