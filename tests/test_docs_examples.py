"""The framework pages' examples (docs/examples/*.py) run, and the pages show them verbatim.

Each example is imported as its page says to run it, with the environment pointing at the
fake OpenAI upstream, and answers real requests in-process. The deployment page's factory
commands are started as real servers.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx2
import pytest
from conftest import NAVAI_VARIABLES, REPO, SERVER_KEY, TestClient, hermetic_env, stop_process
from fakes import FakeOpenAI

DOCS = REPO / "docs"
EXAMPLES = DOCS / "examples"
PAGES = {
    "fastapi.md": ["fastapi_app.py", "starlette_app.py"],
    "flask.md": ["flask_app.py"],
    "django.md": ["django_app.py"],
    "asgi-wsgi.md": ["asgi_app.py", "wsgi_app.py"],
    "security.md": ["auth_fastapi.py", "auth_flask.py"],
    "phone-calls.md": ["phone_calls.py"],  # run by tests/test_phone_calls.py
}
SECRET = "/navai/realtime/client-secret"
EXECUTE = "/navai/functions/execute"


@pytest.mark.parametrize(("page", "example"), [(p, e) for p, es in PAGES.items() for e in es])
def test_the_page_shows_the_example_verbatim(page: str, example: str):
    source = (EXAMPLES / example).read_text()
    assert f"```python\n{source}```" in (DOCS / page).read_text()


def test_every_example_belongs_to_a_page():
    shown = {e for es in PAGES.values() for e in es}
    assert {p.name for p in EXAMPLES.glob("*.py")} == shown


@pytest.mark.parametrize("page", [*PAGES, "frontend.md", "deployment.md", "calls.md"])
def test_relative_links_in_the_pages_resolve(page: str):
    for target in re.findall(r"\]\(([^)#:]+)\)", (DOCS / page).read_text()):
        assert (DOCS / target).exists(), f"{page} links to missing {target}"


# ----- running the examples ----------------------------------------------------------------


@pytest.fixture
def load(
    monkeypatch: pytest.MonkeyPatch, fake_upstream: FakeOpenAI, tmp_path: Path
) -> Callable[[str], ModuleType]:
    """Import an example with the environment a user would set (key, upstream)."""
    fake_upstream.reset()
    for name in NAVAI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SERVER_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_upstream.base_url)
    monkeypatch.setenv("NAVAI_FUNCTIONS_BASE_DIR", str(tmp_path))  # nothing to discover

    def load_example(file_name: str) -> ModuleType:
        name = f"docs_example_{file_name.removesuffix('.py')}"
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / file_name)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load_example


def wsgi_client(app: Any) -> httpx2.Client:
    return httpx2.Client(transport=httpx2.WSGITransport(app=app), base_url="http://localhost")


def check_mint(http: httpx2.Client, prefix: str, upstream: FakeOpenAI) -> None:
    minted = http.post(f"{prefix}{SECRET}", json={"language": "Spanish"})
    assert minted.status_code == 200, minted.text
    assert minted.json()["value"].startswith("ek_fake_")
    request = upstream.requests[-1]
    assert request.headers["authorization"] == f"Bearer {SERVER_KEY}"
    assert "Always reply in Spanish." in request.json()["session"]["instructions"]


def execute(http: httpx2.Client, prefix: str, name: str, payload: Any = None) -> httpx2.Response:
    return http.post(f"{prefix}{EXECUTE}", json={"function_name": name, "payload": payload or {}})


def test_fastapi_example(load, fake_upstream: FakeOpenAI):
    module = load("fastapi_app.py")
    with TestClient(module.app) as http:
        assert http.get("/").json() == {"app": "my shop"}
        assert http.post(f"/voice{SECRET}", json={}).status_code in (401, 403)  # no token
        assert module.navai._registry is not None  # the router's lifespan ran
        http.headers["Authorization"] = "Bearer demo-token"
        check_mint(http, "/voice", fake_upstream)
        shipped = execute(http, "/voice", "get_order_status", {"order_id": "a-1001"})
        assert shipped.json()["result"] == {
            "order_id": "A-1001",
            "status": "shipped",
            "customer": "ana",
        }
        missing = execute(http, "/voice", "get_order_status", {"order_id": "x-1"})
        assert missing.json()["details"] == "There is no order x-1."
        paths = http.get("/openapi.json").json()["paths"]
        assert paths[f"/voice{EXECUTE}"]["post"]["operationId"] == "executeFunction"


def test_starlette_example(load, fake_upstream: FakeOpenAI):
    module = load("starlette_app.py")
    with TestClient(module.app) as http:
        assert http.get("/").json() == {"app": "my site"}
        check_mint(http, "", fake_upstream)
        me = execute(http, "", "whoami")
        assert me.json()["result"]["client"] == "testclient"


def test_flask_example(load, fake_upstream: FakeOpenAI):
    module = load("flask_app.py")
    with wsgi_client(module.app) as http:
        assert http.get("/").json() == {"app": "my flask site"}
        refused = http.post(f"/voice{SECRET}", json={})  # before_request, then errorhandler
        assert (refused.status_code, refused.json()) == (401, {"error": "Sign in first."})
        preflight = http.options(f"/voice{SECRET}", headers={"origin": "http://localhost:5173"})
        assert preflight.status_code == 204  # answered by navai, no cookie needed
        assert http.post("/login").status_code == 200
        check_mint(http, "/voice", fake_upstream)
        converted = execute(http, "/voice", "convert_currency", {"amount": 2.5})
        assert converted.json()["result"] == {"pesos": 10000.0, "for": "ana"}


def without_lifespan(app: Any) -> Any:
    """Django's ASGI app refuses lifespan events (servers carry on); the test client does not."""

    async def wrapper(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return None

    return wrapper


def test_django_example_through_both_entry_points(load, fake_upstream: FakeOpenAI):
    module = load("django_app.py")
    with wsgi_client(module.application) as http:
        assert http.get("/").json() == {"app": "my django site"}
        check_mint(http, "/voice", fake_upstream)  # no CSRF token needed: JSON only
        assert execute(http, "/voice", "server_time").json()["result"][:2] == "20"
        # Django's session middleware runs for navai's routes.
        assert [execute(http, "/voice", "visits").json()["result"] for _ in "ab"] == [1, 2]
    with TestClient(without_lifespan(module.asgi_application), base_url="http://localhost") as http:
        assert http.get("/").json() == {"app": "my django site"}
        check_mint(http, "/voice", fake_upstream)
        assert execute(http, "/voice", "server_time").json()["ok"] is True
        assert [execute(http, "/voice", "visits").json()["result"] for _ in "ab"] == [1, 2]
        http.portal.call(module.navai.aclose)  # Django has no lifespan to do it
    check_django_test_clients(module)


def check_django_test_clients(module: ModuleType) -> None:
    """Django's own test clients (sync: WSGI handler, async: ASGI handler) through include(),
    with CSRF checks enforced as in a browser."""
    import anyio
    from django.test import AsyncClient, Client
    from django.urls import reverse

    url = reverse("navai:execute")
    assert url == "/voice/navai/functions/execute"
    call = {"function_name": "visits"}
    client = Client(enforce_csrf_checks=True)
    answers = [client.post(url, call, content_type="application/json") for _ in "ab"]
    assert [a.json()["result"] for a in answers] == [1, 2]
    assert answers[0]["Content-Type"] == "application/json"
    # The core answers methods the route does not take, and preflights (no body, no type).
    wrong = client.get(url)
    assert (wrong.status_code, wrong["Allow"]) == (405, "OPTIONS, POST")
    preflight = client.options(url, headers={"Origin": "http://localhost:5173"})
    assert preflight.status_code == 204
    assert "Content-Type" not in preflight
    assert preflight["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert client.post(url, "x", content_type="text/plain").status_code == 415

    async def through_asgi() -> list[object]:
        aclient = AsyncClient(enforce_csrf_checks=True)
        done = [await aclient.post(url, call, content_type="application/json") for _ in "ab"]
        return [a.json()["result"] for a in done]

    assert anyio.run(through_asgi) == [1, 2]


def test_asgi_example(load, fake_upstream: FakeOpenAI):
    module = load("asgi_app.py")
    with TestClient(module.app) as http:
        assert http.get("/health").json() == {"ok": True}
        check_mint(http, "", fake_upstream)
        assert execute(http, "", "add", {"a": 1.5, "b": 2}).json()["result"] == 3.5


def test_wsgi_example(load, fake_upstream: FakeOpenAI):
    module = load("wsgi_app.py")
    with wsgi_client(module.app) as http:
        assert http.get("/health").json() == {"ok": True}
        check_mint(http, "", fake_upstream)
        assert execute(http, "", "add", {"args": [1, 2]}).json()["result"] == 3


# ----- the deployment page's factory commands ---------------------------------------------------

# How each documented command is made local and cheap for the test: (old, new) replacements.
LOCAL = {
    "uvicorn --factory": [
        ("0.0.0.0", "127.0.0.1"),
        ("--port 8000", "--port 0"),
        ("--workers 4", "--workers 2"),
    ],
    "waitress-serve": [("--listen 0.0.0.0:8000", "--listen 127.0.0.1:0")],
}


def documented_command(prefix: str) -> list[str]:
    """The deployment page's command line starting with ``prefix``, made local."""
    [line] = [
        line
        for line in (DOCS / "deployment.md").read_text().splitlines()
        if line.startswith(prefix)
    ]
    for old, new in LOCAL[prefix]:
        assert old in line, f"{old!r} not in {line!r}"
        line = line.replace(old, new)
    return shlex.split(line)


@pytest.fixture(scope="module")
def factory_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[subprocess.Popen[bytes], Path]]]:
    """Both documented factory commands, started together."""
    root = tmp_path_factory.mktemp("factories")
    servers = {}
    for number, prefix in enumerate(LOCAL):
        program, *args = documented_command(prefix)
        log = root / f"{number}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(Path(sys.executable).with_name(program)), *args],
                cwd=root,
                env=hermetic_env({}),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        servers[prefix] = (process, log)
    yield servers
    for process, _ in servers.values():
        stop_process(process)


