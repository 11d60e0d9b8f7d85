"""POST /events: the billing system's events (SPEC §3 "Alerts", §4), stored for the
alert worker — nothing slow in the request (verify, validate, store, answer).

Status codes: 202 stored (a repeated id too: stored once, acted on once); 401 signature
missing or wrong; 400 with a JSON error for a body that is not JSON, not an event, of an
unknown type or missing a field; 413 over the size limit; 422 for an `occurred_at` older
than `EVENTS_MAX_AGE` or more than five minutes ahead — a captured event replayed after
its id was purged; 503 when events are not configured or the database is away (the
forwarder retries).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from bot import metrics
from bot.listener import EVENTS
from bot.signatures import SignatureCheck, check
from bot.webhook import POOL, SETTINGS, SIGNALS, read_within
from flows.alerts import ALERT_TYPES
from store import events

log = logging.getLogger(__name__)

# SPEC §3: the eleven events a billing system sends, each one WhatsApp alert.
EVENT_TYPES = frozenset(ALERT_TYPES)
# A forwarder's clock may run a little ahead of ours; more than this is not a clock.
FUTURE_TOLERANCE = timedelta(minutes=5)
_ID_MAX = 200


class EventError(ValueError):
    """The body is JSON but not a well-formed event."""


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    occurred_at: datetime
    client_id: str
    data: dict[str, Any]

    @classmethod
    def from_json(cls, payload: Any) -> Event:
        if not isinstance(payload, dict):
            raise EventError("the body must be a JSON object")
        missing = [f for f in ("id", "type", "occurred_at", "client_id") if not payload.get(f)]
        if missing:
            raise EventError(f"missing field(s): {', '.join(missing)}")
        event_id, event_type = payload["id"], payload["type"]
        client_id, data = payload["client_id"], payload.get("data", {})
        if not isinstance(event_id, str) or len(event_id) > _ID_MAX or "\x00" in event_id:
            raise EventError(f"id must be a string of at most {_ID_MAX} characters")
        if event_type not in EVENT_TYPES:
            raise EventError(f"unknown event type {event_type!r}")
        if not isinstance(client_id, str | int) or isinstance(client_id, bool):
            raise EventError("client_id must be a string")
        if not isinstance(data, dict):
            raise EventError("data must be an object")
        return cls(
            id=event_id,
            type=str(event_type),
            occurred_at=_instant(payload["occurred_at"]),
            client_id=str(client_id).replace("\x00", ""),
            data=data,
        )


def _instant(value: Any) -> datetime:
    if not isinstance(value, str):
        raise EventError("occurred_at must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EventError("occurred_at is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise EventError("occurred_at needs a time zone (e.g. Z or -03:00)")
    return moment.astimezone(UTC)


def _answer(status: int, outcome: str, body: dict[str, Any]) -> web.Response:
    metrics.EVENTS_RECEIVED.labels(outcome=outcome).inc()
    return web.json_response(body, status=status)


async def receive(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not settings.events_secret:
        log.error("EVENTS_SECRET is not set: refusing billing events")
        return _answer(503, "not_configured", {"error": "events are not configured"})
    body = await read_within(request, settings.webhook_max_bytes)
    if body is None:
        return _answer(413, "too_large", {"error": "body too large"})
    signature = check(body, settings.events_secret, request.headers.get("X-Signature-256"))
    if signature is not SignatureCheck.VALID:
        if signature is SignatureCheck.INVALID:
            log.warning("billing event with a wrong signature from %s", request.remote)
        return _answer(401, signature.value, {"error": f"signature {signature.value}"})
    try:
        event = Event.from_json(json.loads(body.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _answer(400, "malformed", {"error": "body is not valid JSON"})
    except EventError as e:
        return _answer(400, "malformed", {"error": str(e)})
    now = datetime.now(UTC)
    if event.occurred_at < now - settings.events_max_age:
        return _answer(422, "stale", {"error": "occurred_at is older than EVENTS_MAX_AGE"})
    if event.occurred_at > now + FUTURE_TOLERANCE:
        return _answer(422, "future", {"error": "occurred_at is in the future"})
    try:
        stored = await events.store(
            request.app[POOL],
            event_id=event.id,
            event_type=event.type,
            occurred_at=event.occurred_at,
            client_id=event.client_id,
            data=event.data,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        log.error("billing event not stored, asking the sender to retry: %s", e)
        return _answer(503, "unavailable", {"error": "temporarily unavailable"})
    outcome = "accepted" if stored else "duplicate"
    if stored:
        request.app[SIGNALS].notify(EVENTS)
    return _answer(202, outcome, {"status": outcome, "id": event.id})
