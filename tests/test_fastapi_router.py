"""navai_adapters.fastapi.navai_router: navai's routes inside a FastAPI app.

FastAPI's own /openapi.json lists them with the core's schemas; FastAPI dependencies run
before navai (and not on preflights); the core still answers everything else.
"""

from __future__ import annotations

import logging

import pytest
from conftest import TestClient
from fastapi import Depends, FastAPI, HTTPException, Request

from navai_adapters.fastapi import navai_router
from navai_core import FunctionRegistry, NavaiConfig, RequestContext

tools = FunctionRegistry()


@tools.function
def whoami(context: RequestContext) -> dict[str, object]:
    """Who is calling."""
    return {"path": context.path, "user": getattr(context.raw.state, "user", None)}


def signed_in(request: Request) -> None:
    name = request.headers.get("x-user")
    if name is None:
        raise HTTPException(status_code=401, detail="Sign in first.")
    request.state.user = name


@pytest.fixture
def app(make_navai, tmp_path) -> FastAPI:
    app = FastAPI()
    navai = make_navai(
        functions=tools,
        functions_folders="nothing-here",
        functions_base_dir=str(tmp_path),
        health_path="/health",
    )
    app.include_router(navai_router(navai), prefix="/voice", dependencies=[Depends(signed_in)])
    return app


def test_openapi_lists_navai_routes_with_the_core_schemas(make_navai, app: FastAPI, tmp_path):
    core = make_navai(
        functions=tools,
        functions_folders="nothing-here",
        functions_base_dir=str(tmp_path),
        health_path="/health",
    ).openapi()
    with TestClient(app) as http:
        document = http.get("/openapi.json").json()
        assert http.get("/docs").status_code == 200
    for path, operations in core["paths"].items():
        [(method, expected)] = operations.items()
        served = document["paths"][f"/voice{path}"][method]
        assert served["operationId"] == expected["operationId"]
        assert served["tags"] == ["navai"]
        if "requestBody" in expected:
            assert served["requestBody"] == expected["requestBody"]
        for status, answer in expected["responses"].items():
            assert served["responses"][status]["content"] == answer["content"], (path, status)
    execute = document["paths"]["/voice/navai/functions/execute"]["post"]
    body = execute["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["function_name"]
    # Only POST is documented; the hidden route for other methods is not.
    assert set(document["paths"]["/voice/navai/functions/execute"]) == {"post"}


def test_dependencies_run_first_and_functions_see_what_they_stored(app: FastAPI):
    call = {"function_name": "whoami"}
    with TestClient(app) as http:
        refused = http.post("/voice/navai/functions/execute", json=call)
        assert (refused.status_code, refused.json()) == (401, {"detail": "Sign in first."})
        answer = http.post("/voice/navai/functions/execute", json=call, headers={"x-user": "ana"})
    # The function sees navai's path (no prefix) and the request the dependency saw.
    assert answer.json()["result"] == {"path": "/navai/functions/execute", "user": "ana"}


def test_the_core_answers_other_methods_and_preflights_without_dependencies(app: FastAPI):
    with TestClient(app) as http:
        wrong = http.get("/voice/navai/functions/execute")
        assert wrong.status_code == 405
        assert wrong.json() == {"error": "Method not allowed. Allowed: OPTIONS, POST."}
        preflight = http.options(
            "/voice/navai/functions/execute",
            headers={"origin": "http://localhost:5173", "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
        foreign = http.options("/voice/navai/functions", headers={"origin": "https://evil.example"})
        assert foreign.status_code == 403


def test_core_errors_keep_their_json_and_status(app: FastAPI):
    user = {"x-user": "ana"}
    with TestClient(app) as http:
        json_type = {**user, "content-type": "application/json"}
        bad = http.post("/voice/navai/functions/execute", content=b"{", headers=json_type)
        assert (bad.status_code, bad.json()) == (400, {"error": "Request body is not valid JSON."})
        plain = http.post(
            "/voice/navai/functions/execute",
            content=b"x",
            headers={**user, "content-type": "text/plain"},
        )
        assert plain.status_code == 415
        unknown = http.post(
            "/voice/navai/functions/execute", json={"function_name": "nope"}, headers=user
        )
        assert unknown.status_code == 404
        minted = http.post("/voice/navai/realtime/client-secret", json={}, headers=user)
        assert minted.status_code == 401  # no OpenAI key configured: the core says so
        assert http.get("/voice/health", headers=user).json() == {"ok": True}


def test_the_router_lifespan_loads_functions_and_closes_clients(make_navai, tmp_path, caplog):
    navai = make_navai(
        functions=tools, functions_folders="nothing-here", functions_base_dir=str(tmp_path)
    )
    app = FastAPI()
    app.include_router(navai_router(navai))
    caplog.set_level(logging.WARNING, "navai")
    with TestClient(app):
        assert navai._registry is not None  # built at start-up, before any request
        assert navai._aclient is not None
        assert any("OPENAI_API_KEY" in r.getMessage() for r in caplog.records)
    assert navai._aclient is None  # closed at shutdown


def test_router_without_prefix_or_dependencies(tmp_path):
    app = FastAPI()
    app.include_router(navai_router(config=NavaiConfig(functions_base_dir=str(tmp_path))))
    with TestClient(app) as http:
        listed = http.get("/navai/functions").json()
        assert listed["items"] == []
        assert ["NAVAI_FUNCTIONS_FOLDERS" in w for w in listed["warnings"]] == [True]
