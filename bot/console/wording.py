"""How the console says things: the queue's words in Spanish, times in the company's
time zone, durations, an item's data and its action log, a message's delivery ticks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from flows.account import local_amount
from store import queue

REASONS = {
    "customer_request": "Pidió una persona",
    "not_understood": "El bot no le entendió",
    "upgrade_not_offered": "Mejora de plan que no es automática",
    "transfer_by_hand": "Cambio de titular a mano",
    "cancellation_not_confirmed": "Baja sin confirmar",
    "billing_outcome_unknown": "Resultado incierto en facturación",
}
PRIORITY_NAMES = {"urgent": "urgente", "high": "alta", "normal": "normal", "low": "baja"}
STATUS_NAMES = {
    "pending": "pendiente",
    "open": "abierto",
    "snoozed": "pospuesto",
    "resolved": "resuelto",
}
VIEW_NAMES = {
    "mine": "Míos",
    "unassigned": "Sin asignar",
    "all": "Todos",
    "snoozed": "Pospuestos",
    "resolved": "Resueltos",
}
# An outbound message's delivery state as a phone shows it: (ticks, words, css class).
TICKS = {
    "pending": ("⏱", "En cola", "tick-wait"),
    "sending": ("⏱", "Enviando", "tick-wait"),
    "accepted": ("✓", "Aceptado por WhatsApp", "tick-sent"),
    "sent": ("✓", "Enviado", "tick-sent"),
    "delivered": ("✓✓", "Entregado", "tick-delivered"),
    "read": ("✓✓", "Leído", "tick-read"),
    "failed": ("✗", "No se entregó", "tick-failed"),
}
# Outbound messages that are not the bot's answers nor a staff member's.
PURPOSE_NAMES = {"alert": "aviso", "broadcast": "difusión", "staff": "desde la consola"}
# The data flows collect for an item, in words staff read; other keys are shown as they are.
DETAIL_NAMES = {
    "summary": "Resumen",
    "service": "Servicio",
    "service_id": "Id del servicio",
    "wanted_product": "Plan pedido",
    "wanted_product_id": "Id del plan pedido",
    "account_manager": "Ejecutivo de cuenta",
    "from_client_id": "Cliente que cede",
    "to_client_id": "Cliente que recibe",
    "typed": "Escribió",
    "request": "Pedido",
    "state": "Paso del bot",
}
# Actions without a staff member: the customer's, or the service's own.
CUSTOMER_ACTIONS = ("woken_by_customer", "customer_returned_to_bot")
SERVICE_STATUS_NAMES = {
    "pending": "pendiente",
    "active": "activo",
    "suspended": "suspendido",
    "cancelled": "cancelado",
    "terminated": "terminado",
}


@dataclass(frozen=True, slots=True)
class Format:
    """Times in the company's time zone and the queue's words, for the templates."""

    tz: ZoneInfo
    now: datetime

    def when(self, at: datetime | None) -> str:
        if at is None:
            return ""
        local = at.astimezone(self.tz)
        if local.date() == self.now.astimezone(self.tz).date():
            return local.strftime("%H:%M")
        if local.year == self.now.astimezone(self.tz).year:
            return local.strftime("%d/%m %H:%M")
        return local.strftime("%d/%m/%Y %H:%M")

    def iso(self, at: datetime | None) -> str:
        return at.astimezone(self.tz).isoformat(timespec="seconds") if at else ""

    def day(self, d: date | None) -> str:
        return d.strftime("%d/%m/%Y") if d else "—"

    def waiting(self, since: datetime | None) -> str:
        return f"espera hace {duration(self.now - since)}" if since else ""

    def took(self, start: datetime, end: datetime | None) -> str:
        return duration(end - start) if end else ""

    def reason(self, reason: str) -> str:
        return REASONS.get(reason, reason)

    def priority(self, priority: str) -> str:
        return PRIORITY_NAMES.get(priority, priority)

    def status(self, status: str) -> str:
        return STATUS_NAMES.get(status, status)

    def service_status(self, status: str) -> str:
        return SERVICE_STATUS_NAMES.get(status, status)

    def money(self, amount: Decimal) -> str:
        """As customers read it (`$ 1.234,50`)."""
        return f"$ {local_amount(amount)}"

    def detail(self, detail: Mapping[str, Any]) -> list[tuple[str, str]]:
        """An item's data as (label, value) pairs, the summary first; values as text
        (the template escapes them)."""
        keys = sorted(detail, key=lambda k: (k != "summary", k))
        return [(DETAIL_NAMES.get(k, k), as_text(detail[k])) for k in keys]

    def actor(self, action: queue.Action) -> str:
        if action.staff:
            return action.staff
        return "Cliente" if action.action in CUSTOMER_ACTIONS else "Sistema"

    def action(self, action: queue.Action) -> str:
        detail = action.detail or {}
        match action.action:
            case "claimed":
                return "tomó el pedido"
            case "assigned":
                to = detail.get("to")
                return f"lo asignó a {to}" if to else "lo devolvió a la cola (sin asignar)"
            case "snoozed":
                until = parse_time(detail.get("until"))
                if until is None:
                    return "lo pospuso hasta que el cliente escriba"
                return f"lo pospuso hasta {self.when(until)}"
            case "priority":
                return f"cambió la prioridad a {self.priority(str(detail.get('priority')))}"
            case "resolved":
                return "lo resolvió"
            case "replied":
                return "respondió al cliente"
            case "woken_by_customer":
                return "el cliente escribió: vuelve a la cola"
            case "snooze_ended":
                return "terminó la pausa: vuelve a la cola"
            case "customer_returned_to_bot":
                return "el cliente escribió menu y volvió al bot"
            case "merged":
                into = detail.get("into_conversation")
                return f"se unió a la conversación {into} (la misma persona), que sigue el pedido"
        return action.action


def duration(delta: timedelta) -> str:
    """`40 s`, `12 min`, `3 h 5 min`, `2 d 4 h`."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def as_text(value: object) -> str:
    """A value of an item's data (JSON a flow collected) as one line of text."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "sí" if value else "no"
    if isinstance(value, int | float | Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def parse_time(value: object) -> datetime | None:
    """A time an action's detail carries (store.queue writes it with str())."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def customer(profile_name: str | None, wa_id: str | None, user_id: str | None) -> str:
    """`Juan (+5491155551234)`; a customer Meta names by BSUID alone shows that."""
    number = f"+{wa_id}" if wa_id else (user_id or "")
    return f"{profile_name} ({number})" if profile_name else number or "cliente sin número"


def inbound_text(message: Mapping[str, Any]) -> str:
    """A customer's message as the transcript shows it (store.inbox's `kind`s)."""
    kind = message.get("kind")
    text = message.get("text")
    if kind == "text" and isinstance(text, str):
        media = message.get("media")
        return f"[{media}] {text}" if media else text
    if kind == "choice" and isinstance(text, str):
        return f"Eligió: {text}"
    if kind == "reaction":
        return "[reacción]"
    if kind == "revoked":
        return "[borró un mensaje]"
    if kind == "welcome":
        return "[abrió el chat]"
    return "[tipo no soportado]"
