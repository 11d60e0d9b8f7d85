"""The flows runtime: one inbound message in, the next state and what to say and do out.

Each flow is a `Step` subclass whose states and transitions are a `transitions` machine
built once at import (building one is slow and memory-hungry); for each message a fresh
`Step` carrying the conversation's state name and JSON context is bound to that machine,
the trigger fires, and the step is unbound. Nothing here touches HTTP or SQL: reads go
through the interfaces in `Deps`, and everything a flow wants changed comes back as
commands (`flows.commands`) for the caller to store in the same transaction that saves
the state.

What a flow can do besides moving between its own states:

- **switch flows** in the same turn: `goto(flow, state, **data)` enters another flow at a
  named state (menu → upgrade, upgrade → menu, anything → a person); the flow it leaves
  loses its working data (`ctx`), keeping only what it put in `kept`;
- **offer options from data** (`Choice.of`): paged beyond 10, titles fitted to WhatsApp's
  limits (flows.options); every message is checked against the limits when built;
- **take text literally** in the states named in `LITERAL` (an email, a reason, a typed
  confirmation): nothing is matched fuzzily there and only an exact escape word leaves;
- **act** through commands, each with an idempotency key (`key(name)`), and hear their
  outcome later in `on_outcome`; **talk to another conversation** with `Notify`, heard
  there in `on_signal`;
- **keep** what must outlive the session (`kept`), and be told when the session expires
  (`on_expired`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from zoneinfo import ZoneInfo

from transitions.extensions.asyncio import AsyncMachine

from flows import hours
from flows.billing import BillingReader, Client, Found
from flows.catalog import Catalog
from flows.commands import (
    FLOW_MESSAGE,
    BillingCommand,
    Command,
    Escalate,
    Notify,
    NumberChanged,
    Outcome,
    SetAlerts,
    Signal,
)
from flows.hours import BusinessHours
from flows.matching import Matcher, Option, fold
from flows.matching import Outcome as MatchOutcome
from flows.options import (
    PAGE_NEXT,
    PAGE_PREVIOUS,
    Choice,
    Page,
    fit_description,
    pages,
    shorten_titles,
)
from flows.outbound import (
    BUTTON_TITLE_MAX,
    BUTTONS_MAX,
    ROW_TITLE_MAX,
    Button,
    Buttons,
    ListMessage,
    Message,
    Reply,
    Row,
    Section,
    Template,
    Text,
    check_limits,
)
from flows.pricing import Policy

if TYPE_CHECKING:
    # flows.alerts imports flows.account, which builds on this module.
    from flows.alerts import Preferences

log = logging.getLogger(__name__)

__all__ = [
    "FLOWS",
    "Choice",
    "ConversationView",
    "Deps",
    "Escalate",
    "Identity",
    "IdentityStatus",
    "Inbound",
    "InboundKind",
    "Notify",
    "NumberChanged",
    "SetAlerts",
    "Step",
    "Turn",
    "is_greeting",
    "run_step",
    "split_state",
]


class InboundKind(Enum):
    TEXT = "text"
    CHOICE = "choice"  # a tapped reply button or list row
    REACTION = "reaction"
    SYSTEM = "system"
    UNSUPPORTED = "unsupported"  # stickers, locations, media… we cannot read them
    WELCOME = "welcome"  # the user opened the chat with us for the first time
    REVOKED = "revoked"  # the user deleted one of their messages


@dataclass(frozen=True, slots=True)
class Inbound:
    wamid: str
    kind: InboundKind
    type: str
    timestamp: datetime
    text: str = ""
    choice_id: str | None = None
    # For a tap: the wamid of our message it belongs to (WhatsApp quotes it).
    context_id: str | None = None
    system_type: str | None = None
    new_wa_id: str | None = None
    new_user_id: str | None = None
    # A photo, video or document whose caption is the text (we read only the words).
    media: str | None = None
    # A system message for one flow: a command's outcome or another conversation's signal.
    flow: str | None = None
    outcome: Outcome | None = None
    signal: Signal | None = None

    @classmethod
    def from_inbox(cls, data: dict[str, Any]) -> Inbound:
        """From the normalised message stored in the inbox (see bot/wa_updates.py, and
        flows.commands for the system messages the bot writes itself)."""
        timestamp = timestamp_or_now(data.get("timestamp"))
        outcome = signal = None
        if data.get("system_type") == FLOW_MESSAGE:
            if isinstance(data.get("outcome"), dict):
                outcome = Outcome.from_json(data["outcome"])
            if isinstance(data.get("signal"), dict):
                raw = data["signal"]
                signal = Signal(str(raw["name"]), dict(raw.get("data") or {}), raw.get("from"))
        return cls(
            wamid=data["wamid"],
            kind=InboundKind(data["kind"]),
            type=data.get("type", ""),
            timestamp=timestamp,
            text=data.get("text") or "",
            choice_id=data.get("choice_id"),
            context_id=data.get("context_id"),
            system_type=data.get("system_type"),
            new_wa_id=data.get("new_wa_id"),
            new_user_id=data.get("new_user_id"),
            media=data.get("media"),
            flow=data.get("flow"),
            outcome=outcome,
            signal=signal,
        )


def utc_now() -> datetime:
    return datetime.now(UTC)


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


class AlertPreferences(Protocol):
    """A customer's alert switches as committed (no row: every alert on)."""

    async def alert_preferences(self, client_id: str) -> Preferences: ...


