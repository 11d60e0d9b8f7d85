"""A fake WHMCS API: a real aiohttp server on loopback answering
`POST /includes/api.php` the way WHMCS does.

It holds clients, products, services, invoices and domains in memory, loaded from the
local backend's import format (SPEC §4) and converted to WHMCS's shapes: numeric ids,
cycles like "Annually", statuses like "Active", money as strings, dates "YYYY-MM-DD" or
"0000-00-00". The answers follow WHMCS's own code and documentation (see
`bot/whmcs.py`), quirks included: an empty list is `""` in GetClientsProducts and
GetClientsDomains, GetInvoice says `"status": "error"` instead of `"result"`, some ids
are numbers and others strings, and an unknown billing cycle makes UpgradeProduct print
a bare line of text.

Orders: only the upgrade orders (UpgradeProduct, or `order_upgrade` as the customer in
the client area) are kept, and GetOrders lists those. Invoices change status as in WHMCS:
UpdateInvoice sets it, `pay_invoice` pays only an Unpaid one (a Cancelled invoice cannot
be paid).

Every call is recorded (action and parameters, credentials left out), and failures can
be injected per action: error answers, HTML error pages, slow answers, dropped
connections, unreadable bodies, and "it acted but the answer was lost".

Ids: a record whose SPEC id is all digits keeps it; others get the next free number of
their kind. `ids[kind][spec_id]` gives the WHMCS id (kinds: clients, categories,
products, services, invoices, domains, quotes; and servers, by the `server` a service
names: a server named by digits keeps that id, any other name is the server's name).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import random
import secrets
import signal
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import asyncpg
import phonenumbers
from aiohttp import web

from bot.config import Settings
from bot.serving import serve
from bot.whmcs import WhmcsBilling
from flows.billing import Billing
from flows.phones import parse_phone
from flows.pricing import Policy, add_months
from store import whmcs_index

log = logging.getLogger(__name__)

JSONDict = dict[str, Any]
API_PATH = "/includes/api.php"
# Parameters that are credentials: never recorded.
CREDENTIALS = frozenset({"identifier", "secret", "accesskey", "username", "password"})

# Our cycle names (SPEC §4) → WHMCS's, as GetClientsProducts shows them.
CYCLE_TO_WHMCS = {
    "monthly": "Monthly",
    "quarterly": "Quarterly",
    "semiannually": "Semi-Annually",
    "annually": "Annually",
    "biennially": "Biennially",
    "triennially": "Triennially",
}
_CYCLE_MONTHS = {
    "monthly": 1,
    "quarterly": 3,
    "semiannually": 6,
    "annually": 12,
    "biennially": 24,
    "triennially": 36,
}
_SERVICE_STATUS = {
    "pending": "Pending",
    "active": "Active",
    "suspended": "Suspended",
    "cancelled": "Cancelled",
    "terminated": "Terminated",
}
_INVOICE_STATUS = {"unpaid": "Unpaid", "paid": "Paid", "cancelled": "Cancelled"}
# Every status WHMCS has for an invoice (Invoices::getInvoiceStatusValues).
_WHMCS_INVOICE_STATUSES = (
    "Draft",
    "Unpaid",
    "Paid",
    "Cancelled",
    "Refunded",
    "Collections",
    "Payment Pending",
)
_NO_DATE = "0000-00-00"
_CENT = Decimal("0.01")
_KINDS = ("clients", "categories", "products", "services", "invoices", "domains", "quotes")

_dumps: Callable[[Any], str] = functools.partial(json.dumps, ensure_ascii=False)
BAN_AFTER_FAILED_LOGINS = 3


class FailureKind(Enum):
    ERROR = "error"  # {"result": "error", "message": …}; nothing done
    HTML = "html"  # an HTML error page (a PHP fatal error) with `status`; nothing done
    SLOW = "slow"  # acts, then answers after `delay` seconds
    DROP = "drop"  # closes the connection without acting or answering
    LOST = "lost"  # acts, then closes the connection: the answer is lost
    BAD_JSON = "bad_json"  # acts, then answers 200 with a PHP warning before the JSON
    # Acts, then answers {"result": "error", "message": …}: a write whose hook or module
    # call failed after the row was written (AddCancelRequest, UpgradeProduct do this).
    ERROR_AFTER_WRITE = "error_after_write"


@dataclass(slots=True)
class _Failure:
    kind: FailureKind
    action: str | None  # lower-case action name, None for any
    where: Callable[[Mapping[str, str]], bool] | None  # which calls, by their parameters
    remaining: int
    message: str
    status: int
    delay: float


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One request the fake received, credentials left out."""

    seq: int
    action: str
    params: dict[str, str]
    received_at: datetime


@dataclass(slots=True)
class FakeClient:
    id: int
    firstname: str
    lastname: str
    email: str
    # As WHMCS stores it: "+54.1155551234" with its phone-number dropdown, or as typed.
    phonenumber: str
    countrycode: str
    status: str = "Active"
    email_verified: bool = False
    # Client custom fields by id (a tickbox stores "on").
    customfields: dict[int, str] = field(default_factory=dict)
    # The client's default gateway; None: the installation's first.
    defaultgateway: str | None = None
    companyname: str = ""


@dataclass(slots=True)
class FakeProduct:
    pid: int
    gid: int
    name: str
    # Price per WHMCS cycle column (monthly … triennially); absent = not sold (-1.00).
    prices: dict[str, Decimal]
    paytype: str = "recurring"


@dataclass(slots=True)
class FakeService:
    id: int
    userid: int
    pid: int
    domain: str
    status: str  # WHMCS's: Active, Suspended, …
    billingcycle: str  # WHMCS's: Monthly, Annually, Free Account, …
    amount: Decimal
    nextduedate: date | None
    regdate: date | None
    paymentmethod: str = "banktransfer"
    serverid: int = 0  # tblhosting.server: 0 for none


@dataclass(slots=True)
class FakeServer:
    id: int
    name: str
    hostname: str
    ipaddress: str


@dataclass(slots=True)
class FakeQuote:
    """A quote (tblquotes) for a client, with one line."""

    id: int
    userid: int
    subject: str
    total: Decimal
    validuntil: date | None
    datecreated: date
    stage: str = "Delivered"  # Draft, Delivered, On Hold, Accepted, Lost, Dead


@dataclass(slots=True)
class FakeInvoiceItem:
    id: int
    type: str  # Hosting (relid: service id), Upgrade (relid: upgrade id), …
    relid: int
    description: str
    amount: Decimal


@dataclass(slots=True)
class FakeInvoice:
    id: int
    userid: int
    status: str  # Unpaid, Paid, Cancelled, …
    total: Decimal
    issued: date
    duedate: date
    items: list[FakeInvoiceItem] = field(default_factory=list)
    datepaid: datetime | None = None
    paymentmethod: str = "banktransfer"


@dataclass(slots=True)
class FakeDomain:
    id: int
    userid: int
    domainname: str
    status: str
    donotrenew: bool
    nextduedate: date | None
    expirydate: date | None
    recurringamount: Decimal = Decimal("0.00")


@dataclass(slots=True)
class FakeUpgrade:
    """An upgrade (tblupgrades, type package) and its order (tblorders): waiting for its
    invoice to be paid, or applied."""

    id: int
    serviceid: int
    orderid: int
    invoiceid: int
    newpid: int
    newcycle: str  # our cycle name, as sent
    amount: Decimal
    paid: bool = False
    userid: int = 0
    oldpid: int = 0
    ordered: datetime = field(default_factory=lambda: datetime.now(UTC))
    paymentmethod: str = "banktransfer"


@dataclass(frozen=True, slots=True)
class FakeCancelRequest:
    serviceid: int
    type: str
    reason: str
    date: datetime


class _ApiError(Exception):
    def __init__(self, message: str, status: int = 200, *, key: str = "result") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.key = key


