"""The billing interface's contract, one suite run against every backend: the local
tables and WHMCS (over its fake API). The data is tests/billing_fixture.BILLING."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from flows.billing import (
    CYCLE_FIXED,
    CYCLE_NOT_SOLD,
    NOT_AN_UPGRADE,
    NOT_FOUND,
    NOT_OFFERED,
    Billing,
    BillingRefused,
    CancellationKind,
    Found,
    TransferResult,
)
from flows.pricing import Policy
from store.billing_local import LocalBilling
from tests.billing_fixture import JUAN_WA, MARIA_WA, SHARED_WA, UNKNOWN_WA

MIDYEAR = date(2026, 7, 1)


@dataclass
class Backend:
    """How a suite test gets a backend loaded with BILLING."""

    make: Callable[[Policy], Awaitable[Billing]]
    # The backend's id of a product of the fixture (WHMCS numbers its products).
    product_id: Callable[[str], str] = lambda fixture_id: fixture_id


@pytest.fixture(params=["local", "whmcs"])
async def backend(
    request: pytest.FixtureRequest, pool: asyncpg.Pool, database_url: str
) -> AsyncIterator[Backend]:
    if request.param == "local":

        async def make(policy: Policy) -> Billing:
            return LocalBilling(pool, policy=policy, panel_url="https://panel.example")

        yield Backend(make)
        return
    from tests.whmcs_backend import whmcs_backend

    async with whmcs_backend(pool) as (make_whmcs, product_id):
        yield Backend(make_whmcs, product_id)


@pytest.fixture
async def billing(backend: Backend) -> Billing:
    return await backend.make(Policy.DIFFERENCE)


async def test_identifies_clients_by_phone_with_national_quirks(billing: Billing) -> None:
    juan = await billing.find_client_by_phone(JUAN_WA)
    assert juan.found is Found.ONE and juan.client is not None
    assert (juan.client.name, juan.client.email) == ("Juan Perez", "juan@example.com")
    maria = await billing.find_client_by_phone(MARIA_WA)
    assert maria.client is not None and maria.client.email == "maria@example.com"
    assert (await billing.find_client_by_phone(SHARED_WA)).found is Found.SEVERAL
    unknown = await billing.find_client_by_phone(UNKNOWN_WA)
    assert unknown.found is Found.NONE and unknown.client is None


async def test_clients_by_id_and_email(billing: Billing) -> None:
    juan = await billing.find_client_by_email("JUAN@example.com ")
    assert juan is not None
    again = await billing.get_client(juan.id)
    assert again == juan
    assert await billing.find_client_by_email("nadie@example.com") is None


async def _client_id(billing: Billing, wa_id: str) -> str:
    found = await billing.find_client_by_phone(wa_id)
    assert found.client is not None
    return found.client.id


async def _service_id(billing: Billing, client_id: str, label: str) -> str:
    services = await billing.list_services(client_id)
    return next(s.id for s in services if s.label == label)


async def test_services_invoices_domains(billing: Billing) -> None:
    juan = await _client_id(billing, JUAN_WA)
    services = {s.label: s for s in await billing.list_services(juan)}
    assert set(services) == {"juanperez.com.ar", "radio.juanperez.com.ar"}
    hosting = services["juanperez.com.ar"]
    assert (hosting.status, hosting.billing_cycle, hosting.amount) == (
        "active",
        "annually",
        Decimal("100.00"),
    )
    assert hosting.next_due == date(2027, 1, 1)
    assert hosting.product_name == "Hosting Inicial"
    assert services["radio.juanperez.com.ar"].status == "suspended"
    unpaid = await billing.list_invoices(juan, status="unpaid")
    assert [(i.total, i.service_id) for i in unpaid] == [
        (Decimal("5.00"), services["radio.juanperez.com.ar"].id)
    ]
    assert len(await billing.list_invoices(juan)) == 2
    assert [d.name for d in await billing.list_domains(juan)] == ["juanperez.com.ar"]


async def test_another_clients_records_are_not_found(billing: Billing) -> None:
    juan = await _client_id(billing, JUAN_WA)
    maria = await _client_id(billing, MARIA_WA)
    marias_service = await _service_id(billing, maria, "mariagonzalez.mx")
    assert await billing.get_service(juan, marias_service) is None
    with pytest.raises(BillingRefused) as refused:
        await billing.upgrade_options(juan, marias_service)
    assert refused.value.reason == NOT_FOUND
    marias_domain = (await billing.list_domains(maria))[0]
    with pytest.raises(BillingRefused):
        await billing.stop_domain_renewal(juan, marias_domain.id)
    juans_invoice = (await billing.list_invoices(juan))[0]
    with pytest.raises(BillingRefused):
        await billing.invoice_link(maria, juans_invoice.id)


async def test_upgrade_options_are_upgrades_only(billing: Billing) -> None:
    juan = await _client_id(billing, JUAN_WA)
    service = await _service_id(billing, juan, "juanperez.com.ar")
    options = await billing.upgrade_options(juan, service)
    offered = {o.category.name: [p.name for p in o.products] for o in options}
    # Hosting Mini is among the paths but cheaper: a downgrade, not offered.
    # Hosting Ultra is pricier but not a path the systems can do automatically.
    assert offered == {"Hosting": ["Hosting Pro"], "VPS": ["VPS Base"]}


async def test_quote_follows_the_help_page(billing: Billing) -> None:
    juan = await _client_id(billing, JUAN_WA)
    service = await _service_id(billing, juan, "juanperez.com.ar")
    pro = _product_id(await billing.upgrade_options(juan, service), "Hosting Pro")
    quote = await billing.quote_upgrade(juan, service, pro, "annually", today=MIDYEAR)
    assert quote.amount == Decimal("50.00")  # 150 $ − the 100 $ already paid
    assert quote.next_due == date(2027, 7, 1)  # the period restarts when enabled


async def test_quote_refusals(backend: Backend) -> None:
    billing = await backend.make(Policy.DIFFERENCE)
    juan = await _client_id(billing, JUAN_WA)
    service = await _service_id(billing, juan, "juanperez.com.ar")
    options = await billing.upgrade_options(juan, service)
    pro = _product_id(options, "Hosting Pro")
    vps = _product_id(options, "VPS Base")
    with pytest.raises(BillingRefused) as cycle:
        await billing.quote_upgrade(juan, service, vps, "annually", today=MIDYEAR)
    assert cycle.value.reason == CYCLE_NOT_SOLD
    mini = backend.product_id("p0")  # Hosting Mini
    with pytest.raises(BillingRefused) as down:
        await billing.quote_upgrade(juan, service, mini, "annually", today=MIDYEAR)
    assert down.value.reason == NOT_AN_UPGRADE
    ultra = backend.product_id("p3")  # Hosting Ultra
    with pytest.raises(BillingRefused) as offered:
        await billing.quote_upgrade(juan, service, ultra, "annually", today=MIDYEAR)
    assert offered.value.reason == NOT_OFFERED
    assert pro  # the real upgrade is still quotable
    await billing.quote_upgrade(juan, service, pro, "monthly", today=MIDYEAR)


async def test_prorata_policy(backend: Backend) -> None:
    billing = await backend.make(Policy.PRORATA)
    maria = await _client_id(billing, MARIA_WA)
    service = await _service_id(billing, maria, "mariagonzalez.mx")
    ultra_path = _product_id(await billing.upgrade_options(maria, service), "Hosting Pro")
    # 10 → 15 a month with 15 of 30 days left (June): 5 × 15/30 = 2.50
    quote = await billing.quote_upgrade(
        maria, service, ultra_path, "monthly", today=date(2026, 6, 16)
    )
    assert quote.amount == Decimal("2.50")
    assert quote.next_due == date(2026, 7, 1)
    with pytest.raises(BillingRefused) as fixed:
        await billing.quote_upgrade(maria, service, ultra_path, "annually", today=date(2026, 6, 16))
    assert fixed.value.reason == CYCLE_FIXED


async def test_placing_an_upgrade_generates_one_invoice(billing: Billing) -> None:
    juan = await _client_id(billing, JUAN_WA)
    service = await _service_id(billing, juan, "juanperez.com.ar")
    pro = _product_id(await billing.upgrade_options(juan, service), "Hosting Pro")
    placed = await billing.place_upgrade(
        juan, service, pro, "annually", today=MIDYEAR, request_id="wamid.A"
    )
    assert placed.invoice.total == Decimal("50.00")
    assert placed.invoice.status == "unpaid"
    assert placed.invoice.id in placed.invoice_url
    again = await billing.place_upgrade(
        juan, service, pro, "annually", today=MIDYEAR, request_id="wamid.A"
    )
    assert again.invoice.id == placed.invoice.id
    unpaid = await billing.list_invoices(juan, service_id=service, status="unpaid")
    assert [i.id for i in unpaid] == [placed.invoice.id]
    assert placed.invoice.id in await billing.invoice_link(juan, placed.invoice.id)


@dataclass
class Payable:
    """A backend loaded with BILLING, with the billing system's own hands that the
    Billing interface leaves out: `pay`, a gateway marking an invoice paid, and `add`,
    records (in the import format) its staff or cron would create."""

    billing: Billing
    pay: Callable[[str], Awaitable[None]]
    add: Callable[[dict[str, Any]], Awaitable[None]]


@contextlib.asynccontextmanager
async def _payable(
    kind: str, pool: asyncpg.Pool, tmp_path: Path, *, today: date
) -> AsyncIterator[Payable]:
    """The suite's `backend` gives no such hands for WHMCS, so this builds both itself:
    local billing paying on `today`; a WHMCS fake with our upgrade hook, its calendar on
    `today`."""
    if kind == "local":
        local = LocalBilling(pool, policy=Policy.DIFFERENCE, panel_url="https://panel.example")

        async def pay_locally(invoice_id: str) -> None:
            await local.pay_invoice(invoice_id, today=today)

        yield Payable(local, pay_locally, local.load)
        return
    from bot.config import Settings
    from bot.fakes.whmcs import FakeWhmcs
    from bot.whmcs import WhmcsBilling
    from store import whmcs_index
    from tests.billing_fixture import BILLING

    await whmcs_index.forget_everything(pool)
    async with FakeWhmcs(BILLING, today=today) as fake:
        settings = fake.settings_for(
            Settings(upgrade_pricing=Policy.DIFFERENCE.value), tmp_path / "upgrades.toml"
        )
        async with WhmcsBilling(settings, pool) as whmcs:
            await whmcs.sync_clients()

            async def pay_in_whmcs(invoice_id: str) -> None:
                fake.pay_invoice(invoice_id)

            async def add_to_whmcs(data: dict[str, Any]) -> None:
                fake.load(data)

            yield Payable(whmcs, pay_in_whmcs, add_to_whmcs)


@pytest.fixture(params=["local", "whmcs"])
async def payable(
    request: pytest.FixtureRequest, pool: asyncpg.Pool, tmp_path: Path
) -> AsyncIterator[Payable]:
    """A payable backend whose calendar is on MIDYEAR."""
    async with _payable(request.param, pool, tmp_path, today=MIDYEAR) as made:
        yield made


async def test_a_paid_upgrade_starts_its_period_the_day_it_is_enabled(payable: Payable) -> None:
    """The help page: the new plan's period starts on the day it is enabled. Paid the day
    it was quoted, the service is due when the quote said — a year from that day, not on
    the old period's date (2027-01-01)."""
    billing = payable.billing
    juan = await _client_id(billing, JUAN_WA)
    service = await _service_id(billing, juan, "juanperez.com.ar")
    pro = _product_id(await billing.upgrade_options(juan, service), "Hosting Pro")
    quote = await billing.quote_upgrade(juan, service, pro, "annually", today=MIDYEAR)
    placed = await billing.place_upgrade(
        juan, service, pro, "annually", today=MIDYEAR, request_id="wamid.P"
    )
    assert placed.invoice is not None and not placed.applied
    await payable.pay(placed.invoice.id)
    now = await billing.get_service(juan, service)
    assert now is not None and now.product_name == "Hosting Pro"
    assert now.next_due == quote.next_due == date(2027, 7, 1)


