"""navai inside a FastAPI app, mounted under /voice.

Run it from the repository root:

    uvicorn docs.examples.fastapi_app:app --port 3000

and point the voice client at http://localhost:3000/voice.
"""

from fastapi import FastAPI

from navai_adapters.asgi import create_app, lifespan
from navai_core import FunctionError, FunctionRegistry, Navai, NavaiConfig

tools = FunctionRegistry()


@tools.function
async def get_order_status(order_id: str) -> dict[str, str]:
    """The delivery status of an order, by its number (like "A-1001")."""
    if not order_id.upper().startswith("A-"):
        raise FunctionError(f"There is no order {order_id}.")  # the model reads this
    return {"order_id": order_id.upper(), "status": "shipped"}


navai = Navai(NavaiConfig.from_env(), functions=tools)

# A mounted app's own lifespan does not run: give navai's to the parent. It loads the
# functions and logs every configuration problem at start-up, and closes the httpx client.
app = FastAPI(lifespan=lifespan(navai))
app.mount("/voice", create_app(navai))


@app.get("/")
def home() -> dict[str, str]:
    return {"app": "my shop"}
