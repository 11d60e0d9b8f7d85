"""The billing system as the flows see it: one interface, two implementations
(`store.billing_local` on our own tables, `bot.whmcs` over WHMCS's API), chosen by
`BILLING_BACKEND`.

Every operation on a service names the client asking, and the backend checks the service
is theirs: nothing about another account can leak through a guessed id.

Flows only read (`BillingReader`); changes are commands (flows.commands) that the command
worker makes after the turn commits, each with the command's idempotency key as its
`request_id`: asked twice, a change acts once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, Protocol

from flows.pricing import (
    Policy,
    PricingError,
    UpgradeQuote,
    difference,
    is_upgrade,
    prorata,
)

CYCLES = ("monthly", "quarterly", "semiannually", "annually", "biennially", "triennially")
SERVICE_STATUSES = ("pending", "active", "suspended", "cancelled", "terminated")
INVOICE_STATUSES = ("unpaid", "paid", "cancelled")


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    name: str
    email: str
    verified: bool
    account_manager: str | None = None
    # The account's phone as written in the billing system ('' when none): alerts go to
    # the WhatsApp number it stands for (flows.phones.whatsapp_id_for).
    phone: str = ""


class Found(Enum):
    ONE = "one"
    NONE = "none"
    # Several accounts carry the phone: "one person, one account" is broken, so we
    # identify nobody rather than risk showing one customer another's account.
    SEVERAL = "several"


@dataclass(frozen=True, slots=True)
class ClientLookup:
    found: Found
    client: Client | None = None


@dataclass(frozen=True, slots=True)
class Category:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    category_id: str
    name: str
    # Price per billing cycle; a cycle the product is not sold in is absent.
    prices: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Service:
    id: str
    client_id: str
    product_id: str
    product_name: str
    label: str
    status: str
    billing_cycle: str
    amount: Decimal  # the recurring amount, what was paid for the current period
    next_due: date | None
    period_start: date | None = None
    category_id: str | None = None


@dataclass(frozen=True, slots=True)
class Invoice:
    id: str
    client_id: str
    service_id: str | None
    total: Decimal
    status: str
    due: date | None


@dataclass(frozen=True, slots=True)
class Domain:
    id: str
    client_id: str
    name: str
    status: str
    auto_renew: bool
    next_due: date | None


@dataclass(frozen=True, slots=True)
class UpgradeOption:
    """A category the service can technically move to, with its packages that are
    upgrades (priced above the current one)."""

    category: Category
    products: tuple[Product, ...]


@dataclass(frozen=True, slots=True)
class PlacedUpgrade:
    """An upgrade ordered: an invoice to pay (it applies once paid), or — when there is
    nothing to pay — applied at once, with no invoice (WHMCS does so with a zero-cost
    upgrade): then the customer is told it is done, not sent a link."""

    quote: UpgradeQuote
    product: Product
    invoice: Invoice | None
    invoice_url: str | None

    @property
    def applied(self) -> bool:
        return self.invoice is None


@dataclass(frozen=True, slots=True)
class PendingUpgrade:
    """An upgrade ordered and not paid yet: its invoice, and the package it moves the
    service to once paid."""

    service_id: str
    product_id: str
    product_name: str
    invoice_id: str
    invoice_url: str
    total: Decimal
    ordered_on: date | None  # when the invoice was generated


@dataclass(frozen=True, slots=True)
class ExpiredUpgrade:
    """An upgrade invoice voided for being unpaid too long (`Billing.expire_upgrades`)."""

    client_id: str
    service_id: str
    invoice_id: str


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What an alert shows about its event (SPEC §4: `data` may carry ids only): the
    event's own data first, what the backend looked up filling the rest. None: unknown."""

    invoice_id: str | None = None
    total: Decimal | None = None
    due: date | None = None
    url: str | None = None  # the invoice's or the quote's page in the client area
    service: str | None = None  # what the customer calls the service (its domain, label)
    quote_id: str | None = None
    subject: str = ""
    valid_until: date | None = None
    domain: str | None = None
    # For an invoice that pays (or paid for) an upgrade the bot placed or the customer
    # ordered: the package the service moves to. The payment's alert then says the
    # service is on it; a voided one, that the upgrade's quote expired.
    upgrade_to: str | None = None
    # That upgrade was ordered in a conversation with the bot, which gave the invoice's
    # link there: its "invoice created" alert would say it twice.
    ordered_in_chat: bool = False


