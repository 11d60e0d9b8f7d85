"""The sandbox's billing panel: the billing system's staff side for the chosen customer
(pay or void an invoice, suspend a service, make a quote…) through the local backend,
which emits the matching events; the panel lists them, as the alerts will send them.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from bot.fakes.payloads import JSONDict
from bot.listener import EVENTS
from bot.webhook import BILLING, POOL, SIGNALS
from flows.alerts import ALERT_TYPES
from flows.billing import NOT_FOUND, BillingRefused, Client, Domain, Invoice, Service
from store import alerts
from store.billing_local import LocalBilling
from store.events import recent_for_client
from store.events import store as store_event

EVENTS_SHOWN = 20
QUOTE_SUBJECT_MAX = 200
_CENT = Decimal("0.01")
_QUOTE_TOTAL_MAX = Decimal("9999999999.99")  # billing_quotes.total is numeric(12, 2)
# What a service action sets, and the statuses it makes sense from: suspending a
# terminated service, or "reactivating" an active one, would emit an event a customer
# must never be alerted about.
_SERVICE_ACTIONS = {
    "suspend": ("suspended", ("active",)),
    "unsuspend": ("active", ("suspended",)),
    "terminate": ("terminated", ("pending", "active", "suspended", "cancelled")),
}
SERVICE_STATUS = "service_status"
INVOICE_NOT_UNPAID = "invoice_not_unpaid"  # the local backend's own reason for it
_REFUSALS_ES = {
    NOT_FOUND: "no existe",
    INVOICE_NOT_UNPAID: "la factura no está impaga",
    SERVICE_STATUS: "el servicio no está en un estado que lo permita",
}


def add_routes(app: web.Application) -> None:
    """The panel's API under `/sandbox/api/billing/`."""
    billing = "/sandbox/api/billing/{client_id}"
    app.router.add_get(billing, _billing_state_handler)
    app.router.add_post(
        billing + "/invoices/{invoice_id}/{action:pay|cancel}", _billing_handler(_invoice_action)
    )
    app.router.add_post(
        billing + "/services/{service_id}/{action:suspend|unsuspend|terminate}",
        _billing_handler(_service_action),
    )
    app.router.add_post(billing + "/domains/{domain_id}/delete", _billing_handler(_domain_action))
    app.router.add_post(billing + "/quotes", _billing_handler(_quote_action))
    app.router.add_post(billing + "/events", _billing_handler(_event_action))
    # Last: any other path under the panel's API gets a JSON answer too.
    app.router.add_route("*", "/sandbox/api/billing/{tail:.*}", _billing_unknown)


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


class _Invalid(Exception):
    """A panel request whose input is malformed: answered 400 with the message."""


BillingAction = Callable[[LocalBilling, str, JSONDict, web.Request], Awaitable[JSONDict]]


def _staff_billing(app: web.Application) -> LocalBilling:
    billing = app[BILLING]
    # sandbox_settings forces the local backend: only it has the staff operations.
    if not isinstance(billing, LocalBilling):
        raise RuntimeError("the sandbox's billing panel needs the local billing backend")
    return billing


async def _billing_state_handler(request: web.Request) -> web.Response:
    """The customer's services, invoices, domains and latest events."""
    billing = _staff_billing(request.app)
    client_id = request.match_info["client_id"]
    client = await billing.get_client(client_id)
    if client is None:
        return _refused(BillingRefused(NOT_FOUND, f"client {client_id}"))
    return web.json_response(await _billing_state(request.app, billing, client))


