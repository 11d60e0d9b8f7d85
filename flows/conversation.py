"""One inbound message → one turn: the rules that hold in every flow.

Order of precedence: system messages (a number change; a command's outcome or another
conversation's signal, handed to the flow it is for); reactions (no answer); session
expiry (the flow is told, then everything but its `kept` data goes); messages we cannot
read; in a state that takes text literally, only an exact escape word; elsewhere the
global words (`menu`, `salir`, `asesor`); a request to stop the alerts ("BAJA ALERTAS",
"STOP", "no quiero más avisos"), which leaves the conversation where it was; a holder's
transfer message (flows.transfer), whatever the state; then the current flow. When the
flow does not understand, the ladder: ask again, then show the
menu, then offer a person.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

# Importing a flow registers it.
import flows.account
import flows.cancel
import flows.upgrade  # noqa: F401
from flows.commands import BackToBot, Escalate
from flows.handover import is_return_word
from flows.matching import fold
from flows.menu import HANDED_OVER, Menu
from flows.outbound import Reply, Text
from flows.runtime import (
    FLOWS,
    LADDER_KEY,
    Action,
    ConversationView,
    Deps,
    Identity,
    IdentityStatus,
    Inbound,
    InboundKind,
    NumberChanged,
    SetAlerts,
    Step,
    Turn,
    is_greeting,
    keep_only_kept,
    run_step,
    split_state,
)
from flows.transfer import Transfer, TransferText

log = logging.getLogger(__name__)

START = "menu.start"
# The staff queue's reason when the "didn't understand" ladder runs out.
NOT_UNDERSTOOD = "not_understood"
# States where an idle conversation has nothing in progress to expire.
_AT_REST = {"menu.start", "menu.main", "menu.ended", "menu.handed_over"}
_CHANGED_NUMBER = {"user_changed_number", "customer_changed_number"}
_CHANGED_USER_ID = "user_changed_user_id"


async def handle(
    conv: ConversationView,
    inbound: Inbound,
    identity: Identity,
    deps: Deps,
    now: datetime,
) -> Turn:
    turn = await _handle(conv, inbound, identity, deps, now)
    if inbound.media is not None:
        # A photo or file with a caption: the caption was answered; say first that the
        # file itself was not read.
        turn.replies.insert(0, _text(deps, "common.media_declined"))
    return turn


async def _handle(
    conv: ConversationView,
    inbound: Inbound,
    identity: Identity,
    deps: Deps,
    now: datetime,
) -> Turn:
    flow_cls, state = _resolve(conv.state)
    turn = Turn(state=f"{flow_cls.FLOW}.{state}", context=dict(conv.context))

    async def run(cls: type[Step], at: str, act: Action, detached: bool = False) -> bool:
        return await run_step(
            cls,
            at,
            act,
            inbound=inbound,
            identity=identity,
            deps=deps,
            conv=conv,
            turn=turn,
            detached=detached,
        )

    async def menu(action: str) -> None:
        turn.context.pop(LADDER_KEY, None)
        await run(FLOWS["menu"], "main", lambda s: s.trigger(action))

    if inbound.kind is InboundKind.SYSTEM:
        turn.touch = False
        if inbound.flow is not None:
            await _flow_message(inbound, flow_cls, state, run)
        else:
            _system_notice(inbound, identity, conv, deps, turn)
        return turn
    if inbound.kind in (InboundKind.REACTION, InboundKind.REVOKED):
        # A thumbs-up on our last answer needs no answer of its own; a message the
        # customer deleted is not answered either.
        return turn

    if turn.state == HANDED_OVER:
        if conv.held_by_staff:
            # A person has the conversation: the bot is silent (staff read the message in
            # the transcript). Only the customer's exact "menu" takes it back — and a
            # request to stop the alerts is still honoured (an alert's footer tells them
            # to reply it, whoever has the chat), leaving the conversation with the person.
            if inbound.kind is InboundKind.TEXT and is_return_word(deps.catalog, inbound.text):
                turn.effects.append(BackToBot())
                turn.replies.append(_text(deps, "handover.back_to_menu"))
                await menu("go_menu")
            elif inbound.kind is InboundKind.TEXT and _asks_to_stop_alerts(
                deps, inbound.text, literal=False
            ):
                _stop_alerts(deps, identity, turn)
            return turn
        # Handed over, but nobody holds it any more (its items were resolved or merged
        # away): the bot answers, from the menu.
        flow_cls, state = FLOWS["menu"], "main"
        turn.state = f"{flow_cls.FLOW}.{state}"

    expired = (
        conv.updated_at is not None
        and now - conv.updated_at > deps.session_ttl
        and turn.state not in _AT_REST
    )
    if expired:
        await run(flow_cls, state, lambda s: s.on_expired())
        turn.context = keep_only_kept(turn.context)
        flow_cls, state = FLOWS["menu"], "start"
        turn.state = START
        turn.replies.append(_text(deps, "common.session_expired"))

    if _stale_tap(inbound, conv):
        # A button or row of an earlier message: what it meant then may not hold now
        # (another service, another amount). The current options again, nothing chosen.
        turn.replies.append(_text(deps, "common.stale_choice"))
        await run(flow_cls, state, lambda s: s.render())
        return turn

    if inbound.kind is InboundKind.UNSUPPORTED:
        turn.replies.append(_text(deps, "common.unsupported"))
        return turn
    if inbound.kind is InboundKind.WELCOME:
        # The customer opened the chat: the greeting a "hola" gets.
        await menu("go_menu")
        return turn

    text = inbound.text
    literal = state in flow_cls.LITERAL
    if inbound.kind is InboundKind.TEXT and text:
        words = _literal_escape(deps, text) if literal else _global_words(deps, text)
        if words == "words.cancel":
            turn.replies.append(_text(deps, "common.cancelled"))
        if words is not None:
            await menu(_GLOBAL_ACTIONS[words])
            return turn
        if _asks_to_stop_alerts(deps, text, literal=literal):
            turn.context.pop(LADDER_KEY, None)
            _stop_alerts(deps, identity, turn)
            return turn
        if not literal and TransferText.parse(text) is not None:
            # A holder's transfer message, whatever the conversation was doing.
            turn.context.pop(LADDER_KEY, None)

            async def request(step: Step) -> None:
                assert isinstance(step, Transfer)
                await step.on_request(text)

            await run(Transfer, "requested", request)
            return turn

    if literal and inbound.kind is InboundKind.TEXT:
        acted = await run(flow_cls, state, lambda s: s.on_text(text))
    else:
        acted = await run(flow_cls, state, lambda s: s.understand())
    if not acted and not literal and inbound.kind is InboundKind.TEXT and text:
        acted = await _anywhere(
            deps, text, turn, run, back=lambda: run(flow_cls, state, lambda s: s.back())
        )
    if acted:
        turn.context.pop(LADDER_KEY, None)
        return turn

    if not literal and inbound.kind is InboundKind.TEXT and is_greeting(deps, text):
        # Any greeting the current step does not understand brings the menu back.
        await menu("go_menu")
        return turn

    misses = int(turn.context.get(LADDER_KEY, 0)) + 1
    if misses == 1:
        # The options again — not the answer or the long text that came before them.
        turn.replies.append(_text(deps, "ladder.not_understood"))
        await run(flow_cls, state, lambda s: s.reprompt())
    elif misses == 2:
        turn.replies.append(_text(deps, "ladder.not_understood_menu"))
        turn.context["brief"] = True
        await menu("go_menu")
    else:
        # The ladder ran out: staff see it in the queue (the bot goes on talking; a
        # person who writes takes the conversation), and the customer is offered one.
        turn.effects.append(
            Escalate(
                reason=NOT_UNDERSTOOD,
                summary=text[:500],
                detail={"state": f"{flow_cls.FLOW}.{state}"},
            )
        )
        await menu("offer_human")
        misses = 0
    if misses:
        turn.context[LADDER_KEY] = misses
    else:
        turn.context.pop(LADDER_KEY, None)
    return turn


def _stale_tap(inbound: Inbound, conv: ConversationView) -> bool:
    """A tap on an interactive message that is not the last one we sent. (A template's
    quick-reply button is not a prompt: its payload is a command that holds any time.)"""
    return (
        inbound.kind is InboundKind.CHOICE
        and inbound.type == "interactive"
        and inbound.context_id is not None
        and conv.current_prompt is not None
        and inbound.context_id != conv.current_prompt
    )


async def _anywhere(
    deps: Deps,
    text: str,
    turn: Turn,
    run: Callable[[type[Step], str, Action], Awaitable[bool]],
    *,
    back: Callable[[], Awaitable[bool]],
) -> bool:
    """What the current state did not understand, understood from anywhere: a short
    thanks or "ok" (answered warmly, nothing moves), "volver" (the previous step), or
    an intent the bot knows (a frequent question, upgrade, a person…), as from the main
    menu."""
    if _short_and_means(deps, text, "words.thanks"):
        turn.replies.append(_text(deps, "common.thanks"))
        return True
    if _short_and_means(deps, text, "words.ok"):
        turn.replies.append(_text(deps, "common.ok"))
        return True
    if _short_and_means(deps, text, "words.back"):
        return await back()

    async def intent(step: Step) -> bool:
        assert isinstance(step, Menu)
        return await step.intent()

    state_before, context_before = turn.state, dict(turn.context)
    if await run(Menu, "main", intent):
        return True
    turn.state, turn.context = state_before, context_before
    return False


def _asks_to_stop_alerts(deps: Deps, text: str, *, literal: bool) -> bool:
    """ "BAJA ALERTAS", "STOP", "no quiero más avisos"… (words.stop_alerts), from any state.

    Checked before the current state's options, not among the words `_anywhere`
    understands after them: a state's own options would take these first (the main menu's
    "Mis alertas" holds "avisos", "Dar de baja" holds "baja"), and a state that answers
    everything (the first message, a conversation handed to a person) would never let them
    through; yet "BAJA ALERTAS" is what an alert's footer tells the customer to reply,
    whatever the conversation was doing. Where text is taken literally, only a phrase as
    the whole message counts."""
    folded = fold(text)
    phrases = deps.catalog.words("words.stop_alerts")
    if literal:
        return folded in {fold(p) for p in phrases}
    words = folded.split()
    if not words or len(words) > _STOP_WORDS_MAX:
        return False
    exact = {fold(w) for w in deps.catalog.words("words.stop_alerts_exact")}
    for phrase in phrases:
        needed = fold(phrase).split()
        if len(needed) == 1:
            if words == needed:
                return True
        elif all(w in words for w in needed if w in exact) and deps.matcher.contains(
            folded, (phrase,)
        ):
            return True
    return False


# A request to stop the alerts is a short message ("no quiero recibir más alertas por
# favor"), not a sentence that happens to hold its words.
_STOP_WORDS_MAX = 8


def _stop_alerts(deps: Deps, identity: Identity, turn: Turn) -> None:
    """Every alert but the security ones off, and the customer told so and how to have
    them back; a number we cannot tie to one account is told why nothing changes."""
    if identity.status is IdentityStatus.IDENTIFIED and identity.client is not None:
        turn.effects.append(SetAlerts(identity.client.id, False))
        turn.replies.append(_text(deps, "alerts.stopped"))
    elif identity.status is IdentityStatus.SEVERAL:
        turn.replies.append(_text(deps, "alerts.stop_several"))
    else:
        turn.replies.append(_text(deps, "alerts.stop_unknown"))


def _short_and_means(deps: Deps, text: str, words: str) -> bool:
    """A short message (up to four words) that is one of these words' phrases."""
    return len(text.split()) <= 4 and deps.matcher.contains(text, deps.catalog.words(words))


