"""`switchboard`: run the service, check a configuration, or migrate the history store."""

from __future__ import annotations

import argparse
import asyncio
import sys

from service import __version__, garbage
from service.app import migrate_history, reseal_secrets, serve
from service.config import ConfigError, load_settings
from service.observability.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=["run", "check-config", "reseal-secrets", "migrate"],
    )
    parser.add_argument("--config", help="YAML settings file (environment variables win)")
    parser.add_argument("--version", action="version", version=f"switchboard {__version__}")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(config_file=args.config)
    except ConfigError as exc:
        print(f"switchboard: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "check-config":
        print("configuration ok")
        return 0
    if args.command == "reseal-secrets":
        if not settings.secrets_key:
            print("switchboard: reseal-secrets needs SWITCHBOARD_SECRETS_KEY", file=sys.stderr)
            return 2
        print(f"resealed {asyncio.run(reseal_secrets(settings))} subscriptions")
        return 0
    if args.command == "migrate":
        if not settings.history_dsn:
            print("switchboard: migrate needs SWITCHBOARD_HISTORY_DSN", file=sys.stderr)
            return 2
        applied = asyncio.run(migrate_history(settings))
        print(f"history schema up to date (applied: {applied or 'none'})")
        return 0
    garbage.tune()
    if settings.event_loop == "uvloop":
        try:
            import uvloop  # noqa: PLC0415 - optional: absent on platforms without it
        except ImportError:
            print("switchboard: uvloop is not installed; using asyncio", file=sys.stderr)
        else:
            return uvloop.run(serve(settings))
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
