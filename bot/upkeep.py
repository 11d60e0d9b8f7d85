"""Chores on a timer, in the background process: an upgrade's invoice left unpaid for
UPGRADE_INVOICE_TTL (default 7 days) is voided, and the customer is told its quote
expired (the billing system announces invoice.cancelled; flows.alerts says it as the
upgrade's expiry). Every process may run it: the backends void each invoice once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from bot.config import Settings
from bot.listener import EVENTS, Signals
from flows.billing import Billing, BillingError

log = logging.getLogger(__name__)


class Upkeep:
    def __init__(self, settings: Settings, billing: Billing, signals: Signals) -> None:
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
