"""`python -m bot broadcast --template NAME --segment SEGMENT [--param …] [--id ID]
[--dry-run]`: one approved template to every client of a segment of the billing data.

- Idempotent per broadcast id: each client is recorded once (queued, with its outbox row
  in the same transaction, or skipped with the reason), so running it again sends nothing
  twice and a run cut short (killed, Ctrl-C) goes on where it stopped. Without `--id` the
  id is made from the template, segment and parameters: the same command is the same
  broadcast.
- Skipped: clients who turned their alerts off (opted out), without a WhatsApp number,
  unknown to the billing system, or sharing a number already messaged by this broadcast.
- The running service sends (its sender's global rate and per-person pacing apply); this
  command queues, then follows the sending with a progress bar and ETA on a terminal (a
  line every few seconds otherwise), and ends with the report: sent, failed by code,
  skipped by reason.
- A parameter `{name}` becomes each client's first name.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import asyncpg

from flows import alerts as rules
from flows.billing import Billing, BillingError, Segment
from flows.outbound import Template, limit_violations, to_json
from flows.phones import whatsapp_id_for
from store import alerts, broadcasts
from store.broadcasts import Progress, Recipient

CHUNK = 100
LOOKUPS = 8
REDRAW_SECONDS = 0.5
LINE_EVERY_SECONDS = 5.0
NAME = "{name}"

OPTED_OUT = "opted_out"
SAME_NUMBER = "same_number"


def default_id(template: str, segment: str, params: Sequence[str]) -> str:
    digest = hashlib.sha256(json.dumps([template, segment, list(params)]).encode()).hexdigest()
    return f"{template}-{digest[:12]}"


@dataclass(frozen=True, slots=True)
class Plan:
    broadcast_id: str
    template: str
    segment: Segment
    params: tuple[str, ...]
    language: str = "es"


class Broadcast:
    def __init__(
        self, pool: asyncpg.Pool, billing: Billing, plan: Plan, *, region: str, out: TextIO
    ) -> None:
        self.pool = pool
        self.billing = billing
        self.plan = plan
        self.region = region
        self.out = out
        self._lookups = asyncio.Semaphore(LOOKUPS)

    def message(self, first_name: str) -> Template:
        params = tuple(rules.template_param(p.replace(NAME, first_name)) for p in self.plan.params)
        return Template(self.plan.template, self.plan.language, params)

    async def recipients(self, client_ids: Sequence[str], taken: set[str]) -> list[Recipient]:
        """Who of these clients gets the message, and why the others do not. `taken`:
        numbers this broadcast already messages (grows as they are chosen)."""
        found = await asyncio.gather(*(self._client(c) for c in client_ids))
        prefs = await self._preferences(client_ids)
        reachable = [(c, wa) for c, (_, wa) in zip(client_ids, found, strict=True) if wa]
        async with self.pool.acquire() as conn:
            people = await alerts.people(conn, reachable)
        out: list[Recipient] = []
        for client_id, (first_name, wa_id) in zip(client_ids, found, strict=True):
            if first_name is None:
                out.append(Recipient(client_id, skip_reason=rules.UNKNOWN_CLIENT))
            elif not prefs.get(client_id, rules.Preferences()).enabled:
                out.append(Recipient(client_id, skip_reason=OPTED_OUT))
            elif wa_id is None:
                out.append(Recipient(client_id, skip_reason=rules.NO_WHATSAPP))
            else:
                person = people.get(client_id) or alerts.Person(None, wa_id)
                if person.recipient in taken:
                    out.append(Recipient(client_id, skip_reason=SAME_NUMBER))
                    continue
                taken.add(person.recipient)
                message = to_json(self.message(first_name))
                out.append(Recipient(client_id, person.recipient, person.conversation_id, message))
        return out

    async def _client(self, client_id: str) -> tuple[str | None, str | None]:
        async with self._lookups:
            client = await self.billing.get_client(client_id)
        if client is None:
            return None, None
        return rules.first_name(client), whatsapp_id_for(client.phone, self.region)

    async def _preferences(self, client_ids: Sequence[str]) -> dict[str, rules.Preferences]:
        async with self.pool.acquire() as conn:
            return await alerts.preferences(conn, client_ids)

    async def dry_run(self) -> Progress:
        clients = await self.billing.segment_clients(self.plan.segment)
        report = Progress(planned=len(clients))
        taken: set[str] = set()
        for start in range(0, len(clients), CHUNK):
            for r in await self.recipients(clients[start : start + CHUNK], taken):
                if r.skip_reason:
                    report.skipped[r.skip_reason] = report.skipped.get(r.skip_reason, 0) + 1
                else:
                    report.queued += 1
        return report

    async def queue_all(self) -> None:
        """Record every client of the segment not recorded yet, a chunk per transaction."""
        plan = self.plan
        async with self.pool.acquire() as conn:
            new = await broadcasts.start(
                conn, plan.broadcast_id, plan.template, _segment_text(plan.segment), plan.params
            )
        clients = await self.billing.segment_clients(plan.segment)
        async with self.pool.acquire() as conn:
            await broadcasts.plan(conn, plan.broadcast_id, len(clients))
            done = await broadcasts.handled(conn, plan.broadcast_id)
            taken = await broadcasts.numbers(conn, plan.broadcast_id)
        todo = [c for c in clients if c not in done]
        word = "starting" if new else "resuming"
        print(
            f"broadcast {plan.broadcast_id}: {word}; {len(clients):,} clients in "
            f"{_segment_text(plan.segment)}, {len(todo):,} to go",
            file=self.out,
        )
        for start in range(0, len(todo), CHUNK):
            chunk = await self.recipients(todo[start : start + CHUNK], taken)
            async with self.pool.acquire() as conn:
                await broadcasts.queue(conn, plan.broadcast_id, chunk)
                await conn.execute("SELECT pg_notify('outbox', '')")  # wake the senders

    async def follow(self, *, timeout: float | None = None) -> Progress:
        """Until every queued message was taken or refused by WhatsApp, drawing the
        progress; then the final numbers."""
        started = time.monotonic()
        first: tuple[float, int] | None = None
        last_line = 0.0
        tty = self.out.isatty()
        while True:
            async with self.pool.acquire() as conn:
                report = await broadcasts.progress(conn, self.plan.broadcast_id)
            now = time.monotonic()
            if first is None:
                first = (now, report.settled)
            rate = (report.settled - first[1]) / (now - first[0]) if now > first[0] else 0.0
            if tty:
                print("\r" + _bar(report, rate), end="", file=self.out, flush=True)
            elif now - last_line >= LINE_EVERY_SECONDS or report.waiting == 0:
                print(_bar(report, rate), file=self.out, flush=True)
                last_line = now
            if report.waiting == 0:
                if tty:
                    print(file=self.out)
                return report
            if timeout is not None and now - started > timeout:
                if tty:
                    print(file=self.out)
                return report
            await asyncio.sleep(REDRAW_SECONDS)


def _segment_text(segment: Segment) -> str:
    return f"{segment.kind}:{segment.value}" if segment.value else segment.kind


def _bar(report: Progress, rate: float, width: int = 30) -> str:
    total = max(report.queued, 1)
    done = report.settled
    filled = int(width * done / total)
    eta = f"{(report.waiting / rate):,.0f} s" if rate > 0 and report.waiting else "–"
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {done:,}/{report.queued:,} "
        f"({rate:,.1f}/s, ETA {eta})"
    )


def report_lines(report: Progress) -> list[str]:
    lines = [
        f"clients in the segment: {report.planned:,}",
        f"queued: {report.queued:,}",
        f"  sent: {report.sent:,}",
    ]
    lines += [f"  failed ({code}): {n:,}" for code, n in sorted(report.failed.items())]
    if report.waiting:
        lines.append(f"  still waiting to be sent: {report.waiting:,}")
    lines.append(f"skipped: {sum(report.skipped.values()):,}")
    lines += [f"  {reason}: {n:,}" for reason, n in sorted(report.skipped.items())]
    return lines


def as_json(report: Progress) -> dict[str, object]:
    return {
        "planned": report.planned,
        "queued": report.queued,
        "sent": report.sent,
        "failed": report.failed,
        "waiting": report.waiting,
        "skipped": report.skipped,
    }


async def run(
    pool: asyncpg.Pool,
    billing: Billing,
    plan: Plan,
    *,
    region: str,
    dry_run: bool,
    wait: bool,
    out: TextIO = sys.stderr,
) -> tuple[int, Progress | None]:
    """The command; (exit status, report)."""
    problems = limit_violations(Template(plan.template, plan.language, plan.params))
    if problems:
        print("the template cannot be sent: " + "; ".join(problems), file=out)
        return 2, None
    job = Broadcast(pool, billing, plan, region=region, out=out)
    try:
        if dry_run:
            return 0, await job.dry_run()
        await job.queue_all()
    except broadcasts.BroadcastMismatch as e:
        print(str(e), file=out)
        return 2, None
    except BillingError as e:
        print(f"the billing system could not be read: {e}; run it again later", file=out)
        return 1, None
    async with pool.acquire() as conn:
        await broadcasts.finish(conn, plan.broadcast_id)
        report = await broadcasts.progress(conn, plan.broadcast_id)
    if wait:
        report = await job.follow()
    return 0, report
