"""The WHMCS backend's side of alerts and broadcasts, against the fake WHMCS over real HTTP
and real PostgreSQL: the facts an alert shows (looked up only among the client's own
records), the clients of a broadcast segment, and clients refreshed from their events
with the phone alerts go to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.config import Settings
from bot.fakes.whmcs import FailureKind, FakeWhmcs
from bot.whmcs import ACTIONS, WhmcsBilling
from bot.whmcs.api import PAGE
from flows.billing import BillingUnavailable, EventFacts, Found, Segment
from flows.phones import whatsapp_id_for
from store import whmcs_index
from tests.whmcs_backend import Make, billings

IDENTIFIER = "whmcs-identifier-alerts"
SECRET = "whmcs-secret-alerts"
TODAY = date(2026, 7, 1)

JUAN_WA = "5491155551234"
MARIA_WA = "5215512345678"

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
        },
        {"id": "3", "name": "Ana Sin Teléfono", "email": "ana@example.com", "phone": ""},
        {"id": "4", "name": "Cerrado Cuatro", "email": "c4@example.com", "phone": ""},
        {"id": "5", "name": "Inactivo Cinco", "email": "c5@example.com", "phone": ""},
        {"id": "10", "name": "Diez Diez", "email": "c10@example.com", "phone": ""},
    ],
    "categories": [{"id": "1", "name": "Hosting"}, {"id": "2", "name": "Radios"}],
    "products": [
        {"id": "1", "category": "1", "name": "Hosting Inicial", "prices": {"monthly": "10"}},
        {"id": "2", "category": "1", "name": "Hosting Pro", "prices": {"monthly": "25"}},
        {"id": "3", "category": "2", "name": "Radio Pro", "prices": {"annually": "300"}},
    ],
    "services": [
        # product 1: active for clients 1 and 10 (twice); suspended for 2, terminated for 5.
        {
            "id": "20",
            "client": "1",
            "product": "1",
            "label": "juanperez.com.ar",
            "status": "active",
            "billing_cycle": "monthly",
            "amount": "10.00",
            "next_due": "2026-07-16",
            "server": "web1",
        },
        {
            "id": "21",
            "client": "1",
            "product": "2",
            "label": "",
            "status": "active",
            "billing_cycle": "monthly",
            "amount": "25.00",
            "next_due": "2026-07-16",
            "server": "web2",
        },
        {
            "id": "22",
            "client": "2",
            "product": "1",
            "label": "maria.mx",
            "status": "suspended",
            "billing_cycle": "monthly",
            "amount": "10.00",
            "next_due": "2026-06-10",
            "server": "web1",
        },
        {
            "id": "23",
            "client": "10",
            "product": "1",
            "label": "diez.com",
            "status": "active",
            "billing_cycle": "monthly",
            "amount": "10.00",
            "next_due": "2026-07-20",
            "server": "web1",
        },
        {
            "id": "24",
            "client": "3",
            "product": "2",
            "label": "ana.com",
            "status": "active",
            "billing_cycle": "monthly",
            "amount": "25.00",
            "next_due": "2026-07-20",
        },
        {
            "id": "25",
            "client": "5",
            "product": "1",
            "label": "cinco.com",
            "status": "terminated",
            "billing_cycle": "monthly",
            "amount": "10.00",
            "next_due": "2025-01-01",
            "server": "web1",
        },
        {
            "id": "26",
            "client": "2",
            "product": "3",
            "label": "radio.mx",
            "status": "active",
            "billing_cycle": "annually",
            "amount": "300.00",
            "next_due": "2027-01-01",
            "server": "web2",
        },
        {
            "id": "27",
            "client": "10",
            "product": "1",
            "label": "otro.diez.com",
            "status": "active",
            "billing_cycle": "monthly",
            "amount": "10.00",
            "next_due": "2026-07-20",
            "server": "web1",
        },
    ],
    "invoices": [
        {
            "id": "100",
            "client": "1",
            "service": "20",
            "total": "10.00",
            "status": "unpaid",
            "due": "2026-07-16",
        },
        {"id": "101", "client": "2", "total": "25.00", "status": "paid", "due": "2026-06-10"},
        {"id": "102", "client": "10", "total": "10.00", "status": "unpaid", "due": "2026-07-20"},
        {"id": "103", "client": "10", "total": "5.00", "status": "unpaid", "due": "2026-07-21"},
        {"id": "104", "client": "3", "total": "25.00", "status": "cancelled", "due": "2026-06-20"},
        {"id": "105", "client": "5", "total": "7.00", "status": "unpaid", "due": "2026-06-01"},
        {"id": "106", "client": "3", "total": "9.00", "status": "unpaid", "due": "2026-07-01"},
    ],
    "quotes": [
        {
            "id": "300",
            "client": "1",
            "total": "120.5",
            "subject": "Migración de 3 sitios",
            "valid_until": "2026-07-31",
        },
        {"id": "301", "client": "2", "total": "80.00", "subject": "Radio HD"},
    ],
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeWhmcs]:
    async with FakeWhmcs(DATA, identifier=IDENTIFIER, secret=SECRET, today=TODAY) as f:
        f.clients[4].status = "Closed"
        f.clients[5].status = "Inactive"
        # WHMCS's other unpaid statuses: client 5 owes through Payment Pending; client
        # 3's unpaid invoice is a Draft (not theirs yet).
        f.invoices[105].status = "Payment Pending"
        f.invoices[106].status = "Draft"
        yield f


@pytest.fixture
async def make(db: asyncpg.Pool, fake: FakeWhmcs, tmp_path: Path) -> AsyncIterator[Make]:
    async with billings(db, fake, tmp_path) as build:
        yield build


@pytest.fixture
async def billing(make: Make) -> WhmcsBilling:
    return await make()


def invoice_url(fake: FakeWhmcs, invoice_id: str) -> str:
    return f"{fake.base_url}/viewinvoice.php?id={invoice_id}"


# -- event facts: invoices -------------------------------------------------------------------


@pytest.mark.parametrize("event", ["invoice.created", "invoice.cancelled", "invoice.paid"])
async def test_an_invoice_sent_by_id_is_read_from_whmcs(
    billing: WhmcsBilling, fake: FakeWhmcs, event: str
) -> None:
    facts = await billing.event_facts("1", event, {"invoice_id": "100"})
    assert facts == EventFacts(
        invoice_id="100",
        total=Decimal("10.00"),
        due=date(2026, 7, 16),
        url=invoice_url(fake, "100"),
    )
    assert [c.params["invoiceid"] for c in fake.calls_of("GetInvoice")] == ["100"]


async def test_an_invoice_s_own_data_wins(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    data = {"invoice_id": "100", "total": "99.5", "due_date": "2026-08-01"}
    facts = await billing.event_facts("1", "invoice.created", data)
    # What the event said stands; only the link was missing.
    assert (facts.total, facts.due) == (Decimal("99.50"), date(2026, 8, 1))
    assert facts.url == invoice_url(fake, "100")
    given = {**data, "url": "https://panel.example.com/viewinvoice.php?id=100"}
    before = len(fake.calls)
    facts = await billing.event_facts("1", "invoice.paid", given)
    assert facts.url == given["url"]
    assert len(fake.calls) == before  # nothing to look up: WHMCS is not asked


async def test_another_client_s_invoice_gives_nothing(
    billing: WhmcsBilling, fake: FakeWhmcs
) -> None:
    for client_id, invoice_id in (("2", "100"), ("1", "102"), ("1", "999"), ("1", "abc")):
        facts = await billing.event_facts(client_id, "invoice.created", {"invoice_id": invoice_id})
        assert facts == EventFacts(invoice_id=invoice_id), (client_id, invoice_id)
    # The id that is no WHMCS id never reached it.
    assert [c.params["invoiceid"] for c in fake.calls_of("GetInvoice")] == ["100", "102", "999"]
    # An id that is not a client's id asks nothing.
    assert await billing.event_facts("", "invoice.paid", {"invoice_id": "100"}) == EventFacts(
        invoice_id="100"
    )


# -- event facts: services, quotes, domains ----------------------------------------------------


@pytest.mark.parametrize(
    "event", ["service.suspended", "service.unsuspended", "service.terminated"]
)
async def test_a_service_is_named_by_its_domain_else_its_product(
    billing: WhmcsBilling, fake: FakeWhmcs, event: str
) -> None:
    by_domain = await billing.event_facts("1", event, {"service_id": "20", "domain": ""})
    assert by_domain.service == "juanperez.com.ar"
    no_domain = await billing.event_facts("1", event, {"service_id": "21"})
    assert no_domain.service == "Hosting Pro"
    calls = fake.calls_of("GetClientsProducts")
    assert [(c.params["clientid"], c.params["serviceid"]) for c in calls] == [
        ("1", "20"),
        ("1", "21"),
    ]
    before = len(fake.calls)
    given = await billing.event_facts("1", event, {"service_id": "20", "domain": "dado.com"})
    assert given.service == "dado.com"
    assert len(fake.calls) == before


async def test_another_client_s_service_gives_nothing(billing: WhmcsBilling) -> None:
    for client_id, service_id in (("2", "20"), ("1", "26"), ("1", "999"), ("1", "x")):
        facts = await billing.event_facts(
            client_id, "service.suspended", {"service_id": service_id}
        )
        assert facts.service is None, (client_id, service_id)


async def test_a_quote_sent_by_id_is_read_from_whmcs(
    billing: WhmcsBilling, fake: FakeWhmcs
) -> None:
    facts = await billing.event_facts("1", "quote.created", {"quote_id": "300"})
    assert facts == EventFacts(
        quote_id="300",
        total=Decimal("120.50"),
        subject="Migración de 3 sitios",
        valid_until=date(2026, 7, 31),
        url=f"{fake.base_url}/viewquote.php?id=300",
    )
    assert [c.params.get("quoteid") for c in fake.calls_of("GetQuotes")] == ["300"]
    # The event's own data wins; what it lacks is still looked up.
    given = await billing.event_facts(
        "1", "quote.created", {"quote_id": "300", "total": "1", "subject": "Dado"}
    )
    assert (given.total, given.subject) == (Decimal("1.00"), "Dado")
    assert given.valid_until == date(2026, 7, 31)
    assert given.url == f"{fake.base_url}/viewquote.php?id=300"


async def test_another_client_s_quote_gives_nothing(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    for client_id, quote_id in (("2", "300"), ("1", "301"), ("1", "999"), ("1", "0")):
        facts = await billing.event_facts(client_id, "quote.created", {"quote_id": quote_id})
        assert facts == EventFacts(quote_id=quote_id), (client_id, quote_id)
    # "0" would list every quote in WHMCS: it is never sent.
    assert [c.params.get("quoteid") for c in fake.calls_of("GetQuotes")] == ["300", "301", "999"]


async def test_a_deleted_domain_is_named_by_the_event(
    billing: WhmcsBilling, fake: FakeWhmcs
) -> None:
    data = {"domain_id": "200", "domain": "borrado.com.ar"}
    facts = await billing.event_facts("1", "domain.deleted", data)
    assert facts == EventFacts(domain="borrado.com.ar")
    assert fake.calls == []  # gone from WHMCS: nothing to ask


# -- event facts: WHMCS unavailable --------------------------------------------------------------


LOOKUPS = [
    ("GetInvoice", "invoice.created", {"invoice_id": "100"}),
    ("GetClientsProducts", "service.suspended", {"service_id": "20"}),
    ("GetQuotes", "quote.created", {"quote_id": "300"}),
]


@pytest.mark.parametrize("lookup", LOOKUPS, ids=[action for action, _, _ in LOOKUPS])
@pytest.mark.parametrize("failure", [FailureKind.HTML, FailureKind.ERROR, FailureKind.DROP])
async def test_whmcs_failing_is_unavailable(
    billing: WhmcsBilling,
    fake: FakeWhmcs,
    lookup: tuple[str, str, dict[str, str]],
    failure: FailureKind,
) -> None:
    action, event, data = lookup
    # An error page, an error answer, a dropped connection (a read is tried once more:
    # both fail).
    fake.fail_next(action, failure, count=2, status=503)
    with pytest.raises(BillingUnavailable):
        await billing.event_facts("1", event, data)
    fake.clear_failures()
    facts = await billing.event_facts("1", event, data)
    assert facts.url is not None or facts.service is not None


async def test_whmcs_unreachable_is_unavailable(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    await fake.stop()
    with pytest.raises(BillingUnavailable):
        await billing.event_facts("1", "invoice.paid", {"invoice_id": "100"})
    with pytest.raises(BillingUnavailable):
        await billing.segment_clients(Segment.parse("all"))
    # Nothing to look up needs no WHMCS.
    facts = await billing.event_facts("1", "domain.deleted", {"domain": "x.com"})
    assert facts.domain == "x.com"


async def test_a_slow_whmcs_is_unavailable(make: Make, fake: FakeWhmcs) -> None:
    billing = await make(whmcs_timeout_seconds=0.3)
    fake.fail_next("GetQuotes", FailureKind.SLOW, delay=2.0)
    with pytest.raises(BillingUnavailable):
        await billing.event_facts("1", "quote.created", {"quote_id": "300"})


# -- segments ----------------------------------------------------------------------------------


async def test_segments_are_exactly_their_clients(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    web1, web2 = fake.wid("servers", "web1"), fake.wid("servers", "web2")
    expected = {
        # Active clients only: 4 is closed, 5 inactive. Sorted as numbers: 10 last.
        "all": ["1", "2", "3", "10"],
        # Active services only: 2's is suspended, 5's terminated; 10 has two, once.
        "product:1": ["1", "10"],
        "product:2": ["1", "3"],
        "product:3": ["2"],
        "product:99": [],
        f"server:{web1}": ["1", "10"],
        f"server:{web2}": ["1", "2"],
        "server:web2": ["1", "2"],
        "server:WEB2.example.com": ["1", "2"],
        "server:99": [],
        "server:nowhere": [],
        # Unpaid, Payment Pending (5) and Collections; not a Draft (3's) nor cancelled.
        "unpaid": ["1", "5", "10"],
    }
    for text, clients in expected.items():
        assert await billing.segment_clients(Segment.parse(text)) == clients, text
    # WHMCS is read, not the phone index (empty here: nobody synced).
    pid_filters = [c.params.get("pid") for c in fake.calls_of("GetClientsProducts")]
    assert pid_filters[:4] == ["1", "2", "3", "99"]
    statuses = {c.params.get("status") for c in fake.calls_of("GetInvoices")}
    assert statuses == {"Unpaid", "Payment Pending", "Collections"}
    assert {c.params.get("status") for c in fake.calls_of("GetClients")} == {"Active"}


async def test_a_product_id_that_is_no_whmcs_id_lists_nobody(
    billing: WhmcsBilling, fake: FakeWhmcs
) -> None:
    # An empty or zero pid would make WHMCS list every service.
    for value in ("0", "x1", "-1"):
        assert await billing.segment_clients(Segment("product", value)) == []
    assert fake.calls_of("GetClientsProducts") == []


async def test_segments_read_every_page(make: Make, fake: FakeWhmcs) -> None:
    many = 2 * PAGE + 30
    clients = [
        {"id": str(n), "name": f"C {n}", "email": f"c{n}@example.com", "phone": ""}
        for n in range(1000, 1000 + many)
    ]
    services = [
        {
            "id": str(n + 5000),
            "client": str(n),
            "product": "2",
            "label": f"c{n}.com",
            "status": "active" if n % 2 == 0 else "suspended",
            "billing_cycle": "monthly",
            "amount": "25.00",
            "server": "web3" if n % 3 == 0 else "web2",
        }
        for n in range(1000, 1000 + many)
    ]
    invoices = [
        {"id": str(n + 9000), "client": str(n), "total": "1", "status": "unpaid", "due": ""}
        for n in range(1000, 1000 + many)
        if n % 5 == 0
    ]
    fake.load({"clients": clients, "services": services, "invoices": invoices})
    billing = await make()

    everyone = await billing.segment_clients(Segment.parse("all"))
    assert everyone == ["1", "2", "3", "10", *(str(n) for n in range(1000, 1000 + many))]
    assert len(fake.calls_of("GetClients")) == 3

    product = await billing.segment_clients(Segment.parse("product:2"))
    paged = [c for c in fake.calls_of("GetClientsProducts") if c.params.get("pid") == "2"]
    assert [c.params["limitstart"] for c in paged] == ["0", str(PAGE), str(2 * PAGE)]
    assert product == ["1", "3", *(str(n) for n in range(1000, 1000 + many) if n % 2 == 0)]

    web3 = await billing.segment_clients(Segment.parse("server:web3"))
    assert web3 == [str(n) for n in range(1000, 1000 + many) if n % 6 == 0]

    unpaid = await billing.segment_clients(Segment.parse("unpaid"))
    owing = [str(n) for n in range(1000, 1000 + many) if n % 5 == 0]
    assert unpaid == ["1", "5", "10", *owing]


async def test_segments_when_whmcs_fails(billing: WhmcsBilling, fake: FakeWhmcs) -> None:
    fake.fail_next("GetInvoices", FailureKind.HTML, status=502)
    with pytest.raises(BillingUnavailable):
        await billing.segment_clients(Segment.parse("unpaid"))
    fake.fail_next("GetClientsProducts", FailureKind.HTML, status=500)
    with pytest.raises(BillingUnavailable):
        await billing.segment_clients(Segment.parse("product:1"))


# -- clients: refresh and their phone ------------------------------------------------------------


async def test_refresh_adds_a_client_the_index_has_never_seen(
    billing: WhmcsBilling, fake: FakeWhmcs, db: asyncpg.Pool
) -> None:
    await billing.sync_clients()
    new_wa = "5491144440000"
    assert (await billing.find_client_by_phone(new_wa)).found is Found.NONE
    # ClientAdd: a client WHMCS made after the sync.
    fake.load(
        {
            "clients": [
                {
                    "id": "40",
                    "name": "Nueva Cliente",
                    "email": "n@example.com",
                    "phone": "+54 11 4444-0000",
                }
            ]
        }
    )
    client = await billing.refresh_client("40")
    assert client is not None
    assert (client.id, client.name, client.email) == ("40", "Nueva Cliente", "n@example.com")
    assert client.phone == "+54.1144440000"
    assert whatsapp_id_for(client.phone, "AR") == new_wa
    found = await billing.find_client_by_phone(new_wa)
    assert found.found is Found.ONE and found.client == client
    indexed = await whmcs_index.indexed_client(db, "40")
    assert indexed is not None and indexed.status == "Active"


async def test_refresh_of_a_deleted_client_drops_it(
    billing: WhmcsBilling, fake: FakeWhmcs, db: asyncpg.Pool
) -> None:
    await billing.sync_clients()
    assert (await billing.find_client_by_phone(MARIA_WA)).found is Found.ONE
    del fake.clients[2]  # ClientDelete (or merged into another client)
    assert await billing.refresh_client("2") is None
    assert await whmcs_index.indexed_client(db, "2") is None
    assert (await billing.find_client_by_phone(MARIA_WA)).found is Found.NONE
    # A client never indexed and not in WHMCS: nothing to drop, still None.
    assert await billing.refresh_client("77") is None


async def test_refresh_of_a_closed_client_identifies_nobody(
    billing: WhmcsBilling, fake: FakeWhmcs, db: asyncpg.Pool
) -> None:
    await billing.sync_clients()
    fake.clients[1].status = "Closed"  # ClientClose
    assert await billing.refresh_client("1") is None
    assert (await billing.find_client_by_phone(JUAN_WA)).found is Found.NONE
    indexed = await whmcs_index.indexed_client(db, "1")
    assert indexed is not None and indexed.status == "Closed"  # as a sync writes it
    fake.clients[1].status = "Active"  # reopened: ClientEdit
    client = await billing.refresh_client("1")
    assert client is not None and client.phone == "+54.1155551234"
    assert (await billing.find_client_by_phone(JUAN_WA)).client == client


async def test_every_client_read_carries_its_phone(billing: WhmcsBilling) -> None:
    await billing.sync_clients()
    maria = await billing.get_client("2")
    assert maria is not None and maria.phone == "+52.5512345678"
    assert whatsapp_id_for(maria.phone, "AR") == MARIA_WA
    by_email = await billing.find_client_by_email("maria@example.com")
    by_phone = (await billing.find_client_by_phone(MARIA_WA)).client
    refreshed = await billing.refresh_client("2")
    assert maria == by_email == by_phone == refreshed
    ana = await billing.get_client("3")
    assert ana is not None and ana.phone == ""


async def test_a_phone_national_to_a_client_abroad_is_given_whole(
    db: asyncpg.Pool, tmp_path: Path
) -> None:
    """Without WHMCS's phone dropdown a phone is kept as typed: "+52 55 1234 5678" on a
    Mexican client is found only in its digits read in Mexico. Read alone in Argentina
    (DEFAULT_REGION) they are no number: the phone is given in international form, the
    number the index matched."""
    data = {
        "clients": [
            {"id": "1", "name": "Rosa Díaz", "email": "r@example.com", "phone": "+52 55 1234 5678"},
            {"id": "2", "name": "Luis Mora", "email": "l@example.com", "phone": "55 8765 4321"},
        ]
    }
    async with FakeWhmcs(data, phone_dropdown=False, today=TODAY) as fake:
        for client in fake.clients.values():
            client.countrycode = "MX"
        settings = fake.settings_for(Settings(default_region="AR"), tmp_path / "u.toml")
        async with WhmcsBilling(settings, db) as billing:
            await billing.sync_clients()
            rosa = await billing.get_client("1")
            assert rosa is not None and rosa.phone == "+525512345678"
            assert whatsapp_id_for(rosa.phone, "AR") == MARIA_WA
            assert (await billing.find_client_by_phone(MARIA_WA)).client == rosa
            # WHMCS's formatted "+52.5587654321" reads the same anywhere: kept as written.
            luis = await billing.get_client("2")
            assert luis is not None and luis.phone == "+52.5587654321"
            assert (await billing.find_client_by_phone("5215587654321")).client == luis


# -- the fake's answers, as WHMCS's ---------------------------------------------------------


async def test_the_fake_answers_these_actions_as_whmcs_does(fake: FakeWhmcs) -> None:
    async with aiohttp.ClientSession() as http:

        async def api(action: str, **params: str) -> dict[str, Any]:
            form = {"identifier": IDENTIFIER, "secret": SECRET, "responsetype": "json"}
            form |= {"action": action, **params}
            async with http.post(f"{fake.base_url}/includes/api.php", data=form) as response:
                body: dict[str, Any] = await response.json(content_type=None)
                return body

        # GetQuotes: whole rows, values as strings, newest first; no quoteid lists all.
        every = await api("GetQuotes")
        assert (every["result"], every["totalresults"]) == ("success", "2")
        assert [q["id"] for q in every["quotes"]["quote"]] == ["301", "300"]
        one = (await api("GetQuotes", quoteid="300"))["quotes"]["quote"]
        assert len(one) == 1
        assert {k: one[0][k] for k in ("userid", "total", "subject", "validuntil", "stage")} == {
            "userid": "1",
            "total": "120.50",
            "subject": "Migración de 3 sitios",
            "validuntil": "2026-07-31",
            "stage": "Delivered",
        }
        assert one[0]["items"]["item"][0]["unitprice"] == "120.50"
        none = await api("GetQuotes", quoteid="999")
        assert (none["result"], none["totalresults"], none["quotes"]) == (
            "success",
            "0",
            {"quote": []},
        )
        assert (await api("GetQuotes", userid="2"))["quotes"]["quote"][0]["id"] == "301"

        # GetClients: status as WHMCS normalises it, or an error for an unknown one.
        active = await api("GetClients", status="active", orderby="id")
        assert [c["id"] for c in active["clients"]["client"]] == [1, 2, 3, 10]
        assert active["totalresults"] == 4
        wrong = await api("GetClients", status="Gone")
        assert wrong["result"] == "error" and "Invalid client status" in wrong["message"]

        # GetClientsProducts: the server of each service; none is "0" with no name.
        web1 = fake.wid("servers", "web1")
        listed = (await api("GetClientsProducts", pid="1"))["products"]["product"]
        assert [(r["id"], r["serverid"], r["servername"]) for r in listed] == [
            ("20", web1, "web1"),
            ("22", web1, "web1"),
            ("23", web1, "web1"),
            ("25", web1, "web1"),
            ("27", web1, "web1"),
        ]
        assert listed[0]["serverhostname"] == "web1.example.com"
        ana = (await api("GetClientsProducts", serviceid="24"))["products"]["product"][0]
        assert (ana["serverid"], ana["servername"], ana["serverhostname"]) == ("0", "", None)

        # GetInvoices by status.
        pending = await api("GetInvoices", status="Payment Pending")
        assert [i["userid"] for i in pending["invoices"]["invoice"]] == [5]


# -- the API role --------------------------------------------------------------------------------


async def test_alerts_need_only_the_documented_actions(db: asyncpg.Pool, tmp_path: Path) -> None:
    async with FakeWhmcs(
        DATA, identifier=IDENTIFIER, secret=SECRET, allowed_actions=ACTIONS, today=TODAY
    ) as fake:
        settings = fake.settings_for(Settings(), tmp_path / "u.toml")
        async with WhmcsBilling(settings, db) as billing:
            await billing.refresh_client("1")
            await billing.event_facts("1", "invoice.created", {"invoice_id": "100"})
            await billing.event_facts("1", "service.suspended", {"service_id": "20"})
            await billing.event_facts("1", "quote.created", {"quote_id": "300"})
            for kind in ("all", "product:1", "server:web1", "unpaid"):
                await billing.segment_clients(Segment.parse(kind))
        assert {c.action for c in fake.calls} <= set(ACTIONS)
        assert "GetQuotes" in ACTIONS
