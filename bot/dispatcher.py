"""Inbox workers: a worker claims a batch of inbound messages — each the oldest pending
one of its conversation — and handles them in one transaction: lock their conversations,
identify each customer, run the flow step, apply its effects, save the state, queue the
replies, mark the messages done. One claim, one save and one commit serve the batch.

Workers run in parallel across conversations; within one conversation the claim only
offers its oldest pending message, and the conversation row lock keeps two processes
from working one customer at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import assert_never

import asyncpg

from bot import metrics
from bot.config import Settings
from bot.listener import COMMANDS, INBOX, OUTBOX, Signals
from flows import conversation
from flows.alerts import Preferences
from flows.billing import Billing, BillingError, Found
from flows.catalog import Catalog
from flows.commands import (
    BackToBot,
    Escalate,
    Notify,
    NumberChanged,
    PlaceUpgrade,
    RequestCancellation,
    RequestTransfer,
    SetAlerts,
    StopDomainRenewal,
    TransferDecided,
    TransferService,
    command_params,
    signal_message,
)
from flows.matching import Matcher
from flows.menu import HANDED_OVER
from flows.outbound import Reply, Text, to_json
from flows.pricing import Policy
from flows.runtime import (
    ConversationView,
    Deps,
    Identity,
    IdentityStatus,
    Inbound,
    InboundKind,
    Turn,
)
from store import commands, queue, transfers, turns
from store.db import Conn

log = logging.getLogger(__name__)


class _AlertsReader:
    """Alert preferences as committed: a conversation's own earlier turns are, since its
    next message is only claimed after they commit."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def alert_preferences(self, client_id: str) -> Preferences:
        async with self.pool.acquire() as conn:
            return await turns.alert_preferences(conn, client_id)


