"""Shared fixtures: a fake OpenAI upstream, a folder of backend functions, and navai served
four ways — in-process ASGI (Starlette's TestClient), in-process WSGI (httpx2's WSGITransport
over ``wsgiref.validate``), and real ``navai serve`` / ``navai serve --wsgi`` subprocesses on
loopback ports. Contract tests take a ``client`` (or ``alt_client``, ...) fixture and run once
per way.

Every server binds 127.0.0.1, every wait is bounded, every subprocess is stopped by a
finaliser. Servers start once per session, all at once, so they boot in parallel.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import wsgiref.validate
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import pytest
from fakes import (
    FakeOpenAI,
    OpenAIState,
    upstream_mock,  # noqa: F401  (the fixture, for every test file)
)
from starlette.testclient import TestClient

from navai_adapters import asgi, wsgi
from navai_core import FunctionRegistry, Navai, NavaiConfig

REPO = Path(__file__).resolve().parents[1]
# OpenAI's schema, kept in the repository (tests/data/README.md says where it comes from).
SCHEMA_PATH = REPO / "tests" / "data" / "client_secrets_schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
NAVAI_BIN = Path(sys.executable).with_name("navai")

SERVER_KEY = "sk-server-key-0123456789"
REQUEST_KEY = "sk-request-key-9876543210"
KINDS = ("asgi", "wsgi", "asgi-server", "wsgi-server")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def validate_upstream_request(body: Any) -> None:
    jsonschema.validate(body, SCHEMA)


def validate_upstream_reply(body: Any) -> None:
    jsonschema.validate(
        body, {"$ref": "#/$defs/RealtimeCreateClientSecretResponse", "$defs": SCHEMA["$defs"]}
    )


# ----- backend functions used by the contract tests ---------------------------------------

TOOLS_PY = '''
"""Functions the contract tests call."""

import asyncio
import threading
import time
import warnings
from datetime import datetime, timezone
from os import getcwd  # imported, so never exposed
from pathlib import Path

from navai_core import FunctionError

RECORDS = Path(__file__).resolve().parent.parent / "records.log"


def add(a: int, b: int) -> int:
    """Add two integers.

    The second paragraph is not part of the description.
    """
    return a + b


def echo(data):
    """Return what it was given."""
    return data


def no_args() -> str:
    return "nothing"


async def async_add(a: int, b: int) -> int:
    """Add two integers, asynchronously."""
    await asyncio.sleep(0)
    return a + b


async def loop_identity() -> dict:
    return {
        "loop": id(asyncio.get_running_loop()),
        "thread": threading.current_thread().name,
        "threads": threading.active_count(),
    }


def thread_count() -> int:
    return threading.active_count()


def slow(seconds: float, note: str = "") -> str:
    if note:
        record(note)
    time.sleep(seconds)
    return "slept"


def whoami(context) -> dict:
    return {
        "method": context.method,
        "path": context.path,
        "client": context.client,
        "agent": context.header("user-agent"),
        "query": context.query_string,
    }


def explode() -> None:
    raise RuntimeError("secret internals 42")


def city(name: str) -> str:
    if name == "Atlantis":
        raise FunctionError("City not found")
    return name


def record(note: str) -> str:
    with RECORDS.open("a") as handle:
        handle.write(note + "\\n")
    return "recorded"


def when() -> dict:
    return {"at": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "pair": (1, 2)}


def unconvertible() -> object:
    return object()


class Greeter:
    def __init__(self, greeting: str = "Hello") -> None:
        self.greeting = greeting

    def greet(self, name: str) -> str:
        return f"{self.greeting}, {name}!"


text_tools = {"upper": lambda text: text.upper()}


def _shout(text: str) -> str:
    """Say it loudly."""
    return text.upper() + "!"


# The dict is the export: its private values are tools, an imported function is not.
loud = {"shout": _shout, "cwd": getcwd}


def _private() -> str:
    return "never"
'''

BROKEN_PY = 'raise RuntimeError("this module is broken on purpose")\n'

TOOL_NAMES = {
    "add",
    "echo",
    "no_args",
    "async_add",
    "loop_identity",
    "thread_count",
    "slow",
    "whoami",
    "explode",
    "city",
    "record",
    "when",
    "unconvertible",
    "greeter_greet",
    "text_tools_upper",
    "loud_shout",
}
BROKEN_WARNING = "Failed to load functions/broken.py"


@pytest.fixture(scope="session")
def functions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base dir holding ``functions/tools.py`` (and a module that fails to import)."""
    base = tmp_path_factory.mktemp("navai-base")
    (base / "functions").mkdir()
    (base / "functions" / "tools.py").write_text(TOOLS_PY)
    (base / "functions" / "broken.py").write_text(BROKEN_PY)
    (base / "records.log").write_text("")
    return base


