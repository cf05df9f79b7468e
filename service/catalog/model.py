"""One catalogued event type: its name, its group, what it means, its schema, a sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.catalog.correlation import key_paths
from service.catalog.schemas import Schema


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
            # The paths that identify the call, conversation, contact, campaign or agent.
            "keys": key_paths(self.sample),
        }
