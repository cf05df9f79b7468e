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

# Keys compared byte by byte (COLLATE "C"): an index insert compares a key a dozen times, and
# a locale's comparison costs several times memcmp (measured: the attempts insert took 40% less
# CPU). They are identifiers, never sorted for people, and equality is the same in any
# deterministic collation. The id's byte order also makes its prefix (the webhook-id, see
# service/attempt_log/record.py) a range of the primary key, which serves webhook-id lookups
# in place of an index of their own. The secondary indexes drop their trailing id: the keyset
# tie-break on equal times is an incremental sort of a few rows, and each entry is 40-odd
# bytes shorter. Indexes are dropped before the ALTER (which would rebuild them) and created
# after; on a store holding data this rebuilds the primary key and the indexes once.
_KEYS_AND_HOURS: Final = """
DROP INDEX attempts_by_subscription, attempts_by_event, attempts_by_webhook, attempts_by_call,
    attempts_by_conversation, attempts_by_contact, attempts_by_campaign, attempts_by_agent;
ALTER TABLE attempts
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN subscription_id TYPE text COLLATE "C",
    ALTER COLUMN event_id TYPE text COLLATE "C",
    ALTER COLUMN webhook_id TYPE text COLLATE "C",
    ALTER COLUMN call_id TYPE text COLLATE "C",
    ALTER COLUMN conversation_id TYPE text COLLATE "C",
    ALTER COLUMN contact_id TYPE text COLLATE "C",
    ALTER COLUMN campaign_id TYPE text COLLATE "C",
    ALTER COLUMN agent_id TYPE text COLLATE "C";
CREATE INDEX attempts_by_subscription ON attempts (subscription_id, at DESC);
CREATE INDEX attempts_by_event ON attempts (event_id, at DESC);
CREATE INDEX attempts_by_call ON attempts (call_id, at DESC) WHERE call_id IS NOT NULL;
CREATE INDEX attempts_by_conversation ON attempts (conversation_id, at DESC)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX attempts_by_contact ON attempts (contact_id, at DESC) WHERE contact_id IS NOT NULL;
CREATE INDEX attempts_by_campaign ON attempts (campaign_id, at DESC)
    WHERE campaign_id IS NOT NULL;
CREATE INDEX attempts_by_agent ON attempts (agent_id, at DESC) WHERE agent_id IS NOT NULL;
ALTER TABLE attempt_minutes ALTER COLUMN subscription_id TYPE text COLLATE "C";

-- The 7 d and 30 d stats windows read these: 720 rows a month, not 43,200 (the minutes).
-- Written with the minutes, in the same transaction, from the same rows.
CREATE TABLE attempt_hours (
    hour timestamptz NOT NULL,
    subscription_id text COLLATE "C" NOT NULL,
    attempts integer NOT NULL,
    succeeded integer NOT NULL,
    buckets integer[] NOT NULL,
    PRIMARY KEY (subscription_id, hour)
) PARTITION BY RANGE (hour);
-- The hours of the minutes stored before this version: their day partitions, then their sums.
DO $$
DECLARE d date;
BEGIN
    FOR d IN SELECT DISTINCT (minute AT TIME ZONE 'UTC')::date FROM attempt_minutes LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF attempt_hours FOR VALUES FROM (%L) TO (%L)',
            'attempt_hours_' || to_char(d, 'YYYYMMDD'), d::timestamp AT TIME ZONE 'UTC',
            (d + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
END $$;
INSERT INTO attempt_hours (hour, subscription_id, attempts, succeeded, buckets)
SELECT c.hour, c.subscription_id, c.attempts, c.succeeded, array_agg(b.n ORDER BY b.i)
FROM (SELECT date_trunc('hour', minute, 'UTC') AS hour, subscription_id,
          sum(attempts) AS attempts, sum(succeeded) AS succeeded
      FROM attempt_minutes GROUP BY 1, 2) c
JOIN (SELECT date_trunc('hour', minute, 'UTC') AS hour, subscription_id, u.i,
          sum(u.n)::integer AS n
      FROM attempt_minutes, unnest(buckets) WITH ORDINALITY AS u(n, i) GROUP BY 1, 2, 3) b
    USING (hour, subscription_id)
GROUP BY c.hour, c.subscription_id, c.attempts, c.succeeded;
"""

_PORTAL_LINKS: Final = """
-- Portal links opened: a link opens once across every replica (service/portal/link_uses.py).
CREATE TABLE portal_links_used (
    link_id text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX portal_links_used_by_expiry ON portal_links_used (expires_at);
"""

_ATTEMPT_ROW: Final = """
-- An attempt as the indexer sends it (service/history/writes.py): a batch is one array of
-- these, which the driver encodes far more cheaply than an array per column.
CREATE TYPE attempt_row AS (
    at timestamptz,
    id text,
    subscription_id text,
    tenant_id text,
    event_id text,
    event_type text,
    webhook_id text,
    attempt integer,
    trigger text,
    method text,
    url text,
    outcome text,
    status integer,
    latency_ms double precision,
    error text,
    response_excerpt text,
    call_id text,
    conversation_id text,
    contact_id text,
    campaign_id text,
    agent_id text,
    replay_of text
);
"""

# (version, name, SQL): append only.
MIGRATIONS: Final[tuple[tuple[int, str, str], ...]] = (
    (1, "attempts, roll-ups, dead letters", _ATTEMPTS),
    (2, "routing decisions; the dead letter an attempt replays", _ROUTING),
    (3, "byte-order keys, slimmer indexes; hourly roll-ups", _KEYS_AND_HOURS),
    (4, "portal links opened", _PORTAL_LINKS),
    (5, "the indexer's attempt row type", _ATTEMPT_ROW),
)


def checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


async def migrate(conn: Conn, until: int | None = None) -> list[int]:
    """Apply what is missing (up to version `until`, for a test of an upgrade); returns the
    versions applied by this call."""
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
            if until is not None and version > until:
                break
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
