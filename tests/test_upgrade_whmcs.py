"""The upgrade conversation (flows/upgrade.py) on the WHMCS backend, against the fake
WHMCS over real HTTP, with real PostgreSQL: in-process (tests/harness.Stack) for the
conversation itself and a customer confirming more than once, and as a real
`python -m bot serve` process SIGKILLed while the UpgradeProduct that places the order is
in flight, then restarted.

The fixture: Juan (WHMCS client 1, WhatsApp 5491155551234) has one active service,
juanperez.com.ar (10), on "Hosting Inicial", for which he paid 123.45 for the current
year. Its package moves automatically (the upgrade paths file) to "Hosting Pro"
(310.20 a year, 31.90 a month) and "VPS Base" (41.70 a month); "Hosting Mini" is among
the paths but cheaper, "Hosting Ultra" dearer but not among them. His radio is
suspended. WHMCS prices the upgrade with our hook (UPGRADE_PRICING=difference): the new
price for the period chosen minus what was paid for the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from bot.config import Settings
from bot.fakes import payloads as wa_payloads
from bot.fakes.cloud_api import FakeCloudAPI, SentMessage
from bot.fakes.payloads import InboundItem
from bot.fakes.whmcs import ApiCall, FailureKind, FakeInvoice, FakeWhmcs
from bot.whmcs import WhmcsBilling
from tests.harness import (
    APP_SECRET,
    PHONE_ID,
    TOKEN,
    Stack,
    awkward_fake_options,
    choice_ids,
    outbox_id_of,
    text_of,
)
from tests.procs import ROOT, ServerProcess, free_port, server_env

JUAN_WA = "5491155551234"  # Argentina: WhatsApp's 9 that the account phone lacks
PAID_FOR_THIS_YEAR = Decimal("123.45")  # Hosting Inicial, annually: what Juan paid
PRO_YEAR = Decimal("310.20")
PRO_MONTH = Decimal("31.90")
VPS_MONTH = Decimal("41.70")
TIMEZONE = ZoneInfo("America/Argentina/Buenos_Aires")  # DISPLAY_TIMEZONE's default
# The customer's words, as the catalog has them (not copies of its sentences).
UPGRADE_TEXTS = tomllib.loads((ROOT / "messages_es" / "upgrade.toml").read_text("utf-8"))
UNKNOWN_OUTCOME = UPGRADE_TEXTS["refused"]["unknown"]
WHMCS_SETTINGS = (
    "billing_backend",
    "whmcs_url",
    "whmcs_identifier",
    "whmcs_secret",
    "whmcs_access_key",
    "whmcs_upgrades_file",
    "upgrade_pricing",
)


def _data() -> dict[str, Any]:
    """The fixture (SPEC §4's import format), its current year around today."""
    today = datetime.now(TIMEZONE).date()
    period_start = today - timedelta(days=120)
    next_due = _a_year_after(period_start)
    return {
        "clients": [
            {
                "id": "1",
                "name": "Juan Perez",
                "email": "juan@example.com",
                "phone": "+54 11 5555-1234",
                "verified": True,
            },
        ],
        "categories": [{"id": "1", "name": "Hosting"}, {"id": "2", "name": "VPS"}],
        "products": [
            {
                "id": "1",
                "category": "1",
                "name": "Hosting Inicial",
                "prices": {"monthly": "12.90", "annually": str(PAID_FOR_THIS_YEAR)},
                # Hosting Mini is a path, yet cheaper: a downgrade, never offered.
                "upgrades_to": ["2", "4", "3"],
            },
            {
                "id": "2",
                "category": "1",
                "name": "Hosting Pro",
                "prices": {"monthly": str(PRO_MONTH), "annually": str(PRO_YEAR)},
            },
            {
                "id": "3",
                "category": "1",
                "name": "Hosting Mini",
                "prices": {"monthly": "4.10", "annually": "41.00"},
            },
            {"id": "4", "category": "2", "name": "VPS Base", "prices": {"monthly": str(VPS_MONTH)}},
            {
                "id": "5",
                "category": "1",
                "name": "Hosting Ultra",
                "prices": {"annually": "980.00"},
            },
        ],
        "services": [
            {
                "id": "10",
                "client": "1",
                "product": "1",
                "label": "juanperez.com.ar",
                "status": "active",
                "billing_cycle": "annually",
                "amount": str(PAID_FOR_THIS_YEAR),
                "period_start": period_start.isoformat(),
                "next_due": next_due.isoformat(),
            },
            {
                "id": "11",
                "client": "1",
                "product": "3",
                "label": "radio.juanperez.com.ar",
                "status": "suspended",
                "billing_cycle": "monthly",
                "amount": "4.10",
                "period_start": (today - timedelta(days=60)).isoformat(),
                "next_due": (today - timedelta(days=30)).isoformat(),
            },
        ],
        "invoices": [
            {
                "id": "100",
                "client": "1",
                "service": "10",
                "total": str(PAID_FOR_THIS_YEAR),
                "status": "paid",
                "due": period_start.isoformat(),
            },
        ],
    }


def texts(messages: list[SentMessage]) -> str:
    return "\n".join(text_of(m) for m in messages)


def rows(message: SentMessage) -> dict[str, dict[str, str]]:
    """The rows of a list message, by id."""
    action = message.body["interactive"]["action"]
    return {r["id"]: r for s in action.get("sections", []) for r in s["rows"]}


def all_within_limits(messages: list[SentMessage]) -> None:
    """Every message passes WhatsApp's length limits (as the fake read it)."""
    for m in messages:
        if m.type == "text":
            assert len(m.body["text"]["body"]) <= 4096
        elif m.type == "interactive":
            for b in m.body["interactive"]["action"].get("buttons", []):
                assert len(b["reply"]["title"]) <= 20, b
            for r in rows(m).values():
                assert len(r["title"]) <= 24 and len(r.get("description", "")) <= 72, r


def _a_year_after(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 1, day=28)


def amount_es(amount: Decimal) -> str:
    """50.5 → "50,50", as an amount under 1.000 is written in Argentina."""
    assert amount < 1000
    return f"{amount:.2f}".replace(".", ",")


def real_upgrades(whmcs: FakeWhmcs) -> list[ApiCall]:
    """The UpgradeProduct calls that place an order (not WHMCS's calculation, calconly)."""
    return [c for c in whmcs.calls_of("UpgradeProduct") if "calconly" not in c.params]


def invoice_url(whmcs: FakeWhmcs, invoice_id: int | str) -> str:
    """WHMCS's page of an invoice in its client area."""
    return f"{whmcs.base_url}/viewinvoice.php?id={invoice_id}"


def the_upgrade_invoice(whmcs: FakeWhmcs) -> FakeInvoice:
    """The one upgrade order WHMCS has, and the invoice it made for it."""
    [upgrade] = whmcs.upgrades.values()
    assert upgrade.invoiceid, "WHMCS applied the upgrade at once, with no invoice"
    return whmcs.invoices[upgrade.invoiceid]


@contextlib.asynccontextmanager
async def fake_whmcs(
    pool: asyncpg.Pool, tmp_path: Path
) -> AsyncIterator[tuple[FakeWhmcs, Settings]]:
    """The fake WHMCS loaded with the fixture, the settings of a backend talking to it
    (its upgrade paths file written), and the phone index synced from it."""
    async with FakeWhmcs(_data(), upgrade_pricing="difference") as whmcs:
        settings = whmcs.settings_for(
            Settings(upgrade_pricing="difference"), tmp_path / "whmcs_upgrades.toml"
        )
        async with WhmcsBilling(settings, pool) as index:
            await index.sync_clients()
        yield whmcs, settings


class Chat:
    """Juan's side of the conversation: what he sends (through `post`, signed as Meta
    signs it), and the replies each message brought (read from the fake Cloud API)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        cloud: FakeCloudAPI,
        post: Callable[[InboundItem], Awaitable[int]],
        wa_id: str = JUAN_WA,
    ) -> None:
        self.pool = pool
        self.cloud = cloud
        self.post = post
        self.wa_id = wa_id
        self.seen = 0
        self.wamids: list[str] = []

    def mine(self) -> list[SentMessage]:
        return [m for m in self.cloud.sent if m.to == self.wa_id]

    async def answers(self, *, prompt: bool = True, timeout: float = 30) -> list[SentMessage]:
        """The replies since the last look: up to the prompt (interactive) that ends them,
        or (prompt=False) whatever came first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            mine = self.mine()
            new = mine[self.seen :]
            if new and (not prompt or new[-1].type == "interactive"):
                self.seen = len(mine)
                return new
            if loop.time() > deadline:
                raise TimeoutError([text_of(m) for m in new])
            await asyncio.sleep(0.02)

    def skip(self) -> None:
        """Take every reply so far as seen."""
        self.seen = len(self.mine())

    async def send(self, item: InboundItem) -> None:
        assert await self.post(item) == 200
        self.wamids.append(item.wamid)

    async def say(self, text: str, *, prompt: bool = True) -> list[SentMessage]:
        await self.send(wa_payloads.inbound_text(self.wa_id, text))
        return await self.answers(prompt=prompt)

    async def tap_item(self, choice_id: str, *, row: bool = False) -> InboundItem:
        """A tap on an option of the last prompt, quoting it as WhatsApp does, once the
        bot knows that prompt's message id (WhatsApp accepted it, or its status came).

        A customer reads before tapping; tapping the instant the fake recorded the send
        would race the bot learning the id, and a tap on a prompt whose id the bot does
        not know yet is taken as a tap on an older message (flows/conversation.py
        `_stale_tap`: current_prompt "" ≠ the quoted id)."""
        prompts = [m for m in self.mine() if m.type == "interactive"]
        context = prompts[-1].wamid if prompts else None
        if prompts:
            outbox_id = int(outbox_id_of(prompts[-1]))

            async def known() -> bool:
                wamid = await self.pool.fetchval(
                    "SELECT wamid FROM outbox WHERE id = $1", outbox_id
                )
                return bool(wamid == context)

            await until(f"the bot knows its prompt {context}", known, timeout=30)
        if row:
            return wa_payloads.inbound_list_reply(self.wa_id, choice_id, "x", context_wamid=context)
        return wa_payloads.inbound_button_reply(self.wa_id, choice_id, "x", context_wamid=context)

    async def tap(
        self, choice_id: str, *, row: bool = False, prompt: bool = True
    ) -> list[SentMessage]:
        await self.send(await self.tap_item(choice_id, row=row))
        return await self.answers(prompt=prompt)


async def until(
    what: str,
    check: Callable[[], Awaitable[bool]],
    timeout: float,
    explain: Callable[[], Awaitable[str]] | None = None,
) -> None:
    """Until `check()` holds; TimeoutError naming `what` (and what `explain` says of the
    state things are in) after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            state = await explain() if explain is not None else ""
            raise TimeoutError(f"{what}: not after {timeout}s\n{state}")
        await asyncio.sleep(0.05)


async def settled(pool: asyncpg.Pool, wamids: list[str], cloud: FakeCloudAPI) -> bool:
    """Every message the customer sent was handled, no billing command is open, every
    reply was sent, and every status webhook the fake owes was delivered."""
    row = await pool.fetchrow(
        """
        SELECT (SELECT count(DISTINCT wamid) FROM inbox
                 WHERE wamid = ANY($1::text[]) AND status <> 'pending') AS handled,
               (SELECT count(*) FROM inbox WHERE status = 'pending') AS waiting,
               (SELECT count(*) FROM commands WHERE status IN ('pending', 'running')) AS open,
               (SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')) AS unsent
        """,
        wamids,
    )
    assert row is not None
    return (
        row["handled"] == len(set(wamids))
        and row["waiting"] == row["open"] == row["unsent"] == 0
        and cloud.statuses_pending == 0
    )


def placed_texts(chat: Chat, whmcs: FakeWhmcs) -> dict[str, str]:
    """The messages (one per outbox row) that gave Juan an invoice link of this WHMCS."""
    link = f"{whmcs.base_url}/viewinvoice.php"
    return {outbox_id_of(m): text_of(m) for m in chat.mine() if link in text_of(m)}


def unknown_texts(chat: Chat) -> dict[str, str]:
    """The messages (one per outbox row) saying a person checks what happened."""
    return {outbox_id_of(m): text_of(m) for m in chat.mine() if text_of(m) == UNKNOWN_OUTCOME}


async def quote_hosting_pro_yearly(chat: Chat, whmcs: FakeWhmcs) -> list[SentMessage]:
    """From "quiero subir de plan" to the quote of Hosting Pro, paid yearly."""
    hosting, vps = whmcs.wid("categories", "1"), whmcs.wid("categories", "2")
    pro = whmcs.wid("products", "2")
    start = await chat.say("quiero subir de plan")
    assert set(choice_ids(start[-1])) >= {f"cat:{hosting}", f"cat:{vps}"}
    await chat.tap(f"cat:{hosting}")
    await chat.tap(f"pkg:{pro}", row=True)
    return await chat.tap("cyc:annually", row=True)


# -- the conversation --------------------------------------------------------------------------


async def test_upgrade_on_whmcs_quotes_the_difference_and_links_whmcs_invoice(
    db: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with fake_whmcs(db, tmp_path) as (whmcs, settings):
        backend = {name: getattr(settings, name) for name in WHMCS_SETTINGS}
        async with Stack(database_url, **backend) as stack:
            chat = Chat(db, stack.fake, stack.send)
            start = await chat.say("quiero subir de plan")
            # One active service: said which, not asked; the suspended radio not offered.
            assert "juanperez.com.ar" in texts(start)
            assert "radio.juanperez.com.ar" not in texts(start)
            hosting, vps = whmcs.wid("categories", "1"), whmcs.wid("categories", "2")
            assert set(choice_ids(start[-1])) >= {f"cat:{hosting}", f"cat:{vps}"}

            packages = await chat.tap(f"cat:{hosting}")
            offered = rows(packages[-1])
            pro, mini, ultra = (whmcs.wid("products", p) for p in ("2", "3", "5"))
            assert amount_es(PRO_YEAR) in offered[f"pkg:{pro}"]["description"]
            assert f"pkg:{mini}" not in offered  # cheaper: a downgrade
            assert f"pkg:{ultra}" not in offered  # dearer, but not an automatic path

            cycles = await chat.tap(f"pkg:{pro}", row=True)
            assert set(choice_ids(cycles[-1])) >= {"cyc:annually", "cyc:monthly"}
            today = datetime.now(TIMEZONE).date()
            quote = await chat.tap("cyc:annually", row=True)
            tomorrow = datetime.now(TIMEZONE).date()

            # Difference: the new year's price − what was paid for the current year.
            expected = PRO_YEAR - PAID_FOR_THIS_YEAR
            said = texts(quote)
            assert amount_es(expected) in said, said
            assert amount_es(PRO_YEAR) in said and amount_es(PAID_FOR_THIS_YEAR) in said
            # The new period starts when the plan is enabled: today, a year on.
            assert any(
                f"{d.day}/{d.month}/{d.year}" in said
                for d in (_a_year_after(today), _a_year_after(tomorrow))
            ), said
            assert choice_ids(quote[-1]) == ["confirm", "change", "cancel"]
            # Quoting asked WHMCS's calculation only: nothing ordered yet.
            assert whmcs.calls_of("UpgradeProduct") and real_upgrades(whmcs) == []
            assert whmcs.upgrades == {}

            placed = await chat.tap("confirm")
            invoice = the_upgrade_invoice(whmcs)
            await until("settled", lambda: settled(db, chat.wamids, stack.fake), timeout=20)
            all_within_limits(chat.mine())

    # WHMCS billed what the customer was quoted, on the upgrade order the bot placed.
    assert (invoice.total, invoice.status, invoice.userid) == (expected, "Unpaid", 1)
    [line] = invoice.items
    assert line.type == "Upgrade" and "Hosting Inicial => Hosting Pro" in line.description
    [sent] = real_upgrades(whmcs)
    assert {k: sent.params[k] for k in ("serviceid", "newproductid", "newproductbillingcycle")} == {
        "serviceid": whmcs.wid("services", "10"),
        "newproductid": pro,
        "newproductbillingcycle": "annually",
    }
    # The link sent is WHMCS's page of that invoice, with its number and amount.
    told = texts(placed)
    assert invoice_url(whmcs, invoice.id) in told
    assert str(invoice.id) in told and amount_es(expected) in told
    [told_once] = placed_texts(chat, whmcs).values()
    assert f"viewinvoice.php?id={invoice.id}" in told_once
    ledger = await db.fetchrow("SELECT status, result FROM whmcs_requests")
    assert (
        ledger is not None
        and ledger["status"] == "done"
        and ledger["result"]["invoice_id"] == str(invoice.id)
    )


async def test_confirmed_again_and_redelivered_whmcs_orders_once(
    db: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """An impatient customer (the button tapped again, "confirmo" typed) and Meta (the same
    message again, and the same tap under a new message id) while WHMCS takes its time
    over the order, and once more after the invoice was sent: one order."""
    async with fake_whmcs(db, tmp_path) as (whmcs, settings):
        backend = {name: getattr(settings, name) for name in WHMCS_SETTINGS}
        # WHMCS acts on the order at once and answers 6 s later.
        whmcs.fail_next(
            "UpgradeProduct",
            FailureKind.SLOW,
            where=lambda params: "calconly" not in params,
            delay=6.0,
        )
        async with Stack(database_url, **backend) as stack:
            chat = Chat(db, stack.fake, stack.send)
            await quote_hosting_pro_yearly(chat, whmcs)
            confirm = await chat.tap_item("confirm")
            await chat.send(confirm)
            await until("the order reached WHMCS", _async(lambda: bool(real_upgrades(whmcs))), 20)
            # While the order is in flight:
            await chat.send(await chat.tap_item("confirm"))  # the button again (a new message id)
            await chat.send(wa_payloads.inbound_text(JUAN_WA, "confirmo"))
            payload = wa_payloads.messages_update(PHONE_ID, [confirm])
            assert await stack.post(payload) == 200  # Meta redelivers the first tap
            confirmations = chat.wamids[-3:]

            async def confirmations_handled() -> bool:
                done = await db.fetchval(
                    "SELECT count(*) FROM inbox WHERE wamid = ANY($1::text[])"
                    " AND status <> 'pending'",
                    confirmations,
                )
                return bool(done == len(confirmations))

            await until("the confirmations handled", confirmations_handled, timeout=20)
            # …all of them handled while the first one's order was still in WHMCS's hands.
            command = await db.fetchrow("SELECT status FROM commands")
            assert command is not None and command["status"] == "running", (
                "the order was answered before the repeats"
            )

            await until("the invoice sent", _async(lambda: bool(placed_texts(chat, whmcs))), 30)
            await chat.say("confirmo", prompt=False)  # and once more, after the invoice
            await until("settled", lambda: settled(db, chat.wamids, stack.fake), timeout=30)

    assert len(real_upgrades(whmcs)) == 1
    invoice = the_upgrade_invoice(whmcs)  # one order, one invoice
    assert invoice.total == PRO_YEAR - PAID_FOR_THIS_YEAR
    [told] = placed_texts(chat, whmcs).values()
    assert invoice_url(whmcs, invoice.id) in told
    assert await db.fetchval("SELECT count(*) FROM commands") == 1
    assert await db.fetchval("SELECT count(*) FROM whmcs_requests") == 1


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def checked() -> bool:
        return check()

    return checked


# -- killed mid-order ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def meta_and_server(
    database_url: str, settings: Settings, log: Path, command: tuple[str, ...], **env: str
) -> AsyncIterator[tuple[FakeCloudAPI, ServerProcess]]:
    """The fake Cloud API (Meta's habits on, as in the other kill tests), and a (not yet
    started) one-process server on the WHMCS backend whose webhook it posts to."""
    async with FakeCloudAPI(
        phone_id=PHONE_ID,
        token=TOKEN,
        app_secret=APP_SECRET,
        statuses=("sent",),
        **awkward_fake_options(),
    ) as cloud:
        port = free_port()
        cloud.webhook_url = f"http://127.0.0.1:{port}/webhook"
        whmcs_env = {
            "BILLING_BACKEND": "whmcs",
            "WHMCS_URL": settings.whmcs_url,
            "WHMCS_IDENTIFIER": settings.whmcs_identifier,
            "WHMCS_SECRET": settings.whmcs_secret,
            "WHMCS_UPGRADES_FILE": str(settings.whmcs_upgrades_file),
            "WHMCS_TIMEOUT_SECONDS": "90",  # the held answer is cut by the kill, not by us
            "UPGRADE_PRICING": settings.upgrade_pricing,
            "WORKER_PROCESSES": "0",
            "COMMAND_STALLED_SECONDS": "2",
            "DISPATCH_IDLE_SECONDS": "1",
            "AMBIGUOUS_AFTER_SECONDS": "20",
        }
        server = ServerProcess(
            server_env(database_url, cloud.base_url, port, **whmcs_env, **env),
            log,
            command=command,
        )
        try:
            yield cloud, server
        finally:
            server.stop()


def explainer(
    pool: asyncpg.Pool, chat: Chat, whmcs: FakeWhmcs, server: ServerProcess
) -> Callable[[], Awaitable[str]]:
    """What a kill test's timeout reports: the conversation, the database, WHMCS's calls
    and the server's log."""

    async def explain() -> str:
        said = [(m.type, (m.body.get("context") or {}).get("id"), text_of(m)) for m in chat.mine()]
        inbox = await pool.fetch("SELECT id, wamid, status FROM inbox ORDER BY id")
        state = await pool.fetch("SELECT key, flow_state, context FROM conversations")
        commands = await pool.fetch("SELECT key, status, attempts, last_error FROM commands")
        calls = [(c.action, c.params) for c in whmcs.calls]
        return "\n".join(
            [
                f"sent to {chat.wa_id}: {said}",
                f"customer's messages: {chat.wamids}",
                f"inbox: {[dict(r) for r in inbox]}",
                f"conversations: {[dict(r) for r in state]}",
                f"commands: {[dict(r) for r in commands]}",
                f"WHMCS calls: {calls}",
                f"server log: {server.logs()}",
            ]
        )

    return explain


async def _post_as_meta(cloud: FakeCloudAPI, item: InboundItem) -> int:
    _, status = await cloud.send_inbound(item)
    return status


async def in_flight(pool: asyncpg.Pool, action: str = "UpgradeProduct") -> dict[str, Any]:
    """The billing command, its request (`action`) in WHMCS's ledger, and how many
    outcomes were handed to the conversation, as the database has them."""
    command = await pool.fetchrow("SELECT key, kind, status, attempts FROM commands")
    ledger = await pool.fetchrow(
        "SELECT request_id, status FROM whmcs_requests WHERE action = $1", action
    )
    told = await pool.fetchval("SELECT count(*) FROM inbox WHERE wamid LIKE 'command:%'")
    return {
        "command": dict(command) if command else None,
        "ledger": dict(ledger) if ledger else None,
        "told": told,
    }


@pytest.mark.timeout(180)
async def test_killed_while_whmcs_holds_the_order_answer_orders_once_and_tells_once(
    db: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """SIGKILL after WHMCS created the order and its invoice and before its answer
    arrived: the ledger's request is left 'pending'. Restarted, the bot must not send
    UpgradeProduct again, and Juan hears one outcome."""
    async with fake_whmcs(db, tmp_path) as (whmcs, settings):
        # WHMCS acts on the order at once and holds its answer (past the kill).
        whmcs.fail_next(
            "UpgradeProduct",
            FailureKind.SLOW,
            where=lambda params: "calconly" not in params,
            delay=150.0,
        )
        async with meta_and_server(
            database_url, settings, tmp_path / "server.log", ("bot", "serve")
        ) as (cloud, server):
            await server.start()
            chat = Chat(db, cloud, lambda item: _post_as_meta(cloud, item))
            explain = explainer(db, chat, whmcs, server)
            await quote_hosting_pro_yearly(chat, whmcs)
            await chat.tap("confirm", prompt=False)  # "un momento…"
            await until(
                "the order reached WHMCS",
                _async(lambda: bool(real_upgrades(whmcs))),
                timeout=30,
                explain=explain,
            )
            # In flight: WHMCS made the order and its invoice; the bot has its answer
            # neither in the ledger nor in the command.
            invoice = the_upgrade_invoice(whmcs)
            at_kill = await in_flight(db)
            assert at_kill["command"]["kind"] == "place_upgrade"
            assert (at_kill["command"]["status"], at_kill["command"]["attempts"]) == (
                "running",
                1,
            ), at_kill
            assert at_kill["ledger"] == {
                "request_id": at_kill["command"]["key"],
                "status": "pending",
            }, at_kill
            assert at_kill["told"] == 0
            assert not placed_texts(chat, whmcs) and not unknown_texts(chat)
            server.kill()

            await server.start()
            await until(
                "an outcome told",
                _async(lambda: bool(placed_texts(chat, whmcs) or unknown_texts(chat))),
                timeout=60,
                explain=explain,
            )
            await until(
                "settled", lambda: settled(db, chat.wamids, cloud), timeout=30, explain=explain
            )
            after = await in_flight(db)
            outcome = dict(placed_texts(chat, whmcs)), dict(unknown_texts(chat))

            # Asked again, Juan is shown the invoice WHMCS made: no second order.
            chat.skip()
            again = await chat.say("quiero subir de plan")
            await until(
                "settled again",
                lambda: settled(db, chat.wamids, cloud),
                timeout=30,
                explain=explain,
            )

    placed, unknown = outcome
    print(f"after the restart: ledger {after['ledger']}, command {after['command']}")
    # Exactly one order reached WHMCS over the whole test, and it has one invoice.
    assert len(real_upgrades(whmcs)) == 1
    assert the_upgrade_invoice(whmcs).id == invoice.id
    # Exactly one outcome told: the invoice WHMCS made if the ledger learnt it, else
    # "a person checks" with a staff task for that person.
    assert len(placed) + len(unknown) == 1, (placed, unknown)
    assert after["told"] == 1
    if after["ledger"]["status"] == "done":
        [told] = placed.values()
        assert invoice_url(whmcs, invoice.id) in told
        assert after["command"]["status"] == "done"
    else:
        assert unknown and after["command"]["status"] == "unknown"
        tasks = await db.fetch("SELECT reason FROM escalations")
        assert [t["reason"] for t in tasks] == ["billing_outcome_unknown"]
    assert after["command"]["attempts"] == 2
    said = texts(again)
    assert invoice_url(whmcs, invoice.id) in said and "Hosting Pro" in said, said


@pytest.mark.timeout(180)
async def test_killed_after_whmcs_answered_before_the_outcome_is_recorded_tells_the_invoice(
    db: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """SIGKILL after place_upgrade returned (WHMCS answered, the ledger recorded it) and
    before the command's outcome was recorded (tests/serve_with_test_flows.py's
    PAUSE_AFTER_BILLING): restarted, the same request id gets the first answer back."""
    marker = tmp_path / "billing-answered.json"
    async with (
        fake_whmcs(db, tmp_path) as (whmcs, settings),
        meta_and_server(
            database_url,
            settings,
            tmp_path / "server.log",
            ("tests.serve_with_test_flows",),
            PAUSE_AFTER_BILLING=str(marker),
        ) as (cloud, server),
    ):
        await server.start()
        chat = Chat(db, cloud, lambda item: _post_as_meta(cloud, item))
        explain = explainer(db, chat, whmcs, server)
        await quote_hosting_pro_yearly(chat, whmcs)
        await chat.tap("confirm", prompt=False)

        async def answered() -> bool:
            return marker.exists()

        await until("WHMCS answered the order", answered, timeout=30, explain=explain)
        placed_answer = json.loads(marker.read_text())
        invoice = the_upgrade_invoice(whmcs)
        at_kill = await in_flight(db)
        assert (at_kill["command"]["status"], at_kill["command"]["attempts"]) == (
            "running",
            1,
        ), at_kill
        assert at_kill["command"]["key"] == placed_answer["request_id"]
        assert at_kill["ledger"]["status"] == "done" and at_kill["told"] == 0
        assert placed_answer["invoice_id"] == str(invoice.id)
        assert not placed_texts(chat, whmcs)
        server.kill()

        await server.start()
        await until(
            "the invoice told",
            _async(lambda: bool(placed_texts(chat, whmcs))),
            timeout=60,
            explain=explain,
        )
        await until("settled", lambda: settled(db, chat.wamids, cloud), timeout=30, explain=explain)
        after = await in_flight(db)

    assert len(real_upgrades(whmcs)) == 1
    [told] = placed_texts(chat, whmcs).values()
    assert invoice_url(whmcs, invoice.id) in told
    assert amount_es(PRO_YEAR - PAID_FOR_THIS_YEAR) in told
    assert not unknown_texts(chat)
    assert after["command"]["status"] == "done" and after["command"]["attempts"] == 2
    assert after["told"] == 1
    row = await db.fetchrow("SELECT result FROM commands")
    assert row is not None and row["result"]["invoice_id"] == str(invoice.id)
