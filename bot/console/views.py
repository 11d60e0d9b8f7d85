"""The staff console's pages: the queue, a conversation with its items, and what staff
do there (claim, reassign, snooze, priority, resolve, reply). bot.console puts them
behind the login, the CSRF check and the security headers.

Every change is one transaction through store.queue, which records who did what; a
message for the customer is an outbox row like any other (the sender sends it exactly
once, paced) and the sender is woken after the commit. Pages refresh their live parts
from /staff/live, a server-sent event stream fed by a cheap fingerprint of the queue."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp_jinja2
import asyncpg
from aiohttp import web

from bot.console import live
from bot.console.auth import current_staff, safe_next
from bot.console.wording import (
    PRIORITY_NAMES,
    PURPOSE_NAMES,
    TICKS,
    VIEW_NAMES,
    Format,
    customer,
    inbound_text,
)
from bot.listener import OUTBOX
from bot.webhook import BILLING, POOL, SETTINGS, SIGNALS
from flows.billing import BillingError
from flows.catalog import default_catalog
from flows.handover import FOLLOW_UP, follow_up, handed_back
from flows.hours import BusinessHours
from flows.menu import HANDED_OVER
from flows.outbound import TEXT_MAX, MessageLimitError, Text, check_limits, from_json, preview
from flows.outbound import to_json as message_json
from store import queue, staff, transcript, turns
from store.db import Conn
from store.staff import StaffMember

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Ids in URLs: PostgreSQL's bigint, so a longer number is a 404, not a database error.
_ID = r"{id:\d{1,18}}"
WINDOW = timedelta(hours=24)
# The account summary waits this long for the billing system, then says it could not.
BILLING_SECONDS = 5.0
# `/saludo` at the start of a reply names a canned reply (store.staff, migration 018).
_CANNED = re.compile(r"/([a-z0-9_-]{1,32})(?=\s|$)")
TEMPLATE_NAME_MAX = 60
WINDOW_CLOSED = (
    "Pasaron más de 24 horas desde el último mensaje del cliente: WhatsApp solo permite "
    "enviarle la plantilla de seguimiento. Cuando responda, podrá escribirle libremente."
)
# What a billing read may fail with: the page says so instead of failing.
BILLING_FAILURES = (
    BillingError,
    TimeoutError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


class Problem(Exception):
    """A request the console refuses: shown as a page with this status and words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def add_routes(app: web.Application) -> None:
    app.router.add_get("/staff/", _page(queue_page))
    live.add_routes(app)
    app.router.add_get(f"/staff/conversations/{_ID}", _page(conversation_page))
    app.router.add_get(f"/staff/conversations/{_ID}/transcript", _page(transcript_fragment))
    app.router.add_post(f"/staff/conversations/{_ID}/reply", _page(reply))
    app.router.add_post(
        f"/staff/items/{_ID}/{{action:claim|assign|snooze|priority|resolve}}", _page(item_action)
    )


