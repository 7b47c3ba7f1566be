"""Answer phone calls: route each caller with on_incoming_call (docs/phone-calls.md).

OPENAI_API_KEY=sk-... OPENAI_WEBHOOK_SECRET=whsec_... uvicorn phone_calls:app
"""

from navai_adapters.asgi import create_app
from navai_core import AcceptCall, IncomingCall, Navai, NavaiConfig, ReferCall, RejectCall

BLOCKED = {"+15550100000"}


def on_incoming_call(call: IncomingCall) -> AcceptCall | RejectCall | ReferCall:
    if call.caller in BLOCKED:
        return RejectCall()  # 603 Decline
    if call.header("X-Department") == "sales":
        return ReferCall("sip:sales@pbx.example.com")
    return AcceptCall(
        session={"instructions": "You answer the phone for Example Co. Be brief."},
        budget_key=call.caller,
    )


navai = Navai(NavaiConfig.from_env(on_incoming_call=on_incoming_call))
app = create_app(navai)
