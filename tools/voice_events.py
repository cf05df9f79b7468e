"""Realistic voice-platform events as CloudEvents, generated from the event catalog.

The catalog (service/catalog/) holds each type's schema and sample; events here are its
samples with varied values, so the demo, the benchmark and the tests produce what the
catalog documents and cannot drift from it.
"""

from __future__ import annotations

import copy
import random
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from service.catalog.entries import BY_TYPE

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


def _hex(rng: random.Random) -> str:
    return uuid.UUID(int=rng.getrandbits(128)).hex


def event_data(event_type: str, rng: random.Random) -> dict[str, Any]:
    """The catalog's sample of `event_type` with its people, ids and figures varied.

    Built from the sample, so an event has exactly the fields and places the catalog
    documents (a test validates every type against its schema); only values change, each
    within its schema. An uncatalogued type gets an agent only.
    """
    entry = BY_TYPE.get(event_type)
    if entry is None:
        agent_id, agent_name = rng.choice(_AGENTS)
        return {"agent": {"id": agent_id, "name": agent_name}}
    data: dict[str, Any] = copy.deepcopy(entry.sample)
    agent_id, agent_name = rng.choice(_AGENTS)
    contact_id, phone, first, last = rng.choice(_CONTACTS)
    if isinstance(data.get("agent"), dict):
        data["agent"] = {**data["agent"], "id": agent_id, "name": agent_name}
    if isinstance(data.get("contact"), dict):
        contact = {"id": contact_id, "phoneNumber": phone, "firstName": first, "lastName": last}
        if "email" in data["contact"]:
            contact["email"] = f"{first.lower()}.{last.lower()}@example.com"
        data["contact"] = {**data["contact"], **contact}
    call = data.get("call")
    if isinstance(call, dict):
        call.update(id="call_" + _hex(rng)[:16], sid="CA" + _hex(rng), **{"from": phone})
        if "direction" in call:
            call["direction"] = rng.choice(["inbound", "outbound"])
        if "duration" in call:
            call["duration"] = rng.randint(20, 900)
    if isinstance(data.get("summary"), str):
        data["summary"] = rng.choice(_SUMMARIES)
    return data


# The types the demo and the benchmark produce: the catalog's most common ones.
EVENT_TYPES: Final = (
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
