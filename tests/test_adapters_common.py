"""What both adapters share: body reading, header merging, mount paths, the registry built
once, start-up logging, custom paths, the safety net for unexpected errors, import hygiene.

Tests that need an app run on both adapters through the ``make`` fixture.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import wsgiref.validate
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
from conftest import TestClient

from navai_adapters import _common, asgi, wsgi
from navai_core import FunctionRegistry, Navai, NavaiConfig, NavaiError, RequestContext

# ----- framework-free helpers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("/navai/functions", "", "/navai/functions"),
        ("/voice/navai/functions", "/voice", "/navai/functions"),
        ("/voice", "/voice", "/"),
        ("/voiceover/x", "/voice", "/voiceover/x"),
        ("", "", "/"),
    ],
)
def test_route_path(path: str, root: str, expected: str):
    assert _common.route_path(path, root) == expected


def test_merge_headers_lower_cases_and_joins_repeats():
    merged = _common.merge_headers([("X-A", "1"), ("x-a", "2"), ("Origin", "o")])
    assert merged == {"x-a": "1, 2", "origin": "o"}


class EndlessStream:
    """A body that never ends; counts what was read."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def read(self, size: int) -> bytes:
        self.read_bytes += size
        return b"x" * size

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            self.read_bytes += 1000
            yield b"x" * 1000


def test_read_limited_never_reads_past_the_limit_plus_one():
    stream = EndlessStream()
    body = _common.read_limited(stream.read, 100_000)
    assert len(body) == 100_001
    assert stream.read_bytes == 100_001


def test_read_limited_reads_a_short_body_whole():
    chunks = iter([b"ab", b"cd", b""])
    assert _common.read_limited(lambda n: next(chunks), 10) == b"abcd"


def test_aread_limited_stops_after_the_limit():
    stream = EndlessStream()
    body = asyncio.run(_common.aread_limited(stream.chunks(), 4500))
    assert len(body) == 4501
    assert stream.read_bytes == 5000


def test_a_navai_and_a_config_together_are_refused():
    with pytest.raises(TypeError):
        asgi.create_app(Navai(NavaiConfig()), config=NavaiConfig())
    with pytest.raises(TypeError):
        wsgi.create_app(Navai(NavaiConfig()), functions=FunctionRegistry())


# ----- both adapters, in-process -----------------------------------------------------------------

Make = Callable[..., httpx2.Client]


@pytest.fixture(params=["asgi", "wsgi"])
def make(request: pytest.FixtureRequest) -> Iterator[Make]:
    """``make(navai, **create_app_kwargs)`` -> an httpx2 client on that adapter's app."""
    closers: list[Callable[[], Any]] = []

    def build(navai: Navai, **kwargs: Any) -> httpx2.Client:
        if request.param == "asgi":
            client = TestClient(asgi.create_app(navai, **kwargs))
            client.__enter__()
            closers.append(lambda: client.__exit__(None, None, None))
            return client
        app = wsgi.create_app(navai, **kwargs)
        transport = httpx2.WSGITransport(app=wsgiref.validate.validator(app))
        http = httpx2.Client(transport=transport, base_url="http://testserver")
        closers.extend([http.close, app.close])
        return http

    build.kind = request.param  # type: ignore[attr-defined]
    yield build
    for close in reversed(closers):
        close()


COUNTED_PY = """
import time
from pathlib import Path

IMPORTS = Path(__file__).with_suffix(".imports")
with IMPORTS.open("a") as handle:
    handle.write("imported\\n")
time.sleep(0.3)  # a slow import widens the window in which requests arrive together


def ping() -> str:
    return "pong"
"""


def counted_navai(tmp_path: Path) -> tuple[Navai, Path]:
    (tmp_path / "fns").mkdir()
    (tmp_path / "fns" / "counted.py").write_text(COUNTED_PY)
    config = NavaiConfig(
        functions_base_dir=str(tmp_path),
        functions_folders="fns",
        rate_limit_client_secret="off",
    )
    return Navai(config), tmp_path / "fns" / "counted.imports"


