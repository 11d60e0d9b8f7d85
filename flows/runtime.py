"""The flows runtime: one inbound message in, the next state and what to say out.

Each flow is a `Step` subclass whose states and transitions are a `transitions` machine
built once at import (building one is slow and memory-hungry); for each message a fresh
`Step` carrying the conversation's state name and JSON context is bound to that machine,
the trigger fires, and the step is unbound. Nothing here touches HTTP or SQL: reads go
through the interfaces in `Deps`, writes come back as `effects` for the caller to apply
in the same transaction that saves the state.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, ClassVar, Protocol

from transitions.extensions.asyncio import AsyncMachine

from flows.billing import Billing, Client, Found
from flows.catalog import Catalog
from flows.matching import Matcher, Option, fold
from flows.outbound import Button, Buttons, ListMessage, Message, Reply, Row, Section, Text

log = logging.getLogger(__name__)


class InboundKind(Enum):
    TEXT = "text"
    CHOICE = "choice"  # a tapped reply button or list row
    REACTION = "reaction"
    SYSTEM = "system"
    UNSUPPORTED = "unsupported"  # stickers, locations, media… we cannot read them


@dataclass(frozen=True, slots=True)
class Inbound:
    wamid: str
    kind: InboundKind
    type: str
    timestamp: datetime
    text: str = ""
    choice_id: str | None = None
    system_type: str | None = None
    new_wa_id: str | None = None

    @classmethod
    def from_inbox(cls, data: dict[str, Any]) -> Inbound:
        """From the normalised message stored in the inbox (see bot/wa_updates.py)."""
        timestamp = timestamp_or_now(data.get("timestamp"))
        return cls(
            wamid=data["wamid"],
            kind=InboundKind(data["kind"]),
            type=data.get("type", ""),
            timestamp=timestamp,
            text=data.get("text") or "",
            choice_id=data.get("choice_id"),
            system_type=data.get("system_type"),
            new_wa_id=data.get("new_wa_id"),
        )


def timestamp_or_now(value: object) -> datetime:
    """Meta's unix-seconds timestamp; now when it is missing or not a plausible time."""
    try:
        seconds = int(str(value))
        return datetime.fromtimestamp(seconds, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)


class IdentityStatus(Enum):
    IDENTIFIED = "identified"
    UNKNOWN = "unknown"
    SEVERAL = "several"
    NO_PHONE = "no_phone"  # a username-only WhatsApp user: we never see their number


@dataclass(frozen=True, slots=True)
class Identity:
    status: IdentityStatus
    client: Client | None = None

    @classmethod
    def from_lookup(cls, found: Found, client: Client | None) -> Identity:
        if found is Found.ONE and client is not None:
            return cls(IdentityStatus.IDENTIFIED, client)
        if found is Found.SEVERAL:
            return cls(IdentityStatus.SEVERAL)
        return cls(IdentityStatus.UNKNOWN)


# Effects: writes the flows ask for, applied by the caller in the turn's transaction.
@dataclass(frozen=True, slots=True)
class Escalate:
    reason: str
    summary: str


@dataclass(frozen=True, slots=True)
class SetAlerts:
    client_id: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class NumberChanged:
    """WhatsApp says this user's number changed: the conversation moves to the new
    number and, for a known customer, the new number stays tied to their account."""

    old_wa_id: str
    new_wa_id: str
    client_id: str | None


Effect = Escalate | SetAlerts | NumberChanged


