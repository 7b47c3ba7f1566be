"""navai_adapters.flask: navai's routes as Flask views, so Flask's hooks, session, request
context and error handlers apply to them, while the core still answers."""

from __future__ import annotations

import flask
import httpx2
import pytest

from navai_adapters.flask import NavaiFlask, navai_blueprint
from navai_core import FunctionRegistry, RequestContext

tools = FunctionRegistry()


@tools.function
def whoami(context: RequestContext) -> dict[str, object]:
    """Sync: Flask's request context is active."""
    return {
        "path": context.path,
        "flask_path": flask.request.path,
        "user": flask.g.get("user"),
        "raw_is_flask_request": isinstance(context.raw, flask.Request),
    }


@tools.function
async def agent(context: RequestContext) -> str | None:
    """Async: runs on navai's loop; Flask's request is context.raw."""
    return context.raw.headers.get("user-agent")


def client(app: flask.Flask) -> httpx2.Client:
    return httpx2.Client(transport=httpx2.WSGITransport(app=app), base_url="http://localhost")


@pytest.fixture
def seen() -> list[tuple[str, str | None, str]]:
    return []


@pytest.fixture
def app(make_navai, tmp_path, seen) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.before_request
    def record() -> flask.Response | None:
        seen.append((flask.request.path, flask.request.blueprint, flask.request.method))
        flask.g.user = flask.request.headers.get("x-user")
        if flask.request.headers.get("x-block"):
            flask.abort(418)
        return None

    @app.after_request
    def stamp(response: flask.Response) -> flask.Response:
        response.headers["X-After"] = "yes"
        return response

    @app.errorhandler(418)
    def teapot(error: Exception) -> tuple[dict[str, str], int]:
        return {"error": "blocked by the app"}, 418

    NavaiFlask(
        app, make_navai(functions=tools, functions_base_dir=str(tmp_path)), url_prefix="/voice"
    )
    return app


def execute(http: httpx2.Client, name: str, **headers: str) -> httpx2.Response:
    return http.post(
        "/voice/navai/functions/execute", json={"function_name": name}, headers=headers
    )


def test_before_request_sees_navai_requests_and_functions_see_flask(app, seen):
    with client(app) as http:
        answer = execute(http, "whoami", **{"x-user": "ana"})
    assert seen == [("/voice/navai/functions/execute", "navai", "POST")]
    assert answer.headers["x-after"] == "yes"
    assert answer.json()["result"] == {
        "path": "/navai/functions/execute",
        "flask_path": "/voice/navai/functions/execute",
        "user": "ana",
        "raw_is_flask_request": True,
    }


def test_async_functions_get_flasks_request_as_context_raw(app):
    with client(app) as http:
        answer = execute(http, "agent", **{"user-agent": "probe/1"})
    assert answer.json()["result"] == "probe/1"


def test_a_hook_that_aborts_goes_through_the_apps_error_handler(app):
    with client(app) as http:
        answer = execute(http, "whoami", **{"x-block": "1"})
    assert (answer.status_code, answer.json()) == (418, {"error": "blocked by the app"})


def test_the_core_answers_preflights_wrong_methods_and_bad_bodies(app):
    with client(app) as http:
        preflight = http.options(
            "/voice/navai/functions/execute",
            headers={"origin": "http://localhost:5173", "access-control-request-method": "POST"},
        )
        wrong = http.get("/voice/navai/functions/execute")
        bad = http.post(
            "/voice/navai/functions/execute",
            content=b"{",
            headers={"content-type": "application/json"},
        )
        plain = http.post(
            "/voice/navai/functions/execute", content=b"x", headers={"content-type": "text/plain"}
        )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert preflight.headers["allow"] == "POST, OPTIONS"
    assert (wrong.status_code, wrong.json()["error"]) == (
        405,
        "Method not allowed. Allowed: OPTIONS, POST.",
    )
    assert (bad.status_code, bad.json()) == (400, {"error": "Request body is not valid JSON."})
    assert plain.status_code == 415


def test_a_hook_that_read_the_body_first_leaves_it_to_navai(make_navai, tmp_path):
    app = flask.Flask(__name__)
    bodies = []

    @app.before_request
    def peek() -> None:
        bodies.append(flask.request.get_json(silent=True))

    NavaiFlask(app, make_navai(functions=tools, functions_base_dir=str(tmp_path)))
    with client(app) as http:
        answer = http.post("/navai/functions/execute", json={"function_name": "whoami"})
    assert bodies == [{"function_name": "whoami"}]
    assert answer.json()["result"]["path"] == "/navai/functions/execute"


def test_init_app_with_a_factory_and_url_for(make_navai, tmp_path, caplog):
    voice = NavaiFlask(
        navai=make_navai(functions=tools, functions_base_dir=str(tmp_path)),
        load_functions_at_startup=False,
    )
    apps = []
    for prefix in ("/a", "/b"):
        app = flask.Flask(__name__)
        voice.init_app(app, url_prefix=prefix)
        apps.append(app)
        assert app.extensions["navai"] is voice.navai
        with app.test_request_context():
            assert flask.url_for("navai.execute") == f"{prefix}/navai/functions/execute"
    assert voice.navai._registry is None  # deferred to the first request
    with client(apps[1]) as http:
        assert [i["name"] for i in http.get("/b/navai/functions").json()["items"]] == [
            "whoami",
            "agent",
        ]


def test_body_limit_and_the_blueprint_alone(make_navai, tmp_path):
    app = flask.Flask(__name__)
    app.register_blueprint(
        navai_blueprint(
            make_navai(functions=tools, functions_base_dir=str(tmp_path), max_body_bytes=10)
        )
    )
    with client(app) as http:
        big = http.post("/navai/functions/execute", content=b"{" + b" " * 100 + b"}")
    assert big.status_code == 413


def test_a_client_gone_while_its_body_is_read_still_gets_json(app):
    class Gone:
        def read(self, size: int = -1) -> bytes:
            raise OSError("client went away")

    environ = {
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "30",
        "wsgi.input": Gone(),
    }
    with app.test_client() as http:
        response = http.post("/voice/navai/functions/execute", environ_overrides=environ, data=b"")
    assert response.status_code == 500
    assert response.get_json() == {"error": "Internal server error."}
