"""Command line: `python -m bot serve | sandbox | migrate | billing | templates | staff …`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
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
    alerts = sub.add_parser("alerts", help="what became of the billing events' alerts")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True)
    status = alerts_sub.add_parser("status", help="each alert's state, newest first")
    status.add_argument("--client", help="only this billing client's")
    status.add_argument("--event", help="only this event id")
    status.add_argument("--since", help="received since: an ISO date/time or an age (2h, 3d)")
    status.add_argument("--limit", type=int, default=200)
    broadcast = sub.add_parser("broadcast", help="one approved template to a segment of clients")
    broadcast.add_argument("--template", required=True, help="the approved template's name")
    broadcast.add_argument(
        "--segment", required=True, help="all, unpaid, product:<id> or server:<id>"
    )
    broadcast.add_argument(
        "--param", action="append", default=[], help="a body parameter, in order ({name}: "
        "the client's first name)"
    )  # fmt: skip
    broadcast.add_argument("--language", default="es")
    broadcast.add_argument("--id", help="the broadcast's id (default: from the arguments)")
    broadcast.add_argument("--dry-run", action="store_true", help="count only; send nothing")
    broadcast.add_argument(
        "--no-wait", action="store_true", help="queue and exit, without following the sending"
    )
    broadcast.add_argument("--json", action="store_true", help="the final report as JSON")
    staff = sub.add_parser("staff", help="the staff console's accounts")
    staff_sub = staff.add_subparsers(dest="staff_command", required=True)
    add = staff_sub.add_parser(
        "add", help="add a member; the password is read from standard input, never an argument"
    )
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=("agent", "admin"))
    staff_sub.add_parser("list", help="every member: role, active, locked until")
    staff_sub.add_parser(
        "disable", help="refuse a member's logins, end their sessions"
    ).add_argument("username")
    staff_sub.add_parser("enable", help="let a disabled member log in again").add_argument(
        "username"
    )
    staff_sub.add_parser(
        "password",
        help="set a member's password (read from standard input), unlock them, end their sessions",
    ).add_argument("username")
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
    if args.command == "alerts":
        return asyncio.run(_alerts_status(settings, args))
    if args.command == "broadcast":
        return asyncio.run(_broadcast(settings, args))
    if args.command == "staff":
        return _staff(settings, args)
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


async def _alerts_status(settings: Settings, args: argparse.Namespace) -> int:
    from bot.app import open_pool
    from store import alerts

    try:
        since = _since(args.since) if args.since else None
    except ValueError as e:
        print(str(e), file=sys.stderr)
        return 2
    pool = await open_pool(settings, size=2)
    try:
        async with pool.acquire() as conn:
            rows = await alerts.statuses(
                conn, client_id=args.client, event_id=args.event, since=since, limit=args.limit
            )
    finally:
        await pool.close()
    for r in rows:
        when = r.occurred_at.strftime("%Y-%m-%d %H:%M:%S")
        how = f" as {r.sent_as}" if r.sent_as else ""
        to = f" to {r.recipient}" if r.recipient else ""
        detail = f" ({r.detail})" if r.detail else ""
        print(f"{when}  {r.event_id}  {r.type}  client {r.client_id}: {r.state}{how}{to}{detail}")
    if not rows:
        print("no alerts match", file=sys.stderr)
    return 0


def _since(text: str) -> datetime:
    """An ISO date or date-time (UTC unless it says), or an age: 90m, 2h, 3d."""
    from bot.config import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: not a date (2026-12-01) nor an age (2h, 3d)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _staff(settings: Settings, args: argparse.Namespace) -> int:
    from bot.console.auth import hash_password, password_problem, username_problem

    password_hash = ""
    if args.staff_command in ("add", "password"):
        what = f"staff {args.staff_command}"
        problem = username_problem(args.username)
        if problem is not None:
            print(f"{what}: {problem}", file=sys.stderr)
            return 2
        password = _read_password()
        if password is None:
            print(f"{what}: the passwords do not match; nothing changed", file=sys.stderr)
            return 1
        problem = password_problem(password)
        if problem is not None:
            print(f"{what}: {problem}", file=sys.stderr)
            return 2
        password_hash = hash_password(password)
    return asyncio.run(_staff_in_database(settings, args, password_hash))


def _read_password() -> str | None:
    """From a terminal: asked twice, not echoed (None when the two differ). Otherwise one
    line of standard input — a password in the arguments would be in the shell's history
    and in `ps` for every user of the machine."""
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("password: ")
        return first if getpass.getpass("again: ") == first else None
    return sys.stdin.readline().rstrip("\r\n")


async def _staff_in_database(
    settings: Settings, args: argparse.Namespace, password_hash: str
) -> int:
    from bot.app import open_pool
    from store import staff

    pool = await open_pool(settings, size=2)
    try:
        async with pool.acquire() as conn:
            if args.staff_command == "add":
                try:
                    async with conn.transaction():
                        await staff.add_staff(conn, args.username, args.role, password_hash)
                        await staff.record_change(
                            conn, None, "staff_added", args.username, role=args.role
                        )
                except staff.UsernameTaken:
                    print(f"staff add: {args.username!r} exists already", file=sys.stderr)
                    return 1
                print(f"added {args.username} ({args.role})", file=sys.stderr)
            elif args.staff_command == "list":
                for m in await staff.list_staff(conn):
                    active = "active" if m.active else "disabled"
                    locked = m.locked_until.isoformat() if m.locked_until else "-"
                    print(f"{m.username}\t{m.role}\t{active}\tlocked until {locked}")
            elif args.staff_command == "password":
                async with conn.transaction():
                    found = await staff.set_password(conn, args.username, password_hash)
                    if found:
                        await staff.record_change(conn, None, "password_set", args.username)
                if not found:
                    print(f"staff password: no member {args.username!r}", file=sys.stderr)
                    return 1
                print(f"{args.username}: new password; unlocked; sessions ended", file=sys.stderr)
            else:
                active = args.staff_command == "enable"
                async with conn.transaction():
                    found = await staff.set_active(conn, args.username, active)
                    if found:
                        action = "staff_enabled" if active else "staff_disabled"
                        await staff.record_change(conn, None, action, args.username)
                if not found:
                    print(
                        f"staff {args.staff_command}: no member {args.username!r}", file=sys.stderr
                    )
                    return 1
                what = "enabled" if active else "disabled; their sessions ended"
                print(f"{args.username}: {what}", file=sys.stderr)
    finally:
        await pool.close()
    return 0


async def _broadcast(settings: Settings, args: argparse.Namespace) -> int:
    from bot import broadcast
    from bot.app import make_billing, open_pool
    from flows.billing import Segment

    try:
        segment = Segment.parse(args.segment)
    except ValueError as e:
        print(str(e), file=sys.stderr)
        return 2
    params = tuple(args.param)
    plan = broadcast.Plan(
        broadcast_id=args.id or broadcast.default_id(args.template, args.segment, params),
        template=args.template,
        segment=segment,
        params=params,
        language=args.language,
    )
    pool = await open_pool(settings, size=broadcast.LOOKUPS + 2)
    billing = make_billing(settings, pool)
    try:
        status, report = await broadcast.run(
            pool, billing, plan, region=settings.default_region, dry_run=args.dry_run,
            wait=not args.no_wait,
        )  # fmt: skip
    finally:
        close = getattr(billing, "close", None)
        if close is not None:
            await close()
        await pool.close()
    if report is not None:
        if args.json:
            print(json.dumps({"id": plan.broadcast_id, **broadcast.as_json(report)}))
        else:
            title = "dry run (nothing sent)" if args.dry_run else f"broadcast {plan.broadcast_id}"
            print("\n".join([title, *broadcast.report_lines(report)]))
    return status


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