class AlertPreferences(Protocol):
    async def alerts_enabled(self, client_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Deps:
    catalog: Catalog
    matcher: Matcher
    billing: Billing
    alerts: AlertPreferences
    panel_details_url: str
    session_ttl: timedelta


@dataclass(frozen=True, slots=True)
class ConversationView:
    state: str
    context: dict[str, Any]
    updated_at: datetime | None
    wa_id: str | None
    profile_name: str | None = None


@dataclass(slots=True)
class Turn:
    state: str
    context: dict[str, Any]
    replies: list[Reply] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Choice:
    """An option of a state: tapped by id, typed by number or by keywords.

    `title`/`description` are catalog keys; `keywords` is the catalog key of its words.
    Hidden choices are understood when typed but not shown (e.g. "bajar de plan" on
    the main menu goes straight to that answer).
    """

    id: str
    trigger: str
    title: str
    keywords: str
    description: str | None = None
    hidden: bool = False
    # Written into the context before the trigger fires (e.g. which question was asked).
    sets: tuple[tuple[str, str], ...] = ()


class Step:
    """One message's pass through a flow. Subclasses declare STATES and TRANSITIONS and
    a `render_<state>` method per state that says the state's prompt."""

    FLOW: ClassVar[str]
    STATES: ClassVar[Sequence[str]]
    TRANSITIONS: ClassVar[Sequence[dict[str, Any]]]
    _machine: ClassVar[AsyncMachine]

    state: str  # set by the machine
    trigger: Any  # bound by the machine

    def __init__(
        self,
        *,
        inbound: Inbound,
        identity: Identity,
        deps: Deps,
        context: dict[str, Any],
        wa_id: str | None,
        profile_name: str | None,
        out: Turn,
    ) -> None:
        self.inbound = inbound
        self.identity = identity
        self.deps = deps
        self.ctx = context
        self.wa_id = wa_id
        self.profile_name = profile_name
        self.out = out

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "STATES" not in cls.__dict__:
            return
        missing = [s for s in cls.STATES if not hasattr(cls, f"render_{s}")]
        if missing:
            raise TypeError(f"{cls.__name__} lacks render_ methods for {missing}")
        cls._machine = AsyncMachine(
            model=None,
            states=[{"name": s, "on_enter": f"render_{s}"} for s in cls.STATES],
            transitions=list(cls.TRANSITIONS),
            initial=cls.STATES[0],
            auto_transitions=False,
            send_event=False,
        )
        FLOWS[cls.FLOW] = cls

    # -- helpers for flows --------------------------------------------------------
    @property
    def client(self) -> Client | None:
        return self.identity.client

    def t(self, key: str, **params: object) -> str:
        return self.deps.catalog.text(key, **params)

    def say(self, key: str, **params: object) -> None:
        self.send(Text(self.t(key, **params)))

    def send(self, message: Message) -> None:
        self.out.replies.append(Reply(message))

    def effect(self, effect: Effect) -> None:
        self.out.effects.append(effect)

    def choices(self) -> list[Choice]:
        """The options of the current state; override per state."""
        return []

    def prompt(self, body: str, choices: Sequence[Choice], *, button: str = "") -> Message:
        """Buttons for up to three visible choices, a list message beyond."""
        visible = [c for c in choices if not c.hidden]
        if len(visible) <= 3:
            return Buttons(body=body, buttons=tuple(Button(c.id, self.t(c.title)) for c in visible))
        rows = tuple(
            Row(
                c.id,
                self.t("common.numbered", number=i, title=self.t(c.title)),
                self.t(c.description) if c.description else "",
            )
            for i, c in enumerate(visible, 1)
        )
        return ListMessage(
            body=body,
            button=button or self.t("common.list_button"),
            sections=(Section(self.t("common.list_section"), rows),),
        )

    async def understand(self, *, numbered: bool = True) -> bool:
        """Act on the inbound message in the current state; False if not understood.

        Visible choices are matched first; hidden ones only when no visible choice is
        meant, so a hidden shortcut never shadows what is on the customer's screen.
        Numbers count only when the numbered options are what the customer sees.
        """
        choices = self.choices()
        chosen: Choice | None = None
        if self.inbound.kind is InboundKind.CHOICE and self.inbound.choice_id:
            chosen = next((c for c in choices if c.id == self.inbound.choice_id), None)
        if chosen is None and self.inbound.text:
            for group, numbers in (
                ([c for c in choices if not c.hidden], numbered),
                ([c for c in choices if c.hidden], False),
            ):
                options = [Option(c.id, self._keywords(c)) for c in group]
                match = self.deps.matcher.match(
                    self.inbound.text, options, numbered=len(options) if numbers else 0
                )
                chosen = next((c for c in group if c.id == match.key), None)
                if chosen is not None:
                    break
        if chosen is None:
            return False
        await self.choose(chosen)
        return True

    async def choose(self, choice: Choice) -> None:
        self.ctx.update(choice.sets)
        await self.trigger(choice.trigger)

    def _keywords(self, choice: Choice) -> tuple[str, ...]:
        return (self.t(choice.title), *self.deps.catalog.words(choice.keywords))

    async def render(self) -> None:
        """Say the current state's prompt again (the first rung of the ladder)."""
        await getattr(self, f"render_{self.state}")()


FLOWS: dict[str, type[Step]] = {}


def split_state(full: str) -> tuple[str, str]:
    flow, _, state = full.partition(".")
    return flow, state


async def run_step(
    flow_cls: type[Step],
    state: str,
    *,
    inbound: Inbound,
    identity: Identity,
    deps: Deps,
    turn: Turn,
    wa_id: str | None,
    profile_name: str | None,
    action: str | None = None,
    understand: bool = False,
) -> tuple[Step, bool]:
    """Bind a fresh step of `flow_cls` at `state`, fire `action` (a trigger) or try to
    understand the message, unbind it. Returns the step and whether it acted."""
    step = flow_cls(
        inbound=inbound,
        identity=identity,
        deps=deps,
        context=turn.context,
        wa_id=wa_id,
        profile_name=profile_name,
        out=turn,
    )
    machine = flow_cls._machine
    machine.add_model(step, initial=state)
    try:
        if action is not None:
            await step.trigger(action)
            acted = True
        elif understand:
            acted = await step.understand()
        else:
            await step.render()
            acted = True
        turn.state = f"{flow_cls.FLOW}.{step.state}"
        return step, acted
    finally:
        machine.remove_model(step)


def is_greeting(deps: Deps, text: str) -> bool:
    """A short message that greets ("hola", "buen día!", "buenas tardes, ¿cómo va?")."""
    folded = fold(text)
    return (
        bool(folded)
        and len(folded.split()) <= 6
        and deps.matcher.contains(folded, deps.catalog.words("words.greetings"))
    )
