"""The WHMCS phone index at scale, against the fake WHMCS over HTTP and real PostgreSQL:
a sync pass cut short continues where it stopped, WHMCS's failures are waited out with a
growing delay a bounded number of times, one client is refreshed from its events, and
`telephoneNumber` finds an international number typed on a client of another country."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from bot.fakes.whmcs import FailureKind, FakeWhmcs
from bot.whmcs.api import PAGE, WhmcsApi
from bot.whmcs.phone_index import Backoff, PhoneIndex, SyncAlreadyRunning
from flows.billing import BillingUnavailable, Found
from store import whmcs_index
from tests.harness import until

CLIENTS = 250


def phone(n: int) -> str:
    """Client n's phone, as typed: an Argentine mobile without WhatsApp's 9."""
    return f"+54 11 4{n:07d}"


def wa_id(n: int) -> str:
    """Client n's WhatsApp id: Argentine ids carry the mobile 9 after 54."""
    return f"549114{n:07d}"


def clients(numbers: range) -> dict[str, Any]:
    return {
        "clients": [
            {"id": str(n), "name": f"Cliente {n}", "email": f"c{n}@example.com", "phone": phone(n)}
            for n in numbers
        ]
    }


def details_of(fake: FakeWhmcs, since: int = 0) -> list[int]:
    """The client ids of the GetClientsDetails calls the fake received after call `since`."""
    return [int(c.params["clientid"]) for c in fake.calls_of("GetClientsDetails") if c.seq > since]


def above(n: int) -> Callable[[Any], bool]:
    """GetClientsDetails calls for clients with ids above `n`."""
    return lambda params: int(params.get("clientid", "0")) > n


