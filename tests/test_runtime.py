"""The flows runtime with test-only flows (tests/flows_for_tests.py), without a server:
switching flows, options from data (paged, fitted to WhatsApp's limits), messages
checked where they are built, literal input, expiry with a say, commands and outcomes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

import pytest

import tests.flows_for_tests
from flows.commands import (
    Notify,
    Outcome,
    OutcomeStatus,
    PlaceUpgrade,
    command_from,
    command_params,
    outcome_message,
    signal_message,
)
from flows.conversation import handle
from flows.options import PAGE_NEXT, PAGE_PREVIOUS, Choice, pages, shorten_titles
from flows.outbound import (
    BUTTON_TITLE_MAX,
    LIST_ROWS_MAX,
    ROW_TITLE_MAX,
    ListMessage,
    MessageLimitError,
    Template,
    Text,
    limit_violations,
)
from flows.runtime import ConversationView, Inbound, InboundKind, Step, Turn
from tests.flows_for_tests import CITIES, QUOTED_ON
from tests.test_flows_menu import CATALOG, IDENTIFIED, JUAN, JUAN_WA, NOW, make_deps, tap, text_in

CONVERSATION_ID = 41


async def send(
    inbound: Inbound,
    *,
    state: str,
    context: dict[str, Any] | None = None,
    updated_at: Any = NOW - timedelta(minutes=1),
) -> Turn:
    conv = ConversationView(
        state=state,
        context=dict(context or {}),
        updated_at=updated_at,
        wa_id=JUAN_WA,
        profile_name="Juan",
        id=CONVERSATION_ID,
    )
    turn = await handle(conv, inbound, IDENTIFIED, make_deps(), NOW)
    for reply in turn.replies:
        assert limit_violations(reply.message) == [], reply.message
    return turn


async def follow(turn: Turn, inbound: Inbound) -> Turn:
    return await send(inbound, state=turn.state, context=turn.context)


def texts(turn: Turn) -> list[str]:
    return [r.message.body for r in turn.replies]


def rows(turn: Turn) -> list[tuple[str, str]]:
    [message] = [r.message for r in turn.replies if isinstance(r.message, ListMessage)]
    return [(r.id, r.title) for s in message.sections for r in s.rows]


# -- switching flows --------------------------------------------------------------------


async def test_a_step_switches_to_another_flow_in_the_same_turn() -> None:
    start = await send(text_in("x"), state="hop.start")  # not understood: the prompt again
    assert start.context["scratch"] == "hop's working data"
    turn = await follow(start, text_in("saltar"))
    assert turn.state == "pager.pick"
    # The flow entered says its prompt in the same turn.
    [message] = [r.message for r in turn.replies]
    assert isinstance(message, ListMessage) and message.body == "¿En qué ciudad?"
    # The flow left loses its working data but keeps what it kept; the data given to
    # the flow entered is there.
    assert "scratch" not in turn.context
    assert turn.context["kept"] == {"hop": {"visited": True}}
    assert turn.context["came_from"] == "hop"


async def test_a_flow_hands_over_to_the_main_menu() -> None:
    turn = await send(text_in("a casa"), state="hop.start")
    assert turn.state == "menu.main"
    [message] = [r.message for r in turn.replies]
    assert isinstance(message, ListMessage)
    assert message.body == CATALOG.text("menu.body", name="Juan")


async def test_goto_refuses_a_flow_or_state_that_does_not_exist() -> None:
    step = Step.__new__(tests.flows_for_tests.Hop)
    with pytest.raises(ValueError, match="no flow"):
        step.goto("nowhere", "start")
    with pytest.raises(ValueError, match="no state"):
        step.goto("pager", "nowhere")


def test_a_typo_in_a_flow_fails_when_the_class_is_built() -> None:
    with pytest.raises(TypeError, match="not a method"):

        class _BadCallback(Step):
            FLOW = "bad_callback"
            STATES: ClassVar[tuple[str, ...]] = ("a",)
            TRANSITIONS: ClassVar[list[dict[str, Any]]] = [
                {"trigger": "t", "source": "a", "dest": "a", "before": "no_such_method"}
            ]

            async def render_a(self) -> None: ...

    with pytest.raises(TypeError, match="names"):

        class _BadState(Step):
            FLOW = "bad_state"
            STATES: ClassVar[tuple[str, ...]] = ("a",)
            TRANSITIONS: ClassVar[list[dict[str, Any]]] = [
                {"trigger": "t", "source": "a", "dest": "b"}
            ]

            async def render_a(self) -> None: ...


# -- options from data ------------------------------------------------------------------


def test_pages_hold_at_most_ten_rows_with_their_paging_rows() -> None:
    split = pages(25)
    shown = [(p.stop - p.start) + p.has_previous + p.has_next for p in split]
    assert all(n <= LIST_ROWS_MAX for n in shown)
    assert [(p.start, p.stop) for p in split] == [(0, 9), (9, 17), (17, 25)]
    assert len(pages(10)) == 1


async def test_25_options_are_paged_and_chosen_by_tap_number_and_typo() -> None:
    first = await send(text_in("?"), state="pager.pick")  # the ladder repeats the prompt
    page1 = rows(first)
    assert len(page1) == LIST_ROWS_MAX
    assert [i for i, _ in page1] == [f"city:{n}" for n in range(1, 10)] + [PAGE_NEXT]
    assert page1[0][1] == "1. Hosting Córdoba"
    assert page1[-1][1] == CATALOG.text("common.page_next")

    second = await follow(first, tap(PAGE_NEXT))
    page2 = rows(second)
    assert page2[0] == (PAGE_PREVIOUS, CATALOG.text("common.page_previous"))
    assert [i for i, _ in page2[1:-1]] == [f"city:{n}" for n in range(10, 18)]
    assert page2[1][1] == f"10. Hosting {CITIES[9]}"  # numbers run on across pages
    assert page2[-1][0] == PAGE_NEXT

    # The twelfth option, by its number, typed while the second page is on screen.
    chosen = await follow(second, text_in("12"))
    assert chosen.state == "pager.picked"
    assert texts(chosen) == [f"Eligió {CITIES[11]}"]

    third = await follow(second, text_in("ver más"))
    assert [i for i, _ in rows(third)][1:] == [f"city:{n}" for n in range(18, 26)]
    back = await follow(third, tap(PAGE_PREVIOUS))
    assert rows(back) == page2

    # By its title with typos, from any page; and by tapping a row of the last page.
    typo = await follow(third, text_in("hostin mendosa"))
    assert texts(typo) == ["Eligió Mendoza"]
    tapped = await follow(third, tap("city:25", "25. Hosting Santa Rosa"))
    assert texts(tapped) == ["Eligió Santa Rosa"]


def test_long_similar_titles_are_shortened_and_stay_distinct() -> None:
    titles = ["Hosting Plus – juanperez.com.ar", "Hosting Plus – juanperez.net"]
    for limit in (BUTTON_TITLE_MAX, ROW_TITLE_MAX - len("10. ")):
        short = shorten_titles(titles, limit)
        assert all(len(t) <= limit for t in short), short
        assert len(set(short)) == 2
        # What tells them apart survives: each domain whole.
        assert "juanperez.com.ar" in short[0] and "juanperez.net" in short[1]
    assert shorten_titles(["Hosting Mini", "VPS"], 20) == ["Hosting Mini", "VPS"]


async def test_a_list_of_long_data_titles_fits_and_keeps_the_whole_title_in_the_description() -> (
    None
):
    class Services(Step):
        FLOW = "test_services"
        STATES: ClassVar[tuple[str, ...]] = ("pick",)
        TRANSITIONS: ClassVar[list[dict[str, Any]]] = []

        async def render_pick(self) -> None:
            options = [
                Choice.of("s1", "x", "Hosting Plus – juanperez.com.ar"),
                Choice.of("s2", "x", "Hosting Plus – juanperez.net"),
            ]
            self.send(self.prompt("¿Qué servicio?", options))

    turn = await send(text_in("?"), state="test_services.pick")
    [message] = [r.message for r in turn.replies if isinstance(r.message, ListMessage)]
    listed = [r for s in message.sections for r in s.rows]
    assert [r.description for r in listed] == [
        "Hosting Plus – juanperez.com.ar",
        "Hosting Plus – juanperez.net",
    ]
    assert len({r.title for r in listed}) == 2
    assert all(len(r.title) <= ROW_TITLE_MAX for r in listed)


async def test_a_flow_building_a_too_long_button_title_fails_where_it_builds_it() -> None:
    with pytest.raises(MessageLimitError, match="21 characters"):
        await send(text_in("largo"), state="hop.start")


# -- literal input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "el agente nunca respondió",
        "no quiero salir de acá",
        "menu principal no me sirve",
        "hola",
        "asesor",
        "3",
        "Cancelar ahora mismo",
    ],
)
async def test_in_a_literal_state_text_is_taken_as_it_is(typed: str) -> None:
    turn = await send(text_in(typed), state="probe.note")
    assert texts(turn) == [f"nota: {typed}", "probe lista"]
    assert turn.state == "probe.start"
    assert turn.effects == []


@pytest.mark.parametrize("typed", ["menu", "Menú", " MENU! "])
async def test_in_a_literal_state_menu_alone_leaves(typed: str) -> None:
    turn = await send(text_in(typed), state="probe.note")
    assert turn.state == "menu.main"
    assert not any(body.startswith("nota") for body in texts(turn))


async def test_in_a_literal_state_cancelar_alone_leaves_and_says_nothing_changed() -> None:
    turn = await send(text_in("cancelar"), state="probe.note")
    assert turn.state == "menu.main"
    assert turn.replies[0].message == Text(CATALOG.text("common.cancelled"))


async def test_in_a_literal_state_salir_alone_ends_the_conversation() -> None:
    turn = await send(text_in("salir"), state="probe.note")
    assert turn.state == "menu.ended"


async def test_outside_a_literal_state_the_same_words_are_commands() -> None:
    # The contrast: in the menu, "el agente…" is not a note, and "asesor" hands over.
    turn = await send(text_in("asesor"), state="probe.start")
    assert turn.state == "menu.handed_over"


# -- commands and their outcomes --------------------------------------------------------


async def order() -> Turn:
    asked = await send(text_in("pedir s1 p2 annually"), state="probe.start")
    assert asked.state == "probe.confirm"
    return asked


async def test_a_confirmation_issues_one_command_with_the_flow_s_key() -> None:
    asked = await order()
    confirmed = await follow(asked, text_in("si"))
    assert confirmed.state == "probe.waiting"
    [command] = confirmed.effects
    assert command == PlaceUpgrade(
        key="probe.order:wamid.IN",
        client_id=JUAN.id,
        service_id="s1",
        product_id="p2",
        cycle="annually",
        today=QUOTED_ON,
        reply_to="probe",  # stamped by the runtime: the flow that hears the outcome
    )
    # Confirmed again: the same key, so the queue keeps one command.
    again = await follow(confirmed, text_in("si"))
    assert [c.key for c in again.effects] == [command.key]


def test_a_billing_command_survives_its_stored_form() -> None:
    command = PlaceUpgrade(
        key="k", client_id="c1", service_id="s1", product_id="p2", cycle="annually",
        today=QUOTED_ON, reply_to="probe",
    )  # fmt: skip
    assert command_from(command.KIND, command_params(command)) == command


def outcome_inbound(flow: str, outcome: Outcome) -> Inbound:
    return Inbound.from_inbox(outcome_message(f"command:{outcome.key}", flow, outcome))


async def test_an_outcome_reaches_the_flow_that_asked_and_moves_it_when_it_waits() -> None:
    outcome = Outcome(
        "probe.order:wamid.IN",
        PlaceUpgrade.KIND,
        OutcomeStatus.DONE,
        {"invoice_id": "UPG-1", "invoice_url": "https://x/1"},
    )
    turn = await send(outcome_inbound("probe", outcome), state="probe.waiting")
    assert texts(turn) == ["resultado done None UPG-1 https://x/1", "probe lista"]
    assert turn.state == "probe.start"
    assert turn.touch is False  # not the customer's activity: the session clock stays


async def test_an_outcome_for_a_flow_the_customer_left_is_told_without_moving_them() -> None:
    outcome = Outcome("k", PlaceUpgrade.KIND, OutcomeStatus.REFUSED, {}, "not_offered")
    turn = await send(
        outcome_inbound("probe", outcome), state="menu.faq", context={"kept": {"probe": {}}}
    )
    assert texts(turn) == ["resultado refused not_offered - -"]
    assert turn.state == "menu.faq"


async def test_a_signal_from_another_conversation_reaches_its_flow() -> None:
    notify = Notify(CONVERSATION_ID, "probe", "hola", key="n1")
    inbound = Inbound.from_inbox(signal_message("signal:n1", notify, from_conversation=7))
    assert inbound.kind is InboundKind.SYSTEM
    turn = await send(inbound, state="menu.main")
    assert texts(turn) == ["aviso hola de 7"]
    assert turn.state == "menu.main"


# -- expiry with a say ------------------------------------------------------------------


async def test_an_expired_session_tells_the_flow_and_keeps_only_what_it_kept() -> None:
    asked = await order()
    waiting = await follow(asked, text_in("si"))
    assert waiting.context["kept"] == {"probe": {"pending": "probe.order:wamid.IN"}}
    later = await send(
        text_in("hola"),
        state=waiting.state,
        context=waiting.context,
        updated_at=NOW - timedelta(hours=2),
    )
    said = texts(later)
    assert said[:2] == ["su pedido sigue en curso", CATALOG.text("common.session_expired")]
    assert later.state == "menu.main"
    assert later.context == {"kept": {"probe": {"pending": "probe.order:wamid.IN"}}}


async def test_a_button_title_from_the_catalog_is_never_shortened() -> None:
    class Longest(Step):
        FLOW = "test_longest"
        STATES: ClassVar[tuple[str, ...]] = ("a",)
        TRANSITIONS: ClassVar[list[dict[str, Any]]] = []

        async def render_a(self) -> None:
            # A catalog sentence far longer than a button title, used as one by mistake.
            long = Choice("x", "t", "common.session_expired", "words.menu")
            self.send(self.prompt("?", [long]))

    with pytest.raises(MessageLimitError):
        await send(text_in("?"), state="test_longest.a")


async def test_a_message_can_carry_its_template_for_a_closed_window_and_both_are_checked() -> None:
    class Reaching(Step):
        FLOW = "test_reaching"
        STATES: ClassVar[tuple[str, ...]] = ("ok", "bad")
        TRANSITIONS: ClassVar[list[dict[str, Any]]] = []

        async def render_ok(self) -> None:
            self.send(Text("Hola"), template=Template("aviso", body_params=("Juan",)))

        async def render_bad(self) -> None:
            # Template parameters may not hold newlines (SPEC §5).
            self.send(Text("Hola"), template=Template("aviso", body_params=("a\nb",)))

    turn = await send(text_in("?"), state="test_reaching.ok")
    assert turn.replies[-1].template == Template("aviso", body_params=("Juan",))
    with pytest.raises(MessageLimitError, match="newline"):
        await send(text_in("?"), state="test_reaching.bad")
