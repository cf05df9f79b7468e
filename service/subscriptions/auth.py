"""How a request proves itself to the endpoint, besides the signature.

Four kinds, chosen per subscription with `auth.type`:
- `api_key`: a static key in a header of the customer's choosing (default `X-Api-Key`);
- `basic`: HTTP Basic, username and password;
- `bearer`: a static bearer token;
- `oauth2_client_credentials`: a token fetched from the customer's token URL with their
  client id and secret (RFC 6749 section 4.4), cached until shortly before it expires,
  fetched again on expiry or after the endpoint answers 401 (`service/oauth.py`).
The secret part of each (key, password, token, client secret) is sealed at rest like the
signing secret, never returned by the API, and masked in test-send echoes and logs.
"""

from __future__ import annotations

import base64
from typing import Final

import msgspec

# Fields of the auth structs that are secrets: sealed at rest, masked in every view.
SECRET_FIELDS: Final = ("key", "password", "token", "client_secret")
MASK: Final = "********"
MAX_SECRET: Final = 4096


class ApiKeyAuth(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                 tag="api_key", tag_field="type"):  # fmt: skip
    header: str = "X-Api-Key"
    key: str


class BasicAuth(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                tag="basic", tag_field="type"):  # fmt: skip
    username: str
    password: str


class BearerAuth(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                 tag="bearer", tag_field="type"):  # fmt: skip
    token: str


class OAuth2Auth(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                 tag="oauth2_client_credentials", tag_field="type"):  # fmt: skip
    token_url: str
    client_id: str
    client_secret: str
    scope: str | None = None
    audience: str | None = None
    # RFC 6749 2.3.1: servers must accept HTTP Basic; some only read the form body.
    client_auth: str = "basic"


Auth = ApiKeyAuth | BasicAuth | BearerAuth | OAuth2Auth
# The values of `auth.type`, for error messages and docs.
AUTH_TYPES: Final = ("api_key", "basic", "bearer", "oauth2_client_credentials")


def secret_of(auth: Auth) -> str:
    match auth:
        case ApiKeyAuth():
            return auth.key
        case BasicAuth():
            return auth.password
        case BearerAuth():
            return auth.token
        case OAuth2Auth():
            return auth.client_secret


def with_secret(auth: Auth, secret: str) -> Auth:
    name = next(n for n in SECRET_FIELDS if n in auth.__struct_fields__)
    return msgspec.structs.replace(auth, **{name: secret})


def unmasked(new: Auth, saved: Auth | None) -> Auth:
    """`new` with the mask replaced by the saved secret of the same kind of auth.

    The API shows every secret as the mask, and clients send back what they read; saving the
    mask as the secret would break every delivery after. Raise ValueError when the mask
    stands for nothing (no saved secret, or one of another kind).
    """
    if secret_of(new) != MASK:
        return new
    if saved is None or type(saved) is not type(new):
        name = next(n for n in SECRET_FIELDS if n in new.__struct_fields__)
        kind = new.__struct_config__.tag
        raise ValueError(
            f"{name} is the mask {MASK!r}, and no saved {kind} secret to keep; send the real secret"
        )
    return with_secret(new, secret_of(saved))


def masked(auth: Auth) -> dict[str, object]:
    """The API view of an auth setting: everything but its secret."""
    out: dict[str, object] = msgspec.to_builtins(auth)
    for name in SECRET_FIELDS:
        if name in out:
            out[name] = MASK
    return out


def static_header(auth: Auth) -> tuple[str, str] | None:
    """The header every request carries for a static kind; None for OAuth2 (fetched)."""
    match auth:
        case ApiKeyAuth():
            return auth.header, auth.key
        case BasicAuth():
            pair = f"{auth.username}:{auth.password}".encode()
            return "Authorization", "Basic " + base64.b64encode(pair).decode()
        case BearerAuth():
            return "Authorization", "Bearer " + auth.token
    return None


def header_name(auth: Auth) -> str:
    return auth.header if isinstance(auth, ApiKeyAuth) else "Authorization"
