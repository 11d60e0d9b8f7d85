"""The upgrade conversation (issue 12) over a running server on the local backend, with
tests/billing_fixture.BILLING: Juan (c1, WhatsApp 5491155551234) has one active service,
juanperez.com.ar (s1: Hosting Inicial, 100.00 a year, period 2026-01-01 → 2027-01-01),
whose package can move automatically to Hosting Pro (150.00 a year, 15.00 a month) and
VPS Base (25.00 a month); Hosting Ultra (250.00 a year) is dearer but not among its
paths, Hosting Mini (50.00 a year) is cheaper. His radio (s3) is suspended.

What the customer is told is checked against the help page's rule ("sólo se abonará la
diferencia": paid 100 $ a year, moving to a 150 $ one, 50 $), not against the catalog's
sentences.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from bot.fakes.cloud_api import SentMessage
from store.billing_local import LocalBilling
from tests.billing_fixture import JUAN_WA
from tests.harness import Stack, choice_ids, text_of


class Chat:
    """Juan's side of the conversation: what he sends, and each reply it brought."""

    def __init__(self, stack: Stack, wa_id: str = JUAN_WA) -> None:
        self.stack = stack
        self.wa_id = wa_id
        self.seen = 0

    async def _answers(self, expect_interactive: bool) -> list[SentMessage]:
        """The replies to one message: up to the prompt (interactive) that ends them, and
        whatever else came meanwhile (another conversation's news)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            mine = [m for m in self.stack.fake.sent if m.to == self.wa_id]
            new = mine[self.seen :]
            if new and (not expect_interactive or any(m.type == "interactive" for m in new)):
                self.seen = len(mine)
                return new
            if loop.time() > deadline:
                raise TimeoutError([text_of(m) for m in new])
            await asyncio.sleep(0.02)

    async def say(self, text: str, *, prompt: bool = True) -> list[SentMessage]:
        await self.stack.say(self.wa_id, text)
        return await self._answers(prompt)

    async def tap(
        self, choice_id: str, *, row: bool = False, prompt: bool = True
    ) -> list[SentMessage]:
        await self.stack.tap(self.wa_id, choice_id, row=row)
        return await self._answers(prompt)


def texts(messages: list[SentMessage]) -> str:
    return "\n".join(text_of(m) for m in messages)


def rows(message: SentMessage) -> dict[str, dict[str, str]]:
    action = message.body["interactive"]["action"]
    return {r["id"]: r for s in action.get("sections", []) for r in s["rows"]}


async def bot_invoices(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, client_id, service_id, total, status FROM billing_invoices"
        " WHERE created_by_bot ORDER BY id"
    )


async def until_invoice(pool: asyncpg.Pool) -> asyncpg.Record:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not (found := await bot_invoices(pool)):
        assert loop.time() < deadline, "no invoice"
        await asyncio.sleep(0.05)
    [invoice] = found
    return invoice


async def order_hosting_pro(chat: Chat, pool: asyncpg.Pool) -> asyncpg.Record:
    """Juan orders Hosting Pro, a year, and confirms: the invoice it made."""
    await chat.say("quiero pasar juanperez al plan hosting pro")
    await chat.tap("cyc:annually", row=True)
    await chat.tap("confirm")
    return await until_invoice(pool)


def all_within_limits(messages: list[SentMessage]) -> None:
    """Every message the bot sent passes WhatsApp's limit checks (as the fake read it)."""
    for m in messages:
        if m.type == "text":
            assert len(m.body["text"]["body"]) <= 4096
        elif m.type == "interactive":
            inter = m.body["interactive"]
            action = inter["action"]
            for b in action.get("buttons", []):
                assert len(b["reply"]["title"]) <= 20, b
            for r in rows(m).values():
                assert len(r["title"]) <= 24 and len(r.get("description", "")) <= 72, r


