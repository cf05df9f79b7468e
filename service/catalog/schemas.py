"""JSON Schema fragments and sample values shared by the catalog's event types."""

from __future__ import annotations

from typing import Any, Final

Schema = dict[str, Any]


def obj(required: tuple[str, ...] = (), **props: Schema) -> Schema:
    # Open objects: upstream may add fields without breaking strict subscribers.
    return {"type": "object", "required": list(required), "properties": props}


STR: Final[Schema] = {"type": "string"}
NUM: Final[Schema] = {"type": "number"}
INT: Final[Schema] = {"type": "integer", "minimum": 0}
BOOL: Final[Schema] = {"type": "boolean"}
TIME: Final[Schema] = {"type": "string", "format": "date-time"}
PHONE: Final[Schema] = {"type": "string", "pattern": r"^\+[1-9][0-9]{6,14}$"}
STRS: Final[Schema] = {"type": "array", "items": STR}
AGENT: Final = obj(("id",), id=STR, name=STR)
CONTACT: Final = obj(("id",), id=STR, phoneNumber=PHONE, firstName=STR, lastName=STR, email=STR)
CALL_REF: Final = obj(
    ("id",),
    id=STR,
    sid=STR,
    direction={"enum": ["inbound", "outbound"]},
    **{"from": PHONE, "to": PHONE},
    campaign_id=STR,
)
CALL_ENDED: Final = obj(
    ("id", "duration", "status"),
    id=STR,
    sid=STR,
    direction={"enum": ["inbound", "outbound"]},
    **{"from": PHONE, "to": PHONE},
    duration=INT,
    status=STR,
    ended_reason=STR,
    recording_url=STR,
    campaign_id=STR,
    started_at=TIME,
    ended_at=TIME,
)
CAMPAIGN: Final = obj(("id",), id=STR, name=STR, status=STR)
CALL: Final = {
    "id": "call_7Hq2Lm",
    "sid": "CA5f0c3e1b9d2a4c6e8f0a1b2c3d4e5f6a",
    "direction": "inbound",
    "from": "+14155550123",
    "to": "+14155550199",
}
SUPPORT_BOT: Final = {"id": "agent_12345", "name": "Support Bot"}
JANE: Final = {
    "id": "contact_67890",
    "phoneNumber": "+14155550123",
    "firstName": "Jane",
    "lastName": "Doe",
    "email": "jane.doe@example.com",
}
SPRING: Final = {"id": "camp_spring24", "name": "Spring renewals", "status": "active"}