def records(base: Path) -> list[str]:
    return (base / "records.log").read_text().splitlines()


# ----- the fake upstream ------------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ----- a Navai in process ----------------------------------------------------------------------


def navai_for(
    fake: OpenAIState | None = None,
    /,
    *,
    functions: FunctionRegistry | None = None,
    **config: Any,
) -> Navai:
    """The one way tests build a ``Navai`` in process: ``NavaiConfig(**config)``, pointed at
    ``fake`` when given (its base URL, and its key or the server key, unless ``config`` names
    them), with ``functions`` as its registry."""
    if fake is not None:
        config.setdefault("openai_base_url", getattr(fake, "base_url", None))
        config.setdefault("openai_api_key", fake.key or SERVER_KEY)
    return Navai(NavaiConfig(**config), functions=functions)


@pytest.fixture
def make_navai() -> Iterator[Callable[..., Navai]]:
    """:func:`navai_for`, and every ``Navai`` it built closed when the test ends."""
    built: list[Navai] = []

    def make(*args: Any, **kwargs: Any) -> Navai:
        navai = navai_for(*args, **kwargs)
        built.append(navai)
        return navai

    yield make
    for navai in built:
        navai.close()


# ----- configurations -----------------------------------------------------------------------

# Every variable navai reads, blank (= unset), so a developer's environment or .env file
# cannot leak into a test server.
NAVAI_VARIABLES = (
    "OPENAI_API_KEY",
    "OPENAI_REALTIME_MODEL",
    "OPENAI_REALTIME_VOICE",
    "OPENAI_REALTIME_INSTRUCTIONS",
    "OPENAI_REALTIME_LANGUAGE",
    "OPENAI_REALTIME_VOICE_ACCENT",
    "OPENAI_REALTIME_VOICE_TONE",
    "OPENAI_REALTIME_CLIENT_SECRET_TTL",
    "NAVAI_ALLOW_FRONTEND_API_KEY",
    "NAVAI_FUNCTIONS_FOLDERS",
    "NAVAI_FUNCTIONS_BASE_DIR",
    "NAVAI_FUNCTIONS_MODULES",
    "NAVAI_AGENTS_FOLDERS",
    "NAVAI_CORS_ORIGIN",
    "NAVAI_CORS_ALLOW_CREDENTIALS",
    "NAVAI_HEALTH_PATH",
    "NAVAI_OPENAPI_PATH",
    "NAVAI_FUNCTIONS_ENABLED",
    "NAVAI_EXPOSE_FUNCTION_ERRORS",
    "NAVAI_MAX_BODY_BYTES",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "NAVAI_UPSTREAM_TIMEOUT",
    "NAVAI_UPSTREAM_MAX_RETRIES",
    "NAVAI_TTS_PROVIDER",
    "ELEVENLABS_API_KEY",
    "ELEVENLABS_VOICE_ID",
    "PORT",
)


@dataclass(frozen=True)
class Setup:
    """One server configuration.

    ``env`` holds for every way of serving; ``dotenv`` goes in a .env file for the real
    servers (and into the environment in-process); ``in_process_env`` is what a real server
    gets from its working directory ``cwd`` instead; ``port_env`` picks the port with
    ``PORT=0`` rather than ``--port 0``.
    """

    name: str
    env: dict[str, str]
    dotenv: dict[str, str] = field(default_factory=dict)
    in_process_env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    port_env: bool = False


