"""Which portal links were opened: the record that makes a link one-time across replicas.

Kept in the history store (PostgreSQL), which every replica shares: the insert of the link's
id either creates its row or finds one, atomically, so of two replicas opening the same link
at once exactly one succeeds. A row is useless once its link has expired; each opening
deletes those, so the table holds at most the links of the last few minutes.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg


async def first_opening(pool: asyncpg.Pool, link_id: str, expires: float) -> bool:
    """Records that the link `link_id` is opened; False if it was opened before."""
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM portal_links_used WHERE expires_at < now()")
        row = await conn.fetchrow(
            "INSERT INTO portal_links_used (link_id, expires_at) VALUES ($1, $2) "
            "ON CONFLICT (link_id) DO NOTHING RETURNING link_id",
            link_id,
            datetime.fromtimestamp(expires, UTC),
        )
    return row is not None
