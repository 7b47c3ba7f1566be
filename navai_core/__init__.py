"""navai_core: the framework-free core of navai.

Everything here is pure Python over attrs and httpx2: no web framework is imported, so the
core can be used from any server and its rules unit-tested directly.
"""

from ._config import NavaiConfig
from ._errors import (
    BadRequest,
    ConfigurationError,
    Forbidden,
    InvalidWebhook,
    MethodNotAllowed,
    NavaiError,
    NotFound,
    PayloadTooLarge,
    SettingProblem,
    SettingsError,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ._http import Reply, RequestContext
from ._logging import default_handler as default_log_handler
from ._navai import Navai
from ._policy import resolve_api_key
from .calls.manager import CallManager, CallSummary, LiveCall
from .calls.plans import (
    CallAnswer,
    CallOptions,
    build_call_request,
    parse_call_body,
    parse_call_response,
)
from .calls.sideband import ToolLoop
from .calls.sip import AcceptCall, IncomingCall, ReferCall, RejectCall
from .calls.webhooks import sign_webhook, verify_webhook, webhook_headers
from .concurrency.owner import close_background_loop
from .functions.discovery import load_functions
from .functions.dispatch import PreparedCall, aexecute, execute, prepare_call
from .functions.registry import FunctionAuthHook, FunctionEntry, FunctionError, FunctionRegistry
from .routes.table import Route
from .sessions.client_secret import (
    ClientSecret,
    ClientSecretOptions,
    build_client_secret_request,
    build_instructions,
    build_transcription_request,
    parse_client_secret_body,
    parse_client_secret_response,
    validate_ttl,
)
from .sessions.speech import (
    SpeechOptions,
    build_speech_request,
    parse_speech_body,
    parse_speech_response,
    speech_mime_type,
)
from .upstream.messages import UpstreamReply, UpstreamRequest
from .upstream.retry import RetryPolicy
from .upstream.send import asend, send

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
    "SettingProblem",
    "SettingsError",
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
    "default_log_handler",
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