async def test_the_help_page_example_quotes_the_difference_and_applies_on_payment(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        chat = Chat(stack)
        start = await chat.say("quiero subir de plan")
        # One active service: said which, not asked. Two categories it can move to.
        assert "juanperez.com.ar" in texts(start)
        assert "radio.juanperez.com.ar" not in texts(start)  # suspended: not offered
        assert set(choice_ids(start[-1])) >= {"cat:hosting", "cat:vps"}
        packages = await chat.tap("cat:hosting")
        offered = rows(packages[-1])
        assert "pkg:p2" in offered and "150,00" in offered["pkg:p2"]["description"]
        assert "pkg:p3" not in offered and "pkg:p0" not in offered  # not a path; cheaper
        cycles = await chat.tap("pkg:p2", row=True)
        assert set(choice_ids(cycles[-1])) >= {"cyc:annually", "cyc:monthly"}
        quote = await chat.tap("cyc:annually", row=True)
        # 150 $ a year − the 100 $ already paid = 50 $ (the help page's example).
        said = texts(quote)
        assert "150,00" in said and "100,00" in said and "50,00" in said
        assert choice_ids(quote[-1]) == ["confirm", "change", "cancel"]
        assert await bot_invoices(pool) == []  # nothing until confirmed
        placed = await chat.tap("confirm")
        invoice = await until_invoice(pool)
        assert (invoice["total"], invoice["status"], invoice["service_id"]) == (
            Decimal("50.00"), "unpaid", "s1",
        )  # fmt: skip
        link = await LocalBilling(pool).invoice_link("c1", invoice["id"])
        assert link in texts(placed)
        # Paid: the service moves to Hosting Pro, and Juan gets one message saying so.
        before = len([m for m in stack.fake.sent if m.to == JUAN_WA])
        await LocalBilling(pool).pay_invoice(invoice["id"])
        [applied] = await chat._answers(expect_interactive=False)
        await asyncio.sleep(1.0)  # a second message (a generic payment alert) would be here
        after = [m for m in stack.fake.sent if m.to == JUAN_WA][before:]
        all_within_limits([m for m in stack.fake.sent if m.to == JUAN_WA])
    assert len(after) == 1
    assert "Hosting Pro" in text_of(applied) and "juanperez.com.ar" in text_of(applied)
    service = await pool.fetchrow("SELECT product_id, amount FROM billing_services WHERE id='s1'")
    assert (service["product_id"], service["amount"]) == ("p2", Decimal("150.00"))
    assert len(await bot_invoices(pool)) == 1


async def test_named_service_and_package_skip_their_steps_and_typos_are_understood(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        chat = Chat(stack)
        cycles = await chat.say("quiero pasar juanperez al plan hosting pro")
        assert set(choice_ids(cycles[-1])) >= {"cyc:annually", "cyc:monthly"}
        quote = await chat.say("anuall")  # a typo of "anual"
        assert "50,00" in texts(quote)
        placed = await chat.say("confirmo")
        await until_invoice(pool)
        # Confirmed twice (an impatient customer): still one invoice.
        await chat.say("confirmo", prompt=False)
        await asyncio.sleep(1.0)
    assert len(await bot_invoices(pool)) == 1
    assert "viewinvoice.php" in texts(placed)


async def test_typed_choices_with_typos_at_every_step(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        chat = Chat(stack)
        await chat.say("quiero subri de plan")
        await chat.say("hostng")
        await chat.say("hosting pro")
        quote = await chat.say("el plan anuall")
        assert "50,00" in texts(quote)
        assert choice_ids(quote[-1]) == ["confirm", "change", "cancel"]
        cancelled = await chat.say("mejor no", prompt=False)
        await asyncio.sleep(1.0)
    # Backing out requests nothing, and the customer is told so.
    assert await bot_invoices(pool) == []
    assert "ningún cambio" in texts(cancelled)


async def test_a_package_not_offered_goes_to_the_account_executive(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        chat = Chat(stack)
        offer = await chat.say("quiero pasar mi hosting al plan Hosting Ultra")
        assert "Hosting Ultra" in texts(offer)
        assert choice_ids(offer[-1])[0] == "to_staff"
        done = await chat.tap("to_staff")
    tasks = await pool.fetch("SELECT reason, detail FROM escalations")
    assert [t["reason"] for t in tasks] == ["upgrade_not_offered"]
    detail = tasks[0]["detail"]
    assert detail["wanted_product"] == "Hosting Ultra" and detail["service"] == "juanperez.com.ar"
    assert detail["account_manager"] == "ana"
    assert "ana" in texts(done)
    assert await bot_invoices(pool) == []


async def test_a_downgrade_is_explained_and_never_invoiced(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        chat = Chat(stack)
        named = await chat.say("quiero pasar al plan Hosting Mini")
        asked = await chat.say("menu")
        plain = await chat.say("quiero bajar de plan")
    for answer in (texts(named), texts(plain)):
        # The help page: no downgrades; cancel and contract a fitting plan; a cancellation
        # loses everything and cannot be undone.
        assert "No es posible bajar de plan" in answer
        assert "baja" in answer and "pierde todo" in answer
    assert "Hosting Mini" in texts(named)
    assert asked
    assert await bot_invoices(pool) == []


async def test_an_unpaid_upgrade_is_shown_and_a_second_one_refused(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        chat = Chat(stack)
        invoice = await order_hosting_pro(chat, pool)
        again = await chat.say("quiero subir de plan")
    link = await LocalBilling(pool).invoice_link("c1", invoice["id"])
    said = texts(again)
    assert link in said and invoice["id"] in said and "Hosting Pro" in said
    assert len(await bot_invoices(pool)) == 1


async def test_an_unpaid_upgrade_expires_voided_and_told(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(
        database_url, upgrade_invoice_ttl=timedelta(seconds=2), upkeep_seconds=1
    ) as stack:
        chat = Chat(stack)
        invoice = await order_hosting_pro(chat, pool)
        [told] = await chat._answers(expect_interactive=False)
    status = await pool.fetchval("SELECT status FROM billing_invoices WHERE id = $1", invoice["id"])
    assert status == "cancelled"
    assert invoice["id"] in text_of(told) and "Hosting Pro" in text_of(told)
    service = await pool.fetchval("SELECT product_id FROM billing_services WHERE id = 's1'")
    assert service == "p1"


async def test_twelve_packages_are_paged(pool: asyncpg.Pool, database_url: str) -> None:
    extra: list[dict[str, Any]] = [
        {"id": f"x{n}", "category": "hosting", "name": f"Hosting Plus {n}",
         "prices": {"annually": f"{200 + n}.00"}, "upgrades_to": []}
        for n in range(1, 12)
    ]  # fmt: skip
    paths = [*(p["id"] for p in extra), "p2", "p0", "v1"]
    await LocalBilling(pool).load(
        {
            "products": [
                *extra,
                {"id": "p1", "category": "hosting", "name": "Hosting Inicial",
                 "prices": {"monthly": "10.00", "annually": "100.00"}, "upgrades_to": paths},
            ]
        }
    )  # fmt: skip
    async with Stack(database_url) as stack:
        chat = Chat(stack)
        await chat.say("quiero subir de plan")
        first = await chat.tap("cat:hosting")
        page_one = rows(first[-1])
        assert len(page_one) <= 10 and any("más" in r["title"].lower() for r in page_one.values())
        second = await chat.say("ver más")
        page_two = rows(second[-1])
        shown = {k for k in (*page_one, *page_two) if k.startswith("pkg:")}
        assert len(shown) == 12
        all_within_limits([m for m in stack.fake.sent if m.to == JUAN_WA])


async def test_pro_rata_quotes_whmcs_formula(pool: asyncpg.Pool, database_url: str) -> None:
    """WHMCS's documented pro-rata upgrade: (new price − old price) × days left until the
    next due date ÷ days in the billing cycle; the due date stays."""
    today = datetime.now(ZoneInfo("America/Argentina/Buenos_Aires")).date()
    # Juan's yearly period, whatever the day the test runs: started 100 days ago.
    start = today - timedelta(days=100)
    next_due = date(start.year + 1, start.month, min(start.day, 28))
    start = date(start.year, start.month, min(start.day, 28))
    await pool.execute(
        "UPDATE billing_services SET period_start = $1, next_due = $2 WHERE id = 's1'",
        start,
        next_due,
    )
    async with Stack(database_url, upgrade_pricing="prorata") as stack:
        chat = Chat(stack)
        quote = await chat.say("quiero pasar juanperez al plan hosting pro")
    days_left = (next_due - today).days
    days_in_cycle = (next_due - start).days
    raw = (Decimal("150.00") - Decimal("100.00")) * days_left / days_in_cycle
    expected = raw.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    said = texts(quote)
    assert f"{expected:.2f}".replace(".", ",") in said
    assert str(days_left) in said and str(days_in_cycle) in said  # what it is made of
    assert f"{next_due.day}/{next_due.month}/{next_due.year}" in said  # the due date stays


async def test_after_the_session_expires_the_unpaid_upgrade_is_shown_again(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        chat = Chat(stack)
        invoice = await order_hosting_pro(chat, pool)
        # A day later (the session long expired), Juan writes again.
        await pool.execute("UPDATE conversations SET updated_at = now() - interval '1 day'")
        back = await chat.say("hola")
    link = await LocalBilling(pool).invoice_link("c1", invoice["id"])
    said = texts(back)
    assert link in said and "Hosting Pro" in said
    assert choice_ids(back[-1])[0] == "upgrade"  # and the menu, to go on