class _TurnFailed(Exception):
    """A turn failed on its own (its flow step or effects); the batch goes on without it."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class _Decision:
    turn: Turn
    identity: Identity


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
        self._stopped = asyncio.Event()
        self._deps = Deps(
            catalog=catalog,
            matcher=self.matcher,
            billing=billing,
            alerts=_AlertsReader(pool),
            panel_details_url=settings.panel_details_url,
            session_ttl=timedelta(minutes=settings.session_ttl_minutes),
            panel_url=settings.panel_url,
            plans_url=settings.plans_url or f"{settings.panel_url}/cart.php",
            upgrade_policy=Policy(settings.upgrade_pricing),
            timezone=settings.display_timezone,
            transfer_window=settings.transfer_window,
            business_hours=settings.business_hours,
        )
        self._readers = asyncio.Semaphore(settings.dispatch_batch_readers)
        # After a batch failed as a whole: how many claims to make one message at a time.
        self._one_by_one = 0
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"

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
        self._stopped.set()
        self.signals.poke(INBOX)

    async def _idle(self) -> None:
        """Until new messages are signalled, the idle time passes, or the dispatcher
        stops. (The workers share one wake-up event, and the first to wake clears it: a
        worker busy when `stop` pokes would otherwise sleep its whole idle time.)"""
        woken = asyncio.create_task(self.signals.wait(INBOX, self.settings.dispatch_idle_seconds))
        stopped = asyncio.create_task(self._stopped.wait())
        try:
            await asyncio.wait({woken, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (woken, stopped):
                task.cancel()

    async def _worker(self, number: int) -> None:
        while not self._stopping:
            try:
                worked = await self.process_batch()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("dispatcher %d: database error %s", number, e)
                await asyncio.sleep(1.0)
                continue
            if not worked:
                await self._idle()
            else:
                # Others may be idle while more is queued: let them look too.
                self.signals.poke(INBOX)

    async def process_batch(self) -> int:
        """Handle the next messages — up to DISPATCH_BATCH of them, each the oldest
        pending one of its conversation — in one transaction. Returns how many were
        claimed (0: none was waiting).

        A turn whose flow step or effects raise is left out of the batch (its effects are
        rolled back to a savepoint) and counted as a failed attempt after the commit. An
        error that breaks the whole transaction saves nothing: the next claims then go one
        message at a time, so the message that caused it fails alone."""
        limit = 1 if self._one_by_one > 0 else self.settings.dispatch_batch
        woken: set[str] = set()  # the channels whose workers this batch has work for
        starts: list[turns.TurnStart] = []
        failed: list[tuple[turns.ClaimedMessage, Exception]] = []
        saved: list[turns.SavedTurn] = []
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                starts = await turns.claim_turns(conn, limit)
                if not starts:
                    return 0
                # The flow steps (and their billing reads) run side by side; what they
                # write goes through this transaction, one turn after the other.
                prompts = await _prompts_on_screen(conn, starts)
                held = await queue.holding(
                    conn, [s.conversation.id for s in starts if s.conversation.state == HANDED_OVER]
                )
                decided = await asyncio.gather(
                    *(
                        self._decide(s, prompts.get(s.conversation.id), s.conversation.id in held)
                        for s in starts
                    )
                )
                for start, decision in zip(starts, decided, strict=True):
                    try:
                        if isinstance(decision, _TurnFailed):
                            failed.append((start.message, decision.error))
                        else:
                            saved.append(await self._write(conn, start, decision, woken))
                    except _TurnFailed as e:
                        failed.append((start.message, e.error))
                await turns.save_turns(conn, saved, processed_by=self.identity)
                await queue.customers_wrote(conn, [t.conversation_id for t in saved if t.touch])
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
            raise
        except Exception as e:
            if not starts:
                raise
            if len(starts) > 1:
                log.warning(
                    "a batch of %d messages failed (%r); retrying them one by one", len(starts), e
                )
                self._one_by_one = len(starts)
                return len(starts)
            failed = [(starts[0].message, e)]
            saved = []
            woken.clear()
        finally:
            if limit == 1 and starts:
                self._one_by_one = max(0, self._one_by_one - 1)
        if saved:
            metrics.TURNS.labels(result="done").inc(len(saved))
            if any(t.replies for t in saved):
                woken.add(OUTBOX)
            for channel in sorted(woken):
                self.signals.notify(channel)
        for message, error in failed:
            await self._record_failure(message, error)
        return len(starts)

    async def _record_failure(self, claimed: turns.ClaimedMessage, error: Exception) -> None:
        log.error("message %s failed", claimed.wamid, exc_info=error)
        metrics.TURNS.labels(result="error").inc()
        gave_up = await turns.record_failure(
            self.pool,
            claimed.inbox_id,
            f"{type(error).__name__}: {error}",
            max_attempts=self.settings.inbox_max_attempts,
        )
        if gave_up:
            await self._apologise(claimed)

    async def _decide(
        self, start: turns.TurnStart, current_prompt: str | None, held_by_staff: bool
    ) -> _Decision | _TurnFailed:
        """Identify the customer and run the flow step: what the turn will write. No
        database writes here; the billing reads have their own connections (at most
        DISPATCH_BATCH_READERS at once in this process)."""
        claimed, conv = start.message, start.conversation
        inbound = Inbound.from_inbox(claimed.data)
        view = ConversationView(
            state=conv.state,
            context=conv.context,
            updated_at=conv.updated_at,
            wa_id=conv.wa_id,
            profile_name=conv.profile_name,
            id=conv.id,
            current_prompt=current_prompt,
            held_by_staff=held_by_staff,
        )
        identity = Identity(IdentityStatus.UNKNOWN)
        async with self._readers:
            try:
                identity = await self._identify(conv.wa_id, start.linked_client_id)
                turn = await conversation.handle(
                    view, inbound, identity, self._deps, datetime.now(UTC)
                )
            except BillingError:
                # The billing system is down: say so, keep the conversation where it was.
                log.exception("billing system unavailable for message %s", claimed.wamid)
                turn = Turn(state=conv.state, context=conv.context)
                turn.replies.append(Reply(Text(self.catalog.text("common.error"))))
            except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
                raise  # the database is away: not this message's fault
            except Exception as e:
                return _TurnFailed(e)
        return _Decision(turn, identity)

    async def _write(
        self, conn: Conn, start: turns.TurnStart, decision: _Decision, woken: set[str]
    ) -> turns.SavedTurn:
        """Apply the turn's effects in the batch's transaction (behind a savepoint, so a
        failing one takes back only this turn's: _TurnFailed) and say what to save."""
        claimed, conv = start.message, start.conversation
        turn, identity = decision.turn, decision.identity
        recipient = conv.recipient
        if turn.effects:
            try:
                async with conn.transaction():
                    recipient = await self._apply_effects(
                        conn, conv, identity, turn, recipient, woken=woken
                    )
            except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
                raise
            except Exception as e:
                raise _TurnFailed(e) from e
        metrics.INBOX_LAG.observe(
            max(0.0, (datetime.now(UTC) - claimed.received_at).total_seconds())
        )
        return turns.SavedTurn(
            conversation_id=conv.id,
            inbox_id=claimed.inbox_id,
            state=turn.state,
            context=turn.context,
            client_id=identity.client.id if identity.client else conv.client_id,
            recipient=recipient,
            touch=turn.touch,
            replies=[
                turns.OutgoingRow(
                    message=to_json(r.message),
                    template=to_json(r.template) if r.template else None,
                )
                for r in turn.replies
            ],
        )

    async def _apply_effects(
        self,
        conn: Conn,
        conv: turns.ConversationRow,
        identity: Identity,
        turn: Turn,
        recipient: str,
        *,
        woken: set[str],
    ) -> str:
        """The turn's commands, in its transaction: local ones applied, billing ones
        queued for the command worker. A command nobody handles fails the turn (and,
        through assert_never, the type check)."""
        client_id = identity.client.id if identity.client else None
        for effect in turn.effects:
            match effect:
                case Escalate(
                    reason=reason, summary=summary, detail=detail, key=key, priority=priority
                ):
                    await queue.escalate(
                        conn,
                        conv.id,
                        client_id,
                        reason,
                        {"summary": summary, **detail},
                        key=key,
                        priority=priority,
                        account_manager=identity.client.account_manager
                        if identity.client
                        else None,
                    )
                case SetAlerts(client_id=alerts_client, enabled=enabled, type=alert_type):
                    await turns.set_alerts(conn, alerts_client, enabled, alert_type)
                case NumberChanged(
                    old_wa_id=old, new_wa_id=new, new_user_id=new_user, client_id=changed
                ):
                    recipient = await turns.move_conversation(
                        conn,
                        conv.id,
                        old_wa_id=old,
                        new_wa_id=new,
                        new_user_id=new_user,
                        client_id=changed,
                    )
                case RequestTransfer():
                    if await self._record_transfer(conn, conv.id, effect):
                        woken.add(COMMANDS)
                case BackToBot():
                    await queue.customer_returned(conn, conv.id)
                case TransferDecided(pair_key=pair_key, outcome=outcome):
                    await transfers.decided(conn, pair_key, outcome)
                case Notify(conversation_id=to, key=key):
                    wamid = f"signal:{key}"
                    message = signal_message(wamid, effect, conv.id)
                    if await commands.enqueue_system_message(conn, to, wamid, message):
                        woken.add(INBOX)
                case (
                    PlaceUpgrade() | RequestCancellation() | StopDomainRenewal() | TransferService()
                ):
                    await commands.enqueue(
                        conn,
                        key=effect.key,
                        conversation_id=conv.id,
                        reply_to=effect.reply_to,
                        kind=effect.KIND,
                        params=command_params(effect),
                    )
                    woken.add(COMMANDS)
                case _:
                    assert_never(effect)
        return recipient

    async def _record_transfer(
        self, conn: Conn, conversation_id: int, effect: RequestTransfer
    ) -> bool:
        """Keep a holder's transfer message; when it completes a pair, queue the transfer
        for the origin holder's conversation. True when a command was queued."""
        recorded = await transfers.record(
            conn,
            transfers.Request(
                conversation_id=conversation_id,
                client_id=effect.client_id,
                role=effect.role,
                origin_client_id=effect.origin_client_id,
                destination_client_id=effect.destination_client_id,
                service_label=effect.service_label,
                service_id=effect.service_id,
                text=effect.text,
            ),
            timedelta(seconds=effect.window_seconds),
        )
        origin, destination = recorded.origin, recorded.destination
        if origin is None or destination is None or recorded.pair_key is None:
            return False
        command = TransferService(
            key=recorded.pair_key,
            client_id=origin.origin_client_id,
            service_id=origin.service_id or "",
            to_client_id=origin.destination_client_id,
            reply_to="transfer",
            notify_conversation=destination.conversation_id,
            service_label=origin.service_label,
        )
        await commands.enqueue(
            conn,
            key=command.key,
            conversation_id=origin.conversation_id,
            reply_to=command.reply_to,
            kind=command.KIND,
            params=command_params(command),
        )
        return True

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
        """A message we could not process even after retries still gets an answer (and
        its place in the transcript staff read)."""
        inbound = Inbound.from_inbox(claimed.data)
        if inbound.kind in (InboundKind.SYSTEM, InboundKind.REACTION, InboundKind.REVOKED):
            return
        async with self.pool.acquire() as conn, conn.transaction():
            conv = await _lock_conversation(conn, claimed, inbound)
            await turns.file_under(conn, claimed.inbox_id, conv.id)
            await turns.queue_replies(
                conn,
                conversation_id=conv.id,
                inbox_id=claimed.inbox_id,
                recipient=conv.recipient,
                replies=[turns.OutgoingRow(to_json(Text(self.catalog.text("common.error"))), None)],
            )
        self.signals.notify(OUTBOX)


async def _prompts_on_screen(conn: Conn, starts: list[turns.TurnStart]) -> dict[int, str]:
    """The prompt on screen of each conversation whose message is a tap quoting one of
    our messages (only those need it: flows.conversation._stale_tap)."""
    tapping = [
        (s.conversation.id, str(s.message.data["context_id"]))
        for s in starts
        if s.message.data.get("kind") == "choice" and s.message.data.get("context_id")
    ]
    return await turns.current_prompts(conn, tapping) if tapping else {}


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