def _billing_handler(action: BillingAction) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A POST endpoint doing `action` on one of the customer's records: it answers what
    was done and the customer's state after it, or a JSON error (404 for a record that is
    not theirs or does not exist, 400 for anything else refused)."""

    async def handler(request: web.Request) -> web.Response:
        billing = _staff_billing(request.app)
        client_id = request.match_info["client_id"]
        try:
            body = await _json_body(request)
            client = await billing.get_client(client_id)
            if client is None:
                raise BillingRefused(NOT_FOUND, f"client {client_id}")
            done = await action(billing, client_id, body, request)
        except _Invalid as e:
            return _bad(str(e))
        except BillingRefused as e:
            return _refused(e)
        state = await _billing_state(request.app, billing, client)
        return web.json_response({"done": done, **state})

    return handler


async def _json_body(request: web.Request) -> JSONDict:
    # Requiring JSON keeps other web pages out: a cross-origin request with this content
    # type needs a CORS preflight, which the sandbox never grants.
    if request.content_type != "application/json":
        raise _Invalid("el cuerpo debe ser JSON (Content-Type: application/json)")
    try:
        body = await request.json()
    except ValueError as e:
        raise _Invalid("el cuerpo debe ser JSON") from e
    if not isinstance(body, dict):
        raise _Invalid("el cuerpo debe ser un objeto JSON")
    return body


def _refused(e: BillingRefused) -> web.Response:
    message = _REFUSALS_ES.get(e.reason, e.reason)
    return web.json_response(
        {
            "error": f"{message}: {e.detail}" if e.detail else message,
            "reason": e.reason,
            "detail": e.detail,
        },
        status=404 if e.reason == NOT_FOUND else 400,
    )


async def _billing_unknown(request: web.Request) -> web.Response:
    return web.json_response(
        {"error": f"no existe la operación {request.method} {request.path}", "reason": NOT_FOUND},
        status=404,
    )


async def _invoice_action(
    billing: LocalBilling, client_id: str, body: JSONDict, request: web.Request
) -> JSONDict:
    invoice_id = request.match_info["invoice_id"]
    invoices = await billing.list_invoices(client_id)
    invoice = next((i for i in invoices if i.id == invoice_id), None)
    if invoice is None:
        raise BillingRefused(NOT_FOUND, f"invoice {invoice_id}")
    if invoice.status != "unpaid":
        raise BillingRefused(INVOICE_NOT_UNPAID, f"{invoice_id} is {invoice.status}")
    if request.match_info["action"] == "pay":
        invoice = await billing.pay_invoice(invoice_id)
    else:
        invoice = await billing.cancel_invoice(invoice_id)
    return {"invoice": _invoice_json(invoice)}


async def _service_action(
    billing: LocalBilling, client_id: str, body: JSONDict, request: web.Request
) -> JSONDict:
    service_id = request.match_info["service_id"]
    action = request.match_info["action"]
    service = await billing.get_service(client_id, service_id)
    if service is None:
        raise BillingRefused(NOT_FOUND, f"service {service_id}")
    status, allowed_from = _SERVICE_ACTIONS[action]
    if service.status not in allowed_from:
        raise BillingRefused(SERVICE_STATUS, f"cannot {action} a service that is {service.status}")
    service = await billing.set_service_status(service_id, status)
    return {"service": _service_json(service)}


async def _domain_action(
    billing: LocalBilling, client_id: str, body: JSONDict, request: web.Request
) -> JSONDict:
    domain_id = request.match_info["domain_id"]
    domains = await billing.list_domains(client_id)
    domain = next((d for d in domains if d.id == domain_id), None)
    if domain is None:
        raise BillingRefused(NOT_FOUND, f"domain {domain_id}")
    await billing.delete_domain(domain_id)
    return {"domain": _domain_json(domain)}


async def _quote_action(
    billing: LocalBilling, client_id: str, body: JSONDict, request: web.Request
) -> JSONDict:
    total = _quote_total(body.get("total"))
    subject = body.get("subject", "")
    if not isinstance(subject, str):
        raise _Invalid(f"subject: texto de hasta {QUOTE_SUBJECT_MAX} caracteres")
    # One line: the alert will carry it as a template parameter, where WhatsApp refuses
    # newlines, tabs and runs of spaces (SPEC §5).
    subject = " ".join(subject.split())
    if len(subject) > QUOTE_SUBJECT_MAX:
        raise _Invalid(f"subject: texto de hasta {QUOTE_SUBJECT_MAX} caracteres")
    quote_id = await billing.create_quote(client_id, total, subject=subject)
    return {"quote": {"id": quote_id, "total": _money(total), "subject": subject}}


async def _event_action(
    billing: LocalBilling, client_id: str, body: JSONDict, request: web.Request
) -> JSONDict:
    """Fire one event of the chosen type for this customer, as the billing system would
    post it (ids only: the alert looks the details up), naming their own records; the
    alert worker turns it into the WhatsApp alert the phone then shows."""
    event_type = body.get("type")
    if event_type not in ALERT_TYPES:
        raise _Invalid(f"type: uno de {', '.join(ALERT_TYPES)}")
    if event_type == "quote.created":
        quote_id = await billing.create_quote(
            client_id, Decimal("100.00"), subject="Presupuesto de ejemplo"
        )  # emits quote.created itself
        return {"event": {"type": event_type, "data": {"quote_id": quote_id}}}
    data = await _sample_data(billing, client_id, str(event_type))
    event_id = f"sandbox-{uuid.uuid4()}"
    await store_event(
        request.app[POOL], event_id=event_id, event_type=str(event_type),
        occurred_at=datetime.now(UTC), client_id=client_id, data=data,
    )  # fmt: skip
    request.app[SIGNALS].notify(EVENTS)
    return {"event": {"id": event_id, "type": event_type, "data": data}}


async def _sample_data(billing: LocalBilling, client_id: str, event_type: str) -> JSONDict:
    """The customer's own record the event names: their latest (unpaid first) invoice,
    their first service, their first domain."""
    kind = event_type.partition(".")[0]
    if kind == "invoice":
        invoices = await billing.list_invoices(client_id)
        if not invoices:
            raise _Invalid("este cliente no tiene facturas")
        invoice = sorted(invoices, key=lambda i: (i.status != "unpaid", i.id))[0]
        return {"invoice_id": invoice.id}
    if kind == "service":
        services = await billing.list_services(client_id)
        if not services:
            raise _Invalid("este cliente no tiene servicios")
        return {"service_id": services[0].id}
    if kind == "domain":
        domains = await billing.list_domains(client_id)
        if not domains:
            raise _Invalid("este cliente no tiene dominios")
        return {"domain_id": domains[0].id, "domain": domains[0].name}
    return {}


def _quote_total(value: Any) -> Decimal:
    """A positive amount with at most two decimals, as a string (money is never a
    float, SPEC §3); "12,50" is read as 12.50."""
    problem = _Invalid(
        'total: un importe mayor que cero, con hasta dos decimales, como texto: "120.00"'
    )
    if not isinstance(value, str):
        raise problem
    text = value.strip()
    if "," in text and "." not in text:
        text = text.replace(",", ".")
    try:
        total = Decimal(text)
    except InvalidOperation:
        raise problem from None
    if not total.is_finite() or total <= 0 or total > _QUOTE_TOTAL_MAX:
        raise problem
    if total != total.quantize(_CENT):
        raise problem
    return total.quantize(_CENT)


async def _billing_state(app: web.Application, billing: LocalBilling, client: Client) -> JSONDict:
    services = await billing.list_services(client.id)
    invoices = await billing.list_invoices(client.id)
    domains = await billing.list_domains(client.id)
    events = await recent_for_client(app[POOL], client.id, EVENTS_SHOWN)
    async with app[POOL].acquire() as conn:
        alert_states = {
            a.event_id: a for a in await alerts.statuses(conn, client_id=client.id, limit=100)
        }
    labels = {s.id: s.label for s in services}
    return {
        "client": {
            "id": client.id,
            "name": client.name,
            "email": client.email,
            "verified": client.verified,
        },
        "services": [_service_json(s) for s in services],
        "invoices": [_invoice_json(i, labels.get(i.service_id or "")) for i in invoices],
        "domains": [_domain_json(d) for d in domains],
        "events": [
            {
                "id": e["id"],
                "type": e["type"],
                "occurred_at": e["occurred_at"].isoformat(),
                "data": e["data"],
                "alert": _alert_json(alert_states.get(e["id"])),
            }
            for e in events
        ],
    }


def _alert_json(status: alerts.AlertStatus | None) -> JSONDict | None:
    if status is None:
        return None
    return {"state": status.state, "detail": status.detail, "sent_as": status.sent_as}


def _service_json(service: Service) -> JSONDict:
    return {
        "id": service.id,
        "label": service.label,
        "product": service.product_name,
        "status": service.status,
        "cycle": service.billing_cycle,
        "amount": _money(service.amount),
        "next_due": _iso(service.next_due),
    }


def _invoice_json(invoice: Invoice, service_label: str | None = None) -> JSONDict:
    return {
        "id": invoice.id,
        "service_id": invoice.service_id,
        "service": service_label,
        "total": _money(invoice.total),
        "status": invoice.status,
        "due": _iso(invoice.due),
    }


def _domain_json(domain: Domain) -> JSONDict:
    return {
        "id": domain.id,
        "name": domain.name,
        "status": domain.status,
        "auto_renew": domain.auto_renew,
        "next_due": _iso(domain.next_due),
    }


def _money(value: Decimal) -> str:
    return str(value.quantize(_CENT))


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value else None
