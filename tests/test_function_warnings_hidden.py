"""NAVAI_EXPOSE_FUNCTION_WARNINGS=false: the functions list keeps its ``warnings`` field
(CONTRACT section 4) but answers one short line; the details (paths, exception texts) go
to the server log, each once."""

from __future__ import annotations

import logging

import httpx2
import pytest
from starlette.testclient import TestClient

from navai_adapters.asgi import create_app as create_asgi
from navai_adapters.wsgi import create_app as create_wsgi
from navai_core import Navai, NavaiConfig

BROKEN = "import secret_dependency_xyz\n\ndef hidden_tool() -> str:\n    return 'x'\n"
GOOD = "def weather(city: str) -> str:\n    return city\n"


@pytest.fixture
def folder(tmp_path):
    modules = tmp_path / "tools"
    modules.mkdir()
    (modules / "broken.py").write_text(BROKEN)
    (modules / "good.py").write_text(GOOD)
    return tmp_path


def navai_for(folder, **env: str) -> Navai:
    return Navai(
        NavaiConfig.from_env(
            {"NAVAI_FUNCTIONS_BASE_DIR": str(folder), "NAVAI_FUNCTIONS_FOLDERS": "tools", **env}
        )
    )


def get_list(kind: str, navai: Navai) -> dict:
    if kind == "asgi":
        with TestClient(create_asgi(navai)) as http:
            return http.get("/navai/functions").json()
    app = create_wsgi(navai)
    with httpx2.Client(transport=httpx2.WSGITransport(app=app), base_url="http://t") as http:
        return http.get("/navai/functions").json()


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_by_default_the_list_carries_the_details(folder, kind):
    body = get_list(kind, navai_for(folder))
    assert [item["name"] for item in body["items"]] == ["weather"]
    [warning] = body["warnings"]
    assert "secret_dependency_xyz" in warning and "broken.py" in warning


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_hidden_warnings_answer_a_short_line_and_stay_in_the_log(folder, kind, caplog):
    navai = navai_for(folder, NAVAI_EXPOSE_FUNCTION_WARNINGS="false")
    with caplog.at_level(logging.WARNING, logger="navai"):
        body = get_list(kind, navai)
        again = get_list(kind, navai)
    assert [item["name"] for item in body["items"]] == ["weather"]
    assert body["warnings"] == ["1 warning about the backend functions: see the server log."]
    assert again == body
    assert "secret_dependency_xyz" not in str(body)
    logged = [r.getMessage() for r in caplog.records if "secret_dependency_xyz" in r.getMessage()]
    assert logged, "the details must reach the server log"
    # The list route logs each warning once, however often it is asked.
    listed = [m for m in logged if m.startswith("backend functions: ")]
    assert len(listed) == 1


def test_no_warnings_stays_an_empty_list(tmp_path):
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "good.py").write_text(GOOD)
    body = get_list("asgi", navai_for(tmp_path, NAVAI_EXPOSE_FUNCTION_WARNINGS="false"))
    assert body["warnings"] == []
