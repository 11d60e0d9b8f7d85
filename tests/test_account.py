"""Mi cuenta (issue 10), over a running server on the local backend with
tests/billing_fixture.BILLING: Juan has an active hosting (due 2027-01-01), a radio
suspended with invoice i2 of 5.00 unpaid since 2026-06-01, and the domain
juanperez.com.ar renewing on 2027-01-01; María has one active hosting and a domain, and
owes nothing."""

from __future__ import annotations

import asyncpg

from store.billing_local import LocalBilling
from tests.billing_fixture import JUAN_WA, MARIA_WA, UNKNOWN_WA
from tests.harness import Stack, choice_ids, text_of


async def conversation(stack: Stack, wa_id: str, text: str) -> list[str]:
    before = len([m for m in stack.fake.sent if m.to == wa_id])
    await stack.say(wa_id, text)
    # The summary, any notices, and the closing prompt (always last, with buttons).
    while True:
        sent = await stack.replies(before + 1, to=wa_id)
        if sent[-1].type == "interactive":
            return [text_of(m) for m in sent[before:]]
        await stack.replies(len(sent) + 1, to=wa_id)


async def test_an_active_customer_sees_services_dues_and_domains(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        texts = await conversation(stack, MARIA_WA, "mis servicios")
    summary = texts[0]
    assert "mariagonzalez.mx" in summary and "Hosting Inicial" in summary
    assert "activo" in summary and "1/7/2026" in summary  # next due, as she writes dates
    assert "No tiene facturas pendientes" in summary
    assert "1/3/2027" in summary  # her domain's expiry
    # Nothing of anyone else's.
    assert "juanperez" not in " ".join(texts)


async def test_what_is_owed_comes_with_the_link_to_pay_it(
    pool: asyncpg.Pool, database_url: str
) -> None:
    link = await LocalBilling(pool).invoice_link("c1", "i2")
    async with Stack(database_url) as stack:
        texts = await conversation(stack, JUAN_WA, "cuanto debo?")
    summary = texts[0]
    assert "i2" in summary and "5,00" in summary and "1/6/2026" in summary
    assert link in summary and link.startswith("https://")


async def test_a_suspended_service_says_why_and_how_to_reactivate(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        texts = await conversation(stack, JUAN_WA, "por qué está suspendida mi radio?")
    # After the summary, a word on the suspended one.
    why = next(t for t in texts[1:] if "radio.juanperez.com.ar" in t)
    assert "suspendido" in why
    # The reason the billing data shows: invoice i2, 5.00, unpaid; paid, it comes back.
    assert "i2" in why and "5,00" in why and "reactiva" in why


async def test_a_domain_says_when_it_expires_and_whether_it_renews(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        texts = await conversation(stack, JUAN_WA, "cuando vence mi dominio?")
    line = next(line for line in texts[0].splitlines() if "juanperez.com.ar:" in line)
    assert "1/1/2027" in line and "se renueva" in line


async def test_an_unknown_number_is_told_how_to_be_recognised(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        await stack.say(UNKNOWN_WA, "mis facturas")
        [reply] = await stack.replies(1, to=UNKNOWN_WA)
    assert "https://" in text_of(reply)
    for anyones in ("juanperez", "mariagonzalez", "i2", "Hosting"):
        assert anyones not in text_of(reply)


async def test_a_long_account_is_paged(pool: asyncpg.Pool, database_url: str) -> None:
    many = [
        {
            "id": f"sx{n}",
            "client": "c2",
            "product": "p1",
            "label": f"sitio{n:02d}.mariagonzalez.mx",
            "status": "active",
            "billing_cycle": "monthly",
            "amount": "10.00",
            "period_start": "2026-06-01",
            "next_due": "2026-07-01",
        }
        for n in range(20)
    ]
    await LocalBilling(pool).load({"services": many})
    async with Stack(database_url) as stack:
        first = await conversation(stack, MARIA_WA, "mis servicios")
        prompt = [m for m in stack.fake.sent if m.to == MARIA_WA][-1]
        assert "account:more" in choice_ids(prompt)
        await stack.tap(MARIA_WA, "account:more", "Ver más")
        second_page = await stack.replies(len(stack.fake.sent) + 2, to=MARIA_WA)
    page_one, page_two = first[0], text_of(second_page[-2])
    labels = [f"sitio{n:02d}.mariagonzalez.mx" for n in range(20)]
    shown = [label for label in labels if label in page_one or label in page_two]
    assert sorted(shown) == labels  # all 20, over two pages
    assert not any(label in page_one and label in page_two for label in labels)
    assert "2 de 2" in page_two
    assert "account:more" not in choice_ids(second_page[-1])  # the last page
