"""Signed tokens of the portal: the one-time link and the session cookie, and the CSRF token
of a session.

Both are a JSON payload and an HMAC-SHA256 over it, base64url. The MAC covers the kind of
token, so a link can never serve as a cookie or the reverse. The key is derived from the
admin token, so every replica agrees on it with no setting of its own, and changing the admin
token ends every portal session and link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Final, Literal

import msgspec

# A link is for opening at once (the platform hands it to the page that embeds the portal);
# five minutes cover a slow page load, and keep a leaked link short-lived.
LINK_SECONDS: Final = 300
# A session lasts what the platform asks, within these bounds (a working hour by default).
DEFAULT_SESSION_SECONDS: Final = 3600
MAX_SESSION_SECONDS: Final = 12 * 3600
MIN_SESSION_SECONDS: Final = 60

Kind = Literal["link", "session"]


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """What a link or a session allows: one tenant, until `expires` (unix seconds)."""

    id: str  # the link's one-time id, or the session's id
    tenant_id: str
    read_only: bool
    expires: float
    # A link's: how long the session it opens lasts.
    session_seconds: int = DEFAULT_SESSION_SECONDS


def portal_key(admin_token: str) -> bytes:
    return hmac.new(admin_token.encode(), b"switchboard portal v1", hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, kind: Kind, payload: bytes) -> bytes:
    return hmac.new(key, kind.encode() + b"." + payload, hashlib.sha256).digest()


def seal(key: bytes, kind: Kind, grant: Grant) -> str:
    payload = msgspec.json.encode(grant)
    return f"{_b64(payload)}.{_b64(_mac(key, kind, payload))}"


def unseal(key: bytes, kind: Kind, token: str) -> Grant | None:
    """The grant if `token` is one this key signed for `kind`, expired or not; else None."""
    head, _, tail = token.partition(".")
    try:
        payload, mac = _unb64(head), _unb64(tail)
    except ValueError:
        return None
    if not hmac.compare_digest(mac, _mac(key, kind, payload)):
        return None
    try:
        return msgspec.json.decode(payload, type=Grant)
    except msgspec.DecodeError:
        return None


def new_link(tenant_id: str, read_only: bool, session_seconds: int, now: float) -> Grant:
    return Grant(id=secrets.token_urlsafe(16), tenant_id=tenant_id, read_only=read_only,
                 expires=now + LINK_SECONDS, session_seconds=session_seconds)  # fmt: skip


def new_session(link: Grant, now: float | None = None) -> Grant:
    """A session for an opened link, with a fresh id: nothing known before the exchange
    (a cookie planted by someone else, the link's id) names the session."""
    start = time.time() if now is None else now
    return Grant(id=secrets.token_urlsafe(16), tenant_id=link.tenant_id,
                 read_only=link.read_only, expires=start + link.session_seconds)  # fmt: skip


def csrf_token(key: bytes, session: Grant) -> str:
    """The session's CSRF token: every form of the portal carries it, and a write without it
    (a cross-site form, which cannot read the page) is refused."""
    return _b64(hmac.new(key, b"csrf." + session.id.encode(), hashlib.sha256).digest())
