"""An upgrade left unpaid, on every backend (the local tables, and WHMCS over its fake
API): the service's pending upgrade, one order at a time, voiding the old unpaid ones,
and the package an upgrade invoice's alert names. The data is
tests/billing_fixture.BILLING; the billing systems' calendar is on MIDYEAR."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.config import Settings
from bot.fakes.whmcs import FailureKind, FakeInvoice, FakeInvoiceItem, FakeWhmcs
from bot.whmcs import WhmcsBilling
from flows.billing import (
    NOT_FOUND,
    UPGRADE_PENDING,
    Billing,
    BillingRefused,
    BillingUnavailable,
    ExpiredUpgrade,
    PendingUpgrade,
    PlacedUpgrade,
)
from flows.pricing import Policy
from store import whmcs_index
from store.billing_local import LocalBilling
from tests.billing_fixture import BILLING

MIDYEAR = date(2026, 7, 1)
# When the orders of a test were placed (the backends record the instant themselves: the
# tests move it back), and the instant expiring voids the ones placed before.
OLD = datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
RECENT = datetime(2026, 7, 9, 10, 0, tzinfo=UTC)
TTL_CUTOFF = datetime(2026, 7, 8, 0, 0, tzinfo=UTC)


@dataclass
class Backend:
    """A backend loaded with BILLING, with the billing system's own hands the interface
    leaves out."""

    kind: str
    billing: Billing
    # The backend's id of a record of the fixture (WHMCS numbers them).
    id: Callable[[str, str], str]
    # A gateway paying an invoice (on MIDYEAR).
    pay: Callable[[str], Awaitable[None]]
    # Moves back when the bot placed the upgrade billed on this invoice.
    placed_at: Callable[[str, datetime], Awaitable[None]]
    pool: asyncpg.Pool
    fake: FakeWhmcs | None = None

    async def place(self, client: str, service: str, product: str, cycle: str, rid: str) -> Any:
        return await self.billing.place_upgrade(
            self.id("clients", client),
            self.id("services", service),
            self.id("products", product),
            cycle,
            today=MIDYEAR,
            request_id=rid,
        )

    async def status(self, client: str, invoice_id: str) -> str:
        invoices = await self.billing.list_invoices(self.id("clients", client))
        return next(i.status for i in invoices if i.id == invoice_id)


@contextlib.asynccontextmanager
async def _backend(kind: str, pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[Backend]:
    if kind == "local":
        local = LocalBilling(pool, policy=Policy.DIFFERENCE, panel_url="https://panel.example")

        async def pay_locally(invoice_id: str) -> None:
            await local.pay_invoice(invoice_id, today=MIDYEAR)

        async def invoice_created_at(invoice_id: str, when: datetime) -> None:
            await pool.execute(
                "UPDATE billing_invoices SET created_at = $2 WHERE id = $1", invoice_id, when
            )

        yield Backend(kind, local, lambda _, spec: spec, pay_locally, invoice_created_at, pool)
        return

    await whmcs_index.forget_everything(pool)
    async with FakeWhmcs(BILLING, today=MIDYEAR) as fake:
        settings = fake.settings_for(
            Settings(upgrade_pricing=Policy.DIFFERENCE.value), tmp_path / "upgrades.toml"
        )
        async with WhmcsBilling(settings, pool) as whmcs:
            await whmcs.sync_clients()

            async def pay_in_whmcs(invoice_id: str) -> None:
                fake.pay_invoice(invoice_id)

            async def ledger_created_at(invoice_id: str, when: datetime) -> None:
                await pool.execute(
                    """
                    UPDATE whmcs_requests SET created_at = $2
                    WHERE action = 'UpgradeProduct' AND result ->> 'invoice_id' = $1
                    """,
                    invoice_id,
                    when,
                )

            yield Backend(kind, whmcs, fake.wid, pay_in_whmcs, ledger_created_at, pool, fake)


@pytest.fixture(params=["local", "whmcs"])
async def backend(
    request: pytest.FixtureRequest, pool: asyncpg.Pool, tmp_path: Path
) -> AsyncIterator[Backend]:
    async with _backend(request.param, pool, tmp_path) as made:
        yield made


@pytest.fixture
async def whmcs(pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[Backend]:
    async with _backend("whmcs", pool, tmp_path) as made:
        yield made


def _invoice_id(placed: PlacedUpgrade) -> str:
    assert placed.invoice is not None
    return placed.invoice.id


# -- the pending upgrade -------------------------------------------------------------------


async def test_an_upgrade_is_pending_from_its_order_until_its_payment(backend: Backend) -> None:
    billing = backend.billing
    juan, maria = backend.id("clients", "c1"), backend.id("clients", "c2")
    hosting, pro = backend.id("services", "s1"), backend.id("products", "p2")
    assert await billing.pending_upgrade(juan, hosting) is None

    placed = await backend.place("c1", "s1", "p2", "annually", "wamid.U1")
    invoice = _invoice_id(placed)
    await backend.placed_at(invoice, OLD)
    pending = await billing.pending_upgrade(juan, hosting)
    assert pending == PendingUpgrade(
        service_id=hosting,
        product_id=pro,
        product_name="Hosting Pro",
        invoice_id=invoice,
        invoice_url=placed.invoice_url or "",
        total=Decimal("50.00"),
        ordered_on=MIDYEAR,
    )
    assert pending.invoice_url == await billing.invoice_link(juan, invoice)
    # Nothing pending of Juan's other service; nothing of his for anyone else.
    assert await billing.pending_upgrade(juan, backend.id("services", "s3")) is None
    assert await billing.pending_upgrade(maria, hosting) is None
    assert await billing.pending_upgrade(juan, backend.id("services", "s2")) is None
    assert await billing.pending_upgrade(juan, "no-such-service") is None

    await backend.pay(invoice)
    assert await billing.pending_upgrade(juan, hosting) is None
    now = await billing.get_service(juan, hosting)
    assert now is not None and now.product_name == "Hosting Pro"


async def test_one_upgrade_of_a_service_at_a_time(backend: Backend) -> None:
    """While the first order's invoice is unpaid, another order of the service is refused
    naming that invoice; the first order's request asked again still gets its answer."""
    first = await backend.place("c1", "s1", "p2", "annually", "wamid.U1")
    with pytest.raises(BillingRefused) as refused:
        await backend.place("c1", "s1", "v1", "monthly", "wamid.U2")
    assert (refused.value.reason, refused.value.detail) == (UPGRADE_PENDING, _invoice_id(first))
    again = await backend.place("c1", "s1", "p2", "annually", "wamid.U1")
    assert again == first
    juan, hosting = backend.id("clients", "c1"), backend.id("services", "s1")
    unpaid = await backend.billing.list_invoices(juan, service_id=hosting, status="unpaid")
    assert [i.id for i in unpaid] == [_invoice_id(first)]
    if backend.fake is not None:
        assert len(backend.fake.upgrades) == 1  # WHMCS was sent one order
    # Another service of the same client is not held up.
    radio = await backend.place("c1", "s3", "p1", "monthly", "wamid.U3")
    assert radio.invoice is not None and radio.invoice.id != _invoice_id(first)