class Waits:
    """A Backoff's sleep that records the delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def fake() -> AsyncIterator[FakeWhmcs]:
    async with FakeWhmcs(clients(range(1, CLIENTS + 1))) as f:
        yield f


@pytest.fixture
async def api(fake: FakeWhmcs) -> AsyncIterator[WhmcsApi]:
    whmcs = WhmcsApi(
        fake.base_url,
        identifier=fake.identifier,
        secret=fake.secret,
        access_key="",
        timeout_seconds=5.0,
    )
    yield whmcs
    await whmcs.close()


@pytest.fixture
def waits() -> Waits:
    return Waits()


@pytest.fixture
def phones(api: WhmcsApi, db: asyncpg.Pool, waits: Waits) -> PhoneIndex:
    # 1 s, then twice as long each time, never more than 3 s; 4 tries per call.
    return PhoneIndex(
        api, db, "AR", backoff=Backoff(tries=4, first=1, factor=2, cap=3, sleep=waits)
    )


async def owner(phones: PhoneIndex, wa: str) -> str | None:
    """The id of the one client the index finds for WhatsApp id `wa`, if one."""
    found = await phones.find(wa)
    return found.client.id if found.found is Found.ONE and found.client else None


async def client_of(phones: PhoneIndex, n: int) -> str | None:
    return await owner(phones, wa_id(n))


async def test_a_pass_that_gives_up_continues_where_it_stopped(
    phones: PhoneIndex, fake: FakeWhmcs, db: asyncpg.Pool
) -> None:
    first = await phones.sync()
    assert (first.clients, first.with_phone, first.resumed_from) == (CLIENTS, CLIENTS, 0)
    del fake.clients[7]  # gone from WHMCS before the next pass starts
    # WHMCS fails every call for clients past 150, for longer than the backoff lasts.
    fake.fail_next(
        "GetClientsDetails", FailureKind.HTML, status=503, count=10_000, where=above(150)
    )

    with pytest.raises(BillingUnavailable, match="continues from where it stopped"):
        await phones.sync()
    # A pass cut short removes nobody: not even client 7, whom it never saw.
    assert await client_of(phones, 7) == "7"

    fake.clear_failures()
    before = fake.calls[-1].seq
    done = await phones.sync()
    # The page of PAGE clients read before it stopped (1–6, 8–101) is not read again.
    saved = [n for n in range(1, CLIENTS + 1) if n != 7][:PAGE]
    assert not set(details_of(fake, before)) & set(saved)
    assert done.resumed_from == PAGE
    # One pass: everyone in WHMCS is in the index, and only client 7 was removed.
    assert (done.clients, done.with_phone, done.removed) == (CLIENTS - 1, CLIENTS - 1, 1)
    assert await client_of(phones, 7) is None
    for n in (1, 6, 8, 101, 102, 151, CLIENTS):
        assert await client_of(phones, n) == str(n)
    indexed = await db.fetchval("SELECT count(*) FROM whmcs_clients")
    assert indexed == CLIENTS - 1
    assert await whmcs_index.sync_progress(db) is None  # the pass is over


async def test_a_run_killed_midway_continues_where_it_stopped(
    phones: PhoneIndex, fake: FakeWhmcs
) -> None:
    # Clients past 150 answer too slowly to matter: the run is killed while waiting.
    fake.fail_next("GetClientsDetails", FailureKind.SLOW, delay=60, count=10_000, where=above(150))
    run = asyncio.create_task(phones.sync())
    await until("a call past client 150", lambda: any(n > 150 for n in details_of(fake)))
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    fake.clear_failures()
    before = fake.calls[-1].seq
    done = await phones.sync()
    assert not set(details_of(fake, before)) & set(range(1, PAGE + 1))
    assert (done.clients, done.resumed_from, done.removed) == (CLIENTS, PAGE, 0)
    for n in (1, PAGE, PAGE + 1, 151, CLIENTS):
        assert await client_of(phones, n) == str(n)


async def test_clients_deleted_behind_a_pass_cut_short_do_not_hide_others(
    phones: PhoneIndex, fake: FakeWhmcs
) -> None:
    fake.fail_next(
        "GetClientsDetails", FailureKind.HTML, status=503, count=10_000, where=above(150)
    )
    with pytest.raises(BillingUnavailable):
        await phones.sync()
    # Deleting clients the pass has read moves everyone after them down the list: the
    # offset where it stopped now points past clients it never read.
    for n in range(10, 21):
        del fake.clients[n]
    fake.clear_failures()
    done = await phones.sync()
    assert done.clients == CLIENTS
    for n in range(PAGE - 5, PAGE + 16):
        assert await client_of(phones, n) == str(n)


async def test_whmcs_failures_are_waited_out_with_a_growing_delay(
    phones: PhoneIndex, fake: FakeWhmcs, waits: Waits
) -> None:
    fake.fail_next("GetClients", FailureKind.HTML, status=502)
    only_5: Callable[[Any], bool] = lambda params: params.get("clientid") == "5"  # noqa: E731
    fake.fail_next("GetClientsDetails", FailureKind.HTML, status=503, where=only_5)
    fake.fail_next("GetClientsDetails", FailureKind.HTML, status=429, where=only_5)
    fake.fail_next("GetClientsDetails", FailureKind.DROP, where=only_5)

    done = await phones.sync()
    assert (done.clients, done.removed) == (CLIENTS, 0)
    assert await client_of(phones, 5) == "5"
    # GetClients: one failure (1 s). Client 5: three in a row (1 s, 2 s, then 4 s capped
    # at 3 s).
    assert waits.delays == [1, 1, 2, 3]
    assert details_of(fake).count(5) == 4


async def test_a_call_is_tried_a_bounded_number_of_times(
    phones: PhoneIndex, fake: FakeWhmcs, waits: Waits
) -> None:
    fake.fail_next("GetClientsDetails", FailureKind.HTML, status=500, count=10_000, where=above(50))
    with pytest.raises(BillingUnavailable):
        await phones.sync()
    tries = [details_of(fake).count(n) for n in range(51, PAGE + 1)]
    assert max(tries) == 4  # Backoff(tries=4)
    # Each failing call waits 1 s, 2 s, then 3 s (4 s capped); four of them at a time.
    assert sorted(set(waits.delays)) == [1, 2, 3]
    # Nothing of the failed page was saved: its clients are not in the index yet.
    assert await client_of(phones, 1) is None


async def test_whmcs_refusing_our_credentials_is_not_retried(
    db: asyncpg.Pool, fake: FakeWhmcs, waits: Waits
) -> None:
    wrong = WhmcsApi(
        fake.base_url, identifier=fake.identifier, secret="wrong", access_key="", timeout_seconds=5
    )
    phones = PhoneIndex(wrong, db, "AR", backoff=Backoff(sleep=waits))
    try:
        with pytest.raises(BillingUnavailable):
            await phones.sync()
    finally:
        await wrong.close()
    # Every wrong secret counts towards WHMCS's IP ban (three): one call, no waiting.
    assert (len(fake.calls), waits.delays) == (1, [])


async def test_one_pass_at_a_time(phones: PhoneIndex, db: asyncpg.Pool) -> None:
    async with whmcs_index.sync_lock(db) as held:
        assert held
        with pytest.raises(SyncAlreadyRunning):
            await phones.sync()
    assert (await phones.sync()).clients == CLIENTS


# -- one client, from its events --------------------------------------------------------------


async def test_refresh_follows_an_added_an_edited_and_a_deleted_client(
    phones: PhoneIndex, fake: FakeWhmcs
) -> None:
    await phones.sync()
    fake.load(clients(range(CLIENTS + 1, CLIENTS + 2)))  # ClientAdd
    assert await client_of(phones, CLIENTS + 1) is None
    added = await phones.refresh(str(CLIENTS + 1))
    assert added is not None and added.email == f"c{CLIENTS + 1}@example.com"
    assert await client_of(phones, CLIENTS + 1) == str(CLIENTS + 1)

    fake.clients[3].phonenumber = "+54.1149998877"  # ClientEdit: a new phone
    await phones.refresh("3")
    assert await client_of(phones, 3) is None
    assert await owner(phones, "5491149998877") == "3"

    del fake.clients[3]  # ClientDelete
    assert await phones.refresh("3") is None
    assert (await phones.find("5491149998877")).found is Found.NONE


async def test_a_sync_page_read_before_a_refresh_does_not_undo_it(
    phones: PhoneIndex, fake: FakeWhmcs, db: asyncpg.Pool
) -> None:
    await phones.sync()
    # A sync page asks WHMCS for client 3 now, and writes what it got after an edit of
    # client 3 has been refreshed.
    read_at = await whmcs_index.database_now(db)
    stale = await whmcs_index.indexed_client(db, "3")
    assert stale is not None
    fake.clients[3].phonenumber = "+54.1149998877"
    await phones.refresh("3")
    await whmcs_index.upsert_clients(db, [stale], read_at)
    assert await owner(phones, "5491149998877") == "3"
    assert await client_of(phones, 3) is None


# -- which phone field ----------------------------------------------------------------------


async def test_telephone_number_finds_an_international_number_on_another_country(
    db: asyncpg.Pool,
) -> None:
    async with FakeWhmcs(phone_dropdown=False) as fake:
        fake.load(
            {
                "clients": [
                    {"id": "1", "name": "Ana Sur", "email": "ana@example.com", "phone": ""},
                    {"id": "2", "name": "Luca Roma", "email": "luca@example.com", "phone": ""},
                    {"id": "3", "name": "Eva Madrid", "email": "eva@example.com", "phone": ""},
                ]
            }
        )
        # An Argentine mobile typed, without the dropdown, on a client whose country is
        # Spain: "+34.5491143218765" and the digits read in Spain are no number.
        fake.clients[1].countrycode = "ES"
        fake.clients[1].phonenumber = "+54 9 11 4321-8765"
        # Italy keeps the leading zero of its fixed lines.
        fake.clients[2].countrycode = "IT"
        fake.clients[2].phonenumber = "06 1234 5678"
        fake.clients[3].countrycode = "ES"
        fake.clients[3].phonenumber = "612 34 56 78"
        api = WhmcsApi(
            fake.base_url,
            identifier=fake.identifier,
            secret=fake.secret,
            access_key="",
            timeout_seconds=5,
        )
        try:
            phones = PhoneIndex(api, db, "AR")
            assert (await phones.sync()).with_phone == 3
            assert await owner(phones, "5491143218765") == "1"
            assert await owner(phones, "390612345678") == "2"
            assert await owner(phones, "34612345678") == "3"
        finally:
            await api.close()
