"""A real WebRTC answerer for the fake OpenAI calls endpoint: aiortc, on loopback only.

OpenAI's ``POST /v1/realtime/calls`` answers a browser's SDP offer with its own WebRTC peer:
the browser's microphone goes in, the model's voice comes out, and a data channel named
``oai-events`` carries the server events (and the client events the page sends). This module
is that peer for tests, so a real browser gets past offer/answer: ICE connects, DTLS and SCTP
come up, the data channel opens and audio flows both ways.

- :func:`answer` (a coroutine, on any running event loop) takes the offer and returns a
  :class:`WebRTCPeer` whose ``sdp`` is the answer to send back.
- The peer sends a 440 Hz tone as "the model's voice", reads the microphone's frames (counted
  in ``audio_frames``), records every client event of the data channel (``received``) and
  pushes server events with :meth:`WebRTCPeer.send` (thread-safe, queued until the channel
  opens). On open it sends ``session.created``, as OpenAI does.

Loopback only: the answer offers one host candidate, 127.0.0.1 (aioice's host-address lookup
is replaced while the module is in use), no STUN server is asked, the offer's candidates on
other addresses are dropped before aiortc sees them, and datagrams from any address outside
127.0.0.0/8 are ignored, so this peer never sends a packet anywhere but loopback. A browser
must be allowed to use its loopback interface (Chromium: ``--allow-loopback-in-peer-connection``).
"""

from __future__ import annotations

import array
import asyncio
import fractions
import ipaddress
import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

LOOPBACK = "127.0.0.1"
CHANNEL = "oai-events"
RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname (mDNS ``.local``): never resolved here


_patched = False


def _loopback_only() -> None:
    """Make aioice gather 127.0.0.1 only and ignore datagrams from outside loopback."""
    global _patched
    if _patched:
        return
    _patched = True
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [LOOPBACK]  # type: ignore[attr-defined]
    received = aioice.ice.StunProtocol.datagram_received

    def loopback_datagram(self: Any, data: bytes | str, addr: tuple[Any, ...]) -> None:
        if _is_loopback(str(addr[0])):
            received(self, data, addr)

    aioice.ice.StunProtocol.datagram_received = loopback_datagram  # type: ignore[method-assign]


def loopback_candidates(sdp: str) -> str:
    """The SDP without candidates on any address outside loopback."""
    kept = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) < 5 or not _is_loopback(fields[4]):
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n"


class ToneTrack(MediaStreamTrack):
    """The model's voice: a quiet 440 Hz tone, 20 ms frames at 48 kHz, paced in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pts = 0
        self._start: float | None = None
        second = [round(math.sin(2 * math.pi * 440 * i / RATE) * 3000) for i in range(RATE)]
        self._wave = array.array("h", second).tobytes()  # one second, looped

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        offset = (self._pts % RATE) * 2
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(self._wave[offset : offset + FRAME_SAMPLES * 2])
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME_SAMPLES
        return frame


class WebRTCPeer:
    """One answered call: the peer connection, its data channel and what went through."""

    def __init__(self, pc: RTCPeerConnection, loop: asyncio.AbstractEventLoop) -> None:
        self.pc = pc
        self.loop = loop
        self.sdp = ""
        self.channel: Any = None
        self.channel_open = threading.Event()
        self.closed = threading.Event()
        self.received: list[dict[str, Any]] = []  # client events from the data channel
        self.sent: list[dict[str, Any]] = []  # server events sent on it
        self.audio_frames = 0  # microphone frames received
        self._outbox: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # ----- from any thread ----------------------------------------------------------------------

    def send(self, *events: dict[str, Any]) -> None:
        """Push server events on the data channel (queued until it opens)."""
        for event in events:
            self.loop.call_soon_threadsafe(self._send, event)

    def mirror_server_event(self, event: dict[str, Any]) -> None:
        """A server event of the call's sideband: OpenAI sends it on every connection of the
        call, so the browser's data channel sees it too."""
        self.send(event)

    def mirror_client_event(self, event: dict[str, Any]) -> None:
        """A client event the sideband sent: the data channel sees what it causes (a
        ``conversation.item.create`` becomes ``conversation.item.added`` with the item)."""
        if event.get("type") == "conversation.item.create" and isinstance(event.get("item"), dict):
            self.send({"type": "conversation.item.added", "item": event["item"]})

    def close(self) -> None:
        """Hang up: close the peer connection (the browser sees it fail/close)."""
        if not self.loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.aclose(), self.loop)

    def wait_for(self, predicate: Callable[[WebRTCPeer], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out: channel open={self.channel_open.is_set()}, "
                    f"ice={self.pc.iceConnectionState}, frames={self.audio_frames}, "
                    f"received={self.received!r}"
                )
            time.sleep(0.02)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.received) if e.get("type") == kind]

    # ----- on the peer's loop -------------------------------------------------------------------

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.pc.close()
        self.closed.set()

    def _send(self, event: dict[str, Any]) -> None:
        if self.channel is None or self.channel.readyState != "open":
            self._outbox.append(event)
            return
        self.sent.append(event)
        self.channel.send(json.dumps(event))

    def _on_channel(self, channel: Any) -> None:
        if channel.label != CHANNEL:
            return
        self.channel = channel

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            try:
                event = json.loads(message)
            except ValueError:
                event = {"type": "<not json>", "text": str(message)}
            if isinstance(event, dict):
                self.received.append(event)

        def opened() -> None:
            self.channel_open.set()
            self._send({"type": "session.created", "event_id": "event_fake_0", "session": {}})
            pending, self._outbox = self._outbox, []
            for event in pending:
                self._send(event)

        if channel.readyState == "open":
            opened()
        else:
            channel.on("open", opened)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return

        async def drain() -> None:
            try:
                while True:
                    await track.recv()
                    self.audio_frames += 1
            except MediaStreamError:
                return

        task = asyncio.ensure_future(drain())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def answer(offer_sdp: str) -> WebRTCPeer:
    """Answer ``offer_sdp`` with a loopback peer on the running loop (it lives on that loop)."""
    _loopback_only()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: host candidates only
    peer = WebRTCPeer(pc, asyncio.get_running_loop())
    pc.on("datachannel", peer._on_channel)
    pc.on("track", peer._on_track)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            peer.closed.set()

    await pc.setRemoteDescription(
        RTCSessionDescription(sdp=loopback_candidates(offer_sdp), type="offer")
    )
    pc.addTrack(ToneTrack())
    await pc.setLocalDescription(await pc.createAnswer())
    peer.sdp = pc.localDescription.sdp
    return peer
