"""Command line: `python -m bot serve | sandbox | migrate | billing load FILE`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from bot import logs
from bot.config import ConfigError, Settings

log = logging.getLogger("bot")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the service (webhook, workers, health, metrics)")
    sandbox = sub.add_parser("sandbox", help="everything local, with a phone simulator")
    sandbox.add_argument("--port", type=int, default=None, help="HTTP port (default PORT or 8080)")
    sub.add_parser("migrate", help="apply database migrations")
    billing = sub.add_parser("billing", help="the local billing backend")
    billing_sub = billing.add_subparsers(dest="billing_command", required=True)
    load = billing_sub.add_parser("load", help="import clients, products, services… (JSON)")
    load.add_argument("file", type=Path)
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    if args.command == "sandbox":
        from bot.sandbox import run_sandbox

        logs.setup(settings.log_level, as_json=False)
        return run_sandbox(settings, port=args.port)
    logs.setup(settings.log_level, as_json=settings.log_json)
    if args.command == "serve":
        from bot.serve import serve

        return serve(settings)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "billing" and args.billing_command == "load":
        try:
            data = json.loads(args.file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            print(f"cannot read {args.file}: {e}", file=sys.stderr)
            return 1
        return asyncio.run(_billing_load(settings, args.file, data))
    parser.error("unknown command")
    return 2


async def _migrate(settings: Settings) -> int:
    from bot.app import open_pool

    pool = await open_pool(settings)
    await pool.close()
    print("migrations applied")
    return 0


async def _billing_load(settings: Settings, path: Path, data: dict[str, object]) -> int:
    from bot.app import open_pool
    from store.billing_local import LocalBilling

    pool = await open_pool(settings)
    try:
        await LocalBilling(pool, default_region=settings.default_region).load(data)
    finally:
        await pool.close()
    print(f"loaded {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
