"""Inbox workers: each inbound message gets one transaction — claim it, lock its
conversation, identify the customer, run the flow step, apply its effects, save the
state, queue the replies, mark the message done.

Workers run in parallel across conversations; within one conversation the claim only
offers its oldest pending message, and the conversation row lock keeps two processes
from working one customer at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import UTC, datetime, timedelta

import asyncpg

from bot import metrics
from bot.config import Settings
from bot.listener import INBOX, OUTBOX, Signals
from flows import conversation
from flows.billing import Billing, BillingError, Found
from flows.catalog import Catalog
from flows.matching import Matcher
from flows.outbound import Reply, Text, to_json
from flows.runtime import (
    ConversationView,
    Deps,
    Escalate,
    Identity,
    IdentityStatus,
    Inbound,
    InboundKind,
    NumberChanged,
    SetAlerts,
    Turn,
)
from store import turns
from store.db import Conn

log = logging.getLogger(__name__)

IDLE_WAIT_SECONDS = 5.0


class _AlertsReader:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def alerts_enabled(self, client_id: str) -> bool:
        return await turns.alerts_enabled(self.conn, client_id)


class Dispatcher:
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
        self.matcher = Matcher(catalog.words("words.negations"))
        self.signals = signals
        self._stopping = False
        self.identity = f"{socket.gethostname()}:{os.getpid()}"

    async def run(self) -> None:
        workers = [
            asyncio.create_task(self._worker(i), name=f"dispatch-{i}")
            for i in range(self.settings.dispatch_concurrency)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            for w in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await w

    def stop(self) -> None:
        self._stopping = True
        self.signals.poke(INBOX)

    async def _worker(self, number: int) -> None:
        while not self._stopping:
            try:
                worked = await self.process_one()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("dispatcher %d: database error %s", number, e)
                await asyncio.sleep(1.0)
                continue
            if not worked:
                await self.signals.wait(INBOX, IDLE_WAIT_SECONDS)
            else:
                # Others may be idle while more is queued: let them look too.
                self.signals.poke(INBOX)

    async def process_one(self) -> bool:
        """Process the next message; False when there was none."""
        claimed: turns.ClaimedMessage | None = None
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                start = await turns.claim_turn(conn)
                if start is None:
                    return False
                claimed = start.message
                await self._turn(conn, start)
            metrics.TURNS.labels(result="done").inc()
            return True
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
            raise
        except Exception as e:
            if claimed is None:
                raise
            log.exception("message %s failed", claimed.wamid)
            metrics.TURNS.labels(result="error").inc()
            gave_up = await turns.record_failure(
                self.pool,
                claimed.inbox_id,
                f"{type(e).__name__}: {e}",
                max_attempts=self.settings.inbox_max_attempts,
            )
            if gave_up:
                await self._apologise(claimed)
            return True

    async def _turn(self, conn: Conn, start: turns.TurnStart) -> None:
        claimed, conv = start.message, start.conversation
        inbound = Inbound.from_inbox(claimed.data)
        deps = Deps(
            catalog=self.catalog,
            matcher=self.matcher,
            billing=self.billing,
            alerts=_AlertsReader(conn),
            panel_details_url=self.settings.panel_details_url,
            session_ttl=timedelta(minutes=self.settings.session_ttl_minutes),
        )
        view = ConversationView(
            state=conv.state,
            context=conv.context,
            updated_at=conv.updated_at,
            wa_id=conv.wa_id,
            profile_name=conv.profile_name,
        )
        identity = Identity(IdentityStatus.UNKNOWN)
        try:
            identity = await self._identify(conv.wa_id, start.linked_client_id)
            turn = await conversation.handle(view, inbound, identity, deps, datetime.now(UTC))
        except BillingError:
            # The billing system is down: say so, keep the conversation where it was.
            log.exception("billing system unavailable for message %s", claimed.wamid)
            turn = Turn(state=conv.state, context=conv.context)
            turn.replies.append(Reply(Text(self.catalog.text("common.error"))))
        recipient = conv.recipient
        for effect in turn.effects:
            match effect:
                case Escalate(reason=reason, summary=summary):
                    await turns.escalate(
                        conn,
                        conv.id,
                        identity.client.id if identity.client else None,
                        reason,
                        {"summary": summary},
                    )
                case SetAlerts(client_id=client_id, enabled=enabled):
                    await turns.set_alerts(conn, client_id, enabled)
                case NumberChanged(old_wa_id=old, new_wa_id=new, client_id=client_id):
                    recipient = await turns.move_conversation(
                        conn, conv.id, old_wa_id=old, new_wa_id=new, client_id=client_id
                    )
        await turns.save_turn(
            conn,
            conversation_id=conv.id,
            inbox_id=claimed.inbox_id,
            state=turn.state,
            context=turn.context,
            client_id=identity.client.id if identity.client else conv.client_id,
            recipient=recipient,
            replies=[
                turns.OutgoingRow(
                    message=to_json(r.message),
                    template=to_json(r.template) if r.template else None,
                )
                for r in turn.replies
            ],
            processed_by=self.identity,
        )
        if turn.replies:
            self.signals.notify(OUTBOX)
        metrics.INBOX_LAG.observe(
            max(0.0, (datetime.now(UTC) - claimed.received_at).total_seconds())
        )

    async def _identify(self, wa_id: str | None, linked: str | None) -> Identity:
        """The billing client behind this WhatsApp number (SPEC §3): the one a number
        change tied it to, else the account whose phone it is."""
        if not wa_id:
            return Identity(IdentityStatus.NO_PHONE)
        if linked is not None:
            client = await self.billing.get_client(linked)
            if client is not None:
                return Identity(IdentityStatus.IDENTIFIED, client)
        lookup = await self.billing.find_client_by_phone(wa_id)
        if lookup.found is Found.SEVERAL:
            log.warning("WhatsApp number matches several billing clients; not identifying")
        return Identity.from_lookup(lookup.found, lookup.client)

    async def _apologise(self, claimed: turns.ClaimedMessage) -> None:
        """A message we could not process even after retries still gets an answer."""
        inbound = Inbound.from_inbox(claimed.data)
        if inbound.kind in (InboundKind.SYSTEM, InboundKind.REACTION):
            return
        async with self.pool.acquire() as conn, conn.transaction():
            conv = await _lock_conversation(conn, claimed, inbound)
            await turns.queue_replies(
                conn,
                conversation_id=conv.id,
                inbox_id=claimed.inbox_id,
                recipient=conv.recipient,
                replies=[turns.OutgoingRow(to_json(Text(self.catalog.text("common.error"))), None)],
            )
        self.signals.notify(OUTBOX)


async def _lock_conversation(
    conn: Conn, claimed: turns.ClaimedMessage, inbound: Inbound
) -> turns.ConversationRow:
    """Lock (creating if new) the conversation of a message. A customer's own message
    opens the 24 h window; a system notice does not."""
    data = claimed.data
    return await turns.lock_conversation(
        conn,
        claimed.conversation_key,
        wa_id=data.get("wa_id"),
        user_id=data.get("user_id"),
        profile_name=data.get("name"),
        inbound_at=inbound.timestamp if inbound.kind is not InboundKind.SYSTEM else None,
    )
