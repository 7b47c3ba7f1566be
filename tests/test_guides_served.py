"""Every framework guide's run command, as its example's docstring shows it, started as a real
server on a loopback port the way a reader runs it: the example saved as app.py in a folder of
their own (not the repository), the command run there. navai answers through the framework
integration (FastAPI's router, Flask's extension, Django's include() under WSGI and ASGI), and
its log lines show up without any logging set-up.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from conftest import REPO, SERVER_KEY, hermetic_env, stop_process
from fakes import FakeOpenAI

EXAMPLES = REPO / "docs" / "examples"
SERVERS = ("uvicorn ", "waitress-serve ")
SECRET = "/voice/navai/realtime/client-secret"
EXECUTE = "/voice/navai/functions/execute"


def run_commands(example: str) -> list[str]:
    """The server commands in an example's docstring."""
    doc = ast.get_docstring(ast.parse((EXAMPLES / example).read_text())) or ""
    return [line.strip() for line in doc.splitlines() if line.strip().startswith(SERVERS)]


def local(command: str) -> list[str]:
    """The command on a free loopback port."""
    command = re.sub(r"--port \d+", "--host 127.0.0.1 --port 0", command)
    command = re.sub(r"--listen 127\.0\.0\.1:\d+", "--listen 127.0.0.1:0", command)
    program, *args = shlex.split(command)
    return [str(Path(sys.executable).with_name(program)), *args]


COMMANDS = [
    (example, command)
    for example in ("fastapi_app.py", "flask_app.py", "django_app.py")
    for command in run_commands(example)
]


def test_each_guide_names_its_servers():
    assert [(e, c.split()[0]) for e, c in COMMANDS] == [
        ("fastapi_app.py", "uvicorn"),
        ("flask_app.py", "waitress-serve"),
        ("django_app.py", "waitress-serve"),
        ("django_app.py", "uvicorn"),
    ]


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, fake_upstream: FakeOpenAI
) -> Iterator[dict[str, tuple[subprocess.Popen[bytes], Path]]]:
    """All the commands, started together (they boot in parallel)."""
    root = tmp_path_factory.mktemp("guides")
    env = hermetic_env(
        {
            "OPENAI_API_KEY": SERVER_KEY,
            "OPENAI_BASE_URL": fake_upstream.base_url,
            "NAVAI_FUNCTIONS_BASE_DIR": str(root),  # nothing to discover
        }
    )
    started = {}
    for number, (example, command) in enumerate(COMMANDS):
        folder = root / f"user{number}"  # the reader's own folder
        folder.mkdir()
        (folder / "app.py").write_text((EXAMPLES / example).read_text())
        log = root / f"{number}.log"
        with log.open("wb") as out:
            started[command] = (
                subprocess.Popen(
                    local(command),
                    cwd=folder,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
    yield started
    for process, _ in started.values():
        stop_process(process)


def url_of(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        found = re.search(r"(?:running|Serving) on (http://127\.0\.0\.1:\d+)", log.read_text())
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no URL in time\n{log.read_text()}")


def execute(http: httpx2.Client, name: str, payload: dict[str, object]) -> httpx2.Response:
    return http.post(EXECUTE, json={"function_name": name, "payload": payload})


@pytest.mark.slow  # starts real processes
@pytest.mark.parametrize(("example", "command"), COMMANDS)
def test_the_guide_command_serves_navai(servers, fake_upstream, example: str, command: str):
    process, log = servers[command]
    with httpx2.Client(base_url=url_of(process, log), timeout=10) as http:
        if example == "fastapi_app.py":
            assert http.post(SECRET, json={}).status_code in (401, 403)  # the dependency
            http.headers["Authorization"] = "Bearer demo-token"
            answer = execute(http, "get_order_status", {"order_id": "a-1"})
            assert answer.json()["result"]["customer"] == "ana"
            assert "/voice/navai/functions" in http.get("/openapi.json").json()["paths"]
        elif example == "flask_app.py":
            assert http.post(SECRET, json={}).status_code == 401  # before_request
            assert http.post("/login").status_code == 200  # the session cookie
            answer = execute(http, "convert_currency", {"amount": 1})
            assert answer.json()["result"] == {"pesos": 4000.0, "for": "ana"}
        else:
            visits = [execute(http, "visits", {}).json()["result"] for _ in "ab"]
            assert visits == [1, 2]  # Django's session middleware ran
        minted = http.post(SECRET, json={"language": "Spanish"})
        assert minted.status_code == 200, minted.text
        assert minted.json()["value"].startswith("ek_fake_")


def test_each_run_line_runs_the_file_as_saved():
    for example, command in COMMANDS:
        assert " app:" in command, (example, command)
        assert "docs." not in command, (example, command)


def factory_commands() -> list[tuple[dict[str, str], list[str]]]:
    """asgi-wsgi.md's factory commands with the health and OpenAPI paths, made local."""
    text = (REPO / "docs" / "asgi-wsgi.md").read_text()
    [asgi] = [line for line in text.splitlines() if line.startswith("NAVAI_HEALTH_PATH=")]
    assignments, asgi_command = asgi.split(" uvicorn ", 1)
    env = dict(a.split("=", 1) for a in assignments.split())
    [wsgi] = [line for line in text.splitlines() if line.startswith("waitress-serve --listen")]
    assert "--call navai_adapters.wsgi:create_app" in wsgi
    return [
        (env, local(f"uvicorn {asgi_command}")),
        (env, local(wsgi)),
    ]


@pytest.mark.slow  # starts real processes
@pytest.mark.parametrize("index", [0, 1], ids=["uvicorn --factory", "waitress-serve --call"])
def test_the_factory_forms_serve_health_and_openapi_from_the_environment(tmp_path, index):
    env, command = factory_commands()[index]
    assert env == {"NAVAI_HEALTH_PATH": "/health", "NAVAI_OPENAPI_PATH": "/openapi.json"}
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=hermetic_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx2.Client(base_url=url_of(process, log), timeout=10) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    health = http.get("/health")
                    break
                except httpx2.ConnectError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.05)
            assert health.json() == {"ok": True}
            paths = http.get("/openapi.json").json()["paths"]
            assert {"/health", "/openapi.json", "/navai/functions/execute"} <= set(paths)
    finally:
        process.terminate()
        process.wait(timeout=15)
