"""The WHMCS backend (`BILLING_BACKEND=whmcs`): the `Billing` interface over WHMCS's
HTTP API (`POST <WHMCS_URL>/includes/api.php`, form-encoded, `responsetype=json`).

What WHMCS's API cannot do is made up for here:

- No lookup by phone: a phone → client index in our database (`store/whmcs_index.py`),
  filled by `sync_clients()` and refreshed per client by `refresh_client()` (client
  events).
- No upgrade paths in GetProducts: they are read from `WHMCS_UPGRADES_FILE`
  (`config/whmcs_upgrades.toml` documents its format).
- No moving a service to another client: a transfer that passes the checks needs staff.
- No idempotency key: UpgradeProduct and AddCancelRequest are recorded in
  `whmcs_requests` before they are sent and are never sent twice for one request id.

Request parameters and answer fields follow developers.whmcs.com/api-reference/<action>,
checked against WHMCS 8.7's own `includes/api/*.php` (the documentation leaves out most
answer fields and the quirks: empty lists as `""`, GetInvoice's `"status": "error"`,
numbers sometimes as strings).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Self, TypeVar

import aiohttp
import asyncpg

from bot.config import ConfigError, Settings
from flows.billing import (
    ALREADY_REQUESTED,
    CYCLE_NOT_SOLD,
    NOT_FOUND,
    NOT_OFFERED,
    NOT_VERIFIED,
    SAME_CLIENT,
    SERVICE_NOT_ACTIVE,
    UNPAID_INVOICES,
    BillingError,
    BillingRefused,
    BillingUnavailable,
    CancellationKind,
    CancellationRequest,
    Category,
    Client,
    ClientLookup,
    Domain,
    Found,
    Invoice,
    OutcomeUnknown,
    PlacedUpgrade,
    Product,
    Service,
    TransferResult,
    UpgradeOption,
    ensure_upgradable,
    offerable,
    upgrade_quote,
)
from flows.phones import phone_key, wa_id_key
from flows.pricing import (
    CENT,
    CYCLE_MONTHS,
    Policy,
    UpgradeQuote,
    add_months,
)
from store import whmcs_index as index

if TYPE_CHECKING:
    from flows.billing import Billing

log = logging.getLogger(__name__)

# The API actions this adapter calls: the WHMCS API role needs exactly these.
ACTIONS = (
    "GetClients",
    "GetClientsDetails",
    "GetClientsProducts",
    "GetProducts",
    "GetInvoices",
    "GetInvoice",
    "UpgradeProduct",
    "AddCancelRequest",
    "GetClientsDomains",
    "UpdateClientDomain",
)

# Reasons of BillingRefused specific to WHMCS (the flows treat unknown reasons as "a
# person will look at it").
WHMCS_ERROR = "whmcs_error"  # WHMCS said no for a reason we do not map; see `detail`

_PAGE = 100
_CATALOG_TTL = 300.0  # seconds: prices and products change rarely
_DETAIL_CONCURRENCY = 4  # parallel GetClientsDetails / GetInvoice calls
_INVOICE_SERVICES_KEPT = 50_000  # invoice → service, remembered (a few MB at most)

_CYCLES = {
    "Monthly": "monthly",
    "Quarterly": "quarterly",
    "Semi-Annually": "semiannually",
    "Annually": "annually",
    "Biennially": "biennially",
    "Triennially": "triennially",
}
# Not recurring: shown as they are, never upgraded automatically.
_OTHER_CYCLES = {"Free Account": "free", "Free": "free", "One Time": "onetime"}
_SERVICE_STATUSES = {
    "Pending": "pending",
    "Active": "active",
    "Suspended": "suspended",
    "Cancelled": "cancelled",
    "Terminated": "terminated",
    "Fraud": "cancelled",  # an order marked fraud never ran
    "Completed": "terminated",  # a one-off service that has ended
}
# Draft invoices are not the customer's yet: they are left out.
_INVOICE_STATUSES = {
    "Unpaid": "unpaid",
    "Payment Pending": "unpaid",
    "Collections": "unpaid",
    "Paid": "paid",
    "Cancelled": "cancelled",
    "Refunded": "cancelled",
}
_KINDS = {
    CancellationKind.IMMEDIATE: "Immediate",
    CancellationKind.END_OF_PERIOD: "End of Billing Period",
}
# Errors that mean our credentials, API role, IP allow-list or URL are wrong: our
# misconfiguration, not the customer's request.
_AUTH_ERRORS = (
    "authentication failed",
    "invalid or missing credentials",
    "invalid ip",
    "invalid permissions",
    "invalid access key",
    "ip banned",
    "access denied",
    "invalid api action",
)
_NOT_FOUND_ERRORS = (
    "client not found",
    "client id not found",
    "service id not found",
    "invoice id not found",
    "domain id not found",
)
_REFUSALS = (
    ("previous upgrade invoice for service is still unpaid", UNPAID_INVOICES),
    ("existing cancellation request exists", ALREADY_REQUESTED),
    ("invalid billing cycle requested", CYCLE_NOT_SOLD),
    ("invalid new product id", NOT_OFFERED),
)
_CREDENTIALS = frozenset({"identifier", "secret", "accesskey"})

T = TypeVar("T")


class _NotSent(Exception):
    """The request never reached WHMCS (connection refused, DNS, connect timeout)."""


class _NoAnswer(Exception):
    """The request left but no usable answer came back: WHMCS may have acted."""

    def __init__(self, reason: str, *, connection_lost: bool = False) -> None:
        super().__init__(reason)
        # A dropped connection (not a timeout): a read may be tried once more.
        self.connection_lost = connection_lost


@dataclass(frozen=True, slots=True)
class UpgradePaths:
    """`WHMCS_UPGRADES_FILE`: pid → the pids it can move to, and product group names."""

    targets: Mapping[str, tuple[str, ...]]
    categories: Mapping[str, str]

    @classmethod
    def load(cls, path: Path) -> UpgradePaths:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"WHMCS_UPGRADES_FILE {path} does not exist") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"WHMCS_UPGRADES_FILE {path}: {e}") from None
        upgrades = data.get("upgrades", {})
        categories = data.get("categories", {})
        if not isinstance(upgrades, dict) or not isinstance(categories, dict):
            raise ConfigError(f"{path}: [upgrades] and [categories] must be tables")
        targets: dict[str, tuple[str, ...]] = {}
        for pid, listed in upgrades.items():
            if not _is_id(pid) or not isinstance(listed, list):
                raise ConfigError(f'{path}: [upgrades] "{pid}" must be a pid = a list of pids')
            if not all(isinstance(t, str | int) and _is_id(str(t)) for t in listed):
                raise ConfigError(f'{path}: [upgrades] "{pid}" lists something not a pid')
            targets[pid] = tuple(str(t) for t in listed)
        names: dict[str, str] = {}
        for gid, name in categories.items():
            if not _is_id(gid) or not isinstance(name, str) or not name.strip():
                raise ConfigError(f'{path}: [categories] "{gid}" must be a gid = a name')
            names[gid] = name.strip()
        return cls(targets, names)

    def category(self, gid: str) -> Category:
        return Category(gid, self.categories.get(gid, f"Grupo {gid}"))


@dataclass(frozen=True, slots=True)
class SyncReport:
    clients: int  # seen in WHMCS
    with_phone: int  # of those, with a phone we can match WhatsApp ids on
    removed: int  # index rows of clients WHMCS no longer has


@dataclass(frozen=True, slots=True)
class _CatalogProduct:
    pid: str
    gid: str
    name: str
    paytype: str
    # Currency code → cycle → price, only the cycles it is sold in.
    pricing: Mapping[str, Mapping[str, Decimal]]


@dataclass(frozen=True, slots=True)
class _OwnedService:
    service: Service
    payment_method: str  # the gateway WHMCS bills this service through


class WhmcsBilling:
    """`Billing` over WHMCS's API. Build it once per process and `close()` it at
    shutdown (it holds one HTTP session)."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        upgrade_paths: UpgradePaths | None = None,
    ) -> None:
        if not settings.whmcs_url or not settings.whmcs_identifier or not settings.whmcs_secret:
            raise ConfigError("WHMCS_URL, WHMCS_IDENTIFIER and WHMCS_SECRET are required")
        self.pool = pool
        self.base_url = settings.whmcs_url.rstrip("/")
        self.policy = Policy(settings.upgrade_pricing)
        self.default_region = settings.default_region
        self.paths = upgrade_paths or UpgradePaths.load(settings.whmcs_upgrades_file)
        self._api_url = f"{self.base_url}/includes/api.php"
        self._credentials = {
            "identifier": settings.whmcs_identifier,
            "secret": settings.whmcs_secret,
        }
        if settings.whmcs_access_key:
            self._credentials["accesskey"] = settings.whmcs_access_key
        self._timeout = aiohttp.ClientTimeout(total=settings.whmcs_timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._catalog_cache: tuple[float, dict[str, _CatalogProduct]] | None = None
        self._catalog_lock = asyncio.Lock()
        self._invoice_services: dict[str, str | None] = {}

    def __repr__(self) -> str:
        return f"WhmcsBilling({self.base_url!r})"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- who is writing ---------------------------------------------------------------

    async def find_client_by_phone(self, wa_id: str) -> ClientLookup:
        key = wa_id_key(wa_id)
        if key is None:
            return ClientLookup(Found.NONE)
        found = await index.clients_by_phone_key(self.pool, key)
        if not found:
            return ClientLookup(Found.NONE)
        if len(found) > 1:
            return ClientLookup(Found.SEVERAL)
        row = found[0]
        return ClientLookup(Found.ONE, Client(row.client_id, row.name, row.email, row.verified))

    async def get_client(self, client_id: str) -> Client | None:
        cid = _wid(client_id)
        if cid is None:
            return None
        details = await self._client_details(clientid=cid)
        return None if details is None else _client(details)

    async def find_client_by_email(self, email: str) -> Client | None:
        if not email.strip():
            return None
        details = await self._client_details(email=email.strip())
        return None if details is None else _client(details)

    async def refresh_client(self, client_id: str) -> Client | None:
        """Re-read one client into the phone index (events `client.created`,
        `client.updated`); a client WHMCS no longer has leaves the index."""
        cid = _wid(client_id)
        if cid is None:
            return None
        details = await self._client_details(clientid=cid)
        if details is None:
            await index.delete_client(self.pool, cid)
            return None
        await index.upsert_client(self.pool, self._indexed(cid, details))
        return _client(details)

    async def sync_clients(self) -> SyncReport:
        """Page through every WHMCS client and rebuild the phone index from their
        details. Clients the index has but WHMCS no longer lists are removed, only after
        a complete pass."""
        started = await index.database_now(self.pool)
        seen: set[str] = set()
        with_phone = 0
        total = 0
        gate = asyncio.Semaphore(_DETAIL_CONCURRENCY)

        async def one(cid: str) -> bool:
            async with gate:
                details = await self._client_details(clientid=cid)
            if details is None:
                await index.delete_client(self.pool, cid)
                return False
            indexed = self._indexed(cid, details)
            await index.upsert_client(self.pool, indexed)
            return indexed.phone_key is not None

        start = 0
        while True:
            body = await self._call(
                "GetClients",
                {"limitstart": start, "limitnum": _PAGE, "orderby": "id", "sorting": "ASC"},
            )
            rows = _rows(body, "clients", "client")
            total = _count(body.get("totalresults"), default=0)
            ids = [cid for cid in (_wid(r.get("id")) for r in rows) if cid is not None]
            results = await asyncio.gather(*(one(cid) for cid in ids if cid not in seen))
            with_phone += sum(results)
            seen.update(ids)
            start += len(rows)
            if not rows or start >= total:
                break
        removed = 0
        if len(seen) >= total:
            removed = await index.remove_not_synced_since(self.pool, started)
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
            name=_name(details),
            email=_text(details.get("email")),
            status=_text(details.get("status")) or "Active",
            verified=_truthy(details.get("email_verified")),
        )

    def _phone_of(self, details: Mapping[str, Any]) -> tuple[str, str | None]:
        """The phone as WHMCS gives it and its key. WHMCS stores "+54.1155551234" (its
        phone dropdown) or what was typed, and builds `phonenumberformatted` as
        "+<calling code of the client's country>.<the digits>": right for the dropdown
        and for national numbers, nonsense for an international number typed without
        the dropdown ("+54 11…" becomes "+54.5411…"). When that is not a possible number,
        the typed digits are read in the client's country."""
        formatted = _text(details.get("phonenumberformatted"))
        typed = _text(details.get("phonenumber"))
        country = _text(details.get("countrycode")) or self.default_region
        key = None
        if formatted.startswith("+"):
            key = phone_key(formatted.replace(".", " "), country)
        if key is None and typed:
            key = phone_key(typed, country)
        return formatted or typed, key

    async def _client_details(self, **lookup: str) -> dict[str, Any] | None:
        try:
            body = await self._call("GetClientsDetails", lookup)
        except BillingRefused as refused:
            if refused.reason == NOT_FOUND:
                return None
            raise
        client = body.get("client")
        # The top level repeats the details (deprecated by WHMCS, still sent).
        return client if isinstance(client, dict) else body

    # -- what they have ----------------------------------------------------------------

    async def list_services(self, client_id: str) -> list[Service]:
        cid = _wid(client_id)
        if cid is None:
            return []
        rows = await self._pages("GetClientsProducts", {"clientid": cid}, "products", "product")
        catalog = await self._catalog_or_empty()
        owned = [r for r in rows if _text(r.get("clientid")) == cid]
        return sorted((self._service(r, catalog) for r in owned), key=lambda s: int(s.id))

    async def get_service(self, client_id: str, service_id: str) -> Service | None:
        owned = await self._owned_service(client_id, service_id)
        return None if owned is None else owned.service

    async def list_invoices(
        self, client_id: str, *, service_id: str | None = None, status: str | None = None
    ) -> list[Invoice]:
        cid = _wid(client_id)
        if cid is None:
            return []
        rows = await self._pages("GetInvoices", {"userid": cid}, "invoices", "invoice")
        invoices = [
            invoice
            for invoice in (_invoice(r, cid) for r in rows if _text(r.get("userid")) == cid)
            if invoice is not None and (status is None or invoice.status == status)
        ]
        sid = None if service_id is None else _wid(service_id)
        if service_id is not None and sid is None:
            return []
        # GetInvoices has no items: the service an invoice bills comes from GetInvoice.
        services = await _bounded(
            [functools.partial(self._invoice_service, cid, i.id) for i in invoices],
            _DETAIL_CONCURRENCY,
        )
        invoices = [
            replace(i, service_id=s)
            for i, s in zip(invoices, services, strict=True)
            if sid is None or s == sid
        ]
        return sorted(invoices, key=lambda i: (i.due or date.max, int(i.id)))

    async def list_domains(self, client_id: str) -> list[Domain]:
        cid = _wid(client_id)
        if cid is None:
            return []
        rows = await self._pages("GetClientsDomains", {"clientid": cid}, "domains", "domain")
        domains = [_domain(r) for r in rows if _text(r.get("userid")) == cid]
        return sorted(domains, key=lambda d: d.name)

    async def invoice_link(self, client_id: str, invoice_id: str) -> str:
        """The invoice's page in the customer panel (they log in to see it). Not an SSO
        link: WHMCS's tokens last 60 seconds and log whoever holds them into the whole
        account, and a WhatsApp message is read later and may be forwarded."""
        cid, iid = _wid(client_id), _wid(invoice_id)
        if cid is None or iid is None:
            raise BillingRefused(NOT_FOUND, f"invoice {invoice_id}")
        body = await self._invoice_detail(iid)
        if body is None or _text(body.get("userid")) != cid:
            raise BillingRefused(NOT_FOUND, f"invoice {invoice_id}")
        return self._invoice_url(iid)

    def _invoice_url(self, invoice_id: str) -> str:
        return f"{self.base_url}/viewinvoice.php?id={invoice_id}"

    async def _invoice_detail(self, invoice_id: str) -> dict[str, Any] | None:
        try:
            return await self._call("GetInvoice", {"invoiceid": invoice_id})
        except BillingRefused as refused:
            if refused.reason == NOT_FOUND:
                return None
            raise

    async def _invoice_service(self, client_id: str, invoice_id: str) -> str | None:
        """The service an invoice bills: its hosting line, or the upgrade we placed.
        Kept once known: an invoice's lines do not move to another service."""
        if invoice_id in self._invoice_services:
            return self._invoice_services[invoice_id]
        body = await self._invoice_detail(invoice_id)
        service_id = None
        for item in _rows(body or {}, "items", "item"):
            if _text(item.get("type")) == "Hosting":
                service_id = _wid(item.get("relid"))
            elif _text(item.get("type")) == "Upgrade":
                service_id = await index.upgrade_invoice_service(self.pool, client_id, invoice_id)
            if service_id is not None:
                break
        if body is not None:
            if len(self._invoice_services) >= _INVOICE_SERVICES_KEPT:
                self._invoice_services.clear()
            self._invoice_services[invoice_id] = service_id
        return service_id

    # -- upgrades -----------------------------------------------------------------------

    async def upgrade_options(self, client_id: str, service_id: str) -> list[UpgradeOption]:
        owned = await self._own_service(client_id, service_id)
        service = owned.service
        ensure_upgradable(service)
        if service.billing_cycle not in CYCLE_MONTHS:
            return []
        catalog = await self._catalog()
        currency = await self._currency(client_id)
        products = [
            self._product(catalog[pid], currency)
            for pid in self.paths.targets.get(service.product_id, ())
            if pid in catalog
        ]
        # Only packages priced above the current one are upgrades (the help page); with
        # pro-rata the cycle stays, so a package must be sold in it.
        products = [p for p in products if offerable(self.policy, service, p)]
        by_category: dict[str, list[Product]] = {}
        for product in products:
            by_category.setdefault(product.category_id, []).append(product)
        options = [
            UpgradeOption(self.paths.category(gid), tuple(sorted(found, key=lambda p: p.name)))
            for gid, found in by_category.items()
        ]
        return sorted(options, key=lambda o: o.category.name)

    async def quote_upgrade(
        self, client_id: str, service_id: str, product_id: str, cycle: str, *, today: date
    ) -> UpgradeQuote:
        """Our policy's amount (`UPGRADE_PRICING`), after WHMCS's own calculation
        (calconly) said it would accept the upgrade."""
        owned, product = await self._upgrade_target(client_id, service_id, product_id)
        quote = self._quote(owned.service, product, cycle, today)
        await self._whmcs_calculation(owned, product, cycle, quote)
        return quote

    async def place_upgrade(
        self,
        client_id: str,
        service_id: str,
        product_id: str,
        cycle: str,
        *,
        today: date,
        request_id: str,
    ) -> PlacedUpgrade:
        """UpgradeProduct for real: WHMCS creates the order and its invoice and applies
        the upgrade once the invoice is paid. Sent at most once per request id.

        The invoice's amount is WHMCS's to compute: its own pro-rata, or with the
        README's PreUpgradeCheckout hook the help page's difference. The invoice
        returned is the one WHMCS made; when it bills other than the quote, a warning
        says so (the customer was shown the quote)."""
        action = "UpgradeProduct"
        recorded = await index.request_record(self.pool, request_id, action)
        if recorded is not None:
            return _placed_from(_recorded_result(recorded))
        owned, product = await self._upgrade_target(client_id, service_id, product_id)
        quote = self._quote(owned.service, product, cycle, today)
        await self._whmcs_calculation(owned, product, cycle, quote)
        sid = owned.service.id
        params: dict[str, Any] = {
            "serviceid": sid,
            "type": "product",
            "newproductid": product.id,
            "newproductbillingcycle": cycle,
            "paymentmethod": owned.payment_method,
        }
        claimed = await index.claim_request(self.pool, request_id, action, client_id, params)
        if claimed is not None:  # a twin of this request got there first
            return _placed_from(_recorded_result(claimed))
        body = await self._send_once(request_id, action, params)
        invoice_id = _wid(body.get("invoiceid"))
        result: dict[str, Any] = {
            "service_id": sid,
            "order_id": _text(body.get("orderid")),
            "invoice_id": invoice_id,
            "quote": _quote_json(quote),
            "product": _product_json(product),
        }
        if invoice_id is None:
            # Nothing to pay, so WHMCS made no invoice: the link shows the service.
            result["invoice"] = _invoice_json(
                Invoice("", client_id, sid, Decimal("0.00"), "paid", today)
            )
            result["invoice_url"] = f"{self.base_url}/clientarea.php?action=productdetails&id={sid}"
            await index.finish_request(self.pool, request_id, action, result)
            return _placed_from(result)
        # Recorded before anything else can fail: a repeat must get this, not a new order.
        result["invoice"] = _invoice_json(
            Invoice(invoice_id, client_id, sid, quote.amount, "unpaid", today)
        )
        result["invoice_url"] = self._invoice_url(invoice_id)
        await index.finish_request(self.pool, request_id, action, result)
        self._invoice_services[invoice_id] = sid
        invoice = await self._created_invoice(client_id, sid, invoice_id, quote)
        if invoice is not None:
            result["invoice"] = _invoice_json(invoice)
            await index.finish_request(self.pool, request_id, action, result)
        return _placed_from(result)

    async def _created_invoice(
        self, client_id: str, service_id: str, invoice_id: str, quote: UpgradeQuote
    ) -> Invoice | None:
        """The upgrade invoice as WHMCS made it (its total, taxes included, and due
        date), or None if it cannot be read now: the upgrade is placed either way."""
        try:
            detail = await self._invoice_detail(invoice_id)
            invoice = None
            if detail is not None:
                invoice = _invoice(detail, client_id, invoice_id=invoice_id, service_id=service_id)
            if detail is None or invoice is None:
                return None
            subtotal = _money(detail.get("subtotal", detail.get("total")))
        except BillingError as e:
            log.warning("WHMCS invoice %s was created; reading it failed: %s", invoice_id, e)
            return None
        if abs(subtotal - quote.amount) > CENT:
            log.warning(
                "WHMCS invoice %s bills %s for the upgrade of service %s; the customer was "
                "quoted %s (%s policy): WHMCS's upgrade pricing differs from ours",
                invoice_id,
                subtotal,
                service_id,
                quote.amount,
                quote.policy.value,
            )
        return invoice

    async def _upgrade_target(
        self, client_id: str, service_id: str, product_id: str
    ) -> tuple[_OwnedService, Product]:
        owned = await self._own_service(client_id, service_id)
        service = owned.service
        ensure_upgradable(service)
        if service.billing_cycle not in CYCLE_MONTHS:
            raise BillingRefused(NOT_OFFERED, f"{service.id} is billed {service.billing_cycle}")
        if product_id not in self.paths.targets.get(service.product_id, ()):
            raise BillingRefused(NOT_OFFERED, f"{service.product_id} → {product_id}")
        catalog = await self._catalog()
        if product_id not in catalog:
            log.warning("WHMCS_UPGRADES_FILE lists pid %s, which WHMCS does not have", product_id)
            raise BillingRefused(NOT_OFFERED, f"no product {product_id}")
        return owned, self._product(catalog[product_id], await self._currency(client_id))

    def _quote(self, service: Service, product: Product, cycle: str, today: date) -> UpgradeQuote:
        return upgrade_quote(self.policy, service, product, cycle, today=today)

    async def _whmcs_calculation(
        self, owned: _OwnedService, product: Product, cycle: str, quote: UpgradeQuote
    ) -> None:
        """UpgradeProduct with calconly: WHMCS refuses what it would refuse for real (a
        cycle it does not sell, an unpaid upgrade invoice already pending) without
        creating anything."""
        body = await self._call(
            "UpgradeProduct",
            {
                "serviceid": owned.service.id,
                "calconly": "true",
                "type": "product",
                "newproductid": product.id,
                "newproductbillingcycle": cycle,
                "paymentmethod": owned.payment_method,
            },
        )
        if _truthy(body.get("upgradeinprogress")):
            raise BillingRefused(UNPAID_INVOICES, "a previous upgrade invoice is still unpaid")
        whmcs_price = _formatted_money(_text(body.get("price")))
        # WHMCS's calculation is pro-rata; a difference means a configurable option, a
        # promotion or a hook changes the price: staff should know what WHMCS will bill.
        if (
            self.policy is Policy.PRORATA
            and whmcs_price is not None
            and abs(whmcs_price - quote.amount) > CENT
        ):
            log.warning(
                "WHMCS calculates %s for upgrading service %s to %s %s; our pro-rata says %s",
                whmcs_price,
                owned.service.id,
                product.id,
                cycle,
                quote.amount,
            )

    # -- cancellations, domains, transfers ---------------------------------------------

    async def request_cancellation(
        self,
        client_id: str,
        service_id: str,
        kind: CancellationKind,
        reason: str,
        *,
        request_id: str,
    ) -> CancellationRequest:
        action = "AddCancelRequest"
        recorded = await index.request_record(self.pool, request_id, action)
        if recorded is not None:
            return _cancellation_from(_recorded_result(recorded))
        owned = await self._own_service(client_id, service_id)
        params = {"serviceid": owned.service.id, "type": _KINDS[kind], "reason": reason}
        claimed = await index.claim_request(self.pool, request_id, action, client_id, params)
        if claimed is not None:  # a twin of this request got there first
            return _cancellation_from(_recorded_result(claimed))
        await self._send_once(request_id, action, params)
        result = {
            "id": request_id,
            "service_id": owned.service.id,
            "kind": kind.value,
            "reason": reason,
            "requested_at": datetime.now(UTC).isoformat(),
        }
        await index.finish_request(self.pool, request_id, action, result)
        return _cancellation_from(result)

    async def stop_domain_renewal(self, client_id: str, domain_id: str) -> Domain:
        cid, did = _wid(client_id), _wid(domain_id)
        if cid is None or did is None:
            raise BillingRefused(NOT_FOUND, f"domain {domain_id}")
        rows = await self._pages(
            "GetClientsDomains", {"clientid": cid, "domainid": did}, "domains", "domain"
        )
        mine = [r for r in rows if _text(r.get("id")) == did and _text(r.get("userid")) == cid]
        if not mine:
            raise BillingRefused(NOT_FOUND, f"domain {domain_id}")
        # Setting a flag: repeating it is harmless, so it is retried and never "unknown".
        await self._call("UpdateClientDomain", {"domainid": did, "donotrenew": "1"})
        return replace(_domain(mine[0]), auto_renew=False)

    async def transfer_service(
        self, client_id: str, service_id: str, to_client_id: str, *, request_id: str
    ) -> TransferResult:
        """The help page's checks; WHMCS's API cannot move a service between clients, so
        one that passes them needs staff. A service already the destination's was moved."""
        owned = await self._owned_service(client_id, service_id)
        if owned is None:
            if client_id != to_client_id and await self._owned_service(to_client_id, service_id):
                return TransferResult.DONE
            raise BillingRefused(NOT_FOUND, f"service {service_id}")
        if _wid(to_client_id) == _wid(client_id):
            raise BillingRefused(SAME_CLIENT)
        origin = await self.get_client(client_id)
        destination = await self.get_client(to_client_id)
        if origin is None or destination is None:
            raise BillingRefused(NOT_FOUND, "client")
        if not (origin.verified and destination.verified):
            raise BillingRefused(NOT_VERIFIED)
        if owned.service.status != "active":
            raise BillingRefused(SERVICE_NOT_ACTIVE, owned.service.status)
        unpaid = await self.list_invoices(client_id, service_id=service_id, status="unpaid")
        if unpaid:
            raise BillingRefused(UNPAID_INVOICES, f"{len(unpaid)} unpaid")
        log.info(
            "transfer of service %s from client %s to %s needs staff (request %s)",
            service_id,
            client_id,
            to_client_id,
            request_id,
        )
        return TransferResult.NEEDS_STAFF

    # -- services and products ----------------------------------------------------------

    async def _owned_service(self, client_id: str, service_id: str) -> _OwnedService | None:
        cid, sid = _wid(client_id), _wid(service_id)
        if cid is None or sid is None:
            return None
        # Both filters, and the answer checked too: WHMCS drops a filter whose value is
        # empty, and what it returns must be this client's.
        rows = await self._pages(
            "GetClientsProducts", {"clientid": cid, "serviceid": sid}, "products", "product"
        )
        mine = [r for r in rows if _text(r.get("id")) == sid and _text(r.get("clientid")) == cid]
        if not mine:
            return None
        catalog = await self._catalog_or_empty()
        return _OwnedService(self._service(mine[0], catalog), _text(mine[0].get("paymentmethod")))

    async def _own_service(self, client_id: str, service_id: str) -> _OwnedService:
        owned = await self._owned_service(client_id, service_id)
        if owned is None:
            raise BillingRefused(NOT_FOUND, f"service {service_id}")
        return owned

    def _service(self, row: Mapping[str, Any], catalog: Mapping[str, _CatalogProduct]) -> Service:
        raw_cycle = _text(row.get("billingcycle"))
        cycle = _CYCLES.get(raw_cycle) or _OTHER_CYCLES.get(raw_cycle) or raw_cycle.lower()
        next_due = _day(row.get("nextduedate"))
        period_start = _day(row.get("regdate"))
        if next_due is not None and cycle in CYCLE_MONTHS:
            period_start = add_months(next_due, -CYCLE_MONTHS[cycle])
        pid = _text(row.get("pid"))
        name = _text(row.get("name")) or _text(row.get("translated_name"))
        status = _text(row.get("status"))
        return Service(
            id=_text(row.get("id")),
            client_id=_text(row.get("clientid")),
            product_id=pid,
            product_name=name,
            label=_text(row.get("domain")) or name,
            status=_SERVICE_STATUSES.get(status, status.lower()),
            billing_cycle=cycle,
            amount=_money(row.get("recurringamount")),
            next_due=next_due,
            period_start=period_start,
            category_id=catalog[pid].gid if pid in catalog else None,
        )

    async def _currency(self, client_id: str) -> str:
        cid = _wid(client_id)
        details = None if cid is None else await self._client_details(clientid=cid)
        if details is None:
            raise BillingRefused(NOT_FOUND, "client")
        return _text(details.get("currency_code"))

    def _product(self, product: _CatalogProduct, currency: str) -> Product:
        """The product priced in the client's currency (a product without prices in it
        is not sold to them). A WHMCS that does not say the client's currency has one."""
        prices = product.pricing.get(currency)
        if not currency and len(product.pricing) == 1:
            prices = next(iter(product.pricing.values()))
        return Product(product.pid, product.gid, product.name, dict(prices or {}))

    async def _catalog(self) -> dict[str, _CatalogProduct]:
        """Every product with its prices (GetProducts), kept a few minutes."""
        async with self._catalog_lock:
            now = time.monotonic()
            if self._catalog_cache is not None and now - self._catalog_cache[0] < _CATALOG_TTL:
                return self._catalog_cache[1]
            body = await self._call("GetProducts", {})
            catalog = {p.pid: p for p in map(_catalog_product, _rows(body, "products", "product"))}
            self._catalog_cache = (now, catalog)
            return catalog

    async def _catalog_or_empty(self) -> dict[str, _CatalogProduct]:
        """The catalog for a listing that can do without categories."""
        try:
            return await self._catalog()
        except BillingUnavailable as e:
            log.warning("WHMCS products unavailable, services listed without categories: %s", e)
            return {}

    # -- the API ------------------------------------------------------------------------

    async def _pages(
        self, action: str, params: Mapping[str, Any], outer: str, inner: str
    ) -> list[dict[str, Any]]:
        """Every row of a paged list action (limitstart / limitnum)."""
        found: list[dict[str, Any]] = []
        while True:
            body = await self._call(action, {**params, "limitstart": len(found), "limitnum": _PAGE})
            rows = _rows(body, outer, inner)
            found += rows
            total = _count(body.get("totalresults"), default=len(found))
            if not rows or len(found) >= total:
                return found

    async def _call(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """A read, or a write that is harmless to repeat: tried once more when the
        connection failed or dropped; any other failure is BillingUnavailable."""
        try:
            return await self._post(action, params)
        except (_NotSent, _NoAnswer) as e:
            if isinstance(e, _NoAnswer) and not e.connection_lost:
                log.warning("WHMCS %s failed: %s", action, e)
                raise BillingUnavailable(f"WHMCS {action}: {e}") from None
            log.info("WHMCS %s: %s; trying once more", action, e)
        try:
            return await self._post(action, params)
        except (_NotSent, _NoAnswer) as e:
            log.warning("WHMCS %s failed again: %s", action, e)
            raise BillingUnavailable(f"WHMCS {action}: {e}") from None

    async def _send_once(
        self, request_id: str, action: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A write that must not happen twice, already claimed in `whmcs_requests`: sent
        once, never retried. A lost answer leaves it `unknown` and raises OutcomeUnknown;
        a certain failure releases the claim so that the request can be made again."""
        try:
            return await self._post(action, params)
        except _NotSent as e:
            await index.release_request(self.pool, request_id, action)
            log.warning("WHMCS %s not sent: %s", action, e)
            raise BillingUnavailable(f"WHMCS {action}: {e}") from None
        except (BillingRefused, BillingUnavailable):
            await index.release_request(self.pool, request_id, action)
            raise
        except _NoAnswer as e:
            await index.mark_unknown(self.pool, request_id, action, str(e))
            log.error(
                "WHMCS %s for request %s (%s): %s; whether WHMCS acted is unknown, a person "
                "must check before it is tried again",
                action,
                request_id,
                _loggable(params),
                e,
            )
            raise OutcomeUnknown(f"WHMCS {action}: {e}") from None

    async def _post(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        form = {
            **{k: str(v) for k, v in params.items()},
            **self._credentials,
            "action": action,
            "responsetype": "json",
        }
        log.debug("WHMCS %s %s", action, _loggable(params))
        try:
            async with self._session.post(self._api_url, data=form) as response:
                status = response.status
                text = await response.text(errors="replace")
        except aiohttp.ConnectionTimeoutError:
            raise _NotSent("no connection within the timeout") from None
        except TimeoutError:
            raise _NoAnswer(f"no answer within {self._timeout.total} s") from None
        except aiohttp.ClientConnectorError as e:
            raise _NotSent(f"cannot connect ({e.os_error.strerror or e.os_error})") from None
        except aiohttp.ClientError as e:
            raise _NoAnswer(f"connection lost ({type(e).__name__})", connection_lost=True) from None
        body = _json_object(text)
        if body is not None and "error" in (body.get("result"), body.get("status")):
            self._refuse(action, _text(body.get("message")))
        if status >= 400 or body is None or body.get("result") != "success":
            # An HTML error page (WHMCS answers PHP fatal errors that way), a proxy's
            # page, or output that is not the JSON asked for.
            log.warning(
                "WHMCS %s: HTTP %s, unusable answer: %r", action, status, self._scrub(text)[:200]
            )
            raise _NoAnswer(f"HTTP {status}, unusable answer")
        return body

    def _scrub(self, text: str) -> str:
        """`text` without our credentials, should WHMCS ever echo them back."""
        for value in self._credentials.values():
            text = text.replace(value, "***")
        return text

    def _refuse(self, action: str, message: str) -> NoReturn:
        message = self._scrub(message)
        lowered = message.lower()
        if lowered.startswith(_AUTH_ERRORS):
            log.error(
                "WHMCS refused %s: %r. Check WHMCS_URL, WHMCS_IDENTIFIER, WHMCS_SECRET, "
                "WHMCS_ACCESS_KEY, the API role's actions and the IP allow-list",
                action,
                message,
            )
            raise BillingUnavailable(f"WHMCS {action}: {message}")
        if lowered in _NOT_FOUND_ERRORS:
            raise BillingRefused(NOT_FOUND, message)
        for fragment, reason in _REFUSALS:
            if fragment in lowered:
                raise BillingRefused(reason, message)
        log.warning("WHMCS %s refused: %r", action, message)
        raise BillingRefused(WHMCS_ERROR, message)


# -- records from WHMCS's answers ---------------------------------------------------------------


def _client(details: Mapping[str, Any]) -> Client:
    return Client(
        id=_text(details.get("id") or details.get("client_id") or details.get("userid")),
        name=_name(details),
        email=_text(details.get("email")),
        verified=_truthy(details.get("email_verified")),
    )


def _name(details: Mapping[str, Any]) -> str:
    full = _text(details.get("fullname")).strip()
    if full:
        return full
    return f"{_text(details.get('firstname'))} {_text(details.get('lastname'))}".strip()


def _invoice(
    row: Mapping[str, Any],
    client_id: str,
    *,
    invoice_id: str | None = None,
    service_id: str | None = None,
) -> Invoice | None:
    """An invoice as the customer sees it; None for a draft (not theirs yet)."""
    status = _INVOICE_STATUSES.get(_text(row.get("status")))
    if status is None:
        return None
    return Invoice(
        id=invoice_id or _text(row.get("id") or row.get("invoiceid")),
        client_id=client_id,
        service_id=service_id,
        total=_money(row.get("total")),
        status=status,
        due=_day(row.get("duedate")),
    )


def _domain(row: Mapping[str, Any]) -> Domain:
    status = _text(row.get("status"))
    return Domain(
        id=_text(row.get("id")),
        client_id=_text(row.get("userid")),
        name=_text(row.get("domainname")),
        status=status.lower().replace(" ", "_").replace("-", "_"),
        auto_renew=not _truthy(row.get("donotrenew")),
        next_due=_day(row.get("nextduedate")),
    )


def _catalog_product(row: Mapping[str, Any]) -> _CatalogProduct:
    pricing: dict[str, dict[str, Decimal]] = {}
    raw = row.get("pricing")
    paytype = _text(row.get("paytype")) or "recurring"
    if isinstance(raw, dict) and paytype == "recurring":
        for currency, columns in raw.items():
            if not isinstance(columns, dict):
                continue
            prices: dict[str, Decimal] = {}
            for cycle in CYCLE_MONTHS:
                price = _money(columns.get(cycle, "-1"))
                # WHMCS marks a cycle the product is not sold in with -1.00.
                if price >= 0:
                    prices[cycle] = price
            pricing[str(currency)] = prices
    return _CatalogProduct(
        pid=_text(row.get("pid")),
        gid=_text(row.get("gid")),
        name=_text(row.get("name")),
        paytype=paytype,
        pricing=pricing,
    )


# -- what a repeated request gets back -------------------------------------------------------


def _recorded_result(record: index.RequestRecord) -> dict[str, Any]:
    if record.status == "done" and record.result is not None:
        return record.result
    raise OutcomeUnknown(
        f"{record.action} for request {record.request_id} is {record.status}: "
        "whether WHMCS acted is unknown, a person must check"
    )


def _quote_json(quote: UpgradeQuote) -> dict[str, Any]:
    return {
        "amount": str(quote.amount),
        "policy": quote.policy.value,
        "cycle": quote.cycle,
        "new_recurring": str(quote.new_recurring),
        "next_due": quote.next_due.isoformat(),
        "days_left": quote.days_left,
        "days_in_cycle": quote.days_in_cycle,
    }


def _product_json(product: Product) -> dict[str, Any]:
    return {
        "id": product.id,
        "category_id": product.category_id,
        "name": product.name,
        "prices": {cycle: str(price) for cycle, price in product.prices.items()},
    }


def _invoice_json(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "client_id": invoice.client_id,
        "service_id": invoice.service_id,
        "total": str(invoice.total),
        "status": invoice.status,
        "due": invoice.due.isoformat() if invoice.due else None,
    }


def _placed_from(result: Mapping[str, Any]) -> PlacedUpgrade:
    q, p, i = result["quote"], result["product"], result["invoice"]
    return PlacedUpgrade(
        quote=UpgradeQuote(
            amount=Decimal(q["amount"]),
            policy=Policy(q["policy"]),
            cycle=q["cycle"],
            new_recurring=Decimal(q["new_recurring"]),
            next_due=date.fromisoformat(q["next_due"]),
            days_left=q["days_left"],
            days_in_cycle=q["days_in_cycle"],
        ),
        product=Product(
            p["id"], p["category_id"], p["name"], {c: Decimal(v) for c, v in p["prices"].items()}
        ),
        invoice=Invoice(
            id=i["id"],
            client_id=i["client_id"],
            service_id=i["service_id"],
            total=Decimal(i["total"]),
            status=i["status"],
            due=date.fromisoformat(i["due"]) if i["due"] else None,
        ),
        invoice_url=result["invoice_url"],
    )


def _cancellation_from(result: Mapping[str, Any]) -> CancellationRequest:
    return CancellationRequest(
        id=result["id"],
        service_id=result["service_id"],
        kind=CancellationKind(result["kind"]),
        reason=result["reason"],
        requested_at=datetime.fromisoformat(result["requested_at"]),
    )


# -- WHMCS's values --------------------------------------------------------------------------


def _is_id(value: str) -> bool:
    return value.isascii() and value.isdigit() and int(value) > 0


def _wid(value: Any) -> str | None:
    """A WHMCS id, or None. Anything else must never reach WHMCS: it drops filters
    whose value is empty or zero (GetClientsProducts without clientid lists everyone's)."""
    text = _text(value).strip()
    return str(int(text)) if _is_id(text) else None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def _count(value: Any, *, default: int) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default


def _money(value: Any) -> Decimal:
    try:
        amount = Decimal(_text(value).strip() or "0")
    except InvalidOperation:
        raise BillingUnavailable(f"WHMCS sent an amount that is not one: {value!r}") from None
    if not amount.is_finite():
        raise BillingUnavailable(f"WHMCS sent an amount that is not one: {value!r}")
    return amount


def _day(value: Any) -> date | None:
    """WHMCS's dates: "YYYY-MM-DD" (maybe with a time), "0000-00-00" for none."""
    text = _text(value)[:10]
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


_AMOUNT = re.compile(r"\d[\d.,]*")


def _formatted_money(text: str) -> Decimal | None:
    """An amount WHMCS formatted for people ("$1,234.56 USD", "1.234,56 €")."""
    match = _AMOUNT.search(text)
    if match is None:
        return None
    number = match.group(0).rstrip(".,")
    last = max(number.rfind("."), number.rfind(","))
    # A separator followed by exactly three digits is grouping ("1,234"), else decimals.
    if last >= 0 and len(number) - last - 1 != 3:
        whole, decimals = number[:last], number[last + 1 :]
    else:
        whole, decimals = number, ""
    digits = "".join(ch for ch in whole if ch.isdigit())
    return Decimal(f"{digits or '0'}.{decimals or '0'}")


def _rows(body: Mapping[str, Any], outer: str, inner: str) -> list[dict[str, Any]]:
    """The records of a list answer: `{outer: {inner: [...]}}`, where WHMCS sends `""`
    or `[]` or nothing for none, and a single record unwrapped in some versions."""
    wrapper = body.get(outer)
    rows = wrapper.get(inner) if isinstance(wrapper, dict) else None
    if isinstance(rows, dict):
        return [rows]
    if isinstance(rows, list):
        return [r for r in rows if isinstance(r, dict)]
    return []


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _loggable(params: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in params.items() if k not in _CREDENTIALS}


async def _bounded(jobs: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(run(job) for job in jobs)))


if TYPE_CHECKING:
    # mypy proves the class implements the interface the flows use.
    _implements: type[Billing] = WhmcsBilling
