"""Billing events as WhatsApp alerts (SPEC §3 "Alerts"): which alerts exist, which a
customer may switch off, and the message for one event — as text for inside the 24 h
window and as its approved template for outside it (the sender picks). The texts and
templates live in `messages_es/alerts.toml` under `event.<type with _>`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from flows.account import local_amount, local_date
from flows.billing import Client, EventFacts
from flows.catalog import Catalog
from flows.outbound import Reply, Template, Text

# SPEC §3's table, in its order (the order "Mis alertas" lists them in).
ALERT_TYPES = (
    "client.created",
    "client.password_changed",
    "invoice.created",
    "client.updated",
    "invoice.cancelled",
    "invoice.paid",
    "service.suspended",
    "service.unsuspended",
    "service.terminated",
    "quote.created",
    "domain.deleted",
)
# A security notice: sent whatever the customer switched off.
SECURITY = frozenset({"client.password_changed"})
SWITCHABLE = tuple(t for t in ALERT_TYPES if t not in SECURITY)
CLIENT_EVENTS = frozenset({"client.created", "client.updated", "client.password_changed"})

# Why an event was not alerted (events.skip_reason, `alerts status`).
UNKNOWN_CLIENT = "unknown_client"
NO_WHATSAPP = "no_whatsapp_number"
ALERTS_OFF = "alerts_off"
TOO_OLD = "too_old"  # the billing system could not give its details for too long
# An upgrade's invoice ordered in the chat: the conversation gave its link already.
TOLD_IN_CHAT = "told_in_chat"

# Meta: a template parameter may not hold newlines, tabs or more than 4 spaces in a row;
# long values are cut (a body is at most 1,024 characters with its parameters).
TEMPLATE_PARAM_MAX = 120
_BLANKS = re.compile(r"\s+")


def catalog_key(event_type: str) -> str:
    return "alerts.event." + event_type.replace(".", "_")


# An upgrade's invoice paid or voided: one message saying what it means for the service
# (now on the new plan; the upgrade's quote expired), instead of the generic one.
UPGRADE_APPLIED = "alerts.event.upgrade_applied"
UPGRADE_EXPIRED = "alerts.event.upgrade_expired"
# Every message an event can become, each with its template (`templates export`).
MESSAGE_KEYS = (*(catalog_key(t) for t in ALERT_TYPES), UPGRADE_APPLIED, UPGRADE_EXPIRED)


def message_key(event_type: str, facts: EventFacts) -> str:
    """The message for this event: its type's, or an upgrade's variant."""
    if facts.upgrade_to and event_type == "invoice.paid":
        return UPGRADE_APPLIED
    if facts.upgrade_to and event_type == "invoice.cancelled":
        return UPGRADE_EXPIRED
    return catalog_key(event_type)


@dataclass(frozen=True, slots=True)
class Preferences:
    """A customer's switches; no row in the database means every alert on."""

    enabled: bool = True
    disabled_types: frozenset[str] = frozenset()

    def wants(self, event_type: str) -> bool:
        if event_type in SECURITY:
            return True
        return self.enabled and event_type not in self.disabled_types


def template_param(value: str, limit: int = TEMPLATE_PARAM_MAX) -> str:
    """A value as Meta accepts it in a template: one line, single spaces, not too long,
    never empty."""
    flat = _BLANKS.sub(" ", value).strip()
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return flat or "-"


def url_param(value: str) -> str:
    """The dynamic end of a URL button (an id): no spaces."""
    return re.sub(r"\s+", "", value) or "-"


def first_name(client: Client) -> str:
    return client.name.split()[0] if client.name.split() else client.name


def fields(
    catalog: Catalog, event_type: str, client: Client, facts: EventFacts, panel_url: str
) -> dict[str, str]:
    """Everything the event's text and template may name, as the customer reads it."""
    money = catalog.text("account.money", amount=local_amount(facts.total)) if facts.total else "-"
    panel = panel_url.rstrip("/")
    values = {
        "name": first_name(client),
        "panel_url": f"{panel}/clientarea.php",
        "details_url": f"{panel}/clientarea.php?action=details",
        "invoices_url": f"{panel}/clientarea.php?action=invoices",
        "reset_url": f"{panel}/index.php?rp=/password/reset",
        "invoice_id": facts.invoice_id or "-",
        "total": money,
        "due_date": local_date(facts.due) if facts.due else "-",
        "url": facts.url or f"{panel}/clientarea.php",
        "service": facts.service or "-",
        "quote_id": facts.quote_id or "-",
        "domain": facts.domain or "-",
        "subject": "",
        "valid_until": "",
        "upgrade_to": facts.upgrade_to or "-",
    }
    if event_type == "quote.created":
        if facts.subject.strip():
            subject = facts.subject.strip()
            values["subject"] = catalog.text("alerts.event.quote_created.subject", subject=subject)
        if facts.valid_until:
            values["valid_until"] = catalog.text(
                "alerts.event.quote_created.valid_until", date=local_date(facts.valid_until)
            )
    return values


def alert(
    catalog: Catalog, event_type: str, client: Client, facts: EventFacts, panel_url: str
) -> Reply:
    """The one message for this event: its text, and its template for outside the 24 h
    window (parameters made safe for Meta)."""
    base = message_key(event_type, facts)
    values = fields(catalog, event_type, client, facts, panel_url)
    text = catalog.text(f"{base}.text", **values)
    return Reply(Text(text, preview_url=True), template_from(catalog, base, values))


def template_from(catalog: Catalog, base: str, values: Mapping[str, str]) -> Template:
    """The approved template under `base` (`template`, `params`, maybe a URL `button`)
    with its parameters taken from `values` and made safe for Meta."""
    params = tuple(template_param(values[name]) for name in catalog.words(f"{base}.params"))
    button: tuple[str, ...] = ()
    if catalog.has(f"{base}.button.param"):
        button = (url_param(values[str(catalog.raw(f"{base}.button.param"))]),)
    return Template(
        name=catalog.text(f"{base}.template"), language="es", body_params=params,
        button_params=button,
    )  # fmt: skip


def facts_from_data(data: Mapping[str, Any]) -> EventFacts:
    """What an event's own `data` says (SPEC §4 names), leniently: a backend that sent ids
    only leaves the rest None for a lookup to fill."""

    def text(key: str) -> str | None:
        value = data.get(key)
        if value is None or isinstance(value, dict | list | bool):
            return None
        return str(value).strip() or None

    def day(key: str) -> date | None:
        value = text(key)
        try:
            return date.fromisoformat(value[:10]) if value else None
        except ValueError:
            return None

    total: Decimal | None = None
    raw_total = text("total")
    if raw_total is not None:
        try:
            total = Decimal(raw_total.replace(",", "")).quantize(Decimal("0.01"))
        except InvalidOperation:
            total = None
        if total is not None and not total.is_finite():
            total = None
    return EventFacts(
        invoice_id=text("invoice_id"),
        total=total,
        due=day("due_date"),
        url=text("url"),
        # WHMCS's module hooks name a service by its domain.
        service=text("service") or (text("domain") if "service_id" in data else None),
        quote_id=text("quote_id"),
        subject=text("subject") or "",
        valid_until=day("valid_until"),
        domain=text("domain"),
    )
