"""Signing and endpoint-auth secrets at rest: sealed in the subscriptions topic when a key is
configured.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) is authenticated: a token that was
altered, or sealed with another key, fails to open instead of yielding a wrong secret.
`SWITCHBOARD_SECRETS_KEY` holds one or more keys, comma-separated: the first seals, all open
(MultiFernet), which is how a key is rotated (docs/security.md).
"""

from __future__ import annotations

from typing import Final

import msgspec
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from service.subscriptions.auth import secret_of, with_secret
from service.subscriptions.model import Subscription

SEALED_PREFIX: Final = "sealed:v1:"
_SECRET_FIELDS: Final = ("secret", "previous_secret")


class SecretsUnavailable(Exception):
    """A sealed secret cannot be opened: no key, or none of the keys fits."""


class SecretBox:
    def __init__(self, keys: tuple[str, ...] = ()) -> None:
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys]) if keys else None

    def seal(self, sub: Subscription) -> Subscription:
        """The subscription as it is written to Kafka."""
        if self._fernet is None:
            return sub
        fernet = self._fernet
        changes: dict[str, object] = {
            name: SEALED_PREFIX + fernet.encrypt(value.encode()).decode()
            for name in _SECRET_FIELDS
            if (value := getattr(sub, name)) and not value.startswith(SEALED_PREFIX)
        }
        if sub.auth is not None and not (plain := secret_of(sub.auth)).startswith(SEALED_PREFIX):
            sealed = SEALED_PREFIX + fernet.encrypt(plain.encode()).decode()
            changes["auth"] = with_secret(sub.auth, sealed)
        return msgspec.structs.replace(sub, **changes) if changes else sub

    def open(self, sub: Subscription) -> Subscription:
        """The subscription as it is used in memory; raises SecretsUnavailable."""
        changes: dict[str, object] = {}
        for name in _SECRET_FIELDS:
            value = getattr(sub, name)
            if value and value.startswith(SEALED_PREFIX):
                changes[name] = self._open(value)
        if sub.auth is not None and (sealed := secret_of(sub.auth)).startswith(SEALED_PREFIX):
            changes["auth"] = with_secret(sub.auth, self._open(sealed))
        return msgspec.structs.replace(sub, **changes) if changes else sub

    def _open(self, value: str) -> str:
        if self._fernet is None:
            raise SecretsUnavailable("sealed secret but SWITCHBOARD_SECRETS_KEY is not set")
        try:
            return self._fernet.decrypt(value[len(SEALED_PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretsUnavailable("no configured key opens this secret") from None
