"""The conversation without a server: flows.conversation.handle on the main menu, the
frequent questions, alerts and the hand-over, with in-memory billing and alerts.

Expected texts come from the catalog, never written here; every reply must be sendable
(flows.outbound.limit_violations is empty).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from flows.alerts import ALERT_TYPES, SECURITY, SWITCHABLE, Preferences, catalog_key
from flows.billing import Client, ClientLookup, Domain, Found, Service
from flows.catalog import default_catalog
from flows.commands import BackToBot
from flows.conversation import handle
from flows.matching import Matcher
from flows.menu import FAQ_TOPICS
from flows.outbound import Buttons, ListMessage, Message, Text, limit_violations
from flows.runtime import (
    ConversationView,
    Deps,
    Escalate,
    Identity,
    IdentityStatus,
    Inbound,
    InboundKind,
    NumberChanged,
    SetAlerts,
    Turn,
)

CATALOG = default_catalog()
PANEL = "https://panel.example/details"
PANEL_ROOT = "https://panel.example"
PLANS = "https://panel.example/cart.php"
TTL = timedelta(minutes=30)
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)

JUAN_WA = "5491155551234"
JUAN = Client("c1", "Juan Perez", "juan@example.com", verified=True, account_manager="ana")
IDENTIFIED = Identity(IdentityStatus.IDENTIFIED, JUAN)
UNKNOWN = Identity(IdentityStatus.UNKNOWN)
SEVERAL = Identity(IdentityStatus.SEVERAL)
NO_PHONE = Identity(IdentityStatus.NO_PHONE)

MAIN_IDS = ["upgrade", "transfer", "cancel", "account", "alerts", "faq", "human"]
FAQ_IDS = [f"faq:{t}" for t in FAQ_TOPICS] + ["menu"]
GIBBERISH = "xqzv jjkk"


class FakeBilling:
    """flows.billing.Billing over a dict: phone → client ids."""

    def __init__(self, clients: Sequence[Client], phones: dict[str, list[str]]) -> None:
        self.clients = {c.id: c for c in clients}
        self.phones = phones

    async def find_client_by_phone(self, wa_id: str) -> ClientLookup:
        ids = self.phones.get(wa_id, [])
        if len(ids) > 1:
            return ClientLookup(Found.SEVERAL)
        if ids:
            return ClientLookup(Found.ONE, self.clients[ids[0]])
        return ClientLookup(Found.NONE)

    async def get_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    async def list_services(self, client_id: str) -> list[Service]:
        return []

    async def list_domains(self, client_id: str) -> list[Domain]:
        return []


class FakeAlerts:
    """Alert switches in memory: the clients with every alert off, and alert types off."""

    def __init__(self, disabled: Sequence[str] = (), types_off: Sequence[str] = ()) -> None:
        self.disabled = set(disabled)
        self.types_off = frozenset(types_off)

    async def alert_preferences(self, client_id: str) -> Preferences:
        return Preferences(client_id not in self.disabled, self.types_off)


def make_deps(alerts: FakeAlerts | None = None) -> Deps:
    return Deps(
        catalog=CATALOG,
        matcher=Matcher(CATALOG.words("words.negations")),
        billing=FakeBilling([JUAN], {JUAN_WA: [JUAN.id]}),
        alerts=alerts or FakeAlerts(),
        panel_details_url=PANEL,
        session_ttl=TTL,
        panel_url=PANEL_ROOT,
        plans_url=PLANS,
        # Monday noon: inside the default business hours (the hand-over says "soon").
        clock=lambda: NOW,
    )


def text_in(text: str) -> Inbound:
    return Inbound(wamid="wamid.IN", kind=InboundKind.TEXT, type="text", timestamp=NOW, text=text)


def tap(choice_id: str, title: str = "") -> Inbound:
    return Inbound(
        wamid="wamid.IN",
        kind=InboundKind.CHOICE,
        type="interactive",
        timestamp=NOW,
        text=title,
        choice_id=choice_id,
    )


async def send(
    inbound: Inbound,
    *,
    state: str = "menu.main",
    context: dict[str, object] | None = None,
    identity: Identity = IDENTIFIED,
    updated_at: datetime | None = NOW - timedelta(minutes=1),
    deps: Deps | None = None,
    held: bool = False,
) -> Turn:
    conv = ConversationView(
        state=state,
        context=dict(context or {}),
        updated_at=updated_at,
        wa_id=JUAN_WA,
        profile_name="Juan",
        held_by_staff=held,
    )
    turn = await handle(conv, inbound, identity, deps or make_deps(), NOW)
    for reply in turn.replies:
        assert limit_violations(reply.message) == [], reply.message
        if reply.template is not None:
            assert limit_violations(reply.template) == []
    return turn


async def follow(turn: Turn, inbound: Inbound) -> Turn:
    """The next message of the same conversation, a moment later."""
    return await send(inbound, state=turn.state, context=turn.context)


def ids(message: Message) -> list[str]:
    if isinstance(message, Buttons):
        return [b.id for b in message.buttons]
    assert isinstance(message, ListMessage), message
    return [r.id for s in message.sections for r in s.rows]


def titles(message: Message) -> list[str]:
    if isinstance(message, Buttons):
        return [b.title for b in message.buttons]
    assert isinstance(message, ListMessage), message
    return [r.title for s in message.sections for r in s.rows]


def only(turn: Turn) -> Message:
    assert len(turn.replies) == 1, turn.replies
    return turn.replies[0].message


def text_of(message: Message) -> str:
    assert isinstance(message, Text), message
    return message.body


def assert_main_menu(message: Message) -> None:
    assert isinstance(message, ListMessage)
    assert message.body == CATALOG.text("menu.body", name="Juan")
    assert message.button == CATALOG.text("menu.button")
    assert ids(message) == MAIN_IDS
    assert titles(message) == [
        CATALOG.text("common.numbered", number=i, title=CATALOG.text(f"menu.options.{o}.title"))
        for i, o in enumerate(MAIN_IDS, 1)
    ]


def assert_faq_list(message: Message) -> None:
    assert isinstance(message, ListMessage)
    assert message.body == CATALOG.text("faq.body")
    assert message.button == CATALOG.text("faq.button")
    assert ids(message) == FAQ_IDS


def assert_faq_answer(turn: Turn, topic: str) -> None:
    if topic == "downgrade":
        # A customer asking to move down is answered by the upgrade conversation: the
        # help page's answer, and the ways forward (a cancellation, a person).
        assert turn.state == "upgrade.downgrade"
        answer, follow_up = (r.message for r in turn.replies)
        assert text_of(answer) == CATALOG.text("faq.downgrade.answer")
        assert isinstance(follow_up, Buttons)
        assert ids(follow_up) == ["cancel_service", "human", "menu"]
        return
    assert turn.state == "menu.faq_answer"
    answer, follow_up = (r.message for r in turn.replies)
    assert text_of(answer) == CATALOG.text(f"faq.{topic}.answer", panel_url=PANEL)
    assert isinstance(follow_up, Buttons)
    assert follow_up.body == CATALOG.text("faq.after_answer")
    assert ids(follow_up) == ["faq", "menu"]


# -- the main menu ---------------------------------------------------------------------


async def test_greeting_shows_the_main_menu() -> None:
    turn = await send(text_in("Hola"), state="menu.start", updated_at=None)
    assert turn.state == "menu.main"
    assert_main_menu(only(turn))
    assert turn.effects == []


@pytest.mark.parametrize("greeting", CATALOG.words("words.greetings"))
async def test_every_greeting_shows_the_main_menu(greeting: str) -> None:
    turn = await send(text_in(f"{greeting.capitalize()}!"), state="menu.start", updated_at=None)
    assert_main_menu(only(turn))


@pytest.mark.parametrize("state", ["menu.main", "menu.ended"])
async def test_a_greeting_later_shows_the_menu_again(state: str) -> None:
    turn = await send(text_in("buenas tardes"), state=state)
    assert turn.state == "menu.main"
    assert_main_menu(only(turn))


@pytest.mark.parametrize("identity", [UNKNOWN, NO_PHONE], ids=["unknown", "no_phone"])
async def test_an_unknown_number_gets_the_panel_link_and_only_faq_and_a_person(
    identity: Identity,
) -> None:
    turn = await send(text_in("hola"), state="menu.start", identity=identity, updated_at=None)
    message = only(turn)
    assert isinstance(message, Buttons)
    assert message.body == CATALOG.text("identity.unknown", panel_url=PANEL)
    assert ids(message) == ["faq", "human"]
    assert turn.state == "menu.main"


async def test_a_number_on_several_accounts_is_not_identified() -> None:
    turn = await send(text_in("hola"), state="menu.start", identity=SEVERAL, updated_at=None)
    message = only(turn)
    assert isinstance(message, Buttons)
    assert message.body == CATALOG.text("identity.several")
    assert ids(message) == ["faq", "human"]


@pytest.mark.parametrize("typed", ["alertas", "mis alertas", "4", "subir de plan"])
async def test_an_unknown_number_cannot_reach_account_options(typed: str) -> None:
    turn = await send(text_in(typed), identity=UNKNOWN)
    assert turn.state == "menu.main" or turn.state.startswith("menu.")
    assert not any(isinstance(e, SetAlerts) for e in turn.effects)
    tapped = await send(tap("alerts"), identity=UNKNOWN)
    assert tapped.state != "menu.alerts"


# -- frequent questions ----------------------------------------------------------------


async def test_tapping_faq_shows_the_questions() -> None:
    turn = await send(tap("faq", "1. Preguntas frecuentes"))
    assert turn.state == "menu.faq"
    assert_faq_list(only(turn))


@pytest.mark.parametrize("topic", FAQ_TOPICS)
async def test_a_question_row_gives_its_answer_and_what_next(topic: str) -> None:
    turn = await send(tap(f"faq:{topic}"), state="menu.faq")
    assert_faq_answer(turn, topic)


async def test_the_downgrade_answer() -> None:
    turn = await send(tap("faq:downgrade", "1. Bajar de plan"), state="menu.faq")
    assert_faq_answer(turn, "downgrade")


async def test_a_question_chosen_by_its_number() -> None:
    turn = await send(text_in("2"), state="menu.faq")
    assert_faq_answer(turn, FAQ_TOPICS[1])


async def test_another_question_after_an_answer() -> None:
    answered = await send(tap("faq:backups"), state="menu.faq")
    turn = await follow(answered, tap("faq", CATALOG.text("faq.another")))
    assert_faq_list(only(turn))


@pytest.mark.parametrize("typed", ["preguntas frecuntes", "quiero ver las preguntas frecuentes"])
async def test_typed_faq_at_the_main_menu_shows_the_questions(typed: str) -> None:
    turn = await send(text_in(typed))
    assert turn.state == "menu.faq"
    assert_faq_list(only(turn))


async def test_typed_bajar_de_plan_at_the_main_menu_answers_directly() -> None:
    turn = await send(text_in("bajar de plan"))
    assert_faq_answer(turn, "downgrade")


async def test_a_hidden_question_is_not_numbered() -> None:
    # Seven options are shown; an eighth number is no choice even if hidden ones exist.
    turn = await send(text_in("8"))
    assert turn.state != "menu.faq_answer"
    assert text_of(turn.replies[0].message) == CATALOG.text("ladder.not_understood")


@pytest.mark.parametrize("topic", ["downgrade", "backups", "phone"])
async def test_a_question_title_typed_at_the_main_menu_answers_it(topic: str) -> None:
    turn = await send(text_in(CATALOG.text(f"faq.{topic}.title")))
    assert_faq_answer(turn, topic)


@pytest.mark.parametrize("topic", ["upgrade_price", "domains", "cancellation"])
async def test_a_question_named_in_full_wins_over_a_shorter_option_on_screen(topic: str) -> None:
    # "Costo de un upgrade" holds the visible "upgrade"; "Baja de dominios" the visible
    # "baja": the longer phrase is what the customer means (issue 10: "baja de dominios"
    # typed must answer the domains question).
    turn = await send(text_in(CATALOG.text(f"faq.{topic}.title")))
    assert_faq_answer(turn, topic)


async def test_the_title_of_a_visible_option_typed_selects_it() -> None:
    # "Transferir servicio" is the row's own title; faq.transfer.keywords also lists it.
    turn = await send(text_in(CATALOG.text("menu.options.transfer.title")))
    assert turn.state.startswith("transfer.")


# -- global words ----------------------------------------------------------------------

MID_FLOW = ["menu.faq", "menu.faq_answer", "menu.alerts", "menu.offer_human"]


@pytest.mark.parametrize("state", [*MID_FLOW, "menu.handed_over", "menu.ended"])
@pytest.mark.parametrize("typed", ["menu", "Menú", "volver al menu"])
async def test_menu_anywhere_shows_the_main_menu(state: str, typed: str) -> None:
    turn = await send(text_in(typed), state=state, context={"faq": "backups", "soon": "upgrade"})
    assert turn.state == "menu.main"
    assert_main_menu(only(turn))


@pytest.mark.parametrize("state", ["menu.main", *MID_FLOW])
async def test_salir_says_goodbye(state: str) -> None:
    turn = await send(text_in("salir"), state=state)
    assert turn.state == "menu.ended"
    assert text_of(only(turn)) == CATALOG.text("menu.goodbye")


async def test_no_quiero_salir_is_not_leaving() -> None:
    turn = await send(text_in("no quiero salir"), state="menu.faq")
    assert turn.state != "menu.ended"
    assert all(
        not isinstance(r.message, Text) or r.message.body != CATALOG.text("menu.goodbye")
        for r in turn.replies
    )


@pytest.mark.parametrize("state", ["menu.main", *MID_FLOW])
@pytest.mark.parametrize("typed", ["asesor", "quiero hablar con una persona", "Humano!", "AGENTE"])
async def test_asking_for_a_person_hands_over(state: str, typed: str) -> None:
    turn = await send(text_in(typed), state=state)
    assert turn.state == "menu.handed_over"
    assert [type(e) for e in turn.effects] == [Escalate]
    # Plain text: only a typed "menu" brings the bot back.
    assert text_of(only(turn)) == CATALOG.text("menu.handed_over")


@pytest.mark.parametrize("typed", ["no quiero hablar con una persona", "no quiero un asesor"])
async def test_refusing_a_person_does_not_hand_over(typed: str) -> None:
    turn = await send(text_in(typed), state="menu.faq")
    assert turn.state != "menu.handed_over"
    assert turn.effects == []


async def test_tapping_human_hands_over() -> None:
    turn = await send(tap("human"))
    assert turn.state == "menu.handed_over"
    assert [type(e) for e in turn.effects] == [Escalate]


@pytest.mark.parametrize(
    "typed", ["hola? alguien?", "volver al menu", "menu por favor", "asesor", "1", "😀"]
)
async def test_while_a_person_has_it_the_bot_is_silent(typed: str) -> None:
    turn = await send(text_in(typed), state="menu.handed_over", held=True)
    assert turn.state == "menu.handed_over"
    assert turn.replies == []
    assert turn.effects == []  # not escalated a second time either


@pytest.mark.parametrize("typed", ["menu", "Menú", " MENU! "])
async def test_only_menu_takes_it_back_from_the_person(typed: str) -> None:
    turn = await send(text_in(typed), state="menu.handed_over", held=True)
    assert turn.state == "menu.main"
    assert turn.effects == [BackToBot()]
    said, menu = (r.message for r in turn.replies)
    assert text_of(said) == CATALOG.text("handover.back_to_menu")
    assert_main_menu(menu)


async def test_handed_over_but_held_by_nobody_the_bot_answers() -> None:
    turn = await send(text_in("hola"), state="menu.handed_over", held=False)
    assert turn.replies != []
    assert turn.state.startswith("menu.") and turn.state != "menu.handed_over"


# -- the ladder ------------------------------------------------------------------------


async def test_the_ladder_asks_again_then_shows_the_menu_then_offers_a_person() -> None:
    first = await send(text_in(GIBBERISH), state="menu.faq")
    assert first.state == "menu.faq"
    said, again = (r.message for r in first.replies)
    assert text_of(said) == CATALOG.text("ladder.not_understood")
    assert_faq_list(again)

    second = await follow(first, text_in(GIBBERISH))
    assert second.state == "menu.main"
    said, menu = (r.message for r in second.replies)
    assert text_of(said) == CATALOG.text("ladder.not_understood_menu")
    # The menu's options, under a short line: not the greeting again.
    assert isinstance(menu, ListMessage)
    assert menu.body == CATALOG.text("menu.brief")
    assert ids(menu) == MAIN_IDS

    third = await follow(second, text_in(GIBBERISH))
    assert third.state == "menu.offer_human"
    offer = only(third)
    assert isinstance(offer, Buttons)
    assert offer.body == CATALOG.text("ladder.offer_human")
    assert "human" in ids(offer)
    # The ladder ran out: staff see it in their queue.
    assert [(type(e), getattr(e, "reason", None)) for e in third.effects] == [
        (Escalate, "not_understood")
    ]

    # The offer is the top of the ladder: the next miss starts it over.
    fourth = await follow(third, text_in(GIBBERISH))
    assert text_of(fourth.replies[0].message) == CATALOG.text("ladder.not_understood")

    accepted = await follow(third, tap("human"))
    assert accepted.state == "menu.handed_over"
    assert [type(e) for e in accepted.effects] == [Escalate]


async def test_an_understood_message_resets_the_ladder() -> None:
    first = await send(text_in(GIBBERISH), state="menu.faq")
    understood = await follow(first, text_in("3"))
    assert_faq_answer(understood, FAQ_TOPICS[2])
    back = await follow(understood, tap("faq"))
    again = await follow(back, text_in(GIBBERISH))
    # First rung again, not the second.
    assert text_of(again.replies[0].message) == CATALOG.text("ladder.not_understood")
    assert again.state == "menu.faq"


# -- session expiry --------------------------------------------------------------------


async def test_an_expired_conversation_starts_over() -> None:
    turn = await send(
        text_in(GIBBERISH),
        state="menu.faq",
        context={"misses": 2},
        updated_at=NOW - TTL - timedelta(minutes=1),
    )
    expired, menu = (r.message for r in turn.replies)
    assert text_of(expired) == CATALOG.text("common.session_expired")
    # Handled from the start: no ladder, the menu.
    assert_main_menu(menu)
    assert turn.state == "menu.main"
    assert "misses" not in turn.context


async def test_an_expired_conversation_still_understands_the_message() -> None:
    turn = await send(
        text_in("preguntas frecuentes"), state="menu.faq_answer", updated_at=NOW - 2 * TTL
    )
    expired, questions = (r.message for r in turn.replies)
    assert text_of(expired) == CATALOG.text("common.session_expired")
    assert_faq_list(questions)


async def test_a_conversation_within_the_ttl_does_not_expire() -> None:
    turn = await send(text_in("2"), state="menu.faq", updated_at=NOW - TTL + timedelta(minutes=1))
    assert_faq_answer(turn, FAQ_TOPICS[1])


@pytest.mark.parametrize("state", ["menu.main", "menu.handed_over", "menu.ended"])
async def test_a_conversation_at_rest_does_not_expire(state: str) -> None:
    turn = await send(text_in("menu"), state=state, updated_at=NOW - timedelta(days=3))
    texts = [r.message.body for r in turn.replies if isinstance(r.message, Text)]
    assert CATALOG.text("common.session_expired") not in texts


async def test_a_number_after_expiry_does_not_pick_an_unseen_option() -> None:
    # The customer answers "2" to the question list still on their screen; the list has
    # expired and the main menu was not shown yet, so "2" cannot mean its second option.
    turn = await send(text_in("2"), state="menu.faq", updated_at=NOW - 2 * TTL)
    assert turn.state == "menu.main"
    assert_main_menu(turn.replies[-1].message)


# -- what the bot cannot read ----------------------------------------------------------


async def test_unsupported_messages_are_answered() -> None:
    sticker = Inbound(wamid="w", kind=InboundKind.UNSUPPORTED, type="sticker", timestamp=NOW)
    turn = await send(sticker, state="menu.faq", context={"misses": 1})
    assert text_of(only(turn)) == CATALOG.text("common.unsupported")
    assert turn.state == "menu.faq"
    assert turn.context == {"misses": 1}


async def test_a_reaction_gets_no_answer() -> None:
    reaction = Inbound(wamid="w", kind=InboundKind.REACTION, type="reaction", timestamp=NOW)
    turn = await send(reaction, state="menu.faq_answer", context={"faq": "backups"})
    assert turn.replies == []
    assert turn.effects == []
    assert turn.state == "menu.faq_answer"


@pytest.mark.parametrize("system_type", ["user_changed_number", "customer_changed_number"])
async def test_a_known_customer_changing_number(system_type: str) -> None:
    new_number = "5491166667777"
    notice = Inbound(
        wamid="w",
        kind=InboundKind.SYSTEM,
        type="system",
        timestamp=NOW,
        system_type=system_type,
        new_wa_id=new_number,
    )
    turn = await send(notice, state="menu.faq")
    assert turn.effects == [NumberChanged(JUAN_WA, new_number, JUAN.id)]
    assert text_of(only(turn)) == CATALOG.text("identity.number_changed", panel_url=PANEL)


async def test_an_unknown_number_changing_number_is_moved_without_a_word() -> None:
    notice = Inbound(
        wamid="w",
        kind=InboundKind.SYSTEM,
        type="system",
        timestamp=NOW,
        system_type="user_changed_number",
        new_wa_id="5491166667777",
    )
    turn = await send(notice, identity=UNKNOWN)
    assert turn.effects == [NumberChanged(JUAN_WA, "5491166667777", None)]
    assert turn.replies == []


# -- alerts ----------------------------------------------------------------------------
# Titles come from the catalog (each alert's `title`); what is checked is the rule: every
# alert shown with its state, the password alert always on, the right one switched.


def title(alert_type: str) -> str:
    return CATALOG.text(f"{catalog_key(alert_type)}.title")


def alert_lines(body: str) -> dict[str, str]:
    """Each alert's line of the "Mis alertas" text, by type."""
    lines = body.splitlines()
    found = {}
    for alert_type in ALERT_TYPES:
        [line] = [line for line in lines if f"{title(alert_type)}:" in line]
        found[alert_type] = line
    return found


