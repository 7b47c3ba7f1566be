"""The two trivial backend functions the HTTP benchmark executes."""

__all__ = ["aping", "ping"]


def ping() -> str:
    """Answer pong (a trivial sync function)."""
    return "pong"


async def aping() -> str:
    """Answer pong (a trivial async function)."""
    return "pong"
