"""Our phone → client index (`whmcs_clients`, `store/whmcs_index.py`): WHMCS's API cannot
look a client up by phone, so every client's details are read into the index by `sync`
and one client's again by `refresh` (client events), and WhatsApp ids are matched there."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from bot.whmcs.api import DETAIL_CONCURRENCY, PAGE, WhmcsApi, rows
from bot.whmcs.mapping import EMAIL_VERIFIED, VerifiedRule, client_from, client_name
from bot.whmcs.values import as_text, count, wid
from flows.billing import NOT_FOUND, BillingRefused, Client, ClientLookup, Found
from flows.phones import phone_key, wa_id_key
from store import whmcs_index as index

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SyncReport:
    clients: int  # seen in WHMCS
    with_phone: int  # of those, with a phone we can match WhatsApp ids on
    removed: int  # index rows of clients WHMCS no longer has


async def client_details(api: WhmcsApi, **lookup: str) -> dict[str, Any] | None:
    """GetClientsDetails: what the index is built from, and every other read of a client;
    None when WHMCS has no such client."""
    try:
        body = await api.call("GetClientsDetails", lookup)
    except BillingRefused as refused:
        if refused.reason == NOT_FOUND:
            return None
        raise
    client = body.get("client")
    # The top level repeats the details (deprecated by WHMCS, still sent).
    return client if isinstance(client, dict) else body


class PhoneIndex:
    def __init__(
        self,
        api: WhmcsApi,
        pool: asyncpg.Pool,
        default_region: str,
        verified: VerifiedRule = EMAIL_VERIFIED,
    ) -> None:
        self._api = api
        self._pool = pool
        self._default_region = default_region
        self._verified = verified

    async def find(self, wa_id: str) -> ClientLookup:
        key = wa_id_key(wa_id)
        if key is None:
            return ClientLookup(Found.NONE)
        found = await index.clients_by_phone_key(self._pool, key)
        if not found:
            return ClientLookup(Found.NONE)
        if len(found) > 1:
            return ClientLookup(Found.SEVERAL)
        row = found[0]
        return ClientLookup(Found.ONE, Client(row.client_id, row.name, row.email, row.verified))

    async def refresh(self, client_id: str) -> Client | None:
        """Re-read one client into the phone index (events `client.created`,
        `client.updated`); a client WHMCS no longer has leaves the index."""
        cid = wid(client_id)
        if cid is None:
            return None
        details = await client_details(self._api, clientid=cid)
        if details is None:
            await index.delete_client(self._pool, cid)
            return None
        await index.upsert_client(self._pool, self._indexed(cid, details))
        return client_from(details, self._verified)

    async def sync(self) -> SyncReport:
        """Page through every WHMCS client and rebuild the phone index from their
        details. Clients the index has but WHMCS no longer lists are removed, only after
        a complete pass."""
        started = await index.database_now(self._pool)
        seen: set[str] = set()
        with_phone = 0
        total = 0
        gate = asyncio.Semaphore(DETAIL_CONCURRENCY)

        async def one(cid: str) -> bool:
            async with gate:
                details = await client_details(self._api, clientid=cid)
            if details is None:
                await index.delete_client(self._pool, cid)
                return False
            indexed = self._indexed(cid, details)
            await index.upsert_client(self._pool, indexed)
            return indexed.phone_key is not None

        start = 0
        while True:
            body = await self._api.call(
                "GetClients",
                {"limitstart": start, "limitnum": PAGE, "orderby": "id", "sorting": "ASC"},
            )
            page = rows(body, "clients", "client")
            total = count(body.get("totalresults"), default=0)
            ids = [cid for cid in (wid(r.get("id")) for r in page) if cid is not None]
            results = await asyncio.gather(*(one(cid) for cid in ids if cid not in seen))
            with_phone += sum(results)
            seen.update(ids)
            start += len(page)
            if not page or start >= total:
                break
        removed = 0
        if len(seen) >= total:
            removed = await index.remove_not_synced_since(self._pool, started)
        else:
            # Clients were added or removed while paging: an incomplete pass must not
            # drop anyone from the index.
            log.warning("WHMCS sync saw %d of %d clients; nobody removed", len(seen), total)
        log.info(
            "WHMCS sync: %d clients, %d with a phone, %d removed", len(seen), with_phone, removed
        )
        return SyncReport(len(seen), with_phone, removed)

    def _indexed(self, cid: str, details: Mapping[str, Any]) -> index.IndexedClient:
        phone, key = self._phone_of(details)
        return index.IndexedClient(
            client_id=cid,
            phone_key=key,
            phone=phone,
            name=client_name(details),
            email=as_text(details.get("email")),
            status=as_text(details.get("status")) or "Active",
            verified=self._verified(details),
        )

    def _phone_of(self, details: Mapping[str, Any]) -> tuple[str, str | None]:
        """The phone as WHMCS gives it and its key. WHMCS stores "+54.1155551234" (its
        phone dropdown) or what was typed, and builds `phonenumberformatted` as
        "+<calling code of the client's country>.<the digits>": right for the dropdown
        and for national numbers, nonsense for an international number typed without
        the dropdown ("+54 11…" becomes "+54.5411…"). When that is not a possible number,
        the typed digits are read in the client's country."""
        formatted = as_text(details.get("phonenumberformatted"))
        typed = as_text(details.get("phonenumber"))
        country = as_text(details.get("countrycode")) or self._default_region
        key = None
        if formatted.startswith("+"):
            key = phone_key(formatted.replace(".", " "), country)
        if key is None and typed:
            key = phone_key(typed, country)
        return formatted or typed, key
