"""Conversation, contact and participant events."""

from __future__ import annotations

from typing import Final

from service.catalog.model import EventType
from service.catalog.schemas import (
    AGENT,
    BOOL,
    CONTACT,
    INT,
    JANE,
    PHONE,
    STR,
    STRS,
    SUPPORT_BOT,
    obj,
)

PEOPLE: Final[tuple[EventType, ...]] = (
    # Conversation
    EventType(
        "conversation.completed",
        "Conversation",
        "A conversation (voice or chat) ended, whatever its outcome.",
        obj(
            ("conversation",),
            conversation=obj(
                ("id", "channel"),
                id=STR,
                duration=INT,
                channel={"enum": ["voice", "chat", "sms"]},
            ),
            agent=AGENT,
            contact=CONTACT,
        ),
        {
            "conversation": {"id": "conv_abc123", "duration": 125, "channel": "voice"},
            "agent": SUPPORT_BOT,
            "contact": {"id": "contact_67890", "phoneNumber": "+14155550123"},
        },
    ),
    EventType(
        "conversation.transcript",
        "Conversation",
        "Transcript text of a conversation, partial (real time) or final.",
        obj(
            ("conversation_id", "text", "final"),
            conversation_id=STR,
            text=STR,
            final=BOOL,
            call_id=STR,
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
        obj(
            ("conversation_id", "intent"),
            conversation_id=STR,
            intent=STR,
            confidence={"type": "number", "minimum": 0, "maximum": 1},
            call_id=STR,
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
        obj(
            ("conversation_id", "entity"),
            conversation_id=STR,
            call_id=STR,
            entity=obj(("name", "value"), name=STR, value={}, type=STR),
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
        "The agent spoke to a new number and captured its details (the "
        "integrations guide's `new_contact_created`).",
        obj(("contact",), contact=CONTACT, agent=AGENT),
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
        obj(("contact", "changed"), contact=CONTACT, changed=STRS),
        {"contact": JANE, "changed": ["email"]},
    ),
    EventType(
        "participant.created",
        "Contacts and participants",
        "A participant joined a program or conversation space.",
        obj(
            ("participant",),
            participant=obj(("id",), id=STR, name=STR, phoneNumber=PHONE, email=STR, tags=STRS),
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
        obj(
            ("participant", "changed"),
            participant=obj(("id",), id=STR, name=STR, email=STR),
            changed=STRS,
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
        obj(("participant_id", "tags"), participant_id=STR, tags=STRS),
        {"participant_id": "part_5521", "tags": ["vip", "renewal-due"]},
    ),
    EventType(
        "message.sent",
        "Contacts and participants",
        "A message (SMS, chat, email) was sent to a participant or contact.",
        obj(
            ("message",),
            message=obj(("id", "channel", "to"), id=STR, channel=STR, to=STR, text=STR),
            participant_id=STR,
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
)
