"""Our phone → client index (`whmcs_clients`, `store/whmcs_index.py`): WHMCS's API cannot
look a client up by phone, so every client's details are read into the index by `sync`
and one client's again by `refresh` (client events), and WhatsApp ids are matched there.

A sync pass costs one GetClientsDetails call per client — 50,000 calls for 50,000
clients, each one a bcrypt check of the API secret on WHMCS's side — so it is made to be
cut short: every page of clients is saved together with where the pass stands
(`whmcs_sync_progress`), and the next run goes on from there. WHMCS unreachable,
overloaded or rate-limited is waited out with a growing delay, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from bot.whmcs.api import DETAIL_CONCURRENCY, PAGE, NoAnswer, NotSent, WhmcsApi, rows
from bot.whmcs.mapping import (
    EMAIL_VERIFIED,
    VerifiedRule,
    client_from,
    client_name,
    client_phone,
)
from bot.whmcs.values import as_text, count, wid
from flows.billing import (
    NOT_FOUND,
    BillingError,
    BillingRefused,
    BillingUnavailable,
    Client,
    ClientLookup,
    Found,
)
from flows.phones import wa_id_key
from store import whmcs_index as index

log = logging.getLogger(__name__)

CLOSED = "Closed"  # WHMCS's status of a closed account


@dataclass(frozen=True, slots=True)
class SyncReport:
    clients: int  # seen in WHMCS over the whole pass
    with_phone: int  # of those, with a phone we can match WhatsApp ids on
    removed: int  # index rows of clients WHMCS no longer has
    resumed_from: int = 0  # clients an earlier run of this pass had read (0: a new pass)
    calls: int = 0  # API calls this run made, retries included
    whmcs_seconds: float = 0.0  # of this run's time, waiting for WHMCS
    database_seconds: float = 0.0  # and writing pages to the index


@dataclass(frozen=True, slots=True)
class Backoff:
    """How a sync waits out WHMCS being unreachable, answering 5xx or an error page, or
    rate-limited by a proxy or firewall in front of it (`includes/api.php` has no limit
    of its own: developers.whmcs.com/rest-api/rate-limits): each call is tried at most
    `tries` times, waiting `first` seconds after the first failure and `factor` times
    longer after each next one, never more than `cap`. `sleep` does the waiting (tests
    give one that does not)."""

    tries: int = 7
    first: float = 2.0
    factor: float = 2.0
    cap: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row of one call."""
        return min(self.cap, self.first * self.factor ** (failures - 1))


class SyncAlreadyRunning(BillingError):
    """Another process is running a sync pass: passes run one at a time (they share
    the saved progress)."""


async def client_details(api: WhmcsApi, **lookup: str) -> dict[str, Any] | None:
    """GetClientsDetails: what the index is built from, and every other read of a client;
    None when WHMCS has no such client."""
    try:
        body = await api.call("GetClientsDetails", lookup)
    except BillingRefused as refused:
        if refused.reason == NOT_FOUND:
            return None
        raise
    return _details(body)


def _details(body: dict[str, Any]) -> dict[str, Any]:
    client = body.get("client")
    # The top level repeats the details (deprecated by WHMCS, still sent).
    return client if isinstance(client, dict) else body


def indexed_client(row: index.IndexedClient) -> Client:
    """An index row as the flows' Client: its phone only when the index can match
    WhatsApp ids on it (`client_phone`)."""
    return Client(
        row.client_id,
        row.name,
        row.email,
        row.verified,
        phone=row.phone if row.phone_key is not None else "",
    )


