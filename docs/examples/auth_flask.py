"""navai in a Flask app, minting and functions only for signed-in users (Flask's session)."""

from flask import Flask, session
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from navai_adapters.wsgi import create_app
from navai_core import FunctionRegistry, Navai, NavaiConfig, RequestContext

tools = FunctionRegistry()


@tools.function
def my_orders() -> list[str]:
    """The signed-in user's open orders."""
    return ["A-100", "A-101"]


app = Flask(__name__)
app.secret_key = "change-me"  # your real secret here


def signed_in(context: RequestContext) -> bool:
    """navai's hook. navai runs beside Flask (not inside a Flask view), so it reads Flask's
    session cookie through the app's session interface; context.raw is the Werkzeug request."""
    flask_session = app.session_interface.open_session(app, context.raw)
    return bool(flask_session and flask_session.get("user_id"))


navai = Navai(
    NavaiConfig.from_env(authorize_client_secret=signed_in, authorize_functions=signed_in),
    functions=tools,
)
app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/voice": create_app(navai)})


@app.post("/login")
def login() -> dict[str, bool]:
    session["user_id"] = "ana"  # after checking a password, of course
    return {"ok": True}
