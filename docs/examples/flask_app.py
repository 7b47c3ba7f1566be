"""navai in a Flask app: its routes under /voice, with Flask's hooks, session and errors.

Save it as app.py, then in that folder (./navai being a clone of navai, see README):

    pip install './navai[flask]'
    waitress-serve --listen 127.0.0.1:3000 app:app

and point the voice client at http://localhost:3000/voice.
"""

from flask import Flask, abort, g, request, session

from navai_adapters.flask import NavaiFlask
from navai_core import FunctionRegistry, Navai, NavaiConfig

tools = FunctionRegistry()


@tools.function
def convert_currency(amount: float, rate: float = 4000.0) -> dict[str, object]:
    """Convert US dollars to Colombian pesos at a given rate."""
    return {"pesos": round(amount * rate, 2), "for": g.user}  # Flask's g, set below


app = Flask(__name__)
app.secret_key = "change-me"  # your real secret here


@app.before_request
def load_user() -> None:
    g.user = session.get("user_id")
    # navai's routes are the "navai" blueprint; a CORS preflight carries no cookie.
    if request.blueprint == "navai" and request.method != "OPTIONS" and g.user is None:
        abort(401)


@app.errorhandler(401)
def unauthorized(error: Exception) -> tuple[dict[str, str], int]:
    return {"error": "Sign in first."}, 401


navai = Navai(NavaiConfig.from_env(), functions=tools)
NavaiFlask(app, navai, url_prefix="/voice")


@app.post("/login")
def login() -> dict[str, bool]:
    session["user_id"] = "ana"  # after checking a password, of course
    return {"ok": True}


@app.get("/")
def home() -> dict[str, str]:
    return {"app": "my flask site"}
