"""The event catalog: every event type the platform publishes, what it means, the JSON Schema
of its `data`, and a realistic sample.

The catalog documents; it does not gate. An event of a type not listed here is routed like
any other, unless a subscription asks for strict schema validation (`strict_schema`), in
which case only listed types whose `data` validates are delivered to it. `docs/events.md`
is generated from this module (`python -m tools.events_doc`), and a test keeps the two equal.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Final

import jsonschema

Schema = dict[str, Any]


def _obj(required: tuple[str, ...] = (), **props: Schema) -> Schema:
    # Open objects: upstream may add fields without breaking strict subscribers.
    return {"type": "object", "required": list(required), "properties": props}


_STR: Final[Schema] = {"type": "string"}
_NUM: Final[Schema] = {"type": "number"}
_INT: Final[Schema] = {"type": "integer", "minimum": 0}
_BOOL: Final[Schema] = {"type": "boolean"}
_TIME: Final[Schema] = {"type": "string", "format": "date-time"}
_PHONE: Final[Schema] = {"type": "string", "pattern": r"^\+[1-9][0-9]{6,14}$"}
_STRS: Final[Schema] = {"type": "array", "items": _STR}
_AGENT: Final = _obj(("id",), id=_STR, name=_STR)
_CONTACT: Final = _obj(
    ("id",), id=_STR, phoneNumber=_PHONE, firstName=_STR, lastName=_STR, email=_STR
)
_CALL_REF: Final = _obj(
    ("id",),
    id=_STR,
    sid=_STR,
    direction={"enum": ["inbound", "outbound"]},
    **{"from": _PHONE, "to": _PHONE},
    campaign_id=_STR,
)
_CALL_ENDED: Final = _obj(
    ("id", "duration", "status"),
    id=_STR,
    sid=_STR,
    direction={"enum": ["inbound", "outbound"]},
    **{"from": _PHONE, "to": _PHONE},
    duration=_INT,
    status=_STR,
    ended_reason=_STR,
    recording_url=_STR,
    campaign_id=_STR,
    started_at=_TIME,
    ended_at=_TIME,
)
_CAMPAIGN: Final = _obj(("id",), id=_STR, name=_STR, status=_STR)
_CALL: Final = {
    "id": "call_7Hq2Lm",
    "sid": "CA5f0c3e1b9d2a4c6e8f0a1b2c3d4e5f6a",
    "direction": "inbound",
    "from": "+14155550123",
    "to": "+14155550199",
}
_SUPPORT_BOT: Final = {"id": "agent_12345", "name": "Support Bot"}
_JANE: Final = {
    "id": "contact_67890",
    "phoneNumber": "+14155550123",
    "firstName": "Jane",
    "lastName": "Doe",
    "email": "jane.doe@example.com",
}
_SPRING: Final = {"id": "camp_spring24", "name": "Spring renewals", "status": "active"}


@dataclass(frozen=True, slots=True)
class EventType:
    type: str
    group: str
    meaning: str
    schema: Schema
    sample: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "group": self.group,
            "description": self.meaning,
            "schema": self.schema,
            "sample": self.sample,
        }


_CATALOG: Final[tuple[EventType, ...]] = (
    # Call lifecycle
    EventType(
        "call.inbound",
        "Call lifecycle",
        "An inbound call is ringing and the agent has not spoken yet; may carry a reply topic "
        "for a pre-call lookup (see below).",
        _obj(("call",), call=_CALL_REF, agent=_AGENT),
        {"call": _CALL, "agent": _SUPPORT_BOT},
    ),
    EventType(
        "call.queued",
        "Call lifecycle",
        "A call is waiting for a free agent or line.",
        _obj(("call", "position"), call=_CALL_REF, position=_INT, agent=_AGENT),
        {"call": _CALL, "position": 3, "agent": _SUPPORT_BOT},
    ),
    EventType(
        "call.started",
        "Call lifecycle",
        "A call was answered and the agent is talking.",
        _obj(("call", "agent"), call=_CALL_REF, agent=_AGENT, contact=_CONTACT, started_at=_TIME),
        {
            "call": _CALL,
            "agent": _SUPPORT_BOT,
            "contact": _JANE,
            "started_at": "2026-11-22T10:28:00Z",
        },
    ),
    EventType(
        "call.ended",
        "Call lifecycle",
        "A call completed; duration, status and the ending reason are known.",
        _obj(("call", "agent"), call=_CALL_ENDED, agent=_AGENT, contact=_CONTACT),
        {
            "call": {
                **_CALL,
                "duration": 125,
                "status": "completed",
                "ended_reason": "customer_hangup",
                "started_at": "2026-11-22T10:28:00Z",
                "ended_at": "2026-11-22T10:30:05Z",
                "recording_url": "https://media.example.com/rec/call_7Hq2Lm.mp3",
            },
            "agent": _SUPPORT_BOT,
            "contact": _JANE,
        },
    ),
    EventType(
        "call.failed",
        "Call lifecycle",
        "A call could not connect or broke off with an error.",
        _obj(("call", "error"), call=_CALL_REF, error=_obj(("code",), code=_STR, message=_STR)),
        {
            "call": {**_CALL, "direction": "outbound", "campaign_id": "camp_spring24"},
            "error": {"code": "no_answer", "message": "No answer after 30 s"},
        },
    ),
    EventType(
        "call.voicemail_detected",
        "Call lifecycle",
        "An outbound call reached a voicemail box instead of a person.",
        _obj(("call",), call=_CALL_REF, action={"enum": ["hangup", "leave_message"]}),
        {
            "call": {**_CALL, "direction": "outbound", "campaign_id": "camp_spring24"},
            "action": "leave_message",
        },
    ),
    EventType(
        "call.status_changed",
        "Call lifecycle",
        "A live call changed status, including a transfer to a person or another number.",
        _obj(
            ("call", "status"),
            call=_CALL_REF,
            status={"enum": ["ringing", "in_progress", "on_hold", "transferring", "transferred"]},
            previous_status=_STR,
            transfer=_obj(("to",), to=_STR, kind={"enum": ["warm", "cold"]}),
        ),
        {
            "call": _CALL,
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
        _obj(
            ("call", "transcript"),
            call=_CALL_REF,
            transcript={"type": "array", "items": _obj(("role", "text"), role=_STR, text=_STR)},
        ),
        {
            "call": _CALL,
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
        _obj(("call", "recording_url"), call=_CALL_REF, recording_url=_STR, duration=_INT),
        {
            "call": _CALL,
            "recording_url": "https://media.example.com/rec/call_7Hq2Lm.mp3",
            "duration": 125,
        },
    ),
    EventType(
        "call.quality_scored",
        "Call data",
        "QA evaluation of a call is complete.",
        _obj(
            ("call", "score"),
            call=_CALL_REF,
            score={"type": "number", "minimum": 0, "maximum": 100},
            criteria={"type": "object"},
        ),
        {"call": _CALL, "score": 87.5, "criteria": {"greeting": 10, "resolution": 8}},
    ),
    EventType(
        "call.cost_calculated",
        "Call data",
        "The cost of a call is determined.",
        _obj(
            ("call", "cost"),
            call=_CALL_REF,
            cost=_obj(
                ("amount", "currency"),
                amount=_NUM,
                currency={"type": "string", "pattern": "^[A-Z]{3}$"},
                breakdown={"type": "object"},
            ),
        ),
        {
            "call": _CALL,
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
        "The AI summary of a finished call is ready (the seeds' `ai_call_summary`).",
        _obj(
            ("call", "summary"),
            call=_CALL_ENDED,
            agent=_AGENT,
            contact=_CONTACT,
            summary=_STR,
            sentiment={"enum": ["positive", "neutral", "negative"]},
            outcome=_STR,
        ),
        {
            "call": {**_CALL, "duration": 125, "status": "completed"},
            "agent": _SUPPORT_BOT,
            "contact": _JANE,
            "summary": "Jane Doe called about late order #54321. The agent confirmed delivery "
            "tomorrow and offered 10% off her next purchase.",
            "sentiment": "positive",
            "outcome": "resolved",
        },
    ),
    # Conversation
    EventType(
        "conversation.completed",
        "Conversation",
        "A conversation (voice or chat) ended, whatever its outcome.",
        _obj(
            ("conversation",),
            conversation=_obj(
                ("id", "channel"),
                id=_STR,
                duration=_INT,
                channel={"enum": ["voice", "chat", "sms"]},
            ),
            agent=_AGENT,
            contact=_CONTACT,
        ),
        {
            "conversation": {"id": "conv_abc123", "duration": 125, "channel": "voice"},
            "agent": _SUPPORT_BOT,
            "contact": {"id": "contact_67890", "phoneNumber": "+14155550123"},
        },
    ),
    EventType(
        "conversation.transcript",
        "Conversation",
        "Transcript text of a conversation, partial (real time) or final.",
        _obj(
            ("conversation_id", "text", "final"),
            conversation_id=_STR,
            text=_STR,
            final=_BOOL,
            call_id=_STR,
        ),
        {
            "conversation_id": "conv_abc123",
            "call_id": "call_7Hq2Lm",
            "final": False,
            "text": "User: I'd like to move my appointment to Friday.",
        },
    ),
    EventType(
        "conversation.intent_detected",
        "Conversation",
        "The AI identified what the caller wants.",
        _obj(
            ("conversation_id", "intent"),
            conversation_id=_STR,
            intent=_STR,
            confidence={"type": "number", "minimum": 0, "maximum": 1},
            call_id=_STR,
        ),
        {
            "conversation_id": "conv_abc123",
            "call_id": "call_7Hq2Lm",
            "intent": "reschedule_appointment",
            "confidence": 0.93,
        },
    ),
    EventType(
        "conversation.entity_captured",
        "Conversation",
        "The AI captured a piece of information (a date, an email, an order number).",
        _obj(
            ("conversation_id", "entity"),
            conversation_id=_STR,
            call_id=_STR,
            entity=_obj(("name", "value"), name=_STR, value={}, type=_STR),
        ),
        {
            "conversation_id": "conv_abc123",
            "call_id": "call_7Hq2Lm",
            "entity": {"name": "appointment_date", "value": "2026-11-27", "type": "date"},
        },
    ),
    # Contacts and participants
    EventType(
        "contact.created",
        "Contacts and participants",
        "The agent spoke to a new number and captured its details (the seeds' "
        "`new_contact_created`).",
        _obj(("contact",), contact=_CONTACT, agent=_AGENT),
        {
            "contact": {
                "id": "contact_11223",
                "phoneNumber": "+19876543210",
                "firstName": "John",
                "lastName": "Smith",
                "email": "john.smith@example.com",
            },
            "agent": {"id": "agent_54321", "name": "Lead Qualification Bot"},
        },
    ),
    EventType(
        "contact.updated",
        "Contacts and participants",
        "Fields of a contact changed; `changed` names them.",
        _obj(("contact", "changed"), contact=_CONTACT, changed=_STRS),
        {"contact": _JANE, "changed": ["email"]},
    ),
    EventType(
        "participant.created",
        "Contacts and participants",
        "A participant joined a program or conversation space.",
        _obj(
            ("participant",),
            participant=_obj(
                ("id",), id=_STR, name=_STR, phoneNumber=_PHONE, email=_STR, tags=_STRS
            ),
        ),
        {
            "participant": {
                "id": "part_5521",
                "name": "Sam Lee",
                "phoneNumber": "+447700900123",
                "email": "sam.lee@example.com",
                "tags": [],
            }
        },
    ),
    EventType(
        "participant.profile_updated",
        "Contacts and participants",
        "A participant changed their profile.",
        _obj(
            ("participant", "changed"),
            participant=_obj(("id",), id=_STR, name=_STR, email=_STR),
            changed=_STRS,
        ),
        {
            "participant": {"id": "part_5521", "name": "Sam Lee", "email": "sam@example.org"},
            "changed": ["email"],
        },
    ),
    EventType(
        "participant.tags_added",
        "Contacts and participants",
        "Tags were added to a participant.",
        _obj(("participant_id", "tags"), participant_id=_STR, tags=_STRS),
        {"participant_id": "part_5521", "tags": ["vip", "renewal-due"]},
    ),
    EventType(
        "message.sent",
        "Contacts and participants",
        "A message (SMS, chat, email) was sent to a participant or contact.",
        _obj(
            ("message",),
            message=_obj(("id", "channel", "to"), id=_STR, channel=_STR, to=_STR, text=_STR),
            participant_id=_STR,
        ),
        {
            "message": {
                "id": "msg_88f1",
                "channel": "sms",
                "to": "+447700900123",
                "text": "Your appointment is confirmed for Friday 10:00.",
            },
            "participant_id": "part_5521",
        },
    ),
    # Agents
    EventType(
        "agent.status_changed",
        "Agents",
        "An agent went online, offline or busy.",
        _obj(
            ("agent", "status"),
            agent=_AGENT,
            status={"enum": ["online", "offline", "busy"]},
            previous_status=_STR,
        ),
        {"agent": _SUPPORT_BOT, "status": "offline", "previous_status": "online"},
    ),
    EventType(
        "agent.config_updated",
        "Agents",
        "An agent's settings (prompt, voice, tools) were modified.",
        _obj(("agent", "changed"), agent=_AGENT, changed=_STRS, version=_INT, updated_by=_STR),
        {
            "agent": _SUPPORT_BOT,
            "changed": ["prompt", "voice"],
            "version": 14,
            "updated_by": "user_ops_1",
        },
    ),
    EventType(
        "agent.sync_status_changed",
        "Agents",
        "An agent's synchronisation (knowledge, telephony, CRM) changed state.",
        _obj(
            ("agent", "status"),
            agent=_AGENT,
            status={"enum": ["syncing", "synced", "failed"]},
            error=_STR,
        ),
        {"agent": _SUPPORT_BOT, "status": "failed", "error": "CRM token expired"},
    ),
    EventType(
        "agent.performance_alert",
        "Agents",
        "An agent crossed a performance threshold.",
        _obj(
            ("agent", "metric", "value", "threshold"),
            agent=_AGENT,
            metric=_STR,
            value=_NUM,
            threshold=_NUM,
            window_minutes=_INT,
        ),
        {
            "agent": _SUPPORT_BOT,
            "metric": "abandon_rate",
            "value": 0.18,
            "threshold": 0.1,
            "window_minutes": 60,
        },
    ),
    # Campaigns
    EventType(
        "campaign.started",
        "Campaigns",
        "An outbound campaign was activated.",
        _obj(("campaign",), campaign=_CAMPAIGN, contacts=_INT),
        {"campaign": _SPRING, "contacts": 1200},
    ),
    EventType(
        "campaign.paused",
        "Campaigns",
        "A campaign was paused, by a person or by a rule.",
        _obj(("campaign",), campaign=_CAMPAIGN, reason=_STR, paused_by=_STR),
        {
            "campaign": {**_SPRING, "status": "paused"},
            "reason": "manual",
            "paused_by": "user_ops_1",
        },
    ),
    EventType(
        "campaign.completed",
        "Campaigns",
        "A campaign finished its contact list.",
        _obj(
            ("campaign", "stats"),
            campaign=_CAMPAIGN,
            stats=_obj((), calls=_INT, answered=_INT, converted=_INT),
        ),
        {
            "campaign": {**_SPRING, "status": "completed"},
            "stats": {"calls": 1200, "answered": 640, "converted": 85},
        },
    ),
    EventType(
        "campaign.quota_reached",
        "Campaigns",
        "A campaign hit a limit it was given (calls, spend, conversions).",
        _obj(
            ("campaign", "quota"),
            campaign=_CAMPAIGN,
            quota=_obj(("name", "limit"), name=_STR, limit=_NUM, used=_NUM),
        ),
        {"campaign": _SPRING, "quota": {"name": "daily_calls", "limit": 500, "used": 500}},
    ),
    # System
    EventType(
        "knowledge_base.updated",
        "System",
        "A knowledge base was modified.",
        _obj(
            ("knowledge_base",),
            knowledge_base=_obj(("id",), id=_STR, name=_STR),
            documents_added=_INT,
            documents_removed=_INT,
        ),
        {
            "knowledge_base": {"id": "kb_returns", "name": "Returns policy"},
            "documents_added": 2,
            "documents_removed": 0,
        },
    ),
    EventType(
        "phone_number.updated",
        "System",
        "A phone number's configuration changed (its agent, its routing).",
        _obj(
            ("phone_number",),
            phone_number=_obj(("number",), number=_PHONE, agent_id=_STR),
            changed=_STRS,
        ),
        {
            "phone_number": {"number": "+14155550199", "agent_id": "agent_12345"},
            "changed": ["agent_id"],
        },
    ),
    EventType(
        "user.action",
        "System",
        "A user of the platform did something significant.",
        _obj(
            ("user_id", "action"), user_id=_STR, action=_STR, resource=_obj((), type=_STR, id=_STR)
        ),
        {
            "user_id": "user_ops_1",
            "action": "agent.deleted",
            "resource": {"type": "agent", "id": "agent_99"},
        },
    ),
    EventType(
        "system.maintenance",
        "System",
        "Planned or ongoing platform maintenance.",
        _obj(
            ("status", "starts_at"),
            status={"enum": ["scheduled", "started", "completed"]},
            starts_at=_TIME,
            ends_at=_TIME,
            message=_STR,
        ),
        {
            "status": "scheduled",
            "starts_at": "2026-11-29T02:00:00Z",
            "ends_at": "2026-11-29T03:00:00Z",
            "message": "Telephony provider upgrade",
        },
    ),
)

BY_TYPE: Final = {t.type: t for t in _CATALOG}


def catalog() -> tuple[EventType, ...]:
    return _CATALOG


@functools.cache
def _validator(event_type: str) -> jsonschema.Draft202012Validator | None:
    entry = BY_TYPE.get(event_type)
    if entry is None:
        return None
    return jsonschema.Draft202012Validator(
        entry.schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def schema_error(event_type: str, data: object) -> str | None:
    """Why `data` does not fit the catalog's schema for `event_type`, or None if it does.
    An unlisted type cannot be validated and is an error for this question."""
    validator = _validator(event_type)
    if validator is None:
        return f"{event_type!r} is not in the event catalog"
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return None
    where = "".join(f".{p}" for p in error.absolute_path)
    return f"data{where}: {error.message}"[:300]