def test_the_registry_is_built_once_when_the_first_requests_arrive_together(
    make: Make, tmp_path: Path
):
    navai, imports = counted_navai(tmp_path)
    http = make(navai, load_functions_at_startup=False)
    assert not imports.exists()  # lazy: nothing imported at start-up

    def first_request(i: int) -> httpx2.Response:
        if i % 2:
            return http.get("/navai/functions")
        return http.post("/navai/functions/execute", json={"function_name": "ping"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(first_request, range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert imports.read_text() == "imported\n"


def test_the_registry_can_be_built_at_start_up(make: Make, tmp_path: Path):
    navai, imports = counted_navai(tmp_path)
    http = make(navai)
    assert imports.read_text() == "imported\n"  # before any request
    assert http.post("/navai/functions/execute", json={"function_name": "ping"}).status_code == 200
    assert imports.read_text() == "imported\n"


def test_a_lazy_start_still_logs_configuration_problems(
    make: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    navai, imports = counted_navai(tmp_path)
    with caplog.at_level(logging.WARNING, logger="navai"):
        make(navai, load_functions_at_startup=False)
    assert any("OPENAI_API_KEY is not set" in r.getMessage() for r in caplog.records)
    assert not imports.exists()


def test_custom_paths(make: Make):
    tools = FunctionRegistry()

    @tools.function
    def ping() -> str:
        return "pong"

    config = NavaiConfig(
        client_secret_path="/voice/token",
        functions_path="/voice/tools",
        execute_path="/voice/tools/run",
        functions_folders="does-not-exist",
    )
    http = make(Navai(config, functions=tools))
    assert http.post("/voice/token", json={}).status_code == 401  # the route, without a key
    assert [i["name"] for i in http.get("/voice/tools").json()["items"]] == ["ping"]
    ran = http.post("/voice/tools/run", json={"function_name": "ping"})
    assert ran.json()["result"] == "pong"
    for path in ("/navai/realtime/client-secret", "/navai/functions", "/navai/functions/execute"):
        assert http.post(path, json={}).status_code == 404


def test_functions_see_the_framework_request_as_context_raw(make: Make):
    tools = FunctionRegistry()

    @tools.function
    def raw_kind(context: RequestContext) -> str:
        return f"{type(context.raw).__module__}.{type(context.raw).__name__}"

    http = make(Navai(NavaiConfig(functions_folders="none"), functions=tools))
    answer = http.post("/navai/functions/execute", json={"function_name": "raw_kind"})
    expected = {
        "asgi": "starlette.requests.Request",
        "wsgi": "werkzeug.wrappers.request.Request",
    }[make.kind]  # type: ignore[attr-defined]
    assert answer.json()["result"] == expected


def test_an_unexpected_error_in_the_core_is_a_generic_json_500_logged_once(
    make: Make, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    navai = Navai(NavaiConfig(functions_folders="none"))

    def explode(*args: Any) -> Any:
        raise RuntimeError("core internals 7")

    monkeypatch.setattr(navai, "list_reply", explode)
    http = make(navai)
    with caplog.at_level(logging.ERROR, logger="navai"):
        response = http.get("/navai/functions")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Internal server error."}
    assert "internals" not in response.text
    [record] = [r for r in caplog.records if r.exc_info]
    assert "core internals 7" in str(record.exc_info[1])


def test_an_unexpected_error_in_the_adapter_is_a_generic_json_500_logged_once(
    make: Make, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    navai = Navai(NavaiConfig(functions_folders="none"))

    def explode(*args: Any) -> Any:
        raise RuntimeError("adapter internals 8")

    http = make(navai)
    monkeypatch.setattr(navai, "ahandle" if make.kind == "asgi" else "handle", explode)  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, logger="navai"):
        response = http.get("/navai/functions")
    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error."}
    assert "internals" not in response.text
    [record] = [r for r in caplog.records if r.exc_info]
    assert "adapter internals 8" in str(record.exc_info[1])


def test_the_wsgi_app_closes_navais_http_client():
    navai = Navai(NavaiConfig(functions_folders="none"))
    client = navai.http_client()
    wsgi.create_app(navai).close()
    assert client.is_closed


def test_the_asgi_lifespan_opens_and_closes_navais_http_client():
    navai = Navai(NavaiConfig(functions_folders="none"))
    with TestClient(asgi.create_app(navai)):
        client = navai._aclient  # opened at start-up, before any request
        assert client is not None
        assert not client.is_closed
    assert client.is_closed


def test_async_functions_under_wsgi_run_on_one_loop_from_many_threads():
    tools = FunctionRegistry()

    @tools.function
    async def where() -> list[Any]:
        await asyncio.sleep(0.01)
        return [id(asyncio.get_running_loop()), threading.current_thread().name]

    app = wsgi.create_app(Navai(NavaiConfig(functions_folders="none"), functions=tools))
    http = httpx2.Client(transport=httpx2.WSGITransport(app=app), base_url="http://t")

    def run(_: int) -> tuple[Any, ...]:
        reply = http.post("/navai/functions/execute", json={"function_name": "where"})
        return tuple(reply.json()["result"])

    run(0)
    threads_before = threading.active_count()
    with ThreadPoolExecutor(max_workers=6) as pool:
        seen = set(pool.map(run, range(30)))
    assert len(seen) == 1
    assert threading.active_count() <= threads_before + 6  # only the pool's own threads
    http.close()
    app.close()


# ----- import hygiene --------------------------------------------------------------------------


@pytest.mark.slow  # starts a Python process
@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("navai_adapters", ("starlette", "werkzeug", "uvicorn", "waitress", "dotenv")),
        ("navai_adapters.asgi", ("werkzeug", "flask", "django", "uvicorn", "waitress")),
        ("navai_adapters.wsgi", ("starlette", "fastapi", "django", "uvicorn", "waitress")),
        ("navai_adapters.cli", ("starlette", "werkzeug", "uvicorn", "waitress", "dotenv")),
    ],
)
def test_each_adapter_imports_only_its_framework(module: str, absent: tuple[str, ...]):
    code = f"import sys, {module}\nprint(','.join(m for m in {absent!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == ""


@pytest.mark.parametrize("module", [asgi, wsgi])
def test_each_adapter_module_declares_its_public_api(module: Any):
    assert module.__all__ == sorted(module.__all__)
    assert all(callable(getattr(module, name)) for name in module.__all__)
    defined_here = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }
    assert defined_here == set(module.__all__)


def test_a_hooks_304_has_no_body_on_either_adapter(make: Make):  # a hook chooses its answer
    def not_modified(context: RequestContext) -> None:
        raise NavaiError("Not modified.", status_code=304)

    client = make(Navai(NavaiConfig(authorize_functions=not_modified)))
    response = client.get("/navai/functions")
    assert response.status_code == 304
    assert response.content == b""
    assert "content-type" not in response.headers
