"""Billing commands end to end, over a running server (signed webhooks in, the fake
Cloud API read): queued with the turn, carried out once by the command worker, the
outcome told in the conversation; and one conversation's turn reaching another's.

The test-only `probe` flow (tests/flows_for_tests.py) asks for an upgrade: `pedir S P C`,
then `si`. The help page's example is the fixture's: Juan paid 100 $ a year for
"Hosting Inicial" (s1); "Hosting Pro" (p2) costs 150 $ a year, so the upgrade is 50 $.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import tests.flows_for_tests  # noqa: F401  (registers the test-only flows)
from bot.config import Settings
from bot.fakes import payloads as wa_payloads
from bot.fakes.whmcs import ApiCall, FailureKind, FakeWhmcs
from bot.whmcs import WhmcsBilling
from flows.billing import BillingUnavailable, OutcomeUnknown
from store import whmcs_index
from tests.billing_fixture import BILLING, JUAN_WA, MARIA_WA, SHARED_WA, UNKNOWN_WA
from tests.flows_for_tests import QUOTED_ON
from tests.harness import Stack, text_of

ORDER = "pedir s1 p2 annually"
KEY_PREFIX = "probe.order:"
HELP_PAGE_UPGRADE = Decimal("50.00")  # paid 100 $/year, mid-year to a 150 $/year plan
WHMCS_SETTINGS = (
    "billing_backend",
    "whmcs_url",
    "whmcs_identifier",
    "whmcs_secret",
    "whmcs_access_key",
    "whmcs_upgrades_file",
)


async def enter_probe(pool: asyncpg.Pool, wa_id: str) -> int:
    """Put the customer's conversation in the test-only flow; its id. (The phone is made
    its alias, as a message would: migration 012.)"""
    conversation_id: int = await pool.fetchval(
        """
        WITH c AS (
            INSERT INTO conversations (key, wa_id, flow_state) VALUES ($1, $1, 'probe.start')
            ON CONFLICT (key) DO UPDATE SET flow_state = 'probe.start'
            RETURNING id
        ), a AS (
            INSERT INTO conversation_aliases (alias, conversation_id) SELECT $1, id FROM c
            ON CONFLICT (alias) DO NOTHING
        )
        SELECT id FROM c
        """,
        wa_id,
    )
    return conversation_id


async def wait_texts(
    stack: Stack,
    to: str,
    wanted: Callable[[str], bool],
    count: int = 1,
    timeout: float = 20.0,
) -> list[str]:
    """Until `count` messages to `to` satisfy `wanted`; all texts sent to `to` so far."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        sent = [text_of(m) for m in stack.fake.sent if m.to == to]
        if sum(1 for t in sent if wanted(t)) >= count:
            return sent
        if loop.time() > deadline:
            raise TimeoutError(f"not {count} wanted messages to {to} in {timeout}s: {sent}")
        await asyncio.sleep(0.05)


def outcome_texts(sent: list[str]) -> list[str]:
    return [t for t in sent if t.startswith("resultado")]


async def the_command(pool: asyncpg.Pool) -> asyncpg.Record:
    [row] = await pool.fetch("SELECT * FROM commands")
    return row


