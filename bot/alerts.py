"""The alert worker: every stored billing event (POST /events, or the local backend's own)
becomes exactly one WhatsApp message to the client's number, or is recorded as skipped
with the reason (SPEC §3 "Alerts").

- Claimed with SKIP LOCKED, in order per client (store/alerts.py); several processes
  share the work.
- One transaction per batch claims the events, writes each one's outbox row and marks it
  settled: killed at any line, the transaction rolls back and the events are claimed
  again — never alerted twice, never lost.
- The message carries its text (inside the customer's 24 h window) and its approved
  template (outside it); the sender chooses when it sends (bot/sender.py).
- A billing system that cannot give the event's details now (WHMCS away) leaves the
  event for a later try, with backoff; an event whose details could not be had within
  EVENTS_MAX_AGE is skipped as too old rather than alerted days late.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import asyncpg

from bot import metrics
from bot.config import Settings
from bot.listener import EVENTS, OUTBOX, Signals
from bot.sender import backoff
from flows import alerts as rules
from flows.billing import Billing, BillingError, Client, EventFacts
from flows.catalog import Catalog
from flows.outbound import to_json
from flows.phones import whatsapp_id_for
from store import alerts
from store.alerts import ClaimedEvent, Later, Person, Queue, Settlement, Skip
from store.db import Conn

log = logging.getLogger(__name__)

IDLE_WAIT_SECONDS = 1.0
BATCH = 100
# Billing lookups in flight at once for one batch (WHMCS calls, or our own tables).
LOOKUPS = 4
RETRY_CAP_SECONDS = 600.0
_DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class AlertWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        billing: Billing,
        catalog: Catalog,
        signals: Signals,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.billing = billing
        self.catalog = catalog
        self.signals = signals
        self._stopping = asyncio.Event()
        self._lookups = asyncio.Semaphore(LOOKUPS)

    def stop(self) -> None:
        self._stopping.set()
        self.signals.poke(EVENTS)

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                settled = await self.work_once()
            except _DATABASE_ERRORS as e:
                log.warning("alert worker: database unavailable (%s); trying again", e)
                await asyncio.sleep(1.0)
                continue
            if settled:
                continue
            await self.signals.wait(EVENTS, IDLE_WAIT_SECONDS)

    async def work_once(self, limit: int = BATCH) -> int:
        """Claim a batch of due events and settle them in one transaction; how many."""
        async with self.pool.acquire() as conn, conn.transaction():
            claimed = await alerts.claim(conn, limit)
            if not claimed:
                return 0
            settlements = await self._decide(conn, claimed)
            await alerts.settle(conn, settlements)
        queued = 0
        for event, settlement in zip(claimed, settlements, strict=True):
            match settlement:
                case Queue():
                    queued += 1
                    metrics.ALERTS.labels(type=event.type, outcome="queued").inc()
                case Skip(reason=reason):
                    metrics.ALERTS.labels(type=event.type, outcome=f"skipped_{reason}").inc()
                    log.info("event %s (%s) not alerted: %s", event.id, event.type, reason)
                case Later(error=error):
                    metrics.ALERTS.labels(type=event.type, outcome="retry").inc()
                    log.warning(
                        "event %s (%s): %s; trying again later", event.id, event.type, error
                    )
        if queued:
            self.signals.notify(OUTBOX)
        return len(claimed)

    async def _decide(self, conn: Conn, claimed: list[ClaimedEvent]) -> list[Settlement]:
        """Who each event is for and what they are told (billing lookups in parallel)."""
        looked = await asyncio.gather(*(self._look_up(e) for e in claimed))
        wanted = [
            (e.client_id, wa)
            for e, (_, wa, _) in zip(claimed, looked, strict=True)
            if e.client_id and wa
        ]
        prefs = await alerts.preferences(conn, [c for c, _ in wanted])
        people = await alerts.people(conn, wanted)
        return [
            self._settle(event, found, prefs.get(event.client_id or ""), people)
            for event, found in zip(claimed, looked, strict=True)
        ]

    async def _look_up(
        self, event: ClaimedEvent
    ) -> tuple[Client | None, str | None, EventFacts | str]:
        """The client, their WhatsApp number, and the event's facts (or the error that
        keeps us from having them now)."""
        if not event.client_id:
            return None, None, EventFacts()
        async with self._lookups:
            try:
                if event.type in rules.CLIENT_EVENTS:
                    client = await self.billing.refresh_client(event.client_id)
                else:
                    client = await self.billing.get_client(event.client_id)
                if client is None:
                    return None, None, EventFacts()
                wa_id = whatsapp_id_for(client.phone, self.settings.default_region)
                facts = await self.billing.event_facts(event.client_id, event.type, event.data)
            except BillingError as e:
                return None, None, f"billing system: {e}"
        return client, wa_id, facts

    def _settle(
        self,
        event: ClaimedEvent,
        found: tuple[Client | None, str | None, EventFacts | str],
        prefs: rules.Preferences | None,
        people: dict[str, Person],
    ) -> Settlement:
        client, wa_id, facts = found
        if isinstance(facts, str):
            if datetime.now(UTC) - event.occurred_at > self.settings.events_max_age:
                return Skip(event.id, rules.TOO_OLD)
            delay = backoff(event.attempts + 1, base=5.0, cap=RETRY_CAP_SECONDS)
            return Later(event.id, delay, facts)
        if client is None or not event.client_id:
            return Skip(event.id, rules.UNKNOWN_CLIENT)
        if not (prefs or rules.Preferences()).wants(event.type):
            return Skip(event.id, rules.ALERTS_OFF)
        if wa_id is None:
            return Skip(event.id, rules.NO_WHATSAPP)
        if event.type == "invoice.created" and facts.ordered_in_chat:
            return Skip(event.id, rules.TOLD_IN_CHAT)
        reply = rules.alert(self.catalog, event.type, client, facts, self.settings.panel_url)
        person = people.get(event.client_id) or Person(None, wa_id)
        return Queue(
            event_id=event.id,
            recipient=person.recipient,
            conversation_id=person.conversation_id,
            message=to_json(reply.message),
            template=to_json(reply.template) if reply.template else None,
        )
