"""Signed webhooks into a running server; replies read from the fake Cloud API."""

from __future__ import annotations

import asyncpg

from flows.catalog import default_catalog
from tests.billing_fixture import JUAN_WA
from tests.harness import Stack, choice_ids, text_of

CATALOG = default_catalog()


async def test_greeting_gets_the_menu(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "Hola!")
        [reply] = await stack.replies(1)
    assert reply.to == JUAN_WA
    assert "Juan" in text_of(reply)
    assert choice_ids(reply) == ["upgrade", "transfer", "cancel", "alerts", "faq", "human"]
