"""Benchmark of server-controlled calls: one ``navai serve`` process holding many sidebands.

    .venv/bin/python benchmarks/sidebands.py                      # 1,000 calls, 20 s of load
    .venv/bin/python benchmarks/sidebands.py --calls 50 --seconds 3   # a quick look
    .venv/bin/python benchmarks/sidebands.py --runtime live            # GPT-Live sessions

It starts the fake OpenAI of the tests (``tests/fakes/``, in this process)
and ``navai serve`` (ASGI on uvicorn; ``--wsgi`` for waitress) pointed at it, with one trivial
backend function. It then:

1. creates ``--calls`` calls through ``POST /navai/realtime/calls`` (navai attaches a sideband
   to each) and measures navai's resident memory before and after: memory per idle call;
2. for ``--seconds`` seconds, sends each call one function call a second (spread over the
   second) and measures the turnaround from the fake sending
   ``response.function_call_arguments.done`` to it receiving navai's ``function_call_output``
   (both instants taken in the fake's thread): p50, p99, max. With ``--runtime live``
   (``NAVAI_CALL_RUNTIME=live``) the calls are GPT-Live sessions (``POST /v1/live/sessions``,
   the sideband on ``/attach``) and each function call is Live's nested
   ``response.event`` (``response.output_item.done``) followed by ``response.completed``; the
   turnaround runs to navai's ``response.item.create``;
3. stops navai with SIGTERM (it hangs every call up) and checks every call was hung up.

The call record is on (CONTRACT section 12): each second's function call comes with what the
caller said (``conversation.item.input_audio_transcription.completed``), the model's answer
(``response.output_audio_transcript.done``) and full token usage on ``response.done``, and
``NAVAI_CALL_LOG`` gets each call's line at the hang-up: the benchmark prints the log's bytes
per call. ``--no-transcripts`` sends the function calls alone (the earlier load).

It also prints the CPU navai and this process (the fake and the load) used during the load,
and the machine's load average at the start: the two processes share the machine's cores.
During the load this process's own garbage collector is off (after ``gc.freeze()``): the
fake keeps every event it receives, and its collections (up to 250 ms in a 60 s run) would
stop it between taking a send instant and reading the answer, adding its own pauses to
navai's turnaround. ``--fake-gc`` leaves it on.

Everything binds 127.0.0.1; the server is killed if it does not stop in 60 s.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import httpx2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakes import FakeOpenAI  # noqa: E402
from fakes.live import function_call, response_completed  # noqa: E402

KEY = "sk-bench-not-a-real-key"
USER_DONE = "conversation.item.input_audio_transcription.completed"
ANSWER_DONE = "response.output_audio_transcript.done"
SAID = "Where is my order? It was due on Tuesday."
ANSWERED = "It shipped yesterday and arrives tomorrow."
USAGE = {
    "total_tokens": 300,
    "input_tokens": 200,
    "output_tokens": 100,
    "input_token_details": {
        "text_tokens": 40,
        "audio_tokens": 160,
        "cached_tokens": 32,
        "cached_tokens_details": {"text_tokens": 32, "audio_tokens": 0},
    },
    "output_token_details": {"text_tokens": 20, "audio_tokens": 80},
}
NAVAI = Path(sys.executable).with_name("navai")
OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=bench\r\n"
TOOLS = '''
def ping(n: int) -> int:
    """Return n."""
    return n
'''
ASYNC_TOOLS = TOOLS.replace("def ping", "async def ping")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_navai(
    fake: FakeOpenAI,
    folder: Path,
    wsgi: bool,
    log: Path | None,
    gc_mode: str = "tuned",
    runtime: str = "realtime",
    call_log: Path | None = None,
) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAVAI_", "OPENAI_"))}
    env.update(
        OPENAI_API_KEY=KEY,
        OPENAI_BASE_URL=fake.base_url,
        NAVAI_FUNCTIONS_BASE_DIR=str(folder),
        NAVAI_FUNCTIONS_FOLDERS="functions",
        NAVAI_RATE_LIMIT_CALLS="off",
        NAVAI_UPSTREAM_MAX_RETRIES="0",
        NAVAI_CALL_RUNTIME=runtime,
        PYTHONUNBUFFERED="1",
    )
    if call_log is not None:
        env["NAVAI_CALL_LOG"] = str(call_log)
    args = [str(NAVAI), "serve", "--port", "0", "--gc", gc_mode, *(["--wsgi"] if wsgi else [])]
    process = subprocess.Popen(
        args,
        env=env,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=log.open("w") if log else subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "serving on " in line:
            # Keep reading (uvicorn's access log goes to stdout): a pipe nobody reads fills
            # up (64 KB, some 800 requests) and the server then blocks writing its log line.
            threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
            return process, line.split("serving on ")[1].split()[0]
    process.kill()
    raise RuntimeError("navai serve did not start")


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--wsgi", action="store_true")
    parser.add_argument(
        "--runtime",
        choices=("realtime", "live"),
        default="realtime",
        help="NAVAI_CALL_RUNTIME: Realtime calls or GPT-Live sessions (default %(default)s)",
    )
    parser.add_argument(
        "--gc",
        choices=("tuned", "python"),
        default="tuned",
        help="navai serve's --gc: its garbage collector set-up (default %(default)s)",
    )
    parser.add_argument(
        "--fake-gc",
        action="store_true",
        help="leave this process's garbage collector on during the load (see above)",
    )
    parser.add_argument(
        "--async-tool",
        action="store_true",
        help="the function is ``async def ping`` (no hop to a function thread)",
    )
    parser.add_argument(
        "--no-transcripts",
        action="store_true",
        help="send only the function calls (no transcript events, no usage)",
    )
    parser.add_argument("--log", type=Path, help="write navai's log (stderr) to this file")
    parser.add_argument(
        "--samples", type=Path, help="write each turnaround (sent at, ms) to this CSV file"
    )
    args = parser.parse_args()

    load_average = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(key=KEY) as fake:
        folder = Path(tmp)
        (folder / "functions").mkdir()
        (folder / "functions" / "tools.py").write_text(ASYNC_TOOLS if args.async_tool else TOOLS)
        call_log = folder / "calls.jsonl"
        process, url = start_navai(
            fake, folder, args.wsgi, args.log, args.gc, args.runtime, call_log
        )
        try:
            with httpx2.Client(base_url=url, timeout=30) as http:
                http.get("/health")
                time.sleep(0.5)
                before = rss_kb(process.pid)

                def create(_: int) -> str:
                    answer = http.post(
                        "/navai/realtime/calls",
                        content=OFFER,
                        headers={"Content-Type": "application/sdp"},
                    )
                    assert answer.status_code == 201, answer.text
                    return answer.headers["location"].rsplit("/", 1)[1]

                started = time.monotonic()
                with ThreadPoolExecutor(8) as pool:
                    ids = list(pool.map(create, range(args.calls)))
                calls = [fake.call(i) for i in ids]
                for call in calls:
                    call.wait_for(lambda c: c.connections >= 1, timeout=60)
                setup = time.monotonic() - started
                time.sleep(1.0)
                idle = rss_kb(process.pid)

                # One function call a second per call, spread over the second.
                gap = 1.0 / len(calls)
                sent = 0
                if not args.fake_gc:
                    gc.collect()
                    gc.freeze()
                    gc.disable()
                navai_cpu, own_cpu = cpu_seconds(process.pid), time.process_time()
                t0 = time.monotonic()
                tick = 0
                while time.monotonic() - t0 < args.seconds:
                    for index, call in enumerate(calls):
                        due = t0 + tick + index * gap
                        delay = due - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        fc = f"fc_{tick}"
                        if args.runtime == "live":
                            call.send(
                                function_call(fc, "ping", {"n": tick}, f"del_{tick}"),
                                response_completed(f"r_{tick}", f"del_{tick}"),
                            )
                            sent += 1
                            continue
                        call.send(
                            {
                                "type": "response.function_call_arguments.done",
                                "response_id": f"r_{tick}",
                                "call_id": fc,
                                "name": "ping",
                                "arguments": json.dumps({"n": tick}),
                            },
                            {
                                "type": "response.done",
                                "response": {
                                    "id": f"r_{tick}",
                                    "status": "completed",
                                    "output": [
                                        {
                                            "type": "function_call",
                                            "call_id": fc,
                                            "name": "ping",
                                            "arguments": "{}",
                                        }
                                    ],
                                    "usage": {} if args.no_transcripts else USAGE,
                                },
                            },
                        )
                        if not args.no_transcripts:
                            # After the function call (see docs/performance.md: an event the
                            # fake sends right after another reaches navai about 40 ms later
                            # on loopback, whatever the event, which would time the fake).
                            call.send(
                                {
                                    "type": USER_DONE,
                                    "item_id": f"u_{tick}",
                                    "content_index": 0,
                                    "transcript": f"{SAID} ({tick})",
                                },
                                {
                                    "type": ANSWER_DONE,
                                    "response_id": f"r2_{tick}",
                                    "transcript": f"{ANSWERED} ({tick})",
                                },
                            )
                        sent += 1
                    tick += 1
                time.sleep(2.0)
                elapsed = time.monotonic() - t0
                navai_cpu = cpu_seconds(process.pid) - navai_cpu
                own_cpu = time.process_time() - own_cpu
                gc.enable()
                loaded = rss_kb(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                code = None
        turnaround = [
            (call.output_at[k] - call.sent_at[k]) * 1000
            for call in calls
            for k in call.sent_at
            if k in call.output_at
        ]
        if args.samples:
            first = min((t for call in calls for t in call.sent_at.values()), default=0.0)
            rows = sorted(
                (call.sent_at[k] - first, (call.output_at[k] - call.sent_at[k]) * 1000)
                for call in calls
                for k in call.sent_at
                if k in call.output_at
            )
            # The origin is time.perf_counter() (the system's monotonic clock on Linux), so
            # that other probes' timestamps can be lined up with the samples.
            lines = [f"# origin {first:.6f}\n", *(f"{t:.4f},{ms:.3f}\n" for t, ms in rows)]
            args.samples.write_text("".join(lines))
        log_bytes = call_log.stat().st_size if call_log.exists() else 0
        logged = len(call_log.read_text().splitlines()) if call_log.exists() else 0
        creates = sum(len(call.of_type("response.create")) for call in calls)
        hung_up = sum(1 for call in calls if call.hangups == 1)
        server = "WSGI on waitress" if args.wsgi else "ASGI on uvicorn"
        print(f"server: {server}, --gc {args.gc}, runtime {args.runtime}, exit {code}")
        print(f"calls: {len(calls)} created and attached in {setup:.1f} s")
        print(
            f"memory: {before / 1024:.1f} MB before, {idle / 1024:.1f} MB with the calls idle "
            f"({(idle - before) / len(calls):.1f} KB per call), {loaded / 1024:.1f} MB after load"
        )
        print(
            f"call log: {logged} records, {log_bytes / max(logged, 1):,.0f} bytes per call "
            f"({'function calls only' if args.no_transcripts else 'with transcripts and usage'})"
        )
        print(f"function calls: {sent} sent, {len(turnaround)} answered, {creates} response.create")
        print(
            f"CPU during the load: navai {100 * navai_cpu / elapsed:.0f}% of a core, the fake "
            f"and the load {100 * own_cpu / elapsed:.0f}%; load average at the start "
            f"{load_average[0]:.2f} (this process's gc {'on' if args.fake_gc else 'off'})"
        )
        if turnaround:
            print(
                f"turnaround ms: p50 {statistics.median(turnaround):.2f}, "
                f"p99 {percentile(turnaround, 0.99):.2f}, max {max(turnaround):.2f}"
            )
        print(f"hung up at shutdown: {hung_up} of {len(calls)}")


if __name__ == "__main__":
    main()
