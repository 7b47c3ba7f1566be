"""navai in a Flask app, minting and functions only for signed-in users (Flask's session)."""

from flask import Flask, session

from navai_adapters.flask import NavaiFlask
from navai_core import FunctionRegistry, Navai, NavaiConfig, RequestContext

tools = FunctionRegistry()


@tools.function
def my_orders() -> list[str]:
    """The signed-in user's open orders."""
    return ["A-100", "A-101"]


def signed_in(context: RequestContext) -> bool:
    """navai's hook. navai's routes are Flask views, so Flask's session is right here."""
    return "user_id" in session


navai = Navai(
    NavaiConfig.from_env(authorize_client_secret=signed_in, authorize_functions=signed_in),
    functions=tools,
)
app = Flask(__name__)
app.secret_key = "change-me"  # your real secret here
NavaiFlask(app, navai, url_prefix="/voice")


@app.post("/login")
def login() -> dict[str, bool]:
    session["user_id"] = "ana"  # after checking a password, of course
    return {"ok": True}
