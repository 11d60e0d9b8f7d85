"""`WhmcsBilling`: the flows' `Billing` over WHMCS, made of the API client, the catalog,
the phone index, the request ledger and the upgrade paths, with the checks the flows rely
on (a service is the client's, an upgrade is offered) that WHMCS leaves to its callers."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import asyncpg

from bot.config import ConfigError, Settings
from bot.whmcs.api import DETAIL_CONCURRENCY, PAGE, WhmcsApi, rows
from bot.whmcs.catalog import Catalog
from bot.whmcs.ledger import (
    RequestLedger,
    cancellation_from,
    invoice_json,
    placed_from,
    product_json,
    quote_json,
)
from bot.whmcs.mapping import (
    CANCELLATION_TYPES,
    UNPAID_INVOICE_STATUSES,
    VerifiedRule,
    client_from,
    domain_from,
    invoice_from,
    priced_product,
    service_from,
)
from bot.whmcs.phone_index import PhoneIndex, SyncReport, client_details
from bot.whmcs.upgrade_paths import UpgradePaths
from bot.whmcs.values import as_text, count, day, formatted_money, money, truthy, wid
from flows.alerts import facts_from_data
from flows.billing import (
    NO_PAYMENT_METHOD,
    NOT_FOUND,
    NOT_OFFERED,
    NOT_VERIFIED,
    SAME_CLIENT,
    SERVICE_NOT_ACTIVE,
    UNPAID_INVOICES,
    UPGRADE_PENDING,
    BillingError,
    BillingRefused,
    BillingUnavailable,
    CancellationKind,
    CancellationRequest,
    Client,
    ClientLookup,
    Domain,
    EventFacts,
    ExpiredUpgrade,
    Invoice,
    OutcomeUnknown,
    PendingUpgrade,
    PlacedUpgrade,
    Product,
    Segment,
    Service,
    TransferResult,
    UpgradeOption,
    ensure_upgradable,
    offerable,
    upgrade_quote,
)
from flows.pricing import CENT, CYCLE_MONTHS, Policy, UpgradeQuote
from store.whmcs_index import PlacedUpgradeRecord

if TYPE_CHECKING:
    from flows.billing import Billing

log = logging.getLogger(__name__)

_INVOICE_SERVICES_KEPT = 50_000  # invoice → service, remembered (a few MB at most)
# expire_upgrades: a claim on an upgrade lapses after this (its process died), and
# upgrades are claimed this many at a time (a batch is done well within the lease).
_EXPIRY_LEASE = timedelta(minutes=15)
_EXPIRY_BATCH = 20
# The invoice events whose alert names the package an upgrade invoice moves to.
_UPGRADE_EVENTS = frozenset({"invoice.created", "invoice.paid", "invoice.cancelled"})
# A trailing "(01/07/2026 - 01/01/2027)": the period an upgrade invoice line covers.
_PERIOD = re.compile(r"\s*\([^()]*\)\s*$")

T = TypeVar("T")


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
        self.base_url = settings.whmcs_url.rstrip("/")
        self.policy = Policy(settings.upgrade_pricing)
        self.paths = upgrade_paths or UpgradePaths.load(settings.whmcs_upgrades_file)
        self._api = WhmcsApi(
            self.base_url,
            identifier=settings.whmcs_identifier,
            secret=settings.whmcs_secret,
            access_key=settings.whmcs_access_key,
            timeout_seconds=settings.whmcs_timeout_seconds,
        )
        try:
            self._verified = VerifiedRule.parse(settings.whmcs_verified)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self._region = settings.default_region
        self._phones = PhoneIndex(self._api, pool, self._region, self._verified)
        self._ledger = RequestLedger(pool, self._api)
        self._pool = pool
        self._catalog = Catalog(self._api)
        self._invoice_services: dict[str, str | None] = {}

    def __repr__(self) -> str:
        return f"WhmcsBilling({self.base_url!r})"

    async def close(self) -> None:
        await self._api.close()

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
        return await self._phones.find(wa_id)

    async def get_client(self, client_id: str) -> Client | None:
        cid = wid(client_id)
        if cid is None:
            return None
        return self._client(await client_details(self._api, clientid=cid))

    async def find_client_by_email(self, email: str) -> Client | None:
        if not email.strip():
            return None
        return self._client(await client_details(self._api, email=email.strip()))

    def _client(self, details: Mapping[str, Any] | None) -> Client | None:
        if details is None:
            return None
        return client_from(details, self._verified, region=self._region)

    async def refresh_client(self, client_id: str) -> Client | None:
        """The client re-read into the phone index (a new one added); None for a client
        WHMCS no longer has (it leaves the index) or has closed (kept in the index as
        Closed, identifying nobody)."""
        return await self._phones.refresh(client_id)

    async def sync_clients(self) -> SyncReport:
        return await self._phones.sync()

    # -- what they have ----------------------------------------------------------------

    async def list_services(self, client_id: str) -> list[Service]:
        cid = wid(client_id)
        if cid is None:
            return []
        found = await self._api.pages(
            "GetClientsProducts", {"clientid": cid}, "products", "product"
        )
        catalog = await self._catalog.products_or_empty()
        owned = [r for r in found if as_text(r.get("clientid")) == cid]
        return sorted((service_from(r, catalog) for r in owned), key=lambda s: int(s.id))

    async def get_service(self, client_id: str, service_id: str) -> Service | None:
        owned = await self._owned_service(client_id, service_id)
        return None if owned is None else owned.service

    async def list_invoices(
        self, client_id: str, *, service_id: str | None = None, status: str | None = None
    ) -> list[Invoice]:
        cid = wid(client_id)
        if cid is None:
            return []
        # Ordered by id: the default order ties (status, due date) and offset paging over
        # ties skips or repeats rows — an unpaid invoice could hide from a check.
        found = await self._api.pages(
            "GetInvoices", {"userid": cid, "orderby": "id", "order": "asc"}, "invoices", "invoice"
        )
        invoices = [
            invoice
            for invoice in (invoice_from(r, cid) for r in found if as_text(r.get("userid")) == cid)
            if invoice is not None and (status is None or invoice.status == status)
        ]
        sid = None if service_id is None else wid(service_id)
        if service_id is not None and sid is None:
            return []
        # GetInvoices has no items: the service an invoice bills comes from GetInvoice.
        services = await _bounded(
            [functools.partial(self._invoice_service, cid, i.id) for i in invoices],
            DETAIL_CONCURRENCY,
        )
        invoices = [
            replace(i, service_id=s)
            for i, s in zip(invoices, services, strict=True)
            if sid is None or s == sid
        ]
        return sorted(invoices, key=lambda i: (i.due or date.max, int(i.id)))

    async def list_domains(self, client_id: str) -> list[Domain]:
        cid = wid(client_id)
        if cid is None:
            return []
        found = await self._api.pages("GetClientsDomains", {"clientid": cid}, "domains", "domain")
        domains = [domain_from(r) for r in found if as_text(r.get("userid")) == cid]
        return sorted(domains, key=lambda d: d.name)

    async def invoice_link(self, client_id: str, invoice_id: str) -> str:
        """The invoice's page in the customer panel (they log in to see it). Not an SSO
        link: WHMCS's tokens last 60 seconds and log whoever holds them into the whole
        account, and a WhatsApp message is read later and may be forwarded."""
        cid, iid = wid(client_id), wid(invoice_id)
        if cid is None or iid is None:
            raise BillingRefused(NOT_FOUND, f"invoice {invoice_id}")
        body = await self._invoice_detail(iid)
        if body is None or as_text(body.get("userid")) != cid:
            raise BillingRefused(NOT_FOUND, f"invoice {invoice_id}")
        return self._invoice_url(iid)

    def _invoice_url(self, invoice_id: str) -> str:
        return f"{self.base_url}/viewinvoice.php?id={invoice_id}"

    async def _invoice_detail(self, invoice_id: str) -> dict[str, Any] | None:
        try:
            return await self._api.call("GetInvoice", {"invoiceid": invoice_id})
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
        for item in rows(body or {}, "items", "item"):
            if as_text(item.get("type")) == "Hosting":
                service_id = wid(item.get("relid"))
            elif as_text(item.get("type")) == "Upgrade":
                service_id = await self._ledger.upgrade_invoice_service(client_id, invoice_id)
            if service_id is not None:
                break
        if body is not None:
            if len(self._invoice_services) >= _INVOICE_SERVICES_KEPT:
                self._invoice_services.clear()
            self._invoice_services[invoice_id] = service_id
        return service_id

    def _quote_url(self, quote_id: str) -> str:
        return f"{self.base_url}/viewquote.php?id={quote_id}"

    # -- alerts and broadcasts ------------------------------------------------------------

    async def event_facts(
        self, client_id: str, event_type: str, data: Mapping[str, Any]
    ) -> EventFacts:
        """The event's data (`facts_from_data`), what it leaves unknown read from WHMCS:
        only this client's records — an invoice, service or quote id of someone else's
        fills nothing. WHMCS failing to answer is BillingUnavailable (the alert waits)."""
        facts = facts_from_data(data)
        cid = wid(client_id)
        if cid is None:
            return facts
        try:
            if event_type.startswith("invoice."):
                return await self._invoice_facts(cid, facts, event_type)
            if event_type.startswith("service."):
                return await self._service_facts(cid, data.get("service_id"), facts)
            if event_type == "quote.created":
                return await self._quote_facts(cid, facts)
        except BillingRefused as refused:
            # An error answer other than "no such record": WHMCS cannot say now.
            raise BillingUnavailable(f"WHMCS refused an alert's lookup: {refused}") from None
        # domain.deleted: the domain is gone from WHMCS; its name comes with the event.
        return facts

    async def _invoice_facts(self, cid: str, facts: EventFacts, event_type: str) -> EventFacts:
        """Total, due date and link from GetInvoice, when the invoice is this client's.

        For a payment or a voiding, `upgrade_to` too, when the invoice is an upgrade's:
        the package of an upgrade the bot placed (the request ledger, no call to WHMCS),
        else — when GetInvoice is read anyway, as it is for WHMCS's own hook, which sends
        no link — the package its Upgrade line moves to ("<old> => <new> (period)", how
        WHMCS writes a package upgrade's line in any language), if the catalog has a
        package of that name: a configurable options upgrade's line names an option's
        value, which is no package."""
        iid = wid(facts.invoice_id)
        if iid is None:
            return facts
        upgrade = event_type in _UPGRADE_EVENTS and facts.upgrade_to is None
        if upgrade:
            placed = await self._ledger.upgrade_of_invoice(cid, iid)
            if placed is not None and placed.product_name:
                facts = replace(facts, upgrade_to=placed.product_name, ordered_in_chat=True)
                upgrade = False
        if None not in (facts.total, facts.due, facts.url):
            return facts
        detail = await self._invoice_detail(iid)
        if detail is None or as_text(detail.get("userid")) != cid:
            return facts
        total = facts.total
        if total is None:
            total = money(detail.get("total")).quantize(CENT)
        facts = replace(
            facts,
            total=total,
            due=facts.due or day(detail.get("duedate")),
            url=facts.url or self._invoice_url(iid),
        )
        if upgrade:
            facts = replace(facts, upgrade_to=await self._upgrade_on_invoice(detail))
        return facts

    async def _upgrade_on_invoice(self, detail: Mapping[str, Any]) -> str | None:
        """The package an invoice's Upgrade line moves a service to, if it names one."""
        named = [
            name
            for item in rows(detail, "items", "item")
            if as_text(item.get("type")) == "Upgrade"
            and (name := _upgraded_to(as_text(item.get("description")))) is not None
        ]
        if not named:
            return None
        packages = {p.name for p in (await self._catalog.products()).values()}
        return next((name for name in named if name in packages), None)

    async def _service_facts(self, cid: str, service_id: Any, facts: EventFacts) -> EventFacts:
        """The service as the customer calls it: its domain, else its product's name."""
        sid = wid(service_id)
        if sid is None or facts.service is not None:
            return facts
        row = await self._service_row(cid, sid)
        if row is None:
            return facts
        # As the flows label a service (mapping.service_from).
        name = as_text(row.get("name")) or as_text(row.get("translated_name"))
        return replace(facts, service=as_text(row.get("domain")).strip() or name.strip() or None)

    async def _quote_facts(self, cid: str, facts: EventFacts) -> EventFacts:
        """Total, subject, validity and link from GetQuotes, when the quote is this
        client's (WHMCS lists every quote for an empty quoteid: the answer is checked)."""
        qid = wid(facts.quote_id)
        known = (facts.total, facts.valid_until, facts.url)
        if qid is None or (None not in known and facts.subject):
            return facts
        body = await self._api.call("GetQuotes", {"quoteid": qid})
        mine = [
            r
            for r in rows(body, "quotes", "quote")
            if as_text(r.get("id")) == qid and as_text(r.get("userid")) == cid
        ]
        if not mine:
            return facts
        quote = mine[0]
        total = facts.total
        if total is None:
            total = money(quote.get("total")).quantize(CENT)
        return replace(
            facts,
            total=total,
            subject=facts.subject or as_text(quote.get("subject")).strip(),
            valid_until=facts.valid_until or day(quote.get("validuntil")),
            url=facts.url or self._quote_url(qid),
        )

    async def segment_clients(self, segment: Segment) -> list[str]:
        """The clients of a broadcast, read from WHMCS (not the phone index, which may be
        behind), sorted by id:

        - `all`: every Active client (GetClients status=Active).
        - `product:<pid>`: clients with an Active service of that product
          (GetClientsProducts pid=…).
        - `server:<server>`: clients with an Active service on that server, named by its
          WHMCS id or its name or hostname (GetClientsProducts has no server filter:
          every service is read).
        - `unpaid`: clients with an invoice WHMCS has as Unpaid, Payment Pending or
          Collections (GetInvoices status=…, ours "unpaid").
        """
        found: set[str | None] = set()
        if segment.kind == "all":
            clients = await self._api.pages(
                "GetClients",
                {"status": "Active", "orderby": "id", "sorting": "ASC"},
                "clients",
                "client",
            )
            found = {wid(r.get("id")) for r in clients if as_text(r.get("status")) == "Active"}
        elif segment.kind == "product":
            pid = wid(segment.value)
            if pid is None:
                return []
            services = await self._api.pages(
                "GetClientsProducts", {"pid": pid}, "products", "product"
            )
            found = {
                wid(r.get("clientid"))
                for r in services
                if as_text(r.get("pid")) == pid and as_text(r.get("status")) == "Active"
            }
        elif segment.kind == "server":
            server = segment.value.strip()
            if not server:
                return []
            services = await self._api.pages("GetClientsProducts", {}, "products", "product")
            found = {
                wid(r.get("clientid"))
                for r in services
                if as_text(r.get("status")) == "Active" and _on_server(r, server)
            }
        elif segment.kind == "unpaid":
            for status in UNPAID_INVOICE_STATUSES:
                invoices = await self._api.pages(
                    "GetInvoices",
                    {"status": status, "orderby": "id", "order": "asc"},
                    "invoices",
                    "invoice",
                )
                found |= {
                    wid(r.get("userid")) for r in invoices if as_text(r.get("status")) == status
                }
        else:
            raise ValueError(f"unknown segment kind {segment.kind!r}")
        return sorted((cid for cid in found if cid is not None), key=int)

    # -- upgrades -----------------------------------------------------------------------

    async def products_for(self, client_id: str) -> list[Product]:
        catalog = await self._catalog.products()
        currency = await self._currency(client_id)
        return sorted((priced_product(p, currency) for p in catalog.values()), key=lambda p: p.name)

    async def upgrade_options(self, client_id: str, service_id: str) -> list[UpgradeOption]:
        owned = await self._own_service(client_id, service_id)
        service = owned.service
        ensure_upgradable(service)
        owned = replace(owned, payment_method=await self._gateway(owned, client_id))
        if service.billing_cycle not in CYCLE_MONTHS:
            return []
        catalog = await self._catalog.products()
        currency = await self._currency(client_id)
        products = [
            priced_product(catalog[pid], currency)
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
        (calconly) said it would accept the upgrade. Under `difference` WHMCS prices it
        through our hook (integrations/whmcs/upgrade_difference.php), so the two agree."""
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

        The invoice's amount is WHMCS's to compute: its own pro-rata, or with our
        OrderProductUpgradeOverride hook (integrations/whmcs/upgrade_difference.php) the
        help page's difference. The invoice returned is the one WHMCS made; when it bills
        other than the quote, a warning says so (the customer was shown the quote)."""
        action = "UpgradeProduct"
        recorded = await self._ledger.recorded(request_id, action)
        if recorded is not None:
            return placed_from(recorded)
        pending = await self.pending_upgrade(client_id, service_id)
        if pending is not None:
            raise BillingRefused(UPGRADE_PENDING, pending.invoice_id)
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
        claimed = await self._ledger.claim(request_id, action, client_id, params)
        if claimed is not None:  # a twin of this request got there first
            return placed_from(claimed)

        async def look() -> dict[str, Any] | None:
            """After an error answer: the service on the new package means it was applied
            at once (nothing to pay); an upgrade in progress (there was none at the
            calculation just before) means the order was written, its invoice unknown."""
            now = await self._own_service(client_id, sid)
            if now.service.product_id == product.id:
                return {"result": "success", "invoiceid": 0}
            body = await self._api.call("UpgradeProduct", {**params, "calconly": "true"})
            if truthy(body.get("upgradeinprogress")):
                raise OutcomeUnknown(f"an upgrade order for service {sid} was written")
            return None

        try:
            body = await self._ledger.send_once(request_id, action, params, look=look)
        except BillingRefused as refused:
            if refused.reason != UPGRADE_PENDING:
                raise
            # Ordered meanwhile (another request, the customer in the client area).
            raise await self._pending_refusal(client_id, sid) from None
        invoice_id = wid(body.get("invoiceid"))
        result: dict[str, Any] = {
            "service_id": sid,
            "order_id": as_text(body.get("orderid")),
            "invoice_id": invoice_id,
            "quote": quote_json(quote),
            "product": product_json(product),
        }
        if invoice_id is None:
            # Nothing to pay: WHMCS applied the upgrade at once and made no invoice.
            result["invoice"] = None
            result["invoice_url"] = None
            await self._ledger.finish(request_id, action, result)
            return placed_from(result)
        # Recorded before anything else can fail: a repeat must get this, not a new order.
        result["invoice"] = invoice_json(
            Invoice(invoice_id, client_id, sid, quote.amount, "unpaid", today)
        )
        result["invoice_url"] = self._invoice_url(invoice_id)
        await self._ledger.finish(request_id, action, result)
        self._invoice_services[invoice_id] = sid
        invoice = await self._created_invoice(client_id, sid, invoice_id, quote)
        if invoice is not None:
            result["invoice"] = invoice_json(invoice)
            await self._ledger.finish(request_id, action, result)
        return placed_from(result)

    async def pending_upgrade(self, client_id: str, service_id: str) -> PendingUpgrade | None:
        """The service's upgrade whose invoice WHMCS has as Unpaid: what WHMCS itself
        checks before it takes another order for the service (upgradeAlreadyInProgress:
        the upgrade's order's invoice is Unpaid — one "Payment Pending" is not, here
        either). Two sources, the cheap one first:

        - The upgrades the bot placed (the request ledger): the service's newest one that
          expiring has not dealt with, its invoice read with GetInvoice (status, total,
          date). One query and one call.
        - Upgrades ordered in WHMCS itself (the customer in the client area, staff):
          GetOrders for the client, its only API view of an upgrade together with the
          service it is for (a line of type "upgrade" whose relid is the service, and the
          order invoice's status as `paymentstatus`); one call for a client with up to
          100 orders. The line names the package only as "Package Upgrade: <old> =>
          <new>" (English whatever the language): `product_id` is the catalog's package
          of that name, "" when no single one has it. An upgrade of configurable options
          is no package upgrade and is not reported (nor is it in the ledger).

        Never cached: it says whether the customer may order another one now. Another
        client's service, or an id that is no WHMCS id, has none."""
        cid, sid = wid(client_id), wid(service_id)
        if cid is None or sid is None:
            return None
        placed = await self._ledger.latest_upgrade(cid, sid)
        if placed is not None:
            pending = await self._unpaid_upgrade(
                cid, sid, placed.invoice_id, placed.product_id, placed.product_name
            )
            if pending is not None:
                return pending
        return await self._upgrade_ordered_in_whmcs(cid, sid)

    async def _unpaid_upgrade(
        self, cid: str, sid: str, invoice_id: str, product_id: str, product_name: str
    ) -> PendingUpgrade | None:
        detail = await self._invoice_detail(invoice_id)
        if (
            detail is None
            or as_text(detail.get("userid")) != cid
            or as_text(detail.get("status")) != "Unpaid"
        ):
            return None
        return PendingUpgrade(
            service_id=sid,
            product_id=product_id,
            product_name=product_name,
            invoice_id=invoice_id,
            invoice_url=self._invoice_url(invoice_id),
            total=money(detail.get("total")).quantize(CENT),
            ordered_on=day(detail.get("date")),
        )

    async def _upgrade_ordered_in_whmcs(self, cid: str, sid: str) -> PendingUpgrade | None:
        """A package upgrade of the service among the client's orders whose invoice is
        Unpaid, newest first (see pending_upgrade)."""
        orders = await self._api.pages("GetOrders", {"userid": cid}, "orders", "order")
        orders.sort(key=lambda o: count(o.get("id"), default=0), reverse=True)
        for order in orders:
            invoice_id = wid(order.get("invoiceid"))
            if (
                invoice_id is None
                or as_text(order.get("userid")) != cid
                or as_text(order.get("paymentstatus")) != "Unpaid"
            ):
                continue
            for line in rows(order, "lineitems", "lineitem"):
                if as_text(line.get("type")) != "upgrade" or wid(line.get("relid")) != sid:
                    continue
                name = _package_upgrade_to(as_text(line.get("product")))
                if name is None:
                    continue
                pending = await self._unpaid_upgrade(
                    cid, sid, invoice_id, await self._package_named(name), name
                )
                if pending is not None:
                    return pending
        return None

    async def _package_named(self, name: str) -> str:
        """The id of the catalog's one package called `name`, else ""."""
        catalog = await self._catalog.products_or_empty()
        ids = [pid for pid, product in catalog.items() if product.name == name]
        return ids[0] if len(ids) == 1 else ""

    async def _pending_refusal(self, client_id: str, service_id: str) -> BillingRefused:
        """UPGRADE_PENDING, WHMCS having said an upgrade of the service is unpaid, with
        that upgrade's invoice id — "" if it cannot be found now."""
        try:
            pending = await self.pending_upgrade(client_id, service_id)
        except BillingError as e:
            log.warning("the pending upgrade of service %s could not be read: %s", service_id, e)
            pending = None
        if pending is None:
            log.warning(
                "WHMCS has an unpaid upgrade of service %s that neither our ledger nor "
                "GetOrders shows",
                service_id,
            )
            return BillingRefused(UPGRADE_PENDING, "")
        return BillingRefused(UPGRADE_PENDING, pending.invoice_id)

    async def expire_upgrades(self, placed_before: datetime) -> list[ExpiredUpgrade]:
        """Void the invoices of the upgrades the bot placed before `placed_before` (when
        the request ledger recorded the order) that WHMCS still has as Unpaid: UpdateInvoice
        with status Cancelled. WHMCS then runs its InvoiceCancelled hook, which our hook
        (integrations/whmcs/whatsapp_alerts.php) forwards as invoice.cancelled: nothing is
        emitted here. The upgrade order stays in WHMCS, never applied (it applies when its
        invoice is paid). Upgrades the customer ordered in the client area are left to
        WHMCS and its staff.

        Each upgrade is looked at once. It is claimed in the ledger before WHMCS is asked
        (two processes never work on the same one; a claim lapses after _EXPIRY_LEASE, so
        a process that died leaves its upgrades to the next run), then recorded as voided,
        settled (GetInvoice says Paid, Cancelled, Refunded or Collections: left alone) or
        gone (WHMCS has no such invoice of the client). One "Payment Pending" (a payment
        on its way) keeps its claim, to be looked at again when the claim lapses; so does
        one WHMCS refuses to update (logged). Voiding twice is harmless: a Cancelled
        invoice is settled.

        WHMCS has no "cancel if still unpaid": a payment landing between the GetInvoice
        and the UpdateInvoice would be cancelled with the invoice, so the invoice is read
        again after voiding and that case logged as an error for staff.

        Raises BillingUnavailable when WHMCS cannot answer; the upgrades not done are
        given back for the next run."""
        if placed_before.tzinfo is None:
            raise ValueError("placed_before must be timezone-aware")
        expired: list[ExpiredUpgrade] = []
        while True:
            batch = await self._ledger.claim_expiring(
                placed_before, lease=_EXPIRY_LEASE, limit=_EXPIRY_BATCH
            )
            if not batch:
                return expired
            for n, placed in enumerate(batch):
                try:
                    voided = await self._expire(placed)
                except Exception:
                    await self._ledger.release_expiring([p.request_id for p in batch[n:]])
                    raise
                if voided:
                    expired.append(
                        ExpiredUpgrade(placed.client_id, placed.service_id, placed.invoice_id)
                    )

    async def _expire(self, placed: PlacedUpgradeRecord) -> bool:
        """Void one claimed upgrade's invoice if it is still Unpaid; whether it was."""
        detail = await self._invoice_detail(placed.invoice_id)
        if detail is None or as_text(detail.get("userid")) != wid(placed.client_id):
            await self._ledger.expired(placed.request_id, "gone")
            return False
        status = as_text(detail.get("status"))
        if status == "Payment Pending":
            return False  # keeps its claim: looked at again when it lapses
        if status != "Unpaid":
            await self._ledger.expired(placed.request_id, "settled")
            return False
        try:
            await self._api.call(
                "UpdateInvoice", {"invoiceid": placed.invoice_id, "status": "Cancelled"}
            )
        except BillingRefused as refused:
            if refused.reason == NOT_FOUND:
                await self._ledger.expired(placed.request_id, "gone")
                return False
            log.error(
                "WHMCS refused to void the unpaid invoice %s of the upgrade of service %s "
                "(request %s): %s; tried again in %s",
                placed.invoice_id,
                placed.service_id,
                placed.request_id,
                refused,
                _EXPIRY_LEASE,
            )
            return False  # keeps its claim
        await self._ledger.expired(placed.request_id, "voided")
        log.info(
            "voided the unpaid invoice %s of the upgrade of service %s (request %s)",
            placed.invoice_id,
            placed.service_id,
            placed.request_id,
        )
        await self._check_not_paid_meanwhile(placed)
        return True

    async def _check_not_paid_meanwhile(self, placed: PlacedUpgradeRecord) -> None:
        try:
            detail = await self._invoice_detail(placed.invoice_id)
        except BillingError as e:
            log.warning("invoice %s voided; reading it again failed: %s", placed.invoice_id, e)
            return
        if detail is not None and day(detail.get("datepaid")) is not None:
            log.error(
                "invoice %s (the upgrade of service %s) was paid as it was being voided: "
                "staff must restore it to Paid in WHMCS so that the upgrade applies, or "
                "refund it",
                placed.invoice_id,
                placed.service_id,
            )

    async def _created_invoice(
        self, client_id: str, service_id: str, invoice_id: str, quote: UpgradeQuote
    ) -> Invoice | None:
        """The upgrade invoice as WHMCS made it (its total, taxes included, and due
        date), or None if it cannot be read now: the upgrade is placed either way."""
        try:
            detail = await self._invoice_detail(invoice_id)
            invoice = None
            if detail is not None:
                invoice = invoice_from(
                    detail, client_id, invoice_id=invoice_id, service_id=service_id
                )
            if detail is None or invoice is None:
                return None
            subtotal = money(detail.get("subtotal", detail.get("total")))
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
        owned = replace(owned, payment_method=await self._gateway(owned, client_id))
        if service.billing_cycle not in CYCLE_MONTHS:
            raise BillingRefused(NOT_OFFERED, f"{service.id} is billed {service.billing_cycle}")
        if product_id not in self.paths.targets.get(service.product_id, ()):
            raise BillingRefused(NOT_OFFERED, f"{service.product_id} → {product_id}")
        catalog = await self._catalog.products()
        if product_id not in catalog:
            log.warning("WHMCS_UPGRADES_FILE lists pid %s, which WHMCS does not have", product_id)
            raise BillingRefused(NOT_OFFERED, f"no product {product_id}")
        return owned, priced_product(catalog[product_id], await self._currency(client_id))

    async def _gateway(self, owned: _OwnedService, client_id: str) -> str:
        """The gateway the upgrade's invoice goes through: the service's own, or, when
        that one is disabled (WHMCS checks it only when the order is placed, not in its
        calculation), the client's default one if active. Neither: refused at the quote,
        before the customer confirms anything."""
        active = await self._catalog.active_gateways()
        if owned.payment_method in active:
            return owned.payment_method
        cid = wid(client_id)
        details = None if cid is None else await client_details(self._api, clientid=cid)
        default = as_text(details.get("defaultgateway")) if details else ""
        if default in active:
            log.info(
                "service %s bills through %r, now disabled: the upgrade uses the client's %r",
                owned.service.id,
                owned.payment_method,
                default,
            )
            return default
        raise BillingRefused(
            NO_PAYMENT_METHOD,
            f"service {owned.service.id}: {owned.payment_method!r} disabled, no active default",
        )

    def _quote(self, service: Service, product: Product, cycle: str, today: date) -> UpgradeQuote:
        return upgrade_quote(self.policy, service, product, cycle, today=today)

    async def _whmcs_calculation(
        self, owned: _OwnedService, product: Product, cycle: str, quote: UpgradeQuote
    ) -> None:
        """UpgradeProduct with calconly: WHMCS refuses what it would refuse for real (a
        cycle it does not sell, an unpaid upgrade invoice already pending: UPGRADE_PENDING)
        without creating anything."""
        body = await self._api.call(
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
        if truthy(body.get("upgradeinprogress")):
            raise await self._pending_refusal(owned.service.client_id, owned.service.id)
        whmcs_price = formatted_money(as_text(body.get("price")))
        # The calculation is what WHMCS will invoice: its pro-rata, or under `difference`
        # our hook's price. Another amount means the hook is missing, or a configurable
        # option, a promotion or another hook changes the price: staff should know.
        if whmcs_price is not None and abs(whmcs_price - quote.amount) > CENT:
            missing = (
                "is the hook integrations/whmcs/upgrade_difference.php installed in "
                "WHMCS's includes/hooks/? (WHMCS's activity log says when it could not "
                "price an upgrade)"
                if self.policy is Policy.DIFFERENCE
                else "a configurable option, a promotion or a hook changes WHMCS's price"
            )
            log.warning(
                "WHMCS calculates %s for upgrading service %s to %s %s; our %s quote says %s: %s",
                whmcs_price,
                owned.service.id,
                product.id,
                cycle,
                quote.policy.value,
                quote.amount,
                missing,
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
        recorded = await self._ledger.recorded(request_id, action)
        if recorded is not None:
            return cancellation_from(recorded)
        owned = await self._own_service(client_id, service_id)
        params = {
            "serviceid": owned.service.id,
            "type": CANCELLATION_TYPES[kind],
            "reason": reason,
        }
        claimed = await self._ledger.claim(request_id, action, client_id, params)
        if claimed is not None:  # a twin of this request got there first
            return cancellation_from(claimed)

        async def look() -> dict[str, Any] | None:
            """After an error answer: a request for the service among the newest ones
            means it was written (WHMCS refuses a second one before writing: there was
            none)."""
            written = await self._cancellation_requested(owned.service.id)
            return {"result": "success"} if written else None

        await self._ledger.send_once(request_id, action, params, look=look)
        result = {
            "id": request_id,
            "service_id": owned.service.id,
            "kind": kind.value,
            "reason": reason,
            "requested_at": datetime.now(UTC).isoformat(),
        }
        await self._ledger.finish(request_id, action, result)
        return cancellation_from(result)

    async def cancellation_requested(self, client_id: str, service_id: str) -> datetime | None:
        """A cancellation the bot asked WHMCS for (its request ledger): done, or whose
        outcome is not known yet (asked, and the answer lost: a person checks it; asking
        again would only be refused). One asked in the client area is not seen here, and
        WHMCS refuses a second (ALREADY_REQUESTED)."""
        requested: datetime | None = await self._pool.fetchval(
            """
            SELECT coalesce((result ->> 'requested_at')::timestamptz, created_at)
            FROM whmcs_requests
            WHERE action = 'AddCancelRequest' AND client_id = $1
              AND params ->> 'serviceid' = $2
            ORDER BY created_at DESC LIMIT 1
            """,
            client_id,
            service_id,
        )
        return requested

    async def _cancellation_requested(self, service_id: str) -> bool:
        """Whether one of the newest cancellation requests is for this service.
        GetCancelledPackages lists every request ever made, oldest first, with no filter:
        the last page is read (a request just written is there)."""
        first = await self._api.call("GetCancelledPackages", {"limitstart": 0, "limitnum": 1})
        total = count(first.get("totalresults"), default=0)
        body = await self._api.call(
            "GetCancelledPackages", {"limitstart": max(0, total - PAGE), "limitnum": PAGE}
        )
        return any(as_text(r.get("relid")) == service_id for r in rows(body, "packages", "package"))

    async def stop_domain_renewal(self, client_id: str, domain_id: str) -> Domain:
        cid, did = wid(client_id), wid(domain_id)
        if cid is None or did is None:
            raise BillingRefused(NOT_FOUND, f"domain {domain_id}")
        found = await self._api.pages(
            "GetClientsDomains", {"clientid": cid, "domainid": did}, "domains", "domain"
        )
        mine = [r for r in found if as_text(r.get("id")) == did and as_text(r.get("userid")) == cid]
        if not mine:
            raise BillingRefused(NOT_FOUND, f"domain {domain_id}")
        # Setting a flag: repeating it is harmless, so it is retried and never "unknown".
        await self._api.call("UpdateClientDomain", {"domainid": did, "donotrenew": "1"})
        return replace(domain_from(mine[0]), auto_renew=False)

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
        if wid(to_client_id) == wid(client_id):
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
        cid, sid = wid(client_id), wid(service_id)
        if cid is None or sid is None:
            return None
        row = await self._service_row(cid, sid)
        if row is None:
            return None
        catalog = await self._catalog.products_or_empty()
        return _OwnedService(service_from(row, catalog), as_text(row.get("paymentmethod")))

    async def _service_row(self, cid: str, sid: str) -> dict[str, Any] | None:
        """GetClientsProducts' record of service `sid` if it is client `cid`'s. Both
        filters, and the answer checked too: WHMCS drops a filter whose value is empty,
        and what it returns must be this client's."""
        found = await self._api.pages(
            "GetClientsProducts", {"clientid": cid, "serviceid": sid}, "products", "product"
        )
        mine = [
            r for r in found if as_text(r.get("id")) == sid and as_text(r.get("clientid")) == cid
        ]
        return mine[0] if mine else None

    async def _own_service(self, client_id: str, service_id: str) -> _OwnedService:
        owned = await self._owned_service(client_id, service_id)
        if owned is None:
            raise BillingRefused(NOT_FOUND, f"service {service_id}")
        return owned

    async def _currency(self, client_id: str) -> str:
        cid = wid(client_id)
        details = None if cid is None else await client_details(self._api, clientid=cid)
        if details is None:
            raise BillingRefused(NOT_FOUND, "client")
        return as_text(details.get("currency_code"))


def _package_upgrade_to(line: str) -> str | None:
    """The new package of GetOrders' line "Package Upgrade: <old> => <new><br>"; None
    for another kind of upgrade (configurable options: "<option>: <old> => <new>")."""
    if not line.startswith("Package Upgrade: "):
        return None
    _, arrow, new = line.rpartition(" => ")
    name = new.removesuffix("<br>").strip()
    return name if arrow and name else None


def _upgraded_to(description: str) -> str | None:
    """What an invoice's Upgrade line moves to: WHMCS writes "<label>: <old> - <domain>"
    then "<old> => <new> (<from> - <to>)", the label in the client's language."""
    for line in reversed(description.splitlines()):
        _, arrow, new = line.rpartition(" => ")
        if arrow:
            name = _PERIOD.sub("", new.replace("<br>", "")).strip()
            return name or None
    return None


def _on_server(row: Mapping[str, Any], server: str) -> bool:
    """Whether a GetClientsProducts record runs on `server`: its WHMCS id, or its name or
    hostname (any case). A service on no server has serverid 0."""
    if wid(server) is not None:
        return wid(row.get("serverid")) == wid(server)
    wanted = server.lower()
    names = (as_text(row.get("servername")), as_text(row.get("serverhostname")))
    return any(name.strip().lower() == wanted for name in names if name.strip())


async def _bounded(jobs: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(run(job) for job in jobs)))


if TYPE_CHECKING:
    # mypy proves the class implements the interface the flows use.
    _implements: type[Billing] = WhmcsBilling
