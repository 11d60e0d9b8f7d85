"""GET/POST /webhook: Meta's handshake, and its updates stored without any conversation
work in the request (verify, store, answer).

Status codes: 200 stored (or nothing to store); 400 malformed JSON; 401 signature
missing; 403 signature wrong; 413 body over the limit; 503 when we cannot store it right
now (Meta retries non-200 answers for days, so nothing is lost).
"""

from __future__ import annotations

import json
import logging

import asyncpg
from aiohttp import web

from bot import metrics
from bot.config import Settings
from bot.listener import INBOX, OUTBOX, Signals
from bot.sender import pause_sending
from bot.signatures import SignatureCheck, check
from bot.status_writer import StatusWriter
from bot.wa_updates import PayloadError, parse
from flows.billing import Billing
from flows.runtime import timestamp_or_now
from flows.wa_errors import Action, classify
from store import inbox

log = logging.getLogger(__name__)

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool", asyncpg.Pool)
SIGNALS: web.AppKey[Signals] = web.AppKey("signals", Signals)
STATUS_WRITER: web.AppKey[StatusWriter] = web.AppKey("status_writer", StatusWriter)
BILLING: web.AppKey[Billing] = web.AppKey("billing")


async def read_within(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None when it is over `limit` bytes (announced or sent)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None
    return None if len(body) > limit else body


def _error(status: int, outcome: str, message: str) -> web.Response:
    metrics.WEBHOOKS.labels(outcome=outcome).inc()
    return web.json_response({"error": message}, status=status)


async def verify(request: web.Request) -> web.Response:
    """Meta's subscription handshake: echo hub.challenge when the token matches."""
    settings = request.app[SETTINGS]
    q = request.query
    token = settings.whatsapp_verify_token
    if (
        q.get("hub.mode") == "subscribe"
        and token
        and q.get("hub.verify_token") == token
        and q.get("hub.challenge") is not None
    ):
        return web.Response(text=q["hub.challenge"])
    return web.json_response({"error": "verification failed"}, status=403)


async def receive(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not settings.whatsapp_app_secret:
        log.error("WHATSAPP_APP_SECRET is not set: refusing webhooks")
        return _error(503, "not_configured", "webhook secret not configured")
    body = await read_within(request, settings.webhook_max_bytes)
    if body is None:
        return _error(413, "too_large", "body too large")

    signature = check(
        body, settings.whatsapp_app_secret, request.headers.get("X-Hub-Signature-256")
    )
    if signature is SignatureCheck.MISSING:
        return _error(401, "unsigned", "missing X-Hub-Signature-256")
    if signature is SignatureCheck.INVALID:
        log.warning("webhook with a wrong signature from %s", request.remote)
        return _error(403, "forged", "invalid signature")

    try:
        text = body.decode("utf-8")
        payload = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _error(400, "malformed", "body is not valid JSON")
    try:
        parsed = parse(payload, settings.whatsapp_phone_id)
    except PayloadError as e:
        # Signed by Meta but not an update we know: retrying would not help.
        log.warning("webhook ignored: %s", e)
        metrics.WEBHOOKS.labels(outcome="ignored").inc()
        return web.json_response({"status": "ignored"})
    for phone_id in parsed.foreign_phone_ids:
        log.warning("webhook change for another phone_number_id %s ignored", phone_id)
    if parsed.skipped:
        log.warning("webhook: %d items without the fields we need, skipped", parsed.skipped)
    for error in parsed.errors:
        log.warning("webhook reports error %s: %s", error.code, error.title)
        metrics.WEBHOOK_ERRORS.labels(code=str(error.code)).inc()
    for other in parsed.other_fields:
        metrics.WEBHOOK_OTHER_FIELDS.labels(field=other[:40]).inc()

    messages = [inbox.NewMessage(m.wamid, m.conversation_key, m.data) for m in parsed.messages]
    statuses = [
        inbox.Status(
            wamid=s.wamid,
            status=s.status,
            outbox_id=s.outbox_id,
            attempt=s.attempt,
            at=timestamp_or_now(s.timestamp) if s.timestamp else None,
            error_code=s.error_code,
            error_title=s.error_title,
        )
        for s in parsed.statuses
    ]
    if not messages and not statuses:
        if parsed.errors:
            outcome = "errors"
        elif parsed.other_fields:
            outcome = "other_field"
        else:
            outcome = "empty"
        metrics.WEBHOOKS.labels(outcome=outcome).inc()
        return web.json_response({"status": "ok"})
    try:
        pausing = next(
            (s for s in parsed.statuses if s.status == "failed" and pauses(s.error_code)), None
        )
        if pausing is not None:
            # Meta accepted a message, then said the account or our credentials cannot
            # send it: nothing else can be sent either. Paused before the message is
            # queued again, so no sender takes it meanwhile.
            await pause_sending(
                request.app[POOL],
                pausing.error_code,
                pausing.error_title or "failed status",
                probe_in=settings.send_probe_seconds,
            )
        if messages:
            result = await inbox.accept(
                request.app[POOL],
                text,
                messages,
                statuses,
                max_send_attempts=settings.send_max_attempts,
            )
        else:
            applied = await request.app[STATUS_WRITER].apply(statuses)
            result = inbox.Accepted(0, 0, applied.applied, applied.requeued, applied.doubled)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        log.error("webhook not stored, asking Meta to retry: %s", e)
        return _error(503, "unavailable", "temporarily unavailable")
    if result.new:
        request.app[SIGNALS].notify(INBOX)
    if result.requeued:
        request.app[SIGNALS].notify(OUTBOX)
    if result.doubled:
        # A send retried after its answer was lost had reached WhatsApp after all.
        log.warning("%d message(s) delivered twice (a retried send)", result.doubled)
        metrics.DOUBLE_DELIVERIES.inc(result.doubled)
    metrics.WEBHOOK_MESSAGES.inc(result.new)
    for s in parsed.statuses:
        metrics.WEBHOOK_STATUSES.labels(status=s.status).inc()
    outcome = "duplicate" if messages and result.new == 0 and not statuses else "accepted"
    metrics.WEBHOOKS.labels(outcome=outcome).inc()
    return web.json_response({"status": "ok"})


def pauses(code: int | None) -> bool:
    return classify(code) is Action.PAUSE
