"""Command line: `python -m bot serve | sandbox | migrate | billing | templates …`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from bot import logs
from bot.config import ConfigError, Settings

log = logging.getLogger("bot")

# `billing` subcommands that change one record the way a billing system's staff or cron
# would, emitting the matching event: (help, argument name).
_BILLING_ACTIONS = {
    "pay": ("mark an invoice paid (applies what it pays for)", "invoice_id"),
    "cancel-invoice": ("void an unpaid invoice", "invoice_id"),
    "suspend": ("suspend a service", "service_id"),
    "unsuspend": ("reactivate a suspended service", "service_id"),
    "terminate": ("terminate a service (baja)", "service_id"),
    "delete-domain": ("remove a domain from the database", "domain_id"),
}


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
    billing_sub.add_parser("export", help="the current data as JSON on stdout")
    for name, (help_text, argument) in _BILLING_ACTIONS.items():
        billing_sub.add_parser(name, help=help_text).add_argument(argument)
    quote = billing_sub.add_parser("quote", help="make a quote available to a client")
    quote.add_argument("client_id")
    quote.add_argument("total")
    quote.add_argument("--subject", default="")
    whmcs = sub.add_parser("whmcs", help="the WHMCS backend")
    whmcs_sub = whmcs.add_subparsers(dest="whmcs_command", required=True)
    sync = whmcs_sub.add_parser(
        "sync",
        help="rebuild the phone → client index from WHMCS, continuing a pass cut short",
    )
    sync.add_argument(
        "--restart", action="store_true", help="drop a pass cut short and start from client 1"
    )
    whmcs_sub.add_parser("refresh", help="re-read one client into the index").add_argument(
        "client_id"
    )
    whmcs_sub.add_parser("unresolved", help="upgrades and cancellations whose outcome is unknown")
    templates = sub.add_parser("templates", help="the alerts' WhatsApp templates")
    templates_sub = templates.add_subparsers(dest="templates_command", required=True)
    export = templates_sub.add_parser("export", help="Meta's template-creation JSON of each")
    export.add_argument("--out", type=Path, help="write to this file (default stdout)")
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
        return asyncio.run(_with_billing(settings, _migrated))
    if args.command == "whmcs":
        return asyncio.run(_whmcs(settings, args))
    if args.command == "templates":
        return _templates(settings, args)
    return _billing(settings, args)


def _templates(settings: Settings, args: argparse.Namespace) -> int:
    from bot.templates import definitions, problems
    from flows.catalog import default_catalog

    found = definitions(default_catalog(), settings.panel_url)
    broken = [f"{d.get('name')}: {p}" for d in found for p in problems(d)]
    if broken:
        print(f"nothing was exported; {len(broken)} problem(s):", file=sys.stderr)
        for problem in broken:
            print(f"  {problem}", file=sys.stderr)
        return 1
    text = json.dumps(found, ensure_ascii=False, indent=2)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


def _billing(settings: Settings, args: argparse.Namespace) -> int:
    from flows.billing import BillingRefused
    from store.billing_import import ImportProblems
    from store.billing_local import LocalBilling

    command: str = args.billing_command
    action: Callable[[LocalBilling], Awaitable[int]]
    if command == "load":
        try:
            data = json.loads(args.file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            print(f"cannot read {args.file}: {e}", file=sys.stderr)
            return 1

        async def action(b: LocalBilling) -> int:
            await b.load(data)
            print(f"loaded {args.file}", file=sys.stderr)
            return 0

    elif command == "export":

        async def action(b: LocalBilling) -> int:
            print(json.dumps(await b.export(), ensure_ascii=False, indent=2))
            return 0

    elif command == "quote":
        try:
            total = Decimal(args.total)
        except InvalidOperation:
            print(f"total {args.total!r} is not an amount", file=sys.stderr)
            return 2

        async def action(b: LocalBilling) -> int:
            print(await b.create_quote(args.client_id, total, subject=args.subject))
            return 0

    else:
        record_id = getattr(args, _BILLING_ACTIONS[command][1])
        run: dict[str, Callable[[LocalBilling], Awaitable[Any]]] = {
            "pay": lambda b: b.pay_invoice(record_id),
            "cancel-invoice": lambda b: b.cancel_invoice(record_id),
            "suspend": lambda b: b.set_service_status(record_id, "suspended"),
            "unsuspend": lambda b: b.set_service_status(record_id, "active"),
            "terminate": lambda b: b.set_service_status(record_id, "terminated"),
            "delete-domain": lambda b: b.delete_domain(record_id),
        }

        async def action(b: LocalBilling) -> int:
            await run[command](b)
            print(f"{command} {record_id}: done", file=sys.stderr)
            return 0

    try:
        return asyncio.run(_with_billing(settings, action))
    except ImportProblems as e:
        print(f"nothing was imported; {len(e.problems)} problem(s):", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except BillingRefused as e:
        print(f"{command}: {e}", file=sys.stderr)
        return 1


async def _with_billing(settings: Settings, action: Callable[[Any], Awaitable[int]]) -> int:
    from bot.app import make_billing, open_pool
    from store.billing_local import LocalBilling

    pool = await open_pool(settings)
    try:
        billing = make_billing(settings.with_(billing_backend="local"), pool)
        assert isinstance(billing, LocalBilling)
        return await action(billing)
    finally:
        await pool.close()


async def _whmcs(settings: Settings, args: argparse.Namespace) -> int:
    from bot.app import open_pool
    from bot.whmcs import WhmcsBilling
    from flows.billing import BillingError
    from store import whmcs_index

    pool = await open_pool(settings)
    try:
        if args.whmcs_command == "unresolved":
            for request in await whmcs_index.unresolved_requests(pool):
                print(request)
            return 0
        async with WhmcsBilling(settings, pool) as whmcs:
            if args.whmcs_command == "sync":
                if args.restart:
                    await whmcs_index.forget_sync_progress(pool)
                print(await whmcs.sync_clients())
            else:
                print(await whmcs.refresh_client(args.client_id))
        return 0
    except (ConfigError, BillingError) as e:
        print(f"whmcs {args.whmcs_command}: {e}", file=sys.stderr)
        return 1
    finally:
        await pool.close()


async def _migrated(_billing: Any) -> int:
    print("migrations applied", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
