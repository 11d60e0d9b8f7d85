"""POST /events (SPEC §4) over a running server: signed billing events stored once,
everything else refused with the status SPEC gives, nothing stored."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from bot.config import ConfigError, Settings
from bot.signatures import sign
from tests.harness import Stack

SECRET = "events-test-secret"


def event(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "evt-1",
        "type": "invoice.created",
        "occurred_at": datetime.now(UTC).isoformat(),
        "client_id": "c1",
        "data": {"invoice_id": "i9", "total": "100.00", "due_date": "2026-12-10"},
    }
    body.update(changes)
    return body


async def post(
    stack: Stack, body: bytes, *, signature: str | None = None, signed: bool = True
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if signed:
        headers["X-Signature-256"] = signature or sign(body, SECRET)
    assert stack.session is not None
    data = io.BytesIO(body) if len(body) > 1_000_000 else body
    async with stack.session.post(f"{stack.url}/events", data=data, headers=headers) as r:
        return r.status, await r.json()


def raw(payload: Any) -> bytes:
    return json.dumps(payload).encode()


async def stored(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT id, type, occurred_at, client_id, data FROM events")


async def test_a_signed_event_is_stored_once(pool: asyncpg.Pool, database_url: str) -> None:
    sent = event()
    async with Stack(database_url, events_secret=SECRET) as stack:
        first = await post(stack, raw(sent))
        again = await post(stack, raw(sent))  # the forwarder retried
    assert first == (202, {"status": "accepted", "id": "evt-1"})
    assert again == (202, {"status": "duplicate", "id": "evt-1"})
    [row] = await stored(pool)
    assert (row["id"], row["type"], row["client_id"]) == ("evt-1", "invoice.created", "c1")
    assert row["data"] == sent["data"]
    assert row["occurred_at"] == datetime.fromisoformat(sent["occurred_at"])


async def test_unsigned_or_forged_events_are_refused(pool: asyncpg.Pool, database_url: str) -> None:
    body = raw(event())
    async with Stack(database_url, events_secret=SECRET) as stack:
        unsigned = await post(stack, body, signed=False)
        forged = await post(stack, body, signature=sign(body, "not-the-secret"))
        garbage = await post(stack, body, signature="sha256=zz")
    assert [unsigned[0], forged[0], garbage[0]] == [401, 401, 401]
    assert await stored(pool) == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (raw(["a", "list"]), "object"),
        (raw(event(type="invoice.exploded")), "unknown event type"),
        (raw({k: v for k, v in event().items() if k != "client_id"}), "client_id"),
        (raw(event(id="")), "id"),
        (raw(event(occurred_at="yesterday")), "ISO 8601"),
        (raw(event(occurred_at="2026-12-02T10:00:00")), "time zone"),
        (raw(event(data=["x"])), "data"),
        (raw(event(id="x" * 201)), "id"),
    ],
)
async def test_a_malformed_event_gets_400_with_a_reason(
    pool: asyncpg.Pool, database_url: str, body: bytes, says: str
) -> None:
    async with Stack(database_url, events_secret=SECRET) as stack:
        status, answer = await post(stack, body)
    assert status == 400 and says in answer["error"]
    assert await stored(pool) == []


@pytest.mark.parametrize(
    ("age", "status"),
    [
        (timedelta(days=8), 422),  # older than the default 7 days: a replay
        (timedelta(days=6), 202),  # a forwarder retrying for days
        (timedelta(minutes=-10), 422),  # ten minutes ahead: not a clock, a forgery
        (timedelta(minutes=-2), 202),  # a clock a little ahead
    ],
)
async def test_stale_and_future_events_are_refused(
    pool: asyncpg.Pool, database_url: str, age: timedelta, status: int
) -> None:
    when = (datetime.now(UTC) - age).isoformat()
    async with Stack(database_url, events_secret=SECRET) as stack:
        got, _ = await post(stack, raw(event(occurred_at=when)))
    assert got == status
    assert len(await stored(pool)) == (1 if status == 202 else 0)


async def test_the_age_limit_is_a_setting(pool: asyncpg.Pool, database_url: str) -> None:
    when = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    async with Stack(database_url, events_secret=SECRET, events_max_age=timedelta(hours=1)) as s:
        got, _ = await post(s, raw(event(occurred_at=when)))
    assert got == 422
    assert Settings.from_env({"EVENTS_MAX_AGE": "12h"}, dotenv=False).events_max_age == (
        timedelta(hours=12)
    )
    assert Settings.from_env({}, dotenv=False).events_max_age == timedelta(days=7)
    with pytest.raises(ConfigError):
        Settings.from_env({"EVENTS_MAX_AGE": "soon"}, dotenv=False)


async def test_an_oversize_body_and_no_secret(pool: asyncpg.Pool, database_url: str) -> None:
    huge = raw(event(data={"blob": "x" * 4_000_000}))
    async with Stack(database_url, events_secret=SECRET) as stack:
        too_large, _ = await post(stack, huge)
    async with Stack(database_url, events_secret="") as stack:
        unconfigured, _ = await post(stack, raw(event()))
    assert (too_large, unconfigured) == (413, 503)
    assert await stored(pool) == []
