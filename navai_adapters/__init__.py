"""HTTP adapters for navai: ASGI (Starlette) and WSGI (Werkzeug) apps over navai_core.

Import the module for your interface; this package itself imports no web framework, so
installing only one extra (``asgi``, ``wsgi``, ``fastapi``, ``flask``, ``django``) is enough.

- :mod:`navai_adapters.asgi` — ``create_app``, ``routes``, ``lifespan``, ``NavaiEndpoint``,
  ``request_context`` (Starlette, FastAPI, any ASGI server);
- :mod:`navai_adapters.wsgi` — ``create_app``, ``NavaiWSGIApp``, ``request_context``
  (Flask, Django, any WSGI server);
- :mod:`navai_adapters.fastapi` — ``navai_router`` (an ``APIRouter``: navai in FastAPI's
  OpenAPI document, behind its dependencies);
- :mod:`navai_adapters.flask` — ``NavaiFlask`` / ``navai_blueprint`` (navai's routes as
  Flask views);
- :mod:`navai_adapters.django` — ``navai_urls`` (for ``include()``; WSGI and ASGI Django);
- :mod:`navai_adapters.cli` — the ``navai serve`` command (uvicorn or waitress).
"""

__all__: list[str] = []
