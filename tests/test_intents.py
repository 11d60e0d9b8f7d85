"""What a sentence means, from anywhere (issue 10): real-sounding messages, typos and
traps included, and the intent each must reach — from the main menu and from the
"¿Le ayudo con algo más?" that follows an answer. A new sentence is one line of SENTENCES.

Intents: `faq:<topic>` (a frequent question answered), `upgrade` (the upgrade
conversation), `downgrade` (its explanation of why not and the ways forward), `transfer`,
`cancel` (their conversations), `alerts`, `faq` (the list), `human` (handed to a person), `buy` (a
prospect: the plans), `thanks` / `ok` (a warm word, nothing moves), `stop` (every alert
but the security one off, nothing moves), None (not understood: the ladder — the score
cut-off fails closed).
"""

from __future__ import annotations

import pytest

from flows.runtime import LADDER_KEY, SetAlerts, Turn
from tests.test_flows_menu import CATALOG, JUAN, send, text_in

SENTENCES: list[tuple[str, str | None]] = [
    # Frequent questions
    ("puedo bajar de plan?", "downgrade"),
    ("quiero bajar mi plan a uno mas barato", "downgrade"),
    ("baja de dominios", "faq:domains"),
    ("quiero cancelar un dominio", "faq:domains"),  # domains are not cancelled
    ("como doy de baja mi dominio", "faq:domains"),
    ("tienen backups?", "faq:backups"),
    ("necesito recuperar datos que borre", "faq:backups"),
    ("hacen copias de seguridad", "faq:backups"),
    ("cuanto cuesta subir de plan", "faq:upgrade_price"),
    ("que pasa si doy de baja el servicio", "faq:cancellation"),
    ("me devuelven la plata si cancelo?", "faq:cancellation"),
    ("requisitos para transferir un servicio", "faq:transfer"),
    ("quiero actualizar mi telefono", "faq:phone"),
    ("preguntas frecuntes", "faq"),  # a typo
    # Conversations that act
    ("quiero subir de plan", "upgrade"),
    ("quiero mejorar mi hosting", "upgrade"),
    ("necesito mas espacio", "upgrade"),
    ("quiero pasar mi hosting a nombre de otra persona", "transfer"),  # not "a person"
    ("cambio de titular", "transfer"),
    ("quiero transferir el servicio a mi socio", "transfer"),
    ("quiero dar de baja el hosting", "cancel"),
    ("cancelar mi servicio", "cancel"),
    ("no quiero renovar el hosting", "cancel"),
    ("desactivar las alertas", "alerts"),
    ("quiero elegir que avisos me llegan", "alerts"),
    # Stopping the alerts (all but the security one), said any way, from anywhere
    ("no me manden mas avisos por aca", "stop"),
    ("BAJA ALERTAS", "stop"),
    ("no quiero recibir más alertas", "stop"),
    ("STOP", "stop"),
    ("quiero dar de baja mi servicio", "cancel"),  # a service, not the alerts
    # A person
    ("quiero hablar con un asesor", "human"),
    ("necesito soporte tecnico", "human"),
    ("hablar con alguien del equipo por favor", "human"),
    # A prospect
    ("quiero contratar un hosting", "buy"),
    ("cuanto sale una radio?", "buy"),
    # Everyday words
    ("gracias", "thanks"),
    ("muchas gracias!", "thanks"),
    ("ok", "ok"),
    ("listo", "ok"),
    # Nothing clear: the ladder
    ("qwerty asdf", None),
    ("el perro come", None),
]

WHERE = {
    "main menu": ("menu.main", {}),
    "after an answer": ("menu.faq_answer", {"faq": "backups"}),
}


def intent_of(turn: Turn, state_before: str) -> str | None:
    first = turn.replies[0].message if turn.replies else None
    said = getattr(first, "body", None)
    if said == CATALOG.text("common.thanks"):
        return "thanks"
    if said == CATALOG.text("common.ok"):
        return "ok"
    if turn.effects == [SetAlerts(JUAN.id, False)]:
        assert turn.state == state_before
        return "stop"
    if LADDER_KEY in turn.context:
        return None
    assert turn.state != state_before or turn.replies, "nothing happened"
    match turn.state:
        case "menu.faq_answer":
            return f"faq:{turn.context['faq']}"
        case state if state.startswith("cancel."):
            return "cancel"
        case "menu.alerts":
            return "alerts"
        case "menu.faq":
            return "faq"
        case "menu.handed_over":
            return "human"
        case "menu.prospect":
            return "buy"
        case "upgrade.downgrade":
            return "downgrade"
        case state if state.startswith("transfer."):
            return "transfer"
        case state if state.startswith("upgrade."):
            return "upgrade"
    return f"?{turn.state}"


def test_the_table_is_big_enough_and_has_its_traps() -> None:
    assert len(SENTENCES) >= 30
    texts = [t for t, _ in SENTENCES]
    assert any("persona" in t for t in texts) and any("dominio" in t for t in texts)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize(("text", "intent"), SENTENCES)
async def test_a_sentence_reaches_its_intent_from_anywhere(
    where: str, text: str, intent: str | None
) -> None:
    state, context = WHERE[where]
    turn = await send(text_in(text), state=state, context=dict(context))
    assert intent_of(turn, state) == intent
