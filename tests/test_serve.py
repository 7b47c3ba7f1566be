"""``navai serve``: start-up output, configuration sources, argument errors and clean stops.

The request/response behaviour of the servers is checked by the contract suite
(test_contract.py, the ``*-server`` parameters); this file checks the command itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from conftest import (
    BROKEN_WARNING,
    NAVAI_BIN,
    REPO,
    NavaiProcess,
    Targets,
    hermetic_env,
    records,
    start_server,
)

from navai_adapters import cli

KINDS = ("asgi-server", "wsgi-server")
EXAMPLE_FUNCTIONS = {
    "get_weather",
    "list_cities",
    "support_desk_open_ticket",
    "support_desk_ticket_status",
}


def server(targets: Targets, setup: str, kind: str) -> NavaiProcess:
    process = targets.get(setup, kind).process
    assert process is not None
    return process


# ----- the fresh clone ---------------------------------------------------------------------


def readme_serve_command() -> list[str]:
    """The ``navai serve`` part of the first command of README's "Run the server"."""
    readme = (REPO / "README.md").read_text().split("## Run the server", 1)[1]
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block, "README has no bash block"
    first_command = block.group(1).strip().splitlines()[0]
    return shlex.split(first_command.split("&&")[-1])


def test_readme_first_command_is_what_the_fresh_server_runs(targets: Targets):
    words = readme_serve_command()
    assignments = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    command = [w for w in words if "=" not in w]
    assert command == [".venv/bin/navai", "serve"]
    assert assignments == targets.setups["fresh"].env
    assert (REPO / assignments["NAVAI_FUNCTIONS_FOLDERS"]).is_dir()


@pytest.mark.parametrize("kind", KINDS)
def test_a_fresh_clone_serves_the_example_functions(targets: Targets, kind: str):
    process = server(targets, "fresh", kind)
    out = banner(process)
    assert re.search(r"serving on http://127\.0\.0\.1:\d+", out)  # PORT=0 picked a port
    names = set(re.findall(r"^  (\w+)  \(examples/functions/", out, re.M))
    assert names == EXAMPLE_FUNCTIONS
    listed = httpx2.get(f"{process.url}/navai/functions").json()
    assert {item["name"] for item in listed["items"]} == EXAMPLE_FUNCTIONS
    assert listed["warnings"] == []
    weather = httpx2.post(
        f"{process.url}/navai/functions/execute",
        json={"function_name": "get_weather", "payload": {"city": "Bogota"}},
    )
    assert weather.json()["result"]["city"] == "Bogotá"
    assert "OPENAI_API_KEY is not set" in process.stderr()


# ----- start-up output -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_banner_shows_the_url_routes_and_functions(targets: Targets, kind: str):
    process = server(targets, "main", kind)
    out = banner(process)
    url = process.url
    assert out.startswith(f"navai: serving on {url} (")
    assert f"POST  {url}/navai/realtime/client-secret" in out
    assert f"GET   {url}/navai/functions" in out
    assert f"GET   {url}/health" in out
    assert "  add  (functions/tools.py#add)" in out
    env_file = ".env" if kind == "asgi-server" else "main-wsgi.env"
    assert re.search(rf"loaded environment from \S*{re.escape(env_file)}\n", out)
    assert ("WSGI on waitress" in out) == (kind == "wsgi-server")


@pytest.mark.parametrize("kind", KINDS)
def test_every_start_up_warning_is_logged_once(targets: Targets, kind: str):
    main = server(targets, "main", kind).stderr()
    assert main.count(BROKEN_WARNING) == 1
    misconfigured = server(targets, "misconfigured", kind).stderr()
    ttl = "OPENAI_REALTIME_CLIENT_SECRET_TTL must be between 10 and 7200. Received: 5"
    assert misconfigured.count(ttl) == 1
    assert misconfigured.count(BROKEN_WARNING) == 1


def banner(process: NavaiProcess) -> str:
    """What ``navai serve`` printed at start-up (uvicorn's access log follows it)."""
    out = process.stdout()
    return out[: out.index("navai: press Ctrl-C to stop.")]


def test_functions_off_is_said_at_start_up(targets: Targets):
    out = banner(server(targets, "alt", "asgi-server"))
    assert "the function routes are off" in out
    assert "/navai/functions" not in out


# ----- configuration sources ---------------------------------------------------------------------


def test_env_file_values_fill_unset_and_blank_variables_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / ".env").write_text(
        "NAVAI_T_SET=from-file\nNAVAI_T_BLANK=from-file\nNAVAI_T_NEW=x\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NAVAI_T_SET", "from-env")
    monkeypatch.setenv("NAVAI_T_BLANK", "  ")
    monkeypatch.delenv("NAVAI_T_NEW", raising=False)
    assert cli._load_env_file(cli._parser(), None) == Path(".env")
    assert os.environ["NAVAI_T_SET"] == "from-env"
    assert os.environ["NAVAI_T_BLANK"] == "from-file"
    assert os.environ["NAVAI_T_NEW"] == "x"