def shown_on(body: str) -> set[str]:
    """The switchable alerts the text says are on."""
    lines = alert_lines(body)
    on = {t for t in SWITCHABLE if "desactivada" not in lines[t]}
    assert all(("desactivada" in lines[t]) != (t in on) for t in SWITCHABLE)
    return on


def assert_alerts_screen(message: Message, *, on: set[str]) -> None:
    assert isinstance(message, Buttons)
    assert shown_on(message.body) == on
    [security] = SECURITY
    line = alert_lines(message.body)[security]
    assert "siempre" in line and "seguridad" in line  # never off
    assert PANEL in message.body  # their phone is where alerts go
    expected = ["alerts:on" if not on else "alerts:off", "alerts:pick", "menu"]
    assert ids(message) == expected


async def switch(inbound: Inbound, alerts: FakeAlerts, state: str = "menu.alerts") -> Turn:
    return await send(inbound, state=state, deps=make_deps(alerts))


@pytest.mark.parametrize("enabled", [True, False])
async def test_alerts_show_each_alert_and_its_state(enabled: bool) -> None:
    deps = make_deps(FakeAlerts(disabled=() if enabled else [JUAN.id]))
    turn = await send(tap("alerts"), deps=deps)
    assert turn.state == "menu.alerts"
    message = only(turn)
    assert_alerts_screen(message, on=set(SWITCHABLE) if enabled else set())
    assert isinstance(message, Buttons)
    assert titles(message)[0] == CATALOG.text("alerts.turn_off" if enabled else "alerts.turn_on")


async def test_alerts_show_the_ones_switched_off() -> None:
    off = ["invoice.created", "domain.deleted"]
    turn = await send(tap("alerts"), deps=make_deps(FakeAlerts(types_off=off)))
    assert_alerts_screen(only(turn), on=set(SWITCHABLE) - set(off))


async def test_turning_alerts_off() -> None:
    turn = await switch(tap("alerts:off"), FakeAlerts())
    assert turn.effects == [SetAlerts(JUAN.id, False)]
    done, screen = (r.message for r in turn.replies)
    assert text_of(done) == CATALOG.text("alerts.now_off")
    assert_alerts_screen(screen, on=set())
    assert turn.state == "menu.alerts"


@pytest.mark.parametrize(
    "alerts",
    [FakeAlerts(disabled=[JUAN.id]), FakeAlerts(types_off=SWITCHABLE)],
    ids=["all off", "each off"],
)
async def test_turning_alerts_on(alerts: FakeAlerts) -> None:
    turn = await switch(tap("alerts:on"), alerts)
    assert turn.effects == [SetAlerts(JUAN.id, True)]
    done, screen = (r.message for r in turn.replies)
    assert text_of(done) == CATALOG.text("alerts.now_on")
    assert_alerts_screen(screen, on=set(SWITCHABLE))


async def test_all_on_typed_while_some_are_off_turns_them_all_on() -> None:
    turn = await switch(text_in("activar todas"), FakeAlerts(types_off=["invoice.paid"]))
    assert turn.effects == [SetAlerts(JUAN.id, True)]


@pytest.mark.parametrize("typed", ["desactivar", "desactivar todas", "1"])
async def test_typing_desactivar_turns_alerts_off(typed: str) -> None:
    turn = await send(text_in(typed), state="menu.alerts")
    assert turn.effects == [SetAlerts(JUAN.id, False)]


async def test_no_quiero_alertas_never_turns_them_on() -> None:
    deps = make_deps(FakeAlerts(disabled=[JUAN.id]))
    turn = await send(text_in("no quiero alertas"), state="menu.alerts", deps=deps)
    assert not any(isinstance(e, SetAlerts) and e.enabled for e in turn.effects)


def pick_rows(message: Message) -> list[tuple[str, str, str]]:
    assert isinstance(message, ListMessage)
    return [(r.id, r.title, r.description) for s in message.sections for r in s.rows]


@pytest.mark.parametrize("how", [tap("alerts:pick"), text_in("elegir cuales"), text_in("2")])
async def test_choosing_which_lists_the_switchable_alerts(how: Inbound) -> None:
    turn = await switch(how, FakeAlerts(types_off=["quote.created"]))
    assert turn.state == "menu.alerts_pick"
    message = only(turn)
    rows = pick_rows(message)
    assert [row_id for row_id, _, _ in rows] == [f"alert:{t}" for t in SWITCHABLE]
    assert len(rows) <= 10
    for (_, row_title, description), alert_type in zip(rows, SWITCHABLE, strict=True):
        assert len(row_title) <= 24
        assert title(alert_type) in row_title  # whole, never cut
        off = alert_type == "quote.created"
        assert description.startswith("Desactivada" if off else "Activada"), description
    # The password alert cannot be switched: not a row, and the text says why.
    assert all("password" not in row_id for row_id, _, _ in rows)
    assert isinstance(message, ListMessage)
    assert "clave" in message.body and "seguridad" in message.body


