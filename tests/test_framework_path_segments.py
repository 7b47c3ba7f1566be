"""Routes whose path holds ``{name}`` segments (routes with ids) through each framework
integration: the framework matches the segment and navai sees the path the request used."""

from __future__ import annotations

import flask
import httpx2
from conftest import TestClient
from fastapi import FastAPI

from navai_adapters.fastapi import navai_router
from navai_adapters.flask import NavaiFlask
from navai_core import FunctionRegistry, RequestContext

tools = FunctionRegistry()
PATHS = {
    "functions_path": "/tenants/{tenant}/functions",
    "execute_path": "/tenants/{tenant}/execute",
}


@tools.function
def where(context: RequestContext) -> str:
    """The path navai saw."""
    return context.path


def check(http: httpx2.Client | TestClient, prefix: str) -> None:
    answer = http.post(f"{prefix}/tenants/acme/execute", json={"function_name": "where"})
    assert answer.json()["result"] == "/tenants/acme/execute"
    listed = http.get(f"{prefix}/tenants/acme/functions").json()["items"]
    assert [item["name"] for item in listed] == ["where"]
    assert http.get(f"{prefix}/tenants/acme/execute").status_code == 405


def test_fastapi(make_navai, tmp_path):
    app = FastAPI()
    app.include_router(
        navai_router(make_navai(functions=tools, functions_base_dir=str(tmp_path), **PATHS)),
        prefix="/voice",
    )
    with TestClient(app) as http:
        check(http, "/voice")
        assert "/voice/tenants/{tenant}/execute" in http.get("/openapi.json").json()["paths"]


def test_flask(make_navai, tmp_path):
    app = flask.Flask(__name__)
    NavaiFlask(
        app,
        make_navai(functions=tools, functions_base_dir=str(tmp_path), **PATHS),
        url_prefix="/voice",
    )
    with httpx2.Client(
        transport=httpx2.WSGITransport(app=app), base_url="http://localhost"
    ) as http:
        check(http, "/voice")


def test_the_conversion_django_and_flask_share():
    from navai_adapters._common import filled_path, framework_path

    assert framework_path("/tenants/{tenant}/execute", "<", ">") == "/tenants/<tenant>/execute"
    assert filled_path("/tenants/{tenant}/execute", {"tenant": "acme"}) == "/tenants/acme/execute"
    assert filled_path("/navai/functions", {}) == "/navai/functions"
