"""Versioned migrations of the history schema, applied at start and by `switchboard migrate`.

Each migration runs once, in order, in its own transaction, and is recorded in
`schema_migrations`. A session-level advisory lock serializes replicas that start together:
the second waits, then finds every version applied and does nothing. Migrations are only ever
appended; an applied one is never edited (a test checks the recorded checksums).
"""

from __future__ import annotations

import hashlib
from typing import Final

import structlog

from service.history.conn import Conn

log = structlog.get_logger("switchboard.history")

# Any constant both replicas agree on; this one spells "swbd" so it is recognisable in
# pg_locks next to other applications' advisory locks.
MIGRATION_LOCK: Final = 0x73776264

_ATTEMPTS: Final = """
CREATE TABLE attempts (
    at timestamptz NOT NULL,
    id text NOT NULL,
    subscription_id text NOT NULL,
    tenant_id text NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    webhook_id text NOT NULL,
    attempt integer NOT NULL,
    trigger text NOT NULL,
    method text NOT NULL,
    url text NOT NULL,
    outcome text NOT NULL,
    status integer,
    latency_ms double precision NOT NULL,
    error text,
    response_excerpt text NOT NULL,
    call_id text,
    conversation_id text,
    contact_id text,
    campaign_id text,
    agent_id text,
    -- The attempt id embeds its time in milliseconds, so (id, at) is as unique as id alone;
    -- a partitioned table's keys must include the partition key.
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE INDEX attempts_by_subscription ON attempts (subscription_id, at DESC, id DESC);
CREATE INDEX attempts_by_event ON attempts (event_id, at DESC, id DESC);
CREATE INDEX attempts_by_webhook ON attempts (webhook_id, at DESC, id DESC);
CREATE INDEX attempts_by_call ON attempts (call_id, at DESC, id DESC)
    WHERE call_id IS NOT NULL;
CREATE INDEX attempts_by_conversation ON attempts (conversation_id, at DESC, id DESC)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX attempts_by_contact ON attempts (contact_id, at DESC, id DESC)
    WHERE contact_id IS NOT NULL;
CREATE INDEX attempts_by_campaign ON attempts (campaign_id, at DESC, id DESC)
    WHERE campaign_id IS NOT NULL;
CREATE INDEX attempts_by_agent ON attempts (agent_id, at DESC, id DESC)
    WHERE agent_id IS NOT NULL;

CREATE TABLE attempt_minutes (
    minute timestamptz NOT NULL,
    subscription_id text NOT NULL,
    attempts integer NOT NULL,
    succeeded integer NOT NULL,
    -- Counts per latency bucket (service/history/rollup.py BOUNDS_MS, then +Inf).
    buckets integer[] NOT NULL,
    PRIMARY KEY (subscription_id, minute)
) PARTITION BY RANGE (minute);

CREATE TABLE dead_letters (
    dead_lettered_at timestamptz NOT NULL,
    id text NOT NULL,
    subscription_id text NOT NULL,
    tenant_id text NOT NULL,
    reason text,
    event_id text NOT NULL,
    -- The dead-letter record as Kafka holds it: what a replay produces again.
    record bytea NOT NULL,
    replay_claimed_at timestamptz,
    replayed_at timestamptz,
    PRIMARY KEY (id, dead_lettered_at)
) PARTITION BY RANGE (dead_lettered_at);
CREATE INDEX dead_letters_by_time ON dead_letters (dead_lettered_at, id);
CREATE INDEX dead_letters_by_tenant ON dead_letters (tenant_id, dead_lettered_at, id);
CREATE INDEX dead_letters_by_subscription ON dead_letters (subscription_id, dead_lettered_at, id);
"""

_ROUTING: Final = """
ALTER TABLE attempts ADD COLUMN replay_of text;
CREATE TABLE routing_decisions (
    at timestamptz NOT NULL,
    event_id text NOT NULL,
    tenant_id text NOT NULL,
    -- The decision as the attempts topic holds it (service/routing/decision.py), one event's.
    decision bytea NOT NULL,
    -- An event read twice (a redelivery) has a decision per reading; the newest answers.
    PRIMARY KEY (event_id, at)
) PARTITION BY RANGE (at);
"""

_PORTAL_LINKS: Final = """
-- Portal links opened: a link opens once across every replica (service/portal/link_uses.py).
CREATE TABLE portal_links_used (
    link_id text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX portal_links_used_by_expiry ON portal_links_used (expires_at);
"""

# (version, name, SQL): append only.
MIGRATIONS: Final[tuple[tuple[int, str, str], ...]] = (
    (1, "attempts, roll-ups, dead letters", _ATTEMPTS),
    (2, "routing decisions; the dead letter an attempt replays", _ROUTING),
    (3, "portal links opened", _PORTAL_LINKS),
)


def checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


async def migrate(conn: Conn) -> list[int]:
    """Apply what is missing; returns the versions applied by this call."""
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
            "name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL "
            "DEFAULT now())"
        )
        done = {
            row["version"]: row["checksum"]
            for row in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for version, name, sql in MIGRATIONS:
            if version in done:
                if done[version] != checksum(sql):
                    log.warning("migration_changed_after_apply", version=version)
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    version, name, checksum(sql),
                )  # fmt: skip
            applied.append(version)
            log.info("migration_applied", version=version, name=name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied
