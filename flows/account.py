"""Mi cuenta: what a hosting customer asks first — their services and when each is due,
what they owe with the link to pay it, their domains and whether they renew, and why a
suspended service is suspended. Reads only, this customer's data only.

Reached from the main menu and by typing it anywhere ("mis servicios", "cuánto debo",
"quiero pagar mi factura", "por qué está suspendida mi radio?", "cuándo vence mi
dominio").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

from flows.billing import Domain, Invoice, Service
from flows.options import Choice
from flows.outbound import Text
from flows.runtime import Step

# At most this many of each kind are listed; the rest are counted, with the panel's link.
SHOWN = 8
# A WhatsApp text holds 4,096 characters; the summary stays well inside.
MAX_TEXT = 3800


class Account(Step):
    FLOW = "account"
    STATES: ClassVar[tuple[str, ...]] = ("overview",)
    TRANSITIONS: ClassVar[list[dict[str, Any]]] = [
        {"trigger": "go_human", "source": "*", "dest": None, "after": "to_human"},
        {"trigger": "go_menu", "source": "*", "dest": None, "after": "leave"},
    ]

    def choices(self) -> list[Choice]:
        return [
            Choice("human", "go_human", "menu.options.human.title", "menu.options.human.keywords"),
            Choice("menu", "go_menu", "common.back_to_menu", "words.menu"),
        ]

    def to_human(self) -> None:
        self.goto("menu", "handed_over")

    async def render_overview(self) -> None:
        client = self.client
        if client is None:
            body = self.t("account.not_identified", panel_url=self.deps.panel_details_url)
            self.send(self.prompt(body, self.choices()))
            return
        billing = self.deps.billing
        services, unpaid, domains = await asyncio.gather(
            billing.list_services(client.id),
            billing.list_invoices(client.id, status="unpaid"),
            billing.list_domains(client.id),
        )
        links = await asyncio.gather(*(billing.invoice_link(client.id, i.id) for i in unpaid))
        parts = [
            self.t("account.heading", name=client.name.split(maxsplit=1)[0] or client.name),
            self._services(services),
            self._invoices(unpaid, links),
        ]
        if domains:
            parts.append(self._domains(domains))
        self._say_long("\n\n".join(parts))
        for service in services:
            if service.status == "suspended":
                self._why_suspended(service, unpaid)
        self.send(self.prompt(self.t("account.after"), self.choices()))

    def _say_long(self, text: str) -> None:
        if len(text) > MAX_TEXT:
            text = text[: MAX_TEXT - 1].rsplit("\n", 1)[0] + "\n…"
        self.send(Text(text))

    # -- parts ----------------------------------------------------------------------------
    def _services(self, services: Sequence[Service]) -> str:
        if not services:
            return self.t("account.no_services")
        lines = [self.t("account.services_title")]
        for s in services[:SHOWN]:
            status = s.status
            if status in SERVICE_STATUSES:
                status = self.t(f"account.status.{status}")
            if s.next_due and s.status in ("active", "suspended"):
                lines.append(
                    self.t(
                        "account.service_due",
                        label=s.label,
                        product=s.product_name,
                        status=status,
                        date=local_date(s.next_due),
                    )
                )
            else:
                lines.append(
                    self.t("account.service", label=s.label, product=s.product_name, status=status)
                )
        lines += self._more(len(services))
        return "\n".join(lines)

    def _invoices(self, unpaid: Sequence[Invoice], links: Sequence[str]) -> str:
        if not unpaid:
            return self.t("account.no_invoices")
        lines = [self.t("account.invoices_title")]
        for invoice, link in list(zip(unpaid, links, strict=True))[:SHOWN]:
            total = self.money(invoice.total)
            if invoice.due:
                lines.append(
                    self.t(
                        "account.invoice",
                        number=invoice.id,
                        total=total,
                        date=local_date(invoice.due),
                        link=link,
                    )
                )
            else:
                lines.append(
                    self.t("account.invoice_no_due", number=invoice.id, total=total, link=link)
                )
        lines += self._more(len(unpaid))
        return "\n".join(lines)

    def _domains(self, domains: Sequence[Domain]) -> str:
        lines = [self.t("account.domains_title")]
        for d in domains[:SHOWN]:
            if d.next_due is None:
                lines.append(self.t("account.domain_no_date", name=d.name))
            else:
                key = "account.domain_renews" if d.auto_renew else "account.domain_not_renewing"
                lines.append(self.t(key, name=d.name, date=local_date(d.next_due)))
        lines += self._more(len(domains))
        return "\n".join(lines)

    def _more(self, count: int) -> list[str]:
        if count <= SHOWN:
            return []
        return [self.t("account.more", count=count - SHOWN, panel_url=self.deps.panel_url)]

    def _why_suspended(self, service: Service, unpaid: Sequence[Invoice]) -> None:
        """The reason the billing data shows: the service's unpaid invoices (each with its
        total; their links are in the summary), or, with none, a person to ask."""
        owed = [i for i in unpaid if i.service_id == service.id]
        if owed:
            invoices = ", ".join(f"{i.id}: {self.money(i.total)}" for i in owed)
            self.say("account.suspended_unpaid", label=service.label, invoices=invoices)
        else:
            self.say("account.suspended_other", label=service.label)

    def money(self, amount: Decimal) -> str:
        return self.t("account.money", amount=local_amount(amount))


# A service's statuses (SPEC §4), each said in words (account.status.*).
SERVICE_STATUSES = ("active", "suspended", "pending", "cancelled", "terminated")


def local_date(day: date) -> str:
    """As the customer writes it: 1/7/2026 is the 1st of July."""
    return f"{day.day}/{day.month}/{day.year}"


def local_amount(amount: Decimal) -> str:
    """1234.5 → "1.234,50" (Argentina's separators)."""
    whole, _, cents = f"{amount.quantize(Decimal('0.01')):,.2f}".partition(".")
    return f"{whole.replace(',', '.')},{cents}"
