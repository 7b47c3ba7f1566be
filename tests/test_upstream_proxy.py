"""Mints honour HTTP_PROXY / HTTPS_PROXY / NO_PROXY from the environment, like a plain httpx2
client: behind an egress proxy, no request bypasses it (both adapters)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_adapters_common import Make, make  # noqa: F401  (the both-adapters fixture)

from navai_core import Navai, NavaiConfig

SECRET = "/navai/realtime/client-secret"
REPLY = {"value": "ek_through_the_proxy", "expires_at": 1730000000}


class Recorder:
    """A loopback HTTP server that answers every POST with a client secret and records the
    request line's target (absolute for a proxy, a path for a direct request)."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.targets.append(self.path)
                body = json.dumps(REPLY).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def proxy() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


@pytest.fixture
def direct() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


def minting(base_url: str, tmp_path) -> Navai:
    return Navai(
        NavaiConfig(
            openai_api_key="sk-proxy-test",
            openai_base_url=base_url,
            functions_enabled=False,
            rate_limit_client_secret="off",
            upstream_max_retries=0,
            upstream_timeout_seconds=5,
        )
    )


def clear_proxies(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_mints_go_through_the_proxy_of_the_environment(
    make: Make,  # noqa: F811
    proxy: Recorder,
    monkeypatch,
    tmp_path,
):
    clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    # A host that only the proxy can reach (.invalid never resolves).
    client = make(minting("http://api.openai.invalid/v1", tmp_path))
    response = client.post(SECRET, json={})
    assert response.status_code == 200, response.text
    assert response.json()["value"] == REPLY["value"]
    assert proxy.targets == ["http://api.openai.invalid/v1/realtime/client_secrets"]


def test_no_proxy_hosts_are_reached_directly(
    make: Make,  # noqa: F811
    proxy: Recorder,
    direct: Recorder,
    monkeypatch,
    tmp_path,
):
    clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = make(minting(f"{direct.url}/v1", tmp_path))
    assert client.post(SECRET, json={}).status_code == 200
    assert direct.targets == ["/v1/realtime/client_secrets"]
    assert proxy.targets == []
