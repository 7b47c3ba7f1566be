"""Soak of calls that outlive a worker: several ``navai serve`` processes sharing one Redis.

    .venv/bin/python benchmarks/takeover_soak.py                 # 200 calls, 3 workers, 60 s
    .venv/bin/python benchmarks/takeover_soak.py --calls 20 --seconds 10   # a quick look

It starts a throwaway ``redis-server`` and the fake OpenAI of the tests (``tests/fakes/``, in
this process), then ``--workers`` ``navai serve`` processes on 127.0.0.1 pointed at both
(``NAVAI_RATE_LIMIT_STORAGE=redis://...``, ``NAVAI_CALL_LEASE_SECONDS=--lease``). It creates
``--calls`` calls spread over the workers, then for ``--seconds`` seconds:

- sends each call one function call every ``--every`` seconds and checks each is answered;
- every ``--kill-every`` seconds kills one worker with ``kill -9`` (the one holding the most
  calls), sends each of its calls a function call every 0.25 s until one is answered, then
  starts a new worker in its place.

At the end it checks that every call still answers a function call, that no call ever had two
sidebands open at once (the fake counts them), and that no call was hung up or lost; it
prints the takeovers, the seconds a call's tools were unavailable after its worker died
(from the kill to the first answer to one of those function calls: p50, p99, max), and
the function calls that got the "interrupted" answer. Everything binds 127.0.0.1; every
process is stopped at the end, killed if it does not stop.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx2  # noqa: E402
from fakes import FakeCall, FakeOpenAI, fn_call, sideband  # noqa: E402
from redis_server import RedisServer  # noqa: E402

NAVAI_BIN = Path(sys.executable).with_name("navai")
KEY = "sk-takeover-0123456789"
TOOLS = '''
import asyncio


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def slow(seconds: float) -> str:
    """Wait, then answer."""
    await asyncio.sleep(seconds)
    return "done"
'''


class Worker:
    """One ``navai serve`` process, its output in a file."""

    def __init__(self, name: str, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.log = cwd / f"{name}.log"
        self._file = self.log.open("wb")
        self.process = subprocess.Popen(
            [str(NAVAI_BIN), "serve", "--host", "127.0.0.1", "--port", "0"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )
        self.url = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.output()}")
            found = re.search(r"serving on (http://127\.0\.0\.1:\d+)", self.output())
            if found:
                try:
                    if httpx2.get(f"{found.group(1)}/health", timeout=2).status_code == 200:
                        self.url = found.group(1)
                        return self.url
                except httpx2.TransportError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n{self.output()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._file.close()

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._file.close()
        return self.process.returncode


class Cluster:
    """Redis, the fake OpenAI and ``navai serve`` workers sharing them (all on 127.0.0.1)."""

    def __init__(self, root: Path, *, lease: float = 2.0, **settings: str) -> None:
        self.root = root
        (root / "functions").mkdir(exist_ok=True)
        (root / "functions" / "tools.py").write_text(TOOLS)
        self.redis = RedisServer(root)
        self.fake = FakeOpenAI(key=KEY).start()
        self.env = _env(
            {
                "OPENAI_API_KEY": KEY,
                "OPENAI_BASE_URL": self.fake.base_url,
                "NAVAI_RATE_LIMIT_STORAGE": self.redis.url,
                "NAVAI_CALL_LEASE_SECONDS": str(lease),
                "NAVAI_FUNCTIONS_FOLDERS": "functions",
                "NAVAI_RATE_LIMIT_CALLS": "off",
                "NAVAI_RATE_LIMIT_FUNCTIONS": "off",
                **settings,
            }
        )
        self.workers: list[Worker] = []
        self._names = 0
        # Sidebands open at once per call, and the most ever (the fake runs in this process).
        self.open: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        serve = sideband.serve

        async def counted(state: Any, websocket: Any) -> None:
            call_id = websocket.query_params.get("call_id", "")
            self.open[call_id] = self.open.get(call_id, 0) + 1
            self.peak[call_id] = max(self.peak.get(call_id, 0), self.open[call_id])
            try:
                await serve(state, websocket)
            finally:
                self.open[call_id] -= 1

        self._serve = serve
        sideband.serve = counted  # type: ignore[assignment]

    def start_workers(self, count: int) -> list[Worker]:
        started = []
        for _ in range(count):
            self._names += 1
            started.append(Worker(f"worker{self._names}", self.env, self.root))
        for worker in started:
            worker.wait_ready()
        self.workers += started
        return started

    def create_call(self, worker: Worker) -> FakeCall:
        reply = httpx2.post(
            f"{worker.url}/navai/realtime/calls",
            content=b"v=0\r\n",
            headers={"content-type": "application/sdp"},
            timeout=10,
        )
        if reply.status_code != 201:
            raise RuntimeError(f"call not created: {reply.status_code} {reply.text}")
        call = self.fake.call(reply.headers["location"].rsplit("/", 1)[-1])
        call.wait_for(lambda c: c.connections >= 1 and c._outbox is not None)
        return call

    def owner(self, call_id: str) -> Worker | None:
        """The worker the store names as the call's owner (None between owners)."""
        import redis

        with redis.Redis.from_url(self.redis.url) as client:
            owner = client.hget(f"navai:call:{call_id}", "owner")
        pid = int(owner.decode().split(":")[1]) if owner else 0
        return next((w for w in self.workers if w.pid == pid), None)

    def stored(self, call_id: str) -> dict[str, str]:
        import redis

        with redis.Redis.from_url(self.redis.url, decode_responses=True) as client:
            return dict(client.hgetall(f"navai:call:{call_id}"))

    def close(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.stop()
        self.fake.stop()
        self.redis.stop()
        sideband.serve = self._serve  # type: ignore[assignment]


def answered(call: FakeCall, fc_id: str) -> bool:
    return any(o["call_id"] == fc_id for o in call.outputs())


def tool_round(call: FakeCall, fc_id: str, a: int = 1, b: int = 2) -> None:
    """Send one function call (response ``resp_<fc_id>``)."""
    call.send(fn_call(fc_id, "add", {"a": a, "b": b}, response=f"resp_{fc_id}"))


def _env(extra: dict[str, str]) -> dict[str, str]:
    prefixes = ("NAVAI_", "OPENAI_", "ELEVENLABS_", "AZURE_OPENAI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1", NAVAI_PLAYGROUND="false")
    env.update(extra)
    return env


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)] if ordered else 0.0


