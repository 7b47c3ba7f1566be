"""navai's ASGI app on its own: functions registered in code, configuration from the
environment, plus a health route.

Save it as app.py, then in that folder run it with any ASGI server:

    uvicorn app:app --port 3000
"""

from navai_adapters.asgi import create_app
from navai_core import FunctionRegistry, NavaiConfig

tools = FunctionRegistry()


@tools.function
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


app = create_app(config=NavaiConfig.from_env(health_path="/health"), functions=tools)
