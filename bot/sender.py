"""The outbox sender: claims rows within the limits, sends them, records what happened.

- Global budget and per-person pacing come from `store.outbox.claim` (shared by all
  processes). One person's messages leave one at a time, in order, whether addressed to
  their phone or their business-scoped user id.
- Transient errors (SPEC §5) are retried with exponential backoff and jitter; permanent
  ones fail the row at once.
- A request that may have reached Meta (read timeout, dropped connection) is *not*
  re-sent: the row stays `sending` until a status webhook (which echoes our id in
  biz_opaque_callback_data) settles it, or until a long silence proves Meta never got it.
- Outside the 24 h window a message goes as its template, or fails visibly.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg
import httpx
from pywa_async.errors import WhatsAppError

from bot import metrics
from bot.config import Settings
from bot.listener import OUTBOX, Signals
from flows.outbound import Message, Template, from_json, limit_violations
from flows.wa_errors import PAIR_LIMIT, WINDOW_CLOSED, Action, classify
from store import outbox

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)
SWEEP_EVERY_SECONDS = 10.0
IDLE_WAIT_SECONDS = 1.0
# While sending is paused: how often to look whether a probe is due, and the longest
# wait between probes.
PAUSE_CHECK_SECONDS = 1.0
PROBE_MAX_SECONDS = 300.0


class Transport(Protocol):
    async def send(self, to: str, message: Message | Template, *, tracker: str) -> str: ...

    async def probe(self) -> None:
        """A harmless call that works only when the number can send (raises otherwise)."""
        ...


async def pause_sending(
    pool: asyncpg.Pool, code: int | None, reason: str, *, probe_in: float
) -> None:
    """Stop all sending (every process): the account or our credentials cannot send.
    Every message stays queued; a sender's prober resumes sending when the number answers
    again. Loud: an operator must look."""
    async with pool.acquire() as conn:
        paused = await outbox.pause_sending(conn, code, reason, probe_in)
    if paused:
        metrics.SEND_PAUSES.labels(code=str(code)).inc()
        log.error(
            "SENDING PAUSED: WhatsApp error %s (%s). Every message is kept; the number is "
            "probed and sending resumes by itself once it answers. Check the access token "
            "(WHATSAPP_TOKEN), its permissions and the WhatsApp account's status.",
            code,
            reason,
        )


def backoff(attempt: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Exponential backoff with jitter: about base·2^(attempt-1), never above cap."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


class Sender:
    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, transport: Transport, signals: Signals
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.transport = transport
        self.pacing = outbox.Pacing(
            rate_per_second=settings.send_rate_per_second,
            recipient_interval_seconds=settings.recipient_interval_seconds,
            recipient_burst=settings.recipient_burst,
        )
        self._inflight: set[asyncio.Task[None]] = set()
        self._results: asyncio.Queue[outbox.Outcome] = asyncio.Queue()
        self.signals = signals
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        writer = asyncio.create_task(self._write_results(), name="outbox-writer")
        sweeper = asyncio.create_task(self._sweep(), name="outbox-sweeper")
        prober = asyncio.create_task(self._probe_while_paused(), name="outbox-prober")
        try:
            await self._claim_loop()
        finally:
            sweeper.cancel()
            prober.cancel()
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
            self._stopping.set()
            await writer

    def stop(self) -> None:
        self._stopping.set()
        self.signals.poke(OUTBOX)  # its claim loop may be waiting for work

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            free = self.settings.send_concurrency - len(self._inflight)
            if free <= 0:
                await self._wait_any(timeout=IDLE_WAIT_SECONDS)
                continue
            try:
                async with self.pool.acquire() as conn:
                    claim = await outbox.claim(conn, free, self.pacing)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("outbox claim failed: %r", e)
                await asyncio.sleep(1.0)
                continue
            for send in claim.sends:
                task = asyncio.create_task(self._send(send))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            if claim.sends and len(claim.sends) == free:
                continue
            if claim.paused:
                # The prober resumes sending and wakes us (OUTBOX).
                await self.signals.wait(OUTBOX, IDLE_WAIT_SECONDS)
                continue
            if claim.budget_wait > 0:
                await asyncio.sleep(claim.budget_wait)
                continue
            await self.signals.wait(OUTBOX, IDLE_WAIT_SECONDS)

    async def _wait_any(self, timeout: float) -> None:
        if not self._inflight:
            return
        await asyncio.wait(self._inflight, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    async def _send(self, send: outbox.ClaimedSend) -> None:
        started = asyncio.get_running_loop().time()
        try:
            outcome = await self.deliver(send)
        except Exception as e:
            # A bug, or an answer nobody foresaw (a 200 that is not JSON, the database
            # away while pausing a recipient): the request may have left, so treat it as
            # ambiguous — a status webhook settles it, else the sweeper sends it again
            # later — and give up once its attempts are spent.
            log.exception("outbox %s: unexpected error while sending", send.id)
            metrics.SEND_ERRORS.labels(code="unexpected").inc()
            if send.attempts >= self.settings.send_max_attempts:
                outcome = outbox.Failed(send.id, None, f"unexpected error: {e!r}")
            else:
                outcome = outbox.Unknown(send.id, f"unexpected error: {e!r}")
        metrics.SEND_SECONDS.observe(asyncio.get_running_loop().time() - started)
        await self._results.put(outcome)

    async def deliver(self, send: outbox.ClaimedSend) -> outbox.Outcome:
        try:
            message = from_json(send.message)
            template = from_json(send.template) if send.template else None
        except (KeyError, ValueError, TypeError) as e:
            return outbox.Failed(send.id, None, f"malformed outbox row: {e}")
        now = datetime.now(UTC)
        window_open = send.last_inbound_at is not None and now - send.last_inbound_at < WINDOW
        payload: Message | Template = message
        sent_as = "message"
        if send.force_template or not window_open or isinstance(message, Template):
            if template is None and not isinstance(message, Template):
                metrics.SEND_ERRORS.labels(code="window_closed").inc()
                log.warning("outbox %s: outside the 24 h window and no template", send.id)
                return outbox.Failed(
                    send.id,
                    WINDOW_CLOSED,
                    "outside the 24 h window and the message has no template",
                )
            payload = template if template is not None else message
            sent_as = "template"
        problems = limit_violations(payload)
        if problems:
            metrics.SEND_ERRORS.labels(code="invalid").inc()
            log.error("outbox %s breaks WhatsApp limits: %s", send.id, "; ".join(problems))
            return outbox.Failed(send.id, None, "breaks WhatsApp limits: " + "; ".join(problems))
        try:
            wamid = await self.transport.send(
                send.recipient, payload, tracker=f"{send.id}.{send.attempts}"
            )
        except WhatsAppError as e:
            fallback = template if isinstance(template, Template) else None
            text = str(getattr(e, "message", e))
            return await self._on_error(send, e.code, text, fallback, e.status_code)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
            # The request never left: safe to send again.
            metrics.SEND_ERRORS.labels(code="connect").inc()
            return self._retry_or_fail(send, None, f"connection failed: {e!r}")
        except httpx.HTTPError as e:
            metrics.SEND_ERRORS.labels(code="ambiguous").inc()
            log.warning("outbox %s: outcome unknown (%r); waiting for a status", send.id, e)
            return outbox.Unknown(send.id, f"outcome unknown: {e!r}")
        metrics.SENDS.labels(sent_as=sent_as).inc()
        return outbox.Accepted(send.id, wamid, sent_as)

    async def _on_error(
        self,
        send: outbox.ClaimedSend,
        code: int,
        text: str,
        template: Template | None,
        http_status: int | None = None,
    ) -> outbox.Outcome:
        """What the error's class says (flows/wa_errors.py)."""
        metrics.SEND_ERRORS.labels(code=str(code)).inc()
        match classify(code, http_status):
            case Action.TEMPLATE:
                if template is not None and not send.force_template:
                    return outbox.Retry(send.id, 0.0, code, text, as_template=True)
                return outbox.Failed(send.id, code, text)
            case Action.RETRY_SLOWLY:
                async with self.pool.acquire() as conn:
                    if code == PAIR_LIMIT:
                        interval = self.settings.recipient_interval_seconds * send.attempts
                        await outbox.block_recipient(conn, send.pace_key, interval)
                    else:
                        await outbox.drain_budget(conn)
                return self._retry_or_fail(send, code, text, base=2.0, cap=600.0)
            case Action.RETRY:
                return self._retry_or_fail(send, code, text)
            case Action.PAUSE:
                await self.pause(code, text)
                return outbox.Retry(send.id, 0.0, code, text, keep_attempt=True)
            case Action.AMBIGUOUS:
                log.warning(
                    "outbox %s: HTTP %s after sending; waiting for a status", send.id, http_status
                )
                return outbox.Unknown(send.id, f"HTTP {http_status}: outcome unknown: {text}")
            case Action.FAIL:
                return outbox.Failed(send.id, code, text)

    async def pause(self, code: int | None, reason: str) -> None:
        await pause_sending(self.pool, code, reason, probe_in=self.settings.send_probe_seconds)

    async def _probe_while_paused(self) -> None:
        while True:
            await asyncio.sleep(PAUSE_CHECK_SECONDS)
            try:
                async with self.pool.acquire() as conn:
                    pause = await outbox.sending_pause(conn)
                if pause is None or (pause.probe_at and pause.probe_at > datetime.now(UTC)):
                    continue
                await self._probe(pause)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("sending pause check failed: %s", e)

    async def _probe(self, pause: outbox.Pause) -> None:
        try:
            await self.transport.probe()
        except (WhatsAppError, httpx.HTTPError) as e:
            wait = min(
                PROBE_MAX_SECONDS, self.settings.send_probe_seconds * 2 ** (pause.probes + 1)
            )
            async with self.pool.acquire() as conn:
                await outbox.probe_failed(conn, wait, str(getattr(e, "message", e)))
            log.error("sending still paused (probe: %s); next probe in %.0f s", e, wait)
            return
        async with self.pool.acquire() as conn:
            resumed = await outbox.resume_sending(conn)
        if resumed:
            log.warning("sending resumed: the number answers again (paused since %s)", pause.since)
            self.signals.notify(OUTBOX)

    def _retry_or_fail(
        self,
        send: outbox.ClaimedSend,
        code: int | None,
        text: str,
        *,
        base: float = 1.0,
        cap: float = 300.0,
    ) -> outbox.Outcome:
        if send.attempts >= self.settings.send_max_attempts:
            return outbox.Failed(send.id, code, f"gave up after {send.attempts} attempts: {text}")
        return outbox.Retry(send.id, backoff(send.attempts, base=base, cap=cap), code, text)

    async def _write_results(self) -> None:
        """Record outcomes in small batches: one transaction for many sends."""
        while True:
            if self._stopping.is_set() and self._results.empty() and not self._inflight:
                return
            try:
                first = await asyncio.wait_for(self._results.get(), timeout=0.2)
            except TimeoutError:
                continue
            batch = [first]
            while not self._results.empty() and len(batch) < 500:
                batch.append(self._results.get_nowait())
            for attempt in range(10):
                try:
                    async with self.pool.acquire() as conn:
                        await outbox.record(conn, batch)
                    break
                except (OSError, asyncpg.PostgresError) as e:
                    log.warning("recording send outcomes failed (%s), retrying", e)
                    await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
            self.signals.poke(OUTBOX)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(SWEEP_EVERY_SECONDS, self.settings.ambiguous_after_seconds / 4))
            try:
                async with self.pool.acquire() as conn:
                    released = await outbox.release_ambiguous(
                        conn, self.settings.ambiguous_after_seconds
                    )
                if released:
                    self.signals.notify(OUTBOX)
                    log.warning("re-queued %d sends that never got an answer or status", released)
            except (OSError, asyncpg.PostgresError) as e:
                log.warning("outbox sweep failed: %s", e)
