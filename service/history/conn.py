"""What the history modules run SQL on: a connection, or one borrowed from the pool."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy
# Reads may run on the pool itself (it borrows a connection per query).
Queryable: TypeAlias = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy
