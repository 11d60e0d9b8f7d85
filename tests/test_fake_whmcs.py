"""The fake WHMCS answers like WHMCS: its request parameters, answer shapes and quirks
(WHMCS 8.7's includes/api/*.php), authentication, failures on demand, and the record of
calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.config import Settings
from bot.fakes.whmcs import FailureKind, FakeWhmcs, whmcs_phone
from bot.whmcs import UpgradePaths

ID, SECRET = "api-identifier", "api-secret"

DATA: dict[str, Any] = {
    "clients": [
        {
            "id": "c1",
            "name": "Juan Perez",
            "email": "juan@example.com",
            "phone": "+54 11 5555-1234",
            "verified": True,
        },
        {
            "id": "7",
            "name": "Pedro Dos",
            "email": "pedro2@example.com",
            "phone": "0351 15 555-0000",
        },
        {"id": "c3", "name": "Ana", "email": "ana@example.com", "phone": ""},
    ],
    "categories": [{"id": "hosting", "name": "Hosting"}],
    "products": [
        {
            "id": "p1",
            "category": "hosting",
            "name": "Hosting Inicial",
            "prices": {"monthly": "10.00", "annually": "100.00"},
            "upgrades_to": ["p2"],
        },
        {
            "id": "p2",
            "category": "hosting",
            "name": "Hosting Pro",
            "prices": {"monthly": "25.00", "annually": "150.00"},
        },
    ],
    "services": [
        {
            "id": "s1",
            "client": "c1",
            "product": "p1",
            "label": "juanperez.com.ar",
            "status": "active",
            "billing_cycle": "monthly",
            "amount": "10.00",
            "period_start": "2026-06-16",
            "next_due": "2026-07-16",
        }
    ],
    "invoices": [
        {
            "id": "i1",
            "client": "c1",
            "service": "s1",
            "total": "10.00",
            "status": "paid",
            "due": "2026-06-16",
        }
    ],
    "domains": [
        {
            "id": "d1",
            "client": "c1",
            "name": "juanperez.com.ar",
            "status": "active",
            "auto_renew": True,
            "next_due": "2027-01-01",
        }
    ],
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeWhmcs]:
    async with FakeWhmcs(
        DATA, identifier=ID, secret=SECRET, upgrade_pricing="prorata", today=date(2026, 7, 1)
    ) as f:
        yield f


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def api(
    http: aiohttp.ClientSession, fake: FakeWhmcs, action: str, **params: Any
) -> tuple[int, Any]:
    form = {"identifier": ID, "secret": SECRET, "responsetype": "json", "action": action}
    form.update({k: str(v) for k, v in params.items()})
    async with http.post(f"{fake.base_url}/includes/api.php", data=form) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


def test_ids_numeric_kept_others_numbered() -> None:
    f = FakeWhmcs(DATA)
    assert f.ids["clients"] == {"c1": "8", "7": "7", "c3": "9"}
    assert f.wid("services", "s1") == "1"
    assert f.wid("products", "p2") == "2"


def test_phones_stored_as_whmcs_does() -> None:
    assert whmcs_phone("+54 11 5555-1234", "AR") == ("+54.1155551234", "AR")
    assert whmcs_phone("+52 55 1234 5678", "AR") == ("+52.5512345678", "MX")
    assert whmcs_phone("0351 15 555-0000", "AR") == ("0351 15 555-0000", "AR")


def test_upgrades_toml_is_the_adapter_format(tmp_path: Path) -> None:
    f = FakeWhmcs(DATA)
    path = tmp_path / "upgrades.toml"
    path.write_text(f.upgrades_toml(), encoding="utf-8")
    paths = UpgradePaths.load(path)
    assert paths.targets == {"1": ("2",), "2": ()}
    assert paths.category("1").name == "Hosting"


async def test_settings_for_points_at_the_fake(fake: FakeWhmcs, tmp_path: Path) -> None:
    settings = fake.settings_for(Settings(), tmp_path / "u.toml")
    assert settings.billing_backend == "whmcs"
    assert settings.whmcs_url == fake.base_url
    assert (settings.whmcs_identifier, settings.whmcs_secret) == (ID, SECRET)
    assert UpgradePaths.load(settings.whmcs_upgrades_file).targets["1"] == ("2",)


async def test_authentication(fake: FakeWhmcs, http: aiohttp.ClientSession) -> None:
    url = f"{fake.base_url}/includes/api.php"
    cases = [
        ({"identifier": "", "secret": ""}, "Authentication Failed"),
        ({"identifier": "wrong", "secret": SECRET}, "Invalid or missing credentials"),
        ({"identifier": ID, "secret": "wrong"}, "Authentication Failed"),
    ]
    for credentials, message in cases:
        form = {**credentials, "action": "GetClients", "responsetype": "json"}
        async with http.post(url, data=form) as response:
            assert response.status == 403
            assert await response.json() == {"result": "error", "message": message}


async def test_access_key_and_api_role(http: aiohttp.ClientSession) -> None:
    async with FakeWhmcs(
        DATA, identifier=ID, secret=SECRET, access_key="k3y", allowed_actions=["GetClients"]
    ) as f:
        status, body = await api(http, f, "GetClients")
        assert status == 403
        assert body["message"].startswith("Invalid IP ")
        status, body = await api(http, f, "GetClients", accesskey="k3y")
        assert (status, body["result"]) == (200, "success")
        status, body = await api(http, f, "GetInvoices", accesskey="k3y")
        assert body == {
            "result": "error",
            "message": 'Invalid Permissions: API action "getinvoices" is not allowed',
        }


async def test_get_clients_pages(fake: FakeWhmcs, http: aiohttp.ClientSession) -> None:
    _, first = await api(http, fake, "GetClients", limitstart=0, limitnum=2, orderby="id")
    assert (first["totalresults"], first["startnumber"], first["numreturned"]) == (3, 0, 2)
    assert [c["id"] for c in first["clients"]["client"]] == [7, 8]
    _, second = await api(http, fake, "GetClients", limitstart=2, limitnum=2, orderby="id")
    assert [c["email"] for c in second["clients"]["client"]] == ["ana@example.com"]
    _, past = await api(http, fake, "GetClients", limitstart=3, limitnum=2)
    assert past["numreturned"] == 0 and "clients" not in past
    _, found = await api(http, fake, "GetClients", search="juan")
    assert [c["id"] for c in found["clients"]["client"]] == [8]


async def test_get_clients_details(fake: FakeWhmcs, http: aiohttp.ClientSession) -> None:
    _, body = await api(http, fake, "GetClientsDetails", clientid=8)
    client = body["client"]
    assert body["result"] == "success" and body["email"] == "juan@example.com"
    assert client["fullname"] == "Juan Perez"
    assert (client["phonecc"], client["phonenumber"]) == ("54", "1155551234")
    assert client["phonenumberformatted"] == "+54.1155551234"
    assert client["countrycode"] == "AR"
    assert client["email_verified"] is True and client["currency_code"] == "USD"
    _, typed = await api(http, fake, "GetClientsDetails", email="PEDRO2@example.com")
    # A national number as typed: WHMCS prefixes the country code and cuts leading zeros.
    assert typed["client"]["phonenumberformatted"] == "+54.351155550000"
    _, missing = await api(http, fake, "GetClientsDetails", clientid=99)
    assert missing == {"result": "error", "message": "Client Not Found"}


async def test_get_clients_products(fake: FakeWhmcs, http: aiohttp.ClientSession) -> None:
    _, body = await api(http, fake, "GetClientsProducts", clientid=8)
    (product,) = body["products"]["product"]
    assert product["id"] == "1" and product["clientid"] == "8" and product["pid"] == "1"
    assert product["status"] == "Active" and product["billingcycle"] == "Monthly"
    assert product["recurringamount"] == "10.00" and product["nextduedate"] == "2026-07-16"
    assert product["groupname"] == "Hosting" and product["domain"] == "juanperez.com.ar"
    _, other = await api(http, fake, "GetClientsProducts", clientid=7, serviceid=1)
    assert other["totalresults"] == 0 and other["products"] == ""


async def test_get_products_pricing(fake: FakeWhmcs, http: aiohttp.ClientSession) -> None:
    _, body = await api(http, fake, "GetProducts", pid=2)
    (product,) = body["products"]["product"]
    assert (product["pid"], product["gid"], product["paytype"]) == (2, 1, "recurring")
    usd = product["pricing"]["USD"]
    assert (usd["monthly"], usd["annually"], usd["quarterly"]) == ("25.00", "150.00", "-1.00")


async def test_invoices(fake: FakeWhmcs, http: aiohttp.ClientSession) -> None:
    _, body = await api(http, fake, "GetInvoices", userid=8)
    (invoice,) = body["invoices"]["invoice"]
    assert invoice["status"] == "Paid" and invoice["total"] == "10.00"
    _, none = await api(http, fake, "GetInvoices", userid=7)
    assert none["invoices"] == []
    _, detail = await api(http, fake, "GetInvoice", invoiceid=1)
    assert detail["userid"] == "8"
    assert detail["items"]["item"][0]["type"] == "Hosting"
    assert detail["items"]["item"][0]["relid"] == "1"
    _, missing = await api(http, fake, "GetInvoice", invoiceid=42)
    # WHMCS's quirk: "status", not "result".
    assert missing == {"status": "error", "message": "Invoice ID Not Found"}


async def test_upgrade_product(fake: FakeWhmcs, http: aiohttp.ClientSession) -> None:
    upgrade = {"serviceid": 1, "type": "product", "newproductid": 2}
    upgrade |= {"newproductbillingcycle": "monthly", "paymentmethod": "banktransfer"}
    _, calc = await api(http, fake, "UpgradeProduct", calconly="true", **upgrade)
    # WHMCS's pro-rata: 25 × 15/30 − 10 × 15/30.
    assert calc["price"] == "$7.50 USD" and calc["upgradeinprogress"] == 0
    assert (calc["daysuntilrenewal"], calc["totaldays"]) == (15, 30)
    assert fake.invoices.keys() == {1}

    _, placed = await api(http, fake, "UpgradeProduct", **upgrade)
    assert placed["result"] == "success" and placed["orderid"] == 1
    invoice = fake.invoices[placed["invoiceid"]]
    assert (invoice.status, invoice.total, invoice.userid) == ("Unpaid", Decimal("7.50"), 8)

    _, again = await api(http, fake, "UpgradeProduct", **upgrade)
    assert again["message"].startswith("Unable to accept upgrade order.")
    _, calc = await api(http, fake, "UpgradeProduct", calconly="true", **upgrade)
    assert calc["upgradeinprogress"] == 1

    fake.pay_invoice(placed["invoiceid"])
    service = fake.services[1]
    assert (service.pid, service.amount, service.billingcycle) == (2, Decimal("25.00"), "Monthly")


async def test_upgrade_product_refusals(fake: FakeWhmcs, http: aiohttp.ClientSession) -> None:
    base = {"serviceid": 1, "type": "product", "newproductid": 2, "paymentmethod": "banktransfer"}
    _, body = await api(http, fake, "UpgradeProduct", newproductbillingcycle="quarterly", **base)
    assert body["message"] == "Invalid Billing Cycle Requested"
    _, body = await api(http, fake, "UpgradeProduct", newproductbillingcycle="weekly", **base)
    assert body == "Invalid New Billing Cycle"  # WHMCS's exit(): no JSON at all
    base["paymentmethod"] = "paypal"
    _, body = await api(http, fake, "UpgradeProduct", newproductbillingcycle="monthly", **base)
    assert body["message"].startswith("Invalid Payment Method. Valid options include")


async def test_difference_hook_bills_the_help_page_rule(http: aiohttp.ClientSession) -> None:
    async with FakeWhmcs(DATA, identifier=ID, secret=SECRET, today=date(2026, 7, 1)) as f:
        upgrade = {"serviceid": 1, "type": "product", "newproductid": 2}
        upgrade |= {"newproductbillingcycle": "annually", "paymentmethod": "banktransfer"}
        _, placed = await api(http, f, "UpgradeProduct", **upgrade)
        assert f.invoices[placed["invoiceid"]].total == Decimal("140.00")  # 150 − 10


async def test_cancel_request_and_domains(fake: FakeWhmcs, http: aiohttp.ClientSession) -> None:
    _, body = await api(http, fake, "AddCancelRequest", serviceid=1, type="Immediate", reason="x")
    assert body == {"result": "success", "serviceid": 1, "userid": 8}
    assert fake.cancel_requests[0].type == "Immediate"
    _, again = await api(http, fake, "AddCancelRequest", serviceid=1, type="Immediate")
    assert again["message"] == "Existing Cancellation Request Exists"
    _, missing = await api(http, fake, "AddCancelRequest", serviceid=9)
    assert missing["message"] == "Service ID Not Found"

    _, domains = await api(http, fake, "GetClientsDomains", clientid=8)
    (domain,) = domains["domains"]["domain"]
    assert domain["domainname"] == "juanperez.com.ar" and domain["donotrenew"] == ""
    _, updated = await api(http, fake, "UpdateClientDomain", domainid=1, donotrenew=1)
    assert updated == {"result": "success", "domainid": 1}
    assert fake.domains[1].donotrenew is True
    _, none = await api(http, fake, "GetClientsDomains", clientid=7)
    assert none["domains"] == ""


async def test_calls_recorded_without_credentials(
    fake: FakeWhmcs, http: aiohttp.ClientSession
) -> None:
    await api(http, fake, "GetClientsDetails", clientid=8, accesskey="k")
    (call,) = fake.calls_of("getclientsdetails")
    assert call.params == {"responsetype": "json", "action": "GetClientsDetails", "clientid": "8"}


async def test_injected_failures(fake: FakeWhmcs, http: aiohttp.ClientSession) -> None:
    fake.fail_next("GetClients", FailureKind.ERROR, message="Database error")
    assert await api(http, fake, "GetClients") == (
        200,
        {"result": "error", "message": "Database error"},
    )
    fake.fail_next("GetClients", FailureKind.HTML, status=500)
    status, page = await api(http, fake, "GetClients")
    assert status == 500 and page.startswith("<html>")
    fake.fail_next("GetClients", FailureKind.BAD_JSON)
    status, text = await api(http, fake, "GetClients")
    assert status == 200 and text.startswith("<br />") and text.endswith("}")
    fake.fail_next(None, FailureKind.DROP)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api(http, fake, "GetClients")
    assert (await api(http, fake, "GetClients"))[1]["result"] == "success"


async def test_lost_answer_after_acting(fake: FakeWhmcs, http: aiohttp.ClientSession) -> None:
    fake.fail_next("AddCancelRequest", FailureKind.LOST)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api(http, fake, "AddCancelRequest", serviceid=1, type="Immediate")
    assert len(fake.cancel_requests) == 1  # it happened; the answer was lost

    fake.fail_next("UpdateClientDomain", FailureKind.SLOW, delay=2.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await api(http, fake, "UpdateClientDomain", domainid=1, donotrenew=1)
    assert fake.domains[1].donotrenew is True
