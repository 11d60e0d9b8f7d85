"""`python -m bot sandbox`: the whole service on one machine, with a phone to try it on.

One process serves the real application (webhook, dispatcher, sender, health, metrics)
against the fake Cloud API on its own loopback port, with demo billing data, and adds a
phone simulator under `/sandbox/`: pick a demo customer, write to the bot, tap its
buttons and lists. What the simulator "sends" goes through the fake's inbound simulator,
so it reaches `/webhook` signed exactly as Meta would post it; what it shows is what the
bot sent to the fake Graph API.

Next to the phone, a billing panel plays the billing system's staff side for the chosen
customer (pay or void an invoice, suspend a service, make a quote…) through the local
backend, which emits the matching events; the panel lists them, as the alerts will send
them.

Everything binds to loopback: the simulator lets anyone speak as any demo customer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from aiohttp import web

from bot import wa_payloads
from bot.app import BILLING, build_app
from bot.config import Settings
from bot.fake_cloud_api import FakeCloudAPI
from bot.serving import serve
from bot.wa_payloads import InboundItem, JSONDict
from bot.webhook import POOL
from flows.billing import NOT_FOUND, BillingRefused, Client, Domain, Invoice, Service
from flows.phones import whatsapp_id_for
from store.billing_local import LocalBilling
from store.events import recent_for_client

log = logging.getLogger(__name__)

DEMO_BILLING = Path(__file__).resolve().parent / "demo_billing.json"
STATIC_DIR = Path(__file__).resolve().parent / "static" / "sandbox"
HOST = "127.0.0.1"
# A Spanish mobile on no demo account: shows what a stranger gets.
UNKNOWN_WA_ID = "34612345678"
UNKNOWN_NAME = "Número desconocido"
SANDBOX_PHONE_ID = "100000000000001"
# The fake's status webhooks come this long apart, so the ticks visibly move.
STATUS_DELAY_SECONDS = 0.4
TEXT_MAX = 4096
CHOICE_FIELD_MAX = 256
_WA_ID = re.compile(r"\d{6,15}")
# The page runs only its own script and styles: no message text can become markup.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
# The billing panel.
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


def sandbox_settings(settings: Settings) -> Settings:
    """`settings` made self-contained: secrets generated where unset, local billing, and
    per-recipient pacing relaxed (the fake does not enforce WhatsApp's pair limit, and a
    person trying the bot should not wait 6 s between answers)."""
    return settings.with_(
        whatsapp_phone_id=settings.whatsapp_phone_id or SANDBOX_PHONE_ID,
        whatsapp_token=settings.whatsapp_token or secrets.token_urlsafe(24),
        whatsapp_app_secret=settings.whatsapp_app_secret or secrets.token_hex(16),
        whatsapp_verify_token=settings.whatsapp_verify_token or secrets.token_urlsafe(16),
        events_secret=settings.events_secret or secrets.token_hex(16),
        billing_backend="local",
        recipient_interval_seconds=min(settings.recipient_interval_seconds, 0.25),
        recipient_burst=max(settings.recipient_burst, 50),
    )


def load_demo_billing(path: Path = DEMO_BILLING) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


class Transcript:
    """Both sides of every simulated chat, in one order.

    A customer's message is written before it is posted to the webhook; the bot's sends
    are copied from the fake in its order when the page asks. So a reply never appears
    before the message it answers.
    """

    def __init__(self, fake: FakeCloudAPI) -> None:
        self._fake = fake
        self._entries: list[JSONDict] = []
        self._fake_seq = 0

    def _append(self, entry: JSONDict) -> JSONDict:
        entry["seq"] = len(self._entries) + 1
        self._entries.append(entry)
        return entry

    def add_inbound(self, wa_id: str, wamid: str, shown: JSONDict) -> JSONDict:
        return self._append(
            {
                "direction": "in",
                "wa_id": wa_id,
                "id": wamid,
                "at": datetime.now(UTC).isoformat(),
                "webhook_status": None,
                **shown,
            }
        )

    def _sync(self) -> None:
        for sent in self._fake.messages(after=self._fake_seq):
            self._fake_seq = sent.seq
            self._append(
                {
                    "direction": "out",
                    "wa_id": sent.to,
                    "id": sent.wamid,
                    "at": sent.received_at.isoformat(),
                    "type": sent.type,
                    "body": sent.body,
                }
            )

    def chat(self, wa_id: str, after: int) -> tuple[list[JSONDict], dict[str, str]]:
        """The entries of `wa_id`'s chat after `after`, and the status of every message
        known so far: the bot's as Meta reported them, the customer's as our webhook
        answered (`received` or `rejected`)."""
        self._sync()
        mine = [e for e in self._entries if e["wa_id"] == wa_id]
        statuses: dict[str, str] = {}
        for entry in mine:
            if entry["direction"] == "out":
                status = self._fake.acknowledged.get(entry["id"])
                if status is not None:
                    statuses[entry["id"]] = status
            elif entry["webhook_status"] is not None:
                statuses[entry["id"]] = "received" if entry["webhook_status"] == 200 else "rejected"
        return [e for e in mine if e["seq"] > after], statuses


class Simulator:
    """The phone simulator's state: the fake, the chats, and where demo data comes from."""

    def __init__(self, fake: FakeCloudAPI, settings: Settings, demo: dict[str, Any]) -> None:
        self.fake = fake
        self.settings = settings
        self.demo = demo
        self.transcript = Transcript(fake)


SIMULATOR: web.AppKey[Simulator] = web.AppKey("sandbox_simulator", Simulator)


def add_simulator(app: web.Application, simulator: Simulator) -> None:
    """The `/sandbox/` page and API on `app`, and demo data loaded once the pool is open.

    Registered after `build_app`'s own cleanup context, which opens the pool first.
    """
    app[SIMULATOR] = simulator

    async def demo_data(app: web.Application) -> AsyncIterator[None]:
        billing = LocalBilling(app[POOL], default_region=simulator.settings.default_region)
        await billing.load(simulator.demo)
        log.info("demo billing data loaded (%d clients)", len(simulator.demo.get("clients", [])))
        yield

    app.cleanup_ctx.append(demo_data)
    app.router.add_get("/sandbox", _to_page)
    app.router.add_get("/sandbox/", _page)
    app.router.add_get("/sandbox/api/customers", _customers)
    app.router.add_post("/sandbox/api/send", _send)
    app.router.add_get("/sandbox/api/messages", _messages)
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
    # Last: any other path under the panel's API gets a JSON answer too.
    app.router.add_route("*", "/sandbox/api/billing/{tail:.*}", _billing_unknown)
    app.router.add_static("/sandbox/static/", STATIC_DIR)


async def _to_page(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/sandbox/")


async def _page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _customers(request: web.Request) -> web.Response:
    """The demo customers from the billing tables, each with the WhatsApp id to write as."""
    simulator = request.app[SIMULATOR]
    region = simulator.settings.default_region
    billing = LocalBilling(request.app[POOL], default_region=region)
    customers: list[JSONDict] = []
    for row in await billing.clients():
        client = await billing.get_client(row["id"])
        services = await billing.list_services(row["id"])
        customers.append(
            {
                "id": row["id"],
                "name": row["name"],
                "email": row["email"],
                "phone": row["phone"],
                "wa_id": whatsapp_id_for(row["phone"], region),
                "verified": client.verified if client is not None else False,
                "services": [
                    {"label": s.label, "product": s.product_name, "status": s.status}
                    for s in services
                ],
            }
        )
    unknown = {"wa_id": UNKNOWN_WA_ID, "name": UNKNOWN_NAME}
    return web.json_response({"customers": customers, "unknown": unknown})


def _short(value: Any, what: str, max_len: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise ValueError(f"{what}: texto de 1 a {max_len} caracteres")
    return value


def _inbound_item(data: JSONDict, wa_id: str, name: str) -> tuple[InboundItem, JSONDict]:
    """The message a simulator request describes, and how the chat shows it."""
    if "text" in data:
        text = _short(data["text"], "text", TEXT_MAX)
        return wa_payloads.inbound_text(wa_id, text, name=name), {"kind": "text", "text": text}
    for key in ("button_reply", "list_reply"):
        reply = data.get(key)
        if isinstance(reply, dict):
            choice_id = _short(reply.get("id"), f"{key}.id", CHOICE_FIELD_MAX)
            title = _short(reply.get("title"), f"{key}.title", CHOICE_FIELD_MAX)
            if key == "button_reply":
                item = wa_payloads.inbound_button_reply(wa_id, choice_id, title, name=name)
            else:
                description = reply.get("description") or ""
                if not isinstance(description, str) or len(description) > CHOICE_FIELD_MAX:
                    raise ValueError("list_reply.description: texto demasiado largo")
                item = wa_payloads.inbound_list_reply(
                    wa_id, choice_id, title, description, name=name
                )
            return item, {"kind": "choice", "text": title, "choice_id": choice_id}
    kind = data.get("type")
    if kind == "sticker":
        sticker = {
            "mime_type": "image/webp",
            "sha256": secrets.token_hex(32),
            "id": str(secrets.randbelow(10**15)),
            "animated": False,
        }
        return wa_payloads.inbound_other(wa_id, "sticker", sticker, name=name), {"kind": kind}
    if kind == "location":
        location = {
            "latitude": -34.6037,
            "longitude": -58.3816,
            "name": "Obelisco",
            "address": "Av. 9 de Julio s/n, Buenos Aires",
        }
        return wa_payloads.inbound_other(wa_id, "location", location, name=name), {"kind": kind}
    raise ValueError("falta 'text', 'button_reply', 'list_reply' o 'type' (sticker, location)")


async def _send(request: web.Request) -> web.Response:
    """The customer writes: the message goes to our webhook as Meta would post it."""
    simulator = request.app[SIMULATOR]
    try:
        data = await request.json()
    except ValueError:
        return _bad("el cuerpo debe ser JSON")
    if not isinstance(data, dict):
        return _bad("el cuerpo debe ser un objeto JSON")
    wa_id = data.get("wa_id")
    if not isinstance(wa_id, str) or not _WA_ID.fullmatch(wa_id):
        return _bad("wa_id: de 6 a 15 dígitos, sin '+'")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        name = "Cliente"
    try:
        item, shown = _inbound_item(data, wa_id, name[:100])
    except ValueError as e:
        return _bad(str(e))
    entry = simulator.transcript.add_inbound(wa_id, item.wamid, shown)
    _, status = await simulator.fake.send_inbound(item)
    entry["webhook_status"] = status
    if status != 200:
        log.warning("sandbox message from %s: the webhook answered %s", wa_id, status)
        error = f"el webhook respondió {status}" if status else "el webhook no respondió"
        return web.json_response({"error": error, "entry": entry}, status=502)
    return web.json_response({"entry": entry})


async def _messages(request: web.Request) -> web.Response:
    """One chat after a sequence number, with the delivery status of the bot's messages."""
    wa_id = request.query.get("wa_id", "")
    if not _WA_ID.fullmatch(wa_id):
        return _bad("wa_id: de 6 a 15 dígitos, sin '+'")
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        return _bad("after debe ser un entero")
    entries, statuses = request.app[SIMULATOR].transcript.chat(wa_id, after)
    return web.json_response({"messages": entries, "statuses": statuses})


# --- billing panel: the billing system's staff side -------------------------------------


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
            }
            for e in events
        ],
    }


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


