"""Subir de plan (SPEC §3 "Upgrade" and "Downgrade"; help page "Cómo hacer un Upgrade o
subir de plan"): the service → the category it can technically move to → a package of
it → the period to pay it in → the amount, what it is made of, and an explicit
confirmation → a place-upgrade command → the invoice's link. The upgrade applies when
the invoice is paid, and the payment's alert says so (flows.alerts).

Entered from the main menu or by typing it anywhere; what the message already names
("quiero pasar radiolaura a Radio Plus") skips the steps it answers. A package that is
dearer but not among the automatic paths goes to the account executive as a staff task;
a cheaper one is a downgrade: the help page's explanation, and the way forward (cancel
and contract another plan), never an invoice. One upgrade per service at a time: while
one is unpaid, its invoice is shown instead.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

from flows.account import local_amount, local_date
from flows.billing import (
    BillingRefused,
    PendingUpgrade,
    Product,
    Service,
    UpgradeOption,
)
from flows.commands import Escalate, Outcome, OutcomeStatus, PlaceUpgrade
from flows.matching import Option
from flows.options import Choice, service_choice
from flows.pricing import Policy, is_upgrade
from flows.runtime import Step

CYCLE_ORDER = ("monthly", "quarterly", "semiannually", "annually", "biennially", "triennially")
NOT_OFFERED_TASK = "upgrade_not_offered"
# The buttons of the flow's own (messages_es/upgrade.toml [buttons] and [words]).
BUTTONS = ("confirm", "change", "cancel", "to_staff", "cancel_service")
# The refusals the customer is told in their own words ([refused]); any other is "other".
REFUSALS = (
    "not_an_upgrade",
    "cycle_not_sold",
    "cycle_fixed",
    "service_not_active",
    "not_offered",
    "no_payment_method",
)


def _button(button: str) -> Choice:
    assert button in BUTTONS
    return Choice(button, button, f"upgrade.buttons.{button}", f"upgrade.words.{button}")


_HUMAN = Choice("human", "go_human", "menu.options.human.title", "menu.options.human.keywords")
_MENU = Choice("menu", "go_menu", "common.back_to_menu", "words.menu")


class Upgrade(Step):
    FLOW = "upgrade"
    STATES: ClassVar[tuple[str, ...]] = (
        "start",
        "service",
        "category",
        "package",
        "cycle",
        "quote",
        "placing",
        "placed",
        "pending",
        "not_offered",
        "downgrade",
        "done",
    )
    TRANSITIONS: ClassVar[list[dict[str, Any]]] = [
        {"trigger": "pick_service", "source": "*", "dest": None, "after": "route"},
        {"trigger": "pick_category", "source": "*", "dest": None, "after": "route"},
        {"trigger": "pick_package", "source": "*", "dest": None, "after": "route"},
        {"trigger": "pick_cycle", "source": "*", "dest": "quote"},
        {"trigger": "confirm", "source": "quote", "dest": "placing", "before": "place"},
        {"trigger": "confirm", "source": "placing", "dest": None},  # asked twice: once
        {"trigger": "change", "source": "*", "dest": None, "after": "change_package"},
        {"trigger": "cancel", "source": "*", "dest": None, "after": "cancel_upgrade"},
        {"trigger": "to_staff", "source": "not_offered", "dest": "done", "before": "hand_over"},
        {"trigger": "cancel_service", "source": "*", "dest": None, "after": "to_cancellation"},
        {"trigger": "go_human", "source": "*", "dest": None, "after": "to_human"},
        {"trigger": "go_menu", "source": "*", "dest": None, "after": "leave"},
        {"trigger": "show", "source": "*", "dest": "service"},
        {"trigger": "show_category", "source": "*", "dest": "category"},
        {"trigger": "show_package", "source": "*", "dest": "package"},
        {"trigger": "show_cycle", "source": "*", "dest": "cycle"},
        {"trigger": "show_pending", "source": "*", "dest": "pending"},
        {"trigger": "show_not_offered", "source": "*", "dest": "not_offered"},
        {"trigger": "show_downgrade", "source": "*", "dest": "downgrade"},
        {"trigger": "show_done", "source": "*", "dest": "done"},
    ]

    # Read once per step, when the state needs them.
    _services: list[Service] | None = None
    _options: list[UpgradeOption] | None = None
    _pending: PendingUpgrade | None = None

    # -- data ---------------------------------------------------------------------------
    async def services(self) -> list[Service]:
        """The customer's services that can be upgraded: active ones."""
        if self._services is None:
            assert self.client is not None
            found = await self.deps.billing.list_services(self.client.id)
            self._services = [s for s in found if s.status == "active"]
        return self._services

    async def service(self) -> Service | None:
        wanted = self.ctx.get("service")
        return next((s for s in await self.services() if s.id == wanted), None)

    async def options(self) -> list[UpgradeOption]:
        if self._options is None:
            service = await self.service()
            assert self.client is not None and service is not None
            try:
                self._options = await self.deps.billing.upgrade_options(self.client.id, service.id)
            except BillingRefused:
                self._options = []
        return self._options

    async def category(self) -> UpgradeOption | None:
        wanted = self.ctx.get("category")
        return next((o for o in await self.options() if o.category.id == wanted), None)

    async def product(self) -> Product | None:
        wanted = self.ctx.get("product")
        for option in await self.options():
            for product in option.products:
                if product.id == wanted:
                    return product
        return None

    async def load(self) -> None:
        """What this state's options are made of (choices() reads them)."""
        if self.client is None:
            return
        await self.services()
        later = ("category", "package", "cycle", "quote", "not_offered")
        if self.state in later and await self.service() is not None:
            await self.options()

    # -- understanding ----------------------------------------------------------------
    async def understand(self, *, numbered: bool = True) -> bool:
        await self.load()
        return await super().understand(numbered=numbered)

    def choices(self) -> list[Choice]:
        match self.state:
            case "service":
                return [*self._service_choices(), _MENU]
            case "category":
                return [*self._category_choices(), _MENU]
            case "package":
                return [*self._package_choices(), _MENU]
            case "cycle":
                return [*self._cycle_choices(), _button("change"), _MENU]
            case "quote":
                return [_button("confirm"), _button("change"), _button("cancel")]
            case "placing":
                return [_button("confirm"), _MENU]
            case "not_offered":
                return [_button("to_staff"), _button("change"), _MENU]
            case "downgrade":
                return [_button("cancel_service"), _HUMAN, _MENU]
            case "pending" | "placed" | "done":
                return [_HUMAN, _MENU]
        return []

    def _service_choices(self) -> list[Choice]:
        return [
            service_choice(s, "pick_service", clears=("category", "product"))
            for s in self._services or []
        ]

    def _category_choices(self) -> list[Choice]:
        return [
            Choice.of(
                f"cat:{o.category.id}",
                "pick_category",
                o.category.name,
                sets=(("category", o.category.id), ("product", None)),
            )
            for o in self._options or []
        ]

    def _package_choices(self) -> list[Choice]:
        option = next(
            (o for o in self._options or [] if o.category.id == self.ctx.get("category")), None
        )
        if option is None:
            return []
        return [
            Choice.of(
                f"pkg:{p.id}",
                "pick_package",
                p.name,
                description=self._price_line(p),
                sets=(("product", p.id),),
            )
            for p in option.products
        ]

    def _cycle_choices(self) -> list[Choice]:
        product = self._chosen_product()
        if product is None:
            return []
        return [
            Choice.of(
                f"cyc:{cycle}",
                "pick_cycle",
                self.t(f"upgrade.cycle.{cycle}").capitalize(),
                description=self._money(product.prices[cycle])
                + " "
                + self.t(f"upgrade.per.{cycle}"),
                words=self.deps.catalog.words(f"upgrade.cycle_words.{cycle}"),
                sets=(("cycle", cycle),),
            )
            for cycle in self._cycles(product)
        ]

    def _chosen_product(self) -> Product | None:
        for option in self._options or []:
            for product in option.products:
                if product.id == self.ctx.get("product"):
                    return product
        return None

    def _cycles(self, product: Product) -> list[str]:
        """The periods the package is sold in; under pro-rata only the service's own."""
        cycles = [c for c in CYCLE_ORDER if c in product.prices]
        if self.deps.upgrade_policy is Policy.PRORATA:
            current = self._current_cycle()
            return [c for c in cycles if c == current]
        return cycles

    def _current_cycle(self) -> str | None:
        wanted = self.ctx.get("service")
        return next((s.billing_cycle for s in self._services or [] if s.id == wanted), None)

    def _price_line(self, product: Product) -> str:
        """The package's price for the service's cycle, else from its cheapest period."""
        cycle = self._current_cycle()
        if cycle is not None and cycle in product.prices:
            return self._price(product, cycle)
        sold = [c for c in CYCLE_ORDER if c in product.prices]
        if not sold:
            return ""
        cheapest = min(sold, key=lambda c: product.prices[c])
        return self.t("upgrade.package_price_other", price=self._price(product, cheapest))

    def _price(self, product: Product, cycle: str) -> str:
        """ "$ 150,00 por año" """
        price = self._money(product.prices[cycle])
        return self.t("upgrade.package_price", price=price, per=self.t(f"upgrade.per.{cycle}"))

    def _money(self, amount: Decimal) -> str:
        return self.t("account.money", amount=local_amount(amount))

    # -- moving -------------------------------------------------------------------------
    async def route(self) -> None:
        """Go to the first step the customer has not answered yet."""
        if self.client is None:
            self.say("upgrade.not_identified", panel_url=self.deps.panel_details_url)
            self.leave()
            return
        services = await self.services()
        if not services:
            self.say("upgrade.no_services")
            await self.trigger("show_done")
            return
        service = await self.service()
        if service is None:
            if len(services) == 1:
                self.ctx["service"] = services[0].id
                service = services[0]
                self.say("upgrade.one_service", service=service.label, product=service.product_name)
            else:
                await self.trigger("show")
                return
        pending = await self.deps.billing.pending_upgrade(self.client.id, service.id)
        if pending is not None:
            self._pending = pending
            await self.trigger("show_pending")
            return
        options = await self.options()
        if not options:
            self.say("upgrade.no_options", service=service.label)
            await self.trigger("show_done")
            return
        if self.ctx.get("category") is None and self.ctx.get("product") is None:
            if len(options) == 1:
                self.ctx["category"] = options[0].category.id
            else:
                await self.trigger("show_category")
                return
        if self.ctx.get("product") is None:
            await self.trigger("show_package")
            return
        product = await self.product()
        if product is None:
            await self.trigger("show_package")
            return
        cycles = self._cycles(product)
        if self.deps.upgrade_policy is Policy.PRORATA and cycles:
            cycle = cycles[0]
            name = self.t(f"upgrade.cycle.{cycle}")
            self.say("upgrade.prorata_cycle", product=product.name, cycle=name)
        if len(cycles) == 1:
            self.ctx["cycle"] = cycles[0]
            await self.trigger("pick_cycle")
            return
        await self.trigger("show_cycle")

    async def change_package(self) -> None:
        for stale in ("product", "cycle", "wanted", "downgrade"):
            self.ctx[stale] = None
        await self.load()
        if len(await self.options()) > 1:
            self.ctx["category"] = None
        await self.route()

    async def cancel_upgrade(self) -> None:
        self.say("common.cancelled")
        self.leave()

    def to_human(self) -> None:
        self.goto("menu", "handed_over")

    def to_cancellation(self) -> None:
        self.goto("cancel", "start")

    async def back(self) -> None:
        previous = {
            "category": "show",
            "package": "show_category",
            "cycle": "show_package",
            "quote": "show_package",
            "not_offered": "show_package",
        }
        trigger = previous.get(self.state)
        if trigger is None:
            self.leave()
            return
        await self.load()
        await self.trigger(trigger)

    # -- the states ---------------------------------------------------------------------
    async def render_start(self) -> None:
        """Entered from the menu or from text: what the message names is taken as
        answered, then the first open question."""
        if self.client is not None:
            await self._named_in_text()
        if self.ctx.get("downgrade"):
            await self.trigger("show_downgrade")
            return
        if self.ctx.get("wanted") and await self.service() is not None:
            await self.trigger("show_not_offered")
            return
        await self.route()

    async def render_service(self) -> None:
        await self.services()
        self.send(self.prompt(self.t("upgrade.pick_service"), self.choices()))

    async def render_category(self) -> None:
        service = await self.service()
        assert service is not None
        await self.options()
        body = self.t("upgrade.pick_category", service=service.label)
        self.send(self.prompt(body, self.choices()))

    async def render_package(self) -> None:
        service, option = await self.service(), await self.category()
        if service is None or option is None:
            await self.route()
            return
        body = self.t("upgrade.pick_package", category=option.category.name, service=service.label)
        self.send(self.prompt(body, self.choices(), as_list=True))

    async def render_cycle(self) -> None:
        product = await self.product()
        assert product is not None
        body = self.t("upgrade.pick_cycle", product=product.name)
        self.send(self.prompt(body, self.choices(), as_list=True))

    async def render_quote(self) -> None:
        assert self.client is not None
        service, product = await self.service(), await self.product()
        cycle = self.ctx.get("cycle")
        if service is None or product is None or cycle not in product.prices:
            await self.route()
            return
        today = self.deps.today()
        try:
            quote = await self.deps.billing.quote_upgrade(
                self.client.id, service.id, product.id, str(cycle), today=today
            )
        except BillingRefused as e:
            self._refused(e.reason, service, product)
            await self.trigger("show_done")
            return
        self.ctx["quoted_on"] = today.isoformat()
        self.forget_key("place")  # a new quote: a confirmation of it is a new order
        self.key("place")
        cycle = quote.cycle
        values = {
            "service": service.label,
            "product": product.name,
            "cycle": self.t(f"upgrade.cycle.{cycle}"),
            "per": self.t(f"upgrade.per.{cycle}"),
            "new_price": self._money(product.prices[cycle]),
            "paid": self._money(service.amount),
            "amount": self._money(quote.amount),
            "next_due": local_date(quote.next_due),
        }
        if quote.policy is Policy.PRORATA:
            self.say(
                "upgrade.quote_prorata",
                days_left=quote.days_left,
                days_in_cycle=quote.days_in_cycle,
                **values,
            )
        else:
            self.say("upgrade.quote_difference", **values)
        self.send(self.prompt(self.t("upgrade.confirm_question"), self.choices()))

    def place(self) -> None:
        assert self.client is not None
        quoted = self.ctx.get("quoted_on")
        self.kept["placing"] = {"service": self.ctx.get("service"), "key": self.key("place")}
        self.command(
            PlaceUpgrade(
                key=self.key("place"),
                client_id=self.client.id,
                service_id=str(self.ctx["service"]),
                product_id=str(self.ctx["product"]),
                cycle=str(self.ctx["cycle"]),
                today=date.fromisoformat(quoted) if quoted else self.deps.today(),
            )
        )

    async def render_placing(self) -> None:
        self.say("upgrade.placing")

    async def render_placed(self) -> None:
        self.send(self.prompt(self.t("upgrade.after"), self.choices()))

    async def render_pending(self) -> None:
        pending = self._pending
        if pending is None:
            service = await self.service()
            assert self.client is not None and service is not None
            pending = await self.deps.billing.pending_upgrade(self.client.id, service.id)
        if pending is None:
            await self.route()
            return
        label = next((s.label for s in await self.services() if s.id == pending.service_id), "")
        self.say(
            "upgrade.pending",
            service=label,
            product=pending.product_name,
            invoice=pending.invoice_id,
            amount=self._money(pending.total),
            url=pending.invoice_url,
        )
        self.send(self.prompt(self.t("upgrade.after"), self.choices()))

    async def render_not_offered(self) -> None:
        service = await self.service()
        wanted = self.ctx.get("wanted") or {}
        assert service is not None
        body = self.t("upgrade.not_offered", product=wanted.get("name", ""), service=service.label)
        self.send(self.prompt(body, self.choices()))

    def hand_over(self) -> None:
        assert self.client is not None
        wanted = self.ctx.get("wanted") or {}
        manager = self.client.account_manager
        label = next((s.label for s in self._services or [] if s.id == self.ctx.get("service")), "")
        self.command(
            Escalate(
                NOT_OFFERED_TASK,
                f"Pasar {label} al plan {wanted.get('name')} (no es automático)",
                {
                    "service_id": self.ctx.get("service"),
                    "service": label,
                    "wanted_product_id": wanted.get("id"),
                    "wanted_product": wanted.get("name"),
                    "account_manager": manager,
                },
                key=self.key("staff"),
            )
        )
        who = (
            self.t("upgrade.manager_named", name=manager)
            if manager
            else self.t("upgrade.manager_team")
        )
        self.say("upgrade.to_staff", service=label, product=wanted.get("name", ""), manager=who)

    async def render_downgrade(self) -> None:
        named = self.ctx.get("downgrade") or {}
        if isinstance(named, dict) and named.get("product"):
            self.say("upgrade.downgrade_named", product=named["product"], service=named["service"])
        self.say("faq.downgrade.answer")
        self.send(self.prompt(self.t("upgrade.downgrade_ask"), self.choices()))

    async def render_done(self) -> None:
        self.send(self.prompt(self.t("upgrade.after"), self.choices()))

    # -- what the message already says ------------------------------------------------
    async def _named_in_text(self) -> None:
        """A service and/or a package named in the message that brought the customer
        here ("quiero pasar radiolaura a Radio Plus"): the service chosen; an offered
        package chosen with its category; a dearer one not offered remembered for the
        account executive; a cheaper one (or the same) is a downgrade."""
        text = self.inbound.text
        if not text:
            return
        services = await self.services()
        if len(services) > 1:
            options = [Option(s.id, (s.label, *_stems(s.label))) for s in services]
            match = self.deps.matcher.match(text, options, numbered=0)
            if match.ok:
                self.ctx["service"] = match.key
        service = await self.service() if self.ctx.get("service") else None
        if service is None and len(services) == 1:
            service = services[0]
        if service is None:
            return
        assert self.client is not None
        products = await self.deps.billing.products_for(self.client.id)
        options = [Option(p.id, (p.name,)) for p in products]
        match = self.deps.matcher.match(text, options, numbered=0)
        product = next((p for p in products if p.id == match.key), None)
        if product is None:
            return
        self.ctx["service"] = service.id
        for option in await self.options():
            if any(p.id == product.id for p in option.products):
                self.ctx["category"] = option.category.id
                self.ctx["product"] = product.id
                return
        if product.id != service.product_id and is_upgrade(
            service.amount, service.billing_cycle, product.prices
        ):
            self.ctx["wanted"] = {"id": product.id, "name": product.name}
        else:
            self.ctx["downgrade"] = {"product": product.name, "service": service.label}

    # -- outcomes -----------------------------------------------------------------------
    async def on_outcome(self, outcome: Outcome) -> None:
        placing = self.kept.pop("placing", None) or {}
        services = await self.services() if self.client is not None else []
        service = next((s for s in services if s.id == placing.get("service")), None)
        label = service.label if service else ""
        data = outcome.data
        product = str(data.get("product_name") or "")
        match outcome.status:
            case OutcomeStatus.DONE if data.get("applied"):
                self.say("upgrade.applied_now", service=label, product=product)
            case OutcomeStatus.DONE:
                self.kept["unpaid"] = {"service": placing.get("service"), "label": label}
                self.say(
                    "upgrade.placed",
                    invoice=data.get("invoice_id"),
                    amount=self._money(Decimal(str(data.get("total") or "0"))),
                    url=data.get("invoice_url"),
                    service=label,
                    product=product,
                )
            case OutcomeStatus.REFUSED if outcome.reason == "upgrade_pending":
                self._pending = None
                if self.here:
                    await self.trigger("show_pending")
                    return
            case OutcomeStatus.REFUSED:
                self._refused(outcome.reason or "", service, None)
            case OutcomeStatus.UNKNOWN:
                self.say("upgrade.refused.unknown")
            case OutcomeStatus.UNAVAILABLE:
                self.say("upgrade.refused.unavailable")
        if self.here and self.state == "placing":
            await self.trigger("show_done")

    def _refused(self, reason: str, service: Service | None, product: Product | None) -> None:
        """The billing system's no, in words; nothing was generated."""
        reason = reason if reason in REFUSALS else "other"
        # Every refusal may name the service and the package; each says what it needs.
        self.say(
            f"upgrade.refused.{reason}",
            service=service.label if service else "",
            product=product.name if product else "",
        )

    async def on_expired(self) -> None:
        """The session ran out: an upgrade not confirmed is dropped (said so); one
        ordered and still unpaid stays, and its invoice is shown again."""
        if self.state in ("service", "category", "package", "cycle", "quote"):
            self.say("upgrade.expired_session")
        unpaid = self.kept.get("unpaid")
        if not isinstance(unpaid, dict) or self.client is None:
            return
        pending = await self.deps.billing.pending_upgrade(self.client.id, str(unpaid["service"]))
        if pending is None:
            self.kept.pop("unpaid", None)  # paid, or voided: nothing to remind
            return
        self.say(
            "upgrade.pending_short",
            service=unpaid.get("label", ""),
            product=pending.product_name,
            invoice=pending.invoice_id,
            amount=self._money(pending.total),
            url=pending.invoice_url,
        )


def _stems(label: str) -> tuple[str, ...]:
    """What a customer calls a service labelled "radiolaura.com.ar": "radiolaura"."""
    stem = label.split(".", 1)[0].strip()
    return (stem,) if stem and stem != label else ()
