"""Call lifecycle and call data events."""

from __future__ import annotations

from typing import Final

from service.catalog.model import EventType
from service.catalog.schemas import (
    AGENT,
    CALL,
    CALL_ENDED,
    CALL_REF,
    CONTACT,
    INT,
    JANE,
    NUM,
    STR,
    SUPPORT_BOT,
    TIME,
    obj,
)

CALLS: Final[tuple[EventType, ...]] = (
    # Call lifecycle
    EventType(
        "call.inbound",
        "Call lifecycle",
        "An inbound call is ringing and the agent has not spoken yet; may carry a reply topic "
        "for a pre-call lookup (see below).",
        obj(("call",), call=CALL_REF, agent=AGENT),
        {"call": CALL, "agent": SUPPORT_BOT},
    ),
    EventType(
        "call.queued",
        "Call lifecycle",
        "A call is waiting for a free agent or line.",
        obj(("call", "position"), call=CALL_REF, position=INT, agent=AGENT),
        {"call": CALL, "position": 3, "agent": SUPPORT_BOT},
    ),
    EventType(
        "call.started",
        "Call lifecycle",
        "A call was answered and the agent is talking.",
        obj(("call", "agent"), call=CALL_REF, agent=AGENT, contact=CONTACT, started_at=TIME),
        {
            "call": CALL,
            "agent": SUPPORT_BOT,
            "contact": JANE,
            "started_at": "2026-11-22T10:28:00Z",
        },
    ),
    EventType(
        "call.ended",
        "Call lifecycle",
        "A call completed; duration, status and the ending reason are known.",
        obj(("call", "agent"), call=CALL_ENDED, agent=AGENT, contact=CONTACT),
        {
            "call": {
                **CALL,
                "duration": 125,
                "status": "completed",
                "ended_reason": "customer_hangup",
                "started_at": "2026-11-22T10:28:00Z",
                "ended_at": "2026-11-22T10:30:05Z",
                "recording_url": "https://media.example.com/rec/call_7Hq2Lm.mp3",
            },
            "agent": SUPPORT_BOT,
            "contact": JANE,
        },
    ),
    EventType(
        "call.failed",
        "Call lifecycle",
        "A call could not connect or broke off with an error.",
        obj(("call", "error"), call=CALL_REF, error=obj(("code",), code=STR, message=STR)),
        {
            "call": {**CALL, "direction": "outbound", "campaign_id": "camp_spring24"},
            "error": {"code": "no_answer", "message": "No answer after 30 s"},
        },
    ),
    EventType(
        "call.voicemail_detected",
        "Call lifecycle",
        "An outbound call reached a voicemail box instead of a person.",
        obj(("call",), call=CALL_REF, action={"enum": ["hangup", "leave_message"]}),
        {
            "call": {**CALL, "direction": "outbound", "campaign_id": "camp_spring24"},
            "action": "leave_message",
        },
    ),
    EventType(
        "call.status_changed",
        "Call lifecycle",
        "A live call changed status, including a transfer to a person or another number.",
        obj(
            ("call", "status"),
            call=CALL_REF,
            status={"enum": ["ringing", "in_progress", "on_hold", "transferring", "transferred"]},
            previous_status=STR,
            transfer=obj(("to",), to=STR, kind={"enum": ["warm", "cold"]}),
        ),
        {
            "call": CALL,
            "status": "transferring",
            "previous_status": "in_progress",
            "transfer": {"to": "+14155550100", "kind": "warm"},
        },
    ),
    # Call data
    EventType(
        "call.transcript_ready",
        "Call data",
        "The full transcript of a finished call is available.",
        obj(
            ("call", "transcript"),
            call=CALL_REF,
            transcript={"type": "array", "items": obj(("role", "text"), role=STR, text=STR)},
        ),
        {
            "call": CALL,
            "transcript": [
                {"role": "user", "text": "Hi, my order is late."},
                {"role": "agent", "text": "I'm sorry to hear that. Let me check."},
            ],
        },
    ),
    EventType(
        "call.recording_ready",
        "Call data",
        "The call recording has been processed and can be downloaded.",
        obj(("call", "recording_url"), call=CALL_REF, recording_url=STR, duration=INT),
        {
            "call": CALL,
            "recording_url": "https://media.example.com/rec/call_7Hq2Lm.mp3",
            "duration": 125,
        },
    ),
    EventType(
        "call.quality_scored",
        "Call data",
        "QA evaluation of a call is complete.",
        obj(
            ("call", "score"),
            call=CALL_REF,
            score={"type": "number", "minimum": 0, "maximum": 100},
            criteria={"type": "object"},
        ),
        {"call": CALL, "score": 87.5, "criteria": {"greeting": 10, "resolution": 8}},
    ),
    EventType(
        "call.cost_calculated",
        "Call data",
        "The cost of a call is determined.",
        obj(
            ("call", "cost"),
            call=CALL_REF,
            cost=obj(
                ("amount", "currency"),
                amount=NUM,
                currency={"type": "string", "pattern": "^[A-Z]{3}$"},
                breakdown={"type": "object"},
            ),
        ),
        {
            "call": CALL,
            "cost": {
                "amount": 0.42,
                "currency": "USD",
                "breakdown": {"telephony": 0.12, "llm": 0.22, "tts": 0.08},
            },
        },
    ),
    EventType(
        "call.summary_ready",
        "Call data",
        "The AI summary of a finished call is ready (the integrations guide's `ai_call_summary`).",
        obj(
            ("call", "summary"),
            call=CALL_ENDED,
            agent=AGENT,
            contact=CONTACT,
            summary=STR,
            sentiment={"enum": ["positive", "neutral", "negative"]},
            outcome=STR,
        ),
        {
            "call": {**CALL, "duration": 125, "status": "completed"},
            "agent": SUPPORT_BOT,
            "contact": JANE,
            "summary": "Jane Doe called about late order #54321. The agent confirmed delivery "
            "tomorrow and offered 10% off her next purchase.",
            "sentiment": "positive",
            "outcome": "resolved",
        },
    ),
)
