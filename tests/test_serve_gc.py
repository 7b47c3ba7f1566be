"""`navai serve --gc`: the garbage collector set-up of a real server process, seen from a
backend function running inside it."""

from __future__ import annotations

import subprocess
import sys

import httpx2
import pytest
from conftest import NAVAI_BIN, NavaiProcess, hermetic_env

from navai_adapters.cli import GC_YOUNG_THRESHOLD

TOOLS = '''
import gc


def gc_state() -> dict:
    """The garbage collector's set-up in this process."""
    return {"frozen": gc.get_freeze_count(), "threshold": list(gc.get_threshold())}
'''

# A fresh interpreter's thresholds (700, 10, 10 on CPython 3.11).
PYTHON_THRESHOLD = subprocess.run(
    [sys.executable, "-c", "import gc; print(*gc.get_threshold())"],
    capture_output=True,
    text=True,
    check=True,
).stdout.split()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("gc")
    (base / "functions").mkdir()
    (base / "functions" / "state.py").write_text(TOOLS)
    return base


def gc_state(folder, args: list[str], env: dict[str, str], name: str) -> dict:
    environ = hermetic_env(
        {
            "OPENAI_API_KEY": "sk-gc-test",
            "NAVAI_FUNCTIONS_FOLDERS": "functions",
            "NAVAI_RATE_LIMIT_FUNCTIONS": "off",
            **env,
        }
    )
    process = NavaiProcess(["--port", "0", *args], environ, folder, folder, name)
    try:
        url = process.wait_ready()
        answer = httpx2.post(
            f"{url}/navai/functions/execute",
            json={"function_name": "gc_state", "payload": {}},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["result"]
    finally:
        assert process.stop() == 0, process.describe()


@pytest.mark.parametrize("wsgi", [False, True], ids=["asgi", "wsgi"])
def test_tuned_by_default_freezes_start_up_objects_and_raises_the_young_threshold(
    folder, wsgi: bool
):
    state = gc_state(folder, ["--wsgi"] if wsgi else [], {}, f"tuned-{wsgi}")
    assert state["frozen"] > 10_000  # modules, classes, the app
    assert state["threshold"] == [GC_YOUNG_THRESHOLD, *map(int, PYTHON_THRESHOLD[1:])]


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--gc", "python"], {}), ([], {"NAVAI_SERVE_GC": "python"})],
    ids=["flag", "env"],
)
def test_gc_python_leaves_pythons_settings(folder, args: list[str], env: dict[str, str]):
    state = gc_state(folder, args, env, f"python-{bool(env)}")
    assert state == {"frozen": 0, "threshold": list(map(int, PYTHON_THRESHOLD))}


def test_the_flag_wins_over_the_environment(folder):
    state = gc_state(folder, ["--gc", "tuned"], {"NAVAI_SERVE_GC": "python"}, "flag-wins")
    assert state["threshold"][0] == GC_YOUNG_THRESHOLD


def test_a_bad_gc_setting_is_a_clear_error(folder):
    environ = hermetic_env({"OPENAI_API_KEY": "sk-gc-test", "NAVAI_SERVE_GC": "off"})
    done = subprocess.run(
        [str(NAVAI_BIN), "serve", "--port", "0"],
        env=environ,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "NAVAI_SERVE_GC='off': expected tuned or python" in done.stderr


def test_the_setting_is_read_from_the_env_file_too(folder, tmp_path):
    env_file = tmp_path / "gc.env"
    env_file.write_text("NAVAI_SERVE_GC=python\n")
    state = gc_state(folder, ["--env-file", str(env_file)], {}, "env-file")
    assert state == {"frozen": 0, "threshold": list(map(int, PYTHON_THRESHOLD))}
