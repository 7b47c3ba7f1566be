"""navai's log lines show up under a framework's own run line, with no logging set-up: when no
handler would show them, navai attaches one to its logger (as Flask does for its app logger);
when the application configured logging, navai leaves it alone (no line twice)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, hermetic_env, stop_process

SCRIPT = """
import logging
{setup}
from navai_adapters.{adapter} import create_app
from navai_core import NavaiConfig
app = create_app(config=NavaiConfig(openai_api_key="sk-log-test-key", functions_enabled=False))
{start}
logging.getLogger("navai").info("call abc accepted")
logging.getLogger("navai.models").info("a child logger too")
"""


def run(adapter: str, setup: str = "", start: str = "") -> str:
    code = SCRIPT.format(adapter=adapter, setup=setup, start=start)
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=hermetic_env({}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.slow  # starts a Python process
def test_without_logging_set_up_info_lines_show_up():
    # The WSGI app logs its start-up report when it is built.
    err = run("wsgi")
    assert "INFO:  navai: call abc accepted" in err.splitlines()
    assert "INFO:  navai.models: a child logger too" in err.splitlines()


@pytest.mark.slow  # starts a Python process
def test_with_logging_set_up_navai_adds_nothing():
    err = run("wsgi", setup="logging.basicConfig(level=logging.INFO)")
    assert err.count("call abc accepted") == 1
    assert "INFO:navai:call abc accepted" in err  # basicConfig's format, not navai's


@pytest.mark.slow  # starts a Python process
def test_the_app_can_take_the_handler_off():
    err = run(
        "wsgi",
        start="import navai_core; logging.getLogger('navai').removeHandler("
        "navai_core.default_log_handler)",
    )
    assert "call abc accepted" not in err


@pytest.mark.slow  # starts a real server
def test_under_uvicorn_the_guide_example_shows_navai_lines(tmp_path: Path):
    (tmp_path / "app.py").write_text((REPO / "docs/examples/fastapi_app.py").read_text())
    log = tmp_path / "server.log"
    uvicorn = Path(sys.executable).with_name("uvicorn")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(uvicorn), "app:app", "--host", "127.0.0.1", "--port", "0"],
            cwd=tmp_path,
            env=hermetic_env({"NAVAI_FUNCTIONS_BASE_DIR": str(tmp_path)}),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "Uvicorn running on" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        stop_process(process)
    # The start-up report, through navai's handler (uvicorn configures only its own loggers).
    assert re.search(r"^WARNING:  navai: OPENAI_API_KEY is not set", log.read_text(), re.M)
