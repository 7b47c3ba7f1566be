"""``navai serve --workers 2``: a worker killed with SIGKILL is replaced while the other keeps
serving, and the calls it held are hung up by the parent (nothing left running upstream
without an owner); a worker that dies at once every time is given up, not forked forever;
workers whose parent is killed stop by themselves and hang their calls up."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from conftest import SERVER_KEY
from fakes import FakeOpenAI
from serve_helpers import serve, start_call, summaries, wait_until


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(key=SERVER_KEY) as fake:
        yield fake


def workers_of(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def running(pid: int) -> bool:
    """Whether ``pid`` runs (an exited process nobody has reaped yet, a zombie, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class HealthWatch:
    """GETs /health every 50 ms on a fresh connection; the longest gap between two answers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.last_ok = time.monotonic()
        self.longest_gap = 0.0
        self.answers = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                ok = httpx2.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx2.TransportError:
                ok = False
            now = time.monotonic()
            if ok:
                self.longest_gap = max(self.longest_gap, now - self.last_ok)
                self.last_ok = now
                self.answers += 1
            self.stop.wait(0.05)

    def close(self) -> float:
        self.stop.set()
        self.thread.join(5)
        return max(self.longest_gap, time.monotonic() - self.last_ok)


@pytest.mark.parametrize("wsgi", [False, True], ids=["asgi", "wsgi"])
def test_a_killed_worker_is_replaced_and_its_calls_hung_up(
    tmp_path: Path, fake: FakeOpenAI, wsgi: bool
) -> None:
    process = serve(tmp_path, fake, "--workers", "2", *(["--wsgi"] * wsgi))
    try:
        url = process.wait_ready()
        wait_until(lambda: len(workers_of(process.process.pid)) == 2, what="two workers")
        ids = [start_call(url) for _ in range(6)]
        calls = [fake.call(call_id) for call_id in ids]
        for call in calls:
            call.wait_for(lambda c: c.connections == 1)
        health = HealthWatch(url)
        # Each worker in turn (the second once the first is replaced): every call is held by
        # one of them, so each call is hung up exactly once, by the parent.
        hung_by_kill = []
        for _ in range(2):
            before = workers_of(process.process.pid)
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            wait_until(
                lambda before=before: (
                    len(workers_of(process.process.pid) - before) == 1
                    and len(workers_of(process.process.pid)) == 2
                ),
                what="a new worker",
            )
            wait_until(lambda victim=victim: f"(pid {victim}) was killed" in process.stderr())
            # Each call is held by a live worker (its sideband open) or hung up.
            wait_until(
                lambda: fake.live_sidebands() + sum(1 for c in calls if c.hangups) == len(calls),
                what="the dead worker's calls hung up",
            )
            hung = {c.call_id for c in calls if c.hangups}
            hung_by_kill.append(hung - set().union(*hung_by_kill))
        gap = health.close()
        assert process.process.poll() is None, process.describe()
        assert httpx2.get(f"{url}/health", timeout=2).status_code == 200
    finally:
        code = process.stop()
    assert code == 0, process.describe()
    assert gap < 1.0, f"/health was silent for {gap:.2f} s\n{process.describe()}"
    # /health answered throughout: no silence of 1 s or more (the gap above, which counts the
    # time since the last answer too), however long the kills took on a loaded machine.
    assert health.answers >= 2
    assert [c.hangups for c in calls] == [1] * len(calls), process.describe()
    assert sorted(set().union(*hung_by_kill)) == sorted(ids)
    logs = process.stderr()
    assert "was killed by SIGKILL" in logs
    for call_id in ids:
        assert f"call {call_id} of worker pid" in logs


@pytest.mark.parametrize("wsgi", [False, True], ids=["asgi", "wsgi"])
def test_workers_whose_parent_is_killed_hang_up_their_calls_and_stop(
    tmp_path: Path, fake: FakeOpenAI, wsgi: bool
) -> None:
    """The parent killed with SIGKILL (or by the out-of-memory killer) cannot stop its
    workers: each notices it is gone and stops as on SIGTERM, hanging up the calls it holds
    within its grace (no parent is left to do it), instead of serving on as an orphan; the
    last one removes the parent's folder of held calls."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {"TMPDIR": str(temporary)}
    process = serve(tmp_path, fake, "--workers", "2", *(["--wsgi"] * wsgi), env=env)
    parent = process.process.pid
    workers: set[int] = set()
    try:
        url = process.wait_ready()
        wait_until(lambda: len(workers_of(parent)) == 2, what="two workers")
        workers = workers_of(parent)
        ids = [start_call(url) for _ in range(4)]
        calls = [fake.call(call_id) for call_id in ids]
        for call in calls:
            call.wait_for(lambda c: c.connections == 1)
        os.kill(parent, signal.SIGKILL)
        process.process.wait(10)
        # (Within a poll of the parent, the 10 s grace to end the calls, and some slack.)
        wait_until(
            lambda: not any(running(pid) for pid in workers),
            timeout=15,
            what=f"the orphaned workers to stop\n{process.describe()}",
        )
    finally:
        for pid in workers:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        process.stop()
    assert [c.hangups for c in calls] == [1] * len(calls), process.describe()
    ended = {line["call_id"]: line["end_reason"] for line in summaries(tmp_path)}
    assert ended == dict.fromkeys(ids, "shutdown"), process.describe()
    logs = process.stderr()
    assert logs.count(f"the parent process (pid {parent}) is gone: stopping") == 2, logs
    assert [p.relative_to(temporary) for p in temporary.rglob("*")] == [], logs


@pytest.mark.slow
def test_a_worker_that_dies_at_once_is_given_up(tmp_path: Path, fake: FakeOpenAI) -> None:
    """A worker that dies at start every time: restarted with growing pauses, then given up;
    the parent stops once no worker is left (no fork loop)."""
    (tmp_path / "navai").mkdir()
    (tmp_path / "navai" / "dying_app.py").write_text(
        "import os\n"
        "from navai_core import Navai, NavaiConfig\n"
        "PARENT = os.getpid()\n"
        "def navai():\n"
        "    if os.getpid() != PARENT:\n"
        "        os._exit(3)  # a worker dies while starting\n"
        "    return Navai(NavaiConfig.from_env())\n"
    )
    process = serve(tmp_path, fake, "--workers", "2", "--app", "dying_app:navai")
    started = time.monotonic()
    code = process.process.wait(60)
    took = time.monotonic() - started
    process.stop()
    assert code == 1, process.describe()
    logs = process.stderr()
    assert logs.count("not restarting it") == 2, logs
    assert "no worker left: stopping" in logs
    # Five deaths per worker, with 0.5 + 1 + 2 + 4 s of pauses between them.
    assert logs.count("exited with code 3") == 10, logs
    assert 7 < took < 30, took


@pytest.mark.parametrize("wsgi", [False, True], ids=["asgi", "wsgi"])
def test_a_worker_stopped_while_starting_ends_at_once(
    tmp_path: Path, fake: FakeOpenAI, wsgi: bool
) -> None:
    """SIGTERM to the parent while its workers are still starting stops everything at once,
    even when the worker's start-up code swallows the KeyboardInterrupt (as a weakref callback
    or a broad ``except`` does): a worker the server has not taken over holds no call yet, so
    it does not wait for the parent's SIGKILL, STOP_SECONDS later."""
    (tmp_path / "navai").mkdir()
    (tmp_path / "navai" / "slow_app.py").write_text(
        "import os, time\n"
        "from navai_core import Navai, NavaiConfig\n"
        "PARENT = os.getpid()\n"
        f"MARKS = {str(tmp_path)!r}\n"
        "def navai():\n"
        "    if os.getpid() != PARENT:\n"
        "        open(os.path.join(MARKS, f'starting-{os.getpid()}'), 'w').close()\n"
        "        until = time.monotonic() + 30\n"
        "        while time.monotonic() < until:  # a start-up that swallows Ctrl-C\n"
        "            try:\n"
        "                time.sleep(0.01)\n"
        "            except KeyboardInterrupt:\n"
        "                pass\n"
        "    return Navai(NavaiConfig.from_env())\n"
    )
    wsgi_args = ["--wsgi"] * wsgi
    process = serve(tmp_path, fake, "--workers", "2", "--app", "slow_app:navai", *wsgi_args)
    wait_until(lambda: len(list(tmp_path.glob("starting-*"))) == 2, what="two starting workers")
    # (10 s: well under STOP_SECONDS, after which the parent would kill such a worker.)
    code = process.stop(timeout=10)
    assert code == 0, process.describe()
