"""WHMCS's records as our billing types (`flows.billing`): the names WHMCS gives billing
cycles and statuses, and the fields of its clients, services, invoices, domains and
products, as its API sends them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import phonenumbers

from bot.whmcs.values import as_text, day, money, truthy
from flows.billing import CancellationKind, Client, Domain, Invoice, Product, Service
from flows.phones import parse_phone, phone_key
from flows.pricing import CYCLE_MONTHS, add_months

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
# WHMCS's invoice statuses we call unpaid (GetInvoices' `status` filter takes one).
UNPAID_INVOICE_STATUSES = tuple(k for k, v in _INVOICE_STATUSES.items() if v == "unpaid")
# AddCancelRequest's `type`.
CANCELLATION_TYPES = {
    CancellationKind.IMMEDIATE: "Immediate",
    CancellationKind.END_OF_PERIOD: "End of Billing Period",
}


@dataclass(frozen=True, slots=True)
class CatalogProduct:
    pid: str
    gid: str
    name: str
    paytype: str
    # Currency code → cycle → price, only the cycles it is sold in.
    pricing: Mapping[str, Mapping[str, Decimal]]


# A client custom field's values that mean "yes": a tickbox stores "on".
_YES = frozenset({"on", "yes", "si", "sí", "1", "true", "verificado", "verified"})


@dataclass(frozen=True, slots=True)
class VerifiedRule:
    """Which WHMCS field says a client is verified (the transfer's "both accounts
    verified", SPEC §3) — `WHMCS_VERIFIED`:

    - `email_verified`: the email address was confirmed. It belongs to the account's
      owner user, and is false for everyone when the installation does not ask for email
      verification: set another rule there.
    - `customfield:<id>`: a client custom field (a tickbox "Verificado" staff tick after
      checking the documents, say) whose value is yes/on/sí/1.
    """

    field: str
    custom_field_id: str | None = None

    @classmethod
    def parse(cls, setting: str) -> VerifiedRule:
        text = setting.strip() or "email_verified"
        if text == "email_verified":
            return cls("email_verified")
        kind, _, field_id = text.partition(":")
        if kind == "customfield" and field_id.strip().isdigit():
            return cls("customfield", field_id.strip())
        raise ValueError(
            f"WHMCS_VERIFIED must be email_verified or customfield:<id>, got {setting!r}"
        )

    def __call__(self, details: Mapping[str, Any]) -> bool:
        if self.custom_field_id is None:
            return truthy(details.get("email_verified"))
        fields = details.get("customfields")
        for field in fields if isinstance(fields, list) else []:
            if isinstance(field, dict) and as_text(field.get("id")) == self.custom_field_id:
                return as_text(field.get("value")).strip().lower() in _YES
        return False


EMAIL_VERIFIED = VerifiedRule("email_verified")


def client_from(
    details: Mapping[str, Any], verified: VerifiedRule = EMAIL_VERIFIED, *, region: str
) -> Client:
    """A client from GetClientsDetails; `region` is DEFAULT_REGION, where a phone with
    no country of its own is read (see `client_phone`)."""
    phone, key = client_phone(details, region)
    return Client(
        id=as_text(details.get("id") or details.get("client_id") or details.get("userid")),
        name=client_name(details),
        email=as_text(details.get("email")),
        verified=verified(details),
        phone=phone if key is not None else "",
    )


def client_phone(details: Mapping[str, Any], region: str) -> tuple[str, str | None]:
    """The client's phone and its key (flows.phones), None when it is no phone: what the
    phone index matches WhatsApp ids on and what `Client.phone` gives. WHMCS
    (Client::formatPhoneNumber) keeps the phone as stored — "+54.1155551234" from its
    phone-number dropdown, else as typed — and answers three fields made from it:

    - `phonenumberformatted`: "+<calling code>.<the digits>", the calling code being
      the stored one, else that of the client's country (leading zeros dropped except
      in Italy): right for the dropdown and for national numbers, nonsense for an
      international number typed without the dropdown ("+54 11…" becomes "+54.5411…").
    - `phonenumber`: the digits alone. Read in the client's country they give back
      an international number typed on a client of the same country.
    - `telephoneNumber`: with the dropdown on, `phonenumberformatted`; off, the phone
      exactly as typed — the one place where "+54 9 11…" typed on a client whose
      country is Spain is still an Argentine number.

    Each is tried in that order until one is a possible number, read in the client's
    country (`region` when WHMCS has none). The phone is given as WHMCS wrote it, unless
    it is a national number that `region` would read as another one (a client abroad):
    then in international form, so that whoever reads it alone (the alert worker, with
    DEFAULT_REGION) reaches the number the index matched."""
    formatted = as_text(details.get("phonenumberformatted"))
    typed = as_text(details.get("phonenumber"))
    telephone = as_text(details.get("telephoneNumber")).strip()
    country = as_text(details.get("countrycode")) or region
    tried: list[tuple[str, str]] = []
    if formatted.startswith("+"):
        tried.append((formatted, formatted.replace(".", " ")))
    tried += [(typed, typed), (telephone, telephone.replace(".", " "))]
    for shown, text in tried:
        key = phone_key(text, country) if text else None
        if key is None:
            continue
        number = parse_phone(text, country)
        if phone_key(shown, region) != key and number is not None:
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), key
        return shown, key
    return formatted or typed or telephone, None


def client_name(details: Mapping[str, Any]) -> str:
    full = as_text(details.get("fullname")).strip()
    if full:
        return full
    return f"{as_text(details.get('firstname'))} {as_text(details.get('lastname'))}".strip()


def service_from(row: Mapping[str, Any], catalog: Mapping[str, CatalogProduct]) -> Service:
    raw_cycle = as_text(row.get("billingcycle"))
    cycle = _CYCLES.get(raw_cycle) or _OTHER_CYCLES.get(raw_cycle) or raw_cycle.lower()
    next_due = day(row.get("nextduedate"))
    period_start = day(row.get("regdate"))
    if next_due is not None and cycle in CYCLE_MONTHS:
        period_start = add_months(next_due, -CYCLE_MONTHS[cycle])
    pid = as_text(row.get("pid"))
    name = as_text(row.get("name")) or as_text(row.get("translated_name"))
    status = as_text(row.get("status"))
    return Service(
        id=as_text(row.get("id")),
        client_id=as_text(row.get("clientid")),
        product_id=pid,
        product_name=name,
        label=as_text(row.get("domain")) or name,
        status=_SERVICE_STATUSES.get(status, status.lower()),
        billing_cycle=cycle,
        amount=money(row.get("recurringamount")),
        next_due=next_due,
        period_start=period_start,
        category_id=catalog[pid].gid if pid in catalog else None,
    )


def invoice_from(
    row: Mapping[str, Any],
    client_id: str,
    *,
    invoice_id: str | None = None,
    service_id: str | None = None,
) -> Invoice | None:
    """An invoice as the customer sees it; None for a draft (not theirs yet)."""
    status = _INVOICE_STATUSES.get(as_text(row.get("status")))
    if status is None:
        return None
    return Invoice(
        id=invoice_id or as_text(row.get("id") or row.get("invoiceid")),
        client_id=client_id,
        service_id=service_id,
        total=money(row.get("total")),
        status=status,
        due=day(row.get("duedate")),
    )


def domain_from(row: Mapping[str, Any]) -> Domain:
    status = as_text(row.get("status"))
    return Domain(
        id=as_text(row.get("id")),
        client_id=as_text(row.get("userid")),
        name=as_text(row.get("domainname")),
        status=status.lower().replace(" ", "_").replace("-", "_"),
        auto_renew=not truthy(row.get("donotrenew")),
        next_due=day(row.get("nextduedate")),
    )


def catalog_product_from(row: Mapping[str, Any]) -> CatalogProduct:
    pricing: dict[str, dict[str, Decimal]] = {}
    raw = row.get("pricing")
    paytype = as_text(row.get("paytype")) or "recurring"
    if isinstance(raw, dict) and paytype == "recurring":
        for currency, columns in raw.items():
            if not isinstance(columns, dict):
                continue
            prices: dict[str, Decimal] = {}
            for cycle in CYCLE_MONTHS:
                price = money(columns.get(cycle, "-1"))
                # WHMCS marks a cycle the product is not sold in with -1.00.
                if price >= 0:
                    prices[cycle] = price
            pricing[str(currency)] = prices
    return CatalogProduct(
        pid=as_text(row.get("pid")),
        gid=as_text(row.get("gid")),
        name=as_text(row.get("name")),
        paytype=paytype,
        pricing=pricing,
    )


def priced_product(product: CatalogProduct, currency: str) -> Product:
    """The product priced in the client's currency (a product without prices in it
    is not sold to them). A WHMCS that does not say the client's currency has one."""
    prices = product.pricing.get(currency)
    if not currency and len(product.pricing) == 1:
        prices = next(iter(product.pricing.values()))
    return Product(product.pid, product.gid, product.name, dict(prices or {}))
