"""README's Python example runs as written, and does what the text around it says."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.testclient import TestClient

README = Path(__file__).resolve().parents[1] / "README.md"


def example_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_readme_example_is_short():
    code_lines = [line for line in example_code().splitlines() if line.strip()]
    assert len(code_lines) <= 20, len(code_lines)


def test_readme_example_runs(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no functions folder here: only the registered function
    for name in ("OPENAI_API_KEY", "NAVAI_FUNCTIONS_FOLDERS", "NAVAI_FUNCTIONS_MODULES"):
        monkeypatch.delenv(name, raising=False)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(example_code(), "README.md", "exec"), namespace)
    with TestClient(namespace["app"], base_url="http://127.0.0.1") as client:
        listed = client.get("/navai/functions").json()["items"]
        assert [item["name"] for item in listed] == ["get_weather"]
        assert listed[0]["parameters"]["properties"]["city"]["description"].startswith("City name")
        ok = client.post(
            "/navai/functions/execute",
            json={"function_name": "get_weather", "payload": {"city": "Bogota"}},
        )
        assert ok.json()["result"] == {"city": "Bogota", "temperature": 21, "units": "c"}
        failed = client.post(
            "/navai/functions/execute",
            json={"function_name": "get_weather", "payload": {"city": "Atlantis"}},
        )
        assert failed.status_code == 500
        assert failed.json()["details"] == "City not found"
        assert client.post("/navai/realtime/client-secret", json={}).status_code == 401
