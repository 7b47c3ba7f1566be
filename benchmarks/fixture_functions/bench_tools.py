"""The trivial backend functions the HTTP benchmark executes (twins of the Node benchmark's)."""

__all__ = ["add", "aping", "ping"]


def add(a: int, b: int) -> int:
    """Add two integers (a trivial sync function with arguments)."""
    return a + b


def ping() -> str:
    """Answer pong (a trivial sync function)."""
    return "pong"


async def aping() -> str:
    """Answer pong (a trivial async function)."""
    return "pong"
