"""The authorisation examples of docs/security.md run as shown: a signed-in user may list and
run functions, anyone else gets 403 without the function or the upstream being reached.
(tests/test_docs_examples.py checks that the page shows them verbatim.)"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import httpx2
import pytest
from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
EXECUTE = {"function_name": "my_orders"}


def load(name, monkeypatch):
    monkeypatch.chdir(ROOT / "docs" / "examples")
    monkeypatch.syspath_prepend(str(ROOT / "docs" / "examples"))
    for variable in ("OPENAI_API_KEY", "NAVAI_FUNCTIONS_FOLDERS", "NAVAI_FUNCTIONS_MODULES"):
        monkeypatch.delenv(variable, raising=False)
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def test_fastapi_session_hook(monkeypatch):
    module = load("auth_fastapi", monkeypatch)
    with TestClient(module.app, base_url="http://127.0.0.1") as client:
        assert client.get("/navai/functions").status_code == 403
        assert client.post("/navai/functions/execute", json=EXECUTE).status_code == 403
        assert client.post("/navai/realtime/client-secret", json={}).status_code == 403
        assert client.post("/login").status_code == 200
        assert client.post("/navai/functions/execute", json=EXECUTE).json()["result"] == [
            "A-100",
            "A-101",
        ]
        # signed in, the mint gets past the hook to the missing-key check
        assert client.post("/navai/realtime/client-secret", json={}).status_code == 401


@pytest.mark.parametrize("signed_in", [False, True])
def test_flask_session_hook(monkeypatch, signed_in):
    module = load("auth_flask", monkeypatch)
    transport = httpx2.WSGITransport(app=module.app)
    with httpx2.Client(transport=transport, base_url="http://127.0.0.1") as client:
        if signed_in:
            assert client.post("/login").status_code == 200
        listed = client.get("/voice/navai/functions")
        executed = client.post("/voice/navai/functions/execute", json=EXECUTE)
    if signed_in:
        assert [item["name"] for item in listed.json()["items"]] == ["my_orders"]
        assert executed.json()["result"] == ["A-100", "A-101"]
    else:
        assert (listed.status_code, executed.status_code) == (403, 403)
        assert executed.json() == {"error": "Forbidden."}
