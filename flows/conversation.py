"""One inbound message → one turn: the rules that hold in every flow.

Order of precedence: system notices; reactions (no answer); session expiry; messages we
cannot read; the global words (`menu`, `salir`, `asesor`); then the current flow. When
the flow does not understand, the ladder: ask again, then show the menu, then offer a
person.
"""

from __future__ import annotations

import logging
from datetime import datetime

import flows.menu  # noqa: F401  (registers the flow)
from flows.outbound import Reply, Text
from flows.runtime import (
    FLOWS,
    ConversationView,
    Deps,
    Identity,
    IdentityStatus,
    Inbound,
    InboundKind,
    NumberChanged,
    Step,
    Turn,
    is_greeting,
    run_step,
    split_state,
)

log = logging.getLogger(__name__)

START = "menu.start"
# States where an idle conversation has nothing in progress to expire.
_AT_REST = {"menu.start", "menu.main", "menu.ended", "menu.handed_over"}
_LADDER_KEY = "misses"
_CHANGED_NUMBER = {"user_changed_number", "customer_changed_number"}


async def handle(
    conv: ConversationView,
    inbound: Inbound,
    identity: Identity,
    deps: Deps,
    now: datetime,
) -> Turn:
    flow_cls, state = _resolve(conv.state)
    turn = Turn(state=f"{flow_cls.FLOW}.{state}", context=dict(conv.context))

    async def run(
        cls: type[Step], at: str, action: str | None = None, understand: bool = False
    ) -> bool:
        _, acted = await run_step(
            cls,
            at,
            inbound=inbound,
            identity=identity,
            deps=deps,
            turn=turn,
            wa_id=conv.wa_id,
            profile_name=conv.profile_name,
            action=action,
            understand=understand,
        )
        return acted

    menu = FLOWS["menu"]

    if inbound.kind is InboundKind.SYSTEM:
        _system_notice(inbound, identity, conv, deps, turn)
        return turn
    if inbound.kind is InboundKind.REACTION:
        # A thumbs-up on our last answer needs no answer of its own.
        return turn

    expired = (
        conv.updated_at is not None
        and now - conv.updated_at > deps.session_ttl
        and turn.state not in _AT_REST
    )
    if expired:
        turn.context = {}
        flow_cls, state = menu, "start"
        turn.state = START
        turn.replies.append(_text(deps, "common.session_expired"))

    if inbound.kind is InboundKind.UNSUPPORTED:
        turn.replies.append(_text(deps, "common.unsupported"))
        return turn

    text = inbound.text
    if inbound.kind is InboundKind.TEXT and text:
        for words, action in (
            ("words.menu", "go_menu"),
            ("words.exit", "go_exit"),
            ("words.human", "go_human"),
        ):
            if _is_global(deps, text, words):
                turn.context.pop(_LADDER_KEY, None)
                await run(menu, "main", action=action)
                return turn

    if await run(flow_cls, state, understand=True):
        turn.context.pop(_LADDER_KEY, None)
        return turn

    if inbound.kind is InboundKind.TEXT and is_greeting(deps, text):
        # Any greeting the current step does not understand brings the menu back.
        turn.context.pop(_LADDER_KEY, None)
        await run(menu, "main", action="go_menu")
        return turn

    misses = int(turn.context.get(_LADDER_KEY, 0)) + 1
    if misses == 1:
        turn.replies.append(_text(deps, "ladder.not_understood"))
        await run(flow_cls, state)
    elif misses == 2:
        turn.replies.append(_text(deps, "ladder.not_understood_menu"))
        await run(menu, "main", action="go_menu")
    else:
        await run(menu, "main", action="offer_human")
        misses = 0
    if misses:
        turn.context[_LADDER_KEY] = misses
    else:
        turn.context.pop(_LADDER_KEY, None)
    return turn


def _resolve(full_state: str) -> tuple[type[Step], str]:
    flow_name, state = split_state(full_state)
    cls = FLOWS.get(flow_name)
    if cls is None or state not in cls.STATES:
        if full_state != START:
            log.warning("unknown state %r, starting over", full_state)
        return FLOWS["menu"], "start"
    return cls, state


def _is_global(deps: Deps, text: str, words: str) -> bool:
    """A global word counts when it is (nearly) the whole message, or an explicit
    request inside a short one ("quiero hablar con un humano"), never when negated."""
    short = len(text.split()) <= 6
    return short and deps.matcher.contains(text, deps.catalog.words(words))


def _system_notice(
    inbound: Inbound, identity: Identity, conv: ConversationView, deps: Deps, turn: Turn
) -> None:
    if inbound.system_type not in _CHANGED_NUMBER or not inbound.new_wa_id:
        log.info("system message %s ignored", inbound.system_type)
        return
    known = identity.status is IdentityStatus.IDENTIFIED and identity.client is not None
    turn.effects.append(
        NumberChanged(
            old_wa_id=conv.wa_id or "",
            new_wa_id=inbound.new_wa_id,
            client_id=identity.client.id if known and identity.client else None,
        )
    )
    if known:
        turn.replies.append(
            _text(deps, "identity.number_changed", panel_url=deps.panel_details_url)
        )


def _text(deps: Deps, key: str, **params: object) -> Reply:
    return Reply(Text(deps.catalog.text(key, **params)))
