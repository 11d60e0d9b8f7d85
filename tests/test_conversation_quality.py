"""What a customer trying the sandbox hit (issue 10), over a running server: a follow-up
question after an answer, intents typed from anywhere, the "persona" and "dominio" traps,
the ladder's walls of text, everyday words, links that can be tapped."""

from __future__ import annotations

import itertools
import re

import asyncpg

from flows.catalog import default_catalog
from tests.billing_fixture import JUAN_WA, UNKNOWN_WA
from tests.harness import Stack, text_of

CATALOG = default_catalog()
PANEL = "https://www.paneldecliente.com/clientarea.php?action=details"
# The help page on domains: "Los dominios no pueden darse de baja, ya que se pagan
# anualmente por adelantado, lo que puede hacer es solicitar que no se le renueve".
NOT_CANCELLED = re.compile(r"no pueden darse de baja", re.IGNORECASE)
RENEWAL_STOPPED = re.compile(r"no se renuev", re.IGNORECASE)


def tells_the_domain_rule(text: str) -> bool:
    return bool(NOT_CANCELLED.search(text) and RENEWAL_STOPPED.search(text))


async def test_a_question_typed_after_an_answer_is_answered(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "backups")
        follow_up = (await stack.replies(2))[1]
        assert text_of(follow_up) == CATALOG.text("faq.after_answer")
        # Typed instead of tapping "Otra pregunta": understood as from the menu.
        await stack.say(JUAN_WA, "puedo bajar de plan?")
        downgrade = (await stack.replies(4))[2]
        await stack.say(JUAN_WA, "baja de dominios")
        domains = (await stack.replies(6))[4]
    assert text_of(downgrade) == CATALOG.text("faq.downgrade.answer", panel_url=PANEL)
    assert text_of(domains) == CATALOG.text("faq.domains.answer", panel_url=PANEL)
    assert tells_the_domain_rule(text_of(domains))


async def test_not_understood_after_an_answer_repeats_the_options_not_the_answer(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "backups")
        answer = (await stack.replies(2))[0]
        await stack.say(JUAN_WA, "xqzv wrtp")
        sorry, again = (await stack.replies(4))[2:4]
    assert text_of(sorry) == CATALOG.text("ladder.not_understood")
    assert text_of(again) == CATALOG.text("faq.after_answer")
    assert text_of(again) != text_of(answer)


async def test_a_person_inside_a_transfer_sentence_is_a_transfer(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "quiero pasar mi hosting a nombre de otra persona")
        first = (await stack.replies(1))[0]
        tasks = await pool.fetchval("SELECT count(*) FROM escalations")
    # Not handed to a person: the transfer's way (the help page's identical messages).
    assert tasks == 0
    assert "nombre de otro cliente" in text_of(first) and "mismo mensaje" in text_of(first)


async def test_cancelling_a_domain_gets_the_domain_answer(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "quiero cancelar un dominio")
        answer = (await stack.replies(1))[0]
    assert tells_the_domain_rule(text_of(answer))
    assert text_of(answer) == CATALOG.text("faq.domains.answer", panel_url=PANEL)


async def test_the_ladder_never_repeats_a_long_text_back_to_back(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        for n in range(4):
            await stack.say(UNKNOWN_WA, "asdf qwer")
            await stack.replies(n + 1, to=UNKNOWN_WA)  # one turn at a time
        texts = [text_of(m) for m in await stack.replies(1, to=UNKNOWN_WA)]
    long_ones = [t for t in texts if len(t) > 200]
    assert all(a != b for a, b in itertools.pairwise(long_ones)), texts
    assert texts.count(CATALOG.text("identity.unknown", panel_url=PANEL)) <= 1


async def test_a_prospect_gets_the_plans_once(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        await stack.say(UNKNOWN_WA, "hola")
        await stack.replies(1, to=UNKNOWN_WA)
        for n in range(3):
            await stack.say(UNKNOWN_WA, "quiero contratar un hosting")
            await stack.replies(n + 2, to=UNKNOWN_WA)
        texts = [text_of(m) for m in await stack.replies(4, to=UNKNOWN_WA)][1:]
    plans = "https://www.paneldecliente.com/cart.php"
    assert all(plans in t for t in texts), texts  # the link each time, tappable
    assert len(set(texts)) == 2 and len(texts[1]) < len(texts[0])  # in full once
    assert CATALOG.text("ladder.not_understood") not in texts


async def test_thanks_ok_and_back(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "backups")
        await stack.replies(2)
        await stack.say(JUAN_WA, "gracias!")
        thanks = (await stack.replies(3))[2]
        await stack.say(JUAN_WA, "ok")
        ok = (await stack.replies(4))[3]
        await stack.say(JUAN_WA, "volver")
        back = (await stack.replies(5))[4]
        misses = await pool.fetchval("SELECT context -> 'misses' FROM conversations")
    # Short and warm, never "no le entendí".
    assert len(text_of(thanks)) < 120 and "entend" not in text_of(thanks)
    assert len(text_of(ok)) < 120 and "entend" not in text_of(ok)
    assert misses is None
    # Back from an answer: the list of questions.
    assert text_of(back) == CATALOG.text("faq.body")


async def test_technical_support_is_a_person_with_the_topic_noted(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "necesito soporte tecnico, no me anda el correo")
        [reply] = await stack.replies(1)
        task = await pool.fetchrow("SELECT reason, detail FROM escalations")
    assert text_of(reply) == CATALOG.text("menu.handed_over")
    assert task["reason"] == "customer_request"
    assert "correo" in task["detail"]["summary"]


async def test_links_are_written_to_be_tapped(pool: asyncpg.Pool, database_url: str) -> None:
    answers: list[list[str]] = []
    async with Stack(database_url) as stack:
        for text in ["quiero actualizar mi telefono", "mis alertas", "cuanto debo"]:
            before = len(stack.fake.sent)
            await stack.say(JUAN_WA, text)
            # Its answer ends with the prompt (an interactive message).
            while not (sent := stack.fake.sent[before:]) or sent[-1].type != "interactive":
                await stack.replies(len(stack.fake.sent) + 1)
            answers.append([text_of(m) for m in sent])
    for answer in answers:
        mentions = re.findall(r"\S*paneldecliente\.com\S*", "\n".join(answer))
        # Every mention of the panel is a whole https:// link.
        assert mentions, answer
        assert all(m.startswith("https://") for m in mentions), answer
