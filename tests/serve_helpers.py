"""Helpers of the tests that run real ``navai serve`` processes against the fake OpenAI:
start one with an environment, create a call through it, read the summaries of its calls
(its ``on_call_end`` hook appends each to a file)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx2
from conftest import SERVER_KEY, NavaiProcess, hermetic_env
from fakes import FakeOpenAI

APP = """
import json, os
from navai_core import Navai, NavaiConfig

def on_call_end(summary):
    line = {"call_id": summary.call_id, "end_reason": summary.end_reason, "pid": os.getpid()}
    with open(os.environ["SUMMARIES"], "a") as f:
        f.write(json.dumps(line) + "\\n")

navai = Navai(NavaiConfig.from_env(on_call_end=on_call_end))
"""

OFFER = "v=0\r\no=- 77 2 IN IP4 127.0.0.1\r\ns=browser offer\r\n"


def serve(
    tmp_path: Path,
    fake: FakeOpenAI,
    *args: str,
    env: dict[str, str] | None = None,
    name: str = "navai",
) -> NavaiProcess:
    """``navai serve --port 0 *args`` with the fake as OpenAI and a call log in tmp_path."""
    settings = {
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "NAVAI_UPSTREAM_MAX_RETRIES": "0",
        "NAVAI_UPSTREAM_TIMEOUT": "5",
        "NAVAI_RATE_LIMIT_CALLS": "off",
        "NAVAI_RATE_LIMIT_EXECUTE": "off",
        "SUMMARIES": str(tmp_path / "calls.jsonl"),
        **(env or {}),
    }
    workdir = tmp_path / name
    workdir.mkdir(exist_ok=True)
    (workdir / "summaries_app.py").write_text(APP)
    args = ("--app", "summaries_app:navai", *args)
    return NavaiProcess(["--port", "0", *args], hermetic_env(settings), workdir, tmp_path, name)


def start_call(url: str) -> str:
    """A new call through navai (its id)."""
    answer = httpx2.post(
        f"{url}/navai/realtime/calls",
        content=OFFER,
        headers={"Content-Type": "application/sdp"},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    return str(answer.headers["location"].rsplit("/", 1)[1])


def summaries(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)