def _resolve(full_state: str) -> tuple[type[Step], str]:
    flow_name, state = split_state(full_state)
    cls = FLOWS.get(flow_name)
    if cls is None or state not in cls.STATES:
        if full_state != START:
            log.warning("unknown state %r, starting over", full_state)
        return FLOWS["menu"], "start"
    return cls, state


# What each global word list does.
_GLOBAL_ACTIONS = {
    "words.menu": "go_menu",
    "words.exit": "go_exit",
    "words.human": "go_human",
    "words.cancel": "go_menu",
}


def _global_words(deps: Deps, text: str) -> str | None:
    """The global word list the message means, checked in this order."""
    for words in ("words.menu", "words.exit", "words.human"):
        if _is_global(deps, text, words):
            return words
    return None


def _is_global(deps: Deps, text: str, words: str) -> bool:
    """A global word counts when it is (nearly) the whole message, or an explicit
    request inside a short one ("quiero hablar con un humano"), never when negated."""
    short = len(text.split()) <= 6
    return short and deps.matcher.contains(text, deps.catalog.words(words))


def _literal_escape(deps: Deps, text: str) -> str | None:
    """In a state that takes text literally, only the first word of these lists, as the
    whole message ("menu", "cancelar", "salir"), leaves."""
    folded = fold(text)
    for words in ("words.menu", "words.cancel", "words.exit"):
        if folded == fold(deps.catalog.words(words)[0]):
            return words
    return None


