"""The main menu, the frequent questions, alerts, and handing over to a person.

Reached by any greeting, by the global word `menu`, and after a conversation expires.
Customers we cannot identify by phone get the questions and a person, nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

from flows.alerts import ALERT_TYPES, SECURITY, SWITCHABLE, Preferences, catalog_key
from flows.commands import Escalate, SetAlerts
from flows.handover import taken_over
from flows.matching import fold
from flows.options import Choice, shorten_titles
from flows.outbound import ROW_TITLE_MAX, ListMessage, Row, Section, Text
from flows.runtime import IdentityStatus, InboundKind, Step

# The frequent questions, in the order shown; answers come from the help pages.
FAQ_TOPICS = (
    "downgrade",
    "upgrade_price",
    "backups",
    "domains",
    "cancellation",
    "transfer",
    "phone",
)

# Every option of the main menu, in the order shown to an identified customer.
# A person of the team has the conversation (store.queue: the bot is silent in it while
# it has an unresolved item); a person handing it back leaves it at the main menu.
HANDED_OVER = "menu.handed_over"
HANDED_BACK = "menu.main"
# The staff queue's reason when the customer asks for a person (a person talks in it by
# definition: store.queue keeps the conversation with them until it is resolved).
CUSTOMER_REQUEST = "customer_request"
MENU_OPTIONS = ("upgrade", "transfer", "cancel", "account", "alerts", "faq", "human")

# "Mis alertas" (every alert and its state) and the list to switch them one by one.
ALERT_STATES = ("alerts", "alerts_pick")
# The id of one alert's option: "alert:" and its type.
ALERT_ID = "alert:"


def _faq_choice(topic: str, *, hidden: bool = False) -> Choice:
    return Choice(
        id=f"faq:{topic}",
        trigger="faq_answer",
        title=f"faq.{topic}.title",
        keywords=f"faq.{topic}.keywords",
        description=f"faq.{topic}.description",
        hidden=hidden,
        sets=(("faq", topic),),
    )


class Menu(Step):
    FLOW = "menu"
    STATES: ClassVar[tuple[str, ...]] = (
        "start",
        "main",
        "faq",
        "faq_answer",
        "alerts",
        "alerts_pick",
        "offer_human",
        "handed_over",
        "ended",
        "prospect",
    )
    TRANSITIONS: ClassVar[list[dict[str, Any]]] = [
        {"trigger": "go_menu", "source": "*", "dest": "main"},
        {"trigger": "go_faq", "source": "*", "dest": "faq"},
        {"trigger": "go_alerts", "source": "*", "dest": "alerts"},
        {"trigger": "go_human", "source": "*", "dest": "handed_over", "before": "escalate"},
        {"trigger": "go_exit", "source": "*", "dest": "ended"},
        {"trigger": "offer_human", "source": "*", "dest": "offer_human"},
        {"trigger": "pick_alerts", "source": "alerts", "dest": "alerts_pick"},
        {"trigger": "switch_all", "source": [*ALERT_STATES], "dest": "alerts", "before": "set_all"},
        {
            "trigger": "switch_alert",
            "source": [*ALERT_STATES],
            "dest": "alerts",
            "before": "set_one",
        },
        {
            "trigger": "security_alert",
            "source": [*ALERT_STATES],
            "dest": None,
            "after": "say_locked",
        },
        {"trigger": "faq_answer", "source": "*", "dest": "faq_answer"},
        {"trigger": "prospect", "source": "*", "dest": "prospect"},
        {"trigger": "go_account", "source": "*", "dest": None, "after": "to_account"},
        {"trigger": "go_upgrade", "source": "*", "dest": None, "after": "to_upgrade"},
        {"trigger": "go_transfer", "source": "*", "dest": None, "after": "to_transfer"},
        {"trigger": "go_cancel", "source": "*", "dest": None, "after": "to_cancel"},
    ]

    # -- choices per state ----------------------------------------------------------
    @property
    def identified(self) -> bool:
        return self.identity.status is IdentityStatus.IDENTIFIED

    def main_choices(self) -> list[Choice]:
        faq, human = _menu_option("faq", "go_faq"), _menu_option("human", "go_human")
        hidden_faq = [_faq_choice(t, hidden=True) for t in FAQ_TOPICS]
        if not self.identified:
            return [faq, human, *hidden_faq]
        upgrade = _menu_option("upgrade", "go_upgrade")
        transfer = _menu_option("transfer", "go_transfer")
        cancel = _menu_option("cancel", "go_cancel")
        account, alerts = _menu_option("account", "go_account"), _menu_option("alerts", "go_alerts")
        return [upgrade, transfer, cancel, account, alerts, faq, human, *hidden_faq]

    def choices(self) -> list[Choice]:
        back = Choice("menu", "go_menu", "common.back_to_menu", "words.menu")
        human = _menu_option("human", "go_human")
        match self.state:
            case "main" | "start" | "ended":
                return self.main_choices()
            case "faq":
                return [*(_faq_choice(t) for t in FAQ_TOPICS), back]
            case "faq_answer":
                another = Choice("faq", "go_faq", "faq.another", "menu.options.faq.keywords")
                return [another, back]
            case "alerts" | "alerts_pick":
                return self.alert_choices(back)
            case "offer_human" | "prospect":
                return [human, back]
        return []

    def intents(self) -> list[Choice]:
        """Everything the bot knows, reachable by typing it from any state: the main
        menu's options, each frequent question, and a prospect's wish to buy."""
        buy = Choice("buy", "prospect", "menu.options.buy.title", "words.buy", hidden=True)
        intents = [*self.main_choices(), buy]
        if not self.identified:
            # Asked by someone we cannot identify: told how to be recognised.
            intents.append(_menu_option("account", "go_account", hidden=True))
        return intents

    async def intent(self) -> bool:
        """Act on the text as an intent from anywhere (after the current state's own
        options did not fit); False when it names none clearly."""
        chosen = self.meant(self.intents(), numbered=False)
        if chosen is None:
            return False
        await self.choose(chosen)
        return True

    async def back(self) -> None:
        previous = {"faq_answer": "go_faq", "alerts_pick": "go_alerts"}
        await self.trigger(previous.get(self.state, "go_menu"))

    async def reprompt(self) -> None:
        if self.state == "faq_answer" and self.ctx.get("faq") in FAQ_TOPICS:
            self.send(self.prompt(self.t("faq.after_answer"), self.choices()))
        elif self.state in ("main", "start", "ended"):
            self.send(self.prompt(self.t("menu.brief"), self.main_choices()))
        else:
            await self.render()

    async def understand(self, *, numbered: bool = True) -> bool:
        if self.state in ("start", "ended"):
            # A first message (or the first after leaving): whatever it says, the answer
            # is the menu, unless it already names one of the menu's options.
            # The customer has not seen the menu yet: a bare number means nothing here.
            # A bare greeting, the usual first message, needs no matching at all.
            if self._bare_greeting() or not await super().understand(numbered=False):
                await self.trigger("go_menu")
            return True
        if self.state in ALERT_STATES:
            if self.client is None:
                await self.trigger("go_menu")
                return True
            await self.preferences()
        return await super().understand(numbered=numbered)

    def meant(self, choices: Sequence[Choice], *, numbered: bool) -> Choice | None:
        if self.state not in ALERT_STATES:
            return super().meant(choices, numbered=numbered)
        # An alert named is what the message is about: "desactivar facturas nuevas" is
        # that alert, not every alert ("desactivar") — so the alerts are matched first.
        named = [c for c in choices if c.id.startswith(ALERT_ID)]
        others = [c for c in choices if not c.id.startswith(ALERT_ID)]
        return super().meant(named, numbered=numbered) or super().meant(others, numbered=numbered)

    def _bare_greeting(self) -> bool:
        greetings = {fold(g) for g in self.deps.catalog.words("words.greetings")}
        return fold(self.inbound.text) in greetings

    # -- states -------------------------------------------------------------------
    async def render_start(self) -> None:
        await self.render_main()

    async def render_main(self) -> None:
        self.ctx.pop("faq", None)
        if self.ctx.pop("brief", False):
            # Asked again after not being understood: the options, not the long text.
            self.send(self.prompt(self.t("menu.brief"), self.main_choices()))
        elif self.identity.status is IdentityStatus.SEVERAL:
            self.send(self.prompt(self.t("identity.several"), self.main_choices()))
        elif not self.identified or self.client is None:
            self.send(
                self.prompt(
                    self.t("identity.unknown", panel_url=self.deps.panel_details_url),
                    self.main_choices(),
                )
            )
        else:
            body = self.t("menu.body", name=_first_name(self.client.name))
            self.send(self.prompt(body, self.main_choices(), button=self.t("menu.button")))

    async def render_faq(self) -> None:
        self.send(self.prompt(self.t("faq.body"), self.choices(), button=self.t("faq.button")))

    async def render_faq_answer(self) -> None:
        topic = self.ctx.get("faq")
        if topic not in FAQ_TOPICS:
            await self.trigger("go_faq")
            return
        if topic == "downgrade" and self.identified:
            # A customer asking to move down: the answer, and their ways forward.
            self.goto("upgrade", "downgrade")
            return
        self.say(f"faq.{topic}.answer", panel_url=self.deps.panel_details_url)
        self.send(self.prompt(self.t("faq.after_answer"), self.choices()))

    # -- alerts -------------------------------------------------------------------
    # The customer's alert switches: read once per step, then as this turn leaves them.
    _preferences: Preferences | None = None

    async def preferences(self) -> Preferences:
        if self._preferences is None:
            assert self.client is not None
            self._preferences = await self.deps.alerts.alert_preferences(self.client.id)
        return self._preferences

    def alert_choices(self, back: Choice) -> list[Choice]:
        """Mis alertas: all off (or all on, when none is on), choose which, the menu; and
        each alert, hidden, so that its name typed switches it. The list: the alerts that
        can be switched, numbered. The password alert is understood only to say why it
        cannot be switched off."""
        prefs = self._preferences or Preferences()
        none_on = not any(prefs.wants(t) for t in SWITCHABLE)
        on = Choice(
            "alerts:on",
            "switch_all",
            "alerts.turn_on",
            "alerts.turn_on_keywords",
            sets=(("alerts_all", True),),
        )
        off = Choice(
            "alerts:off",
            "switch_all",
            "alerts.turn_off",
            "alerts.turn_off_keywords",
            sets=(("alerts_all", False),),
        )
        pick = Choice("alerts:pick", "pick_alerts", "alerts.pick", "alerts.pick_keywords")
        security = [self._alert_choice(t, prefs, hidden=True) for t in sorted(SECURITY)]
        if self.state == "alerts_pick":
            switchable = [self._alert_choice(t, prefs) for t in SWITCHABLE]
            return [*switchable, *security, _hide(off), _hide(on)]
        switchable = [self._alert_choice(t, prefs, hidden=True) for t in SWITCHABLE]
        shown, other = (on, off) if none_on else (off, on)
        return [shown, pick, back, _hide(other), *switchable, *security]

    def _alert_choice(self, alert_type: str, prefs: Preferences, *, hidden: bool = False) -> Choice:
        base = catalog_key(alert_type)
        if alert_type in SECURITY:
            trigger, description = "security_alert", ""
        else:
            trigger = "switch_alert"
            wanted = prefs.wants(alert_type)
            description = self.t("alerts.row_on" if wanted else "alerts.row_off")
        return Choice.of(
            ALERT_ID + alert_type,
            trigger,
            self.t(f"{base}.title"),
            description=description,
            sets=(("alert", alert_type),),
            hidden=hidden,
        )

    async def render_alerts(self) -> None:
        if self.client is None:
            await self.trigger("go_menu")
            return
        prefs = await self.preferences()
        lines = []
        for alert_type in ALERT_TYPES:
            base = catalog_key(alert_type)
            key = (
                "alerts.line_security"
                if alert_type in SECURITY
                else "alerts.line_on"
                if prefs.wants(alert_type)
                else "alerts.line_off"
            )
            lines.append(self.t(key, title=self.t(f"{base}.title")))
        body = self.t("alerts.body", lines="\n".join(lines), panel_url=self.deps.panel_details_url)
        self.send(self.prompt(body, self.choices()))

    async def render_alerts_pick(self) -> None:
        """The alerts that can be switched, one row each with its state: a list of its
        own, for the rows' numbers take only the room they need ("8. Servicio dado de
        baja" fills a row exactly; `prompt` would leave every row room for a "10.")."""
        if self.client is None:
            await self.trigger("go_menu")
            return
        await self.preferences()
        shown = [c for c in self.choices() if not c.hidden]
        titles = [c.title for c in shown]
        rows = []
        for number, choice in enumerate(shown, 1):
            room = ROW_TITLE_MAX - len(self.t("common.numbered", number=number, title=""))
            title = shorten_titles(titles, room)[number - 1]
            rows.append(
                Row(
                    choice.id,
                    self.t("common.numbered", number=number, title=title),
                    choice.description or "",
                )
            )
        section = Section(self.t("alerts.pick_section"), tuple(rows))
        self.send(
            ListMessage(
                body=self.t("alerts.pick_body"),
                button=self.t("alerts.pick_button"),
                sections=(section,),
            )
        )

    def set_all(self) -> None:
        assert self.client is not None
        on = bool(self.ctx.pop("alerts_all", False))
        self._switch(SetAlerts(self.client.id, on))
        self.say("alerts.now_on" if on else "alerts.now_off")

    def set_one(self) -> None:
        assert self.client is not None
        alert_type = self.ctx.pop("alert", None)
        if alert_type not in SWITCHABLE:
            return
        prefs = self._preferences or Preferences()
        on = self._typed_direction()
        if on is None:
            on = not prefs.wants(alert_type)
        self._switch(SetAlerts(self.client.id, on, alert_type))
        base = catalog_key(alert_type)
        title = self.t(f"{base}.title")
        self.say("alerts.type_now_on" if on else "alerts.type_now_off", title=title)

    def say_locked(self) -> None:
        alert_type = self.ctx.pop("alert", None)
        if alert_type in SECURITY:
            base = catalog_key(alert_type)
            self.say("alerts.security_locked", title=self.t(f"{base}.title"))

    def _typed_direction(self) -> bool | None:
        """Which way a typed alert name goes when the message says it ("activar …",
        "desactivar …"); None when it does not (a tap, the name alone): it switches."""
        if self.inbound.kind is not InboundKind.TEXT:
            return None
        text, matcher = self.inbound.text, self.deps.matcher
        on = matcher.contains(text, self.deps.catalog.words("alerts.turn_on_keywords"))
        off = matcher.contains(text, self.deps.catalog.words("alerts.turn_off_keywords"))
        return on if on != off else None

    def _switch(self, change: SetAlerts) -> None:
        self.command(change)
        self._preferences = switched(self._preferences or Preferences(), change)

    def to_account(self) -> None:
        self.goto("account", "overview")

    def to_upgrade(self) -> None:
        self.goto("upgrade", "start")

    def to_transfer(self) -> None:
        self.goto("transfer", "start")

    def to_cancel(self) -> None:
        self.goto("cancel", "start")

    async def render_prospect(self) -> None:
        # Said in full once; asked again, the link alone.
        key = "menu.prospect_again" if self.ctx.get("prospect_told") else "menu.prospect"
        self.ctx["prospect_told"] = True
        self.send(self.prompt(self.t(key, plans_url=self.deps.plans_url), self.choices()))

    async def render_offer_human(self) -> None:
        self.send(self.prompt(self.t("ladder.offer_human"), self.choices()))

    def escalate(self) -> None:
        self.command(Escalate(reason=CUSTOMER_REQUEST, summary=self.inbound.text[:500]))

    async def render_handed_over(self) -> None:
        # Plain text: while a person has the conversation only a typed "menu" returns.
        self.send(Text(taken_over(self.deps.catalog, self.deps.business_hours, self.deps.clock())))

    async def render_ended(self) -> None:
        self.say("menu.goodbye")


def _menu_option(menu_option: str, trigger: str, **extra: Any) -> Choice:
    assert menu_option in MENU_OPTIONS
    return Choice(
        menu_option,
        trigger,
        f"menu.options.{menu_option}.title",
        f"menu.options.{menu_option}.keywords",
        f"menu.options.{menu_option}.description",
        **extra,
    )


def switched(prefs: Preferences, change: SetAlerts) -> Preferences:
    """The switches after `change`, as store.turns.set_alerts writes them (so that the
    state shown in the same turn is the one stored)."""
    if change.type is None:
        return Preferences() if change.enabled else Preferences(False, prefs.disabled_types)
    if not change.enabled:
        return Preferences(prefs.enabled, prefs.disabled_types | {change.type})
    if prefs.enabled:
        return Preferences(True, prefs.disabled_types - {change.type})
    return Preferences(True, frozenset(SWITCHABLE) - {change.type})


def _hide(choice: Choice) -> Choice:
    return dataclasses.replace(choice, hidden=True)


def _first_name(name: str) -> str:
    return name.split(maxsplit=1)[0] if name.strip() else name
