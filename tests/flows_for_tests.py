"""Flows that exist only for the runtime's tests: importing this module registers them.

They speak in literal test strings (a product flow's words live in messages_es/), and a
conversation enters them by having its state set to one of theirs.

- `pager`: 25 options from data (Argentine cities), paged.
- `hop`: switches to another flow in the same turn.
- `probe`: asks the billing system for an upgrade through a command (`pedir S P C`, then
  `si`), tells its outcome; tells another conversation something (`avisar N`); takes a
  note literally (`nota`, then any text); keeps a pending order across session expiry.
"""

from __future__ import annotations

from datetime import date
from typing import Any, ClassVar

from flows.commands import Notify, Outcome, PlaceUpgrade, Signal
from flows.matching import fold
from flows.options import Choice
from flows.outbound import Button, Buttons, Text
from flows.runtime import Step

CITIES = (
    "Córdoba",
    "Rosario",
    "Mendoza",
    "La Plata",
    "Mar del Plata",
    "Salta",
    "Santa Fe",
    "San Juan",
    "Resistencia",
    "Neuquén",
    "Posadas",
    "Bahía Blanca",
    "Paraná",
    "Corrientes",
    "Formosa",
    "San Luis",
    "La Rioja",
    "Catamarca",
    "Jujuy",
    "Santiago del Estero",
    "Río Gallegos",
    "Ushuaia",
    "Rawson",
    "Viedma",
    "Santa Rosa",
)
QUOTED_ON = date(2026, 7, 1)


class Pager(Step):
    FLOW = "pager"
    STATES: ClassVar[tuple[str, ...]] = ("pick", "picked")
    TRANSITIONS: ClassVar[list[dict[str, Any]]] = [
        {"trigger": "pick", "source": "pick", "dest": "picked"},
    ]

    def choices(self) -> list[Choice]:
        if self.state != "pick":
            return []
        return [
            Choice.of(f"city:{n}", "pick", f"Hosting {city}", sets=(("city", city),))
            for n, city in enumerate(CITIES, 1)
        ]

    async def render_pick(self) -> None:
        self.send(self.prompt("¿En qué ciudad?", self.choices()))

    async def render_picked(self) -> None:
        self.send(Text(f"Eligió {self.ctx['city']}"))


class Hop(Step):
    FLOW = "hop"
    STATES: ClassVar[tuple[str, ...]] = ("start", "long_button")
    TRANSITIONS: ClassVar[list[dict[str, Any]]] = [
        {"trigger": "to_pager", "source": "start", "dest": None, "before": "jump_to_pager"},
        {"trigger": "to_menu", "source": "start", "dest": None, "before": "jump_to_menu"},
        {"trigger": "too_long", "source": "start", "dest": "long_button"},
    ]

    def choices(self) -> list[Choice]:
        return [
            Choice.of("pager", "to_pager", "saltar"),
            Choice.of("menu", "to_menu", "a casa"),
            Choice.of("long", "too_long", "largo"),
        ]

    def jump_to_pager(self) -> None:
        self.kept["visited"] = True
        self.goto("pager", "pick", came_from="hop")

    def jump_to_menu(self) -> None:
        self.goto("menu", "main")

    async def render_start(self) -> None:
        self.ctx["scratch"] = "hop's working data"
        self.send(Text("hop"))

    async def render_long_button(self) -> None:
        # 21 characters: one more than a reply button's title may have.
        self.send(Buttons("Elija", (Button("x", "Veintiún caracteres!!"),)))


class Probe(Step):
    FLOW = "probe"
    STATES: ClassVar[tuple[str, ...]] = ("start", "confirm", "waiting", "note")
    LITERAL: ClassVar[frozenset[str]] = frozenset({"note"})
    TRANSITIONS: ClassVar[list[dict[str, Any]]] = [
        {"trigger": "ask", "source": "start", "dest": "confirm"},
        {
            "trigger": "confirm",
            "source": ["confirm", "waiting"],
            "dest": "waiting",
            "before": "place",
        },
        {"trigger": "take_note", "source": "start", "dest": "note"},
        {"trigger": "done", "source": "*", "dest": "start"},
    ]

    async def understand(self, *, numbered: bool = True) -> bool:
        words = fold(self.inbound.text).split()
        if self.state == "start" and words[:1] == ["pedir"] and len(words) == 4:
            self.ctx["order"] = {"service": words[1], "product": words[2], "cycle": words[3]}
            await self.trigger("ask")
            return True
        if self.state == "start" and words[:1] == ["avisar"] and len(words) == 2:
            self.command(Notify(int(words[1]), "probe", "hola", key=f"notify:{self.inbound.wamid}"))
            self.send(Text(f"avisé a {words[1]}"))
            return True
        if self.state == "start" and words == ["nota"]:
            await self.trigger("take_note")
            return True
        if self.state in ("confirm", "waiting") and words == ["si"]:
            await self.trigger("confirm")
            return True
        return False

    def place(self) -> None:
        assert self.client is not None
        order = self.ctx["order"]
        self.kept["pending"] = self.key("order")
        self.command(
            PlaceUpgrade(
                key=self.key("order"),
                client_id=self.client.id,
                service_id=order["service"],
                product_id=order["product"],
                cycle=order["cycle"],
                today=QUOTED_ON,
            )
        )

    async def render_start(self) -> None:
        self.send(Text("probe lista"))

    async def render_confirm(self) -> None:
        self.forget_key("order")  # a new order: a new key, made from this message
        self.key("order")
        self.send(Text("¿confirma? escriba si"))

    async def render_waiting(self) -> None:
        self.send(Text("procesando"))

    async def render_note(self) -> None:
        self.send(Text("escriba su nota"))

    async def on_text(self, text: str) -> bool:
        self.send(Text(f"nota: {text}"))
        await self.trigger("done")
        return True

    async def on_outcome(self, outcome: Outcome) -> None:
        self.kept.pop("pending", None)
        invoice = outcome.data.get("invoice_id", "-")
        url = outcome.data.get("invoice_url", "-")
        self.send(Text(f"resultado {outcome.status.value} {outcome.reason} {invoice} {url}"))
        if self.here and self.state == "waiting":
            await self.trigger("done")

    async def on_signal(self, signal: Signal) -> None:
        self.send(Text(f"aviso {signal.name} de {signal.from_conversation}"))

    async def on_expired(self) -> None:
        if self.kept.get("pending"):
            self.send(Text("su pedido sigue en curso"))
