"""HTTP adapters for navai: ASGI (Starlette) and WSGI (Werkzeug) apps over navai_core."""