class _Failing:
    """The real billing backend, except that placing an upgrade raises `errors` in turn
    (then works, unless `forever`); every call's request id is appended to `calls`."""

    def __init__(self, real: Any, errors: list[Exception], forever: bool, calls: list[str]):
        self.real = real
        self.errors = errors
        self.forever = forever
        self.calls = calls

    async def place_upgrade(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(kwargs["request_id"])
        if self.errors:
            raise self.errors[0] if self.forever else self.errors.pop(0)
        return await self.real.place_upgrade(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def failing_billing(
    monkeypatch: pytest.MonkeyPatch, *errors: Exception, forever: bool = False
) -> list[str]:
    """The server's billing backend made to fail so; the request ids it was asked with."""
    from bot import app as app_module

    real = app_module.make_billing
    calls: list[str] = []
    monkeypatch.setattr(
        app_module,
        "make_billing",
        lambda settings, pool: _Failing(real(settings, pool), list(errors), forever, calls),
    )
    return calls


# -- exactly once -----------------------------------------------------------------------


async def test_a_confirmation_sent_twice_and_redelivered_places_one_upgrade(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        await enter_probe(pool, JUAN_WA)
        await stack.say(JUAN_WA, ORDER)
        await stack.say(JUAN_WA, "si")
        again = wa_payloads.inbound_text(JUAN_WA, "sí")
        assert await stack.send(again) == 200
        assert await stack.send(again) == 200  # Meta redelivers the same message
        sent = await wait_texts(stack, JUAN_WA, lambda t: t == "procesando", count=2)
        sent = await wait_texts(stack, JUAN_WA, lambda t: t.startswith("resultado"))
    command = await the_command(pool)
    assert command["key"].startswith(KEY_PREFIX)
    assert (command["status"], command["attempts"]) == ("done", 1)
    invoices = await pool.fetch(
        "SELECT id, total, status FROM billing_invoices WHERE request_id = $1", command["key"]
    )
    assert len(invoices) == 1
    assert invoices[0]["total"] == HELP_PAGE_UPGRADE
    # Told once, with the invoice the billing system made.
    [told] = outcome_texts(sent)
    assert told.startswith(f"resultado done None {invoices[0]['id']} https://")
    assert sent.count("procesando") == 2  # the redelivered message was handled once
    outcome_rows = await pool.fetchval(
        "SELECT count(*) FROM inbox WHERE wamid = $1", f"command:{command['key']}"
    )
    assert outcome_rows == 1


async def test_a_transient_failure_is_retried_and_acts_once(
    pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = failing_billing(monkeypatch, BillingUnavailable("connection refused"))
    async with Stack(database_url) as stack:
        await enter_probe(pool, JUAN_WA)
        await stack.say(JUAN_WA, ORDER)
        await stack.say(JUAN_WA, "si")
        sent = await wait_texts(stack, JUAN_WA, lambda t: t.startswith("resultado"))
    command = await the_command(pool)
    assert (command["status"], command["attempts"]) == ("done", 2)
    assert calls == [command["key"], command["key"]]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM billing_invoices WHERE request_id = $1", command["key"]
        )
        == 1
    )
    assert len(outcome_texts(sent)) == 1
    assert await pool.fetchval("SELECT count(*) FROM escalations") == 0


async def test_an_unknown_outcome_opens_one_staff_task_and_is_never_retried(
    pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = failing_billing(monkeypatch, OutcomeUnknown("the answer was lost"))
    async with Stack(database_url, command_stalled_seconds=1.0) as stack:
        await enter_probe(pool, JUAN_WA)
        await stack.say(JUAN_WA, ORDER)
        await stack.say(JUAN_WA, "si")
        sent = await wait_texts(stack, JUAN_WA, lambda t: t.startswith("resultado unknown"))
        first = await the_command(pool)
        # A later order goes through the same worker: by the time it is told, the unknown
        # one has been passed over by every claim since (the stalled window is 1 s).
        await stack.say(JUAN_WA, "pedir s1 p2 monthly")
        await stack.say(JUAN_WA, "si")
        sent = await wait_texts(stack, JUAN_WA, lambda t: t.startswith("resultado done"))
    assert calls.count(first["key"]) == 1
    row = await pool.fetchrow("SELECT status, attempts FROM commands WHERE id = $1", first["id"])
    assert (row["status"], row["attempts"]) == ("unknown", 1)
    tasks = await pool.fetch("SELECT reason, key, client_id, detail FROM escalations")
    assert [(t["reason"], t["key"], t["client_id"]) for t in tasks] == [
        ("billing_outcome_unknown", f"unknown:{first['key']}", "c1")
    ]
    assert tasks[0]["detail"]["command"] == "place_upgrade"
    assert [t.split()[1] for t in outcome_texts(sent)] == ["unknown", "done"]


async def test_a_refusal_is_told_with_its_reason_and_changes_nothing(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        await enter_probe(pool, JUAN_WA)
        await stack.say(JUAN_WA, "pedir s1 p3 annually")  # p3 is not among p1's paths
        await stack.say(JUAN_WA, "si")
        sent = await wait_texts(stack, JUAN_WA, lambda t: t.startswith("resultado"))
    assert outcome_texts(sent) == ["resultado refused not_offered - -"]
    assert (await the_command(pool))["status"] == "refused"
    assert await pool.fetchval("SELECT count(*) FROM billing_invoices WHERE created_by_bot") == 0


async def test_a_billing_system_down_for_good_is_told_as_unavailable(
    pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = failing_billing(monkeypatch, BillingUnavailable("down"), forever=True)
    async with Stack(database_url, command_max_attempts=2) as stack:
        await enter_probe(pool, JUAN_WA)
        await stack.say(JUAN_WA, ORDER)
        await stack.say(JUAN_WA, "si")
        sent = await wait_texts(stack, JUAN_WA, lambda t: t.startswith("resultado"))
    assert outcome_texts(sent) == ["resultado unavailable None - -"]
    command = await the_command(pool)
    assert (command["status"], command["attempts"]) == ("unavailable", 2)
    assert len(calls) == 2
    assert await pool.fetchval("SELECT count(*) FROM escalations") == 0


# -- one conversation's turn reaching another -------------------------------------------


async def test_a_turn_in_one_conversation_makes_another_hear_it_in_its_order(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        juan = await enter_probe(pool, JUAN_WA)
        maria = await enter_probe(pool, MARIA_WA)
        # María is in the middle of something (and her 24 h window is open).
        await stack.say(MARIA_WA, "nota")
        await wait_texts(stack, MARIA_WA, lambda t: t == "escriba su nota")
        await stack.say(JUAN_WA, f"avisar {maria}")
        await wait_texts(stack, MARIA_WA, lambda t: t.startswith("aviso"))
        await stack.say(MARIA_WA, "mi nota")
        sent = await wait_texts(stack, MARIA_WA, lambda t: t == "probe lista")
    # Heard between her own messages, without disturbing what she was doing.
    assert sent == ["escriba su nota", f"aviso hola de {juan}", "nota: mi nota", "probe lista"]
    assert [text_of(m) for m in stack.fake.sent if m.to == JUAN_WA] == [f"avisé a {maria}"]
    # Through María's inbox, in her order: each row answered after the one before.
    rows = await pool.fetch(
        """
        SELECT i.wamid, i.status, min(o.id) AS reply FROM inbox i
        JOIN conversations c ON c.key = i.conversation_key
        LEFT JOIN outbox o ON o.inbox_id = i.id
        WHERE c.id = $1 GROUP BY i.id ORDER BY i.id
        """,
        maria,
    )
    assert [r["wamid"].startswith("signal:") for r in rows] == [False, True, False]
    assert {r["status"] for r in rows} == {"done"}
    replies = [r["reply"] for r in rows]
    assert replies == sorted(replies)


# -- a slow billing system holds up nobody else -----------------------------------------


async def test_others_are_answered_while_a_command_waits_on_a_slow_billing_system(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await whmcs_index.forget_everything(pool)
    async with FakeWhmcs(BILLING, today=QUOTED_ON) as whmcs:
        real = whmcs.settings_for(Settings(), tmp_path / "whmcs_upgrades.toml")
        async with WhmcsBilling(real.with_(database_url=database_url), pool) as index:
            await index.sync_clients()
        backend = {name: getattr(real, name) for name in WHMCS_SETTINGS}
        # The upgrade itself (not its calculation, `calconly`): WHMCS acts, then answers
        # 10 s later.
        whmcs.fail_next("UpgradeProduct", FailureKind.SLOW, where=_placing, delay=10.0)
        async with Stack(database_url, **backend) as stack:
            await enter_probe(pool, JUAN_WA)
            service, product = whmcs.wid("services", "s1"), whmcs.wid("products", "p2")
            await stack.say(JUAN_WA, f"pedir {service} {product} annually")
            await stack.say(JUAN_WA, "si")
            await wait_texts(stack, JUAN_WA, lambda t: t == "procesando")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not placed(whmcs):
                assert loop.time() < deadline, "the command never reached WHMCS"
                await asyncio.sleep(0.05)
            # While WHMCS takes its time, other customers write and are answered.
            for wa_id in (MARIA_WA, UNKNOWN_WA, SHARED_WA):
                await stack.say(wa_id, "hola")
            for wa_id in (MARIA_WA, UNKNOWN_WA, SHARED_WA):
                await stack.replies(1, to=wa_id)
            # …and all that while the command was still waiting on WHMCS.
            assert (await the_command(pool))["status"] == "running"
            assert not outcome_texts([text_of(m) for m in stack.fake.sent if m.to == JUAN_WA])
            sent = await wait_texts(stack, JUAN_WA, lambda t: t.startswith("resultado"), timeout=30)
    assert [t.split()[1] for t in outcome_texts(sent)] == ["done"]
    assert len(placed(whmcs)) == 1


def _placing(params: Mapping[str, str]) -> bool:
    return params.get("calconly") != "true"


def placed(whmcs: FakeWhmcs) -> list[ApiCall]:
    """The UpgradeProduct calls that place an order (not the calculations)."""
    return [c for c in whmcs.calls_of("UpgradeProduct") if _placing(c.params)]


# -- a command nobody handles fails loudly ----------------------------------------------


async def test_a_command_the_dispatcher_does_not_handle_fails_the_turn() -> None:
    from bot.dispatcher import Dispatcher
    from flows.catalog import default_catalog
    from flows.runtime import Identity, IdentityStatus, Turn
    from store.turns import ConversationRow

    dispatcher = Dispatcher(None, Settings(), None, default_catalog(), None)  # type: ignore[arg-type]
    conv = ConversationRow(1, JUAN_WA, JUAN_WA, None, None, None, "menu.main", {}, None, None)
    turn = Turn("menu.main", {}, effects=[object()])  # type: ignore[list-item]
    with pytest.raises(AssertionError):
        await dispatcher._apply_effects(
            None,  # type: ignore[arg-type]
            conv,
            Identity(IdentityStatus.UNKNOWN),
            turn,
            JUAN_WA,
            woken=set(),
        )


async def test_a_billing_command_the_worker_does_not_handle_fails_loudly() -> None:
    from bot.commands import CommandWorker

    worker = CommandWorker(None, Settings(), None, None)  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        await worker._call(object())  # type: ignore[arg-type]