@pytest.mark.slow  # starts real processes
@pytest.mark.parametrize("prefix", LOCAL)
def test_the_documented_factory_commands_serve_navai(factory_servers, prefix: str):
    process, log = factory_servers[prefix]
    deadline = time.monotonic() + 30
    url = None
    while url is None and time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        found = re.search(r"on (http://127\.0\.0\.1:\d+)", log.read_text())
        url = found.group(1) if found else None
        time.sleep(0.05)
    assert url, log.read_text()
    while True:  # with --workers the URL is printed before a worker listens
        try:
            answer = httpx2.post(f"{url}{SECRET}", json={}, timeout=10)
            break
        except httpx2.ConnectError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    assert answer.status_code == 401  # configured from the (empty) environment
    assert httpx2.get(f"{url}/navai/functions", timeout=10).json()["items"] == []


DJANGO_CALL = """
import json, sys, time
import httpx2
sys.path.insert(0, {repo!r})
from docs.examples import django_app

http = httpx2.Client(transport=httpx2.WSGITransport(app=django_app.application),
                    base_url="http://localhost")
answer = http.post("/voice/navai/realtime/calls", content={offer!r},
                   headers={{"Content-Type": "application/sdp"}})
time.sleep(0.5)  # the per-request loop of Django's async view is long gone
live = [call.call_id for call in django_app.navai.calls.live()]
print(json.dumps({{"status": answer.status_code, "location": answer.headers.get("location"),
                  "live": live}}), flush=True)
sys.stdin.readline()  # the test looks at the call while it is held
django_app.navai.close()
"""