async def test_tapping_an_alert_switches_it_off_and_shows_the_state() -> None:
    turn = await switch(tap("alert:invoice.created"), FakeAlerts(), state="menu.alerts_pick")
    assert turn.effects == [SetAlerts(JUAN.id, False, "invoice.created")]
    said, screen = (r.message for r in turn.replies)
    assert text_of(said) == CATALOG.text("alerts.type_now_off", title=title("invoice.created"))
    assert_alerts_screen(screen, on=set(SWITCHABLE) - {"invoice.created"})
    assert turn.state == "menu.alerts"


async def test_tapping_an_alert_that_is_off_switches_it_on() -> None:
    alerts = FakeAlerts(types_off=["invoice.created", "invoice.paid"])
    turn = await switch(tap("alert:invoice.paid"), alerts, state="menu.alerts_pick")
    assert turn.effects == [SetAlerts(JUAN.id, True, "invoice.paid")]
    said, screen = (r.message for r in turn.replies)
    assert text_of(said) == CATALOG.text("alerts.type_now_on", title=title("invoice.paid"))
    assert_alerts_screen(screen, on=set(SWITCHABLE) - {"invoice.created"})


async def test_one_alert_on_while_all_are_off_is_the_only_one_on() -> None:
    alerts = FakeAlerts(disabled=[JUAN.id])
    turn = await switch(tap("alert:invoice.created"), alerts, state="menu.alerts_pick")
    assert turn.effects == [SetAlerts(JUAN.id, True, "invoice.created")]
    assert_alerts_screen(turn.replies[1].message, on={"invoice.created"})