@dataclass(frozen=True, slots=True)
class Deps:
    catalog: Catalog
    matcher: Matcher
    # Reads only: a flow changes billing through commands (flows.commands), never by a
    # call of its own inside the turn.
    billing: BillingReader
    alerts: AlertPreferences
    panel_details_url: str
    session_ttl: timedelta
    # The client area's home and the company's public plans (a prospect asking to buy
    # is sent there), both https:// so that every WhatsApp client makes them tappable.
    panel_url: str = ""
    plans_url: str = ""
    # How an upgrade is priced (UPGRADE_PRICING): under pro-rata the period cannot change.
    upgrade_policy: Policy = Policy.DIFFERENCE
    # The company's time zone (DISPLAY_TIMEZONE): "today" for quotes is its date.
    timezone: str = "UTC"
    # How long a holder's transfer message waits for the other's (TRANSFER_WINDOW).
    transfer_window: timedelta = timedelta(hours=72)
    # When people answer the escalation queue (BUSINESS_HOURS, in `timezone`).
    business_hours: BusinessHours = field(
        default_factory=lambda: BusinessHours.parse(hours.DEFAULT)
    )
    # The time now (a test freezes it).
    clock: Callable[[], datetime] = field(default_factory=lambda: utc_now)

    def today(self) -> date:
        return self.clock().astimezone(ZoneInfo(self.timezone)).date()


@dataclass(frozen=True, slots=True)
class ConversationView:
    state: str
    context: dict[str, Any]
    updated_at: datetime | None
    wa_id: str | None
    profile_name: str | None = None
    id: int | None = None
    # The wamid of the last interactive message sent here (the prompt on the customer's
    # screen): "" while WhatsApp has not accepted it yet, None when unknown or not asked
    # (it is read only for a tap that quotes a message).
    current_prompt: str | None = None
    # A person of the team has the conversation (it is handed over and has an unresolved
    # item in the staff queue): the bot stays silent.
    held_by_staff: bool = False


@dataclass(slots=True)
class Turn:
    state: str
    context: dict[str, Any]
    replies: list[Reply] = field(default_factory=list)
    effects: list[Command] = field(default_factory=list)
    # Whether this turn is the customer's activity (it restarts the session clock). A
    # system message — an outcome, another conversation's signal — is not.
    touch: bool = True


# Context keys the runtime owns; everything else in the context is the current flow's
# working data, dropped when the conversation moves to another flow.
LADDER_KEY = "misses"
PAGE_KEY = "page"
KEPT_KEY = "kept"
RUNTIME_KEYS = frozenset({LADDER_KEY, PAGE_KEY, KEPT_KEY})
# A flow switching to a flow switching to… this many times in one turn is a bug.
MAX_SWITCHES = 8
_TRANSITION_CALLBACKS = ("prepare", "before", "after", "conditions", "unless")