def setups(base: Path, upstream: FakeOpenAI) -> dict[str, Setup]:
    common = {
        "OPENAI_BASE_URL": upstream.base_url,
        "NAVAI_UPSTREAM_MAX_RETRIES": "0",
        "NAVAI_UPSTREAM_TIMEOUT": "5",
        "NAVAI_RATE_LIMIT_CLIENT_SECRET": "off",  # the tests mint far more than 10 a minute
        "NAVAI_RATE_LIMIT_FUNCTIONS": "off",  # and call far more than 120
        "NAVAI_FUNCTIONS_BASE_DIR": str(base),
        "NAVAI_FUNCTIONS_FOLDERS": "functions",
    }
    return {
        # The everyday server: a backend key (from a .env file), defaults, localhost CORS.
        "main": Setup(
            "main",
            {**common, "OPENAI_REALTIME_VOICE": "   "},  # blank counts as unset
            {"OPENAI_API_KEY": SERVER_KEY},
        ),
        # No backend key but request keys allowed, configured defaults, no function routes,
        # an explicit origin list, a tiny body limit.
        "alt": Setup(
            "alt",
            {
                **common,
                "NAVAI_ALLOW_FRONTEND_API_KEY": "true",
                "OPENAI_REALTIME_MODEL": "gpt-realtime-mini",
                "OPENAI_REALTIME_VOICE": "cedar",
                "OPENAI_REALTIME_INSTRUCTIONS": "  You are a travel agent.  ",
                "OPENAI_REALTIME_LANGUAGE": "Spanish",
                "OPENAI_REALTIME_VOICE_ACCENT": "Colombian",
                "OPENAI_REALTIME_VOICE_TONE": "warm",
                "OPENAI_REALTIME_CLIENT_SECRET_TTL": "120",
                "NAVAI_FUNCTIONS_ENABLED": "false",
                "NAVAI_CORS_ORIGIN": "https://app.example.com, https://admin.example.com/",
                "NAVAI_MAX_BODY_BYTES": "256",
            },
        ),
        # ElevenLabs speaks: the session is text-only; any origin may call.
        "speech": Setup(
            "speech",
            {
                **common,
                "NAVAI_TTS_PROVIDER": "elevenlabs",
                "ELEVENLABS_API_KEY": "xi-test-key",
                "ELEVENLABS_VOICE_ID": "voice 1/é",  # URL-encoded in the upstream path
                "ELEVENLABS_BASE_URL": f"http://127.0.0.1:{upstream.port}",
                "NAVAI_CORS_ORIGIN": "*",
            },
            {"OPENAI_API_KEY": SERVER_KEY},
        ),
        # A bad TTL: the server still boots, logs it once, answers 400 per mint.
        "misconfigured": Setup(
            "misconfigured",
            {**common, "OPENAI_REALTIME_CLIENT_SECRET_TTL": "5"},
            {"OPENAI_API_KEY": SERVER_KEY},
        ),
        # A fresh clone: README's first command, run from the repository root, no key.
        "fresh": Setup(
            "fresh",
            {"NAVAI_FUNCTIONS_FOLDERS": "examples/functions"},
            in_process_env={"NAVAI_FUNCTIONS_BASE_DIR": str(REPO)},
            cwd=REPO,
            port_env=True,
        ),
    }


