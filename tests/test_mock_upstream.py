"""The test helper that stands in for upstreams is as strict as the tests need: a request no
route expects, or an expected route never called, fails the test."""

from __future__ import annotations

import asyncio

import httpx2
import pytest
from fakes import MockUpstream

URL = "https://upstream.invalid/v1/x"


def test_a_request_no_route_expects_fails_even_when_the_caller_swallows_it():
    with pytest.raises(AssertionError, match="matched no mocked route"), MockUpstream() as mock:
        mock.post(URL)
        with httpx2.Client() as client, pytest.raises(AssertionError):
            client.get(URL)  # the wrong method


def test_a_route_never_called_fails_when_asked():
    with (
        pytest.raises(AssertionError, match="never called"),
        MockUpstream(assert_all_called=True) as mock,
    ):
        mock.post(URL)
    with MockUpstream(assert_all_called=True) as mock:
        mock.post(url__startswith="https://upstream.invalid/")
        assert httpx2.post(URL + "?q=1").status_code == 200


def test_side_effects_and_calls_on_sync_and_async_clients():
    async def send_async() -> int:
        async with httpx2.AsyncClient() as client:
            return (await client.post(URL, content=b"a")).status_code

    with MockUpstream() as mock:
        route = mock.post(URL).mock(
            side_effect=[httpx2.Response(503), httpx2.ConnectError("refused")]
        )
        assert asyncio.run(send_async()) == 503
        with pytest.raises(httpx2.ConnectError):
            httpx2.post(URL, content=b"b")
        route.mock(return_value=httpx2.Response(201, json={"ok": True}))
        assert httpx2.post(URL).json() == {"ok": True}
        assert httpx2.post(URL).json() == {"ok": True}  # a fresh response per call
    assert route.call_count == 4
    assert [c.request.content for c in route.calls[:2]] == [b"a", b"b"]
    assert route.calls.last.request.method == "POST"