class Step:
    """One message's pass through a flow. Subclasses declare STATES and TRANSITIONS and
    a `render_<state>` method per state that says the state's prompt."""

    FLOW: ClassVar[str]
    STATES: ClassVar[Sequence[str]]
    TRANSITIONS: ClassVar[Sequence[dict[str, Any]]]
    # States whose text is taken literally (`on_text`), never matched to options or to
    # the global words; only an exact escape word ("menu", "cancelar", "salir") leaves.
    LITERAL: ClassVar[frozenset[str]] = frozenset()
    _machine: ClassVar[AsyncMachine]

    state: str  # set by the machine
    trigger: Any  # bound by the machine

    def __init__(
        self, *, inbound: Inbound, identity: Identity, deps: Deps, conv: ConversationView, out: Turn
    ) -> None:
        self.inbound = inbound
        self.identity = identity
        self.deps = deps
        self.conversation = conv
        self.out = out
        self.ctx = out.context
        self.wa_id = conv.wa_id
        self.profile_name = conv.profile_name
        # Set by goto(): the flow class, state and data to enter once this step is done.
        self.next: tuple[type[Step], str, dict[str, Any]] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "STATES" not in cls.__dict__:
            return
        _check_declaration(cls)
        cls._machine = AsyncMachine(
            model=None,
            states=[{"name": s, "on_enter": f"render_{s}"} for s in cls.STATES],
            transitions=list(cls.TRANSITIONS),
            initial=cls.STATES[0],
            auto_transitions=False,
            send_event=False,
        )
        FLOWS[cls.FLOW] = cls

    # -- who, and where ---------------------------------------------------------------
    @property
    def client(self) -> Client | None:
        return self.identity.client

    @property
    def here(self) -> bool:
        """Whether the conversation is in this flow (an outcome or a signal may reach a
        flow the customer has since left)."""
        return split_state(self.out.state)[0] == self.FLOW

    @property
    def kept(self) -> dict[str, Any]:
        """This flow's data that outlives the session and flow switches (a pending
        transfer, an unpaid upgrade); the flow removes what it no longer needs."""
        kept: dict[str, Any] = self.ctx.setdefault(KEPT_KEY, {})
        mine: dict[str, Any] = kept.setdefault(self.FLOW, {})
        return mine

    # -- saying -------------------------------------------------------------------------
    def t(self, key: str, **params: object) -> str:
        return self.deps.catalog.text(key, **params)

    def say(self, key: str, **params: object) -> None:
        self.send(Text(self.t(key, **params)))

    def send(self, message: Message, *, template: Template | None = None) -> None:
        """Queue a message, with the approved template to send instead when the
        customer's 24 h window is closed (a message to someone who has not written lately).
        One breaking WhatsApp's limits fails here, where it is built
        (flows.outbound.MessageLimitError), not after the turn has committed."""
        check_limits(message)
        if template is not None:
            check_limits(template)
        self.out.replies.append(Reply(message, template))

    # -- doing --------------------------------------------------------------------------
    def command(self, command: Command) -> None:
        """Ask for something to be done (flows.commands). A billing command's outcome comes
        back to this flow's `on_outcome`."""
        if isinstance(command, BillingCommand) and not command.reply_to:
            command = dataclasses.replace(command, reply_to=self.FLOW)
        self.out.effects.append(command)

    def key(self, name: str) -> str:
        """The idempotency key for this flow's `name` action, made once and kept in the
        context: asked again (a repeated "sí", a redelivered message) it is the same key,
        so the action happens once. `forget_key` before offering the action anew."""
        keys: dict[str, str] = self.ctx.setdefault("keys", {})
        if name not in keys:
            keys[name] = f"{self.FLOW}.{name}:{self.inbound.wamid}"
        return keys[name]

    def forget_key(self, name: str) -> None:
        self.ctx.get("keys", {}).pop(name, None)

    # -- moving -------------------------------------------------------------------------
    def goto(self, flow: str, state: str, **data: Any) -> None:
        """Enter `flow` at `state` once this step returns (its prompt is said then), with
        `data` in the context. Fails at once for a flow or state that does not exist."""
        target = FLOWS.get(flow)
        if target is None:
            raise ValueError(f"no flow {flow!r}")
        if state not in target.STATES:
            raise ValueError(f"flow {flow!r} has no state {state!r}")
        self.next = (target, state, data)

    def leave(self) -> None:
        """Back to the main menu."""
        self.goto("menu", "main")

    async def back(self) -> None:
        """The customer wrote "volver" / "atrás": the previous step; by default the menu."""
        self.leave()

    async def reprompt(self) -> None:
        """The current options again (the ladder's first rung): by default the state's
        prompt. A state whose prompt follows a long text (an answer) says only the
        options."""
        await self.render()

    # -- hooks ------------------------------------------------------------------------
    def choices(self) -> list[Choice]:
        """The options of the current state; override per state."""
        return []

    async def on_text(self, text: str) -> bool:
        """Text typed in a LITERAL state; False when it is not acceptable (the ladder)."""
        return False

    async def on_outcome(self, outcome: Outcome) -> None:
        """A billing command this flow issued has an outcome."""
        raise NotImplementedError(f"flow {self.FLOW} issued a command but ignores outcomes")

    async def on_signal(self, signal: Signal) -> None:
        """Another conversation told this flow something (flows.commands.Notify)."""
        raise NotImplementedError(f"flow {self.FLOW} was sent signal {signal.name!r}")

    async def on_expired(self) -> None:
        """The session expired while the conversation was in this flow. Everything but
        `kept` is about to be dropped; say what the customer should know."""

    # -- options ------------------------------------------------------------------------
    def title_of(self, choice: Choice) -> str:
        return choice.title if choice.literal else self.t(choice.title)

    def description_of(self, choice: Choice) -> str:
        if choice.description is None:
            return ""
        return choice.description if choice.literal else self.t(choice.description)

    def prompt(
        self, body: str, choices: Sequence[Choice], *, button: str = "", as_list: bool = False
    ) -> Message:
        """Buttons for up to three visible choices that fit on a button; otherwise (or
        `as_list`: options whose descriptions matter, such as prices) a numbered list,
        paged beyond 10 rows, with data titles fitted to the limits."""
        visible = [c for c in choices if not c.hidden]
        titles = [self.title_of(c) for c in visible]
        labelled = list(zip(visible, titles, strict=True))
        too_long = any(c.literal and len(t) > BUTTON_TITLE_MAX for c, t in labelled)
        if len(visible) <= BUTTONS_MAX and not too_long and not as_list:
            return Buttons(body=body, buttons=tuple(Button(c.id, t) for c, t in labelled))
        page = self._page(len(visible))
        number_width = len(self.t("common.numbered", number=len(visible), title=""))
        fitted = shorten_titles(titles, ROW_TITLE_MAX - number_width)
        rows: list[Row] = []
        if page.has_previous:
            rows.append(
                self._page_row(PAGE_PREVIOUS, self.t("common.page_previous"), 1, page.start)
            )
        for i in range(page.start, page.stop):
            choice, title = visible[i], fitted[i] if visible[i].literal else titles[i]
            description = self.description_of(choice)
            if title != titles[i] and not description:
                description = titles[i]  # the whole title, where there is room for it
            rows.append(
                Row(
                    choice.id,
                    self.t("common.numbered", number=i + 1, title=title),
                    fit_description(description) if choice.literal else description,
                )
            )
        if page.has_next:
            rows.append(
                self._page_row(PAGE_NEXT, self.t("common.page_next"), page.stop + 1, len(visible))
            )
        return ListMessage(
            body=body,
            button=button or self.t("common.list_button"),
            sections=(Section(self.t("common.list_section"), tuple(rows)),),
        )

    def _page_row(self, row_id: str, title: str, first: int, last: int) -> Row:
        return Row(row_id, title, self.t("common.page_range", first=first, last=last))

    def _page(self, count: int) -> Page:
        """The page of a list of `count` options to show now (the first, unless this
        state's list was paged on), remembered in the context."""
        split = pages(count)
        shown = self.ctx.get(PAGE_KEY)
        number = 0
        if isinstance(shown, dict) and shown.get("state") == self._full_state:
            number = min(int(shown.get("n", 0)), len(split) - 1)
        if len(split) > 1:
            self.ctx[PAGE_KEY] = {"state": self._full_state, "n": number}
        else:
            self.ctx.pop(PAGE_KEY, None)
        return split[number]

    @property
    def _full_state(self) -> str:
        return f"{self.FLOW}.{self.state}"

    async def understand(self, *, numbered: bool = True) -> bool:
        """Act on the inbound message in the current state; False if not understood.

        Visible choices are matched first; hidden ones only when no visible choice is
        meant, so a hidden shortcut never shadows what is on the customer's screen.
        Numbers count only when the numbered options are what the customer sees; on a
        paged list they run on across pages.
        """
        choices = self.choices()
        if await self._turn_page(choices):
            return True
        chosen: Choice | None = None
        if self.inbound.kind is InboundKind.CHOICE and self.inbound.choice_id:
            chosen = next((c for c in choices if c.id == self.inbound.choice_id), None)
        if chosen is None and self.inbound.text:
            chosen = self.meant(choices, numbered=numbered)
        if chosen is None:
            return False
        await self.choose(chosen)
        return True

    def meant(self, choices: Sequence[Choice], *, numbered: bool) -> Choice | None:
        """The choice the typed text means. All are matched together, so that the most
        specific phrase wins ("cancelar un dominio" is the hidden domains question, not
        the visible cancellation); on a tie, what is on screen wins. Numbers count only
        for the visible ones, as numbered on screen."""
        visible = [c for c in choices if not c.hidden]
        ordered = [*visible, *(c for c in choices if c.hidden)]
        for group in (ordered, visible):
            options = [Option(c.id, self._keywords(c)) for c in group]
            match = self.deps.matcher.match(
                self.inbound.text, options, numbered=len(visible) if numbered else 0
            )
            chosen = next((c for c in group if c.id == match.key), None)
            if chosen is not None or match.outcome is not MatchOutcome.AMBIGUOUS:
                return chosen
        return None

    async def _turn_page(self, choices: Sequence[Choice]) -> bool:
        """Turn the page ("Ver más" / "Anteriores", tapped or typed) of this state's list."""
        shown = self.ctx.get(PAGE_KEY)
        if not isinstance(shown, dict) or shown.get("state") != self._full_state:
            return False
        step = {PAGE_NEXT: 1, PAGE_PREVIOUS: -1}.get(self.inbound.choice_id or "")
        if step is None and self.inbound.kind is InboundKind.TEXT and self.inbound.text:
            # Matched together with the options on screen: a choice's own words win.
            options = [
                Option(PAGE_NEXT, self.deps.catalog.words("words.page_next")),
                Option(PAGE_PREVIOUS, self.deps.catalog.words("words.page_previous")),
                *(Option(c.id, self._keywords(c)) for c in choices if not c.hidden),
            ]
            match = self.deps.matcher.match(self.inbound.text, options, numbered=0)
            step = {PAGE_NEXT: 1, PAGE_PREVIOUS: -1}.get(match.key or "")
        if step is None:
            return False
        shown["n"] = max(0, int(shown.get("n", 0)) + step)
        await self.render()
        return True

    async def choose(self, choice: Choice) -> None:
        self.ctx.pop(PAGE_KEY, None)
        self.ctx.update(choice.sets)
        await self.trigger(choice.trigger)

    def _keywords(self, choice: Choice) -> tuple[str, ...]:
        if choice.literal:
            return (choice.title, *choice.words)
        return (self.t(choice.title), *self.deps.catalog.words(choice.keywords))

    async def render(self) -> None:
        """Say the current state's prompt again (the first rung of the ladder)."""
        await getattr(self, f"render_{self.state}")()


FLOWS: dict[str, type[Step]] = {}


def _check_declaration(cls: type[Step]) -> None:
    """A typo in a flow's declaration fails at import, not at a customer's message."""
    states = set(cls.STATES)
    missing = [s for s in cls.STATES if not hasattr(cls, f"render_{s}")]
    if missing:
        raise TypeError(f"{cls.__name__} lacks render_ methods for {missing}")
    if not states >= cls.LITERAL:
        raise TypeError(f"{cls.__name__}.LITERAL names unknown states {cls.LITERAL - states}")
    for t in cls.TRANSITIONS:
        sources = t["source"] if isinstance(t["source"], list) else [t["source"]]
        # A dest of None is an internal transition: callbacks run, the state stays.
        named = [s for s in (*sources, t["dest"]) if s is not None]
        unknown = [s for s in named if s not in states and s not in ("*", "=")]
        if unknown:
            raise TypeError(f"{cls.__name__}: transition {t['trigger']!r} names {unknown}")
        for kind in _TRANSITION_CALLBACKS:
            names = t.get(kind) or []
            for name in [names] if isinstance(names, str) else names:
                if not callable(getattr(cls, name, None)):
                    raise TypeError(f"{cls.__name__}: {kind} callback {name!r} is not a method")


def split_state(full: str) -> tuple[str, str]:
    flow, _, state = full.partition(".")
    return flow, state


