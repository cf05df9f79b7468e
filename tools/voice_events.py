"""Realistic voice-platform events as CloudEvents, shaped after the platform's own payloads."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

_AGENTS = [("agent_12345", "Support Bot"), ("agent_54321", "Lead Qualification Bot")]
_CONTACTS = [
    ("contact_67890", "+1234567890", "Jane", "Doe"),
    ("contact_11223", "+19876543210", "John", "Smith"),
    ("contact_44556", "+447700900123", "Amira", "Khan"),
]
_SUMMARIES = [
    "The user called about a late order (ID #54321). The agent confirmed delivery for "
    "tomorrow and offered a 10% discount on the next purchase.",
    "The caller asked to reschedule an appointment to Friday at 3 pm; the agent booked it "
    "and sent a confirmation by SMS.",
]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_data(event_type: str, rng: random.Random) -> dict[str, Any]:
    agent_id, agent_name = rng.choice(_AGENTS)
    contact_id, phone, first, last = rng.choice(_CONTACTS)
    agent = {"id": agent_id, "name": agent_name}
    contact = {"id": contact_id, "phoneNumber": phone, "firstName": first, "lastName": last}
    call = {
        "id": "call_" + uuid.UUID(int=rng.getrandbits(128)).hex[:16],
        "sid": "CA" + uuid.UUID(int=rng.getrandbits(128)).hex,
        "direction": rng.choice(["inbound", "outbound"]),
        "from": phone,
        "to": "+18005550100",
    }
    if event_type == "call.started":
        return {"agent": agent, "contact": contact, "call": call}
    if event_type == "call.ended":
        duration = rng.randint(20, 900)
        return {
            "agent": agent,
            "contact": contact,
            "call": {**call, "duration": duration, "status": "completed"},
            "campaign_id": rng.choice([None, "camp_spring_outreach"]),
        }
    if event_type == "call.summary_ready":
        return {
            "agent": agent,
            "contact": contact,
            "call": {**call, "duration": rng.randint(20, 900), "summary": rng.choice(_SUMMARIES)},
        }
    if event_type == "contact.created":
        return {"agent": agent, "contact": {**contact, "email": f"{first.lower()}@example.com"}}
    if event_type == "conversation.completed":
        return {
            "agent": agent,
            "contact": {"id": contact_id, "phoneNumber": phone},
            "conversation": {"id": "conv_" + uuid.UUID(int=rng.getrandbits(128)).hex[:8],
                             "duration": rng.randint(20, 900), "channel": "voice"},
        }  # fmt: skip
    if event_type == "campaign.quota_reached":
        return {"campaign": {"id": "camp_spring_outreach", "quota": 500, "calls_made": 500}}
    return {"agent": agent}


EVENT_TYPES = (
    "call.started",
    "call.ended",
    "call.summary_ready",
    "contact.created",
    "conversation.completed",
    "campaign.quota_reached",
)


def cloud_event(
    event_type: str, tenant_id: str, rng: random.Random, event_id: str | None = None
) -> bytes:
    """A structured-mode CloudEvents 1.0 record value."""
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": event_id or "evt_" + uuid.UUID(int=rng.getrandbits(128)).hex,
            "source": "/voice/" + event_type.split(".", maxsplit=1)[0],
            "type": event_type,
            "time": _now(),
            "tenantid": tenant_id,
            "datacontenttype": "application/json",
            "data": event_data(event_type, rng),
        }
    )
