"""The WHMCS backend against the fake WHMCS over real HTTP, with real PostgreSQL for the
phone index and the request log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.config import ConfigError, Settings
from bot.fakes.whmcs import FailureKind, FakeCancelRequest, FakeWhmcs, whmcs_backend
from bot.whmcs import ACTIONS, WHMCS_ERROR, UpgradePaths, WhmcsBilling
from bot.whmcs.values import formatted_money as _formatted_money
from flows.billing import (
    ALREADY_REQUESTED,
    CYCLE_FIXED,
    CYCLE_NOT_SOLD,
    NO_PAYMENT_METHOD,
    NOT_AN_UPGRADE,
    NOT_FOUND,
    NOT_OFFERED,
    NOT_VERIFIED,
    SAME_CLIENT,
    SERVICE_NOT_ACTIVE,
    UNPAID_INVOICES,
    UPGRADE_PENDING,
    BillingRefused,
    BillingUnavailable,
    CancellationKind,
    Found,
    OutcomeUnknown,
    TransferResult,
)
from flows.pricing import Policy
from store import whmcs_index
from tests.whmcs_backend import Make, billings

IDENTIFIER = "whmcs-identifier-7f3a"
SECRET = "whmcs-secret-9c1e"
ACCESS_KEY = "whmcs-access-key-b44d"
TODAY = date(2026, 7, 1)

JUAN_WA = "5491155551234"  # Argentina: WhatsApp's 9 that the account phone lacks
MARIA_WA = "5215512345678"  # Mexico: WhatsApp's old mobile 1, the account phone without it
ROSA_WA = "523312345678"  # Mexico the other way: the account phone has the 1
SHARED_WA = "5493515550000"  # +54 351 555-0000 and 0351 15 555-0000: two accounts

DATA: dict[str, Any] = {
    "clients": [
        {
            "id": "1",
            "name": "Juan Perez",
            "email": "juan@example.com",
            "phone": "+54 11 5555-1234",
            "verified": True,
        },
        {
            "id": "2",
            "name": "María González",
            "email": "maria@example.com",
            "phone": "+52 55 1234 5678",
            "verified": True,
        },
        {
            "id": "3",
            "name": "Pedro Uno",
            "email": "pedro1@example.com",
            "phone": "+54 351 555-0000",
            "verified": True,
        },
        {
            "id": "4",
            "name": "Pedro Dos",
            "email": "pedro2@example.com",
            "phone": "0351 15 555-0000",
            "verified": False,
        },
        {
            "id": "5",
            "name": "Rosa Díaz",
            "email": "rosa@example.com",
            "phone": "+52 1 33 1234 5678",
            "verified": True,
        },
        {"id": "6", "name": "Sin Teléfono", "email": "nadie@example.com", "phone": ""},
    ],
    "categories": [{"id": "1", "name": "Hosting"}, {"id": "2", "name": "Radios"}],
    "products": [
        {
            "id": "1",
            "category": "1",
            "name": "Hosting Inicial",
            "prices": {"monthly": "10.00", "annually": "100.00"},
            "upgrades_to": ["2", "3", "4"],
        },
        {
            "id": "2",
            "category": "1",
            "name": "Hosting Pro",
            "prices": {"monthly": "25.00", "annually": "150.00"},
        },
        {
            "id": "3",
            "category": "1",
            "name": "Hosting Mini",
            "prices": {"monthly": "8.00", "annually": "80.00"},
        },
        {"id": "4", "category": "2", "name": "Radio Pro", "prices": {"annually": "300.00"}},
        {"id": "5", "category": "1", "name": "Hosting Empresa", "prices": {"annually": "400.00"}},
    ],
    "services": [
        {
            "id": "10",
            "client": "1",
            "product": "1",
            "label": "juanperez.com.ar",
            "status": "active",
            "billing_cycle": "annually",
            "amount": "100.00",
            "period_start": "2026-01-01",
            "next_due": "2027-01-01",
        },
        {
            "id": "11",
            "client": "1",
            "product": "1",
            "label": "tienda.juanperez.com.ar",
            "status": "active",
            "billing_cycle": "monthly",
            "amount": "10.00",
            "period_start": "2026-06-16",
            "next_due": "2026-07-16",
        },
        {
            "id": "12",
            "client": "2",
            "product": "2",
            "label": "maria.mx",
            "status": "suspended",
            "billing_cycle": "monthly",
            "amount": "25.00",
            "next_due": "2026-07-10",
        },
        {
            "id": "13",
            "client": "1",
            "product": "1",
            "label": "viejo.juanperez.com.ar",
            "status": "terminated",
            "billing_cycle": "monthly",
            "amount": "10.00",
            "next_due": "2025-01-01",
        },
    ],
    "invoices": [
        {
            "id": "100",
            "client": "1",
            "service": "10",
            "total": "100.00",
            "status": "paid",
            "due": "2026-01-01",
        },
        {
            "id": "101",
            "client": "1",
            "service": "11",
            "total": "10.00",
            "status": "unpaid",
            "due": "2026-06-16",
        },
        {
            "id": "102",
            "client": "2",
            "service": "12",
            "total": "25.00",
            "status": "unpaid",
            "due": "2026-06-10",
        },
    ],
    "domains": [
        {
            "id": "200",
            "client": "1",
            "name": "juanperez.com.ar",
            "status": "active",
            "auto_renew": True,
            "next_due": "2027-01-01",
        },
        {
            "id": "201",
            "client": "2",
            "name": "maria.mx",
            "status": "active",
            "auto_renew": False,
            "next_due": "2026-09-01",
        },
    ],
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeWhmcs]:
    async with FakeWhmcs(DATA, identifier=IDENTIFIER, secret=SECRET, today=TODAY) as f:
        yield f


@pytest.fixture
async def make(db: asyncpg.Pool, fake: FakeWhmcs, tmp_path: Path) -> AsyncIterator[Make]:
    """WhmcsBilling(settings, pool) pointed at the fake; `**changes` alter the settings."""
    async with billings(db, fake, tmp_path) as build:
        yield build


@pytest.fixture
async def billing(make: Make) -> WhmcsBilling:
    return await make()


def real_upgrades(fake: FakeWhmcs) -> list[dict[str, str]]:
    return [c.params for c in fake.calls_of("UpgradeProduct") if "calconly" not in c.params]


# -- construction and the upgrade-paths file -------------------------------------------------


async def test_needs_credentials_and_upgrade_paths(db: asyncpg.Pool, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WHMCS_URL"):
        WhmcsBilling(Settings(), db)
    settings = Settings(
        whmcs_url="https://billing.example.com",
        whmcs_identifier=IDENTIFIER,
        whmcs_secret=SECRET,
        whmcs_upgrades_file=tmp_path / "missing.toml",
    )
    with pytest.raises(ConfigError, match="does not exist"):
        WhmcsBilling(settings, db)


@pytest.mark.parametrize(
    "text",
    [
        "[upgrades\n",
        '[upgrades]\n"1" = "2"\n',
        '[upgrades]\n"x" = ["2"]\n',
        '[upgrades]\n"1" = ["two"]\n',
        '[categories]\n"1" = ""\n',
    ],
)
def test_bad_upgrade_paths_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "u.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=str(path)):
        UpgradePaths.load(path)


def test_example_upgrade_paths_file_loads() -> None:
    paths = UpgradePaths.load(Path(__file__).resolve().parents[1] / "config/whmcs_upgrades.toml")
    assert paths.targets["1"] == ("2", "3")
    assert paths.category("2").name == "Radios"
    assert paths.category("9").name == "Grupo 9"


# -- identification: the phone index ----------------------------------------------------------


async def test_sync_builds_the_phone_index(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    fake.clients[6].status = "Closed"
    fake.clients[6].phonenumber = "+54.1155551234"  # Juan's phone on a closed account
    report = await billing.sync_clients()
    assert (report.clients, report.with_phone, report.removed) == (6, 6, 0)

    juan = await billing.find_client_by_phone(JUAN_WA)
    assert juan.found is Found.ONE and juan.client is not None
    assert (juan.client.id, juan.client.name, juan.client.verified) == ("1", "Juan Perez", True)
    for wa_id, client_id in ((MARIA_WA, "2"), (ROSA_WA, "5")):
        found = await billing.find_client_by_phone(wa_id)
        assert found.found is Found.ONE and found.client is not None
        assert found.client.id == client_id
    assert (await billing.find_client_by_phone(SHARED_WA)).found is Found.SEVERAL
    assert (await billing.find_client_by_phone("34600000000")).found is Found.NONE
    assert (await billing.find_client_by_phone("not-a-number")).found is Found.NONE


async def test_sync_pages_and_forgets_deleted_clients(
    billing: WhmcsBilling, fake: FakeWhmcs, db: asyncpg.Pool
) -> None:
    for n in range(7, 260):
        fake.load(
            {"clients": [{"id": str(n), "name": f"C {n}", "email": f"c{n}@x.com", "phone": ""}]}
        )
    report = await billing.sync_clients()
    assert report.clients == 259
    assert len(fake.calls_of("GetClients")) == 3  # pages of 100
    del fake.clients[2]
    report = await billing.sync_clients()
    assert (report.clients, report.removed) == (258, 1)
    assert await whmcs_index.indexed_client(db, "2") is None
    assert (await billing.find_client_by_phone(MARIA_WA)).found is Found.NONE


async def test_refresh_client_follows_changes(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    assert (await billing.find_client_by_phone("5491144440000")).found is Found.NONE
    fake.clients[6].phonenumber = "+54.1144440000"
    client = await billing.refresh_client("6")
    assert client is not None and client.email == "nadie@example.com"
    found = await billing.find_client_by_phone("5491144440000")
    assert found.client is not None and found.client.id == "6"
    # Typed without WHMCS's phone dropdown: "+54 11 …" comes back as "+54.5411…".
    fake.clients[6].phonenumber = "+54 11 4444-0001"
    await billing.refresh_client("6")
    assert (await billing.find_client_by_phone("5491144440000")).found is Found.NONE
    found = await billing.find_client_by_phone("5491144440001")
    assert found.client is not None and found.client.id == "6"
    del fake.clients[6]
    assert await billing.refresh_client("6") is None
    assert (await billing.find_client_by_phone("5491144440001")).found is Found.NONE
    assert await billing.refresh_client("") is None


async def test_clients_by_id_and_email(billing: WhmcsBilling) -> None:
    maria = await billing.get_client("2")
    assert maria is not None and (maria.name, maria.email) == (
        "María González",
        "maria@example.com",
    )
    pedro = await billing.find_client_by_email("PEDRO2@example.com")
    assert pedro is not None and (pedro.id, pedro.verified) == ("4", False)
    assert await billing.get_client("99") is None
    assert await billing.get_client("c1") is None
    assert await billing.find_client_by_email("nobody@example.com") is None


# -- what they have -------------------------------------------------------------------------


async def test_services_mapped(billing: WhmcsBilling) -> None:
    services = await billing.list_services("1")
    assert [s.id for s in services] == ["10", "11", "13"]
    yearly, monthly, terminated = services
    assert yearly.client_id == "1" and yearly.product_id == "1"
    assert yearly.product_name == "Hosting Inicial" and yearly.label == "juanperez.com.ar"
    assert (yearly.status, yearly.billing_cycle) == ("active", "annually")
    assert yearly.amount == Decimal("100.00") and isinstance(yearly.amount, Decimal)
    assert (yearly.next_due, yearly.period_start) == (date(2027, 1, 1), date(2026, 1, 1))
    assert yearly.category_id == "1"
    assert (monthly.billing_cycle, monthly.period_start) == ("monthly", date(2026, 6, 16))
    assert terminated.status == "terminated"
    suspended = await billing.get_service("2", "12")
    assert suspended is not None and suspended.status == "suspended"


async def test_whmcs_only_cycles_and_statuses(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    fake.services[13].billingcycle = "Free Account"
    fake.services[13].status = "Fraud"
    fake.services[13].nextduedate = None
    service = await billing.get_service("1", "13")
    assert service is not None
    assert (service.billing_cycle, service.status, service.next_due) == ("free", "cancelled", None)
    fake.services[13].status = "Active"
    # Not billed in cycles: nothing to pro-rate or subtract, staff handle it.
    assert await billing.upgrade_options("1", "13") == []
    with pytest.raises(BillingRefused) as refused:
        await billing.quote_upgrade("1", "13", "2", "monthly", today=TODAY)
    assert refused.value.reason == NOT_OFFERED


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("$7.50 USD", "7.50"),
        ("$1,234.56 USD", "1234.56"),
        ("1.234,56 €", "1234.56"),
        ("$1,234 USD", "1234"),
        ("ARS 0,50", "0.50"),
        ("-$25.00 USD", "-25.00"),
        ("-1.234,56 €", "-1234.56"),
        ("", None),
    ],
)
def test_amounts_formatted_by_whmcs(text: str, amount: str | None) -> None:
    expected = None if amount is None else Decimal(amount)
    assert _formatted_money(text) == expected


async def test_invoices_mapped(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    fake.load(
        {
            "invoices": [
                {"id": "103", "client": "1", "total": "5.50", "status": "cancelled", "due": ""}
            ]
        }
    )
    fake.invoices[104] = fake.invoices[103].__class__(
        id=104, userid=1, status="Draft", total=Decimal("1"), issued=TODAY, duedate=TODAY
    )
    invoices = await billing.list_invoices("1")
    # 103 has no lines: WHMCS's GetInvoice sends `"items": ""` for it.
    assert [(i.id, i.status, i.total, i.service_id) for i in invoices] == [
        ("100", "paid", Decimal("100.00"), "10"),
        ("101", "unpaid", Decimal("10.00"), "11"),
        ("103", "cancelled", Decimal("5.50"), None),
    ]
    # An invoice's lines come from GetInvoice, once.
    assert len(fake.calls_of("GetInvoice")) == 3
    await billing.list_invoices("1")
    assert len(fake.calls_of("GetInvoice")) == 3
    assert invoices[0].due == date(2026, 1, 1) and invoices[0].client_id == "1"
    unpaid = await billing.list_invoices("1", status="unpaid")
    assert [i.id for i in unpaid] == ["101"]
    for_service = await billing.list_invoices("1", service_id="10")
    assert [(i.id, i.service_id) for i in for_service] == [("100", "10")]
    assert await billing.list_invoices("1", service_id="12") == []  # María's service
    assert await billing.list_invoices("") == []


async def test_invoices_that_tie_in_whmcs_order_are_all_read_once(
    billing: WhmcsBilling, fake: FakeWhmcs
) -> None:
    """250 unpaid invoices due the same day tie in GetInvoices' default order, which the
    database returns in a different order on each page: paged by offset in that order,
    some are read twice and others never (an unpaid one hidden from the transfer check)."""
    fake.load(
        {
            "invoices": [
                {
                    "id": str(1000 + n),
                    "client": "1",
                    "service": "11",
                    "total": "10.00",
                    "status": "unpaid",
                    "due": "2026-08-01",
                }
                for n in range(250)
            ]
        }
    )
    invoices = await billing.list_invoices("1", status="unpaid")
    ids = [i.id for i in invoices]
    assert len(ids) == len(set(ids)) == 251  # the 250 and invoice 101
    assert {str(1000 + n) for n in range(250)} <= set(ids)
    pages = fake.calls_of("GetInvoices")
    assert len(pages) == 3 and all(c.params.get("orderby") == "id" for c in pages)


async def test_domains_and_stopping_renewal(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    (domain,) = await billing.list_domains("1")
    assert (domain.id, domain.name, domain.status) == ("200", "juanperez.com.ar", "active")
    assert domain.auto_renew is True and domain.next_due == date(2027, 1, 1)
    stopped = await billing.stop_domain_renewal("1", "200")
    assert stopped.auto_renew is False and fake.domains[200].donotrenew is True
    (again,) = await billing.list_domains("1")
    assert again.auto_renew is False
    with pytest.raises(BillingRefused) as refused:
        await billing.stop_domain_renewal("1", "201")  # María's
    assert refused.value.reason == NOT_FOUND
    assert fake.domains[201].donotrenew is True and len(fake.calls_of("UpdateClientDomain")) == 1


async def test_invoice_link(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    link = await billing.invoice_link("1", "101")
    assert link == f"{fake.base_url}/viewinvoice.php?id=101"
    for client_id, invoice_id in (("1", "102"), ("1", "999"), ("1", "x")):
        with pytest.raises(BillingRefused) as refused:
            await billing.invoice_link(client_id, invoice_id)
        assert refused.value.reason == NOT_FOUND


# -- ownership -------------------------------------------------------------------------------


async def test_another_clients_service_is_not_found(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    assert await billing.get_service("1", "12") is None
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: billing.upgrade_options("1", "12"),
        lambda: billing.quote_upgrade("1", "12", "2", "monthly", today=TODAY),
        lambda: billing.place_upgrade("1", "12", "2", "monthly", today=TODAY, request_id="r-own-1"),
        lambda: billing.request_cancellation(
            "1", "12", CancellationKind.IMMEDIATE, "x", request_id="r-own-2"
        ),
        lambda: billing.transfer_service("1", "12", "3", request_id="r-own-3"),
    ]
    for attempt in attempts:
        with pytest.raises(BillingRefused) as refused:
            await attempt()
        assert refused.value.reason == NOT_FOUND
        # Nothing says whose it is.
        assert refused.value.detail == "service 12"
    assert real_upgrades(fake) == [] and fake.cancel_requests == []


async def test_ids_that_are_not_whmcs_ids_never_reach_it(
    billing: WhmcsBilling, fake: FakeWhmcs
) -> None:
    assert await billing.get_service("", "10") is None
    assert await billing.get_service("0", "10") is None
    assert await billing.list_services(" ") == []
    assert await billing.list_domains("1; DROP") == []
    # WHMCS would drop an empty filter and list everybody's services.
    assert all(c.params.get("clientid", "x") not in ("", "0") for c in fake.calls)


# -- upgrades --------------------------------------------------------------------------------


async def test_upgrade_options_from_the_paths_file(billing: WhmcsBilling) -> None:
    options = await billing.upgrade_options("1", "10")
    assert [(o.category.id, o.category.name) for o in options] == [
        ("1", "Hosting"),
        ("2", "Radios"),
    ]
    hosting, radios = options
    # Hosting Mini (3) is listed in the file but cheaper: a downgrade, left out. Hosting
    # Empresa (5) is not in the file.
    assert [p.id for p in hosting.products] == ["2"]
    assert hosting.products[0].prices == {
        "monthly": Decimal("25.00"),
        "annually": Decimal("150.00"),
    }
    assert [p.name for p in radios.products] == ["Radio Pro"]


async def test_upgrade_options_prorata_keeps_the_cycle(make: Make) -> None:
    billing = await make(upgrade_pricing="prorata")
    (hosting,) = await billing.upgrade_options("1", "11")  # monthly: Radio Pro is yearly only
    assert [p.id for p in hosting.products] == ["2"]


async def test_quote_difference_policy(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    # The help page: paid 100 $ a year, mid-year to a 150 $ plan → 50 $.
    quote = await billing.quote_upgrade("1", "10", "2", "annually", today=date(2026, 7, 1))
    assert quote.amount == Decimal("50.00") and quote.policy is Policy.DIFFERENCE
    assert quote.new_recurring == Decimal("150.00") and quote.next_due == date(2027, 7, 1)
    (calc,) = fake.calls_of("UpgradeProduct")
    assert calc.params["calconly"] == "true" and calc.params["newproductbillingcycle"] == "annually"
    assert real_upgrades(fake) == []


async def test_quote_prorata_policy(make: Make, fake: FakeWhmcs) -> None:
    billing = await make(upgrade_pricing="prorata")
    # 10 → 25 monthly with 15 of 30 days left: 15 × 15/30 = 7.50, as WHMCS computes it.
    quote = await billing.quote_upgrade("1", "11", "2", "monthly", today=TODAY)
    assert quote.amount == Decimal("7.50") and quote.policy is Policy.PRORATA
    assert (quote.days_left, quote.days_in_cycle, quote.next_due) == (15, 30, date(2026, 7, 16))


# (Format 4 shows no cents at all: 7.50 reads as 8, and the warning is then right to
# ask a person to look.)
@pytest.mark.parametrize("currency_format", [1, 2, 3])
async def test_whmcs_formatted_prices_in_every_currency_format_are_read(
    make: Make, fake: FakeWhmcs, caplog: pytest.LogCaptureFixture, currency_format: int
) -> None:
    # A currency shown as 1.234,56 € (format 3): WHMCS's calculation (a formatted string)
    # must read as the same 7.50 — no warning that WHMCS would bill another amount.
    fake.currency_format, fake.currency_prefix, fake.currency_suffix = currency_format, "", " €"
    fake.upgrade_pricing = "prorata"
    billing = await make(upgrade_pricing="prorata")
    with caplog.at_level(logging.WARNING, logger="bot.whmcs"):
        quote = await billing.quote_upgrade("1", "11", "2", "monthly", today=TODAY)
    assert quote.amount == Decimal("7.50")
    assert "WHMCS calculates" not in caplog.text


async def test_calconly_false_is_still_a_calculation_in_whmcs(fake: FakeWhmcs) -> None:
    """WHMCS reads calconly with PHP's truthiness: "false" is true. We send calconly only
    for a calculation, never `calconly=false` for the real order."""
    async with aiohttp.ClientSession() as http:
        form = {"action": "UpgradeProduct", "identifier": IDENTIFIER, "secret": SECRET}
        form |= {"serviceid": "10", "type": "product", "newproductid": "2"}
        form |= {"newproductbillingcycle": "annually", "paymentmethod": "banktransfer"}
        form |= {"calconly": "false", "responsetype": "json"}
        async with http.post(f"{fake.base_url}/includes/api.php", data=form) as r:
            body = await r.json()
    assert body["result"] == "success" and "upgradeinprogress" in body
    assert fake.upgrades == {}


@pytest.mark.parametrize(
    "case",
    [
        ("10", "3", "annually", "difference", NOT_AN_UPGRADE),  # Hosting Mini: cheaper
        ("10", "5", "annually", "difference", NOT_OFFERED),  # not in the paths file
        ("10", "4", "monthly", "difference", CYCLE_NOT_SOLD),  # Radio Pro: yearly only
        ("11", "2", "annually", "prorata", CYCLE_FIXED),
        ("13", "2", "monthly", "difference", SERVICE_NOT_ACTIVE),  # terminated
    ],
)
async def test_quote_refusals(make: Make, case: tuple[str, str, str, str, str]) -> None:
    service, product, cycle, pricing, reason = case
    billing = await make(upgrade_pricing=pricing)
    with pytest.raises(BillingRefused) as refused:
        await billing.quote_upgrade("1", service, product, cycle, today=TODAY)
    assert refused.value.reason == reason


async def test_place_upgrade_creates_the_invoice(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    placed = await billing.place_upgrade(
        "1", "10", "2", "annually", today=TODAY, request_id="wamid.UP1"
    )
    assert placed.quote.amount == Decimal("50.00") and placed.product.name == "Hosting Pro"
    invoice = fake.invoices[int(placed.invoice.id)]
    assert (invoice.status, invoice.total, invoice.userid) == ("Unpaid", Decimal("50.00"), 1)
    assert (placed.invoice.total, placed.invoice.status) == (Decimal("50.00"), "unpaid")
    assert (placed.invoice.client_id, placed.invoice.service_id) == ("1", "10")
    assert placed.invoice.due == TODAY
    assert placed.invoice_url == f"{fake.base_url}/viewinvoice.php?id={placed.invoice.id}"
    (sent,) = real_upgrades(fake)
    assert sent == {
        "serviceid": "10",
        "type": "product",
        "newproductid": "2",
        "newproductbillingcycle": "annually",
        "paymentmethod": "banktransfer",
        "action": "UpgradeProduct",
        "responsetype": "json",
    }
    # The upgrade invoice names the upgrade, not the service: found back by our log.
    assert [i.id for i in await billing.list_invoices("1", service_id="10")] == [
        "100",
        placed.invoice.id,
    ]
    # Paid, WHMCS applies it.
    fake.pay_invoice(placed.invoice.id)
    service = await billing.get_service("1", "10")
    assert service is not None and service.product_id == "2"


async def test_same_request_id_places_once(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    first = await billing.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="r1")
    calls = len(fake.calls)
    again = await billing.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="r1")
    assert again == first
    assert len(real_upgrades(fake)) == 1 and len(fake.calls) == calls  # not even a read


def real_call(params: Any) -> bool:
    """The UpgradeProduct that places the order, not its calconly check."""
    return "calconly" not in params


async def test_lost_answer_is_outcome_unknown_and_never_resent(
    billing: WhmcsBilling, fake: FakeWhmcs, db: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_next("UpgradeProduct", FailureKind.LOST, where=real_call)
    with caplog.at_level(logging.ERROR, logger="bot.whmcs"), pytest.raises(OutcomeUnknown):
        await billing.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="lost")
    assert "a person must check" in caplog.text
    assert len(fake.upgrades) == 1  # WHMCS did create the order; we cannot know it
    calls = len(fake.calls)
    with pytest.raises(OutcomeUnknown):
        await billing.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="lost")
    assert len(fake.calls) == calls and len(real_upgrades(fake)) == 1
    (record,) = await whmcs_index.unresolved_requests(db)
    assert (record.request_id, record.action, record.status) == (
        "lost",
        "UpgradeProduct",
        "unknown",
    )
    assert record.params["serviceid"] == "10" and record.client_id == "1"


@pytest.mark.parametrize(
    "kind", [FailureKind.SLOW, FailureKind.DROP, FailureKind.HTML, FailureKind.BAD_JSON]
)
async def test_no_usable_answer_to_a_write_is_outcome_unknown(
    make: Make, fake: FakeWhmcs, db: asyncpg.Pool, kind: FailureKind
) -> None:
    billing = await make(whmcs_timeout_seconds=0.5)
    fake.fail_next("UpgradeProduct", kind, where=real_call, delay=3.0)
    with pytest.raises(OutcomeUnknown):
        await billing.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="r")
    assert len(real_upgrades(fake)) == 1  # never retried
    with pytest.raises(OutcomeUnknown):
        await billing.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="r")
    assert len(real_upgrades(fake)) == 1
    (record,) = await whmcs_index.unresolved_requests(db)
    assert record.status == "unknown"


async def test_a_process_dying_mid_call_leaves_it_unknown(
    billing: WhmcsBilling, fake: FakeWhmcs, db: asyncpg.Pool
) -> None:
    params = {"serviceid": "10"}
    assert await whmcs_index.claim_request(db, "crashed", "UpgradeProduct", "1", params) is None
    with pytest.raises(OutcomeUnknown, match="pending"):
        await billing.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="crashed")
    assert fake.calls == []


async def test_refused_upgrade_can_be_asked_again(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    fake.fail_next("UpgradeProduct", FailureKind.ERROR, where=real_call, message="Database busy")
    with pytest.raises(BillingRefused) as refused:
        await billing.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="again")
    assert (refused.value.reason, refused.value.detail) == (WHMCS_ERROR, "Database busy")
    placed = await billing.place_upgrade(
        "1", "10", "2", "annually", today=TODAY, request_id="again"
    )
    assert placed.invoice.total == Decimal("50.00") and len(fake.upgrades) == 1


# WHMCS writes first and can then answer `result: error` (a hook or module call failing
# after the row is in): an error from a write is looked into before anything else.


async def test_an_upgrade_that_errs_after_applying_at_once_is_done(
    billing: WhmcsBilling, fake: FakeWhmcs
) -> None:
    # Monthly Hosting Pro (15 $) after 100 $ paid for the year: nothing to pay, so WHMCS
    # applies it at once — then answers an error.
    fake.fail_next("UpgradeProduct", FailureKind.ERROR_AFTER_WRITE, where=real_call)
    placed = await billing.place_upgrade("1", "10", "2", "monthly", today=TODAY, request_id="z")
    assert placed.applied and placed.invoice is None
    assert fake.services[10].pid == 2
    again = await billing.place_upgrade("1", "10", "2", "monthly", today=TODAY, request_id="z")
    assert again == placed and len(real_upgrades(fake)) == 1


async def test_an_upgrade_order_written_before_an_error_is_unknown_and_never_resent(
    billing: WhmcsBilling, fake: FakeWhmcs, db: asyncpg.Pool
) -> None:
    fake.fail_next("UpgradeProduct", FailureKind.ERROR_AFTER_WRITE, where=real_call)
    with pytest.raises(OutcomeUnknown):
        await billing.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="w")
    assert len(fake.upgrades) == 1  # the order (and its invoice) is in WHMCS
    with pytest.raises(OutcomeUnknown):
        await billing.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="w")
    assert len(real_upgrades(fake)) == 1
    (record,) = await whmcs_index.unresolved_requests(db)
    assert (record.request_id, record.status) == ("w", "unknown")


async def test_a_cancellation_written_before_an_error_is_done_once(
    billing: WhmcsBilling, fake: FakeWhmcs
) -> None:
    # Many requests made before, for other services: the look reads the newest page.
    fake.cancel_requests.extend(
        FakeCancelRequest(9000 + n, "Immediate", "old", datetime.now(UTC)) for n in range(150)
    )
    fake.fail_next("AddCancelRequest", FailureKind.ERROR_AFTER_WRITE, message="Module failed")
    request = await billing.request_cancellation(
        "1", "10", CancellationKind.IMMEDIATE, "Me mudo", request_id="c-w"
    )
    assert (request.service_id, request.kind) == ("10", CancellationKind.IMMEDIATE)
    again = await billing.request_cancellation(
        "1", "10", CancellationKind.IMMEDIATE, "Me mudo", request_id="c-w"
    )
    assert again == request
    assert len(fake.calls_of("AddCancelRequest")) == 1
    assert [r.serviceid for r in fake.cancel_requests if r.serviceid < 9000] == [10]


async def test_a_cancellation_error_that_wrote_nothing_stands_and_can_be_asked_again(
    billing: WhmcsBilling, fake: FakeWhmcs
) -> None:
    fake.fail_next("AddCancelRequest", FailureKind.ERROR, message="Database busy")
    with pytest.raises(BillingRefused) as refused:
        await billing.request_cancellation(
            "1", "10", CancellationKind.IMMEDIATE, "x", request_id="c-e"
        )
    assert refused.value.reason == WHMCS_ERROR and fake.cancel_requests == []
    request = await billing.request_cancellation(
        "1", "10", CancellationKind.IMMEDIATE, "x", request_id="c-e"
    )
    assert request.service_id == "10" and len(fake.cancel_requests) == 1


async def test_a_look_that_fails_leaves_the_write_unknown(
    billing: WhmcsBilling, fake: FakeWhmcs, db: asyncpg.Pool
) -> None:
    fake.fail_next("AddCancelRequest", FailureKind.ERROR_AFTER_WRITE)
    fake.fail_next("GetCancelledPackages", FailureKind.HTML, count=4)
    with pytest.raises(OutcomeUnknown):
        await billing.request_cancellation(
            "1", "10", CancellationKind.IMMEDIATE, "x", request_id="c-u"
        )
    (record,) = await whmcs_index.unresolved_requests(db)
    assert (record.request_id, record.status) == ("c-u", "unknown")


async def test_unreachable_whmcs_changes_nothing(
    make: Make, fake: FakeWhmcs, db: asyncpg.Pool
) -> None:
    billing = await make()
    closed = await make(whmcs_url="http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(BillingUnavailable):
        await closed.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="r9")
    assert await whmcs_index.unresolved_requests(db) == []
    placed = await billing.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="r9")
    assert placed.invoice.total == Decimal("50.00")


async def test_a_disabled_gateway_uses_the_client_s_active_default(
    billing: WhmcsBilling, fake: FakeWhmcs
) -> None:
    """WHMCS checks the payment method only when the upgrade is placed: a service billed
    through a gateway since disabled passes the calculation and fails at confirmation.
    The client's default gateway, when active, is used from the quote on."""
    fake.services[10].paymentmethod = "paypal"  # not among the active gateways
    quote = await billing.quote_upgrade("1", "10", "2", "annually", today=TODAY)
    placed = await billing.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="gw-1")
    assert placed.quote == quote
    assert [c["paymentmethod"] for c in real_upgrades(fake)] == ["banktransfer"]