@pytest.mark.parametrize(
    ("typed", "alert_type"),
    [
        ("facturas nuevs", "invoice.created"),  # a typo
        ("PRESUPUESTOS", "quote.created"),
        ("servicio dado de baja", "service.terminated"),
        ("3", SWITCHABLE[2]),  # its number on the list
    ],
)
async def test_an_alert_typed_on_the_list_switches(typed: str, alert_type: str) -> None:
    turn = await switch(text_in(typed), FakeAlerts(), state="menu.alerts_pick")
    assert turn.effects == [SetAlerts(JUAN.id, False, alert_type)]


@pytest.mark.parametrize("state", ["menu.alerts", "menu.alerts_pick"])
async def test_an_alert_typed_with_its_way_goes_that_way(state: str) -> None:
    alerts = FakeAlerts(types_off=["invoice.created"])
    # Already off: "desactivar" keeps it off rather than switching it on.
    turn = await switch(text_in("desactivar facturas nuevas"), alerts, state=state)
    assert turn.effects == [SetAlerts(JUAN.id, False, "invoice.created")]
    turn = await switch(text_in("activar facturas nuevas"), alerts, state=state)
    assert turn.effects == [SetAlerts(JUAN.id, True, "invoice.created")]
    # Naming one alert is not "all of them".
    turn = await switch(text_in("desactivar pagos recibidos"), alerts, state=state)
    assert turn.effects == [SetAlerts(JUAN.id, False, "invoice.paid")]