class _PlainText(Exception):
    """WHMCS code that calls exit("…"): a bare line of text instead of JSON."""


def money(value: Decimal) -> str:
    return str(value.quantize(_CENT, rounding=ROUND_HALF_UP))


def _day(value: date | None) -> str:
    return value.isoformat() if value else _NO_DATE


def _parse_day(value: Any) -> date | None:
    return date.fromisoformat(str(value)) if value else None


def whmcs_phone(raw: str, default_region: str) -> tuple[str, str]:
    """How WHMCS stores a phone and the client's country: an international number as
    "+<cc>.<national>" (its phone-number dropdown), anything else as typed."""
    number = parse_phone(raw, default_region)
    if number is None:
        return raw, default_region
    if raw.strip().startswith(("+", "00")):
        region = phonenumbers.region_code_for_number(number) or default_region
        return f"+{number.country_code}.{number.national_number}", region
    return raw, default_region


class FakeWhmcs:
    """WHMCS's API on loopback.

    `upgrade_pricing` picks how UpgradeProduct prices an upgrade: "prorata" is WHMCS as
    installed, its own pro-rata calculation; "difference" is a WHMCS with our hook
    (integrations/whmcs/upgrade_difference.php, on OrderProductUpgradeOverride), which
    prices the help page's rule in the calculation (calconly) and the invoice alike.
    """

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        identifier: str = "fake-identifier",
        secret: str = "fake-secret",
        access_key: str | None = None,
        allowed_actions: Sequence[str] | None = None,
        currency: str = "USD",
        currency_prefix: str = "$",
        currency_suffix: str = " USD",
        currency_format: int = 2,
        payment_methods: Sequence[str] = ("banktransfer", "mercadopago"),
        upgrade_pricing: str = "difference",
        today: date | None = None,
        default_region: str = "AR",
        phone_dropdown: bool = True,
    ) -> None:
        if upgrade_pricing not in ("difference", "prorata"):
            raise ValueError("upgrade_pricing must be 'difference' or 'prorata'")
        self.identifier = identifier
        self.secret = secret
        self.access_key = access_key
        # The API role: None allows every action.
        self.allowed_actions = (
            None if allowed_actions is None else frozenset(a.lower() for a in allowed_actions)
        )
        self.currency = currency
        self.currency_prefix = currency_prefix
        self.currency_suffix = currency_suffix
        if currency_format not in (1, 2, 3, 4):
            raise ValueError("currency_format is WHMCS's 1, 2, 3 or 4")
        self.currency_format = currency_format
        self.payment_methods = tuple(payment_methods)
        self.upgrade_pricing = upgrade_pricing
        self.today = today
        self.default_region = default_region
        # General Settings' phone-number dropdown ("PhoneNumberDropdown"): on, a phone
        # entered is stored "+<cc>.<number>"; off, as typed. It also picks what
        # GetClientsDetails' `telephoneNumber` is.
        self.phone_dropdown = phone_dropdown

        self.clients: dict[int, FakeClient] = {}
        self.groups: dict[int, str] = {}
        self.products: dict[int, FakeProduct] = {}
        self.upgrade_paths: dict[int, list[int]] = {}
        self.services: dict[int, FakeService] = {}
        self.invoices: dict[int, FakeInvoice] = {}
        self.domains: dict[int, FakeDomain] = {}
        self.servers: dict[int, FakeServer] = {}
        self.quotes: dict[int, FakeQuote] = {}
        self.upgrades: dict[int, FakeUpgrade] = {}
        self.cancel_requests: list[FakeCancelRequest] = []
        self.ids: dict[str, dict[str, str]] = {kind: {} for kind in (*_KINDS, "servers")}
        self.calls: list[ApiCall] = []

        self._failures: deque[_Failure] = deque()
        self._failed_logins: dict[str, int] = {}
        # How MySQL happens to order rows that tie under ORDER BY (seeded: reproducible).
        self._ties = random.Random(7)
        self._seq = 0
        self._next_order = 1
        self._next_item = 1
        self._next_upgrade = 1
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        if data is not None:
            self.load(data)

    # --- data ------------------------------------------------------------------------

    def load(self, data: Mapping[str, Any]) -> None:
        """Add the records of SPEC §4's import format, converted to WHMCS's shapes."""
        for kind in _KINDS:
            self._assign_ids(kind, data.get(kind, []))
        named = sorted({str(s["server"]) for s in data.get("services", []) if s.get("server")})
        self._assign_ids("servers", [{"id": name} for name in named])
        for name in named:
            server_id = int(self.ids["servers"][name])
            if server_id not in self.servers:
                host = name if not name.isdigit() else f"server{server_id}"
                self.servers[server_id] = FakeServer(
                    server_id, host, f"{host}.example.com", f"192.0.2.{server_id % 250 + 1}"
                )
        for c in data.get("clients", []):
            name = str(c["name"]).strip()
            first, _, last = name.partition(" ")
            phone, country = whmcs_phone(str(c.get("phone", "")), self.default_region)
            if not self.phone_dropdown:
                phone = str(c.get("phone", ""))
            cid = int(self.ids["clients"][str(c["id"])])
            self.clients[cid] = FakeClient(
                id=cid,
                firstname=first,
                lastname=last,
                email=str(c["email"]),
                phonenumber=phone,
                countrycode=country,
                email_verified=bool(c.get("verified", False)),
            )
        for cat in data.get("categories", []):
            self.groups[int(self.ids["categories"][str(cat["id"])])] = str(cat["name"])
        for p in data.get("products", []):
            pid = int(self.ids["products"][str(p["id"])])
            self.products[pid] = FakeProduct(
                pid=pid,
                gid=int(self.ids["categories"][str(p["category"])]),
                name=str(p["name"]),
                prices={cycle: Decimal(str(v)) for cycle, v in p.get("prices", {}).items()},
            )
        for p in data.get("products", []):
            self.upgrade_paths[int(self.ids["products"][str(p["id"])])] = [
                int(self.ids["products"][str(t)]) for t in p.get("upgrades_to", [])
            ]
        for s in data.get("services", []):
            sid = int(self.ids["services"][str(s["id"])])
            self.services[sid] = FakeService(
                id=sid,
                userid=int(self.ids["clients"][str(s["client"])]),
                pid=int(self.ids["products"][str(s["product"])]),
                domain=str(s.get("label", "")),
                status=_SERVICE_STATUS[str(s["status"])],
                billingcycle=CYCLE_TO_WHMCS[str(s["billing_cycle"])],
                amount=Decimal(str(s["amount"])),
                nextduedate=_parse_day(s.get("next_due")),
                regdate=_parse_day(s.get("period_start")),
                serverid=int(self.ids["servers"][str(s["server"])]) if s.get("server") else 0,
            )
        for i in data.get("invoices", []):
            iid = int(self.ids["invoices"][str(i["id"])])
            due = _parse_day(i.get("due")) or self._today()
            total = Decimal(str(i["total"]))
            invoice = FakeInvoice(
                id=iid,
                userid=int(self.ids["clients"][str(i["client"])]),
                status=_INVOICE_STATUS[str(i["status"])],
                total=total,
                issued=due,
                duedate=due,
                datepaid=datetime.combine(due, datetime.min.time(), UTC)
                if i["status"] == "paid"
                else None,
            )
            if i.get("service"):
                service = self.services[int(self.ids["services"][str(i["service"])])]
                invoice.items.append(
                    self._item("Hosting", service.id, self._service_line(service), total)
                )
            self.invoices[iid] = invoice
        for d in data.get("domains", []):
            did = int(self.ids["domains"][str(d["id"])])
            next_due = _parse_day(d.get("next_due"))
            self.domains[did] = FakeDomain(
                id=did,
                userid=int(self.ids["clients"][str(d["client"])]),
                domainname=str(d["name"]),
                status=str(d.get("status", "active")).replace("_", " ").title(),
                donotrenew=not bool(d.get("auto_renew", True)),
                nextduedate=next_due,
                expirydate=next_due,
            )
        for q in data.get("quotes", []):
            qid = int(self.ids["quotes"][str(q["id"])])
            self.quotes[qid] = FakeQuote(
                id=qid,
                userid=int(self.ids["clients"][str(q["client"])]),
                subject=str(q.get("subject") or ""),
                total=Decimal(str(q["total"])),
                validuntil=_parse_day(q.get("valid_until")),
                datecreated=self._today(),
            )

    def _assign_ids(self, kind: str, records: Sequence[Mapping[str, Any]]) -> None:
        known = self.ids[kind]
        taken = {int(v) for v in known.values()}
        taken |= {int(str(r["id"])) for r in records if str(r["id"]).isdigit()}
        following = max(taken, default=0) + 1
        for record in records:
            spec_id = str(record["id"])
            if spec_id in known:
                continue
            if spec_id.isdigit():
                known[spec_id] = str(int(spec_id))
            else:
                known[spec_id] = str(following)
                following += 1

    def wid(self, kind: str, spec_id: str) -> str:
        """The WHMCS id of a record loaded with `spec_id`."""
        return self.ids[kind][spec_id]

    def upgrades_toml(self) -> str:
        """The upgrade paths and group names in `config/whmcs_upgrades.toml`'s format."""
        lines = ["[upgrades]"]
        for pid, targets in sorted(self.upgrade_paths.items()):
            listed = ", ".join(f'"{t}"' for t in targets)
            lines.append(f'"{pid}" = [{listed}]')
        lines += ["", "[categories]"]
        for gid, name in sorted(self.groups.items()):
            lines.append(f'"{gid}" = {json.dumps(name, ensure_ascii=False)}')
        return "\n".join(lines) + "\n"

    def settings_for(self, settings: Settings, upgrades_file: Path) -> Settings:
        """`settings` for a WHMCS backend talking to this (started) fake, its upgrade
        paths written to `upgrades_file`."""
        upgrades_file.write_text(self.upgrades_toml(), encoding="utf-8")
        return settings.with_(
            billing_backend="whmcs",
            whmcs_url=self.base_url,
            whmcs_identifier=self.identifier,
            whmcs_secret=self.secret,
            whmcs_access_key=self.access_key or "",
            whmcs_upgrades_file=upgrades_file,
        )

    def order_upgrade(self, service_id: int | str, product_id: int | str, cycle: str) -> int:
        """The customer orders an upgrade in the client area (upgrade.php): the same order,
        upgrade and invoice as UpgradeProduct makes, through the service's own gateway.
        Returns the invoice's id (0: nothing to pay, applied at once)."""
        service = self.services[int(service_id)]
        placed = self._upgrade_product(
            {
                "serviceid": str(service.id),
                "type": "product",
                "newproductid": str(product_id),
                "newproductbillingcycle": cycle,
                "paymentmethod": service.paymentmethod,
            }
        )
        return int(placed["invoiceid"])

    def pay_invoice(self, invoice_id: int | str, *, when: datetime | None = None) -> None:
        """Mark an invoice paid as a payment gateway would, and apply what each item pays
        for as WHMCS's processPaidInvoice does: an Upgrade item applies the upgrade
        (WHMCS keeps the next due date and recalculates the recurring price), a Hosting
        item renews the service. Only an Unpaid invoice is processed: paid again, or
        cancelled, nothing happens."""
        invoice = self.invoices[int(invoice_id)]
        if invoice.status != "Unpaid":
            return
        invoice.status = "Paid"
        invoice.datepaid = when or datetime.now(UTC)
        for item in invoice.items:
            if item.type == "Upgrade" and item.relid in self.upgrades:
                self._apply(self.upgrades[item.relid])
            elif item.type == "Hosting" and item.relid in self.services:
                self._renew(self.services[item.relid])

    def _renew(self, service: FakeService) -> None:
        """WHMCS's makeHostingPayment: the next due date moves one billing cycle on from
        where it was (getInvoicePayUntilDate), and a suspended service is unsuspended when
        "Enable Unsuspension" is on, the suspension has no custom reason and the new next
        due date is no more than "Suspend Days" behind today. This fake is a WHMCS with
        that option on, Suspend Days 0 and no suspension reasons."""
        cycle = _cycle_of(service.billingcycle)
        if service.nextduedate is None or cycle is None:
            return
        service.nextduedate = add_months(service.nextduedate, _CYCLE_MONTHS[cycle])
        if service.status == "Suspended" and service.nextduedate >= self._today():
            service.status = "Active"

    def _apply(self, upgrade: FakeUpgrade) -> None:
        """The upgrade takes effect: WHMCS recalculates the recurring price and keeps the
        next due date; under "difference" our hook (upgrade_difference.php, on
        AfterProductUpgrade) then starts the new cycle's period today."""
        upgrade.paid = True
        service = self.services[upgrade.serviceid]
        product = self.products[upgrade.newpid]
        service.pid = product.pid
        service.billingcycle = CYCLE_TO_WHMCS[upgrade.newcycle]
        service.amount = product.prices[upgrade.newcycle]
        if self.upgrade_pricing == "difference":
            service.nextduedate = add_months(self._today(), _CYCLE_MONTHS[upgrade.newcycle])

    def _today(self) -> date:
        return self.today or datetime.now(UTC).date()

    def _item(self, type_: str, relid: int, description: str, amount: Decimal) -> FakeInvoiceItem:
        item = FakeInvoiceItem(self._next_item, type_, relid, description, amount)
        self._next_item += 1
        return item

    def _service_line(self, service: FakeService) -> str:
        product = self.products.get(service.pid)
        name = product.name if product else f"Product {service.pid}"
        return f"{name} - {service.domain}" if service.domain else name

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What WHMCS_URL is set to (the API is at `<base_url>/includes/api.php`)."""
        if self._base_url is None:
            raise RuntimeError("the fake WHMCS is not started")
        return self._base_url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._runner is not None:
            raise RuntimeError("already started")
        app = web.Application()
        app.router.add_post(API_PATH, self._handle)
        self._closing.clear()
        self._runner, self._base_url = await serve(app, host, port, shutdown_timeout=1.0)
        log.info("fake WHMCS serving on %s", self._base_url)
        return self._base_url

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- failure injection and records ----------------------------------------------------

    def fail_next(
        self,
        action: str | None,
        kind: FailureKind,
        *,
        count: int = 1,
        where: Callable[[Mapping[str, str]], bool] | None = None,
        message: str = "An unexpected error occurred",
        status: int = 500,
        delay: float = 5.0,
    ) -> None:
        """The next `count` calls of `action` (any action if None) whose parameters
        satisfy `where` (if given) fail as `kind`: `message` for ERROR, the HTTP `status`
        for HTML, `delay` seconds for SLOW."""
        if count < 1:
            raise ValueError("count must be at least 1")
        name = action.lower() if action else None
        self._failures.append(_Failure(kind, name, where, count, message, status, delay))

    def clear_failures(self) -> None:
        self._failures.clear()

    def calls_of(self, action: str) -> list[ApiCall]:
        return [c for c in self.calls if c.action.lower() == action.lower()]

    def _take_failure(self, action: str, params: Mapping[str, str]) -> _Failure | None:
        for failure in self._failures:
            if (failure.action is None or failure.action == action.lower()) and (
                failure.where is None or failure.where(params)
            ):
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                return failure
        return None

    # --- the API route -------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        params = {key: str(value) for key, value in form.items()}
        action = params.get("action", "")
        self._seq += 1
        self.calls.append(
            ApiCall(
                seq=self._seq,
                action=action,
                params={k: v for k, v in params.items() if k not in CREDENTIALS},
                received_at=datetime.now(UTC),
            )
        )
        failure = self._take_failure(action, params)
        if failure is not None and failure.kind is FailureKind.ERROR:
            return self._json({"result": "error", "message": failure.message})
        if failure is not None and failure.kind is FailureKind.HTML:
            return _html_error(failure.status)
        if failure is not None and failure.kind is FailureKind.DROP:
            return self._drop(request)

        try:
            self._authenticate(params, request.remote or "127.0.0.1")
            body = self._dispatch(action.lower(), params)
        except _ApiError as error:
            body = {error.key: "error", "message": error.message}
            return self._json(body, error.status)
        except _PlainText as text:
            return web.Response(text=str(text), content_type="text/html")

        if failure is not None and failure.kind is FailureKind.LOST:
            return self._drop(request)
        if failure is not None and failure.kind is FailureKind.ERROR_AFTER_WRITE:
            return self._json({"result": "error", "message": failure.message})
        if failure is not None and failure.kind is FailureKind.SLOW:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), failure.delay)
        if failure is not None and failure.kind is FailureKind.BAD_JSON:
            notice = (
                '<br />\n<b>Warning</b>:  Undefined array key "gid" in '
                "<b>/home/whmcs/public_html/includes/api/upgradeproduct.php</b> on line "
                "<b>42</b><br />\n"
            )
            return web.Response(text=notice + _dumps(body), content_type="text/html")
        if params.get("responsetype", "").lower() != "json":
            return web.Response(text=_xml(body), content_type="text/xml")
        return self._json(body)

    def _json(self, body: JSONDict, status: int = 200) -> web.Response:
        return web.json_response(body, status=status, dumps=_dumps)

    def _drop(self, request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=204)

    def _authenticate(self, params: dict[str, str], remote: str) -> None:
        # WHMCS's messages (its API authentication): a wrong identifier and a wrong secret
        # answer differently; without the access key the IP allow-list applies.
        if not params.get("identifier") or not params.get("secret"):
            raise _ApiError("Authentication Failed", 403)
        if self._failed_logins.get(remote, 0) >= BAN_AFTER_FAILED_LOGINS:
            # WHMCS bans an address after repeated failed logins: right credentials are
            # refused too until staff lift the ban.
            raise _ApiError(f"Your IP {remote} has been banned", 403)
        if params["identifier"] != self.identifier:
            self._failed_logins[remote] = self._failed_logins.get(remote, 0) + 1
            raise _ApiError("Invalid or missing credentials", 403)
        if not secrets.compare_digest(params["secret"], self.secret):
            self._failed_logins[remote] = self._failed_logins.get(remote, 0) + 1
            raise _ApiError("Authentication Failed", 403)
        if self.access_key is not None and not secrets.compare_digest(
            params.get("accesskey", ""), self.access_key
        ):
            raise _ApiError(f"Invalid IP {remote}", 403)
        action = params.get("action", "").lower()
        if self.allowed_actions is not None and action not in self.allowed_actions:
            raise _ApiError(f'Invalid Permissions: API action "{action}" is not allowed', 403)

    def _dispatch(self, action: str, params: dict[str, str]) -> JSONDict:
        handlers: dict[str, Callable[[dict[str, str]], JSONDict]] = {
            "getclients": self._get_clients,
            "getclientsdetails": self._get_clients_details,
            "getclientsproducts": self._get_clients_products,
            "getproducts": self._get_products,
            "getinvoices": self._get_invoices,
            "getinvoice": self._get_invoice,
            "updateinvoice": self._update_invoice,
            "getorders": self._get_orders,
            "getquotes": self._get_quotes,
            "getpaymentmethods": self._get_payment_methods,
            "upgradeproduct": self._upgrade_product,
            "addcancelrequest": self._add_cancel_request,
            "getcancelledpackages": self._get_cancelled_packages,
            "getclientsdomains": self._get_clients_domains,
            "updateclientdomain": self._update_client_domain,
            "createssotoken": self._create_sso_token,
        }
        handler = handlers.get(action)
        if handler is None:
            raise _ApiError(f'Invalid API Action: "{action}"', 403)
        return handler(params)

    # --- clients ---------------------------------------------------------------------------

    def _get_clients(self, params: dict[str, str]) -> JSONDict:
        start, num = _int(params.get("limitstart")), _int(params.get("limitnum")) or 25
        search = params.get("search", "").strip().lower()
        # WHMCS: ucfirst(strtolower(status)), one of its three client statuses or an error.
        status = params.get("status", "").lower().capitalize()
        statuses = ("Active", "Inactive", "Closed")
        if status and status not in statuses:
            raise _ApiError(
                "Invalid client status supplied. Supported client statuses include: "
                + ", ".join(statuses)
            )
        rows = sorted(self.clients.values(), key=lambda c: c.id)
        if params.get("orderby", "lastname") not in ("id", ""):
            rows.sort(key=lambda c: (c.lastname.lower(), c.id))
        if params.get("sorting", "").upper() == "DESC":
            rows.reverse()
        if status:
            rows = [c for c in rows if c.status == status]
        if search:
            rows = [
                c
                for c in rows
                if any(
                    value.lower().startswith(search)
                    for value in (c.email, c.firstname, c.lastname, c.companyname, _full(c))
                )
            ]
        page = rows[start : start + num]
        body: JSONDict = {
            "result": "success",
            "totalresults": len(rows),
            "startnumber": start,
            "numreturned": len(page),
        }
        if page:
            body["clients"] = {
                "client": [
                    {
                        "id": c.id,
                        "firstname": c.firstname,
                        "lastname": c.lastname,
                        "companyname": c.companyname,
                        "email": c.email,
                        "datecreated": "2024-01-01",
                        "groupid": 0,
                        "status": c.status,
                    }
                    for c in page
                ]
            }
        return body

    def _get_clients_details(self, params: dict[str, str]) -> JSONDict:
        client: FakeClient | None = None
        if params.get("clientid"):
            client = self.clients.get(_int(params["clientid"]))
        elif params.get("email"):
            wanted = params["email"].strip().lower()
            client = next((c for c in self.clients.values() if c.email.lower() == wanted), None)
        else:
            raise _ApiError("Either clientid Or email Is Required")
        if client is None:
            raise _ApiError("Client Not Found")
        details = self._client_details(client)
        # The deprecated top-level copy of the details, as WHMCS still sends it.
        return {"result": "success", **details, "client": details}

    def _client_details(self, c: FakeClient) -> JSONDict:
        # WHMCS's Client::formatPhoneNumber: the digits after the calling code lose their
        # leading zeros, except in Italy, where the zero is part of the number.
        phonecc, number = _split_phone(c.phonenumber, c.countrycode)
        trimmed = number if phonecc == "39" else number.lstrip("0")
        formatted = f"+{phonecc}.{trimmed}" if phonecc and number else number
        return {
            "userid": c.id,
            "client_id": c.id,
            "id": c.id,
            "uuid": f"00000000-0000-4000-8000-{c.id:012d}",
            "firstname": c.firstname,
            "lastname": c.lastname,
            "fullname": _full(c),
            "companyname": c.companyname,
            "email": c.email,
            "address1": "",
            "city": "",
            "countrycode": c.countrycode,
            "country": c.countrycode,
            "phonenumber": number,
            "phonecc": phonecc,
            "phonenumberformatted": formatted,
            # The phone as typed when the dropdown is off: the only field where an
            # international number on a client of another country is still itself.
            "telephoneNumber": formatted if self.phone_dropdown else c.phonenumber.strip(),
            "currency": 1,
            "currency_code": self.currency,
            "defaultgateway": c.defaultgateway
            or (self.payment_methods[0] if self.payment_methods else ""),
            "groupid": 0,
            "status": c.status,
            "credit": "0.00",
            "email_verified": c.email_verified,
            "customfields": [{"id": k, "value": v} for k, v in sorted(c.customfields.items())],
            "language": "spanish",
        }

    def _create_sso_token(self, params: dict[str, str]) -> JSONDict:
        if _int(params.get("client_id")) not in self.clients:
            raise _ApiError("A valid client_id or user_id is required")
        token = secrets.token_hex(20)
        return {
            "result": "success",
            "access_token": token,
            "redirect_url": f"{self.base_url}/oauth/singlesignon.php?access_token={token}",
        }

    # --- products and services -------------------------------------------------------------

    def _get_products(self, params: dict[str, str]) -> JSONDict:
        rows = sorted(self.products.values(), key=lambda p: (p.gid, p.pid))
        if params.get("pid"):
            wanted = {_int(p) for p in params["pid"].split(",")}
            rows = [p for p in rows if p.pid in wanted]
        if params.get("gid"):
            rows = [p for p in rows if p.gid == _int(params["gid"])]
        body: JSONDict = {"result": "success", "totalresults": len(rows)}
        if rows:
            body["products"] = {"product": [self._product(p) for p in rows]}
        return body

    def _product(self, p: FakeProduct) -> JSONDict:
        pricing: JSONDict = {"prefix": self.currency_prefix, "suffix": self.currency_suffix}
        for cycle in _CYCLE_MONTHS:
            pricing[f"{cycle[0]}setupfee"] = "0.00"
        for cycle in _CYCLE_MONTHS:
            pricing[cycle] = money(p.prices[cycle]) if cycle in p.prices else "-1.00"
        return {
            "pid": p.pid,
            "gid": p.gid,
            "type": "hostingaccount",
            "name": p.name,
            "slug": p.name.lower().replace(" ", "-"),
            "product_url": f"https://example.com/store/{p.gid}/{p.pid}",
            "description": "",
            "module": "cpanel",
            "paytype": p.paytype,
            "pricing": {self.currency: pricing},
            "customfields": {"customfield": []},
            "configoptions": {"configoption": []},
        }

    def _get_clients_products(self, params: dict[str, str]) -> JSONDict:
        rows = sorted(self.services.values(), key=lambda s: s.id)
        # WHMCS filters only on the parameters that are set: an empty clientid lists
        # every client's services (the adapter must never send one).
        if params.get("clientid"):
            rows = [s for s in rows if s.userid == _int(params["clientid"])]
        if params.get("serviceid"):
            rows = [s for s in rows if s.id == _int(params["serviceid"])]
        if params.get("pid"):
            rows = [s for s in rows if s.pid == _int(params["pid"])]
        if params.get("domain"):
            rows = [s for s in rows if s.domain == params["domain"]]
        start = _int(params.get("limitstart"))
        num = _int(params.get("limitnum")) or 999999
        page = rows[start : start + num]
        body: JSONDict = {
            "result": "success",
            "clientid": params.get("clientid"),
            "serviceid": params.get("serviceid"),
            "pid": params.get("pid"),
            "domain": params.get("domain"),
            "totalresults": len(rows),
            "startnumber": start,
            "numreturned": len(page),
        }
        body["products"] = {"product": [self._service(s) for s in page]} if rows else ""
        return body

    def _service(self, s: FakeService) -> JSONDict:
        product = self.products.get(s.pid)
        group = self.groups.get(product.gid, "") if product else ""
        server = self.servers.get(s.serverid)
        return {
            "id": str(s.id),
            "clientid": str(s.userid),
            "orderid": str(s.id),
            "ordernumber": f"{1000000000 + s.id}",
            "pid": str(s.pid),
            "regdate": _day(s.regdate),
            "name": product.name if product else "",
            "translated_name": product.name if product else "",
            "groupname": group,
            "translated_groupname": group,
            "domain": s.domain,
            "dedicatedip": "",
            # tblhosting.server, and tblservers' name|ipaddress|hostname split: with no
            # server, "0", "" and nulls.
            "serverid": str(s.serverid),
            "servername": server.name if server else "",
            "serverip": server.ipaddress if server else None,
            "serverhostname": server.hostname if server else None,
            "suspensionreason": "",
            "firstpaymentamount": money(s.amount),
            "recurringamount": money(s.amount),
            "paymentmethod": s.paymentmethod,
            "paymentmethodname": "Bank Transfer",
            "billingcycle": s.billingcycle,
            "nextduedate": _day(s.nextduedate),
            "status": s.status,
            "username": "user",
            "password": "not-shown",
            "subscriptionid": "",
            "promoid": "0",
            "overideautosuspend": "0",
            "overidesuspenduntil": _NO_DATE,
            "ns1": "",
            "ns2": "",
            "assignedips": "",
            "notes": "",
            "diskusage": "0",
            "disklimit": "0",
            "bwusage": "0",
            "bwlimit": "0",
            "lastupdate": "0000-00-00 00:00:00",
            "customfields": {"customfield": []},
            "configoptions": {"configoption": []},
        }

    # --- invoices ----------------------------------------------------------------------------

    def _get_invoices(self, params: dict[str, str]) -> JSONDict:
        rows = list(self.invoices.values())
        if params.get("userid"):
            rows = [i for i in rows if i.userid == _int(params["userid"])]
        status = params.get("status", "")
        if status == "Overdue":
            rows = [i for i in rows if i.status == "Unpaid" and i.duedate < self._today()]
        elif status:
            rows = [i for i in rows if i.status == status]
        rows = self._ordered_invoices(rows, params.get("orderby", ""), params.get("order", ""))
        start, num = _int(params.get("limitstart")), _int(params.get("limitnum")) or 25
        page = rows[start : start + num]
        listed: JSONDict | list[Any] = (
            {"invoice": [self._invoice_row(i) for i in page]} if page else []
        )
        return {
            "result": "success",
            "totalresults": len(rows),
            "startnumber": start,
            "numreturned": len(page),
            "invoices": listed,
        }

    def _get_payment_methods(self, params: dict[str, str]) -> JSONDict:
        """The active gateways; a service whose `paymentmethod` is not among them bills
        through a disabled one (WHMCS refuses its upgrade only when it is placed)."""
        methods = [
            {"module": m, "displayname": m.replace("_", " ").title()} for m in self.payment_methods
        ]
        return {
            "result": "success",
            "totalresults": len(methods),
            "paymentmethods": {"paymentmethod": methods},
        }

    def _ordered_invoices(
        self, rows: list[FakeInvoice], orderby: str, order: str
    ) -> list[FakeInvoice]:
        """GetInvoices' ORDER BY as the database runs it: by `orderby` (by default status
        descending, then due date) with nothing to break ties, so invoices that tie come
        back in any order, a different one from one call to the next — offset paging over
        them skips some and repeats others. Only `orderby=id` is a total order."""
        descending = order.lower() == "desc"
        if orderby == "id":
            return sorted(rows, key=lambda i: i.id, reverse=descending)
        keys: dict[str, Callable[[FakeInvoice], Any]] = {
            "duedate": lambda i: i.duedate,
            "date": lambda i: i.issued,
            "total": lambda i: i.total,
            "status": lambda i: i.status,
        }
        shuffled = list(rows)
        self._ties.shuffle(shuffled)
        if orderby in keys:
            return sorted(shuffled, key=keys[orderby], reverse=descending)
        by_due = sorted(shuffled, key=lambda i: i.duedate)
        return sorted(by_due, key=lambda i: i.status, reverse=True)

    def _invoice_row(self, i: FakeInvoice) -> JSONDict:
        client = self.clients.get(i.userid)
        return {
            "id": i.id,
            "userid": i.userid,
            "firstname": client.firstname if client else "",
            "lastname": client.lastname if client else "",
            "companyname": "",
            "invoicenum": "",
            "date": i.issued.isoformat(),
            "duedate": i.duedate.isoformat(),
            "datepaid": i.datepaid.strftime("%Y-%m-%d %H:%M:%S")
            if i.datepaid
            else "0000-00-00 00:00:00",
            "subtotal": money(i.total),
            "credit": "0.00",
            "tax": "0.00",
            "tax2": "0.00",
            "total": money(i.total),
            "taxrate": "0.00",
            "taxrate2": "0.00",
            "status": i.status,
            "paymentmethod": i.paymentmethod,
            "notes": "",
            "currencycode": self.currency,
            "currencyprefix": self.currency_prefix,
            "currencysuffix": self.currency_suffix,
        }

    def _get_invoice(self, params: dict[str, str]) -> JSONDict:
        invoice = self.invoices.get(_int(params.get("invoiceid")))
        if invoice is None:
            # WHMCS's quirk: this error says "status", not "result".
            raise _ApiError("Invoice ID Not Found", key="status")
        row = self._invoice_row(invoice)
        paid = invoice.total if invoice.status == "Paid" else Decimal("0.00")
        body: JSONDict = {
            "result": "success",
            "invoiceid": invoice.id,
            "invoicenum": "",
            "userid": str(invoice.userid),
            **{k: row[k] for k in ("date", "duedate", "datepaid", "subtotal", "credit")},
            **{k: row[k] for k in ("tax", "tax2", "total", "taxrate", "taxrate2", "status")},
            "balance": money(invoice.total - paid),
            "paymentmethod": invoice.paymentmethod,
            "notes": "",
            "ccgateway": False,
            # No items (an invoice made by hand, then emptied): "", as WHMCS sends an
            # empty collection.
            "items": {
                "item": [
                    {
                        "id": str(item.id),
                        "type": item.type,
                        "relid": str(item.relid),
                        "description": item.description,
                        "amount": money(item.amount),
                        "taxed": "0",
                    }
                    for item in invoice.items
                ]
            }
            if invoice.items
            else "",
            "transactions": "",
        }
        return body

    def _update_invoice(self, params: dict[str, str]) -> JSONDict:
        """WHMCS's updateinvoice.php for what the bot sends: the status (any of WHMCS's,
        set as it is: cancelling a paid invoice is the caller's mistake to avoid), and
        the dates and gateway."""
        invoice = self.invoices.get(_int(params.get("invoiceid")))
        if invoice is None:
            raise _ApiError("Invoice ID Not Found")
        status = params.get("status", "")
        if status and status not in _WHMCS_INVOICE_STATUSES:
            raise _ApiError(f"Invalid status {status}")
        if status:
            invoice.status = status
        if params.get("date"):
            invoice.issued = date.fromisoformat(params["date"])
        if params.get("duedate"):
            invoice.duedate = date.fromisoformat(params["duedate"])
        if params.get("paymentmethod"):
            invoice.paymentmethod = params["paymentmethod"]
        return {"result": "success", "invoiceid": invoice.id}

    def _get_orders(self, params: dict[str, str]) -> JSONDict:
        """WHMCS's getorders.php over the upgrade orders: newest first, filtered by id,
        userid and status, every tblorders value a string, the order invoice's status as
        `paymentstatus` (null without an invoice), each upgrade as a line of type
        "upgrade" whose relid is the service. No order: no `orders` key."""
        found = sorted(self.upgrades.values(), key=lambda u: u.orderid, reverse=True)
        if _int(params.get("id")):
            found = [u for u in found if u.orderid == _int(params["id"])]
        if _int(params.get("userid")):
            found = [u for u in found if u.userid == _int(params["userid"])]
        if params.get("status"):
            found = [u for u in found if params["status"] == "Pending"]
        start, num = _int(params.get("limitstart")), _int(params.get("limitnum")) or 25
        page = found[start : start + num]
        body: JSONDict = {
            "result": "success",
            "totalresults": str(len(found)),
            "startnumber": start,
            "numreturned": len(page),
        }
        if page:
            body["orders"] = {"order": [self._order(u) for u in page]}
        return body

    def _order(self, u: FakeUpgrade) -> JSONDict:
        client = self.clients.get(u.userid)
        invoice = self.invoices.get(u.invoiceid)
        old = self.products.get(u.oldpid)
        new = self.products.get(u.newpid)
        return {
            "id": str(u.orderid),
            "ordernum": f"{5000000000 + u.orderid}",
            "userid": str(u.userid),
            "contactid": "0",
            "requestor_id": "0",
            "admin_requestor_id": "0",
            "date": u.ordered.strftime("%Y-%m-%d %H:%M:%S"),
            "nameservers": "",
            "transfersecret": "",
            "renewals": "",
            "promocode": "",
            "promotype": "",
            "promovalue": "",
            "orderdata": "[]",
            "amount": money(u.amount),
            "paymentmethod": u.paymentmethod,
            "invoiceid": str(u.invoiceid),
            "status": "Pending",
            "ipaddress": "",
            "fraudmodule": "",
            "fraudoutput": "",
            "notes": "",
            "paymentmethodname": u.paymentmethod.replace("_", " ").title(),
            "paymentstatus": invoice.status if invoice else None,
            "name": _full(client) if client else "",
            "currencyprefix": self.currency_prefix,
            "currencysuffix": self.currency_suffix,
            "frauddata": "",
            "validationdata": "",
            "lineitems": {
                "lineitem": [
                    {
                        "type": "upgrade",
                        "relid": str(u.serviceid),
                        "producttype": "Upgrade",
                        "product": f"Package Upgrade: {old.name if old else ''} => "
                        f"{new.name if new else ''}<br>",
                        "domain": "",
                        "billingcycle": "",
                        "amount": self._formatted(u.amount),
                        "status": "Completed" if u.paid else "Pending",
                    }
                ]
            },
        }

    # --- quotes --------------------------------------------------------------------------------

    def _get_quotes(self, params: dict[str, str]) -> JSONDict:
        """WHMCS's getquotes.php: whole tblquotes rows (every value a string, as its old
        database layer fetches them), newest first, filtered by whichever of quoteid,
        userid, subject, stage, datecreated, lastmodified and validuntil are set (an
        empty or "0" one is dropped: no quoteid lists every quote), each with its lines
        under items.item. No match is not an error: an empty list."""
        rows = sorted(self.quotes.values(), key=lambda q: q.id, reverse=True)
        if params.get("quoteid", "") not in ("", "0"):
            rows = [q for q in rows if q.id == _int(params["quoteid"])]
        if params.get("userid", "") not in ("", "0"):
            rows = [q for q in rows if q.userid == _int(params["userid"])]
        if params.get("subject"):
            rows = [q for q in rows if q.subject == params["subject"]]
        if params.get("stage"):
            rows = [q for q in rows if q.stage == params["stage"]]
        if params.get("validuntil"):
            rows = [q for q in rows if _day(q.validuntil) == params["validuntil"]]
        if params.get("datecreated"):
            rows = [q for q in rows if _day(q.datecreated) == params["datecreated"]]
        start, num = _int(params.get("limitstart")), _int(params.get("limitnum")) or 25
        page = rows[start : start + num]
        return {
            "result": "success",
            "totalresults": str(len(rows)),
            "startnumber": start,
            "numreturned": len(page),
            "quotes": {"quote": [self._quote(q) for q in page]},
        }

    def _quote(self, q: FakeQuote) -> JSONDict:
        total = money(q.total)
        created = _day(q.datecreated)
        return {
            "id": str(q.id),
            "subject": q.subject,
            "stage": q.stage,
            "validuntil": _day(q.validuntil),
            "userid": str(q.userid),
            # A quote for a client keeps the prospect's fields empty.
            **dict.fromkeys(
                ("firstname", "lastname", "companyname", "email", "address1", "address2"), ""
            ),
            **dict.fromkeys(("city", "state", "postcode", "country", "phonenumber"), ""),
            "tax_id": "",
            "currency": "1",
            "subtotal": total,
            "tax1": "0.00",
            "tax2": "0.00",
            "total": total,
            "proposal": "",
            "customernotes": "",
            "adminnotes": "",
            "datecreated": created,
            "lastmodified": f"{created} 00:00:00",
            "datesent": created if q.stage != "Draft" else _NO_DATE,
            "dateaccepted": _NO_DATE,
            "items": {
                "item": [
                    {
                        "id": str(q.id),
                        "description": q.subject or "Quote",
                        "quantity": "1",
                        "unitprice": total,
                        "discount": "0.00",
                        "taxable": "0",
                    }
                ]
            },
        }

    # --- upgrades ------------------------------------------------------------------------------

    def _upgrade_product(self, params: dict[str, str]) -> JSONDict:
        service = self.services.get(_int(params.get("serviceid")))
        if service is None:
            raise _ApiError("Service ID Not Found")
        # PHP's truthiness, as WHMCS reads it: any string but "" and "0" — "false" too.
        calconly = params.get("calconly", "") not in ("", "0")
        in_progress = any(
            u.serviceid == service.id and not u.paid and self._unpaid(u.invoiceid)
            for u in self.upgrades.values()
        )
        if not calconly:
            if in_progress:
                raise _ApiError(
                    "Unable to accept upgrade order. Previous upgrade invoice for service "
                    "is still unpaid."
                )
            if params.get("paymentmethod") not in self.payment_methods:
                raise _ApiError(
                    "Invalid Payment Method. Valid options include "
                    + ",".join(self.payment_methods)
                )
        if params.get("type") != "product":
            raise _ApiError("Invalid Upgrade Type")
        product = self.products.get(_int(params.get("newproductid")))
        if product is None:
            raise _ApiError("Invalid New Product ID")
        cycle = params.get("newproductbillingcycle", "").lower().replace("-", "")
        if cycle not in _CYCLE_MONTHS:
            raise _PlainText("Invalid New Billing Cycle")
        if cycle not in product.prices:
            raise _ApiError("Invalid Billing Cycle Requested")
        calc, amount = self._upgrade_calc(service, product, cycle)
        body: JSONDict = {"result": "success", **calc}
        if calconly:
            body["upgradeinprogress"] = int(in_progress)
            return body
        order_id = self._next_order
        self._next_order += 1
        upgrade_id = self._next_upgrade
        self._next_upgrade += 1
        invoice_id = 0
        today = self._today()
        if amount > 0:
            invoice_id = max(self.invoices, default=0) + 1
            self.invoices[invoice_id] = FakeInvoice(
                id=invoice_id,
                userid=service.userid,
                status="Unpaid",
                total=amount,
                issued=today,
                duedate=today,
                items=[
                    self._item("Upgrade", upgrade_id, self._upgrade_line(service, product), amount)
                ],
                paymentmethod=params["paymentmethod"],
            )
        self.upgrades[upgrade_id] = FakeUpgrade(
            id=upgrade_id,
            serviceid=service.id,
            orderid=order_id,
            invoiceid=invoice_id,
            newpid=product.pid,
            newcycle=cycle,
            amount=amount,
            userid=service.userid,
            oldpid=service.pid,
            ordered=datetime.combine(today, datetime.now(UTC).time(), UTC),
            paymentmethod=params["paymentmethod"],
        )
        if amount <= 0:
            # Nothing to pay: WHMCS applies the upgrade at once, with no invoice.
            self._apply(self.upgrades[upgrade_id])
        return {
            **body,
            "id": service.id,
            "orderid": order_id,
            "order_number": f"{5000000000 + order_id}",
            "invoiceid": invoice_id,
        }

    def _upgrade_line(self, service: FakeService, product: FakeProduct) -> str:
        """An upgrade invoice's line as WHMCS 8.7 writes it (SumUpPackageUpgradeOrder, in
        English, dates as DD/MM/YYYY): the service, then old => new and the period."""
        old = self.products.get(service.pid)
        old_name = old.name if old else ""
        domain = f" - {service.domain}" if service.domain else ""
        until = service.nextduedate or self._today()
        period = f"{self._today():%d/%m/%Y} - {until:%d/%m/%Y}"
        return f"Upgrade/Downgrade: {old_name}{domain}\n{old_name} => {product.name} ({period})"

    def _unpaid(self, invoice_id: int) -> bool:
        invoice = self.invoices.get(invoice_id)
        return invoice is not None and invoice.status == "Unpaid"

    def _upgrade_calc(
        self, service: FakeService, product: FakeProduct, cycle: str
    ) -> tuple[JSONDict, Decimal]:
        """WHMCS's answer fields for an upgrade, and the amount it computes (with our
        hook, under "difference", the help page's rule for a recurring service)."""
        old_product = self.products.get(service.pid)
        old_cycle = _cycle_of(service.billingcycle)
        new_amount = product.prices[cycle]
        old_amount = service.amount
        today = self._today()
        next_due = service.nextduedate or today
        days = total_days = 0
        if old_cycle is not None:
            total_days = (next_due - add_months(next_due, -_CYCLE_MONTHS[old_cycle])).days
            days = (next_due - today).days
        amount = self._whmcs_prorata(
            service,
            old_amount=old_amount,
            new_amount=new_amount,
            cycle=cycle,
            days=days,
            total_days=total_days,
        ).quantize(_CENT, rounding=ROUND_HALF_UP)
        if self.upgrade_pricing == "difference" and old_cycle is not None:
            # integrations/whmcs/upgrade_difference.php replaces WHMCS's price.
            amount = max(Decimal("0.00"), new_amount - old_amount)
        calc = {
            "oldproductid": service.pid,
            "oldproductname": old_product.name if old_product else "",
            "newproductid": product.pid,
            "newproductname": product.name,
            "daysuntilrenewal": days,
            "totaldays": total_days,
            "newproductbillingcycle": cycle,
            "price": self._formatted(amount),
        }
        return calc, amount

    def _formatted(self, amount: Decimal) -> str:
        """An amount as WHMCS formats it for people (formatCurrency): the currency's
        prefix and suffix, its format (1: 1234.56, 2: 1,234.56, 3: 1.234,56, 4: 1,234),
        the sign before the prefix."""
        whole, _, cents = f"{abs(amount):.2f}".partition(".")
        groups = f"{int(whole):,}"
        number = {
            1: f"{whole}.{cents}",
            2: f"{groups}.{cents}",
            3: f"{groups.replace(',', '.')},{cents}",
            4: groups,
        }[self.currency_format]
        sign = "-" if amount < 0 else ""
        return f"{sign}{self.currency_prefix}{number}{self.currency_suffix}"

    def _whmcs_prorata(
        self,
        service: FakeService,
        *,
        old_amount: Decimal,
        new_amount: Decimal,
        cycle: str,
        days: int,
        total_days: int,
    ) -> Decimal:
        """WHMCS's SumUpPackageUpgradeOrder for a recurring service: the new package for
        the days left, minus the unused part of what was paid."""
        old_cycle = _cycle_of(service.billingcycle)
        if old_cycle is None or total_days <= 0:
            return max(Decimal("0"), new_amount - old_amount)
        next_due = service.nextduedate or self._today()
        new_total_days = (next_due - add_months(next_due, -_CYCLE_MONTHS[cycle])).days
        old_per_month = (old_amount / _CYCLE_MONTHS[old_cycle]).quantize(_CENT)
        new_per_month = (new_amount / _CYCLE_MONTHS[cycle]).quantize(_CENT)
        if old_per_month == new_per_month:
            new_amount = old_amount / total_days * new_total_days
        refund = old_amount * days / total_days
        due = (new_amount * days / new_total_days).quantize(_CENT, rounding=ROUND_HALF_UP)
        return max(Decimal("0"), due - refund)

    # --- cancellations and domains -------------------------------------------------------

    def _add_cancel_request(self, params: dict[str, str]) -> JSONDict:
        service = self.services.get(_int(params.get("serviceid")))
        if service is None:
            raise _ApiError("Service ID Not Found")
        type_ = params.get("type", "")
        if type_ not in ("Immediate", "End of Billing Period"):
            type_ = "End of Billing Period"
        reason = params.get("reason") or "None Specified (API Submission)"
        if any(r.serviceid == service.id for r in self.cancel_requests):
            raise _ApiError("Existing Cancellation Request Exists")
        self.cancel_requests.append(FakeCancelRequest(service.id, type_, reason, datetime.now(UTC)))
        return {"result": "success", "serviceid": service.id, "userid": service.userid}

    def _get_cancelled_packages(self, params: dict[str, str]) -> JSONDict:
        """Every cancellation request ever made (tblcancelrequests), oldest first; no
        filter by client or service. Default page: 25."""
        start = _int(params.get("limitstart") or 0)
        limit = _int(params.get("limitnum") or 25)
        page = self.cancel_requests[start : start + limit]
        return {
            "result": "success",
            "totalresults": len(self.cancel_requests),
            "startnumber": start,
            "numreturned": len(page),
            "packages": {
                "package": [
                    {
                        "id": n,
                        "date": r.date.strftime("%Y-%m-%d %H:%M:%S"),
                        "relid": r.serviceid,
                        "reason": r.reason,
                        "type": r.type,
                    }
                    for n, r in enumerate(page, start=start + 1)
                ]
            },
        }

    def _get_clients_domains(self, params: dict[str, str]) -> JSONDict:
        rows = sorted(self.domains.values(), key=lambda d: d.id)
        if params.get("clientid"):
            rows = [d for d in rows if d.userid == _int(params["clientid"])]
        if params.get("domainid"):
            rows = [d for d in rows if d.id == _int(params["domainid"])]
        if params.get("domain"):
            rows = [d for d in rows if d.domainname == params["domain"]]
        start, num = _int(params.get("limitstart")), _int(params.get("limitnum")) or 25
        page = rows[start : start + num]
        body: JSONDict = {
            "result": "success",
            "clientid": params.get("clientid"),
            "domainid": params.get("domainid"),
            "totalresults": len(rows),
            "startnumber": start,
            "numreturned": len(page),
        }
        body["domains"] = {"domain": [self._domain(d) for d in page]} if rows else ""
        return body

    def _domain(self, d: FakeDomain) -> JSONDict:
        return {
            "id": str(d.id),
            "userid": str(d.userid),
            "orderid": str(d.id),
            "regtype": "Register",
            "domainname": d.domainname,
            "registrar": "enom",
            "regperiod": "1",
            "firstpaymentamount": money(d.recurringamount),
            "recurringamount": money(d.recurringamount),
            "paymentmethod": "banktransfer",
            "paymentmethodname": "Bank Transfer",
            "regdate": "2024-01-01",
            "expirydate": _day(d.expirydate),
            "nextduedate": _day(d.nextduedate),
            "status": d.status,
            "subscriptionid": "",
            "promoid": "0",
            "dnsmanagement": "",
            "emailforwarding": "",
            "idprotection": "",
            "donotrenew": "1" if d.donotrenew else "",
            "notes": "",
        }

    def _update_client_domain(self, params: dict[str, str]) -> JSONDict:
        domain: FakeDomain | None
        if params.get("domainid"):
            domain = self.domains.get(_int(params["domainid"]))
        else:
            name = params.get("domain", "")
            domain = next((d for d in self.domains.values() if d.domainname == name), None)
        if domain is None:
            raise _ApiError("Domain ID Not Found")
        if "donotrenew" in params:
            domain.donotrenew = params["donotrenew"] not in ("", "0", "false")
        return {"result": "success", "domainid": domain.id}


