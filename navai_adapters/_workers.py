"""``navai serve --workers N``: the parent process that forks the workers and keeps them.

The workers accept on one listening socket the parent opened. The parent serves nothing
itself; it

- restarts a worker that dies (``kill -9``, out of memory, a crash) at once, while the others
  keep serving; a worker that dies within ``QUICK_SECONDS`` of its start is restarted after a
  growing pause (``BACKOFF``), and after ``MAX_QUICK_DEATHS`` such deaths in a row it is not
  restarted any more (a clear error line; the server stops once no worker is left);
- hangs up the calls a dead worker held: each worker records the calls it holds in a file of
  a private folder the parent made (:class:`~navai_core.calls.registry.FileCallRegistry`);
  when the worker is gone, the parent reads the file and hangs each call up through OpenAI
  with the backend key (the configured runtime's hangup), then removes the file. With a
  shared store (Redis) the workers record nothing there: another worker takes a dead one's
  calls over (CONTRACT §13), so the parent must not hang them up;
- on Ctrl-C/SIGTERM, stops every worker (SIGTERM: each ends its calls within its grace),
  kills one still there after ``STOP_SECONDS``, and hangs up what a killed worker held.

A parent that is killed itself (SIGKILL, the out-of-memory killer) can do none of this. Each
worker checks every ``PARENT_POLL_SECONDS`` that its parent is still there, as gunicorn's
workers do: once it is gone the worker sends itself SIGTERM, and stops as when the parent
stops it, ending (hanging up) its calls within its grace, since no parent is left to hang
them up; the last one removes the parent's folder. (A watcher thread comparing
``os.getppid()`` with the parent's pid rather than Linux's ``PR_SET_PDEATHSIG``: it works on
every POSIX system, not only Linux, and it watches the parent process, where the death
signal fires when the parent's forking *thread* ends.)

A call created with a request's own key (``NAVAI_ALLOW_FRONTEND_API_KEY``) cannot be hung
up with the backend key: its file holds only a fingerprint of that key, never the key; such a
call is logged and ends at OpenAI's own limit.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from navai_core.calls import registry
from navai_core.upstream.providers import realtime_target
from navai_core.upstream.send import new_client, send

if TYPE_CHECKING:
    from navai_core import Navai

logger = logging.getLogger("navai")

#: A worker that dies sooner than this after its start died "quickly".
QUICK_SECONDS = 10.0
#: Seconds before restarting a worker after its 1st, 2nd, ... quick death in a row.
BACKOFF = (0.5, 1.0, 2.0, 4.0)
#: Quick deaths in a row after which a worker is not restarted.
MAX_QUICK_DEATHS = len(BACKOFF) + 1
#: Seconds the workers get to stop (each ends its calls in its own grace, 10 s) before SIGKILL.
STOP_SECONDS = 15.0
#: Hangups sent at once for the calls of a dead worker.
HANGUP_THREADS = 8
#: How often a worker checks that its parent is still there (seconds).
PARENT_POLL_SECONDS = 1.0
_POLL_SECONDS = 0.1
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@dataclass
class _Slot:
    """One of the N workers, across its restarts."""

    number: int
    pid: int = 0
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None
    given_up: bool = False


class Supervisor:
    """Runs ``count`` workers, each ``serve(held)`` in a forked process (see the module):
    ``held`` records the calls the worker's Navai holds (``navai.calls.held_calls``)."""

    def __init__(
        self, count: int, serve: Callable[[registry.CallRegistry], None], navai: Navai
    ) -> None:
        self.slots = [_Slot(n) for n in range(1, count + 1)]
        self.serve = serve
        self.navai = navai  # (the parent's: its configuration says how to hang up)
        self.folder = Path(tempfile.mkdtemp(prefix="navai-workers-"))  # mode 0700
        self.dead: list[int] = []  # pids whose calls are still to be hung up

    def run(self) -> int:
        """Serve until Ctrl-C/SIGTERM (0), or until every worker was given up (1)."""
        try:
            for slot in self.slots:
                self._start(slot)
            while any(not slot.given_up for slot in self.slots):
                if not self._step():
                    time.sleep(_POLL_SECONDS)
            logger.error("no worker left: stopping")
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            self._stop()
            shutil.rmtree(self.folder, ignore_errors=True)

    # ----- one turn of the loop ---------------------------------------------------------------

    def _step(self) -> bool:
        """Reap dead workers, start the due ones, hang up the dead ones' calls; whether
        anything happened."""
        busy = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            busy = True
            self._died(pid, status)
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and now >= slot.restart_at:
                busy = True
                self._start(slot)
        if self.dead:  # (after the restarts: a new worker serves while the calls are hung up)
            busy = True
            self._hang_up_dead()
        return busy

    def _died(self, pid: int, status: int) -> None:
        slot = next((s for s in self.slots if s.pid == pid), None)
        if slot is None:
            return
        slot.pid = 0
        self.dead.append(pid)
        code = os.waitstatus_to_exitcode(status)
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
        uptime = time.monotonic() - slot.started
        if uptime >= QUICK_SECONDS:
            slot.quick_deaths = 0
        else:
            slot.quick_deaths += 1
        if slot.quick_deaths >= MAX_QUICK_DEATHS:
            slot.given_up = True
            logger.error(
                "worker %d (pid %d) %s: it died %d times in a row within %.0f s of starting; "
                "not restarting it (see the errors above)",
                slot.number,
                pid,
                how,
                slot.quick_deaths,
                QUICK_SECONDS,
            )
            return
        pause = BACKOFF[slot.quick_deaths - 1] if slot.quick_deaths else 0.0
        logger.warning(
            "worker %d (pid %d) %s after %.1f s; starting another%s",
            slot.number,
            pid,
            how,
            uptime,
            f" in {pause:g} s" if pause else "",
        )
        slot.restart_at = time.monotonic() + pause

    # ----- starting a worker ------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        # (Signals wait until the pid is recorded: a Ctrl-C just after the fork must not
        # leave a worker the parent does not know.)
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        parent = os.getpid()
        try:
            pid = os.fork()
            if pid == 0:
                self._worker(parent)  # never returns
            slot.pid, slot.started = pid, time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def _worker(self, parent: int) -> None:
        """In the forked worker: record its calls where the parent finds them, serve; stop
        once ``parent`` (its pid) is gone."""

        def exit_at_once(signum: int, frame: object) -> None:
            try:
                self._orphan_leaves(parent)
            finally:
                _exit_at_once(signum, frame)

        code = 0
        try:
            for stop in _STOP_SIGNALS:  # until the server takes the signals over
                signal.signal(stop, exit_at_once)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            held = registry.FileCallRegistry(str(self._calls_file(os.getpid())))
            _watch_parent(parent)
            self.serve(held)
            held.close()  # (left when calls were still held: the parent hangs them up)
        except KeyboardInterrupt:
            pass
        except BaseException:
            logger.exception("worker failed")
            code = 1
        finally:
            try:
                self._orphan_leaves(parent)
            finally:
                os._exit(code)

    def _orphan_leaves(self, parent: int) -> None:
        """A worker whose parent is gone, as it exits: remove its file when it holds no call
        any more, and the folder once it is empty (the parent cannot any more)."""
        if os.getppid() == parent:
            return
        path = self._calls_file(os.getpid())
        if not registry.read_held(str(path)):
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):  # (not empty yet: another worker's file)
            self.folder.rmdir()

    def _calls_file(self, pid: int) -> Path:
        return self.folder / f"worker-{pid}.calls"

    # ----- the calls of dead workers ---------------------------------------------------------

    def _hang_up_dead(self) -> None:
        while self.dead:
            pid = self.dead[0]
            path = self._calls_file(pid)
            calls = registry.read_held(str(path))
            if calls:
                hang_up(self.navai, calls, f"worker pid {pid}")
            with contextlib.suppress(OSError):
                path.unlink()
            self.dead.pop(0)

    # ----- stopping ---------------------------------------------------------------------------

    def _stop(self) -> None:
        # (A second Ctrl-C while stopping kills the workers at once; their calls are still
        # hung up from their files.)
        pids = [slot.pid for slot in self.slots if slot.pid]
        _signal(pids, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        try:
            while pids and time.monotonic() < deadline:
                for pid in list(pids):
                    with contextlib.suppress(ChildProcessError):
                        if os.waitpid(pid, os.WNOHANG)[0] == 0:
                            continue
                    pids.remove(pid)
                    self.dead.append(pid)
                time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        _signal(pids, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.dead.append(pid)
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            self._hang_up_dead()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def hang_up(navai: Navai, calls: list[registry.HeldCall], whose: str) -> None:
    """Hang ``calls`` up through OpenAI with the backend key (``whose`` held them)."""
    config = navai.config
    try:
        target = realtime_target(config)
    except Exception as exc:
        logger.error("%d call(s) of %s cannot be hung up: %s", len(calls), whose, exc)
        return
    mine = registry.key_fingerprint(target.key)
    for call in calls:
        if call.key_fingerprint != mine:
            logger.warning(
                "call %s of %s was created with another key than the backend key: navai "
                "cannot hang it up (it ends at OpenAI's own limit)",
                call.call_id,
                whose,
            )
    ids = [call.call_id for call in calls if call.key_fingerprint == mine]
    if not ids:
        return
    client = new_client(config.upstream_timeout_seconds)

    def one(call_id: str) -> None:
        try:
            request = navai.calls.runtime.hangup_request(target, call_id)  # Realtime or Live
            reply = send(client, request, navai.retry_policy)
        except Exception as exc:
            logger.warning("hanging up call %s of %s failed: %s", call_id, whose, exc)
            return
        if 200 <= reply.status <= 299 or reply.status == 404:
            logger.info("call %s of %s hung up (its worker is gone)", call_id, whose)
        else:
            logger.warning(
                "hanging up call %s of %s: OpenAI answered %s", call_id, whose, reply.status
            )

    try:
        with concurrent.futures.ThreadPoolExecutor(min(HANGUP_THREADS, len(ids))) as pool:
            list(pool.map(one, ids))
    finally:
        client.close()


def _exit_at_once(signum: int, frame: object) -> None:
    """A stop signal in a worker the server has not taken over, or re-raised by uvicorn once
    it has shut down: exit now. (A KeyboardInterrupt could be lost here, in a weakref callback
    or a broad ``except`` of the app's start-up code, and the worker would serve on until the
    parent's SIGKILL.) A starting worker holds no call, with one exception: under ``--wsgi``
    with a shared store, its first takeover scan runs before waitress serves, and a call it
    claimed in that moment is not handed back; its lease lapses again and another worker takes
    it over. What it held otherwise is the parent's to hang up."""
    os._exit(0)


def _watch_parent(parent: int) -> None:
    """In a worker: once ``parent`` (its pid) is gone, stop as on SIGTERM (see the module).
    The handler in place then decides how: at once before the server has taken the signals
    over (no call held yet), else the server's graceful stop."""

    def watch() -> None:
        while os.getppid() == parent:  # (for the worker's life: a daemon thread)
            time.sleep(PARENT_POLL_SECONDS)
        logger.warning(
            "worker pid %d: the parent process (pid %d) is gone: stopping", os.getpid(), parent
        )
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="navai-parent-watch", daemon=True).start()


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


__all__ = [
    "BACKOFF",
    "MAX_QUICK_DEATHS",
    "PARENT_POLL_SECONDS",
    "QUICK_SECONDS",
    "STOP_SECONDS",
    "Supervisor",
    "hang_up",
]