@pytest.mark.parametrize("state", ["menu.alerts", "menu.alerts_pick"])
async def test_the_password_alert_cannot_be_switched_off(state: str) -> None:
    [security] = SECURITY
    turn = await switch(text_in(f"desactivar {title(security)}"), FakeAlerts(), state=state)
    assert turn.effects == []
    said = text_of(only(turn))
    assert title(security) in said and "seguridad" in said and "no se puede" in said
    assert turn.state == state


async def test_back_from_the_list_is_the_alerts_screen() -> None:
    turn = await switch(text_in("volver"), FakeAlerts(), state="menu.alerts_pick")
    assert turn.state == "menu.alerts"
    assert_alerts_screen(only(turn), on=set(SWITCHABLE))


# -- "BAJA ALERTAS", anywhere ---------------------------------------------------------

STOP = [
    "BAJA ALERTAS",
    "STOP",
    "Stop.",
    "baja de alertas",
    "no quiero más avisos",
    "no quiero recibir más alertas",
    "No quiero recibir mas alertas por favor",
    "baja alertsa",  # typos
    "no qiero mas avisos",
    "no quiero recivir mas alertas",
    "no me manden mas avisos por aca",
    "No más alertas",
]
NOT_STOP = [
    "quiero dar de baja mi servicio",  # the cancellation
    "dar de baja",
    "mis alertas",
    "activar alertas",
    "quiero recibir alertas",
    "quiero más avisos",  # no "no"
    "no, quiero las alertas",  # "las", not "más"
    "el servidor de la radio hizo stop",  # "stop" inside a sentence
    "por que no me llegan mas avisos",
    "baja de dominios",
]
EVERY_STATE = ["menu.start", "menu.main", "menu.handed_over", "menu.ended", *MID_FLOW]