async def test_no_active_gateway_is_refused_when_quoting(
    billing: WhmcsBilling, fake: FakeWhmcs
) -> None:
    fake.services[10].paymentmethod = "paypal"
    fake.clients[1].defaultgateway = "paypal"
    with pytest.raises(BillingRefused) as refused:
        await billing.quote_upgrade("1", "10", "2", "annually", today=TODAY)
    assert refused.value.reason == NO_PAYMENT_METHOD
    assert real_upgrades(fake) == []


async def test_pending_upgrade_invoice_refuses_another(
    billing: WhmcsBilling, fake: FakeWhmcs
) -> None:
    await billing.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="one")
    with pytest.raises(BillingRefused) as refused:
        await billing.quote_upgrade("1", "10", "4", "annually", today=TODAY)
    assert refused.value.reason == UPGRADE_PENDING
    with pytest.raises(BillingRefused) as refused:
        await billing.place_upgrade("1", "10", "4", "annually", today=TODAY, request_id="two")
    assert refused.value.reason == UPGRADE_PENDING
    assert len(real_upgrades(fake)) == 1


async def test_whmcs_billing_another_amount_is_reported(
    make: Make, fake: FakeWhmcs, caplog: pytest.LogCaptureFixture
) -> None:
    # A WHMCS without the README's hook bills its own pro-rata for the difference policy.
    fake.upgrade_pricing = "prorata"
    billing = await make()
    with caplog.at_level(logging.WARNING, logger="bot.whmcs"):
        placed = await billing.place_upgrade(
            "1", "11", "2", "monthly", today=TODAY, request_id="r-mismatch"
        )
    assert placed.quote.amount == Decimal("15.00")  # difference: 25 − 10
    assert placed.invoice.total == Decimal("7.50")  # what WHMCS really bills
    assert "the customer was quoted 15.00" in caplog.text


