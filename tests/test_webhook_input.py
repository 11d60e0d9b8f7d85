"""Bad input gets a clear answer, never a 500: signatures, JSON, sizes, odd messages."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import aiohttp
import asyncpg
import pytest

from bot.fakes import payloads as wa_payloads
from bot.metrics import WEBHOOK_ERRORS, WEBHOOK_OTHER_FIELDS, WEBHOOKS
from bot.signatures import sign
from flows.catalog import default_catalog
from tests.billing_fixture import JUAN_WA, MARIA_WA
from tests.harness import APP_SECRET, PHONE_ID, VERIFY_TOKEN, Stack, text_of

CATALOG = default_catalog()


async def _raw_post(stack: Stack, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    assert stack.session is not None
    async with stack.session.post(f"{stack.url}/webhook", data=body, headers=headers) as r:
        return r.status, await r.text()


async def test_handshake(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        assert stack.session is not None
        ok = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "8472"}
        async with stack.session.get(f"{stack.url}/webhook", params=ok) as r:
            assert r.status == 200
            assert await r.text() == "8472"
        bad = dict(ok, **{"hub.verify_token": "guess"})
        async with stack.session.get(f"{stack.url}/webhook", params=bad) as r:
            assert r.status == 403
        async with stack.session.get(f"{stack.url}/webhook") as r:
            assert r.status == 403


async def test_signatures(pool: asyncpg.Pool, database_url: str) -> None:
    payload = wa_payloads.messages_update(PHONE_ID, [wa_payloads.inbound_text(JUAN_WA, "hola")])
    body = wa_payloads.json_bytes(payload)
    async with Stack(database_url) as stack:
        status, _ = await _raw_post(stack, body, {"Content-Type": "application/json"})
        assert status == 401
        forged = {"X-Hub-Signature-256": sign(body, "not-the-secret")}
        assert (await _raw_post(stack, body, forged))[0] == 403
        garbage = {"X-Hub-Signature-256": "sha256=zz\u00e9"}
        assert (await _raw_post(stack, body, garbage))[0] == 403
        # Signed over other bytes (re-serialised JSON) is forged too.
        other = json.dumps(payload, indent=2).encode()
        assert (await _raw_post(stack, other, {"X-Hub-Signature-256": sign(body, APP_SECRET)}))[
            0
        ] == 403
        await asyncio.sleep(0.3)
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 0


async def test_malformed_json_and_odd_shapes(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        for body in (b"{not json", b"\xff\xfe\x00", b""):
            status, text = await _raw_post(
                stack, body, {"X-Hub-Signature-256": sign(body, APP_SECRET)}
            )
            assert status == 400, body
            assert "error" in json.loads(text)
        # Valid JSON that is not an update we know: acknowledged, ignored (Meta must not retry).
        for body in (b"[]", b'{"object": "page"}', b'{"object": "whatsapp_business_account"}'):
            status, _ = await _raw_post(
                stack, body, {"X-Hub-Signature-256": sign(body, APP_SECRET)}
            )
            assert status == 200, body
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 0


async def test_oversize_body_is_413(pool: asyncpg.Pool, database_url: str) -> None:
    big = (
        b'{"object":"whatsapp_business_account","entry":[],"pad":"'
        + b"x" * (4 * 1024 * 1024)
        + b'"}'
    )
    async with Stack(database_url) as stack:
        assert stack.session is not None
        async with stack.session.post(
            f"{stack.url}/webhook",
            data=io.BytesIO(big),
            headers={"X-Hub-Signature-256": sign(big, APP_SECRET)},
        ) as r:
            assert r.status == 413

        # Without Content-Length (chunked), too.
        async def chunks():  # type: ignore[no-untyped-def]
            for i in range(0, len(big), 65536):
                yield big[i : i + 65536]

        assert stack.session is not None
        try:
            async with stack.session.post(
                f"{stack.url}/webhook",
                data=chunks(),
                headers={"X-Hub-Signature-256": sign(big, APP_SECRET)},
            ) as r:
                assert r.status == 413
        except aiohttp.ClientError:
            pass  # the server may close the connection mid-upload after answering 413
        # The service is still fine afterwards.
        await stack.say(JUAN_WA, "hola")
        await stack.replies(1)


async def test_unknown_types_long_texts_and_emoji_get_polite_replies(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        sticker = wa_payloads.inbound_other(
            JUAN_WA, "sticker", {"id": "m1", "mime_type": "image/webp"}
        )
        assert await stack.send(sticker) == 200
        [r1] = await stack.replies(1)
        assert text_of(r1) == CATALOG.text("common.unsupported")
        location = wa_payloads.inbound_other(
            JUAN_WA, "location", {"latitude": -34.6, "longitude": -58.4}
        )
        assert await stack.send(location) == 200
        r2 = (await stack.replies(2))[1]
        assert text_of(r2) == CATALOG.text("common.unsupported")
        # 4,000 characters: understood as nothing in particular; the answer is the menu.
        await stack.say(JUAN_WA, "á" * 1000 + "palabra " * 375)
        r3 = (await stack.replies(3))[2]
        assert text_of(r3) == CATALOG.text("menu.body", name="Juan")
        await stack.say(JUAN_WA, "🙂🙂🔥")
        replies = await stack.replies(5)
        assert text_of(replies[3]) == CATALOG.text("ladder.not_understood")
        await stack.say(JUAN_WA, "texto con \x00 nulo")
        await stack.replies(6)
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE status <> 'done'") == 0


async def test_reactions_get_no_reply(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        reaction = wa_payloads.inbound_other(
            JUAN_WA, "reaction", {"message_id": "wamid.x", "emoji": "👍"}
        )
        assert await stack.send(reaction) == 200
        await stack.say(JUAN_WA, "hola")
        replies = await stack.replies(1)
        await asyncio.sleep(0.5)
    assert len(stack.fake.sent) == 1
    assert text_of(replies[0]) == CATALOG.text("menu.body", name="Juan")


async def test_foreign_phone_number_id_is_ignored(
    pool: asyncpg.Pool, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with Stack(database_url) as stack:
        payload = wa_payloads.messages_update("999999", [wa_payloads.inbound_text(JUAN_WA, "hola")])
        with caplog.at_level(logging.WARNING, logger="bot.webhook"):
            assert await stack.post(payload) == 200
        await asyncio.sleep(0.3)
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 0
    assert stack.fake.sent == []
    assert any("999999" in r.getMessage() for r in caplog.records), caplog.text


async def test_the_request_only_stores(pool: asyncpg.Pool, database_url: str) -> None:
    """Answered once stored: no conversation, no reply, no billing lookup in the request
    (with no inbox worker running, the message waits in the inbox)."""
    async with Stack(database_url, dispatch_concurrency=0) as stack:
        await stack.say(JUAN_WA, "hola")
        await asyncio.sleep(0.5)
        assert stack.fake.sent == []
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE status = 'pending'") == 1
    assert await pool.fetchval("SELECT count(*) FROM conversations") == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_the_raw_delivery_is_kept_as_received(pool: asyncpg.Pool, database_url: str) -> None:
    """Meta offers no history: the body is stored byte for byte (as Meta formatted it,
    not as we would re-serialise it), and each inbox row points at its delivery."""
    item = wa_payloads.inbound_text(JUAN_WA, "señor, ¿qué tal? 🙂")
    payload = wa_payloads.messages_update(PHONE_ID, [item])
    body = json.dumps(payload, indent=2, ensure_ascii=True).encode()
    async with Stack(database_url) as stack:
        status, _ = await _raw_post(stack, body, {"X-Hub-Signature-256": sign(body, APP_SECRET)})
        assert status == 200
        await stack.replies(1)
    row = await pool.fetchrow(
        "SELECT d.body, i.message FROM inbox AS i JOIN webhook_deliveries AS d "
        "ON d.id = i.delivery_id WHERE i.wamid = $1",
        item.wamid,
    )
    assert row["body"] == body.decode()
    assert row["message"]["text"] == "señor, ¿qué tal? 🙂"


async def test_2026_shape_without_phone_is_answered_by_user_id(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        item = wa_payloads.inbound_text(None, "hola", user_id="AR.1502576394655843")
        assert await stack.send(item) == 200
        [reply] = await stack.replies(1)
    # A username-only user has no phone: we cannot identify them, so the polite answer.
    assert reply.body.get("recipient") == "AR.1502576394655843" or reply.to == "AR.1502576394655843"
    assert text_of(reply).startswith(CATALOG.text("identity.unknown", panel_url="x")[:20])


async def test_database_down_means_503_not_500(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        from bot.webhook import POOL

        assert stack._runner is not None
        app_pool = stack._runner.app[POOL]
        app_pool.terminate()
        status = await stack.post(
            wa_payloads.messages_update(PHONE_ID, [wa_payloads.inbound_text(JUAN_WA, "hola")])
        )
        assert status == 503
        assert stack.session is not None
        async with stack.session.get(f"{stack.url}/healthz") as r:
            assert r.status == 503


async def test_standby_and_errors_are_counted_not_answered(
    pool: asyncpg.Pool, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Exact counts: no standby copies of the harness's own (Stack's awkward mode). The
    # counters are the process's: other tests counted before this one.
    counted = (
        WEBHOOK_OTHER_FIELDS.labels(field="standby")._value.get(),
        WEBHOOK_ERRORS.labels(code="131051")._value.get(),
        WEBHOOKS.labels(outcome="errors")._value.get(),
    )
    async with Stack(database_url, awkward=None) as stack:
        standby = wa_payloads.standby_update(PHONE_ID, [wa_payloads.inbound_text(MARIA_WA, "?")])
        payload = wa_payloads.messages_update(PHONE_ID, [wa_payloads.inbound_text(JUAN_WA, "hola")])
        payload["entry"][0]["changes"] += standby["entry"][0]["changes"]
        assert await stack.post(payload) == 200
        # Stored before the 200: Juan's message only, never the standby one.
        stored = await pool.fetch("SELECT conversation_key FROM inbox")
        assert [r["conversation_key"] for r in stored] == [JUAN_WA]
        with caplog.at_level(logging.WARNING, logger="bot.webhook"):
            errors = wa_payloads.errors_update(PHONE_ID, [(131051, "Message type unknown")])
            assert await stack.post(errors) == 200
        await stack.replies(1, to=JUAN_WA)
        assert stack.session is not None
        async with stack.session.get(f"{stack.url}/metrics") as r:
            page = await r.text()
    standby_seen, errors_seen, error_posts = counted
    assert f'webhook_other_fields_total{{field="standby"}} {standby_seen + 1}' in page
    assert f'webhook_errors_total{{code="131051"}} {errors_seen + 1}' in page
    assert f'webhook_requests_total{{outcome="errors"}} {error_posts + 1}' in page
    assert "131051" in caplog.text and "Message type unknown" in caplog.text
    assert all(m.to == JUAN_WA for m in stack.fake.sent)


@pytest.mark.parametrize(
    "bsuid", ["AR.1502576394655843", "AR.Ab3dZ9kQx7", "US.ENT.11815799212886844830", "x-9f2c"]
)
async def test_business_scoped_ids_are_opaque_and_always_an_individual(
    pool: asyncpg.Pool, database_url: str, bsuid: str
) -> None:
    """Meta promises no format for a BSUID: one with letters is still a person, addressed
    by `recipient`, never sent as a group message (which the Cloud API refuses)."""
    async with Stack(database_url) as stack:
        assert await stack.send(wa_payloads.inbound_text(None, "hola", user_id=bsuid)) == 200
        [reply] = await stack.replies(1)
    assert reply.body.get("recipient") == bsuid
    assert reply.body.get("recipient_type") == "individual"
    assert "to" not in reply.body
    assert stack.fake.failed_sends == []
