"""The WSGI adapter reads headers from the environ and writes its answer with
``start_response`` itself: what it sees and sends is what Werkzeug's ``EnvironHeaders`` and
``Response`` would (the objects it no longer builds per request)."""

from __future__ import annotations

import io
import wsgiref.validate
from typing import Any

import pytest
from werkzeug.datastructures import EnvironHeaders
from werkzeug.wrappers import Response

from navai_adapters import _common, wsgi
from navai_core import Navai, NavaiConfig, Reply

ENVIRONS = [
    {
        "HTTP_HOST": "example.test",
        "HTTP_COOKIE": "",
        "HTTP_X_API_KEY": "k",
        "HTTP_CONTENT_TYPE": "text/plain",
        "HTTP_CONTENT_LENGTH": "99",
        "CONTENT_TYPE": "",
        "CONTENT_LENGTH": "5",
        "REQUEST_METHOD": "POST",
        "SERVER_NAME": "example.test",
        "wsgi.url_scheme": "http",
    },
    {"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "", "HTTP_ORIGIN": "https://a.test"},
    {"HTTP_CACHE_CONTROL": "", "HTTP_ACCEPT_ENCODING": "gzip, br"},
]


@pytest.mark.parametrize("environ", ENVIRONS)
def test_request_headers_are_those_werkzeug_reads(environ: dict[str, Any]):
    expected = _common.merge_headers(EnvironHeaders(environ).items())
    assert wsgi._headers(environ) == expected
    assert wsgi._headers(environ) == expected  # (the second time from the name cache)


def test_the_header_name_cache_is_bounded():
    for i in range(wsgi._HEADER_NAMES_KEPT + 50):
        wsgi._headers({f"HTTP_X_NAME_{i}": "v"})
    assert len(wsgi._HEADER_NAMES) <= wsgi._HEADER_NAMES_KEPT


def _served(reply: Reply, method: str) -> tuple[str, list[tuple[str, str]], bytes]:
    navai = Navai(NavaiConfig(openai_api_key="sk-test", functions_enabled=False))
    navai.handle = lambda context, body=b"": reply  # type: ignore[method-assign]
    app = wsgiref.validate.validator(wsgi.NavaiWSGIApp(navai))
    started: list[Any] = []
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/navai/health",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    body = app(environ, lambda status, headers, exc_info=None: started.append((status, headers)))
    try:
        content = b"".join(body)
    finally:
        body.close()  # type: ignore[attr-defined]
    return started[0][0], started[0][1], content


def _werkzeug(reply: Reply, method: str) -> tuple[str, list[tuple[str, str]], bytes]:
    status, headers, content = _common.response_parts(reply)
    response = Response(content, status=status, headers=headers)
    if not any(name == "Content-Type" for name, _ in headers):
        del response.headers["Content-Type"]
    started: list[Any] = []
    body = response({"REQUEST_METHOD": method}, lambda s, h, e=None: started.append((s, h)))
    return started[0][0], started[0][1], b"".join(body)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, {"ok": True}),
        Reply(404, {"error": "Not found."}, (("Cache-Control", "no-store"),)),
        Reply(204, None, (("Access-Control-Allow-Origin", "https://a.test"),)),
        Reply(
            201,
            None,
            (("Location", "/navai/realtime/calls/rtc_1"),),
            encoded=b"v=0\r\n",
            content_type="application/sdp",
        ),
        Reply(599, {"error": "odd"}),
        Reply(304, {"error": "from a hook"}),
    ],
    ids=["200", "404", "204", "201-sdp", "unknown-status", "304"],
)
def test_answers_are_those_werkzeug_would_send(reply: Reply, method: str):
    status, headers, content = _served(reply, method)
    w_status, w_headers, w_content = _werkzeug(reply, method)
    assert status == w_status
    assert sorted(headers) == sorted(w_headers)
    assert content == w_content