async def test_twin_orders_at_once_place_one(backend: Backend) -> None:
    """Two orders of one service at the same instant (two commands, two processes): one
    is placed, the other refused with its invoice."""
    results = await asyncio.gather(  # Maria's monthly hosting: both have an invoice
        backend.place("c2", "s2", "p2", "monthly", "wamid.T1"),
        backend.place("c2", "s2", "v1", "monthly", "wamid.T2"),
        return_exceptions=True,
    )
    placed = [r for r in results if isinstance(r, PlacedUpgrade)]
    refused = [r for r in results if isinstance(r, BillingRefused)]
    assert len(placed) == 1 and len(refused) == 1, results
    assert refused[0].reason == UPGRADE_PENDING
    if refused[0].detail:  # WHMCS may refuse before our ledger has the invoice
        assert refused[0].detail == _invoice_id(placed[0])


# -- expiring ------------------------------------------------------------------------------


async def test_expiring_voids_only_the_old_unpaid_upgrade_invoices(backend: Backend) -> None:
    billing = backend.billing
    juan, maria = backend.id("clients", "c1"), backend.id("clients", "c2")
    old_unpaid = _invoice_id(await backend.place("c1", "s1", "p2", "annually", "wamid.E1"))
    old_paid = _invoice_id(await backend.place("c1", "s3", "p1", "monthly", "wamid.E2"))
    recent = _invoice_id(await backend.place("c2", "s2", "p2", "monthly", "wamid.E3"))
    await backend.placed_at(old_unpaid, OLD)
    await backend.placed_at(old_paid, OLD)
    await backend.placed_at(recent, RECENT)
    await backend.pay(old_paid)

    expired = await billing.expire_upgrades(TTL_CUTOFF)
    assert expired == [ExpiredUpgrade(juan, backend.id("services", "s1"), old_unpaid)]
    assert await backend.status("c1", old_unpaid) == "cancelled"
    assert await backend.status("c1", old_paid) == "paid"
    assert await backend.status("c2", recent) == "unpaid"
    assert await billing.pending_upgrade(juan, backend.id("services", "s1")) is None
    still = await billing.pending_upgrade(maria, backend.id("services", "s2"))
    assert still is not None and still.invoice_id == recent

    assert await billing.expire_upgrades(TTL_CUTOFF) == []  # nothing more, ever
    if backend.kind == "local":
        cancelled = await backend.pool.fetch(
            "SELECT client_id, data FROM events WHERE type = 'invoice.cancelled'"
        )
        assert [(r["client_id"], r["data"]["invoice_id"]) for r in cancelled] == [
            (juan, old_unpaid)
        ]
    else:
        assert backend.fake is not None
        voids = backend.fake.calls_of("UpdateInvoice")
        assert [(c.params["invoiceid"], c.params["status"]) for c in voids] == [
            (old_unpaid, "Cancelled")
        ]
        assert backend.fake.invoices[int(old_unpaid)].status == "Cancelled"

    # The voided invoice cannot be paid any more, and the upgrade never applies.
    with contextlib.suppress(BillingRefused):
        await backend.pay(old_unpaid)
    assert await backend.status("c1", old_unpaid) == "cancelled"
    service = await billing.get_service(juan, backend.id("services", "s1"))
    assert service is not None and service.product_name == "Hosting Inicial"
    # The service may be ordered again: a new invoice.
    anew = _invoice_id(await backend.place("c1", "s1", "p2", "annually", "wamid.E4"))
    assert anew not in (old_unpaid, old_paid, recent)
    await backend.placed_at(anew, datetime(2026, 7, 20, tzinfo=UTC))
    # The later cutoff reaches the recent one only.
    later = await billing.expire_upgrades(datetime(2026, 7, 10, tzinfo=UTC))
    assert [e.invoice_id for e in later] == [recent]


