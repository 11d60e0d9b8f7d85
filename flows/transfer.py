"""Cambio de titular (SPEC §3 "Transfer"; help page "Como cambio el titular de un
servicio a otro cliente"): both account holders send the same WhatsApp message, byte for
byte, each from the number of their own account; then the help page's checks (both
accounts verified, the service active and paid, two different clients) and the transfer.

- From the menu or typed ("cambio de titular"): the requirements, and the exact message,
  filled in with this customer's name, email and the service, ready to copy; the other
  client's name and email are for the customer to fill in (never looked up here).
- A message in the transfer wording, from any state, is a request: its sender must be
  the holder of the origin or of the destination it names (by their WhatsApp number and
  their account's email in it). Every request gets the same answer — received, what
  happens next, that both messages must be identical — so nothing tells whether the
  other side exists or wrote. When the sender's own text differs from the model for
  their own data (a double space, a missing final dot), it says where.
- The pair is matched in the turn's transaction (store/transfers.py) and the transfer is
  a command of the origin holder's conversation; its outcome is told there and, through
  a signal, in the destination holder's. A backend that cannot move services (WHMCS)
  answers that a person must: a staff task with everything needed.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from flows.alerts import template_from
from flows.billing import Client, Service
from flows.commands import (
    Escalate,
    Notify,
    Outcome,
    OutcomeStatus,
    RequestTransfer,
    Signal,
    TransferDecided,
)
from flows.matching import fold
from flows.options import Choice, service_choice
from flows.outbound import Text
from flows.runtime import Step

TRANSFER_TASK = "transfer_by_hand"
# The reasons a transfer is refused that are told in words ([refused]); else "other".
REFUSALS = ("not_verified", "unpaid_invoices", "service_not_active", "same_client", "not_found")
# What the origin holder's conversation tells the destination holder's (on_signal).
OUTCOMES = ("done", "needs_staff", "unknown", "unavailable", "refused")
SIDES = ("origin", "destination")
PENDING_OUTCOMES = ("needs_staff", "unknown", "unavailable")
# A near miss: at least this similar to the model, to point at where it differs.
NEAR = 0.85
_HINT_CONTEXT = 12

# The help page's wording, tolerant of case, accents, the asterisks around the name and
# "está"/"que activo"; the parts are read back exactly as written.
_WORDING = re.compile(
    r"soy\s+\*?(?P<name>[^,*\n]+?)\*?\s*,\s*mi\s+correo\s+de\s+cliente\s+es\s+"
    r"(?P<email>\S+@\S+?)\s+y\s+deseo\s+que\s+el\s+servicio\s+(?P<service>.+?)\s+que\s+"
    r"(?:est[aá]\s+)?activo\s+y\s+al\s+d[ií]a\s+pase\s+a\s+nombre\s+del\s+cliente\s+"
    r"(?P<to_name>.+?)\s+con\s+correo\s+(?P<to_email>[^\s@]+@[^\s]+?)[\s.!]*$",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class TransferText:
    name: str
    email: str
    service: str
    to_name: str
    to_email: str

    @classmethod
    def parse(cls, text: str) -> TransferText | None:
        """The parts of a message in the transfer wording, or None."""
        found = _WORDING.search(text)
        if found is None:
            return None
        parts = {k: v.strip().strip("*").strip() for k, v in found.groupdict().items()}
        return cls(**parts)


_HUMAN = Choice("human", "go_human", "menu.options.human.title", "menu.options.human.keywords")
_MENU = Choice("menu", "go_menu", "common.back_to_menu", "words.menu")


class Transfer(Step):
    FLOW = "transfer"
    STATES: ClassVar[tuple[str, ...]] = ("start", "service", "instructions", "requested")
    TRANSITIONS: ClassVar[list[dict[str, Any]]] = [
        {"trigger": "pick_service", "source": "*", "dest": "instructions"},
        {"trigger": "show", "source": "*", "dest": "service"},
        {"trigger": "show_instructions", "source": "*", "dest": "instructions"},
        {"trigger": "show_requested", "source": "*", "dest": "requested"},
        {"trigger": "go_human", "source": "*", "dest": None, "after": "to_human"},
        {"trigger": "go_menu", "source": "*", "dest": None, "after": "leave"},
    ]

    _services: list[Service] | None = None

    async def services(self) -> list[Service]:
        """The services that can be transferred: active ones."""
        if self._services is None:
            assert self.client is not None
            found = await self.deps.billing.list_services(self.client.id)
            self._services = [s for s in found if s.status == "active"]
        return self._services

    async def understand(self, *, numbered: bool = True) -> bool:
        if self.client is not None and self.state == "service":
            await self.services()
        return await super().understand(numbered=numbered)

    def choices(self) -> list[Choice]:
        if self.state == "service":
            services = [service_choice(s, "pick_service") for s in self._services or []]
            return [*services, _MENU]
        return [_HUMAN, _MENU]

    def to_human(self) -> None:
        self.goto("menu", "handed_over")

    # -- explaining ---------------------------------------------------------------------
    async def render_start(self) -> None:
        if self.client is None:
            self.say("transfer.not_identified", panel_url=self.deps.panel_details_url)
            self.leave()
            return
        services = await self.services()
        if not services:
            self.say("transfer.no_services")
            await self.trigger("show_requested")
            return
        if len(services) == 1:
            self.ctx["service"] = services[0].id
            await self.trigger("show_instructions")
            return
        await self.trigger("show")

    async def render_service(self) -> None:
        await self.services()
        self.send(self.prompt(self.t("transfer.pick_service"), self.choices()))

    async def render_instructions(self) -> None:
        assert self.client is not None
        service = next((s for s in await self.services() if s.id == self.ctx.get("service")), None)
        if service is None:
            await self.trigger("show")
            return
        self.say("transfer.requirements")
        # Alone in its message, so that it can be copied as it is.
        self.say(
            "transfer.message",
            name=self.client.name,
            email=self.client.email,
            service=service.label,
            to_name=self.t("transfer.to_name_blank"),
            to_email=self.t("transfer.to_email_blank"),
        )
        self.send(self.prompt(self.t("transfer.after"), self.choices()))

    async def render_requested(self) -> None:
        self.send(self.prompt(self.t("transfer.after"), self.choices()))

    # -- a request ------------------------------------------------------------------------
    async def on_request(self, text: str) -> None:
        """A message in the transfer wording, from any state."""
        parsed = TransferText.parse(text)
        assert parsed is not None
        me = self.client
        if me is None:
            self.say("transfer.not_identified", panel_url=self.deps.panel_details_url)
            await self.trigger("show_requested")
            return
        billing = self.deps.billing
        origin = await billing.find_client_by_email(parsed.email)
        destination = await billing.find_client_by_email(parsed.to_email)
        if origin is not None and origin.id == me.id:
            role = "origin"
        elif destination is not None and destination.id == me.id:
            role = "destination"
        else:
            # Neither holder writes: the same answer whether the accounts exist or not.
            self.say("transfer.not_a_holder")
            await self.trigger("show_requested")
            return
        service_id = None
        if role == "origin":
            # Any of their services: one not active is refused with that reason once the
            # other holder's message arrives (the billing system checks).
            service = _named(await billing.list_services(me.id), parsed.service)
            if service is None:
                self.say("transfer.service_not_yours", service=parsed.service)
                await self.trigger("show_requested")
                return
            service_id = service.id
        self.command(
            RequestTransfer(
                client_id=me.id,
                role=role,
                origin_client_id=origin.id if origin else "",
                destination_client_id=destination.id if destination else "",
                service_label=parsed.service,
                service_id=service_id,
                text=text,
                window_seconds=int(self.deps.transfer_window.total_seconds()),
            )
        )
        hours = max(1, round(self.deps.transfer_window.total_seconds() / 3600))
        self.say("transfer.received", service=parsed.service, hours=hours)
        self.say("transfer.identical")
        for hint in self._hints(text, parsed, me, role):
            self.send(Text(hint))
        await self.trigger("show_requested")

    def _hints(self, text: str, parsed: TransferText, me: Client, role: str) -> list[str]:
        """Where the sender's own text differs from the model filled with their own data
        (and the rest as they wrote it): never the other side's message."""
        own = {"name": me.name, "email": me.email} if role == "origin" else {}
        mine = {"to_name": me.name, "to_email": me.email} if role == "destination" else {}
        model = self.t(
            "transfer.message",
            **{
                "name": parsed.name,
                "email": parsed.email,
                "service": parsed.service,
                "to_name": parsed.to_name,
                "to_email": parsed.to_email,
                **own,
                **mine,
            },
        )
        if text == model:
            return []
        hints = []
        if "  " in text:
            hints.append(self.t("transfer.hint_double_space"))
        if text != text.strip():
            hints.append(self.t("transfer.hint_spaces_around"))
        if model.endswith(".") and not text.rstrip().endswith("."):
            hints.append(self.t("transfer.hint_final_dot"))
        if hints:
            return hints
        matcher = difflib.SequenceMatcher(None, model, text, autojunk=False)
        if matcher.ratio() < NEAR:
            return []
        for op, _, _, j1, j2 in matcher.get_opcodes():
            if op != "equal":
                start, end = max(0, j1 - _HINT_CONTEXT), min(len(text), j2 + _HINT_CONTEXT)
                fragment = text[start:end].strip()
                return [self.t("transfer.hint_part", fragment=fragment)] if fragment else []
        return []

    # -- what came of it -------------------------------------------------------------------
    async def on_outcome(self, outcome: Outcome) -> None:
        """In the origin holder's conversation: the transfer's outcome, told here and, by
        a signal, in the destination holder's."""
        data = outcome.data
        service = str(data.get("service") or "")
        other = data.get("other_conversation")
        match outcome.status:
            case OutcomeStatus.DONE if data.get("result") == "needs_staff":
                told, record = "needs_staff", "needs_staff"
                self.command(
                    Escalate(
                        TRANSFER_TASK,
                        f"Cambio de titular de {service}: hacerlo a mano en el sistema",
                        {
                            "service": service,
                            "service_id": data.get("service_id"),
                            "from_client_id": data.get("client_id"),
                            "to_client_id": data.get("to_client_id"),
                            "request": outcome.key,
                        },
                        # One task per move asked for: the same pair sent again while a
                        # person has not done it yet is the same task.
                        key=f"transfer:{data.get('service_id')}:{data.get('client_id')}"
                        f":{data.get('to_client_id')}",
                    )
                )
            case OutcomeStatus.DONE:
                told, record = "done", "done"
            case OutcomeStatus.REFUSED:
                told, record = "refused", f"refused: {outcome.reason}"
            case OutcomeStatus.UNKNOWN:
                told, record = "unknown", "unknown"
            case OutcomeStatus.UNAVAILABLE:
                told, record = "unavailable", "unavailable"
        self.command(TransferDecided(outcome.key, record))
        self._tell(told, "origin", service, outcome.reason)
        if isinstance(other, int):
            self.command(
                Notify(
                    other,
                    self.FLOW,
                    told,
                    key=f"{outcome.key}:told",
                    data={"service": service, "reason": outcome.reason},
                )
            )

    async def on_signal(self, signal: Signal) -> None:
        """In the destination holder's conversation: what the transfer came to; or, from
        the upkeep task, that a request expired unanswered."""
        service = str(signal.data.get("service") or "")
        if signal.name == "expired":
            name = self.client.name.split()[0] if self.client and self.client.name else ""
            values = {"name": name, "service": service}
            template = template_from(self.deps.catalog, "transfer.expired", values)
            self.send(Text(self.t("transfer.expired.text", service=service)), template=template)
            return
        if signal.name in OUTCOMES:
            reason = signal.data.get("reason")
            self._tell(
                signal.name, "destination", service, reason if isinstance(reason, str) else None
            )

    def _tell(self, told: str, side: str, service: str, reason: str | None) -> None:
        """The outcome in this holder's words (`side`: origin or destination)."""
        if told == "done":
            self.say(f"transfer.done_{side}", service=service)
        elif told == "refused":
            why = reason if reason in REFUSALS else "other"
            self.say(f"transfer.refused.{why}", service=service)
        else:
            pending = told  # needs_staff, unknown, unavailable
            self.say(f"transfer.{pending}", service=service)


def _named(services: list[Service], written: str) -> Service | None:
    """The service the message names, as the customer writes it: its label, or the label
    without its domain ending ("juanperez" for "juanperez.com.ar")."""
    wanted = fold(written)
    for s in services:
        if wanted in (fold(s.label), fold(s.label.split(".", 1)[0])):
            return s
    return None