async def _flow_message(
    inbound: Inbound,
    current: type[Step],
    state: str,
    run: Callable[[type[Step], str, Action, bool], Awaitable[bool]],
) -> None:
    """A command's outcome or a signal, for the flow it names: bound where the
    conversation is when that is the flow, else at the flow's first state (the hook sees
    `here` is False and moves the conversation, if it must, with goto)."""
    cls = FLOWS.get(inbound.flow or "")
    if cls is None:
        log.error("system message %s for unknown flow %r dropped", inbound.wamid, inbound.flow)
        return
    here = cls is current
    at = state if here else cls.STATES[0]
    outcome, signal = inbound.outcome, inbound.signal
    if outcome is not None:
        await run(cls, at, lambda s: s.on_outcome(outcome), not here)
    elif signal is not None:
        await run(cls, at, lambda s: s.on_signal(signal), not here)
    else:
        log.error("system message %s for %s has neither outcome nor signal", inbound.wamid, cls)


def _system_notice(
    inbound: Inbound, identity: Identity, conv: ConversationView, deps: Deps, turn: Turn
) -> None:
    number_changed = inbound.system_type in _CHANGED_NUMBER and bool(inbound.new_wa_id)
    id_changed = inbound.system_type == _CHANGED_USER_ID and bool(inbound.new_user_id)
    if not (number_changed or id_changed):
        log.info("system message %s ignored", inbound.system_type)
        return
    known = identity.status is IdentityStatus.IDENTIFIED and identity.client is not None
    turn.effects.append(
        NumberChanged(
            old_wa_id=conv.wa_id or "",
            new_wa_id=inbound.new_wa_id if number_changed else None,
            client_id=identity.client.id if known and identity.client else None,
            new_user_id=inbound.new_user_id,
        )
    )
    # A new BSUID alone changes nothing the customer sees: nothing to tell them.
    if known and number_changed:
        turn.replies.append(
            _text(deps, "identity.number_changed", panel_url=deps.panel_details_url)
        )


def _text(deps: Deps, key: str, **params: object) -> Reply:
    return Reply(Text(deps.catalog.text(key, **params)))