Action = Callable[[Step], Awaitable[bool | None]]


async def run_step(
    flow_cls: type[Step],
    state: str,
    act: Action,
    *,
    inbound: Inbound,
    identity: Identity,
    deps: Deps,
    conv: ConversationView,
    turn: Turn,
    detached: bool = False,
) -> bool:
    """Bind a fresh step of `flow_cls` at `state`, run `act` on it, unbind it; then enter
    the flows it switched to (each saying its prompt), and record in `turn.state` where
    the conversation is now. Returns whether the step acted (`act` did not say False:
    the message was understood).

    A `detached` step visits a flow that does not hold the conversation (an outcome or a
    signal for a flow the customer has left): it may talk, and it moves the conversation
    only with goto."""

    def bind(cls: type[Step], at: str) -> Step:
        step = cls(inbound=inbound, identity=identity, deps=deps, conv=conv, out=turn)
        cls._machine.add_model(step, initial=at)
        return step

    def settle(step: Step) -> None:
        if split_state(turn.state)[0] != step.FLOW:
            _drop_working_data(turn.context)
        turn.state = f"{step.FLOW}.{step.state}"

    step = bind(flow_cls, state)
    try:
        acted = await act(step) is not False
    finally:
        flow_cls._machine.remove_model(step)
    if not detached:
        settle(step)
    elif step.state != state:
        raise RuntimeError(f"{flow_cls.FLOW} does not hold the conversation: it moves with goto")
    for _ in range(MAX_SWITCHES):
        if step.next is None:
            return acted
        target, at, data = step.next
        step = bind(target, at)
        settle(step)
        turn.context.update(data)
        try:
            await step.render()
        finally:
            target._machine.remove_model(step)
        turn.state = f"{target.FLOW}.{step.state}"
    raise RuntimeError(f"flows switched more than {MAX_SWITCHES} times in one turn")


def _drop_working_data(context: dict[str, Any]) -> None:
    for key in [k for k in context if k not in RUNTIME_KEYS]:
        del context[key]


def keep_only_kept(context: Mapping[str, Any]) -> dict[str, Any]:
    """What survives an expired session: every flow's `kept` data."""
    kept = {f: dict(d) for f, d in (context.get(KEPT_KEY) or {}).items() if d}
    return {KEPT_KEY: kept} if kept else {}


def is_greeting(deps: Deps, text: str) -> bool:
    """A short message that greets ("hola", "buen día!", "buenas tardes, ¿cómo va?")."""
    folded = fold(text)
    return (
        bool(folded)
        and len(folded.split()) <= 6
        and deps.matcher.contains(folded, deps.catalog.words("words.greetings"))
    )
