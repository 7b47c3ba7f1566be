"""navai in a FastAPI app, minting and functions only for signed-in users (session cookie)."""

from fastapi import Depends, FastAPI, HTTPException, Request
from starlette.middleware.sessions import SessionMiddleware

from navai_adapters.fastapi import navai_router
from navai_core import FunctionRegistry, Navai, NavaiConfig

tools = FunctionRegistry()


@tools.function
def my_orders() -> list[str]:
    """The signed-in user's open orders."""
    return ["A-100", "A-101"]


def signed_in(request: Request) -> None:
    """A FastAPI dependency: it runs before navai on every navai route."""
    if "user_id" not in request.session:
        raise HTTPException(status_code=403, detail="Sign in first.")


navai = Navai(NavaiConfig.from_env(), functions=tools)
app = FastAPI()
app.add_middleware(SessionMiddleware, secret_key="change-me")  # your real secret here
app.include_router(navai_router(navai), dependencies=[Depends(signed_in)])


@app.post("/login")
async def login(request: Request) -> dict[str, bool]:
    request.session["user_id"] = "ana"  # after checking a password, of course
    return {"ok": True}