async def test_a_paid_renewal_moves_the_period_a_cycle_on_and_reactivates(
    payable: Payable,
) -> None:
    """Juan's radio, billed by the month, was due 2026-06-01 and is suspended for that
    unpaid invoice. Paid (on 2026-07-01), the month it paid for starts on its due date,
    the next is due a month later, and the radio is active again. Paid twice, nothing
    happens twice."""
    billing = payable.billing
    juan = await _client_id(billing, JUAN_WA)
    radio = await _service_id(billing, juan, "radio.juanperez.com.ar")
    before = await billing.get_service(juan, radio)
    assert before is not None
    assert (before.status, before.billing_cycle, before.next_due) == (
        "suspended",
        "monthly",
        date(2026, 6, 1),
    )
    [overdue] = await billing.list_invoices(juan, service_id=radio, status="unpaid")
    await payable.pay(overdue.id)
    after = await billing.get_service(juan, radio)
    assert after is not None
    assert (after.status, after.period_start, after.next_due) == (
        "active",
        date(2026, 6, 1),
        date(2026, 7, 1),
    )
    assert await billing.list_invoices(juan, service_id=radio, status="unpaid") == []
    # A repeated payment notice: local billing refuses it, WHMCS processes only an
    # unpaid invoice. Either way the period does not move again.
    with contextlib.suppress(BillingRefused):
        await payable.pay(overdue.id)
    assert await billing.get_service(juan, radio) == after