async def test_two_processes_expiring_at_once_void_each_invoice_once(backend: Backend) -> None:
    invoices = []
    for n, (client, service) in enumerate((("c1", "s1"), ("c1", "s3"), ("c2", "s2"))):
        product = "p2" if service != "s3" else "p1"
        cycle = "annually" if service == "s1" else "monthly"
        invoice = _invoice_id(await backend.place(client, service, product, cycle, f"wamid.X{n}"))
        await backend.placed_at(invoice, OLD)
        invoices.append(invoice)
    first, second = await asyncio.gather(
        backend.billing.expire_upgrades(TTL_CUTOFF), backend.billing.expire_upgrades(TTL_CUTOFF)
    )
    assert sorted(e.invoice_id for e in first + second) == sorted(invoices)
    if backend.kind == "local":
        count = await backend.pool.fetchval(
            "SELECT count(*) FROM events WHERE type = 'invoice.cancelled'"
        )
        assert count == 3
    else:
        assert backend.fake is not None
        assert len(backend.fake.calls_of("UpdateInvoice")) == 3


async def test_expiring_needs_an_aware_instant(backend: Backend) -> None:
    with pytest.raises(ValueError, match="timezone"):
        await backend.billing.expire_upgrades(datetime(2026, 7, 8))


# -- what an upgrade invoice's alert names -------------------------------------------------


