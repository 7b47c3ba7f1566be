"""The fake OpenAI in the foreground, to try navai without an OpenAI key.

From the repository root (with ``pip install -e '.[dev]'``: the fake's WebRTC peer is aiortc)::

    .venv/bin/python examples/fake_openai.py --demo      # or: PYTHONPATH=tests python -m fakes

It serves the test suite's :class:`~fakes.FakeOpenAI` on ``127.0.0.1`` (port 3001 unless
``--port``; 0 picks a free one), accepts any key, answers each call's WebRTC offer with a real
peer on loopback (a browser's call connects; the "model's voice" is a quiet tone), and prints the
line that runs ``navai serve`` against it. ``--demo`` plays a short turn once a call's data
channel is open (:mod:`fakes.demo`): the caller's words, a call of one function (``get_weather``
of examples/functions unless ``--function``/``--arguments``), and the assistant's words with its
result. Ctrl-C (or SIGTERM) ends the open calls and stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fakes import demo
from fakes.server import FakeOpenAI
from fakes.sideband import FakeCall

REPO = Path(__file__).resolve().parents[2]
PORT = 3001
KEY = "sk-fake"  # what the printed line sets; the fake accepts any key


def say(line: str) -> None:
    print(line, flush=True)


class ForegroundFake(FakeOpenAI):
    """The fake, saying what happens to each call, and playing ``turn`` on it when set."""

    def __init__(self, *, port: int, webrtc: bool, turn: demo.Turn | None) -> None:
        super().__init__(webrtc=webrtc, port=port)
        self.turn = turn
        self._tasks: set[Any] = set()

    def new_call(self, sdp: str, session: dict[str, Any], authorization: str) -> FakeCall:
        call = super().new_call(sdp, session, authorization)
        tools = [t.get("name") for t in session.get("tools") or [] if isinstance(t, dict)]
        say(f"{call.call_id}: call created (tools offered: {', '.join(map(str, tools)) or 'none'})")
        if self.turn is not None:
            task = demo.attach(call, self.turn, say)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return call

    def end_calls(self) -> None:
        for call in list(self.calls.values()):
            if not call.ended:
                call.end()


def shown(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it, quoted for a shell."""
    with contextlib.suppress(ValueError):
        path = path.relative_to(Path.cwd())
    return shlex.quote(str(path))


def navai_line(base_url: str) -> str:
    """The shell line that runs ``navai serve`` (this interpreter's) against the fake, with the
    example functions, from the working directory."""
    navai = Path(sys.executable).with_name("navai")
    command = shown(navai) if navai.exists() else "navai"
    functions = shown(REPO / "examples" / "functions")
    return (
        f"OPENAI_API_KEY={KEY} OPENAI_BASE_URL={base_url} "
        f"NAVAI_FUNCTIONS_FOLDERS={functions} {command} serve"
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fake_openai",
        description="The test suite's fake OpenAI on 127.0.0.1, to try navai without a key.",
    )
    parser.add_argument("--port", type=int, default=PORT, help=f"default {PORT}; 0: a free one")
    parser.add_argument(
        "--demo", action="store_true", help="play a scripted turn once a call's data channel opens"
    )
    parser.add_argument("--function", default=demo.FUNCTION, help="the function the demo calls")
    parser.add_argument(
        "--arguments", default=json.dumps(demo.ARGUMENTS), help="its arguments, a JSON object"
    )
    parser.add_argument("--user", default=demo.USER, help="what the caller says in the demo")
    parser.add_argument(
        "--no-webrtc",
        action="store_true",
        help="answer offers with a canned SDP (no aiortc needed; a browser cannot connect)",
    )
    args = parser.parse_args(argv)
    try:
        arguments = json.loads(args.arguments)
    except ValueError as exc:
        parser.error(f"--arguments is not JSON: {exc}")
    if not isinstance(arguments, dict):
        parser.error("--arguments must be a JSON object")
    if not args.no_webrtc:
        try:
            import fakes_webrtc  # noqa: F401  (aiortc)
        except ImportError as exc:
            parser.error(f"{exc}: install the dev extra (pip install -e '.[dev]') or --no-webrtc")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    turn = demo.Turn(args.user, args.function, args.arguments) if args.demo else None
    try:
        fake = ForegroundFake(port=args.port, webrtc=not args.no_webrtc, turn=turn)
    except OSError as exc:
        say(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror} (try --port 0)")
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    fake.start()
    peer = "a WebRTC peer on 127.0.0.1" if fake.webrtc else "a canned SDP"
    say(f"fake OpenAI on {fake.base_url} (any key; call offers answered by {peer})")
    if turn is not None:
        say(f"demo: once a call's data channel opens: {turn.function} {turn.arguments}")
    say("run navai against it, in another terminal in this folder:")
    say(f"    {navai_line(fake.base_url)}")
    say("then open http://127.0.0.1:3000/ and start a call. Ctrl-C stops the fake.")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        fake.end_calls()
        time.sleep(0.3)  # the hangups' close frames go out
        fake.stop()
    say("fake OpenAI stopped")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "tests"))  # fakes_webrtc, beside the package
    raise SystemExit(main())
