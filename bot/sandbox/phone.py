"""The phone simulator: pick a demo customer, write to the bot, tap its buttons and lists.

What the simulator "sends" goes through the fake Cloud API's inbound simulator, so it
reaches `/webhook` signed exactly as Meta would post it; what it shows is what the bot
sent to the fake Graph API.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from bot.config import Settings
from bot.fakes import payloads as wa_payloads
from bot.fakes.cloud_api import FakeCloudAPI
from bot.fakes.payloads import InboundItem, JSONDict
from bot.sandbox import billing_panel
from bot.webhook import POOL
from flows.phones import whatsapp_id_for
from store import inbox
from store.billing_local import LocalBilling

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
# A Spanish mobile on no demo account: shows what a stranger gets.
UNKNOWN_WA_ID = "34612345678"
UNKNOWN_NAME = "Número desconocido"
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
        # The customer's messages the bot has finished with: wamid -> `read` / `unhandled`.
        self._outcomes: dict[str, str] = {}

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

    async def chat(
        self, wa_id: str, after: int, pool: asyncpg.Pool
    ) -> tuple[list[JSONDict], dict[str, str]]:
        """The entries of `wa_id`'s chat after `after`, and the status of every message
        known so far: the bot's as Meta reported them, the customer's as their phone
        would show them (see `_customer_status`)."""
        self._sync()
        mine = [e for e in self._entries if e["wa_id"] == wa_id]
        # Only this chat's own messages are looked up: the answer says nothing of any
        # other customer's.
        delivered = [e["id"] for e in mine if e["direction"] == "in" and e["webhook_status"] == 200]
        waiting = [wamid for wamid in delivered if wamid not in self._outcomes]
        if waiting:
            self._outcomes.update(await _bot_outcomes(pool, waiting))
        statuses: dict[str, str] = {}
        for entry in mine:
            if entry["direction"] == "out":
                status = self._fake.acknowledged.get(entry["id"])
                if status is not None:
                    statuses[entry["id"]] = status
            else:
                statuses[entry["id"]] = _customer_status(entry, self._outcomes.get(entry["id"]))
        return [e for e in mine if e["seq"] > after], statuses


def _customer_status(entry: JSONDict, handled: str | None) -> str:
    """The ticks under the customer's own message.

    On a phone: one grey tick once WhatsApp's server has it, two grey once it reached the
    business, two blue once the business marked it read. Here the sandbox is WhatsApp's
    server (`sent` while the webhook is being posted) and a 200 from our webhook is the
    delivery. The bot sends no read receipts (Cloud API `"status": "read"`), so on a real
    phone its customers' messages stay at two grey ticks; the simulator turns them blue
    when the bot has handled the message (its inbox row is `done`), which is what a
    receipt sent at that point would show, and what a person trying the bot wants to see.
    Two things a phone never shows are marked as errors, because someone trying the bot
    must notice them: our webhook refusing the message (Meta would retry it unseen), and
    the bot giving up on it after its attempts (the inbox row `failed`).
    """
    if entry["webhook_status"] is None:
        return "sent"
    if entry["webhook_status"] != 200:
        return "rejected"
    return handled or "delivered"


async def _bot_outcomes(pool: asyncpg.Pool, wamids: list[str]) -> dict[str, str]:
    """`read` or `unhandled` for each of `wamids` the bot has finished with."""
    finished = await inbox.finished(pool, wamids)
    return {
        wamid: "read" if status == "done" else "unhandled" for wamid, status in finished.items()
    }


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
    billing_panel.add_routes(app)
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
            # The bot's message the tapped button belongs to, quoted as WhatsApp does.
            context = _short(data.get("context"), "context", CHOICE_FIELD_MAX)
            if key == "button_reply":
                item = wa_payloads.inbound_button_reply(
                    wa_id, choice_id, title, context_wamid=context, name=name
                )
            else:
                description = reply.get("description") or ""
                if not isinstance(description, str) or len(description) > CHOICE_FIELD_MAX:
                    raise ValueError("list_reply.description: texto demasiado largo")
                item = wa_payloads.inbound_list_reply(
                    wa_id, choice_id, title, description, context_wamid=context, name=name
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
    """One chat after a sequence number, with the status of every message in it."""
    wa_id = request.query.get("wa_id", "")
    if not _WA_ID.fullmatch(wa_id):
        return _bad("wa_id: de 6 a 15 dígitos, sin '+'")
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        return _bad("after debe ser un entero")
    transcript = request.app[SIMULATOR].transcript
    entries, statuses = await transcript.chat(wa_id, after, request.app[POOL])
    return web.json_response({"messages": entries, "statuses": statuses})


# --- billing panel: the billing system's staff side -------------------------------------