def _int(value: Any) -> int:
    """PHP's (int) cast: leading digits, else 0."""
    text = str(value or "").strip()
    digits = ""
    for ch in text:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0


def _full(c: FakeClient) -> str:
    return f"{c.firstname} {c.lastname}".strip()


def _cycle_of(whmcs_cycle: str) -> str | None:
    for ours, theirs in CYCLE_TO_WHMCS.items():
        if theirs == whmcs_cycle:
            return ours
    return None


def _split_phone(stored: str, countrycode: str) -> tuple[str, str]:
    """WHMCS's Client::formatPhoneNumber: the calling code and the number's digits."""
    phone = stored.strip()
    prefix, number = "", phone
    if phone.startswith("+"):
        head, dot, tail = phone[1:].partition(".")
        if dot:
            prefix, number = head, tail
        else:
            number = head
    prefix = "".join(ch for ch in prefix if ch.isdigit())
    number = "".join(ch for ch in number if ch.isdigit())
    if not prefix and countrycode:
        code = phonenumbers.country_code_for_region(countrycode)
        prefix = str(code) if code else ""
    return prefix, number


def _html_error(status: int) -> web.Response:
    reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}.get(
        status, "Error"
    )
    html = (
        f"<html><head><title>{status} {reason}</title></head><body><h1>Oops!</h1>"
        "<p>Something went wrong and we couldn't process your request.</p></body></html>"
    )
    return web.Response(status=status, text=html, content_type="text/html")


