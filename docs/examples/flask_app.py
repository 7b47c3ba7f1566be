"""navai inside a Flask app, mounted under /voice with Werkzeug's dispatcher.

Run it from the repository root with any WSGI server, for example:

    waitress-serve --listen 127.0.0.1:3000 docs.examples.flask_app:app

and point the voice client at http://localhost:3000/voice.
"""

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from navai_adapters.wsgi import create_app
from navai_core import FunctionRegistry, Navai, NavaiConfig

tools = FunctionRegistry()


@tools.function
async def convert_currency(amount: float, rate: float = 4000.0) -> float:
    """Convert US dollars to Colombian pesos at a given rate."""
    return round(amount * rate, 2)  # async functions work under WSGI too


navai = Navai(NavaiConfig.from_env(), functions=tools)

app = Flask(__name__)
app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/voice": create_app(navai)})


@app.get("/")
def home() -> dict[str, str]:
    return {"app": "my flask site"}
