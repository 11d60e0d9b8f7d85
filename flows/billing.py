"""The billing system as the flows see it: one interface, two implementations
(`store.billing_local` on our own tables, `bot.whmcs` over WHMCS's API), chosen by
`BILLING_BACKEND`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import Enum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    name: str
    email: str
    verified: bool
    account_manager: str | None = None


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
class Service:
    id: str
    client_id: str
    product_id: str
    product_name: str
    label: str
    status: str
    billing_cycle: str
    amount: Decimal
    next_due: date | None


class BillingError(Exception):
    """The billing system could not answer; the flow apologises and offers a person."""


class Billing(Protocol):
    async def find_client_by_phone(self, wa_id: str) -> ClientLookup:
        """The account whose phone is this WhatsApp id (SPEC §3, Identification)."""
        ...

    async def get_client(self, client_id: str) -> Client | None: ...

    async def list_services(self, client_id: str) -> list[Service]: ...
