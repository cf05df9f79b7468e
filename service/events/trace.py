"""W3C trace context from the CloudEvents distributed-tracing extension.

An event may carry `traceparent` (and `tracestate`) as attributes in structured mode, or as
`ce_traceparent` / `ce_tracestate` headers in binary mode. Switchboard keeps the context with
the event through retry tiers and dead letters, and sends it on every webhook request as the
`traceparent` and `tracestate` headers, so a receiver can join the producer's trace. A context
that does not parse is dropped, never the event: tracing must not cost a delivery.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

# version-traceid-parentid-flags, lower-case hex (https://www.w3.org/TR/trace-context/).
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# The spec's limit: 32 list members of at most 256 characters each, joined by commas.
MAX_TRACESTATE: Final = 512


class TraceContext(msgspec.Struct, frozen=True, omit_defaults=True):
    traceparent: str
    tracestate: str | None = None

    @property
    def trace_id(self) -> str:
        """The trace's id, for log lines: an SRE follows one call's event across systems."""
        return self.traceparent[3:35]

    def headers(self) -> dict[str, str]:
        out = {"traceparent": self.traceparent}
        if self.tracestate:
            out["tracestate"] = self.tracestate
        return out


def trace_context(traceparent: str | None, tracestate: str | None) -> TraceContext | None:
    """The context if `traceparent` is a valid W3C one (else None); a bad tracestate is
    dropped alone, as the spec says."""
    if traceparent is None:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    version, trace_id, parent_id, _ = match.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    if tracestate is not None:
        tracestate = tracestate.strip()
        if not tracestate or len(tracestate) > MAX_TRACESTATE or not tracestate.isprintable():
            tracestate = None
    return TraceContext(match.group(0), tracestate)