@pytest.mark.parametrize("state", EVERY_STATE)
@pytest.mark.parametrize("typed", STOP)
async def test_stop_anywhere_turns_the_alerts_off_and_stays(state: str, typed: str) -> None:
    context = {"faq": "backups", "soon": "upgrade"}
    # Even while a person has the conversation (an alert's footer says to reply it).
    held = state == "menu.handed_over"
    turn = await send(text_in(typed), state=state, context=context, held=held)
    assert turn.effects == [SetAlerts(JUAN.id, False)]
    said = text_of(only(turn))
    assert "desactivamos" in said
    assert "clave" in said and "seguridad" in said  # the password alert still comes
    assert "escriba *alertas*" in said  # and how to have them back
    assert turn.state == state and turn.context == context


@pytest.mark.parametrize("typed", NOT_STOP)
async def test_sentences_that_are_not_stop(typed: str) -> None:
    turn = await send(text_in(typed))
    assert SetAlerts(JUAN.id, False) not in turn.effects


async def test_quiero_dar_de_baja_mi_servicio_is_the_cancellation() -> None:
    turn = await send(text_in("quiero dar de baja mi servicio"))
    assert turn.effects == []  # not the alerts' BAJA
    assert turn.state.startswith("cancel.")


@pytest.mark.parametrize("identity", [UNKNOWN, NO_PHONE], ids=["unknown", "no_phone"])
async def test_stop_from_an_unknown_number_says_there_are_no_alerts(identity: Identity) -> None:
    turn = await send(text_in("BAJA ALERTAS"), identity=identity, state="menu.faq")
    assert turn.effects == []
    said = text_of(only(turn))
    assert "no le enviamos alertas" in said
    assert turn.state == "menu.faq"


async def test_stop_from_a_number_on_several_accounts_changes_nothing() -> None:
    turn = await send(text_in("STOP"), identity=SEVERAL)
    assert turn.effects == []
    assert "asesor" in text_of(only(turn))


# -- the conversations that act ---------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "flow"),
    [("quiero subir de plan", "upgrade"), ("cambio de titular", "transfer"),
     ("quiero cancelar mi servicio", "cancel"), ("3", "cancel")],
)  # fmt: skip
async def test_the_conversations_that_act_are_reached_by_typing(typed: str, flow: str) -> None:
    turn = await send(text_in(typed))
    assert turn.state.startswith(f"{flow}.")


async def test_no_quiero_dar_de_baja_is_not_a_cancellation() -> None:
    turn = await send(text_in("no quiero dar de baja"))
    assert not turn.state.startswith("cancel.")
