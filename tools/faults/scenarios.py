"""The faults of issue #16, each a function of the run it acts on (`harness.Run`).

Their lengths come from the run's size: a cut "shorter than the session timeout" is half of
it, a long one two and a half times it, so the short and the full suites test the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from pathlib import Path
from typing import Final

import asyncpg

from tools.faults.harness import Fault, Run, Scenario
from tools.postgres import EmbeddedPostgres

# The receiver's name in the scenario where it stops resolving; `.test` is reserved
# (RFC 2606), so no real resolver answers for it.
TARGET_NAME: Final = "receiver.switchboard.test"


async def cut_short(run: Run) -> None:
    run.checks["connections_cut"] = run.proxy.isolate()
    await asyncio.sleep(run.size.session * 0.5)
    run.proxy.restore()


async def cut_long(run: Run) -> None:
    run.checks["connections_cut"] = run.proxy.isolate()
    await asyncio.sleep(run.size.session * 2.5)
    run.proxy.restore()


async def sigkill_during_cut(run: Run) -> None:
    run.proxy.isolate()
    await asyncio.sleep(run.size.session * 0.3)
    victim = run.fleet.replicas[1]
    victim.kill()
    await asyncio.sleep(run.size.session * 0.7)
    run.proxy.restore()
    victim.start()  # as its supervisor would


async def rolling_restart(run: Run) -> None:
    codes, took = [], []
    for replica in run.fleet.replicas:
        started = time.monotonic()
        codes.append(await replica.stop())
        stopped = time.monotonic()
        replica.start()
        await replica.wait_ready()
        took.append(f"{stopped - started:.1f}+{time.monotonic() - stopped:.1f}")
    run.checks["exit_codes"] = codes
    # Per replica: seconds to drain and exit, then to start and report ready.
    run.checks["stop_start_s"] = took
    run.checks["exits_clean_ok"] = all(code == 0 for code in codes)


async def slow_broker(run: Run) -> None:
    run.proxy.delay(run.size.latency)
    await asyncio.sleep(run.size.fault)
    run.proxy.restore()


def _target_mode(mode: str) -> Fault:
    async def fault(run: Run) -> None:
        target = run.endpoints.paths["target"]
        target.mode = mode
        await asyncio.sleep(run.size.fault)
        target.mode = "ok"

    return fault


# The history store: a server of the scenario's own, stopped and started again.


class _Store:
    def __init__(self) -> None:
        self.pg: EmbeddedPostgres | None = None

    def env(self) -> dict[str, str]:
        self.pg = EmbeddedPostgres().start()
        return {"SWITCHBOARD_HISTORY_DSN": self.pg.dsn}

    async def fault(self, run: Run) -> None:
        assert self.pg is not None
        await asyncio.to_thread(self.pg.stop)
        await asyncio.sleep(run.size.fault)
        await asyncio.to_thread(self.pg.restart)

    async def check(self, run: Run) -> None:
        """Every attempt the replica logged is in the store once."""
        assert self.pg is not None
        produced = await _attempts_logged(run)
        deadline = asyncio.get_running_loop().time() + 60
        rows = distinct = 0
        while asyncio.get_running_loop().time() < deadline:
            conn = await asyncpg.connect(self.pg.dsn)
            try:
                rows, distinct = await conn.fetchrow(
                    "SELECT count(*), count(DISTINCT id) FROM attempts"
                )  # type: ignore[misc]
            finally:
                await conn.close()
            if rows >= produced:
                break
            await asyncio.sleep(0.5)
        run.checks.update(attempts_logged=produced, attempts_indexed=rows,
                          indexed_once_ok=rows == distinct == produced)  # fmt: skip

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()
            self.pg = None


async def _attempts_logged(run: Run) -> int:
    """Every attempt the replicas made (each is logged once to the attempts topic)."""
    total = 0.0
    for replica in run.fleet.replicas:
        samples = await replica.metrics(run.fleet.http)
        total += sum(v for k, v in samples.items()
                     if k.startswith("switchboard_delivery_attempts_total{"))  # fmt: skip
    return int(total)


# The receiver's name: each replica runs in a mount namespace of its own whose /etc/hosts
# is a file the scenario edits (glibc reads it at every lookup), so the name resolves, then
# does not, then does again. The service resolves names with getaddrinfo through its guarded
# resolver, as in production; only the hosts file is the scenario's.


class _Names:
    def __init__(self) -> None:
        self.hosts = Path(tempfile.gettempdir()) / f"switchboard-hosts-{uuid.uuid4().hex}"

    def env(self) -> dict[str, str]:
        self.resolve(True)
        # Every new connection resolves the name (the default reuses an answer for 60 s).
        return {"SWITCHBOARD_DNS_CACHE_SECONDS": "0"}

    def resolve(self, on: bool) -> None:
        line = f"127.0.0.1 {TARGET_NAME}\n" if on else ""
        # Rewritten in place: the bind mount holds this inode.
        with self.hosts.open("r+" if self.hosts.exists() else "w") as f:
            f.seek(0)
            f.write(Path("/etc/hosts").read_text() + line)
            f.truncate()

    @property
    def wrap(self) -> tuple[str, ...]:
        return ("unshare", "--mount", "sh", "-c",
                'mount --bind "$0" /etc/hosts && exec "$@"', str(self.hosts))  # fmt: skip

    async def fault(self, run: Run) -> None:
        self.resolve(False)
        await asyncio.sleep(run.size.fault)
        self.resolve(True)

    async def check(self, run: Run) -> None:
        failed = 0.0
        for replica in run.fleet.replicas:
            samples = await replica.metrics(run.fleet.http)
            failed += sum(v for k, v in samples.items()
                          if k.startswith("switchboard_delivery_attempts_total")
                          and 'outcome="dns_error"' in k)  # fmt: skip
        # The fault must have bitten, or the scenario proved nothing.
        run.checks["dns_errors"] = int(failed)
        run.checks["dns_errors_seen_ok"] = failed > 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.hosts.unlink()


# The short suite's groups, each run on one broker and fleet (`harness.run_group`): the
# scenarios of a group need the same fleet, and each leaves it whole and ready. The rolling
# restart goes first, so that its lookups are measured on a fleet no earlier fault unsettled.
SHORT_GROUPS: Final = (
    ("rolling", "cut-short", "slow-broker"),
    ("kill-in-cut", "cut-long"),
    ("hang", "trickle", "store-down"),
    ("dns",),
)


def short_groups() -> list[list[Scenario]]:
    by_key = {s.key: s for s in all_scenarios()}
    groups = [[by_key.pop(key) for key in group] for group in SHORT_GROUPS]
    assert not by_key, f"scenarios in no group: {sorted(by_key)}"
    return groups


def all_scenarios() -> list[Scenario]:
    store, names = _Store(), _Names()
    return [
        Scenario("cut-short", "broker cut < session timeout", cut_short),
        Scenario("cut-long", "broker cut > session timeout", cut_long),
        Scenario("kill-in-cut", "SIGKILL of a replica during a cut", sigkill_during_cut),
        Scenario("rolling", "rolling restart, with lookups", rolling_restart, lookups=True),
        Scenario("slow-broker", "slow broker", slow_broker),
        Scenario("store-down", "history store down and back", store.fault, replicas=1,
                 env=store.env, check=store.check, close=store.close),
        Scenario("hang", "receiver accepts, never answers", _target_mode("hang"), replicas=1,
                 target=True),
        Scenario("trickle", "receiver trickles its response", _target_mode("trickle"),
                 replicas=1, target=True),
        Scenario("dns", "receiver name stops resolving", names.fault, replicas=1, target=True,
                 target_host=TARGET_NAME, target_mode="close", wrap=names.wrap,
                 env=names.env, check=names.check, close=names.close),
    ]  # fmt: skip
