"""navai in a FastAPI app, minting and functions only for signed-in users (session cookie)."""

from fastapi import FastAPI, Request
from starlette.middleware.sessions import SessionMiddleware

from navai_adapters.asgi import create_app, lifespan
from navai_core import FunctionRegistry, Navai, NavaiConfig, RequestContext

tools = FunctionRegistry()


@tools.function
def my_orders() -> list[str]:
    """The signed-in user's open orders."""
    return ["A-100", "A-101"]


def signed_in(context: RequestContext) -> bool:
    """navai's hook: context.raw is the Starlette request, with the app's session."""
    return "user_id" in context.raw.session


navai = Navai(
    NavaiConfig.from_env(authorize_client_secret=signed_in, authorize_functions=signed_in),
    functions=tools,
)
app = FastAPI(lifespan=lifespan(navai))
app.add_middleware(SessionMiddleware, secret_key="change-me")  # your real secret here


@app.post("/login")
async def login(request: Request) -> dict[str, bool]:
    request.session["user_id"] = "ana"  # after checking a password, of course
    return {"ok": True}


app.mount("/", create_app(navai))
