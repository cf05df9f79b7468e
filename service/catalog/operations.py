"""Agent, campaign and system events."""

from __future__ import annotations

from typing import Final

from service.catalog.model import EventType
from service.catalog.schemas import (
    AGENT,
    CAMPAIGN,
    INT,
    NUM,
    PHONE,
    SPRING,
    STR,
    STRS,
    SUPPORT_BOT,
    TIME,
    obj,
)

OPERATIONS: Final[tuple[EventType, ...]] = (
    # Agents
    EventType(
        "agent.status_changed",
        "Agents",
        "An agent went online, offline or busy.",
        obj(
            ("agent", "status"),
            agent=AGENT,
            status={"enum": ["online", "offline", "busy"]},
            previous_status=STR,
        ),
        {"agent": SUPPORT_BOT, "status": "offline", "previous_status": "online"},
    ),
    EventType(
        "agent.config_updated",
        "Agents",
        "An agent's settings (prompt, voice, tools) were modified.",
        obj(("agent", "changed"), agent=AGENT, changed=STRS, version=INT, updated_by=STR),
        {
            "agent": SUPPORT_BOT,
            "changed": ["prompt", "voice"],
            "version": 14,
            "updated_by": "user_ops_1",
        },
    ),
    EventType(
        "agent.sync_status_changed",
        "Agents",
        "An agent's synchronisation (knowledge, telephony, CRM) changed state.",
        obj(
            ("agent", "status"),
            agent=AGENT,
            status={"enum": ["syncing", "synced", "failed"]},
            error=STR,
        ),
        {"agent": SUPPORT_BOT, "status": "failed", "error": "CRM token expired"},
    ),
    EventType(
        "agent.performance_alert",
        "Agents",
        "An agent crossed a performance threshold.",
        obj(
            ("agent", "metric", "value", "threshold"),
            agent=AGENT,
            metric=STR,
            value=NUM,
            threshold=NUM,
            window_minutes=INT,
        ),
        {
            "agent": SUPPORT_BOT,
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
        obj(("campaign",), campaign=CAMPAIGN, contacts=INT),
        {"campaign": SPRING, "contacts": 1200},
    ),
    EventType(
        "campaign.paused",
        "Campaigns",
        "A campaign was paused, by a person or by a rule.",
        obj(("campaign",), campaign=CAMPAIGN, reason=STR, paused_by=STR),
        {
            "campaign": {**SPRING, "status": "paused"},
            "reason": "manual",
            "paused_by": "user_ops_1",
        },
    ),
    EventType(
        "campaign.completed",
        "Campaigns",
        "A campaign finished its contact list.",
        obj(
            ("campaign", "stats"),
            campaign=CAMPAIGN,
            stats=obj((), calls=INT, answered=INT, converted=INT),
        ),
        {
            "campaign": {**SPRING, "status": "completed"},
            "stats": {"calls": 1200, "answered": 640, "converted": 85},
        },
    ),
    EventType(
        "campaign.quota_reached",
        "Campaigns",
        "A campaign hit a limit it was given (calls, spend, conversions).",
        obj(
            ("campaign", "quota"),
            campaign=CAMPAIGN,
            quota=obj(("name", "limit"), name=STR, limit=NUM, used=NUM),
        ),
        {"campaign": SPRING, "quota": {"name": "daily_calls", "limit": 500, "used": 500}},
    ),
    # System
    EventType(
        "knowledge_base.updated",
        "System",
        "A knowledge base was modified.",
        obj(
            ("knowledge_base",),
            knowledge_base=obj(("id",), id=STR, name=STR),
            documents_added=INT,
            documents_removed=INT,
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
        obj(
            ("phone_number",),
            phone_number=obj(("number",), number=PHONE, agent_id=STR),
            changed=STRS,
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
        obj(("user_id", "action"), user_id=STR, action=STR, resource=obj((), type=STR, id=STR)),
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
        obj(
            ("status", "starts_at"),
            status={"enum": ["scheduled", "started", "completed"]},
            starts_at=TIME,
            ends_at=TIME,
            message=STR,
        ),
        {
            "status": "scheduled",
            "starts_at": "2026-11-29T02:00:00Z",
            "ends_at": "2026-11-29T03:00:00Z",
            "message": "Telephony provider upgrade",
        },
    ),
)
