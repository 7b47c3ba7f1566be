"""navai's ASGI app on its own: functions registered in code, configuration from the
environment, plus a health route.

Run it from the repository root with any ASGI server:

    uvicorn docs.examples.asgi_app:app --port 3000
"""

from navai_adapters.asgi import create_app
from navai_core import FunctionRegistry, NavaiConfig

tools = FunctionRegistry()


@tools.function
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


app = create_app(config=NavaiConfig.from_env(health_path="/health"), functions=tools)
