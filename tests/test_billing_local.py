"""The local backend beyond the shared contract: import and export, payment applying an
upgrade, the events a billing system emits, the transfer checks, the CLI."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from flows.billing import (
    NOT_VERIFIED,
    SAME_CLIENT,
    SERVICE_NOT_ACTIVE,
    UNPAID_INVOICES,
    BillingRefused,
    TransferResult,
)
from flows.pricing import Policy
from store.billing_import import ImportProblems
from store.billing_local import LocalBilling
from tests.billing_fixture import BILLING
from tests.conftest import create_database, drop_database, dsn_for, reset
from tests.procs import ROOT

MIDYEAR = date(2026, 7, 1)


def local(pool: asyncpg.Pool, policy: Policy = Policy.DIFFERENCE) -> LocalBilling:
    return LocalBilling(pool, policy=policy, panel_url="https://panel.example")


async def events(pool: asyncpg.Pool) -> list[tuple[str, str, dict[str, Any]]]:
    rows = await pool.fetch("SELECT type, client_id, data FROM events ORDER BY received_at, type")
    return [(r["type"], r["client_id"], r["data"]) for r in rows]


# -- import and export -----------------------------------------------------------------


async def test_loading_twice_changes_nothing_and_a_changed_record_is_updated(
    pool: asyncpg.Pool,
) -> None:
    billing = local(pool)
    before = await billing.export()
    await billing.load(BILLING)
    assert await billing.export() == before
    changed = copy.deepcopy(BILLING)
    changed["services"][0]["status"] = "suspended"
    changed["products"][1]["prices"]["monthly"] = "12.50"
    await billing.load(changed)
    after = await billing.export()
    assert after["services"][0]["status"] == "suspended"
    p1 = next(p for p in after["products"] if p["id"] == "p1")
    assert p1["prices"] == {"monthly": "12.50", "annually": "100.00"}


async def test_an_export_loads_into_an_empty_database_as_the_same_data(
    pool: asyncpg.Pool,
) -> None:
    billing = local(pool)
    # Records the bot created belong in the export too.
    await billing.request_cancellation("c1", "s1", _kind("immediate"), "precio", request_id="w1")
    await billing.stop_domain_renewal("c1", "d1")
    exported = await billing.export()
    assert exported["cancellation_requests"][0]["type"] == "immediate"
    assert exported["domains"][0]["auto_renew"] is False
    await reset(pool)
    await billing.load(json.loads(json.dumps(exported)))
    assert await billing.export() == exported


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["services"][0].update(billing_cycle="weekly"),
            "services[0] (id 's1'): billing_cycle 'weekly' is not one of",
        ),
        (
            lambda d: d["services"][1].update(product="p9"),
            "services[1] (id 's2'): product 'p9' is not a known product",
        ),
        (
            lambda d: d["invoices"][1].update(total="-5.00"),
            "invoices[1] (id 'i2'): total '-5.00' is negative",
        ),
        (
            lambda d: d["domains"][0].update(next_due="2027-13-01"),
            "domains[0] (id 'd1'): next_due '2027-13-01' is not an ISO date",
        ),
        (
            lambda d: d["products"][0]["prices"].update(monthly=5.0),
            "products[0] (id 'p0'): prices.monthly must be a decimal string",
        ),
        (
            lambda d: d["clients"].append(dict(d["clients"][0])),
            "clients: id 'c1' appears more than once",
        ),
    ],
)
async def test_a_malformed_import_changes_nothing_and_names_record_and_field(
    pool: asyncpg.Pool, change: Any, expected: str
) -> None:
    billing = local(pool)
    await reset(pool)
    before = await billing.export()
    bad = copy.deepcopy(BILLING)
    change(bad)
    with pytest.raises(ImportProblems) as problems:
        await billing.load(bad)
    assert any(p.startswith(expected) for p in problems.value.problems), problems.value.problems
    assert await billing.export() == before


async def test_every_problem_is_reported_at_once(pool: asyncpg.Pool) -> None:
    bad = copy.deepcopy(BILLING)
    bad["services"][0]["billing_cycle"] = "weekly"
    bad["invoices"][0]["status"] = "lost"
    bad["surprise"] = []
    with pytest.raises(ImportProblems) as problems:
        await local(pool).load(bad)
    assert len(problems.value.problems) == 3


# -- payment applies the upgrade, events ------------------------------------------------


async def test_paying_the_upgrade_invoice_applies_it(pool: asyncpg.Pool) -> None:
    billing = local(pool)
    placed = await billing.place_upgrade(
        "c1", "s1", "p2", "annually", today=MIDYEAR, request_id="w1"
    )
    paid = await billing.pay_invoice(placed.invoice.id, today=date(2026, 7, 3))
    assert paid.status == "paid"
    service = await billing.get_service("c1", "s1")
    assert service is not None
    assert (service.product_id, service.amount, service.billing_cycle) == (
        "p2",
        Decimal("150.00"),
        "annually",
    )
    # The new plan's period starts the day it is enabled.
    assert (service.period_start, service.next_due) == (date(2026, 7, 3), date(2027, 7, 3))
    kinds = [(t, c, d.get("invoice_id")) for t, c, d in await events(pool)]
    assert kinds == [
        ("invoice.created", "c1", placed.invoice.id),
        ("invoice.paid", "c1", placed.invoice.id),
    ]
    with pytest.raises(BillingRefused):
        await billing.pay_invoice(placed.invoice.id)  # already paid: nothing twice


async def test_today_is_the_company_calendar_day(pool: asyncpg.Pool) -> None:
    """Payments are dated in DISPLAY_TIMEZONE, not UTC: UTC+14 and UTC-12 are 26 hours
    apart, so their calendars never show the same day."""
    east = LocalBilling(pool, timezone="Etc/GMT-14").today()
    west = LocalBilling(pool, timezone="Etc/GMT+12").today()
    assert (east - west).days in (1, 2)


async def test_prorata_upgrade_keeps_the_due_date(pool: asyncpg.Pool) -> None:
    billing = local(pool, Policy.PRORATA)
    placed = await billing.place_upgrade(
        "c2", "s2", "p2", "monthly", today=date(2026, 6, 16), request_id="w2"
    )
    assert placed.invoice.total == Decimal("2.50")
    await billing.pay_invoice(placed.invoice.id, today=date(2026, 6, 16))
    service = await billing.get_service("c2", "s2")
    assert service is not None
    assert (service.product_id, service.amount, service.next_due) == (
        "p2",
        Decimal("15.00"),
        date(2026, 7, 1),
    )


async def test_paying_what_was_owed_lifts_the_suspension(pool: asyncpg.Pool) -> None:
    billing = local(pool)
    await billing.pay_invoice("i2")
    radio = await billing.get_service("c1", "s3")
    assert radio is not None and radio.status == "active"
    # The month it paid for (due 2026-06-01), whatever the day it was paid.
    assert (radio.period_start, radio.next_due) == (date(2026, 6, 1), date(2026, 7, 1))
    assert [t for t, _, _ in await events(pool)] == ["invoice.paid", "service.unsuspended"]
    with pytest.raises(BillingRefused) as again:
        await billing.pay_invoice("i2")
    assert again.value.reason == "invoice_not_unpaid"
    assert await billing.get_service("c1", "s3") == radio
    assert len(await events(pool)) == 2


async def test_an_unpaid_upgrade_invoice_is_no_debt_that_keeps_a_suspension(
    pool: asyncpg.Pool,
) -> None:
    """An upgrade ordered and not paid is an order, not a renewal owed: once the renewal
    is paid, the service suspended for it comes back; the upgrade waits for its own
    invoice, which moves no period."""
    billing = local(pool)
    placed = await billing.place_upgrade(
        "c1", "s1", "p2", "annually", today=MIDYEAR, request_id="w1"
    )
    assert placed.invoice is not None
    await billing.load(
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
    await billing.set_service_status("s1", "suspended")
    await billing.pay_invoice("i9", today=date(2027, 1, 20))
    hosting = await billing.get_service("c1", "s1")
    assert hosting is not None
    assert (hosting.status, hosting.product_id, hosting.next_due) == (
        "active",
        "p1",
        date(2028, 1, 1),
    )
    unpaid = await billing.list_invoices("c1", service_id="s1", status="unpaid")
    assert [i.id for i in unpaid] == [placed.invoice.id]


async def test_staff_changes_emit_their_events(pool: asyncpg.Pool) -> None:
    billing = local(pool)
    await billing.set_service_status("s1", "suspended")
    await billing.set_service_status("s1", "active")
    await billing.set_service_status("s1", "terminated")
    await billing.cancel_invoice("i2")
    quote_id = await billing.create_quote("c2", Decimal("99.90"), subject="Migración")
    await billing.delete_domain("d2")
    got = [(t, c) for t, c, _ in await events(pool)]
    assert got == [
        ("service.suspended", "c1"),
        ("service.unsuspended", "c1"),
        ("service.terminated", "c1"),
        ("invoice.cancelled", "c1"),
        ("quote.created", "c2"),
        ("domain.deleted", "c2"),
    ]
    quote = next(d for t, _, d in await events(pool) if t == "quote.created")
    assert (quote["quote_id"], quote["total"]) == (quote_id, "99.90")
    ids = await pool.fetch("SELECT id FROM events")
    assert len({r["id"] for r in ids}) == 6


# -- transfers -----------------------------------------------------------------------------


async def test_transfer_checks(pool: asyncpg.Pool) -> None:
    billing = local(pool)
    with pytest.raises(BillingRefused) as same:
        await billing.transfer_service("c1", "s1", "c1", request_id="t0")
    assert same.value.reason == SAME_CLIENT
    with pytest.raises(BillingRefused) as unverified:
        await billing.transfer_service("c1", "s1", "c4", request_id="t1")
    assert unverified.value.reason == NOT_VERIFIED
    with pytest.raises(BillingRefused) as suspended:
        await billing.transfer_service("c1", "s3", "c2", request_id="t2")
    assert suspended.value.reason == SERVICE_NOT_ACTIVE
    await billing.set_service_status("s3", "active")
    with pytest.raises(BillingRefused) as unpaid:
        await billing.transfer_service("c1", "s3", "c2", request_id="t3")
    assert unpaid.value.reason == UNPAID_INVOICES
    assert await billing.transfer_service("c1", "s1", "c2", request_id="t4") is TransferResult.DONE
    # Carried out once; asked again (the other holder's message), nothing more happens.
    assert await billing.transfer_service("c1", "s1", "c2", request_id="t4") is TransferResult.DONE
    exported = await billing.export()
    assert next(s for s in exported["services"] if s["id"] == "s1")["client"] == "c2"


# -- the command line ------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "billing", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_load_export_pay(tmp_path: Path) -> None:
    name = await create_database()
    try:
        env = dict(os.environ, DATABASE_URL=dsn_for(name), LOG_FORMAT="text")
        good = tmp_path / "billing.json"
        good.write_text(json.dumps(BILLING), encoding="utf-8")
        bad_data = copy.deepcopy(BILLING)
        bad_data["services"][0]["billing_cycle"] = "weekly"
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(bad_data), encoding="utf-8")

        failed = await asyncio.to_thread(_cli, "load", str(bad), env=env)
        assert failed.returncode == 1
        assert "services[0] (id 's1'): billing_cycle 'weekly'" in failed.stderr
        assert (
            json.loads((await asyncio.to_thread(_cli, "export", env=env)).stdout)["clients"] == []
        )

        assert (await asyncio.to_thread(_cli, "load", str(good), env=env)).returncode == 0
        paid = await asyncio.to_thread(_cli, "pay", "i2", env=env)
        assert paid.returncode == 0, paid.stderr
        exported = json.loads((await asyncio.to_thread(_cli, "export", env=env)).stdout)
        assert next(i for i in exported["invoices"] if i["id"] == "i2")["status"] == "paid"
        # The renewal it paid moved the radio's month on and reactivated it.
        radio = next(s for s in exported["services"] if s["id"] == "s3")
        assert (radio["status"], radio["period_start"], radio["next_due"]) == (
            "active",
            "2026-06-01",
            "2026-07-01",
        )
        missing = await asyncio.to_thread(_cli, "pay", "nope", env=env)
        assert missing.returncode == 1 and "not_found" in missing.stderr
    finally:
        await drop_database(name)


def _kind(value: str) -> Any:
    from flows.billing import CancellationKind

    return CancellationKind(value)
