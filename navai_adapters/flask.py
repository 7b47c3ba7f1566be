"""navai as a Flask extension: its routes are Flask views, in a blueprint named ``navai``.

    NavaiFlask(app, navai, url_prefix="/voice")        # or, with an app factory:
    voice = NavaiFlask(navai=navai); voice.init_app(app, url_prefix="/voice")

Because navai's routes are ordinary Flask views, the app's ``before_request`` /
``after_request`` hooks, its session, ``flask.request``, ``flask.g`` and its error handlers
apply to them (``request.blueprint == "navai"`` tells a hook it is one of them). Each view
only translates: it hands the body and a :class:`~navai_core.RequestContext` (``raw`` is
Flask's request) to :meth:`navai_core.Navai.handle` and returns its reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import flask

from navai_core import Navai, NavaiConfig

from ._common import (
    StreamBody,
    filled_path,
    framework_path,
    get_navai,
    internal_error,
    read_limited,
    response_parts,
)
from .wsgi import request_context

if TYPE_CHECKING:
    from collections.abc import Callable

    from navai_core._navai import Route
    from navai_core.functions.registry import FunctionRegistry

__all__ = ["NavaiFlask", "navai_blueprint"]

# The core answers OPTIONS (CORS preflight) and 405 for these itself.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class _Response(flask.Response):
    default_mimetype = None  # the Content-Type comes from the reply (none on a 204)


def navai_blueprint(navai: Navai, name: str = "navai") -> flask.Blueprint:
    """A blueprint with one view per navai route (endpoints ``navai.execute``, ...).

    Register it with ``app.register_blueprint(bp, url_prefix=...)``; :class:`NavaiFlask`
    does that and logs navai's start-up report.
    """
    blueprint = flask.Blueprint(name, __name__)
    for route in navai.routes:
        blueprint.add_url_rule(
            framework_path(route.path, "<", ">"),
            endpoint=route.name,
            view_func=_view(navai, route),
            methods=METHODS,
            provide_automatic_options=False,
        )
    return blueprint


def _view(navai: Navai, route: Route) -> Callable[..., flask.Response]:
    def view(**params: str) -> flask.Response:
        # The request itself, not the proxy: context.raw outlives the request context.
        request: flask.Request = flask.request._get_current_object()  # type: ignore[attr-defined]
        path = filled_path(route.path, params)
        context = attrs.evolve(request_context(request), path=path)

        def body(limit: int) -> bytes:
            # Read by the core once its hooks and rate limits have passed. A Flask hook may
            # already have read it (request.get_json()): then it is cached.
            return read_limited(request.stream.read, limit) or request.get_data()

        try:
            reply = navai.handle(context, body)
            if reply.stream is not None:  # sent as it is produced (a call's events)
                status, headers, _ = response_parts(attrs.evolve(reply, encoded=b""))
                return _Response(StreamBody(reply.stream), status=status, headers=headers)
            status, headers, content = response_parts(reply)
        except Exception:  # a client gone while its body was read: still a JSON answer
            status, headers, content = internal_error()
        return _Response(content, status=status, headers=headers)

    view.__name__ = f"navai_{route.name}"
    return view


class NavaiFlask:
    """The Flask extension: ``NavaiFlask(app, navai)`` or ``NavaiFlask(navai=navai)`` then
    ``init_app(app)``.

    Pass a :class:`Navai`, or a ``config`` and/or ``functions`` registry to build one
    (default: ``NavaiConfig.from_env()``). ``init_app`` registers the ``navai`` blueprint
    under ``url_prefix``, stores the instance in ``app.extensions["navai"]`` and logs the
    start-up report (building the function registry unless ``load_functions_at_startup``
    is false).
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        navai: Navai | None = None,
        *,
        config: NavaiConfig | None = None,
        functions: FunctionRegistry | None = None,
        url_prefix: str | None = None,
        load_functions_at_startup: bool = True,
    ) -> None:
        self.navai = get_navai(navai, config, functions)
        self.url_prefix = url_prefix
        self.load_functions_at_startup = load_functions_at_startup
        self.blueprint = navai_blueprint(self.navai)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask, *, url_prefix: str | None = None) -> None:
        app.register_blueprint(self.blueprint, url_prefix=url_prefix or self.url_prefix)
        app.extensions["navai"] = self.navai
        self.navai.log_startup(load_functions=self.load_functions_at_startup)
