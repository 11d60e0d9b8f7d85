"""The main menu, the frequent questions, alerts, and handing over to a person.

Reached by any greeting, by the global word `menu`, and after a conversation expires.
Customers we cannot identify by phone get the questions and a person, nothing else.
"""

from __future__ import annotations

from typing import Any, ClassVar

from flows.commands import Escalate, SetAlerts
from flows.matching import fold
from flows.options import Choice
from flows.runtime import IdentityStatus, Step

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

# Options of the main menu that belong to conversations of later releases.
COMING_SOON = ("upgrade", "transfer", "cancel")
# Every option of the main menu, in the order shown to an identified customer.
MENU_OPTIONS = (*COMING_SOON, "account", "alerts", "faq", "human")


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
        "coming_soon",
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
        {"trigger": "toggle_alerts", "source": "alerts", "dest": "alerts", "before": "toggle"},
        {"trigger": "coming_soon", "source": "*", "dest": "coming_soon"},
        {"trigger": "faq_answer", "source": "*", "dest": "faq_answer"},
        {"trigger": "prospect", "source": "*", "dest": "prospect"},
        {"trigger": "go_account", "source": "*", "dest": None, "after": "to_account"},
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
        soon = [_menu_option(o, "coming_soon", sets=(("soon", o),)) for o in COMING_SOON]
        account, alerts = _menu_option("account", "go_account"), _menu_option("alerts", "go_alerts")
        return [*soon, account, alerts, faq, human, *hidden_faq]

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
            case "alerts":
                key = "alerts.turn_off" if self._alerts_on else "alerts.turn_on"
                toggle = Choice("alerts:toggle", "toggle_alerts", key, f"{key}_keywords")
                return [toggle, back]
            case "coming_soon" | "offer_human" | "prospect":
                return [human, back]
            case "handed_over":
                return [back]
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
        await self.trigger("go_faq" if self.state == "faq_answer" else "go_menu")

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
        if self.state == "handed_over" and not await super().understand(numbered=numbered):
            self.say("menu.still_handed_over")
            return True
        if self.state == "alerts" and self.client is not None:
            self._alerts_on = await self.deps.alerts.alerts_enabled(self.client.id)
        return await super().understand(numbered=numbered)

    def _bare_greeting(self) -> bool:
        greetings = {fold(g) for g in self.deps.catalog.words("words.greetings")}
        return fold(self.inbound.text) in greetings

    # -- states -------------------------------------------------------------------
    async def render_start(self) -> None:
        await self.render_main()

    async def render_main(self) -> None:
        self.ctx.pop("faq", None)
        self.ctx.pop("soon", None)
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
        self.say(f"faq.{topic}.answer", panel_url=self.deps.panel_details_url)
        self.send(self.prompt(self.t("faq.after_answer"), self.choices()))

    # The customer's alert preference, read when the alerts state needs it.
    _alerts_on: bool | None = None

    async def render_alerts(self) -> None:
        if self.client is None:
            await self.trigger("go_menu")
            return
        if self._alerts_on is None:
            self._alerts_on = await self.deps.alerts.alerts_enabled(self.client.id)
        status = self.t("alerts.status_on" if self._alerts_on else "alerts.status_off")
        body = self.t("alerts.body", status=status, panel_url=self.deps.panel_details_url)
        self.send(self.prompt(body, self.choices()))

    def toggle(self) -> None:
        assert self.client is not None
        self._alerts_on = not self._alerts_on
        self.command(SetAlerts(self.client.id, self._alerts_on))
        self.say("alerts.now_on" if self._alerts_on else "alerts.now_off")

    async def render_coming_soon(self) -> None:
        option = self.ctx.get("soon", "upgrade")
        body = self.t(f"menu.coming_soon.{option}", panel_url=self.deps.panel_url)
        self.send(self.prompt(body, self.choices()))

    def to_account(self) -> None:
        self.goto("account", "overview")

    async def render_prospect(self) -> None:
        # Said in full once; asked again, the link alone.
        key = "menu.prospect_again" if self.ctx.get("prospect_told") else "menu.prospect"
        self.ctx["prospect_told"] = True
        self.send(self.prompt(self.t(key, plans_url=self.deps.plans_url), self.choices()))

    async def render_offer_human(self) -> None:
        self.send(self.prompt(self.t("ladder.offer_human"), self.choices()))

    def escalate(self) -> None:
        self.command(Escalate(reason="customer_request", summary=self.inbound.text[:500]))

    async def render_handed_over(self) -> None:
        self.send(self.prompt(self.t("menu.handed_over"), self.choices()))

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


def _first_name(name: str) -> str:
    return name.split(maxsplit=1)[0] if name.strip() else name
