"""navai inside other apps: mounted under a prefix in FastAPI and in Flask, and its routes
added to a Starlette router. The user's own routes keep working next to navai's."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from conftest import TestClient
from fakes import FakeOpenAI
from fastapi import FastAPI
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from navai_adapters import asgi, wsgi
from navai_core import FunctionRegistry, Navai, RequestContext

LOCAL = "http://localhost:5173"


tools = FunctionRegistry()


@tools.function
def where(context: RequestContext) -> str:
    """The path navai saw."""
    return context.path


MOUNTED = {"functions_folders": "no-such-folder", "rate_limit_client_secret": "off"}


@pytest.fixture
def upstream(fake_upstream: FakeOpenAI) -> FakeOpenAI:
    fake_upstream.reset()
    return fake_upstream


def check_navai_under(http: httpx2.Client, prefix: str, upstream: FakeOpenAI) -> None:
    minted = http.post(f"{prefix}/navai/realtime/client-secret", json={"voice": "cedar"})
    assert minted.status_code == 200, minted.text
    assert minted.json()["value"].startswith("ek_fake_")
    assert upstream.requests[-1].json()["session"]["audio"]["output"]["voice"] == "cedar"
    listed = http.get(f"{prefix}/navai/functions")
    assert [item["name"] for item in listed.json()["items"]] == ["where"]
    ran = http.post(f"{prefix}/navai/functions/execute", json={"function_name": "where"})
    assert ran.json()["result"] == "/navai/functions/execute"  # relative to the mount
    wrong = http.get(f"{prefix}/navai/realtime/client-secret")
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "OPTIONS, POST")
    preflight = http.options(
        f"{prefix}/navai/functions/execute",
        headers={"Origin": LOCAL, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == LOCAL


# ----- ASGI ------------------------------------------------------------------------------------


def fastapi_app(navai: Navai) -> FastAPI:
    app = FastAPI(lifespan=asgi.lifespan(navai))

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    app.mount("/voice", asgi.create_app(navai))
    return app


@pytest.fixture
def fastapi_client(make_navai, upstream: FakeOpenAI) -> Iterator[tuple[TestClient, Navai]]:
    navai = make_navai(upstream, functions=tools, **MOUNTED)
    with TestClient(fastapi_app(navai)) as client:
        yield client, navai


def test_mounted_under_a_prefix_in_fastapi(fastapi_client, upstream: FakeOpenAI):
    client, _ = fastapi_client
    check_navai_under(client, "/voice", upstream)
    assert client.get("/hello").json() == {"hello": "world"}
    unknown = client.get("/voice/elsewhere")
    assert (unknown.status_code, unknown.headers["content-type"]) == (404, "application/json")
    assert client.get("/navai/functions").status_code == 404  # only under the prefix


def test_the_parent_lifespan_closes_navais_client(make_navai, upstream: FakeOpenAI):
    navai = make_navai(upstream, functions=tools, **MOUNTED)
    with TestClient(fastapi_app(navai)) as client:
        assert client.post("/voice/navai/realtime/client-secret", json={}).status_code == 200
        http = navai.async_http_client()
        assert not http.is_closed
    assert http.is_closed


def test_routes_in_a_starlette_router(make_navai, upstream: FakeOpenAI):
    navai = make_navai(upstream, functions=tools, **MOUNTED)

    def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("home")

    app = Starlette(routes=[Route("/", home), *asgi.routes(navai)], lifespan=asgi.lifespan(navai))
    with TestClient(app) as client:
        check_navai_under(client, "", upstream)
        assert client.get("/").text == "home"
        assert client.get("/navai/elsewhere").status_code == 404


def test_routes_added_to_a_fastapi_app(make_navai, upstream: FakeOpenAI):
    navai = make_navai(upstream, functions=tools, **MOUNTED)
    app = FastAPI(lifespan=asgi.lifespan(navai))
    app.router.routes.extend(asgi.routes(navai))
    with TestClient(app) as client:
        check_navai_under(client, "", upstream)


# ----- WSGI ------------------------------------------------------------------------------------


def test_mounted_under_a_prefix_in_flask(make_navai, upstream: FakeOpenAI):
    navai = make_navai(upstream, functions=tools, **MOUNTED)
    app = Flask(__name__)

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    navai_app = wsgi.create_app(navai)
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/voice": navai_app})  # type: ignore[method-assign]
    with httpx2.Client(
        transport=httpx2.WSGITransport(app=app), base_url="http://testserver"
    ) as client:
        check_navai_under(client, "/voice", upstream)
        assert client.get("/hello").json() == {"hello": "world"}
        unknown = client.get("/voice/elsewhere")
        assert (unknown.status_code, unknown.headers["content-type"]) == (404, "application/json")
        assert client.get("/navai/functions").status_code == 404  # Flask's own 404
    flask_client = app.test_client()  # Flask's test client goes through wsgi_app too
    assert flask_client.get("/voice/navai/functions").json["items"][0]["name"] == "where"
    navai_app.close()