def test_no_env_file_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert cli._load_env_file(cli._parser(), None) is None


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["serve", "--env-file", "missing.env"], {}, "--env-file missing.env: no such file"),
        (["serve", "--port", "70000"], {}, "port must be between 0 and 65535, got 70000"),
        (["serve", "--port", "x"], {}, "invalid int value: 'x'"),
        ([], {}, "required: command"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    tmp_path, monkeypatch, capsys, argv: list[str], env: dict[str, str], message: str
):
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_port_comes_from_port_else_3000(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PORT", raising=False)
    assert cli._port(cli._parser(), None) == 3000
    monkeypatch.setenv("PORT", " ")
    assert cli._port(cli._parser(), None) == 3000
    monkeypatch.setenv("PORT", "8123")
    assert cli._port(cli._parser(), None) == 8123
    assert cli._port(cli._parser(), 9000) == 9000


def test_a_busy_port_is_a_clear_error(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [str(NAVAI_BIN), "serve", "--port", str(port)],
            cwd=tmp_path,
            env=hermetic_env({}),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert f"navai: cannot listen on 127.0.0.1:{port}" in done.stderr


def test_python_dash_m_runs_the_same_command(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "navai_adapters", "serve", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0
    assert "--wsgi" in done.stdout
    assert "--env-file" in done.stdout


# ----- stopping ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stoppable(targets: Targets, tmp_path_factory) -> Iterator[dict[tuple[str, int], NavaiProcess]]:
    """Four servers to stop: (ASGI, WSGI) x (SIGTERM, SIGINT), started together."""
    root = tmp_path_factory.mktemp("stop")
    setup = targets.setups["main"]
    servers = {}
    for kind in KINDS:
        for sig in (signal.SIGTERM, signal.SIGINT):
            sub = root / f"{kind}-{sig.name}"
            sub.mkdir()
            servers[(kind, sig)] = start_server(setup, kind == "wsgi-server", sub)
    yield servers
    for process in servers.values():
        process.stop(signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_signal_stops_the_server_cleanly_after_the_running_request(
    stoppable: dict[tuple[str, int], NavaiProcess], functions_dir: Path, kind: str, sig: int
):
    process = stoppable[(kind, sig)]
    url = process.wait_ready()
    answers: list[httpx2.Response] = []

    note = f"stop-{kind}-{sig}"

    def slow_request() -> None:
        answers.append(
            httpx2.post(
                f"{url}/navai/functions/execute",
                json={"function_name": "slow", "payload": {"seconds": 0.6, "note": note}},
                timeout=10,
            )
        )

    worker = threading.Thread(target=slow_request)
    worker.start()
    deadline = time.monotonic() + 10
    while note not in records(functions_dir):  # the function is running
        assert time.monotonic() < deadline and worker.is_alive(), process.describe()
        time.sleep(0.01)
    process.send_signal(sig)
    worker.join(timeout=15)
    assert process.process.wait(timeout=15) == 0
    assert [a.status_code for a in answers] == [200], process.describe()
    assert answers[0].json()["result"] == "slept"
    assert process.stdout().rstrip().endswith("navai: stopped.")
    assert "Traceback" not in process.stderr()
    if kind == "asgi-server":
        assert "Application shutdown complete." in process.stderr()  # the lifespan ran
    with pytest.raises(httpx2.TransportError):
        httpx2.get(f"{url}/health", timeout=2)


# ----- bodies on the wire ----------------------------------------------------------------------


def _chunked(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_bodies_are_read_and_limited(targets: Targets, fake_upstream, kind: str):
    http = targets.get("main", kind).http
    fake_upstream.reset()
    headers = {"Content-Type": "application/json"}
    secret = "/navai/realtime/client-secret"
    ok = http.post(secret, content=_chunked(b'{"model": "gpt-chunked"}', 5), headers=headers)
    assert ok.status_code == 200, ok.text
    assert fake_upstream.requests[-1].json()["session"]["model"] == "gpt-chunked"
    fake_upstream.reset()
    too_big = b"{}" + b" " * (2 * 1024 * 1024)
    refused = http.post(secret, content=_chunked(too_big), headers=headers)
    assert refused.status_code == 413
    assert fake_upstream.requests == []


def _serve_in(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (which starts ``navai serve`` with a package hidden); it must exit 1."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=hermetic_env({}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    return done


@pytest.mark.parametrize(("blocked", "args"), [("waitress", ["--wsgi"]), ("uvicorn", [])])
def test_a_missing_server_package_is_a_clear_error(tmp_path: Path, blocked: str, args: list[str]):
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from navai_adapters.cli import main\n"
        f"sys.exit(main(['serve', '--port', '0', *{args!r}]))\n"
    )
    done = _serve_in(tmp_path, code)
    assert f"navai: serve needs the {blocked} package; install navai" in done.stderr
    assert "pip install './navai[serve]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert "serving on" not in done.stdout  # checked before the banner


def test_a_missing_httptools_is_said_before_serving(tmp_path: Path):
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'httptools' else real(n, *a)\n"
        "from navai_adapters.cli import main\n"
        "sys.exit(main(['serve', '--port', '0']))\n"
    )
    done = _serve_in(tmp_path, code)
    assert "navai: serve needs the httptools package; install navai" in done.stderr
    assert "serving on" not in done.stdout


def test_reload_restarts_the_server_when_a_function_file_changes(tmp_path: Path):
    """--reload: a changed function module is served without a manual restart, on the same
    port; Ctrl-C (SIGINT) stops the watcher and the server."""
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "tools.py").write_text('def greet() -> str:\n    return "one"\n')
    env = hermetic_env({"NAVAI_FUNCTIONS_FOLDERS": "functions"})
    out = tmp_path / "out"
    with out.open("wb") as stdout:
        proc = subprocess.Popen(
            [str(NAVAI_BIN), "serve", "--port", "0", "--reload"],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
        try:
            url = _wait_url(out, proc)
            execute = f"{url}/navai/functions/execute"
            body = {"function_name": "greet", "payload": {}}
            assert _retry(lambda: httpx2.post(execute, json=body).json()["result"]) == "one"
            time.sleep(0.5)  # an mtime that differs from the first one
            (functions / "tools.py").write_text('def greet() -> str:\n    return "two"\n')
            deadline = time.monotonic() + 20
            result = None
            while time.monotonic() < deadline and result != "two":
                time.sleep(0.2)
                with contextlib.suppress(httpx2.HTTPError, KeyError, ValueError):
                    result = httpx2.post(execute, json=body, timeout=2).json()["result"]
            assert result == "two", out.read_text()
            assert "changed, restarting" in out.read_text()
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(20) == 0, out.read_text()
    with pytest.raises(httpx2.TransportError):
        httpx2.get(f"{url}/health", timeout=2)


def _wait_url(out: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"serving on (http://127\.0\.0\.1:\d+)", out.read_text())
        if found:
            return found.group(1)
        assert proc.poll() is None, out.read_text()
        time.sleep(0.05)
    raise AssertionError(out.read_text())


def _retry(call, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (httpx2.HTTPError, KeyError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("wsgi", [False, True], ids=["asgi", "wsgi"])
def test_workers_share_the_port_and_stop_together(tmp_path: Path, wsgi: bool):
    """--workers 2: two processes answer on one port; SIGTERM stops both (exit code 0)."""
    out = tmp_path / "out"
    args = [str(NAVAI_BIN), "serve", "--port", "0", "--workers", "2", *(["--wsgi"] * wsgi)]
    with out.open("wb") as stdout:
        proc = subprocess.Popen(
            args, cwd=tmp_path, env=hermetic_env({}), stdout=stdout, stderr=subprocess.STDOUT
        )
        try:
            url = _wait_url(out, proc)
            assert "2 workers" in out.read_text()
            codes = {_retry(lambda: httpx2.get(f"{url}/health").status_code) for _ in range(10)}
            assert codes == {200}
            workers = [
                int(p)
                for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            ]
            assert len(workers) == 2
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, out.read_text()
    assert out.read_text().rstrip().endswith("navai: stopped.")
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


@pytest.mark.parametrize(
    ("host", "url"),
    [("127.0.0.1", "http://127.0.0.1:3000"), ("::1", "http://[::1]:3000")],
)
def test_the_printed_url(host: str, url: str):
    assert cli._url(host, 3000) == url


def test_serving_functions_beyond_loopback_without_a_hook_is_said_loudly(caplog):
    # Binding a public address is not done in tests: the check the command runs after its
    # banner is called with the address it would listen on.
    from navai_core import Navai, NavaiConfig

    navai = Navai(NavaiConfig(functions_enabled=True))
    with caplog.at_level("WARNING", logger="navai"):
        cli._warn_exposure(navai, "127.0.0.1")
        assert caplog.records == []
        cli._warn_exposure(navai, "0.0.0.0")
    [record] = caplog.records
    assert "anyone who can reach 0.0.0.0 can list and run" in record.getMessage()
