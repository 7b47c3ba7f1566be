"""navai's routes in a FastAPI app, under /voice, listed in the app's /docs.

Save it as app.py, then in that folder (./navai being a clone of navai, see README):

    pip install './navai[fastapi]'
    uvicorn app:app --port 3000

Open http://localhost:3000/docs, and point the voice client at http://localhost:3000/voice
(with the header ``Authorization: Bearer demo-token``).
"""

from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from navai_adapters.fastapi import navai_router
from navai_core import FunctionError, FunctionRegistry, Navai, NavaiConfig, RequestContext

tools = FunctionRegistry()


@tools.function
async def get_order_status(order_id: str, context: RequestContext) -> dict[str, str]:
    """The delivery status of an order, by its number (like "A-1001")."""
    if not order_id.upper().startswith("A-"):
        raise FunctionError(f"There is no order {order_id}.")  # the model reads this
    customer = context.raw.state.customer  # set by the dependency below
    return {"order_id": order_id.upper(), "status": "shipped", "customer": customer}


TOKENS = {"demo-token": "ana"}  # your real token or session check here
bearer = HTTPBearer()


def current_customer(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)]
) -> str:
    customer = TOKENS.get(credentials.credentials)
    if customer is None:
        raise HTTPException(status_code=401, detail="Unknown token.")
    request.state.customer = customer  # backend functions read context.raw.state
    return customer


navai = Navai(NavaiConfig.from_env(), functions=tools)

app = FastAPI()
# The router's lifespan joins the app's: functions load at start-up, clients close at exit.
app.include_router(navai_router(navai), prefix="/voice", dependencies=[Depends(current_customer)])


@app.get("/")
def home() -> dict[str, str]:
    return {"app": "my shop"}
