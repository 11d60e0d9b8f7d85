"""Service transfer on the WHMCS backend (issue 13): WHMCS's API cannot move a service
between clients, so a matched pair that passes the help page's checks becomes one staff
task with everything a person needs — never a move, and the same pair sent again is the
same task."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from bot.config import Settings
from bot.fakes.whmcs import FakeWhmcs
from bot.whmcs import WhmcsBilling
from tests.billing_fixture import BILLING, JUAN_WA, MARIA_WA
from tests.harness import Stack
from tests.test_transfer import message, until_told
from tests.test_upgrade import Chat

WHMCS_SETTINGS = ("billing_backend", "whmcs_url", "whmcs_identifier", "whmcs_secret",
                  "whmcs_access_key", "whmcs_upgrades_file")  # fmt: skip


async def until_decided(db: asyncpg.Pool, *, pairs: int) -> None:
    """Until `pairs` matched pairs have an outcome recorded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    query = "SELECT count(DISTINCT command_key) FROM transfer_requests WHERE outcome IS NOT NULL"
    while await db.fetchval(query) < pairs:
        assert loop.time() < deadline, await db.fetch("SELECT * FROM transfer_requests")
        await asyncio.sleep(0.05)


async def test_a_matched_pair_on_whmcs_is_one_staff_task_and_no_move(
    db: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with FakeWhmcs(BILLING) as whmcs:
        settings = whmcs.settings_for(Settings(), tmp_path / "whmcs_upgrades.toml")
        async with WhmcsBilling(settings, db) as index:
            await index.sync_clients()
        service = whmcs.wid("services", "s1")
        backend = {name: getattr(settings, name) for name in WHMCS_SETTINGS}
        text = message()
        async with Stack(database_url, **backend) as stack:
            juan, maria = Chat(stack, JUAN_WA), Chat(stack, MARIA_WA)
            for sent in (1, 2):  # the same pair, sent again after the first was handled
                await juan.say(text)
                await maria.say(text)
                await until_decided(db, pairs=sent)
            told_juan = await until_told(juan, "persona del equipo")
            told_maria = await until_told(maria, "persona del equipo")
        owner = whmcs.services[int(service)].userid
    tasks = await db.fetch("SELECT reason, detail FROM escalations")
    assert [t["reason"] for t in tasks] == ["transfer_by_hand"]
    detail = tasks[0]["detail"]
    assert detail["service_id"] == service
    assert (detail["from_client_id"], detail["to_client_id"]) == (
        whmcs.wid("clients", "c1"), whmcs.wid("clients", "c2"),
    )  # fmt: skip
    assert owner == int(whmcs.wid("clients", "c1"))  # WHMCS still has it under Juan
    assert "juanperez.com.ar" in told_juan and "juanperez.com.ar" in told_maria
