"""The call record (CONTRACT §12): transcript, tool runs, cost, the call log and spans.

- :mod:`.transcript`: turns and tool runs from a call's events (pure);
- :mod:`.cost`: the shipped price table and the cost arithmetic (pure);
- :mod:`.log`: the JSON-lines call log (``NAVAI_CALL_LOG``);
- :mod:`.tracing`: OpenTelemetry spans, when ``opentelemetry-api`` is installed;
- :mod:`.record`: :class:`CallRecord` per call and the :class:`Recorder` that starts them.
"""

from .cost import PriceTable
from .log import CallLog
from .record import CallRecord, Recorder
from .transcript import Transcript

__all__ = ["CallLog", "CallRecord", "PriceTable", "Recorder", "Transcript"]