@dataclass(frozen=True, slots=True)
class Segment:
    """Who a broadcast goes to (`python -m bot broadcast --segment …`): every client
    (`all`), clients with an active service of product X (`product:X`), with a service
    on server Y (`server:Y`), or with an unpaid invoice (`unpaid`)."""

    kind: str  # all | product | server | unpaid
    value: str = ""

    KINDS: ClassVar[tuple[str, ...]] = ("all", "product", "server", "unpaid")

    @classmethod
    def parse(cls, text: str) -> Segment:
        kind, _, value = text.strip().partition(":")
        if kind not in cls.KINDS or (kind in ("product", "server")) != bool(value.strip()):
            raise ValueError(
                f"unknown segment {text!r}: use all, unpaid, product:<id> or server:<id>"
            )
        return cls(kind, value.strip())


class CancellationKind(Enum):
    IMMEDIATE = "immediate"  # within the day
    END_OF_PERIOD = "end_of_period"  # keeps working until the paid period ends


@dataclass(frozen=True, slots=True)
class CancellationRequest:
    id: str
    service_id: str
    kind: CancellationKind
    reason: str
    requested_at: datetime


class TransferResult(Enum):
    DONE = "done"
    # The billing system cannot move a service between clients by API (WHMCS): a person
    # must do it; the flow queues it for staff.
    NEEDS_STAFF = "needs_staff"


# -- errors -----------------------------------------------------------------------------


class BillingError(Exception):
    """The billing system could not answer; the flow apologises and offers a person."""


class BillingUnavailable(BillingError):
    """Timeout, connection failure, 5xx or an HTML error page: try again later."""


class OutcomeUnknown(BillingError):
    """A change may or may not have happened (the answer was lost). Never retried
    blindly: a person checks (placing an upgrade twice would charge twice)."""


class BillingRefused(BillingError):
    """The billing system answered, and said no. `reason` is a stable code the flow
    turns into a sentence; `detail` is for logs and staff only."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# Reasons of BillingRefused that the flows explain to the customer.
# An unpaid upgrade invoice for this service is pending; `detail` is its invoice id.
UPGRADE_PENDING = "upgrade_pending"
NOT_FOUND = "not_found"  # no such record for this client (never says whose it is)
NOT_AN_UPGRADE = "not_an_upgrade"  # priced equal or below: a downgrade (help page)
NOT_OFFERED = "not_offered"  # not among the packages the systems can move it to
CYCLE_NOT_SOLD = "cycle_not_sold"
# Pro-rata keeps the next due date, so the billing cycle cannot change with the upgrade.
CYCLE_FIXED = "cycle_fixed"
SERVICE_NOT_ACTIVE = "service_not_active"
UNPAID_INVOICES = "unpaid_invoices"
NOT_VERIFIED = "not_verified"
SAME_CLIENT = "same_client"
ALREADY_REQUESTED = "already_requested"  # a cancellation for this service is pending
# The service's payment gateway is disabled and the client has no active default one: the
# invoice could not be paid, so the billing system would refuse the order.
NO_PAYMENT_METHOD = "no_payment_method"


class BillingReader(Protocol):
    """What the flows may ask inside a turn: reads only. Changes go through commands
    (flows.commands), carried out after the turn commits."""

    # -- who is writing ---------------------------------------------------------------
    async def find_client_by_phone(self, wa_id: str) -> ClientLookup:
        """The account whose phone is this WhatsApp id (SPEC §3, Identification)."""
        ...

    async def get_client(self, client_id: str) -> Client | None: ...

    async def find_client_by_email(self, email: str) -> Client | None: ...

    # -- what they have ----------------------------------------------------------------
    async def list_services(self, client_id: str) -> list[Service]: ...

    async def get_service(self, client_id: str, service_id: str) -> Service | None:
        """The service if it is this client's, else None."""
        ...

    async def list_invoices(
        self, client_id: str, *, service_id: str | None = None, status: str | None = None
    ) -> list[Invoice]: ...

    async def list_domains(self, client_id: str) -> list[Domain]: ...

    async def invoice_link(self, client_id: str, invoice_id: str) -> str:
        """Where the customer pays or sees the invoice."""
        ...

    # -- upgrades -----------------------------------------------------------------------
    async def upgrade_options(self, client_id: str, service_id: str) -> list[UpgradeOption]:
        """Categories (with their packages) the service can move up to automatically."""
        ...

    async def quote_upgrade(
        self, client_id: str, service_id: str, product_id: str, cycle: str, *, today: date
    ) -> UpgradeQuote: ...

    async def cancellation_requested(self, client_id: str, service_id: str) -> datetime | None:
        """When a cancellation of this service was asked for, if one is pending (a second
        one is refused with ALREADY_REQUESTED)."""
        ...

    async def products_for(self, client_id: str) -> list[Product]:
        """Every package the company sells, priced for this client (their currency): to
        recognise one a customer names that is not among a service's upgrade paths."""
        ...

    async def pending_upgrade(self, client_id: str, service_id: str) -> PendingUpgrade | None:
        """The service's upgrade ordered and still unpaid, if any (one at a time: a second
        order is refused with UPGRADE_PENDING while it is)."""
        ...