def _xml(body: JSONDict) -> str:
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in body.items() if not isinstance(v, dict | list))
    return f'<?xml version="1.0" encoding="utf-8"?><whmcsapi>{inner}</whmcsapi>'


@contextlib.asynccontextmanager
async def whmcs_backend(
    pool: asyncpg.Pool, data: Mapping[str, Any], *, today: date | None = None
) -> AsyncIterator[tuple[Callable[[Policy], Awaitable[Billing]], Callable[[str], str]]]:
    """The WHMCS backend over a fake loaded with `data` (SPEC §4), for test suites that
    run against every backend. Yields `make(policy)`, a WhmcsBilling (its phone index
    synced, the fake billing as a WHMCS set up for that policy would), and
    `product_id(spec_id)`, the WHMCS id of a product of `data`. Empties the WHMCS
    tables first."""
    await whmcs_index.forget_everything(pool)
    made: list[WhmcsBilling] = []
    with tempfile.TemporaryDirectory(prefix="fake-whmcs-") as tmp:
        async with FakeWhmcs(data, today=today) as fake:

            async def make(policy: Policy) -> Billing:
                fake.upgrade_pricing = policy.value
                upgrades = Path(tmp) / "whmcs_upgrades.toml"
                settings = await asyncio.to_thread(
                    fake.settings_for, Settings(upgrade_pricing=policy.value), upgrades
                )
                billing = WhmcsBilling(settings, pool)
                made.append(billing)
                await billing.sync_clients()
                return billing

            try:
                yield make, functools.partial(fake.wid, "products")
            finally:
                for billing in made:
                    await billing.close()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bot.fakes.whmcs",
        description="Serve a fake WHMCS API loaded from a SPEC §4 JSON file until SIGTERM.",
    )
    parser.add_argument("data", type=Path, help="billing data in the import format")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--identifier", default="fake-identifier")
    parser.add_argument("--secret", default="fake-secret")
    parser.add_argument("--upgrades-file", type=Path, help="write the upgrade paths here")
    parser.add_argument("--upgrade-pricing", choices=("difference", "prorata"))
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace, data: Mapping[str, Any]) -> None:
    fake = FakeWhmcs(
        data,
        identifier=args.identifier,
        secret=args.secret,
        upgrade_pricing=args.upgrade_pricing or "difference",
    )
    if args.upgrades_file is not None:
        await asyncio.to_thread(args.upgrades_file.write_text, fake.upgrades_toml(), "utf-8")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print(await fake.start(args.host, args.port), flush=True)
    try:
        await stopping.wait()
    finally:
        await fake.stop()


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parse_args(argv)
    data = json.loads(args.data.read_text(encoding="utf-8"))
    asyncio.run(_serve(args, data))


if __name__ == "__main__":
    main()