async def test_a_paid_renewal_of_an_active_yearly_service_moves_only_its_period(
    payable: Payable,
) -> None:
    """Juan's hosting, billed by the year and due 2027-01-01, renewed: due 2028-01-01,
    still active, same plan and price."""
    billing = payable.billing
    await payable.add(
        {
            "invoices": [
                {
                    "id": "i9",
                    "client": "c1",
                    "service": "s1",
                    "total": "100.00",
                    "status": "unpaid",
                    "due": "2027-01-01",
                }
            ]
        }
    )
    juan = await _client_id(billing, JUAN_WA)
    hosting = await _service_id(billing, juan, "juanperez.com.ar")
    before = await billing.get_service(juan, hosting)
    assert before is not None and before.next_due == date(2027, 1, 1)
    [renewal] = await billing.list_invoices(juan, service_id=hosting, status="unpaid")
    await payable.pay(renewal.id)
    after = await billing.get_service(juan, hosting)
    assert after is not None
    assert (after.period_start, after.next_due) == (date(2027, 1, 1), date(2028, 1, 1))
    unchanged = ("status", "product_id", "billing_cycle", "amount")
    assert [getattr(after, f) for f in unchanged] == [getattr(before, f) for f in unchanged]


@pytest.mark.parametrize("kind", ["local", "whmcs"])
@pytest.mark.parametrize(
    ("today", "after_june"),
    [(MIDYEAR, "active"), (date(2026, 7, 15), "suspended")],
    ids=["july-not-yet-overdue", "july-overdue-too"],
)
async def test_a_suspension_lasts_while_a_renewal_is_overdue(
    kind: str, today: date, after_june: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Juan's radio owes June (due 06-01) and July (due 07-01). June's paid on July 1st
    leaves nothing overdue — July's is due that day — so the radio is back; paid on the
    15th, July's is overdue as well and the radio stays suspended until that is paid.
    Each payment moves the period one month on."""
    async with _payable(kind, pool, tmp_path, today=today) as payable:
        billing = payable.billing
        await payable.add(
            {
                "invoices": [
                    {
                        "id": "i3",
                        "client": "c1",
                        "service": "s3",
                        "total": "5.00",
                        "status": "unpaid",
                        "due": "2026-07-01",
                    }
                ]
            }
        )
        juan = await _client_id(billing, JUAN_WA)
        radio = await _service_id(billing, juan, "radio.juanperez.com.ar")
        june, july = await billing.list_invoices(juan, service_id=radio, status="unpaid")
        assert (june.due, july.due) == (date(2026, 6, 1), date(2026, 7, 1))
        await payable.pay(june.id)
        first = await billing.get_service(juan, radio)
        assert first is not None
        assert (first.status, first.next_due) == (after_june, date(2026, 7, 1))
        await payable.pay(july.id)
        second = await billing.get_service(juan, radio)
        assert second is not None
        assert (second.status, second.next_due) == ("active", date(2026, 8, 1))


async def test_an_upgrade_with_nothing_to_pay_is_applied_at_once(billing: Billing) -> None:
    """Juan paid 100 $ for the year; Hosting Pro by the month is 15 $. By the help page's
    rule (the new price for the period minus what was already paid, never below zero)
    nothing is owed: the upgrade applies at once and no invoice is made — the customer is
    told it is done, not sent a link to pay 0 $."""
    juan = await _client_id(billing, JUAN_WA)
    service = await _service_id(billing, juan, "juanperez.com.ar")
    pro = _product_id(await billing.upgrade_options(juan, service), "Hosting Pro")
    placed = await billing.place_upgrade(
        juan, service, pro, "monthly", today=MIDYEAR, request_id="wamid.Z"
    )
    assert placed.applied and placed.invoice is None and placed.invoice_url is None
    assert placed.quote.amount == Decimal("0.00")
    now = await billing.get_service(juan, service)
    assert now is not None
    assert (now.product_name, now.billing_cycle) == ("Hosting Pro", "monthly")
    assert await billing.list_invoices(juan, service_id=service, status="unpaid") == []
    # Asked again (a retried command): the first answer, not a refusal.
    again = await billing.place_upgrade(
        juan, service, pro, "monthly", today=MIDYEAR, request_id="wamid.Z"
    )
    assert again.applied and again.product.name == "Hosting Pro"


async def test_cancellation_request_once_per_request(billing: Billing) -> None:
    juan = await _client_id(billing, JUAN_WA)
    service = await _service_id(billing, juan, "juanperez.com.ar")
    first = await billing.request_cancellation(
        juan, service, CancellationKind.END_OF_PERIOD, "me mudo", request_id="wamid.C"
    )
    second = await billing.request_cancellation(
        juan, service, CancellationKind.END_OF_PERIOD, "me mudo", request_id="wamid.C"
    )
    assert first.id == second.id
    assert (first.kind, first.reason, first.service_id) == (
        CancellationKind.END_OF_PERIOD,
        "me mudo",
        service,
    )


async def test_stop_domain_renewal(billing: Billing) -> None:
    juan = await _client_id(billing, JUAN_WA)
    domain = (await billing.list_domains(juan))[0]
    assert domain.auto_renew
    stopped = await billing.stop_domain_renewal(juan, domain.id)
    assert not stopped.auto_renew
    assert not (await billing.list_domains(juan))[0].auto_renew


async def test_transfer_is_done_or_left_to_staff(billing: Billing) -> None:
    juan = await _client_id(billing, JUAN_WA)
    maria = await _client_id(billing, MARIA_WA)
    service = await _service_id(billing, juan, "juanperez.com.ar")
    result = await billing.transfer_service(juan, service, maria, request_id="wamid.T")
    if result is TransferResult.DONE:
        assert await billing.get_service(maria, service) is not None
        assert await billing.get_service(juan, service) is None
    else:
        assert result is TransferResult.NEEDS_STAFF
        assert await billing.get_service(juan, service) is not None


def _product_id(options: list[object], name: str) -> str:
    for option in options:
        for product in option.products:  # type: ignore[attr-defined]
            if product.name == name:
                return str(product.id)
    raise AssertionError(f"{name} not offered")
