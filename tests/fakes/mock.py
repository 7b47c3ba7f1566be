"""Upstream HTTP mocked with httpx2's own ``MockTransport``, no mocking library.

``with MockUpstream() as mock:`` routes every request that an ``httpx2.Client`` or
``httpx2.AsyncClient`` would send over the network (navai's own clients included, whichever
thread or loop they run on) to the routes declared with ``mock.post(...)``:

    route = mock.post(URL).mock(return_value=httpx2.Response(200, json={...}))
    route = mock.post(url__startswith=PREFIX).mock(side_effect=httpx2.ConnectError("refused"))
    route.calls.last.request, route.call_count, route.called

A route answers with its ``side_effect`` (an exception, raised; a callable, called with the
request; a list, one item per call) or else its ``return_value`` (a 200 without body when
neither is set). A request that matches no route fails the test (it is answered with an
``AssertionError`` and reported again when the block ends); with ``assert_all_called=True``
a route never called fails it too. The ``upstream_mock`` fixture is a ``MockUpstream`` for the
whole test.

``MockUpstream(openai=state)`` answers a request no declared route takes from the fake
OpenAI's own route table and scripted answers (:class:`fakes.state.OpenAIState`, no socket):
the same replies the loopback fake sends, recorded in ``state.requests``. Delays, trickles
and drops need a socket: use :class:`fakes.FakeOpenAI` for those.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from fakes.state import OpenAIState


class Call:
    def __init__(self, request: httpx2.Request) -> None:
        self.request = request


class Calls(list[Call]):
    @property
    def last(self) -> Call:
        return self[-1]


class Route:
    def __init__(self, method: str, url: str | None, url__startswith: str | None) -> None:
        self.method, self.url, self.prefix = method, url, url__startswith
        self.return_value: httpx2.Response | None = None
        self.side_effect: Any = None
        self.calls = Calls()

    def mock(self, return_value: httpx2.Response | None = None, side_effect: Any = None) -> Route:
        self.return_value, self.side_effect = return_value, side_effect
        if isinstance(side_effect, list):
            self.side_effect = iter(side_effect)
        return self

    @property
    def call_count(self) -> int:
        return len(self.calls)

    @property
    def called(self) -> bool:
        return bool(self.calls)

    def matches(self, request: httpx2.Request) -> bool:
        url = str(request.url)
        return request.method == self.method and (
            url == self.url if self.prefix is None else url.startswith(self.prefix)
        )

    def answer(self, request: httpx2.Request) -> httpx2.Response:
        self.calls.append(Call(request))
        effect = self.side_effect
        if isinstance(effect, Iterator):
            effect = next(effect)
        if isinstance(effect, type) and issubclass(effect, BaseException):
            effect = effect("mocked")
        if isinstance(effect, BaseException):
            if isinstance(effect, httpx2.RequestError):
                effect.request = request
            raise effect
        if callable(effect):
            effect = effect(request)
        response = effect if isinstance(effect, httpx2.Response) else self.return_value
        if response is None:
            return httpx2.Response(200)
        # A fresh copy per call: a response object is read once.
        return httpx2.Response(
            response.status_code, headers=response.headers, content=response.content
        )


class MockUpstream:
    def __init__(
        self, *, assert_all_called: bool = False, openai: OpenAIState | None = None
    ) -> None:
        self.openai = openai
        self.routes: list[Route] = []
        self.unmatched: list[str] = []
        self._assert_all_called = assert_all_called
        self._patch = pytest.MonkeyPatch()

    def post(self, url: str | None = None, *, url__startswith: str | None = None) -> Route:
        return self.route("POST", url, url__startswith)

    def route(self, method: str, url: str | None, url__startswith: str | None) -> Route:
        for route in self.routes:  # declaring a route again updates it
            if (route.method, route.url, route.prefix) == (method, url, url__startswith):
                return route
        route = Route(method, url, url__startswith)
        self.routes.append(route)
        return route

    def _handle(self, request: httpx2.Request) -> httpx2.Response:
        for route in self.routes:
            if route.matches(request):
                return route.answer(request)
        if self.openai is not None:
            return self._fake_answer(self.openai, request)
        self.unmatched.append(f"{request.method} {request.url}")
        raise AssertionError(f"No mocked route for {request.method} {request.url}")

    @staticmethod
    def _fake_answer(state: OpenAIState, request: httpx2.Request) -> httpx2.Response:
        target = request.url.raw_path.decode("latin-1")
        headers = {k.lower(): v for k, v in request.headers.items()}
        recorded = state.record(request.method, target, headers, request.read())
        behaviour = state.behaviour_for(recorded)
        assert not (behaviour.drop or behaviour.delay or behaviour.trickle), (
            "a drop, delay or trickle needs the loopback fake (fakes.FakeOpenAI)"
        )
        reply = behaviour.reply(state, recorded)
        return httpx2.Response(reply.status, headers=reply.headers, content=reply.body)

    def __enter__(self) -> MockUpstream:
        transport = httpx2.MockTransport(self._handle)

        def handle_request(_: httpx2.HTTPTransport, request: httpx2.Request) -> httpx2.Response:
            return transport.handle_request(request)

        async def handle_async_request(
            _: httpx2.AsyncHTTPTransport, request: httpx2.Request
        ) -> httpx2.Response:
            return await transport.handle_async_request(request)

        self._patch.setattr(httpx2.HTTPTransport, "handle_request", handle_request)
        self._patch.setattr(httpx2.AsyncHTTPTransport, "handle_async_request", handle_async_request)
        return self

    def __exit__(self, et: object, exc: object, tb: object) -> None:
        self._patch.undo()
        if et is not None:
            return
        assert self.unmatched == [], f"requests that matched no mocked route: {self.unmatched}"
        if self._assert_all_called:
            idle = [(r.method, r.url or r.prefix) for r in self.routes if not r.called]
            assert idle == [], f"mocked routes never called: {idle}"

    async def __aenter__(self) -> MockUpstream:
        return self.__enter__()

    async def __aexit__(self, et: object, exc: object, tb: object) -> None:
        self.__exit__(et, exc, tb)


@pytest.fixture
def upstream_mock() -> Iterator[MockUpstream]:
    with MockUpstream() as mock:
        yield mock