class PhoneIndex:
    def __init__(
        self,
        api: WhmcsApi,
        pool: asyncpg.Pool,
        default_region: str,
        verified: VerifiedRule = EMAIL_VERIFIED,
        backoff: Backoff | None = None,
    ) -> None:
        self._api = api
        self._pool = pool
        self._default_region = default_region
        self._verified = verified
        self._backoff = backoff or Backoff()

    async def find(self, wa_id: str) -> ClientLookup:
        key = wa_id_key(wa_id)
        if key is None:
            return ClientLookup(Found.NONE)
        found = await index.clients_by_phone_key(self._pool, key)
        if not found:
            return ClientLookup(Found.NONE)
        if len(found) > 1:
            return ClientLookup(Found.SEVERAL)
        return ClientLookup(Found.ONE, indexed_client(found[0]))

    async def refresh(self, client_id: str) -> Client | None:
        """Re-read one client into the index: what WHMCS's client hooks call (ClientAdd,
        ClientEdit, ClientClose, ClientDelete; AfterClientMerge for both ids). A client
        the index has not seen yet is added. A client WHMCS no longer has (deleted, or
        merged into another) leaves the index; a closed one stays in it marked Closed, as
        a sync writes it, and identifies nobody (`find`). Both give None: no account to
        tell anything. What WHMCS answers is stamped with the time it was asked, so a
        sync page read earlier and written later does not undo it."""
        cid = wid(client_id)
        if cid is None:
            return None
        read_at = await index.database_now(self._pool)
        details = await client_details(self._api, clientid=cid)
        if details is None:
            await index.delete_client(self._pool, cid)
            return None
        indexed = self._indexed(cid, details)
        await index.upsert_clients(self._pool, [indexed], read_at)
        if indexed.status == CLOSED:
            return None
        return client_from(details, self._verified, region=self._default_region)

    async def sync(self) -> SyncReport:
        """Page through every WHMCS client (by id) and write their details into the phone
        index, continuing the pass a previous run left unfinished. Clients the index has
        but WHMCS no longer lists are removed only when a pass is complete. A run that
        gives up (BillingUnavailable) leaves the pages it read saved for the next."""
        async with index.sync_lock(self._pool) as held:
            if not held:
                raise SyncAlreadyRunning("another process is running a WHMCS sync")
            return await _Pass(self._api, self._pool, self._backoff, self._indexed).run()

    def _indexed(self, cid: str, details: Mapping[str, Any]) -> index.IndexedClient:
        phone, key = client_phone(details, self._default_region)
        return index.IndexedClient(
            client_id=cid,
            phone_key=key,
            phone=phone,
            name=client_name(details),
            email=as_text(details.get("email")),
            status=as_text(details.get("status")) or "Active",
            verified=self._verified(details),
        )


