"""navai's WSGI app on its own, served by waitress when run as a script.

Save it as app.py, then in that folder run ``python app.py`` (waitress on 127.0.0.1:3000),
or a WSGI server's command: ``waitress-serve --listen 127.0.0.1:3000 app:app``.
"""

from navai_adapters.wsgi import create_app
from navai_core import FunctionRegistry, NavaiConfig

tools = FunctionRegistry()


@tools.function
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


app = create_app(config=NavaiConfig.from_env(health_path="/health"), functions=tools)

if __name__ == "__main__":
    from waitress import serve

    serve(app, host="127.0.0.1", port=3000)
