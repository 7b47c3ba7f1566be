"""navai_core: the framework-free core of navai.

Everything here is pure Python over attrs and httpx2: no web framework is imported, so the
core can be used from any server and its rules unit-tested directly.
"""

from ._background import close_background_loop
from ._call_manager import CallManager, CallSummary, LiveCall
from ._calls import (
    CallAnswer,
    CallOptions,
    build_call_request,
    parse_call_body,
    parse_call_response,
)
from ._client_secret import (
    ClientSecret,
    ClientSecretOptions,
    UpstreamReply,
    UpstreamRequest,
    build_client_secret_request,
    build_instructions,
    build_transcription_request,
    parse_client_secret_body,
    parse_client_secret_response,
)
from ._config import NavaiConfig
from ._discovery import load_functions
from ._dispatch import PreparedCall, aexecute, execute, prepare_call
from ._errors import (
    BadRequest,
    ConfigurationError,
    Forbidden,
    MethodNotAllowed,
    NavaiError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ._functions import FunctionAuthHook, FunctionEntry, FunctionError, FunctionRegistry
from ._http import Reply, RequestContext
from ._navai import Navai
from ._policy import resolve_api_key, validate_ttl
from ._retry import RetryPolicy
from ._routes import Route
from ._sideband import ToolLoop
from ._sip import AcceptCall, IncomingCall, ReferCall, RejectCall
from ._speech import (
    SpeechOptions,
    build_speech_request,
    parse_speech_body,
    parse_speech_response,
    speech_mime_type,
)
from ._upstream import asend, send
from ._webhooks import InvalidWebhook, sign_webhook, verify_webhook, webhook_headers

__all__ = [
    "AcceptCall",
    "BadRequest",
    "CallAnswer",
    "CallManager",
    "CallOptions",
    "CallSummary",
    "ClientSecret",
    "ClientSecretOptions",
    "ConfigurationError",
    "Forbidden",
    "FunctionAuthHook",
    "FunctionEntry",
    "FunctionError",
    "FunctionRegistry",
    "IncomingCall",
    "InvalidWebhook",
    "LiveCall",
    "MethodNotAllowed",
    "Navai",
    "NavaiConfig",
    "NavaiError",
    "NotFound",
    "PayloadTooLarge",
    "PreparedCall",
    "ReferCall",
    "RejectCall",
    "Reply",
    "RequestContext",
    "RetryPolicy",
    "Route",
    "SpeechOptions",
    "ToolLoop",
    "Unauthorized",
    "UpstreamError",
    "UpstreamReply",
    "UpstreamRequest",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "aexecute",
    "asend",
    "build_call_request",
    "build_client_secret_request",
    "build_instructions",
    "build_speech_request",
    "build_transcription_request",
    "close_background_loop",
    "execute",
    "load_functions",
    "parse_call_body",
    "parse_call_response",
    "parse_client_secret_body",
    "parse_client_secret_response",
    "parse_speech_body",
    "parse_speech_response",
    "prepare_call",
    "resolve_api_key",
    "send",
    "sign_webhook",
    "speech_mime_type",
    "validate_ttl",
    "verify_webhook",
    "webhook_headers",
]