def _page(handler: Handler) -> Handler:
    async def page(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Problem as p:
            return aiohttp_jinja2.render_template(
                "problem.html", request, {"message": p.message, "status": p.status}, status=p.status
            )

    return page


def _format(request: web.Request) -> Format:
    return Format(ZoneInfo(request.app[SETTINGS].display_timezone), datetime.now(UTC))


# -- the queue ------------------------------------------------------------------------


async def queue_page(request: web.Request) -> web.StreamResponse:
    """The queue. Without ?view the member's own items when they have any (a pre-assigned
    account manager sees theirs first), else every waiting item."""
    member = current_staff(request)
    requested = request.query.get("view")
    if requested is not None and requested not in queue.VIEWS:
        raise Problem(400, f"No hay ninguna vista {requested!r}.")
    async with request.app[POOL].acquire() as conn:
        counts = await queue.counts(conn, staff_id=member.id)
        view: queue.View = (
            next(v for v in queue.VIEWS if v == requested)
            if requested
            else ("mine" if counts["mine"] else "all")
        )
        items = await queue.list_items(conn, view, staff_id=member.id)
    context = {
        "view": view,
        "views": VIEW_NAMES,
        "counts": counts,
        "items": items,
        "fmt": _format(request),
        "customer": customer,
        "member": member,
    }
    name = "queue_items.html" if request.query.get("partial") else "queue.html"
    return aiohttp_jinja2.render_template(name, request, context)


# -- a conversation -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One message of the transcript as the page shows it."""

    id: int
    direction: str
    at: datetime
    text: str
    who: str
    tick: tuple[str, str, str] | None = None
    error: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """What staff see of the customer's account: nothing beyond these fields (no
    passwords, no card data, no other client's records)."""

    note: str = ""
    name: str = ""
    email: str = ""
    services: list[dict[str, Any]] = field(default_factory=list)
    unpaid: list[dict[str, Any]] = field(default_factory=list)
    domains: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Work:
    """The part of a conversation page staff act on (a live fragment of its own)."""

    conversation: asyncpg.Record
    items: list[queue.Item]
    actions: dict[int, list[queue.Action]]
    team: list[staff.StaffAccount]
    canned: list[staff.CannedReply]
    window_open: bool
    window_until: datetime | None
    handed_over: bool
    returned_to_bot: bool
    reply_after: int

    @property
    def open_items(self) -> list[queue.Item]:
        return [i for i in self.items if i.status != "resolved"]

    @property
    def resolved_items(self) -> list[queue.Item]:
        return [i for i in self.items if i.status == "resolved"]


async def conversation_page(request: web.Request) -> web.StreamResponse:
    """The transcript, the account summary and the items; `?partial=work` is the items
    and the reply box alone (the live refresh)."""
    conversation_id = int(request.match_info["id"])
    partial = request.query.get("partial")
    return await _conversation(request, conversation_id, partial=partial == "work")


async def _conversation(
    request: web.Request,
    conversation_id: int,
    *,
    partial: bool = False,
    error: str = "",
    draft: str = "",
    status: int = 200,
) -> web.StreamResponse:
    member = current_staff(request)
    async with request.app[POOL].acquire() as conn:
        conv = await queue.conversation(conn, conversation_id)
        if conv is None:
            survivor = await queue.merged_into(conn, conversation_id)
            if survivor is not None and not partial:
                # The same person's conversations were joined: an old link still works.
                raise web.HTTPSeeOther(f"/staff/conversations/{survivor}")
            raise Problem(404, "No existe esa conversación.")
        entries = await transcript.transcript(conn, conversation_id)
        work = await _work(conn, conv, entries)
    lines = [] if partial else [_line(e) for e in entries]
    context: dict[str, Any] = {
        "work": work,
        "lines": lines,
        "fmt": _format(request),
        "customer": customer,
        "member": member,
        "error": error,
        "draft": draft,
        "text_max": TEXT_MAX,
        "priorities": PRIORITY_NAMES,
        "follow_up_text": _follow_up_text(),
    }
    if partial:
        return aiohttp_jinja2.render_template("conversation_work.html", request, context)
    context["account"] = await _account(request, work.conversation["client_id"])
    return aiohttp_jinja2.render_template("conversation.html", request, context, status=status)


def _follow_up_text() -> str:
    """What the follow-up template says, its name parameter left as a placeholder."""
    body = default_catalog().raw(f"{FOLLOW_UP}.template_body")
    return str(body).replace("{{1}}", "[nombre]")


async def _work(
    conn: Conn, conv: asyncpg.Record, entries: list[transcript.TranscriptEntry]
) -> Work:
    items = await queue.conversation_items(conn, conv["id"])
    actions: dict[int, list[queue.Action]] = {i.id: [] for i in items}
    for action in await queue.actions(conn, [i.id for i in items]):
        actions[action.escalation_id].append(action)
    last_reply = max(
        (a.id for log_ in actions.values() for a in log_ if a.action == "replied"), default=0
    )
    returned = max(
        (
            a.id
            for item in items
            if item.status != "resolved"
            for a in actions[item.id]
            if a.action == "customer_returned_to_bot"
        ),
        default=0,
    )
    last_inbound: datetime | None = conv["last_inbound_at"]
    window_until = last_inbound + WINDOW if last_inbound else None
    return Work(
        conversation=conv,
        items=items,
        actions=actions,
        team=[s for s in await staff.list_staff(conn) if s.active],
        canned=await staff.canned_replies(conn),
        window_open=window_until is not None and window_until > datetime.now(UTC),
        window_until=window_until,
        handed_over=conv["flow_state"] == HANDED_OVER,
        returned_to_bot=returned > last_reply,
        # The newest outbound message drawn: a form sent again after it is a repeat.
        reply_after=max((e.id for e in entries if e.direction == "out"), default=0),
    )


async def transcript_fragment(request: web.Request) -> web.StreamResponse:
    current_staff(request)
    conversation_id = int(request.match_info["id"])
    async with request.app[POOL].acquire() as conn:
        if await queue.conversation(conn, conversation_id) is None:
            raise Problem(404, "No existe esa conversación.")
        lines = [_line(e) for e in await transcript.transcript(conn, conversation_id)]
    return aiohttp_jinja2.render_template(
        "transcript.html", request, {"lines": lines, "fmt": _format(request)}
    )


def _line(entry: transcript.TranscriptEntry) -> Line:
    message = entry.message if isinstance(entry.message, Mapping) else {}
    if entry.direction == "in":
        return Line(entry.id, "in", entry.at, inbound_text(message), "Cliente")
    try:
        text = preview(from_json(dict(message)))
    except (KeyError, ValueError, TypeError):
        text = "[mensaje ilegible]"
    tick = TICKS.get(entry.status or "")
    error = ""
    if entry.status == "failed":
        error = " ".join(
            part for part in (str(entry.error_code or ""), entry.error_message or "") if part
        )
    who = entry.staff or "Bot"
    note = ""
    if not entry.staff and entry.purpose not in (None, "reply"):
        note = PURPOSE_NAMES.get(str(entry.purpose), str(entry.purpose))
    return Line(entry.id, "out", entry.at, text, who, tick, error, note)


async def _account(request: web.Request, client_id: str | None) -> AccountSummary:
    """The customer's account as the billing backend has it, only this client's."""
    if not client_id:
        return AccountSummary(note="Número no identificado: no es el teléfono de ninguna cuenta.")
    billing = request.app[BILLING]
    try:
        async with asyncio.timeout(BILLING_SECONDS):
            client = await billing.get_client(client_id)
            if client is None:
                return AccountSummary(note=f"La cuenta {client_id} no está en facturación.")
            services, unpaid, domains = await asyncio.gather(
                billing.list_services(client_id),
                billing.list_invoices(client_id, status="unpaid"),
                billing.list_domains(client_id),
            )
    except BILLING_FAILURES as e:
        log.warning("console: billing summary of client %s unavailable: %r", client_id, e)
        return AccountSummary(note="No se pudo consultar la facturación ahora; pruebe más tarde.")
    return AccountSummary(
        name=client.name,
        email=client.email,
        services=[
            {
                "label": s.label,
                "product": s.product_name,
                "status": s.status,
                "next_due": s.next_due,
            }
            for s in services
            if s.client_id == client_id
        ],
        unpaid=[
            {"id": i.id, "total": i.total, "due": i.due}
            for i in unpaid
            if i.client_id == client_id and i.status == "unpaid"
        ],
        domains=[
            {"name": d.name, "status": d.status, "auto_renew": d.auto_renew}
            for d in domains
            if d.client_id == client_id
        ],
    )


# -- replying -------------------------------------------------------------------------


async def reply(request: web.Request) -> web.StreamResponse:
    """A staff message: free text inside WhatsApp's 24 h window, the follow-up template
    outside it. A resubmitted form (same member, same message, nothing of theirs sent
    since the page was drawn) is not sent again."""
    member = current_staff(request)
    conversation_id = int(request.match_info["id"])
    form = await request.post()
    as_template = form.get("template") == "follow_up"
    text = str(form.get("text", "")).replace("\r\n", "\n").replace("\x00", "").strip()
    after = _optional_int(form.get("reply_after"), "reply_after")
    pool = request.app[POOL]
    async with pool.acquire() as conn:
        conv = await queue.conversation(conn, conversation_id)
        if conv is None:
            raise Problem(404, "No existe esa conversación.")
        if not as_template:
            try:
                text = await _expand(conn, text)
            except Problem as p:
                return await _conversation(
                    request, conversation_id, error=p.message, draft=text, status=p.status
                )
    message: dict[str, Any]
    template: dict[str, Any] | None = None
    if as_template:
        name = await _first_name(request, conv["client_id"], conv["profile_name"])
        message = template = message_json(follow_up(default_catalog(), name))
    else:
        problem = _text_problem(text)
        if problem:
            return await _conversation(
                request, conversation_id, error=problem, draft=text, status=400
            )
        message = message_json(Text(text))
    refusal = ""
    sent = False
    async with pool.acquire() as conn, conn.transaction():
        target = await queue.reply_target(conn, conversation_id)
        if target is None:
            raise Problem(409, "No hay ningún pedido abierto en esta conversación.")
        if not as_template and not target.window_open:
            refusal = WINDOW_CLOSED
        elif await _already_sent(conn, conversation_id, member, after, message):
            log.info("console: %s resubmitted a reply in %s", member.username, conversation_id)
        else:
            await queue.staff_reply(conn, target, member.id, message, template)
            sent = True
    if refusal:
        return await _conversation(request, conversation_id, error=refusal, draft=text, status=409)
    if sent:
        request.app[SIGNALS].notify(OUTBOX)
    raise web.HTTPSeeOther(f"/staff/conversations/{conversation_id}#reply")


async def _expand(conn: Conn, text: str) -> str:
    """`/saludo …` → the canned reply's body, then the rest as typed."""
    match = _CANNED.match(text)
    if match is None:
        return text
    body = await staff.canned_reply(conn, match.group(1))
    if body is None:
        raise Problem(
            400,
            f"No hay ninguna respuesta rápida /{match.group(1)}: elija una de la lista o "
            "escriba el mensaje sin la barra.",
        )
    return body + text[match.end() :]


def _text_problem(text: str) -> str:
    if not text:
        return "Escriba el mensaje antes de enviarlo."
    if len(text) > TEXT_MAX:
        return f"El mensaje tiene {len(text)} caracteres y WhatsApp admite hasta {TEXT_MAX}."
    try:
        check_limits(Text(text))
    except MessageLimitError as e:
        return f"WhatsApp no aceptaría este mensaje: {e}"
    return ""


async def _first_name(request: web.Request, client_id: str | None, profile_name: str | None) -> str:
    """How the follow-up template greets the customer: their first name in billing, else
    their WhatsApp profile name, else "cliente" (a template parameter is never empty)."""
    name = ""
    if client_id:
        try:
            async with asyncio.timeout(BILLING_SECONDS):
                client = await request.app[BILLING].get_client(client_id)
        except BILLING_FAILURES as e:
            log.warning("console: billing name of %s unavailable: %r", client_id, e)
            client = None
        if client is not None and client.name.split():
            name = client.name.split()[0]
    if not name:
        name = profile_name or ""
    # Template parameters may not hold newlines, tabs or runs of spaces.
    return " ".join(name.split())[:TEMPLATE_NAME_MAX] or "cliente"


async def _already_sent(
    conn: Conn,
    conversation_id: int,
    member: StaffMember,
    after: int | None,
    message: dict[str, Any],
) -> bool:
    """The same message by the same member queued after the page was drawn (the
    conversation row is locked: two submissions of one form are taken in turn)."""
    if after is None:
        return False
    return any(
        e.direction == "out"
        and e.id > after
        and e.purpose == "staff"
        and e.staff == member.username
        and e.message == message
        for e in await transcript.transcript(conn, conversation_id, limit=50)
    )


def _optional_int(value: object, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    raise Problem(400, f"Valor no válido para {name}.")


# -- staff actions on an item -----------------------------------------------------------


async def item_action(request: web.Request) -> web.StreamResponse:
    """Claim, reassign, snooze, change the priority of or resolve an item, then back to
    the page the form was on. store.queue records each with who and when."""
    member = current_staff(request)
    item_id = int(request.match_info["id"])
    action = request.match_info["action"]
    form = await request.post()
    fmt = _format(request)
    told = False
    name = ""
    if action == "resolve":
        # How the customer is greeted if the window has closed: asked of billing before
        # the conversation is locked, not while it is.
        async with request.app[POOL].acquire() as conn:
            seen = await queue.get_item(conn, item_id)
        if seen is not None:
            name = await _first_name(request, seen.client_id, seen.profile_name)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        item = await queue.get_item(conn, item_id)
        if item is None:
            raise Problem(404, "No existe ese pedido.")
        back = _back(form.get("next"), f"/staff/conversations/{item.conversation_id}")
        if action == "resolve":
            told = await _resolve(conn, item_id, member, name)
        elif item.status == "resolved":
            raise Problem(409, "Ese pedido ya está resuelto.")
        elif action == "claim":
            claimed = await queue.claim(conn, item_id, member.id)
            if not claimed.ok and claimed.holder is None:
                raise Problem(409, "Ese pedido ya está resuelto.")
            if not claimed.ok:
                raise Problem(
                    409, f"Lo tiene abierto {claimed.holder}: para quitárselo, use «Reasignar»."
                )
        elif action == "assign":
            to = _optional_int(form.get("staff_id"), "staff_id")
            if not await queue.assign(conn, item_id, member.id, to):
                raise Problem(400, "Ese miembro del equipo no existe o está desactivado.")
        elif action == "snooze":
            hours = request.app[SETTINGS].business_hours
            until = _snooze_until(str(form.get("until", "")), fmt, hours)
            await queue.snooze(conn, item_id, member.id, until)
        elif action == "priority":
            priority = str(form.get("priority", ""))
            if priority not in queue.PRIORITIES:
                raise Problem(400, f"No hay ninguna prioridad {priority!r}.")
            await queue.set_priority(conn, item_id, member.id, priority)
    if told:
        request.app[SIGNALS].notify(OUTBOX)
    raise web.HTTPSeeOther(back)


async def _resolve(conn: Conn, item_id: int, member: StaffMember, name: str) -> bool:
    """Resolve; when that gives the conversation back to the bot, tell the customer (a
    template, greeting them by `name`, once the 24 h window has closed). True when a
    message was queued."""
    resolved = await queue.resolve(conn, item_id, member.id)
    if resolved is None or not resolved.handed_back:
        return False
    told = handed_back(default_catalog(), name)
    await turns.queue_replies(
        conn,
        conversation_id=resolved.conversation_id,
        inbox_id=None,
        recipient=resolved.recipient,
        replies=[
            turns.OutgoingRow(
                message=message_json(told.message),
                template=message_json(told.template) if told.template else None,
            )
        ],
        purpose="staff",
    )
    return True


def _snooze_until(choice: str, fmt: Format, hours: BusinessHours) -> datetime | None:
    """1 h, 4 h, the next working day's opening (BUSINESS_HOURS, the company's time zone:
    on a Friday, Monday's), or (None) until the customer writes."""
    match choice:
        case "1h":
            return fmt.now + timedelta(hours=1)
        case "4h":
            return fmt.now + timedelta(hours=4)
        case "tomorrow":
            tomorrow = fmt.now.astimezone(fmt.tz).date() + timedelta(days=1)
            return hours.next_opening(datetime.combine(tomorrow, time(0, 0), tzinfo=fmt.tz))
        case "message":
            return None
    raise Problem(400, f"No se puede posponer {choice!r}: 1h, 4h, tomorrow o message.")


def _back(value: object, default: str) -> str:
    """The form's `next` when it is a page of the console, else `default`."""
    if isinstance(value, str) and value and safe_next(value) == value:
        return value
    return default