async def test_the_alert_of_an_upgrade_invoice_names_the_package(backend: Backend) -> None:
    billing = backend.billing
    juan, maria = backend.id("clients", "c1"), backend.id("clients", "c2")
    renewal = backend.id("invoices", "i2")  # the radio's June: no upgrade
    paid = _invoice_id(await backend.place("c1", "s1", "p2", "annually", "wamid.F1"))
    voided = _invoice_id(await backend.place("c1", "s3", "p1", "monthly", "wamid.F2"))
    await backend.pay(paid)
    await backend.placed_at(voided, OLD)
    assert [e.invoice_id for e in await billing.expire_upgrades(TTL_CUTOFF)] == [voided]

    facts = await billing.event_facts(juan, "invoice.paid", {"invoice_id": paid})
    assert (facts.upgrade_to, facts.total) == ("Hosting Pro", Decimal("50.00"))
    facts = await billing.event_facts(juan, "invoice.cancelled", {"invoice_id": voided})
    assert (facts.upgrade_to, facts.total) == ("Hosting Inicial", Decimal("5.00"))
    # An event that carries everything still learns the package.
    full = {"invoice_id": paid, "total": "50.00", "due_date": "2026-07-01", "url": "https://x"}
    assert (await billing.event_facts(juan, "invoice.paid", full)).upgrade_to == "Hosting Pro"

    renewal_facts = await billing.event_facts(juan, "invoice.paid", {"invoice_id": renewal})
    assert renewal_facts.upgrade_to is None and renewal_facts.total == Decimal("5.00")
    created = await billing.event_facts(juan, "invoice.created", {"invoice_id": paid})
    # Its creation is the chat's: the customer was given the link there, not alerted.
    assert (created.upgrade_to, created.ordered_in_chat) == ("Hosting Pro", True)
    # Another client's invoice gives nothing.
    for event in ("invoice.paid", "invoice.cancelled"):
        other = await billing.event_facts(maria, event, {"invoice_id": paid})
        assert other.upgrade_to is None and other.total is None


# -- WHMCS: upgrades the customer ordered in the client area ------------------------------


async def test_whmcs_sees_an_upgrade_ordered_in_the_client_area(whmcs: Backend) -> None:
    fake, billing = whmcs.fake, whmcs.billing
    assert fake is not None
    juan, hosting, pro = whmcs.id("clients", "c1"), whmcs.id("services", "s1"), "p2"
    invoice = str(fake.order_upgrade(hosting, whmcs.id("products", pro), "annually"))
    pending = await billing.pending_upgrade(juan, hosting)
    assert pending == PendingUpgrade(
        service_id=hosting,
        product_id=whmcs.id("products", pro),
        product_name="Hosting Pro",
        invoice_id=invoice,
        invoice_url=await billing.invoice_link(juan, invoice),
        total=Decimal("50.00"),
        ordered_on=MIDYEAR,
    )
    assert await billing.pending_upgrade(whmcs.id("clients", "c2"), hosting) is None
    with pytest.raises(BillingRefused) as refused:
        await whmcs.place("c1", "s1", "v1", "monthly", "wamid.W1")
    assert (refused.value.reason, refused.value.detail) == (UPGRADE_PENDING, invoice)
    assert len(fake.upgrades) == 1  # the bot sent no order
    # The bot did not place it: not its to void.
    assert await billing.expire_upgrades(datetime(2100, 1, 1, tzinfo=UTC)) == []
    assert fake.invoices[int(invoice)].status == "Unpaid"
    # Paid, its alert names the package from the invoice's Upgrade line.
    fake.pay_invoice(invoice)
    facts = await billing.event_facts(juan, "invoice.paid", {"invoice_id": invoice})
    assert facts.upgrade_to == "Hosting Pro"
    assert await billing.pending_upgrade(juan, hosting) is None


async def test_whmcs_an_upgrade_line_naming_no_package_names_nothing(whmcs: Backend) -> None:
    """A configurable options upgrade's line moves an option, not the package."""
    fake = whmcs.fake
    assert fake is not None
    juan = int(whmcs.id("clients", "c1"))
    line = (
        "Upgrade/Downgrade Options: Hosting Inicial - juanperez.com.ar\n"
        "Disk Space: 10 GB => 20 GB (01/07/2026 - 01/01/2027)"
    )
    fake.invoices[900] = FakeInvoice(
        id=900,
        userid=juan,
        status="Paid",
        total=Decimal("3.00"),
        issued=MIDYEAR,
        duedate=MIDYEAR,
        items=[FakeInvoiceItem(1, "Upgrade", 77, line, Decimal("3.00"))],
    )
    facts = await whmcs.billing.event_facts(str(juan), "invoice.paid", {"invoice_id": "900"})
    assert facts.upgrade_to is None and facts.total == Decimal("3.00")


# -- WHMCS: expiring, invoice by invoice ---------------------------------------------------