class Sandbox:
    """The service, the fake Cloud API and the simulator, started and stopped together."""

    def __init__(
        self,
        settings: Settings,
        *,
        port: int,
        host: str = HOST,
        demo: dict[str, Any] | None = None,
    ) -> None:
        self.settings = sandbox_settings(settings)
        self.host = host
        self.port = port
        self.demo = load_demo_billing() if demo is None else demo
        self.fake = FakeCloudAPI(
            phone_id=self.settings.whatsapp_phone_id,
            token=self.settings.whatsapp_token,
            app_secret=self.settings.whatsapp_app_secret,
            statuses=("sent", "delivered", "read"),
            status_delay=STATUS_DELAY_SECONDS,
        )
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> Self:
        api_url = await self.fake.start(self.host, 0)
        try:
            self.settings = self.settings.with_(whatsapp_api_url=api_url)
            if self.port:
                self.fake.webhook_url = f"http://{self.host}:{self.port}/webhook"
            app = build_app(self.settings)
            add_simulator(app, Simulator(self.fake, self.settings, self.demo))
            self._runner, self.url = await serve(app, self.host, self.port, shutdown_timeout=5.0)
        except BaseException:
            await self.stop()
            raise
        self.fake.webhook_url = f"{self.url}/webhook"
        return self

    async def stop(self) -> None:
        # The service first: its sender may still be talking to the fake.
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.fake.stop()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def urls(self) -> dict[str, str]:
        return {
            "sandbox": f"{self.url}/sandbox/",
            "webhook": f"{self.url}/webhook",
            "fake_api": self.fake.base_url,
            "fake_messages": f"{self.fake.base_url}/_fake/messages",
            "healthz": f"{self.url}/healthz",
            "metrics": f"{self.url}/metrics",
        }

    def banner(self) -> str:
        urls = self.urls()
        return "\n".join(
            [
                "WhatsApp bot sandbox is running.",
                f"  Phone simulator:  {urls['sandbox']}",
                f"  Webhook:          {urls['webhook']}",
                f"  Fake Cloud API:   {urls['fake_api']}  (sent: {urls['fake_messages']})",
                f"  Health:           {urls['healthz']}",
                f"  Metrics:          {urls['metrics']}",
                f"  Database:         {_database_label(self.settings)}",
                "Press Ctrl-C to stop.",
            ]
        )


def _database_label(settings: Settings) -> str:
    if settings.database_url is None:
        return f"embedded PostgreSQL in {(settings.data_dir / 'postgres').resolve()}"
    # Never print the DSN itself: it may carry a password.
    parts = urlsplit(settings.database_url)
    return f"DATABASE_URL ({parts.hostname or 'local socket'}{parts.path})"


def run_sandbox(settings: Settings, port: int | None = None) -> int:
    """Serve the sandbox until Ctrl-C or SIGTERM; the process exit code."""
    try:
        return asyncio.run(_serve(settings, settings.port if port is None else port))
    except KeyboardInterrupt:
        return 130


async def _serve(settings: Settings, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    sandbox = Sandbox(settings, port=port)
    try:
        await sandbox.start()
    except OSError as e:
        # A port in use or a database that cannot be reached: the message says it all.
        print(f"cannot start the sandbox: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception as e:
        log.exception("the sandbox could not start")
        print(f"cannot start the sandbox: {e}", file=sys.stderr, flush=True)
        return 1
    print(sandbox.banner(), flush=True)
    await stop.wait()
    print("stopping", flush=True)
    await sandbox.stop()
    print("stopped", flush=True)
    return 0