class Billing(BillingReader, Protocol):
    """The whole billing interface: the reads, and the changes the command worker makes
    (each with a request id, so asked twice it acts once)."""

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
        """Generate the invoice; once it is paid the upgrade applies by itself. Refused
        with UPGRADE_PENDING (detail: the invoice id) while an earlier upgrade of the
        service is unpaid; asked again with the same request id, the first answer."""
        ...

    # -- cancellations, domains, transfers ---------------------------------------------
    async def request_cancellation(
        self,
        client_id: str,
        service_id: str,
        kind: CancellationKind,
        reason: str,
        *,
        request_id: str,
    ) -> CancellationRequest: ...

    async def stop_domain_renewal(self, client_id: str, domain_id: str) -> Domain: ...

    async def transfer_service(
        self, client_id: str, service_id: str, to_client_id: str, *, request_id: str
    ) -> TransferResult: ...

    # -- alerts and broadcasts (the alert worker, `python -m bot broadcast`) ------------
    async def refresh_client(self, client_id: str) -> Client | None:
        """The client read afresh after a client event (created, edited, merged): a
        backend that keeps an index of clients updates it. None: no such client."""
        ...

    async def event_facts(
        self, client_id: str, event_type: str, data: Mapping[str, Any]
    ) -> EventFacts:
        """The details an alert shows for this event of this client: the event's `data`
        first, looked up where it sent ids only. Raises BillingUnavailable when the
        billing system cannot answer now (the alert waits and is tried again)."""
        ...

    async def segment_clients(self, segment: Segment) -> list[str]:
        """The ids of the clients in `segment`, in a stable order."""
        ...

    async def expire_upgrades(self, placed_before: datetime) -> list[ExpiredUpgrade]:
        """Void the upgrade invoices the bot placed before `placed_before` that are still
        unpaid (the billing system then announces invoice.cancelled, which the alert says
        as the quote expired). Safe to run again and from several processes."""
        ...


def ensure_upgradable(service: Service) -> None:
    """A service that is gone cannot be upgraded: a billing system would take (and
    invoice) the order anyway."""
    if service.status in ("cancelled", "terminated"):
        raise BillingRefused(SERVICE_NOT_ACTIVE, service.status)


def offerable(policy: Policy, service: Service, product: Product) -> bool:
    """Whether to offer `product` as an upgrade of `service`: priced above it (the help
    page: anything else is a downgrade) and, under pro-rata, sold in the service's cycle
    (pro-rata keeps the cycle)."""
    return is_upgrade(service.amount, service.billing_cycle, product.prices) and (
        policy is not Policy.PRORATA or service.billing_cycle in product.prices
    )


def upgrade_quote(
    policy: Policy, service: Service, product: Product, cycle: str, *, today: date
) -> UpgradeQuote:
    """What moving `service` to `product` in `cycle` costs under the configured policy,
    or BillingRefused: a service that is gone cannot be upgraded, a package priced equal
    or below is a downgrade (the help page's shelf), a cycle the package is not sold in
    cannot be chosen, and pro-rata keeps the service's cycle."""
    ensure_upgradable(service)
    if not is_upgrade(service.amount, service.billing_cycle, product.prices):
        raise BillingRefused(NOT_AN_UPGRADE, f"{product.id} is not priced above {service.id}")
    if cycle not in product.prices:
        raise BillingRefused(CYCLE_NOT_SOLD, f"{product.id} is not sold {cycle}")
    if policy is Policy.PRORATA:
        if cycle != service.billing_cycle:
            raise BillingRefused(CYCLE_FIXED, f"pro-rata keeps {service.billing_cycle}")
        if service.next_due is None:
            raise BillingRefused(NOT_OFFERED, f"{service.id} has no next due date")
        try:
            return prorata(
                current_recurring=service.amount,
                new_price_same_cycle=product.prices[cycle],
                cycle=cycle,
                next_due=service.next_due,
                today=today,
            )
        except PricingError as e:
            # An overdue service: today is past its cycle. A person sees to it.
            raise BillingRefused(NOT_OFFERED, str(e)) from None
    return difference(
        paid_for_current_period=service.amount,
        new_price=product.prices[cycle],
        new_cycle=cycle,
        enabled_on=today,
    )