async def test_whmcs_expiring_leaves_what_is_not_unpaid(whmcs: Backend) -> None:
    """Payment Pending (a payment on its way) is looked at again later; an invoice WHMCS
    no longer has, or one voided already (a process that died before recording it), is
    recorded and not voided again."""
    fake, pool = whmcs.fake, whmcs.pool
    assert fake is not None
    on_its_way = _invoice_id(await whmcs.place("c1", "s1", "p2", "annually", "wamid.P1"))
    deleted = _invoice_id(await whmcs.place("c1", "s3", "p1", "monthly", "wamid.P2"))
    voided = _invoice_id(await whmcs.place("c2", "s2", "p2", "monthly", "wamid.P3"))
    for invoice in (on_its_way, deleted, voided):
        await whmcs.placed_at(invoice, OLD)
    fake.invoices[int(on_its_way)].status = "Payment Pending"
    del fake.invoices[int(deleted)]
    fake.invoices[int(voided)].status = "Cancelled"

    assert await whmcs.billing.expire_upgrades(TTL_CUTOFF) == []
    assert fake.calls_of("UpdateInvoice") == []
    rows = await pool.fetch(
        "SELECT request_id, expiry, expiry_claimed_at IS NOT NULL AS claimed"
        " FROM whmcs_requests WHERE action = 'UpgradeProduct' ORDER BY request_id"
    )
    assert [(r["request_id"], r["expiry"], r["claimed"]) for r in rows] == [
        ("wamid.P1", None, True),  # looked at again when the claim lapses
        ("wamid.P2", "gone", False),
        ("wamid.P3", "settled", False),
    ]
    # The claim lapsed and the payment failed: voided on the next run.
    await pool.execute("UPDATE whmcs_requests SET expiry_claimed_at = now() - interval '1 day'")
    fake.invoices[int(on_its_way)].status = "Unpaid"
    expired = await whmcs.billing.expire_upgrades(TTL_CUTOFF)
    assert [e.invoice_id for e in expired] == [on_its_way]


async def test_whmcs_unavailable_gives_the_upgrades_back(whmcs: Backend) -> None:
    fake = whmcs.fake
    assert fake is not None
    invoice = _invoice_id(await whmcs.place("c1", "s1", "p2", "annually", "wamid.D1"))
    await whmcs.placed_at(invoice, OLD)
    fake.fail_next("UpdateInvoice", FailureKind.HTML)
    with pytest.raises(BillingUnavailable):
        await whmcs.billing.expire_upgrades(TTL_CUTOFF)
    claimed = await whmcs.pool.fetchval(
        "SELECT expiry_claimed_at FROM whmcs_requests WHERE request_id = 'wamid.D1'"
    )
    assert claimed is None  # given back: the next run tries it
    assert [e.invoice_id for e in await whmcs.billing.expire_upgrades(TTL_CUTOFF)] == [invoice]


async def test_fake_whmcs_update_invoice(whmcs: Backend) -> None:
    fake = whmcs.fake
    assert fake is not None
    form = {"identifier": fake.identifier, "secret": fake.secret, "responsetype": "json"}
    url = f"{fake.base_url}/includes/api.php"

    async def call(**params: Any) -> dict[str, Any]:
        data = {**form, "action": "UpdateInvoice", **params}
        async with aiohttp.ClientSession() as http, http.post(url, data=data) as r:
            body: dict[str, Any] = await r.json()
            return body

    renewal = whmcs.id("invoices", "i2")
    assert await call(invoiceid="999", status="Cancelled") == {
        "result": "error",
        "message": "Invoice ID Not Found",
    }
    assert (await call(invoiceid=renewal, status="Void"))["message"] == "Invalid status Void"
    assert await call(invoiceid=renewal, status="Cancelled") == {
        "result": "success",
        "invoiceid": int(renewal),
    }
    fake.pay_invoice(renewal)  # a cancelled invoice is not paid
    assert fake.invoices[int(renewal)].status == "Cancelled"
    radio = fake.services[int(whmcs.id("services", "s3"))]
    assert radio.nextduedate == date(2026, 6, 1)  # not renewed
    with pytest.raises(BillingRefused) as refused:
        await whmcs.billing.invoice_link(whmcs.id("clients", "c1"), "999")
    assert refused.value.reason == NOT_FOUND