# -- cancellations and transfers ---------------------------------------------------------------


async def test_cancellation(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    request = await billing.request_cancellation(
        "1", "10", CancellationKind.END_OF_PERIOD, "Me mudo", request_id="c-1"
    )
    assert (request.service_id, request.kind, request.reason) == (
        "10",
        CancellationKind.END_OF_PERIOD,
        "Me mudo",
    )
    assert request.requested_at.tzinfo is not None
    (sent,) = fake.cancel_requests
    assert (sent.serviceid, sent.type, sent.reason) == (10, "End of Billing Period", "Me mudo")
    again = await billing.request_cancellation(
        "1", "10", CancellationKind.END_OF_PERIOD, "Me mudo", request_id="c-1"
    )
    assert again == request and len(fake.calls_of("AddCancelRequest")) == 1
    with pytest.raises(BillingRefused) as refused:
        await billing.request_cancellation(
            "1", "10", CancellationKind.IMMEDIATE, "Ya", request_id="c-2"
        )
    assert refused.value.reason == ALREADY_REQUESTED
    immediate = await billing.request_cancellation(
        "1", "11", CancellationKind.IMMEDIATE, "Ya", request_id="c-3"
    )
    assert immediate.kind is CancellationKind.IMMEDIATE
    assert fake.cancel_requests[-1].type == "Immediate"


async def test_cancellation_answer_lost(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    fake.fail_next("AddCancelRequest", FailureKind.LOST)
    for _ in range(2):
        with pytest.raises(OutcomeUnknown):
            await billing.request_cancellation(
                "1", "10", CancellationKind.IMMEDIATE, "x", request_id="c-lost"
            )
    assert len(fake.calls_of("AddCancelRequest")) == 1 and len(fake.cancel_requests) == 1


async def test_transfer_needs_staff(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    result = await billing.transfer_service("1", "10", "3", request_id="t-1")
    assert result is TransferResult.NEEDS_STAFF
    assert fake.services[10].userid == 1  # WHMCS cannot move it by API


@pytest.mark.parametrize(
    ("service", "to_client", "reason"),
    [
        ("10", "1", SAME_CLIENT),
        ("10", "4", NOT_VERIFIED),  # Pedro Dos is not verified
        ("10", "99", NOT_FOUND),
        ("13", "3", SERVICE_NOT_ACTIVE),
        ("11", "3", UNPAID_INVOICES),  # invoice 101 is unpaid
    ],
)
async def test_transfer_checks(
    billing: WhmcsBilling, service: str, to_client: str, reason: str
) -> None:
    with pytest.raises(BillingRefused) as refused:
        await billing.transfer_service("1", service, to_client, request_id="t")
    assert refused.value.reason == reason


async def test_verified_can_be_a_custom_field_when_email_verification_is_off(
    make: Make, fake: FakeWhmcs
) -> None:
    """With email verification off, WHMCS's email_verified is false for everyone: the
    transfer's "verified" comes from a custom field staff tick instead."""
    for client in fake.clients.values():
        client.email_verified = False
    fake.clients[1].customfields[7] = "on"
    fake.clients[3].customfields[7] = "on"
    fake.clients[4].customfields[7] = ""  # Pedro Dos: not ticked
    by_email = await make()
    assert (await by_email.get_client("1")).verified is False  # type: ignore[union-attr]
    by_field = await make(whmcs_verified="customfield:7")
    assert (await by_field.get_client("1")).verified is True  # type: ignore[union-attr]
    assert (await by_field.get_client("4")).verified is False  # type: ignore[union-attr]
    await by_field.sync_clients()
    juan = await by_field.find_client_by_phone(JUAN_WA)
    assert juan.client is not None and juan.client.verified is True
    assert await by_field.transfer_service("1", "10", "3", request_id="v") is (
        TransferResult.NEEDS_STAFF
    )
    with pytest.raises(BillingRefused) as refused:
        await by_field.transfer_service("1", "10", "4", request_id="v2")
    assert refused.value.reason == NOT_VERIFIED


@pytest.mark.parametrize("setting", ["customfield:", "customfield:x", "verified", "email"])
async def test_a_verified_rule_that_means_nothing_is_a_configuration_error(
    make: Make, setting: str
) -> None:
    with pytest.raises(ConfigError, match="WHMCS_VERIFIED"):
        await make(whmcs_verified=setting)


async def test_transfer_already_done_by_staff(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    fake.services[10].userid = 3
    assert await billing.transfer_service("1", "10", "3", request_id="t") is TransferResult.DONE


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (FailureKind.ERROR, BillingRefused),
        (FailureKind.HTML, BillingUnavailable),
        (FailureKind.SLOW, BillingUnavailable),
        (FailureKind.BAD_JSON, BillingUnavailable),
    ],
)
async def test_read_errors_are_typed(
    make: Make, fake: FakeWhmcs, kind: FailureKind, expected: type[Exception]
) -> None:
    billing = await make(whmcs_timeout_seconds=0.5)
    fake.fail_next("GetClientsProducts", kind, delay=3.0, message="Something broke")
    with pytest.raises(expected):
        await billing.list_services("1")
    assert len(fake.calls_of("GetClientsProducts")) == 1  # not retried


async def test_read_retried_once_on_a_dropped_connection(
    billing: WhmcsBilling, fake: FakeWhmcs
) -> None:
    fake.fail_next("GetClientsDetails", FailureKind.DROP)
    assert await billing.get_client("1") is not None
    assert len(fake.calls_of("GetClientsDetails")) == 2
    fake.fail_next("GetClientsDetails", FailureKind.DROP, count=2)
    with pytest.raises(BillingUnavailable):
        await billing.get_client("1")
    assert len(fake.calls_of("GetClientsDetails")) == 4


@pytest.mark.parametrize(
    "changes",
    [
        {"whmcs_secret": "wrong"},
        {"whmcs_identifier": "wrong"},
    ],
)
async def test_credential_errors_are_unavailable_and_logged(
    make: Make, changes: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    billing = await make(**changes)
    with caplog.at_level(logging.ERROR, logger="bot.whmcs"), pytest.raises(BillingUnavailable):
        await billing.get_client("1")
    assert "Check WHMCS_URL, WHMCS_IDENTIFIER" in caplog.text


@pytest.mark.parametrize("message", ["License Checking Error", "Your licence has expired"])
async def test_a_licence_error_is_a_configuration_error(
    billing: WhmcsBilling, fake: FakeWhmcs, caplog: pytest.LogCaptureFixture, message: str
) -> None:
    fake.fail_next("GetClientsProducts", FailureKind.ERROR, message=message)
    with caplog.at_level(logging.ERROR, logger="bot.whmcs"), pytest.raises(BillingUnavailable):
        await billing.list_services("1")
    assert "Check WHMCS_URL" in caplog.text


async def test_an_ip_banned_after_failed_logins_is_a_configuration_error(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """Three wrong secrets and WHMCS bans the address: the right credentials are refused
    too, with a 403 whatever its words. Billing is unavailable — never a refusal told to a
    customer — and the operator is alerted (log and metric)."""
    from bot.metrics import BILLING_CONFIGURATION_ERRORS

    def alerts() -> float:
        return BILLING_CONFIGURATION_ERRORS.labels(action="GetClientsDetails")._value.get()

    before = alerts()
    wrong = await make(whmcs_secret="wrong")
    for _ in range(3):
        with pytest.raises(BillingUnavailable):
            await wrong.get_client("1")
    right = await make()
    with caplog.at_level(logging.ERROR, logger="bot.whmcs"), pytest.raises(BillingUnavailable):
        await right.get_client("1")
    assert "banned" in caplog.text and "Check WHMCS_URL" in caplog.text
    assert alerts() == before + 4


async def test_an_action_the_api_role_lacks_is_a_configuration_error(
    db: asyncpg.Pool, tmp_path: Path
) -> None:
    async with FakeWhmcs(
        DATA, identifier=IDENTIFIER, secret=SECRET, allowed_actions=["GetClientsDetails"]
    ) as fake:
        settings = fake.settings_for(Settings(), tmp_path / "u.toml")
        async with WhmcsBilling(settings, db) as billing:
            assert (await billing.get_client("1")) is not None
            with pytest.raises(BillingUnavailable, match="not allowed"):
                await billing.list_services("1")


async def test_api_role_with_exactly_the_documented_actions(
    db: asyncpg.Pool, tmp_path: Path
) -> None:
    async with FakeWhmcs(
        DATA,
        identifier=IDENTIFIER,
        secret=SECRET,
        access_key=ACCESS_KEY,
        allowed_actions=ACTIONS,
        today=TODAY,
    ) as fake:
        settings = fake.settings_for(Settings(), tmp_path / "u.toml")
        async with WhmcsBilling(settings, db) as billing:
            await exercise(billing, fake)
        assert {c.action for c in fake.calls} == set(ACTIONS)
        no_key = settings.with_(whmcs_access_key="")
        async with WhmcsBilling(no_key, db) as billing:
            with pytest.raises(BillingUnavailable, match="Invalid IP"):
                await billing.get_client("1")


async def exercise(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    """Every operation, the failing ones included."""
    await billing.sync_clients()
    await billing.find_client_by_phone(JUAN_WA)
    await billing.get_client("1")
    await billing.find_client_by_email("juan@example.com")
    await billing.list_services("1")
    await billing.list_invoices("1", service_id="11")
    await billing.list_domains("1")
    await billing.invoice_link("1", "101")
    await billing.event_facts("1", "quote.created", {"quote_id": "1"})
    await billing.upgrade_options("1", "10")
    await billing.quote_upgrade("1", "10", "2", "annually", today=TODAY)
    await billing.place_upgrade("1", "10", "2", "annually", today=TODAY, request_id="e-1")
    await billing.request_cancellation("1", "11", CancellationKind.IMMEDIATE, "x", request_id="e-2")
    fake.fail_next("AddCancelRequest", FailureKind.ERROR_AFTER_WRITE)  # looked into
    await billing.request_cancellation("1", "10", CancellationKind.IMMEDIATE, "x", request_id="e-4")
    await billing.stop_domain_renewal("1", "200")
    with contextlib.suppress(BillingRefused):
        await billing.transfer_service("1", "11", "3", request_id="e-3")
    with contextlib.suppress(BillingRefused):
        await billing.invoice_link("1", "999")
    await billing.get_client("999")
    await billing.expire_upgrades(datetime(2100, 1, 1, tzinfo=UTC))  # voids e-1's invoice


async def test_no_secret_in_logs_or_errors(
    make: Make, fake: FakeWhmcs, caplog: pytest.LogCaptureFixture
) -> None:
    fake.access_key = ACCESS_KEY
    billing = await make(whmcs_access_key=ACCESS_KEY, whmcs_timeout_seconds=0.5)
    wrong = await make(whmcs_secret=SECRET + "x", whmcs_access_key=ACCESS_KEY)
    errors: list[str] = [repr(billing)]
    with caplog.at_level(logging.DEBUG):
        await exercise(billing, fake)
        for kind in FailureKind:
            fake.fail_next("UpgradeProduct", kind, where=real_call, delay=2.0)
            try:
                await billing.place_upgrade(
                    "1", "11", "2", "monthly", today=TODAY, request_id=f"s-{kind.value}"
                )
            except Exception as e:
                errors.append(repr(e))
            fake.fail_next("GetClientsDomains", kind, delay=2.0)
            try:
                await billing.list_domains("1")
            except Exception as e:
                errors.append(repr(e))
        try:
            await wrong.get_client("1")
        except Exception as e:
            errors.append(repr(e))
    text = caplog.text + "\n".join(errors)
    assert "WHMCS" in caplog.text and "OutcomeUnknown" in text
    for secret in (IDENTIFIER, SECRET, ACCESS_KEY):
        assert secret not in text
    for call in fake.calls:
        assert not {"identifier", "secret", "accesskey"} & call.params.keys()


async def test_backend_for_shared_suites(pool: asyncpg.Pool) -> None:
    async with whmcs_backend(pool, DATA, today=TODAY) as (make_backend, product_id):
        billing = await make_backend(Policy.PRORATA)
        juan = await billing.find_client_by_phone(JUAN_WA)
        assert juan.client is not None and juan.client.id == "1"
        assert product_id("2") == "2"
        quote = await billing.quote_upgrade("1", "11", "2", "monthly", today=TODAY)
        assert quote.amount == Decimal("7.50")
