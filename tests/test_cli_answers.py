"""The CLI answers a newcomer: its version, the variables it reads, settings that cannot be
read (all listed, exit code 2), and an --app that names the wrong kind of object (one line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import hermetic_env

from navai_adapters import cli
from navai_core._config import environment_variables

NAVAI_BIN = Path(sys.executable).with_name("navai")


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NAVAI_BIN), *args],
        cwd=cwd,
        env=hermetic_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow  # starts a Python process
def test_version(tmp_path):
    done = run(["--version"], tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"navai {cli.version()}"
    assert cli.version()[0].isdigit()


@pytest.mark.slow  # starts a Python process
def test_serve_help_names_the_main_variables_and_where_the_rest_are(tmp_path):
    done = run(["serve", "--help"], tmp_path)
    assert done.returncode == 0
    for name in ("OPENAI_API_KEY", "NAVAI_CORS_ORIGIN", "NAVAI_FUNCTIONS_FOLDERS", "PORT"):
        assert f"\n  {name} " in done.stdout
    # The pointers exist outside a clone: a command of the installed package, and the sdist.
    assert "navai settings" in done.stdout
    assert "docs/configuration.md" in done.stdout


@pytest.mark.slow  # starts a Python process
def test_navai_settings_lists_every_variable_with_its_default(tmp_path):
    done = run(["settings"], tmp_path)
    assert done.returncode == 0
    rows = dict(line.split(None, 1) for line in done.stdout.splitlines()[1:] if line.strip())
    for variable in environment_variables().values():
        assert variable in rows
    assert rows["OPENAI_REALTIME_MODEL"] == "gpt-realtime-2.1"
    assert rows["NAVAI_RATE_LIMIT_CALLS"] == "10/minute"
    assert rows["NAVAI_ALLOW_FRONTEND_API_KEY"] == "false"
    assert rows["PORT"] == "3000"
    assert rows["NAVAI_PLAYGROUND"] == "on when serving on loopback"


@pytest.mark.slow  # starts a Python process
def test_serve_refuses_to_start_and_lists_every_unreadable_setting(tmp_path):
    done = run(
        ["serve", "--port", "0"],
        tmp_path,
        NAVAI_CALL_MAX_SECONDS="abc",
        NAVAI_RATE_LIMIT_CALLS="ten",
        NAVAI_FUNCTIONS_ENABLED="sure",
        NAVAI_SERVE_GC="fast",
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "serving on" not in done.stdout
    lines = done.stderr.splitlines()
    assert lines[0] == "navai: cannot start: 4 settings cannot be read:"
    assert "  NAVAI_CALL_MAX_SECONDS='abc': expected a number" in lines
    assert (
        "  NAVAI_RATE_LIMIT_CALLS='ten': expected a rate limit such as \"10/minute\" or "
        '"60/day", or "off"' in lines
    )
    assert (
        "  NAVAI_FUNCTIONS_ENABLED='sure': expected true or false (also 1/0, yes/no, on/off)"
        in (lines)
    )
    assert "  NAVAI_SERVE_GC='fast': expected tuned or python" in lines


@pytest.mark.slow  # starts a Python process
def test_an_unreadable_setting_in_the_env_file_stops_it_too(tmp_path):
    (tmp_path / ".env").write_text("PORT=http\nNAVAI_MAX_BODY_BYTES=1MB\n")
    done = run(["serve"], tmp_path)
    assert done.returncode == 2
    assert "  PORT='http': expected a port number (0 to 65535)" in done.stderr
    assert "  NAVAI_MAX_BODY_BYTES='1MB': expected an integer" in done.stderr


def test_a_legal_but_unwise_setting_is_a_warning_not_a_refusal(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NAVAI_CALL_MAX_SECONDS", "-5")
    monkeypatch.delenv("PORT", raising=False)
    args = cli._parser().parse_args(["serve"])
    cli._check_settings(args)  # no error: problems() reports it once serving


APP = """
from fastapi import FastAPI
from flask import Flask
from navai_core import FunctionRegistry

api = FastAPI()
web = Flask(__name__)
number = 5


def needs(config):
    return FunctionRegistry()


def wrong():
    return "text"
"""


@pytest.mark.slow  # starts a Python process
@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            "main:api",
            "navai: --app main:api is a FastAPI object (from fastapi); navai serve serves a "
            "Navai or a FunctionRegistry (or a function returning one). To serve this "
            "application run uvicorn main:api; or point --app at the Navai it mounts.",
        ),
        ("main:web", "navai: --app main:web is a Flask object (from flask); "),
        ("main:number", "navai: --app main:number is an int object; navai serve serves "),
        ("main:needs", "navai: --app main:needs is a function that needs arguments; "),
        ("main:wrong", "navai: --app main:wrong returned a str object; navai serve serves "),
    ],
)
def test_an_app_of_the_wrong_kind_is_one_line(tmp_path, target: str, expected: str):
    (tmp_path / "main.py").write_text(APP)
    done = run(["serve", "--port", "0", "--app", target], tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(expected)
