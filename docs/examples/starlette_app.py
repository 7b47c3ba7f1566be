"""navai's routes in a Starlette app's own router, next to its other routes.

Save it as app.py, then in that folder:

    uvicorn app:app --port 3000
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from navai_adapters.asgi import lifespan, routes
from navai_core import FunctionRegistry, Navai, NavaiConfig, RequestContext

tools = FunctionRegistry()


@tools.function
def whoami(context: RequestContext) -> dict[str, str | None]:
    """Who is calling: the client address and the browser."""
    return {"client": context.client, "browser": context.header("user-agent")}


navai = Navai(NavaiConfig.from_env(), functions=tools)


async def home(request: Request) -> JSONResponse:
    return JSONResponse({"app": "my site"})


app = Starlette(routes=[Route("/", home), *routes(navai)], lifespan=lifespan(navai))
