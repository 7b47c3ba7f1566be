"""Example backend functions: a tiny in-memory support desk.

A class exposes one tool per public method (`support_desk_open_ticket`,
`support_desk_ticket_status`); a function that declares a `context` parameter receives the
HTTP request (method, path, headers, client address).
"""

from __future__ import annotations

import itertools

from navai_core import FunctionError, RequestContext

_numbers = itertools.count(1001)
_tickets: dict[int, dict[str, object]] = {}


class SupportDesk:
    def open_ticket(self, subject: str, context: RequestContext) -> dict[str, object]:
        """Open a support ticket and return its number."""
        number = next(_numbers)
        _tickets[number] = {"subject": subject, "status": "open", "from": context.client}
        return {"ticket": number, "status": "open"}

    def ticket_status(self, ticket: int) -> dict[str, object]:
        """The status of a support ticket."""
        if ticket not in _tickets:
            raise FunctionError(f"There is no ticket {ticket}.")
        return {"ticket": ticket, **_tickets[ticket]}
