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

# Items (services, invoices, domains) per page of the summary; "Ver más" turns the page.
PER_PAGE = 12
PAGE = "account_page"  # the next page to show, while there is one
# A WhatsApp text holds 4,096 characters; the summary stays well inside.
MAX_TEXT = 3800
_MORE = Choice("account:more", "next_page", "common.page_next", "words.page_next")


class Account(Step):
    FLOW = "account"
    STATES: ClassVar[tuple[str, ...]] = ("overview",)
    TRANSITIONS: ClassVar[list[dict[str, Any]]] = [
        {"trigger": "next_page", "source": "overview", "dest": "overview", "before": "turn"},
        {"trigger": "go_human", "source": "*", "dest": None, "after": "to_human"},
        {"trigger": "go_menu", "source": "*", "dest": None, "after": "leave"},
    ]

    def choices(self) -> list[Choice]:
        more = [] if self.ctx.get(PAGE) is None else [_MORE]
        return [
            *more,
            Choice("human", "go_human", "menu.options.human.title", "menu.options.human.keywords"),
            Choice("menu", "go_menu", "common.back_to_menu", "words.menu"),
        ]

    def to_human(self) -> None:
        self.goto("menu", "handed_over")

    def turn(self) -> None:
        self.ctx["account_turn"] = True

    async def render_overview(self) -> None:
        client = self.client
        if client is None:
            body = self.t("account.not_identified", panel_url=self.deps.panel_details_url)
            self.send(self.prompt(body, self.choices()))
            return
        asked = int(self.ctx.pop(PAGE, 0) or 0)
        page = asked if self.ctx.pop("account_turn", False) else 0
        billing = self.deps.billing
        services, unpaid, domains = await asyncio.gather(
            billing.list_services(client.id),
            billing.list_invoices(client.id, status="unpaid"),
            billing.list_domains(client.id),
        )
        links = await asyncio.gather(*(billing.invoice_link(client.id, i.id) for i in unpaid))
        sections = [
            self._services(services),
            self._invoices(unpaid, links),
            self._domains(domains),
        ]
        pages = _pages(sections, PER_PAGE)
        page = min(page, len(pages) - 1)
        parts = [self.t("account.heading", name=client.name.split(maxsplit=1)[0] or client.name)]
        if page > 0:
            parts = [self.t("account.continued", page=page + 1, pages=len(pages))]
        self.send(Text(_fit("\n\n".join([*parts, *pages[page]]))))
        if page == 0:
            for service in services:
                if service.status == "suspended":
                    self._why_suspended(service, unpaid)
        if page + 1 < len(pages):
            self.ctx[PAGE] = page + 1
        self.send(self.prompt(self.t("account.after"), self.choices()))

    # -- parts: each a title and its lines ----------------------------------------------
    def _services(self, services: Sequence[Service]) -> list[str]:
        if not services:
            return [self.t("account.no_services")]
        lines = [self.t("account.services_title")]
        for s in services:
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
        return lines

    def _invoices(self, unpaid: Sequence[Invoice], links: Sequence[str]) -> list[str]:
        if not unpaid:
            return [self.t("account.no_invoices")]
        lines = [self.t("account.invoices_title")]
        for invoice, link in zip(unpaid, links, strict=True):
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
        return lines

    def _domains(self, domains: Sequence[Domain]) -> list[str]:
        if not domains:
            return []
        lines = [self.t("account.domains_title")]
        for d in domains:
            if d.next_due is None:
                lines.append(self.t("account.domain_no_date", name=d.name))
            else:
                key = "account.domain_renews" if d.auto_renew else "account.domain_not_renewing"
                lines.append(self.t(key, name=d.name, date=local_date(d.next_due)))
        return lines

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


def _pages(sections: Sequence[list[str]], per_page: int) -> list[list[str]]:
    """The sections (a title, then one line per item) cut into pages of at most
    `per_page` items, each page a list of blocks; a section cut in two repeats its title."""
    pages: list[list[str]] = []
    blocks: list[str] = []
    room = per_page
    for title, *items in (s for s in sections if s):
        if not items:  # a line alone ("No tiene facturas pendientes de pago.")
            blocks.append(title)
            continue
        rest = items
        while rest:
            if room == 0:
                pages.append(blocks)
                blocks, room = [], per_page
            taken, rest = rest[:room], rest[room:]
            blocks.append("\n".join([title, *taken]))
            room -= len(taken)
    pages.append(blocks)
    return pages


def _fit(text: str) -> str:
    """Inside a WhatsApp text (4,096 characters): a page of very long lines is cut."""
    if len(text) <= MAX_TEXT:
        return text
    return text[: MAX_TEXT - 1].rsplit("\n", 1)[0] + "\n…"


# A service's statuses (SPEC §4), each said in words (account.status.*).
SERVICE_STATUSES = ("active", "suspended", "pending", "cancelled", "terminated")


def local_date(day: date) -> str:
    """As the customer writes it: 1/7/2026 is the 1st of July."""
    return f"{day.day}/{day.month}/{day.year}"


def local_amount(amount: Decimal) -> str:
    """1234.5 → "1.234,50" (Argentina's separators)."""
    whole, _, cents = f"{amount.quantize(Decimal('0.01')):,.2f}".partition(".")
    return f"{whole.replace(',', '.')},{cents}"
