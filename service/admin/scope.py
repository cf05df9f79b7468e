"""Who a request acts for, and the one check of what it may see.

The operator token acts for every tenant (scope None); a tenant API key for its own tenant
only. Everything of another tenant answers exactly as a missing id does, so nothing confirms
that another tenant's resource exists.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from aiohttp import web

# Who a request acts for: None for the operator token, else the tenant of its API key.
SCOPE: Final = web.RequestKey[str | None]("scope")
SUB_ID: Final = re.compile(r"sub_[0-9a-f]{24}")


def visible(tenant_id: str, scope: str | None) -> bool:
    """Whether a resource of `tenant_id` may be seen by a request acting for `scope`."""
    return scope is None or tenant_id == scope


def tenant_filter(request: web.Request, asked: str | None) -> str | bool | None:
    """The tenant a listing is limited to: the scope's, or the one asked for. False when
    the request asks for another tenant than its own (an empty listing)."""
    scope = request[SCOPE]
    if scope is None:
        return asked
    return scope if asked in (None, scope) else False


def scoped_tenant(request: web.Request, asked: str | None) -> str | Literal[False] | None:
    """`tenant_filter` typed for queries: a tenant, None for all, False for nothing."""
    tenant = tenant_filter(request, asked)
    return tenant if isinstance(tenant, str) or tenant is None else False
