"""Chores on a timer, in the background process:

- an upgrade's invoice left unpaid for UPGRADE_INVOICE_TTL (default 7 days) is voided,
  and the customer is told its quote expired (the billing system announces
  invoice.cancelled; flows.alerts says it as the upgrade's expiry);
- a holder's transfer message that waited TRANSFER_WINDOW for the other holder's is
  expired, and its sender told (a signal to their conversation's transfer flow);
- a staff queue item snoozed until a time that has passed is back in the queue.

Every process may run them: each invoice is voided once, each request told once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import asyncpg

from bot.config import Settings
from bot.listener import EVENTS, INBOX, Signals
from flows.billing import Billing, BillingError
from flows.commands import Notify, signal_message
from store import commands, queue, transfers

log = logging.getLogger(__name__)


class Upkeep:
    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, billing: Billing, signals: Signals
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.billing = billing
        self.signals = signals
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            await self.once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.upkeep_seconds)

    async def once(self) -> int:
        """The chores; how many things they did."""
        return (
            await self.expire_upgrades() + await self.expire_transfers() + await self.wake_snoozed()
        )

    async def wake_snoozed(self) -> int:
        """Staff queue items whose snooze time passed are back in it (the console already
        shows them so; this writes it down and records the action)."""
        try:
            async with self.pool.acquire() as conn:
                return await queue.wake_snoozed(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            log.warning("waking snoozed items: %s", e)
            return 0

    async def expire_transfers(self) -> int:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                expired = await transfers.expire(conn)
                for request in expired:
                    key = f"transfer-expired:{request.id}"
                    notice = Notify(
                        request.conversation_id, "transfer", "expired", key,
                        {"service": request.service_label},
                    )  # fmt: skip
                    wamid = f"signal:{key}"
                    await commands.enqueue_system_message(
                        conn, request.conversation_id, wamid, signal_message(wamid, notice, None)
                    )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            log.warning("expiring transfer requests: %s; trying again later", e)
            return 0
        if expired:
            self.signals.notify(INBOX)
        return len(expired)

    async def expire_upgrades(self) -> int:
        """Void the upgrade invoices unpaid for too long; how many."""
        before = datetime.now(UTC) - self.settings.upgrade_invoice_ttl
        try:
            expired = await self.billing.expire_upgrades(before)
        except BillingError as e:
            log.warning("expiring unpaid upgrade invoices: %s; trying again later", e)
            return 0
        except Exception:
            log.exception("expiring unpaid upgrade invoices failed")
            return 0
        for voided in expired:
            log.info(
                "upgrade invoice %s of service %s voided unpaid",
                voided.invoice_id,
                voided.service_id,
            )
        if expired:
            self.signals.notify(EVENTS)
        return len(expired)