@pytest.mark.slow  # starts real processes
def test_django_under_wsgi_keeps_a_call_after_the_request(tmp_path: Path):
    """Under WSGI Django runs navai's async view in a short-lived ``asyncio.run`` loop; the
    call the calls route starts there must outlive it (held on navai's own loop)."""
    from fakes import FakeOpenAI

    offer = "v=0\r\no=- 77 2 IN IP4 127.0.0.1\r\ns=browser offer\r\n"
    with FakeOpenAI(key=SERVER_KEY) as fake:
        env = hermetic_env(
            {
                "OPENAI_API_KEY": SERVER_KEY,
                "OPENAI_BASE_URL": fake.base_url,
                "NAVAI_FUNCTIONS_BASE_DIR": str(tmp_path),
            }
        )
        script = DJANGO_CALL.format(repo=str(REPO), offer=offer)
        with subprocess.Popen(
            [sys.executable, "-c", script],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as process:
            assert process.stdin and process.stdout
            try:
                seen = json.loads(process.stdout.readline())
                assert seen["status"] == 201, seen
                call_id = seen["location"].rsplit("/", 1)[1]
                assert seen["live"] == [call_id]
                call = fake.call(call_id)
                call.wait_for(lambda c: c.connections == 1)
                assert call.hangups == 0 and not call.ended
                process.stdin.write("\n")
                process.stdin.flush()
                assert process.wait(timeout=30) == 0
                assert call.hangups == 1  # navai.close() hangs up what it holds
            finally:
                if process.poll() is None:
                    process.kill()
