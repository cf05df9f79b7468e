"""An embedded PostgreSQL 16 (the binaries of the `pgserver` package) for the tests, the
demo and the benchmark: a real server on a Unix socket in a directory of its own, stopped
(and optionally restarted, to test an outage) on request.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import urllib.parse
import warnings
from pathlib import Path
from types import TracebackType
from typing import Self

# pgserver asks platformdirs for a runtime directory when imported; without XDG_RUNTIME_DIR
# (CI, containers) that warns and falls back to /tmp, which is what we want anyway.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pgserver._commands import POSTGRES_BIN_PATH
    from pgserver.postgres_server import PostgresServer, get_server


class EmbeddedPostgres:
    """`pgdata` defaults to a fresh directory under the system's temporary directory, removed
    on close. Not under pytest's: pytest makes its own root private (0700) at every session
    start, which locks out the server's system user (PostgreSQL refuses to run as root)."""

    def __init__(self, pgdata: Path | None = None) -> None:
        self._owned = pgdata is None
        self.pgdata = pgdata or Path(tempfile.mkdtemp(prefix="switchboard-pg-")) / "data"
        self._server: PostgresServer | None = None

    @property
    def dsn(self) -> str:
        assert self._server is not None
        uri: str = self._server.get_uri()
        return uri

    def start(self) -> Self:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown: connections are cut), keeping its data."""
        assert self._server is not None
        self._pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        """Start it again after `stop`, on the same socket."""
        server = self._server
        assert server is not None
        socket_dir = urllib.parse.parse_qs(urllib.parse.urlsplit(self.dsn).query)["host"][0]
        self._pg_ctl(
            "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self.pgdata / "log"), "start"
        )

    def _pg_ctl(self, *args: str) -> None:
        assert self._server is not None
        # As pgserver does: PostgreSQL refuses to run as root, so as its own system user.
        subprocess.run(  # noqa: S603 - the package's own pg_ctl, arguments built here
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-w", *args],
            check=True, user=self._server.system_user, timeout=30, capture_output=True,
        )  # fmt: skip

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._owned:
            shutil.rmtree(self.pgdata.parent, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def with_settings(dsn: str, **settings: str) -> str:
    """The DSN with server settings (asyncpg passes unknown query parameters to the server,
    e.g. `search_path`)."""
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qsl(parts.query) + list(settings.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
