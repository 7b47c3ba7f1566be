"""Fakes of the upstreams navai talks to, for tests and benchmarks, all on 127.0.0.1.

One fake of OpenAI: :class:`FakeOpenAI` serves its HTTP API (client secrets, calls and their
accept/reject/refer/hangup, GPT-Live sessions and theirs) and its sideband WebSockets
(Realtime's and Live's ``/attach``) from one state; :class:`MockUpstream`
answers httpx2 requests without a socket (httpx2's ``MockTransport``), from routes a test
declares or, with ``openai=``, from the same route table. ElevenLabs is a subclass of the fake
with its own rule (tests/test_speech_adapters.py).

- :mod:`fakes.shapes`: OpenAI's bodies and events (what every fake answers with);
- :mod:`fakes.routes`: the HTTP route table (add a route here);
- :mod:`fakes.live`: the GPT-Live routes, Live's server events and webhook bodies;
- :mod:`fakes.sideband`: the WebSocket and its scripted replies (add server events here);
- :mod:`fakes.state`: recorded requests, scripted answers, calls;
- :mod:`fakes.server`: the loopback server; :mod:`fakes.mock`: the mock transport.
"""

from fakes.mock import MockUpstream, upstream_mock
from fakes.routes import ROUTES, Reply
from fakes.server import FakeOpenAI
from fakes.shapes import (
    ANSWER_SDP,
    EXPIRES_AT,
    SECRET_PREFIX,
    client_secret_reply,
    default_reply,
    fn_call,
    parse_multipart,
    response_done,
)
from fakes.sideband import SCRIPTS, FakeCall
from fakes.state import Answer, Behaviour, OpenAIState, Recorded
from fakes.util import elapsed, refused_port

__all__ = [
    "ANSWER_SDP",
    "EXPIRES_AT",
    "ROUTES",
    "SCRIPTS",
    "SECRET_PREFIX",
    "Answer",
    "Behaviour",
    "FakeCall",
    "FakeOpenAI",
    "MockUpstream",
    "OpenAIState",
    "Recorded",
    "Reply",
    "client_secret_reply",
    "default_reply",
    "elapsed",
    "fn_call",
    "parse_multipart",
    "refused_port",
    "response_done",
    "upstream_mock",
]
