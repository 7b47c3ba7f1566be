"""The four apps the HTTP benchmark serves: navai and a bare ceiling, on ASGI and on WSGI.

    uvicorn --factory benchmarks.apps:navai_asgi   waitress-serve --call benchmarks.apps:navai_wsgi
    uvicorn --factory benchmarks.apps:bare_asgi    waitress-serve --call benchmarks.apps:bare_wsgi

(``run.py`` serves the navai apps with ``navai serve`` and the bare ones with
``serve_bare.py``, on the same server set-up.)

The navai apps are the real adapters (``navai_adapters.asgi.create_app`` /
``navai_adapters.wsgi.create_app``) configured from the environment like ``navai serve``;
their functions are discovered from ``benchmarks/fixture_functions/``.

The bare apps are the ceilings: a plain Starlette app and a plain Werkzeug app, no navai
import, answering the same routes with the same bytes, doing only what a hand-written
endpoint must do: read the body, decode the JSON, call the function (the sync one in a
worker thread under ASGI, as Starlette does for sync endpoints; the async one on a
per-thread event loop under WSGI), or forward the mint to the upstream with one shared,
keep-alive httpx2 client and re-encode ``value``/``expires_at``. That client has the pool
limits of navai's own clients (``navai_core.upstream.send.UPSTREAM_LIMITS``, the only navai code
in a ceiling). The driver checks that each
pair answers byte-identical bodies before it measures anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "fixture_functions"))

from bench_tools import add, aping, ping  # noqa: E402

CLIENT_SECRET = "/navai/realtime/client-secret"
FUNCTIONS = "/navai/functions"
EXECUTE = "/navai/functions/execute"

FUNCTIONS_BASE_DIR = str(HERE)
FUNCTIONS_FOLDERS = "fixture_functions"
SOURCE = "fixture_functions/bench_tools.py"

# What a bare app must answer to be compared with navai (checked byte for byte by the driver).
_NO_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {},
    "additionalProperties": False,
}
_ADD_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
LIST_BODY: dict[str, Any] = {
    "items": [
        {
            "name": name,
            "description": description,
            "source": f"{SOURCE}#{name}",
            "parameters": parameters,
        }
        for name, description, parameters in (
            ("add", "Add two integers (a trivial sync function with arguments).", _ADD_PARAMETERS),
            ("aping", "Answer pong (a trivial async function).", _NO_PARAMETERS),
            ("ping", "Answer pong (a trivial sync function).", _NO_PARAMETERS),
        )
    ],
    "warnings": [],
}


def _call_sync(name: str, payload: dict[str, Any]) -> object:
    return add(payload["a"], payload["b"]) if name == "add" else ping()


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _executed(name: str, result: object) -> bytes:
    return _dumps(
        {"ok": True, "function_name": name, "source": f"{SOURCE}#{name}", "result": result}
    )


def _upstream_request() -> tuple[str, dict[str, str], bytes]:
    base = os.environ["OPENAI_BASE_URL"].rstrip("/")
    headers = {
        "Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}",
        "Content-Type": "application/json",
    }
    body = _dumps(
        {
            "expires_after": {"anchor": "created_at", "seconds": 600},
            "session": {
                "type": "realtime",
                "model": "gpt-realtime-2.1",
                "instructions": "You are a helpful assistant.",
                "audio": {"output": {"voice": "marin"}},
            },
        }
    )
    return f"{base}/realtime/client_secrets", headers, body


def _minted(upstream_body: bytes) -> bytes:
    reply = json.loads(upstream_body)
    return _dumps(
        {
            "value": reply["value"],
            "expires_at": reply["expires_at"],
            "speech": {"provider": "openai"},
        }
    )


def _limits() -> Any:
    """The ceilings' upstream pool: the limits navai gives its own clients, so that the
    ratio measures what navai itself adds."""
    from navai_core.upstream.send import UPSTREAM_LIMITS

    return UPSTREAM_LIMITS


# ----- navai ---------------------------------------------------------------------------------


def _navai_env() -> None:
    os.environ.setdefault("NAVAI_FUNCTIONS_BASE_DIR", FUNCTIONS_BASE_DIR)
    os.environ.setdefault("NAVAI_FUNCTIONS_FOLDERS", FUNCTIONS_FOLDERS)


def navai_asgi() -> Any:
    _navai_env()
    from navai_adapters.asgi import create_app

    return create_app()


def navai_wsgi() -> Any:
    _navai_env()
    from navai_adapters.wsgi import create_app

    return create_app()


# ----- bare ASGI (Starlette) -------------------------------------------------------------------


def bare_asgi() -> Any:
    import contextlib

    import anyio.to_thread
    import httpx2
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    url, headers, content = _upstream_request()
    list_bytes = _dumps(LIST_BODY)
    clients: list[httpx2.AsyncClient] = []

    def json_response(body: bytes, extra: dict[str, str] | None = None) -> Response:
        return Response(body, media_type="application/json", headers=extra)

    async def client_secret(request: Request) -> Response:
        json.loads(await request.body() or b"{}")
        reply = await clients[0].post(url, headers=headers, content=content)
        return json_response(_minted(reply.content), {"Cache-Control": "no-store"})

    async def execute(request: Request) -> Response:
        call = json.loads(await request.body())
        name = call["function_name"]
        if name == "aping":
            result = await aping()
        else:
            result = await anyio.to_thread.run_sync(_call_sync, name, call["payload"])
        return json_response(_executed(name, result))

    async def list_functions(request: Request) -> Response:
        return json_response(list_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> Any:
        clients.append(httpx2.AsyncClient(limits=_limits(), timeout=15))
        try:
            yield
        finally:
            await clients[0].aclose()

    return Starlette(
        routes=[
            Route(CLIENT_SECRET, client_secret, methods=["POST"]),
            Route(EXECUTE, execute, methods=["POST"]),
            Route(FUNCTIONS, list_functions, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


# ----- bare WSGI (Werkzeug) --------------------------------------------------------------------


def bare_wsgi() -> Any:
    import httpx2
    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import Map, Rule
    from werkzeug.wrappers import Request, Response

    url, headers, content = _upstream_request()
    list_bytes = _dumps(LIST_BODY)
    client = httpx2.Client(limits=_limits(), timeout=15)
    local = threading.local()

    def run_async(coroutine: Any) -> Any:
        loop = getattr(local, "loop", None)
        if loop is None:
            loop = local.loop = asyncio.new_event_loop()
        return loop.run_until_complete(coroutine)

    def client_secret(request: Request) -> Response:
        json.loads(request.get_data() or b"{}")
        reply = client.post(url, headers=headers, content=content)
        return Response(
            _minted(reply.content),
            mimetype="application/json",
            headers={"Cache-Control": "no-store"},
        )

    def execute(request: Request) -> Response:
        call = json.loads(request.get_data())
        name = call["function_name"]
        result = run_async(aping()) if name == "aping" else _call_sync(name, call["payload"])
        return Response(_executed(name, result), mimetype="application/json")

    def list_functions(request: Request) -> Response:
        return Response(list_bytes, mimetype="application/json")

    urls = Map(
        [
            Rule(CLIENT_SECRET, endpoint=client_secret, methods=["POST"]),
            Rule(EXECUTE, endpoint=execute, methods=["POST"]),
            Rule(FUNCTIONS, endpoint=list_functions, methods=["GET"]),
        ]
    )

    @Request.application  # type: ignore[arg-type]
    def app(request: Request) -> Response:
        try:
            endpoint, _ = urls.bind_to_environ(request.environ).match()
        except HTTPException as exc:
            return exc  # type: ignore[return-value]
        return endpoint(request)  # type: ignore[no-any-return]

    return app