def stop_process(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """Stop a server a test started: SIGTERM, then SIGKILL if it is still there."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def hermetic_env(extra: dict[str, str]) -> dict[str, str]:
    prefixes = ("NAVAI_", "OPENAI_", "ELEVENLABS_", "AZURE_OPENAI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(dict.fromkeys(NAVAI_VARIABLES, ""))
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


# ----- real servers -------------------------------------------------------------------------


class NavaiProcess:
    """``navai serve`` in a subprocess, its output in files."""

    def __init__(
        self, args: list[str], env: dict[str, str], cwd: Path, log_dir: Path, name: str
    ) -> None:
        self.name = name
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        self._out = self.stdout_path.open("wb")
        self._err = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            [str(NAVAI_BIN), "serve", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
        )
        self.url: str | None = None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return f"--- {self.name} stdout ---\n{self.stdout()}\n--- stderr ---\n{self.stderr()}"

    def wait_ready(self, timeout: float = START_TIMEOUT) -> str:
        """The server's URL, once it answers GET /health."""
        if self.url is not None:
            return self.url
        deadline = time.monotonic() + timeout
        url = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited early\n{self.describe()}")
            if url is None:
                found = re.search(r"serving on (http://127\.0\.0\.1:\d+)", self.stdout())
                url = found.group(1) if found else None
            if url is not None:
                try:
                    if httpx2.get(f"{url}/health", timeout=2).status_code == 200:
                        self.url = url
                        return url
                except httpx2.TransportError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not start in {timeout}s\n{self.describe()}")

    def send_signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop with ``sig`` and return the exit code (None if it had to be killed)."""
        return stop_all([self], sig, timeout)[0]


def stop_all(
    processes: list[NavaiProcess], sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT
) -> list[int | None]:
    """Stop several servers at once (each gets ``sig`` before any is waited for) and return
    their exit codes, in order (None for one that had to be killed)."""
    codes: list[int | None] = [p.process.poll() for p in processes]
    for process, code in zip(processes, codes, strict=True):
        if code is None:
            process.process.send_signal(sig)
    for i, process in enumerate(processes):
        if codes[i] is None:
            try:
                codes[i] = process.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.process.kill()
                process.process.wait(timeout=timeout)
        process._out.close()
        process._err.close()
    return codes


def start_server(
    setup: Setup, wsgi_server: bool, root: Path, extra_args: tuple[str, ...] = ()
) -> NavaiProcess:
    """Start ``navai serve`` for ``setup`` on a free port.

    The ASGI server reads its .env from its working directory; the WSGI server gets the same
    file with ``--env-file`` (two ways of loading one file).
    """
    kind = "wsgi" if wsgi_server else "asgi"
    workdir = setup.cwd or root / f"{setup.name}-{kind}"
    workdir.mkdir(exist_ok=True)
    env = hermetic_env({**setup.env, "PORT": "0"} if setup.port_env else setup.env)
    args = [*([] if setup.port_env else ["--port", "0"]), *extra_args]
    if setup.dotenv:
        lines = "".join(f"{k}={v}\n" for k, v in setup.dotenv.items())
        if wsgi_server:
            (root / f"{setup.name}-{kind}.env").write_text(lines)
            args += ["--env-file", str(root / f"{setup.name}-{kind}.env")]
        else:
            (workdir / ".env").write_text(lines)
    if wsgi_server:
        args.append("--wsgi")
    return NavaiProcess(args, env, workdir, root, f"{setup.name}-{kind}")


# ----- targets: one navai served one way ------------------------------------------------------


class LogCapture(logging.Handler):
    """Keeps every record of the ``navai`` logger of this process (in-process targets)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.buffer = io.StringIO()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.buffer.write(self.format(record) + "\n")

    def text(self) -> str:
        return self.buffer.getvalue()


@dataclass
class Target:
    """navai served one way: an httpx2 client to talk to it, and its server-side log."""

    kind: str  # one of KINDS
    http: httpx2.Client
    client_host: str
    log_text: Callable[[], str]
    process: NavaiProcess | None = None

    @property
    def adapter(self) -> str:
        return self.kind.split("-")[0]

    @property
    def real(self) -> bool:
        return self.process is not None

    def log_mark(self) -> int:
        return len(self.log_text())

    def logs_since(self, mark: int) -> str:
        return self.log_text()[mark:]


@contextlib.contextmanager
def in_process(
    navai: Navai | None, kind: str, base_url: str = "http://testserver", **app_options: Any
) -> Iterator[httpx2.Client]:
    """``navai`` (or the one ``create_app`` builds from ``app_options``) served in-process by
    one adapter, with an httpx2 client to talk to it: ``asgi``, Starlette's TestClient (the
    lifespan runs); ``wsgi``, httpx2's WSGITransport through wsgiref's validator (the app is
    closed at the end)."""
    if kind == "asgi":
        with TestClient(asgi.create_app(navai, **app_options), base_url=base_url) as http:
            yield http
        return
    app = wsgi.create_app(navai, **app_options)
    transport = httpx2.WSGITransport(app=wsgiref.validate.validator(app))
    try:
        with httpx2.Client(transport=transport, base_url=base_url) as http:
            yield http
    finally:
        app.close()


def in_process_navai(setup: Setup) -> Navai:
    env = {**dict.fromkeys(NAVAI_VARIABLES, ""), **setup.env, **setup.dotenv}
    env.update(setup.in_process_env)
    return Navai(NavaiConfig.from_env(env, health_path="/health"))


class Targets:
    """Builds targets on first use and closes them at the end of the session."""

    def __init__(self, base: Path, upstream: FakeOpenAI, root: Path) -> None:
        self.setups = setups(base, upstream)
        self.root = root
        self.capture = LogCapture()
        logging.getLogger("navai").addHandler(self.capture)
        self._targets: dict[tuple[str, str], Target] = {}
        self._processes: dict[tuple[str, str], NavaiProcess] = {}
        self._closers: list[Callable[[], object]] = []

    def _start_all_servers(self) -> None:
        if self._processes:
            return
        for setup in self.setups.values():
            for wsgi_server in (False, True):
                key = (setup.name, "wsgi-server" if wsgi_server else "asgi-server")
                self._processes[key] = start_server(setup, wsgi_server, self.root)

    def get(self, setup_name: str, kind: str) -> Target:
        key = (setup_name, kind)
        if key not in self._targets:
            self._targets[key] = self._build(self.setups[setup_name], kind)
        return self._targets[key]

    def _build(self, setup: Setup, kind: str) -> Target:
        if kind in ("asgi", "wsgi"):
            stack = contextlib.ExitStack()
            http = stack.enter_context(in_process(in_process_navai(setup), kind))
            self._closers.append(stack.close)
            client_host = "testclient" if kind == "asgi" else "127.0.0.1"
            return Target(kind, http, client_host, self.capture.text)
        self._start_all_servers()
        process = self._processes[(setup.name, kind)]
        http = httpx2.Client(base_url=process.wait_ready(), timeout=10)
        self._closers.append(http.close)
        return Target(kind, http, "127.0.0.1", process.stderr, process)

    def close(self) -> None:
        problems = []
        for closer in reversed(self._closers):
            closer()
        processes = list(self._processes.values())
        for process, code in zip(processes, stop_all(processes), strict=True):
            if code != 0:
                problems.append(f"{process.name} exit code {code}\n{process.describe()}")
        logging.getLogger("navai").removeHandler(self.capture)
        assert not problems, "\n".join(problems)


@pytest.fixture(scope="session")
def targets(
    functions_dir: Path, fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Targets]:
    found = Targets(functions_dir, fake_upstream, tmp_path_factory.mktemp("servers"))
    yield found
    found.close()


def _target_fixture(setup_name: str) -> Any:
    @pytest.fixture(params=KINDS)
    def fixture(request: pytest.FixtureRequest, targets: Targets, fake_upstream: FakeOpenAI):
        fake_upstream.reset()
        return targets.get(setup_name, request.param)

    return fixture


client = _target_fixture("main")
alt_client = _target_fixture("alt")
speech_client = _target_fixture("speech")
misconfigured_client = _target_fixture("misconfigured")
fresh_client = _target_fixture("fresh")


# ----- markers -------------------------------------------------------------------------------

# Modules whose tests start processes or run load, fuzz or benchmark loops; every
# test_serve* module runs navai serve.
SLOW_MODULES = frozenset(
    {
        "test_benchmarks_smoke",
        "test_fresh_clone",
        "test_fuzz",
        "test_load",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark as ``slow`` every test of a slow module and every test against a real server
    (a ``*-server`` parameter); other tests that start a process (Redis, a browser, a
    documented server command) carry ``@pytest.mark.slow`` themselves. ``pytest -m "not
    slow"`` runs the rest (docs/architecture.md gives its time)."""
    for item in items:
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        if module in SLOW_MODULES or module.startswith("test_serve") or "-server" in item.nodeid:
            item.add_marker(pytest.mark.slow)


# ----- a server-controlled call against a target (tests of the calls routes) ---------------------

# A browser's WebRTC offer as the calls route relays it (the fakes answer any offer).
BROWSER_OFFER = "v=0\r\no=- 77 2 IN IP4 127.0.0.1\r\ns=browser offer\r\n"


def wait_log(target: Target, mark: int, text: str, timeout: float = 10.0) -> str:
    """The target's log since ``mark``, once it holds ``text`` (AssertionError after
    ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        logs = target.logs_since(mark)
        if text in logs:
            return logs
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged:\n{logs}")
        time.sleep(0.02)


def start_call(target: Target, **kwargs: Any) -> tuple[str, Any]:
    """``POST /navai/realtime/calls`` with the browser's offer (raw SDP unless ``json=`` is
    given): the call id from ``Location`` and the answer."""
    if "json" not in kwargs:
        kwargs.setdefault("content", BROWSER_OFFER)
        kwargs.setdefault("headers", {"Content-Type": "application/sdp"})
    answer = target.http.post("/navai/realtime/calls", **kwargs)
    assert answer.status_code == 201, answer.text
    return answer.headers["location"].rsplit("/", 1)[1], answer
