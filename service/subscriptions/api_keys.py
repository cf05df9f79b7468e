"""Tenant-scoped API keys: a bearer key that can see and change one tenant's resources only.

Only a SHA-256 of a key is stored (in the subscriptions topic, as `key_…` records); the key
itself is shown once, when it is created. Keys are long random strings, so a plain hash is
enough: there is nothing to brute-force that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

import msgspec

from service.subscriptions.model import now_rfc3339

KEY_PREFIX: Final = "sbk_"
RECORD_PREFIX: Final = "key_"


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    name: str
    key_hash: str
    created_at: str

    def public(self) -> dict[str, object]:
        out: dict[str, object] = msgspec.to_builtins(self)
        del out["key_hash"]
        return out


class ApiKeyCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tenant_id: str
    name: str = ""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key(req: ApiKeyCreate) -> tuple[ApiKey, str]:
    """A new key record and the key itself (returned to the caller once, never stored)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        id=RECORD_PREFIX + secrets.token_hex(12),
        tenant_id=req.tenant_id,
        name=req.name,
        key_hash=hash_key(key),
        created_at=now_rfc3339(),
    )
    return record, key
