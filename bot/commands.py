"""The command worker: carries out the billing commands flows ask for, after the turn
that asked has committed, outside any conversation lock (procrastinate's worker: claim,
commit, do the slow work outside any transaction, record the outcome).

- Claimed with SKIP LOCKED (store/commands.py); several processes share the work.
- A call may take as long as the billing system does (WHMCS: up to its timeout) without
  holding up anyone's conversation: the dispatcher keeps answering meanwhile.
- While a call is in flight the worker beats a heartbeat on its row. A process killed
  mid-call leaves a row whose heartbeat stops; after `COMMAND_STALLED_SECONDS` another
  worker claims it and asks the billing backend again with the same request id (the
  command's key), which answers with the first result — or, when it cannot know (WHMCS's
  request ledger left 'pending'), says the outcome is unknown. Never a second action.
- The billing system unreachable (nothing happened): retried with backoff, then told as
  unavailable. Refused: told with the reason. Unknown: never retried; a staff task is
  opened in the same transaction that records it, and the flow tells the customer a
  person will check.
- The outcome goes back to the conversation as a system message (inbox, wamid
  'command:<key>'), recorded in the same transaction as the command's status: told once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from typing import Any, assert_never

import asyncpg

from bot import metrics
from bot.config import Settings
from bot.listener import COMMANDS, INBOX, Signals
from bot.sender import backoff
from flows.billing import Billing, BillingRefused, BillingUnavailable, OutcomeUnknown
from flows.commands import (
    BillingCommand,
    Outcome,
    OutcomeStatus,
    PlaceUpgrade,
    RequestCancellation,
    StopDomainRenewal,
    TransferService,
    command_from,
    outcome_message,
)
from store import commands
from store.commands import ClaimedCommand, StaffTask

log = logging.getLogger(__name__)

# The staff task's reason when a command's outcome is unknown.
OUTCOME_UNKNOWN_TASK = "billing_outcome_unknown"
_DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class CommandWorker:
    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, billing: Billing, signals: Signals
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.billing = billing
        self.signals = signals
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._stopping = False

    async def run(self) -> None:
        heart = asyncio.create_task(self._heartbeat(), name="commands-heartbeat")
        try:
            await self._claim_loop()
        finally:
            heart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heart
            # A call in flight is left to finish: its outcome is recorded, not lost.
            if self._inflight:
                await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    def stop(self) -> None:
        self._stopping = True
        self.signals.poke(COMMANDS)

    async def _claim_loop(self) -> None:
        while not self._stopping:
            free = self.settings.command_concurrency - len(self._inflight)
            if free <= 0:
                await asyncio.wait(
                    list(self._inflight.values()), return_when=asyncio.FIRST_COMPLETED
                )
                continue
            try:
                async with self.pool.acquire() as conn:
                    claimed = await commands.claim(
                        conn,
                        free,
                        worker=self.identity,
                        stalled_after_seconds=self.settings.command_stalled_seconds,
                    )
            except _DATABASE_ERRORS as e:
                log.warning("command claim failed: %s", e)
                await asyncio.sleep(1.0)
                continue
            for command in claimed:
                task = asyncio.create_task(self._carry_out(command), name=f"command-{command.id}")
                self._inflight[command.id] = task
                task.add_done_callback(self._forget)
            if len(claimed) == free:
                continue
            # Woken by a new command; the timed look finds retries that came due and
            # commands a dead worker left behind.
            await self.signals.wait(COMMANDS, self.settings.dispatch_idle_seconds)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for command_id, running in list(self._inflight.items()):
            if running is task:
                del self._inflight[command_id]

    async def _heartbeat(self) -> None:
        every = self.settings.command_stalled_seconds / 4
        while True:
            await asyncio.sleep(every)
            if not self._inflight:
                continue
            try:
                async with self.pool.acquire() as conn:
                    await commands.heartbeat(conn, list(self._inflight), worker=self.identity)
            except _DATABASE_ERRORS as e:
                log.warning("command heartbeat failed: %s", e)

    async def _carry_out(self, claimed: ClaimedCommand) -> None:
        if claimed.resumed:
            log.warning(
                "command %s (%s) was left running by a worker that stopped; asking again "
                "with the same request id",
                claimed.key,
                claimed.kind,
            )
        started = asyncio.get_running_loop().time()
        outcome = await self._outcome(claimed)
        metrics.COMMAND_SECONDS.observe(asyncio.get_running_loop().time() - started)
        if outcome is None:
            metrics.COMMANDS.labels(kind=claimed.kind, outcome="retried").inc()
            return
        metrics.COMMANDS.labels(kind=claimed.kind, outcome=outcome.status.value).inc()
        await self._record(claimed, outcome)

    async def _outcome(self, claimed: ClaimedCommand) -> Outcome | None:
        """The billing system's answer, or None when it was unreachable and the command
        is retried later (nothing happened)."""

        context: dict[str, Any] = {}

        def outcome(
            status: OutcomeStatus, data: dict[str, Any], reason: str | None = None
        ) -> Outcome:
            return Outcome(claimed.key, claimed.kind, status, {**context, **data}, reason)

        try:
            command = command_from(claimed.kind, claimed.params)
        except (KeyError, TypeError, ValueError) as e:
            log.error("command %s cannot be read (%r): a person checks it", claimed.key, e)
            return outcome(OutcomeStatus.UNKNOWN, {"error": f"unreadable command: {e!r}"})
        context = _context(command)
        try:
            return outcome(OutcomeStatus.DONE, await self._call(command))
        except BillingRefused as e:
            return outcome(OutcomeStatus.REFUSED, {"detail": e.detail}, e.reason)
        except OutcomeUnknown as e:
            log.error("command %s (%s): outcome unknown: %s", claimed.key, claimed.kind, e)
            return outcome(OutcomeStatus.UNKNOWN, {"error": str(e)})
        except BillingUnavailable as e:
            if claimed.attempts < self.settings.command_max_attempts:
                await self._retry_later(claimed, e)
                return None
            log.error(
                "command %s: billing unavailable after %d attempts", claimed.key, claimed.attempts
            )
            return outcome(OutcomeStatus.UNAVAILABLE, {"error": str(e)})
        except Exception as e:
            # A bug, or an answer nobody foresaw, after the request may have acted: the
            # same as a lost answer, a person checks.
            log.exception("command %s (%s) failed unexpectedly", claimed.key, claimed.kind)
            return outcome(OutcomeStatus.UNKNOWN, {"error": f"{type(e).__name__}: {e}"})

    async def _call(self, command: BillingCommand) -> dict[str, Any]:
        """Ask the billing system, with the command's key as its request id."""
        billing = self.billing
        match command:
            case PlaceUpgrade():
                placed = await billing.place_upgrade(
                    command.client_id,
                    command.service_id,
                    command.product_id,
                    command.cycle,
                    today=command.today,
                    request_id=command.key,
                )
                return {
                    # No invoice: nothing to pay, the upgrade applied at once.
                    "applied": placed.applied,
                    "invoice_id": placed.invoice.id if placed.invoice else None,
                    "invoice_url": placed.invoice_url,
                    "total": str(placed.invoice.total if placed.invoice else placed.quote.amount),
                    "product_id": placed.product.id,
                    "product_name": placed.product.name,
                    "cycle": placed.quote.cycle,
                    "next_due": placed.quote.next_due.isoformat(),
                }
            case RequestCancellation():
                request = await billing.request_cancellation(
                    command.client_id,
                    command.service_id,
                    command.kind,
                    command.reason,
                    request_id=command.key,
                )
                return {
                    "request_id": request.id,
                    "service_id": request.service_id,
                    "kind": request.kind.value,
                    "requested_at": request.requested_at.isoformat(),
                }
            case StopDomainRenewal():
                domain = await billing.stop_domain_renewal(command.client_id, command.domain_id)
                return {
                    "domain_id": domain.id,
                    "name": domain.name,
                    "auto_renew": domain.auto_renew,
                    "next_due": domain.next_due.isoformat() if domain.next_due else None,
                }
            case TransferService():
                result = await billing.transfer_service(
                    command.client_id,
                    command.service_id,
                    command.to_client_id,
                    request_id=command.key,
                )
                return {"result": result.value}
            case _:
                assert_never(command)

    async def _retry_later(self, claimed: ClaimedCommand, error: Exception) -> None:
        delay = backoff(claimed.attempts, base=2.0, cap=300.0)
        log.warning(
            "command %s: billing unavailable (%s); again in %.0f s", claimed.key, error, delay
        )
        try:
            async with self.pool.acquire() as conn:
                await commands.retry_later(
                    conn, claimed, worker=self.identity, delay_seconds=delay, error=str(error)
                )
        except _DATABASE_ERRORS as e:
            # Left running: its heartbeat stops with this task, and it is claimed again.
            log.warning("command %s: could not schedule the retry: %s", claimed.key, e)

    async def _record(self, claimed: ClaimedCommand, outcome: Outcome) -> None:
        """The outcome, the message that tells the conversation and, when nobody knows
        what happened, the staff task — in one transaction, retried while the database
        is away. If it never gets through, the row stays running and a later claim asks
        the billing system again with the same key (which answers the same)."""
        message = outcome_message(f"command:{claimed.key}", claimed.reply_to, outcome)
        task = None
        if outcome.status is OutcomeStatus.UNKNOWN:
            task = StaffTask(
                reason=OUTCOME_UNKNOWN_TASK,
                key=f"unknown:{claimed.key}",
                client_id=claimed.params.get("client_id"),
                # Money may have moved (or not): someone must look soon.
                priority="high",
                detail={
                    "summary": f"{claimed.kind}: the billing system's answer was lost",
                    "command": claimed.kind,
                    "params": claimed.params,
                    "error": outcome.data.get("error"),
                },
            )
        for attempt in range(10):
            try:
                async with self.pool.acquire() as conn:
                    recorded = await commands.finish(
                        conn,
                        claimed,
                        worker=self.identity,
                        status=outcome.status.value,
                        result={"reason": outcome.reason, **outcome.data},
                        error=str(outcome.data.get("error") or "") or None,
                        message=message,
                        staff_task=task,
                    )
            except _DATABASE_ERRORS as e:
                log.warning("recording command %s failed (%s), retrying", claimed.key, e)
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
                continue
            if recorded:
                self.signals.notify(INBOX)
            else:
                log.warning("command %s was taken over by another worker", claimed.key)
            return


def _context(command: BillingCommand) -> dict[str, Any]:
    """What the flow needs to tell any outcome of this command, done or not: for a
    transfer matched from two holders' messages, the service and the other holder's
    conversation (told too)."""
    if isinstance(command, TransferService):
        return {
            "service": command.service_label,
            "service_id": command.service_id,
            "client_id": command.client_id,
            "to_client_id": command.to_client_id,
            "other_conversation": command.notify_conversation,
        }
    return {}
