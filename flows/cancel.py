"""Dar de baja (SPEC §3 "Cancellation"; help page "Como solicitar la baja del servicio"):
the service → what a cancellation means → immediate or at the end of the period → the
reason (typed, required, length-limited) → a typed confirmation phrase naming the
service → one request-cancellation command → the summary with the date it takes effect.

Buttons alone never cancel: the last step is the customer typing `CANCELAR <service>`
(case and accents forgiven, nothing else); three wrong attempts end the flow and leave a
note for staff. A domain is not cancelled (paid yearly in advance): its renewal is
stopped instead, and the customer told until when it stays. Backing out anywhere returns
to the menu with nothing requested.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Any, ClassVar

from flows.account import local_amount, local_date
from flows.billing import ALREADY_REQUESTED, CancellationKind, Domain, Service
from flows.commands import (
    Escalate,
    Outcome,
    OutcomeStatus,
    RequestCancellation,
    StopDomainRenewal,
)
from flows.options import Choice, service_choice
from flows.runtime import Step

CANCELLABLE = ("active", "suspended")
REASON_MAX = 500
CONFIRM_ATTEMPTS = 3
FAILED_TASK = "cancellation_not_confirmed"
BUTTONS = ("go_on", "stop", "immediate", "end_of_period", "stop_renewal")
KINDS = {"immediate": CancellationKind.IMMEDIATE, "end_of_period": CancellationKind.END_OF_PERIOD}


def _button(action: str) -> Choice:
    assert action in BUTTONS
    return Choice(action, action, f"cancel.buttons.{action}", f"cancel.words.{action}")


_HUMAN = Choice("human", "go_human", "menu.options.human.title", "menu.options.human.keywords")
_MENU = Choice("menu", "go_menu", "common.back_to_menu", "words.menu")


def same_phrase(typed: str, phrase: str) -> bool:
    """The confirmation as typed: case and accents forgiven, and spaces at the ends or
    doubled inside; any other difference (a letter, a dot) is another phrase."""

    def plain(text: str) -> str:
        decomposed = unicodedata.normalize("NFKD", text.casefold())
        bare = "".join(c for c in decomposed if not unicodedata.combining(c))
        return re.sub(r"\s+", " ", bare).strip()

    return plain(typed) == plain(phrase)


class Cancel(Step):
    FLOW = "cancel"
    STATES: ClassVar[tuple[str, ...]] = (
        "start",
        "pick",
        "consequences",
        "kind",
        "reason",
        "confirm",
        "placing",
        "domain",
        "done",
    )
    LITERAL: ClassVar[frozenset[str]] = frozenset({"reason", "confirm"})
    TRANSITIONS: ClassVar[list[dict[str, Any]]] = [
        {"trigger": "pick_service", "source": "*", "dest": None, "after": "route"},
        {"trigger": "pick_domain", "source": "*", "dest": "domain"},
        {"trigger": "go_on", "source": "consequences", "dest": "kind"},
        {"trigger": "immediate", "source": "kind", "dest": "reason", "before": "set_kind"},
        {"trigger": "end_of_period", "source": "kind", "dest": "reason", "before": "set_kind"},
        {"trigger": "stop_renewal", "source": "domain", "dest": "placing", "before": "stop_it"},
        {"trigger": "to_confirm", "source": "reason", "dest": "confirm"},
        {"trigger": "confirmed", "source": "confirm", "dest": "placing", "before": "request"},
        {"trigger": "show_pick", "source": "*", "dest": "pick"},
        {"trigger": "show_consequences", "source": "*", "dest": "consequences"},
        {"trigger": "show_done", "source": "*", "dest": "done"},
        {"trigger": "stop", "source": "*", "dest": None, "after": "back_out"},
        {"trigger": "go_human", "source": "*", "dest": None, "after": "to_human"},
        {"trigger": "go_menu", "source": "*", "dest": None, "after": "leave"},
    ]

    _services: list[Service] | None = None
    _domains: list[Domain] | None = None

    # -- data ---------------------------------------------------------------------------
    async def load(self) -> None:
        assert self.client is not None
        if self._services is None:
            found = await self.deps.billing.list_services(self.client.id)
            self._services = [s for s in found if s.status in CANCELLABLE]
        if self._domains is None:
            self._domains = await self.deps.billing.list_domains(self.client.id)

    def service(self) -> Service | None:
        return next((s for s in self._services or [] if s.id == self.ctx.get("service")), None)

    def domain(self) -> Domain | None:
        return next((d for d in self._domains or [] if d.id == self.ctx.get("domain")), None)

    async def understand(self, *, numbered: bool = True) -> bool:
        if self.client is not None:
            await self.load()
        return await super().understand(numbered=numbered)

    def choices(self) -> list[Choice]:
        match self.state:
            case "pick":
                services = [
                    service_choice(s, "pick_service", clears=("domain",))
                    for s in self._services or []
                ]
                domains = [
                    Choice.of(
                        f"dom:{d.id}",
                        "pick_domain",
                        self.t("cancel.domain_option", name=d.name),
                        description=self.t("cancel.domain_description"),
                        words=(d.name,),
                        sets=(("domain", d.id), ("service", None)),
                    )
                    for d in self._domains or []
                    if d.auto_renew
                ]
                return [*services, *domains, _MENU]
            case "consequences":
                return [_button("go_on"), _button("stop")]
            case "kind":
                return [_button("immediate"), _button("end_of_period"), _button("stop")]
            case "domain":
                return [_button("stop_renewal"), _button("stop")]
            case "done" | "placing":
                return [_HUMAN, _MENU]
        return []

    # -- moving -------------------------------------------------------------------------
    async def route(self) -> None:
        """The first question not answered yet."""
        if self.client is None:
            self.say("cancel.not_identified", panel_url=self.deps.panel_details_url)
            self.leave()
            return
        placing = self.kept.get("placing")
        if isinstance(placing, dict) and placing.get("service"):
            # Its request is on its way: not offered again while it is.
            self.say("cancel.still_placing", service=str(placing.get("label") or ""))
            await self.trigger("show_done")
            return
        await self.load()
        service = self.service()
        if service is None:
            options = len(self._services or []) + len(
                [d for d in self._domains or [] if d.auto_renew]
            )
            if not options:
                self.say("cancel.nothing")
                await self.trigger("show_done")
                return
            if len(self._services or []) == 1 and options == 1:
                self.ctx["service"] = (self._services or [])[0].id
                service = self.service()
            else:
                await self.trigger("show_pick")
                return
        assert service is not None
        requested = await self.deps.billing.cancellation_requested(self.client.id, service.id)
        if requested is not None:
            day = local_date(requested.astimezone(self._zone()).date())
            self.say("cancel.already", service=service.label, date=day)
            await self.trigger("show_done")
            return
        await self.trigger("show_consequences")

    def _zone(self) -> Any:
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.deps.timezone)

    async def back_out(self) -> None:
        self.say("common.cancelled")
        self.leave()

    def to_human(self) -> None:
        self.goto("menu", "handed_over")

    async def back(self) -> None:
        await self.back_out()

    def set_kind(self) -> None:
        self.ctx["kind"] = self.inbound.choice_id or self._typed_kind()

    def _typed_kind(self) -> str:
        chosen = self.meant(self.choices(), numbered=True)
        return chosen.id if chosen is not None else "end_of_period"

    # -- the states ---------------------------------------------------------------------
    async def render_start(self) -> None:
        if self.client is not None:
            await self.load()
            self._named_in_text()
        await self.route()

    def _named_in_text(self) -> None:
        """A service or domain the message that brought the customer here names."""
        text = self.inbound.text
        if not text or self.inbound.choice_id:
            return
        for s in self._services or []:
            stem = s.label.split(".", 1)[0]
            if self.deps.matcher.contains(text, (s.label, stem)):
                self.ctx["service"] = s.id
                return
        for d in self._domains or []:
            if d.auto_renew and self.deps.matcher.contains(text, (d.name,)) and "dominio" in text:
                self.ctx["domain"] = d.id
                return

    async def render_pick(self) -> None:
        await self.load()
        self.send(self.prompt(self.t("cancel.pick"), self.choices()))

    async def render_consequences(self) -> None:
        assert self.client is not None
        service = self.service()
        assert service is not None
        unpaid = await self.deps.billing.list_invoices(
            self.client.id, service_id=service.id, status="unpaid"
        )
        owed = ""
        if unpaid:
            listed = ", ".join(
                self.t(
                    "cancel.unpaid_invoice",
                    number=i.id,
                    total=self.t("account.money", amount=local_amount(i.total)),
                )
                for i in unpaid
            )
            owed = self.t("cancel.unpaid_line", invoices=listed)
        body = self.t("cancel.consequences", service=service.label, unpaid=owed)
        self.send(self.prompt(body, self.choices()))

    async def render_kind(self) -> None:
        service = self.service()
        assert service is not None
        if service.next_due is not None:
            body = self.t(
                "cancel.ask_kind", service=service.label, date=local_date(service.next_due)
            )
        else:
            body = self.t("cancel.ask_kind_no_date", service=service.label)
        self.send(self.prompt(body, self.choices()))

    async def render_reason(self) -> None:
        self.say("cancel.ask_reason", limit=REASON_MAX)

    async def on_text(self, text: str) -> bool:
        """The reason, or the confirmation phrase, taken literally."""
        await self.load()
        if self.state == "reason":
            reason = text.strip()
            if not reason:
                self.say("cancel.reason_empty")
                return True
            if len(reason) > REASON_MAX:
                self.say("cancel.reason_too_long", length=len(reason), limit=REASON_MAX)
                return True
            self.ctx["reason"] = reason
            await self.trigger("to_confirm")
            return True
        if self.state == "confirm":
            service = self.service()
            assert service is not None
            phrase = self.t("cancel.phrase", service=service.label)
            if same_phrase(text, phrase):
                await self.trigger("confirmed")
                return True
            misses = int(self.ctx.get("misses_confirm", 0)) + 1
            self.ctx["misses_confirm"] = misses
            if misses >= CONFIRM_ATTEMPTS:
                self.command(
                    Escalate(
                        FAILED_TASK,
                        f"Pidió la baja de {service.label} y no escribió la confirmación",
                        {"service_id": service.id, "service": service.label, "typed": text[:200]},
                        key=self.key("failed"),
                    )
                )
                self.say("cancel.confirm_failed")
                self.leave()
                return True
            self.say("cancel.confirm_again", phrase=phrase)
            return True
        return False

    async def render_confirm(self) -> None:
        service = self.service()
        assert service is not None
        self.forget_key("request")  # a new confirmation: a new request key from it
        self.key("request")
        kind = "cancel.kind_immediate" if self.ctx.get("kind") == "immediate" else "cancel.kind_end"
        self.say(
            "cancel.confirm",
            service=service.label,
            kind=self.t(kind),
            phrase=self.t("cancel.phrase", service=service.label),
        )

    def request(self) -> None:
        assert self.client is not None
        service = self.service()
        assert service is not None
        self.kept["placing"] = {"service": service.id, "label": service.label}
        self.command(
            RequestCancellation(
                key=self.key("request"),
                client_id=self.client.id,
                service_id=service.id,
                kind=KINDS.get(str(self.ctx.get("kind")), CancellationKind.END_OF_PERIOD),
                reason=str(self.ctx.get("reason") or ""),
            )
        )

    async def render_placing(self) -> None:
        self.say("cancel.domain_placing" if self.ctx.get("domain") else "cancel.placing")

    async def render_domain(self) -> None:
        domain = self.domain()
        if domain is None:
            await self.route()
            return
        if domain.next_due is not None:
            body = self.t("cancel.domain", domain=domain.name, date=local_date(domain.next_due))
        else:
            body = self.t("cancel.domain_no_date", domain=domain.name)
        self.send(self.prompt(body, self.choices()))

    def stop_it(self) -> None:
        assert self.client is not None
        domain = self.domain()
        assert domain is not None
        self.kept["placing"] = {"domain": domain.id, "label": domain.name}
        self.command(
            StopDomainRenewal(
                key=self.key("renewal"), client_id=self.client.id, domain_id=domain.id
            )
        )

    async def render_done(self) -> None:
        self.send(self.prompt(self.t("cancel.after"), self.choices()))

    # -- outcomes -----------------------------------------------------------------------
    async def on_outcome(self, outcome: Outcome) -> None:
        placing = self.kept.pop("placing", None) or {}
        label = str(placing.get("label") or "")
        if outcome.kind == StopDomainRenewal.KIND:
            self._renewal_stopped(outcome, label)
        else:
            await self._cancellation(outcome, label, str(placing.get("service") or ""))
        if self.here and self.state == "placing":
            await self.trigger("show_done")

    def _renewal_stopped(self, outcome: Outcome, label: str) -> None:
        if outcome.status is not OutcomeStatus.DONE:
            self.say("cancel.domain_failed", domain=label)
            return
        until = outcome.data.get("next_due")
        if until:
            day = local_date(date.fromisoformat(str(until)))
            self.say("cancel.domain_done", domain=label, date=day)
        else:
            self.say("cancel.domain_done_no_date", domain=label)

    async def _cancellation(self, outcome: Outcome, label: str, service_id: str) -> None:
        match outcome.status:
            case OutcomeStatus.DONE if outcome.data.get("kind") == "immediate":
                today = local_date(self.deps.today())
                self.say("cancel.done_immediate", service=label, date=today)
            case OutcomeStatus.DONE:
                service = None
                if self.client is not None:
                    service = await self.deps.billing.get_service(self.client.id, service_id)
                if service is not None and service.next_due is not None:
                    day = local_date(service.next_due)
                    self.say("cancel.done_end", service=label, date=day)
                else:
                    self.say("cancel.done_end_no_date", service=label)
            case OutcomeStatus.REFUSED if outcome.reason == ALREADY_REQUESTED:
                self.say("cancel.already_requested", service=label)
            case OutcomeStatus.REFUSED:
                self.say("cancel.refused", service=label)
            case OutcomeStatus.UNKNOWN:
                self.say("cancel.unknown", service=label)
            case OutcomeStatus.UNAVAILABLE:
                self.say("cancel.unavailable", service=label)