class _Pass:
    """One run of a sync pass: reads WHMCS page by page, saving each page with the
    progress, and counts what the run cost."""

    def __init__(
        self,
        api: WhmcsApi,
        pool: asyncpg.Pool,
        backoff: Backoff,
        indexed: Callable[[str, Mapping[str, Any]], index.IndexedClient],
    ) -> None:
        self._api = api
        self._pool = pool
        self._backoff = backoff
        self._indexed = indexed
        self._calls = 0
        self._whmcs_seconds = 0.0
        self._database_seconds = 0.0

    async def run(self) -> SyncReport:
        progress = await index.begin_sync(self._pool)
        resumed_from = progress.clients
        if resumed_from:
            log.info(
                "WHMCS sync: resuming the pass started at %s, %d clients already read",
                progress.started_at.isoformat(timespec="seconds"),
                resumed_from,
            )
        total = 0
        while True:
            try:
                progress, total, more = await self._page(progress)
            except BillingError:
                log.warning(
                    "WHMCS sync stopped after %d clients; the next run continues from there",
                    progress.clients,
                )
                raise
            if not more:
                break
        complete = progress.clients >= total
        if not complete:
            # WHMCS listed more clients than the pass read (its list is not in id
            # order?): an incomplete pass must not drop anyone from the index.
            log.warning("WHMCS sync read %d of %d clients; nobody removed", progress.clients, total)
        removed = await index.finish_sync(self._pool, remove_unseen=complete)
        log.info(
            "WHMCS sync: %d clients, %d with a phone, %d removed (%d API calls in this run)",
            progress.clients,
            progress.with_phone,
            removed,
            self._calls,
        )
        return SyncReport(
            clients=progress.clients,
            with_phone=progress.with_phone,
            removed=removed,
            resumed_from=resumed_from,
            calls=self._calls,
            whmcs_seconds=round(self._whmcs_seconds, 3),
            database_seconds=round(self._database_seconds, 3),
        )

    async def _page(self, progress: index.SyncProgress) -> tuple[index.SyncProgress, int, bool]:
        """Read and save the page after `progress`: the progress then, how many clients
        WHMCS lists, and whether there are more."""
        # A page starts at the last client read, so that it shows whether clients before
        # it were deleted since (the offsets then moved down past someone): if so, step
        # back until it does.
        start = max(progress.next_offset - 1, 0)
        started = time.monotonic()
        listed = await self._read(
            "GetClients",
            {"limitstart": start, "limitnum": PAGE, "orderby": "id", "sorting": "ASC"},
        )
        self._whmcs_seconds += time.monotonic() - started
        page = rows(listed, "clients", "client")
        ids = [cid for cid in (wid(r.get("id")) for r in page) if cid is not None]
        total = count(listed.get("totalresults"), default=start + len(page))
        if start > 0 and (not ids or int(ids[0]) > progress.last_client_id):
            return replace(progress, next_offset=max(progress.next_offset - PAGE, 0)), total, True

        new = [cid for cid in ids if int(cid) > progress.last_client_id]
        started = time.monotonic()
        read_at = await index.database_now(self._pool)
        self._database_seconds += time.monotonic() - started
        started = time.monotonic()
        found = await self._details(new)
        self._whmcs_seconds += time.monotonic() - started
        indexed = [self._indexed(cid, details) for cid, details in found if details is not None]
        gone = [cid for cid, details in found if details is None]
        progress = replace(
            progress,
            next_offset=start + len(page),
            last_client_id=max([progress.last_client_id, *(int(cid) for cid in ids)]),
            clients=progress.clients + len(new),
            with_phone=progress.with_phone + sum(c.phone_key is not None for c in indexed),
        )
        started = time.monotonic()
        await index.save_sync_page(self._pool, indexed, gone, read_at, progress)
        self._database_seconds += time.monotonic() - started
        return progress, total, len(page) == PAGE and progress.next_offset < total

    async def _details(self, ids: Sequence[str]) -> list[tuple[str, dict[str, Any] | None]]:
        """Each client's details (None: WHMCS no longer has it), DETAIL_CONCURRENCY
        calls at a time. The first call that fails for good stops the others."""
        gate = asyncio.Semaphore(DETAIL_CONCURRENCY)

        async def one(cid: str) -> tuple[str, dict[str, Any] | None]:
            async with gate:
                try:
                    body = await self._read("GetClientsDetails", {"clientid": cid})
                except BillingRefused as refused:
                    if refused.reason == NOT_FOUND:
                        return cid, None
                    log.error("WHMCS refused the details of client %s: %s", cid, refused)
                    raise
            return cid, _details(body)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(cid)) for cid in ids]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    async def _read(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One read, tried again after a growing delay while WHMCS cannot be reached or
        gives no usable answer (5xx, an error page, a proxy's 429). WHMCS refusing us
        (credentials, IP, API role: a 403) is not tried again: it will not pass by
        itself, and every wrong secret counts towards WHMCS's IP ban."""
        failures = 0
        while True:
            self._calls += 1
            try:
                return await self._api.post(action, params)
            except (NotSent, NoAnswer) as e:
                failures += 1
                if failures >= self._backoff.tries:
                    log.warning("WHMCS %s: %s; giving up after %d tries", action, e, failures)
                    raise BillingUnavailable(
                        f"WHMCS {action}: {e} ({failures} tries); the sync continues from "
                        "where it stopped next time"
                    ) from None
                delay = self._backoff.delay(failures)
                log.warning("WHMCS %s: %s; trying again in %.1f s", action, e, delay)
                await self._backoff.sleep(delay)