def soak(
    root: Path,
    *,
    calls: int,
    workers: int,
    seconds: float,
    kill_every: float,
    every: float,
    lease: float,
) -> dict[str, Any]:
    cluster = Cluster(root, lease=lease)
    try:
        cluster.start_workers(workers)
        live = [cluster.create_call(cluster.workers[i % workers]) for i in range(calls)]
        sent: dict[str, tuple[FakeCall, float]] = {}
        gaps: list[float] = []
        kills = 0
        started = time.monotonic()
        next_kill = started + kill_every
        round_no = 0
        while time.monotonic() - started < seconds:
            round_no += 1
            for i, call in enumerate(live):
                fc = f"fc_{round_no}_{i}"
                sent[fc] = (call, time.monotonic())
                tool_round(call, fc, round_no, i)
            if time.monotonic() >= next_kill:
                victim = max(
                    (w for w in cluster.workers if w.process.poll() is None),
                    key=lambda w: sum(1 for c in live if cluster.owner(c.call_id) is w),
                )
                held = [c for c in live if cluster.owner(c.call_id) is victim]
                victim.kill()
                killed_at = time.monotonic()
                kills += 1
                # Each of its calls gets a function call every 0.25 s until one is answered
                # (one sent while no sideband is attached may be lost, as with OpenAI).
                probes: dict[str, list[str]] = {c.call_id: [] for c in held}
                by_id = {c.call_id: c for c in held}
                deadline = killed_at + lease + 15
                next_probe = 0.0
                while probes and time.monotonic() < deadline:
                    for call_id, ids in list(probes.items()):
                        if any(answered(by_id[call_id], fc) for fc in ids):
                            gaps.append(time.monotonic() - killed_at)
                            del probes[call_id]
                    if time.monotonic() >= next_probe:
                        for call_id, ids in probes.items():
                            ids.append(f"probe_{kills}_{call_id}_{len(ids)}")
                            tool_round(by_id[call_id], ids[-1])
                        next_probe = time.monotonic() + 0.25
                    time.sleep(0.02)
                gaps += [float("inf")] * len(probes)
                cluster.start_workers(1)  # a replacement, as a supervisor would start
                next_kill = killed_at + kill_every
            time.sleep(every)
        # Every call still answers a tool call.
        final = {}
        for i, call in enumerate(live):
            fc = f"final_{i}"
            tool_round(call, fc)
            final[fc] = call
        deadline = time.monotonic() + lease + 15
        while time.monotonic() < deadline and not all(answered(c, f) for f, c in final.items()):
            time.sleep(0.05)
        unanswered_final = [f for f, c in final.items() if not answered(c, f)]
        interrupted = 0
        for call in live:
            for output in call.outputs():
                if "interrupted" in json.loads(output["output"]).get("details", ""):
                    interrupted += 1
        finite = [g for g in gaps if g != float("inf")]
        return {
            "calls": calls,
            "workers": workers,
            "seconds": seconds,
            "lease_seconds": lease,
            "kills": kills,
            "tool_calls_sent": len(sent),
            "tool_calls_answered": sum(1 for f, (c, _) in sent.items() if answered(c, f)),
            "final_unanswered": len(unanswered_final),
            "hung_up": sum(1 for c in live if c.hangups or c.ended),
            "max_open_sidebands_per_call": max(cluster.peak.values(), default=0),
            "sidebands_opened": sum(c.connections for c in live),
            "takeover_gap_s": {
                "n": len(gaps),
                "p50": round(statistics.median(finite), 2) if finite else None,
                "p99": round(_percentile(finite, 0.99), 2) if finite else None,
                "max": round(max(finite), 2) if finite else None,
                "never": len(gaps) - len(finite),
            },
            "interrupted_outputs": interrupted,
        }
    finally:
        cluster.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kill-every", type=float, default=5.0)
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("--lease", type=float, default=2.0)
    args = parser.parse_args(argv)
    if not (1 <= args.calls <= 1000 and 2 <= args.workers <= 8 and args.seconds <= 600):
        parser.error("at most 1000 calls, 2 to 8 workers, 600 s")
    with tempfile.TemporaryDirectory() as tmp:
        result = soak(
            Path(tmp),
            calls=args.calls,
            workers=args.workers,
            seconds=args.seconds,
            kill_every=args.kill_every,
            every=args.every,
            lease=args.lease,
        )
    print(json.dumps(result, indent=2))
    ok = (
        result["final_unanswered"] == 0
        and result["hung_up"] == 0
        and result["max_open_sidebands_per_call"] <= 1
        and result["takeover_gap_s"]["never"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
