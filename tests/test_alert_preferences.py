"""Alert preferences from the chat (issue 11), over a running server with real PostgreSQL:
"Mis alertas" shows every alert and its state and switches them all or one by one;
"BAJA ALERTAS", "STOP", "no quiero más avisos" turn them off from anywhere. What is
stored is read from `alert_preferences`; what the customer is told is checked against
the rules (the password alert always comes, how to have the others back), never copied
from the catalog. The alerts' names are read from it (each alert's `title`).
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bot.fakes.cloud_api import SentMessage
from flows.alerts import ALERT_TYPES, SECURITY, SWITCHABLE, Preferences, catalog_key
from flows.catalog import default_catalog
from flows.commands import SetAlerts
from flows.menu import switched
from store import turns
from tests.billing_fixture import BILLING, JUAN_WA, MARIA_WA, UNKNOWN_WA
from tests.harness import Stack, choice_ids, outbox_id_of, text_of

CATALOG = default_catalog()
[PASSWORD] = SECURITY
JUAN, MARIA = "c1", "c2"
# Where the one conversation of the test is.
CONVERSATION = "SELECT flow_state AS state, context FROM conversations WHERE merged_into IS NULL"


def title(alert_type: str) -> str:
    return CATALOG.text(f"{catalog_key(alert_type)}.title")


class Chat:
    """One customer's side of the conversation."""

    def __init__(self, stack: Stack, wa_id: str, pool: asyncpg.Pool) -> None:
        self.stack = stack
        self.wa_id = wa_id
        self.pool = pool

    def sent(self) -> list[SentMessage]:
        return [m for m in self.stack.fake.sent if m.to == self.wa_id]

    async def _next(self, before: int, count: int) -> list[SentMessage]:
        return (await self.stack.replies(before + count, to=self.wa_id))[before:]

    async def say(self, text: str, replies: int = 1) -> list[SentMessage]:
        before = len(self.sent())
        await self.stack.say(self.wa_id, text)
        return await self._next(before, replies)

    async def tap(
        self, choice_id: str, replies: int = 1, *, row: bool = False
    ) -> list[SentMessage]:
        before = len(self.sent())
        await self._on_screen()
        await self.stack.tap(self.wa_id, choice_id, row=row)
        return await self._next(before, replies)

    async def _on_screen(self) -> None:
        """Until the bot knows the options the customer taps are on screen: the last
        prompt's wamid recorded (a send answered 504 learns it from its status webhook).
        A tap quoting a prompt not yet recorded is answered as a stale one."""
        prompt = [m for m in self.sent() if m.type == "interactive"][-1]
        outbox_id = int(outbox_id_of(prompt))

        async def recorded() -> bool:
            query = "SELECT wamid FROM outbox WHERE id = $1"
            return bool(await self.pool.fetchval(query, outbox_id) == prompt.wamid)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not await recorded():
            assert loop.time() < deadline, f"prompt {outbox_id} never recorded as sent"
            await asyncio.sleep(0.02)

    async def until_prompt(self, text: str) -> list[SentMessage]:
        """Say `text` and wait for everything up to the closing prompt (with options)."""
        before = len(self.sent())
        await self.stack.say(self.wa_id, text)
        count = 1
        while True:
            got = await self._next(before, count)
            if got[-1].type == "interactive":
                return got
            count = len(got) + 1


async def stored(pool: asyncpg.Pool, client_id: str) -> Preferences | None:
    row = await pool.fetchrow(
        "SELECT enabled, disabled_types FROM alert_preferences WHERE client_id = $1", client_id
    )
    if row is None:
        return None
    return Preferences(row["enabled"], frozenset(row["disabled_types"]))


def lines(overview: SentMessage) -> dict[str, str]:
    """Each alert's line of "Mis alertas", by type: every alert has exactly one."""
    text = text_of(overview).splitlines()
    found = {}
    for alert_type in ALERT_TYPES:
        [line] = [line for line in text if f"{title(alert_type)}:" in line]
        found[alert_type] = line.lower()
    return found


def shown_on(overview: SentMessage) -> set[str]:
    """The alerts "Mis alertas" says the customer gets; the password one always."""
    shown = lines(overview)
    password = shown[PASSWORD]
    assert "siempre" in password and "seguridad" in password, password
    return {t for t in SWITCHABLE if "desactivada" not in shown[t]} | {PASSWORD}


def rows(message: SentMessage) -> list[dict[str, str]]:
    action = message.body["interactive"]["action"]
    return [r for s in action["sections"] for r in s["rows"]]


def assert_stop_told(message: SentMessage) -> None:
    said = text_of(message)
    assert "desactivamos" in said
    assert "clave" in said and "seguridad" in said  # the password alert still comes
    assert "escriba *alertas*" in said  # and how to have the others back


async def test_mis_alertas_shows_every_alert_and_the_password_one_cannot_go(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        juan = Chat(stack, JUAN_WA, pool)
        [overview] = await juan.say("mis alertas")
        assert shown_on(overview) == set(ALERT_TYPES)  # every one, all on
        assert choice_ids(overview) == ["alerts:off", "alerts:pick", "menu"]
        [listed] = await juan.tap("alerts:pick")
        [locked] = await juan.say(f"desactivar {title(PASSWORD).lower()}")
        [other_overview] = await juan.say("volver")
    # The list: the ten that can be switched, each with its state, within WhatsApp's limits.
    listed_rows = rows(listed)
    assert [r["id"] for r in listed_rows] == [f"alert:{t}" for t in SWITCHABLE]
    assert len(listed_rows) <= 10
    for row, alert_type in zip(listed_rows, SWITCHABLE, strict=True):
        assert len(row["title"]) <= 24 and title(alert_type) in row["title"]
        assert row["description"].startswith("Activada")
    assert "clave" in text_of(listed) and "seguridad" in text_of(listed)
    # Asked to switch the password alert off: why not, and nothing stored.
    said = text_of(locked)
    assert title(PASSWORD) in said and "no se puede" in said and "seguridad" in said
    assert await stored(pool, JUAN) is None
    assert shown_on(other_overview) == set(ALERT_TYPES)


async def test_one_alert_off_is_stored_and_shown(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        juan = Chat(stack, JUAN_WA, pool)
        await juan.say("alertas")
        [listed] = await juan.tap("alerts:pick")
        invoices = rows(listed)[SWITCHABLE.index("invoice.created")]
        said, overview = await juan.tap(invoices["id"], 2, row=True)
        first = await stored(pool, JUAN)
        # Typed from "Mis alertas", with a typo and the way it should go.
        typed, typed_overview = await juan.say("desactivar pagos resibidos", 2)
        second = await stored(pool, JUAN)
        # Tapped again on the list: back on.
        await juan.tap("alerts:pick")
        again, again_overview = await juan.tap(invoices["id"], 2, row=True)
        third = await stored(pool, JUAN)
    assert title("invoice.created") in text_of(said) and "desactiv" in text_of(said)
    assert shown_on(overview) == set(ALERT_TYPES) - {"invoice.created"}
    assert first == Preferences(True, frozenset({"invoice.created"}))
    assert title("invoice.paid") in text_of(typed)
    assert shown_on(typed_overview) == set(ALERT_TYPES) - {"invoice.created", "invoice.paid"}
    assert second == Preferences(True, frozenset({"invoice.created", "invoice.paid"}))
    assert title("invoice.created") in text_of(again) and " activamos" in text_of(again)
    assert shown_on(again_overview) == set(ALERT_TYPES) - {"invoice.paid"}
    assert third == Preferences(True, frozenset({"invoice.paid"}))


async def test_all_off_and_all_back_on(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        juan = Chat(stack, JUAN_WA, pool)
        await juan.say("mis alertas")
        await juan.say("desactivar presupuestos", 2)
        said_off, overview_off = await juan.tap("alerts:off", 2)
        all_off = await stored(pool, JUAN)
        said_on, overview_on = await juan.tap("alerts:on", 2)
        all_on = await stored(pool, JUAN)
    assert all_off is not None and not all_off.enabled
    assert not any(all_off.wants(t) for t in SWITCHABLE) and all_off.wants(PASSWORD)
    assert "clave" in text_of(said_off) and "seguridad" in text_of(said_off)
    assert shown_on(overview_off) == {PASSWORD}
    assert choice_ids(overview_off)[0] == "alerts:on"
    # All back on means all: the one switched off before too.
    assert all_on == Preferences(True, frozenset())
    assert "activ" in text_of(said_on)
    assert shown_on(overview_on) == set(ALERT_TYPES)
    assert choice_ids(overview_on)[0] == "alerts:off"


async def test_stop_as_a_first_message_and_alertas_to_have_one_back(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        juan = Chat(stack, JUAN_WA, pool)
        # The reply an alert's footer asks for, from someone who never wrote to us.
        [stopped] = await juan.say("BAJA ALERTAS")
        after_stop = await stored(pool, JUAN)
        # As they were told: "alertas", then only the invoices back.
        [overview] = await juan.say("alertas")
        await juan.tap("alerts:pick")
        _, only_invoices = await juan.tap("alert:invoice.created", 2, row=True)
        one_back = await stored(pool, JUAN)
    assert_stop_told(stopped)
    assert after_stop is not None and not after_stop.enabled
    assert shown_on(overview) == {PASSWORD}
    assert choice_ids(overview)[0] == "alerts:on"
    assert one_back is not None
    assert {t for t in ALERT_TYPES if one_back.wants(t)} == {"invoice.created", PASSWORD}
    assert shown_on(only_invoices) == {"invoice.created", PASSWORD}


async def test_stop_mid_flow_keeps_the_conversation_where_it_was(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        juan = Chat(stack, JUAN_WA, pool)
        await juan.until_prompt("mis servicios")  # Mi cuenta
        before = await pool.fetchrow(CONVERSATION)
        [stopped] = await juan.say("no quiero más avisos")
        after = await pool.fetchrow(CONVERSATION)
        preferences = await stored(pool, JUAN)
        # The customer goes on where they were: Mi cuenta's options still work.
        [menu] = await juan.tap("menu")
    assert_stop_told(stopped)
    assert preferences is not None and not preferences.enabled
    assert before["state"].startswith("account.")
    assert (after["state"], after["context"]) == (before["state"], before["context"])
    assert "alerts" in choice_ids(menu)


async def test_stop_said_other_ways(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        maria, juan = Chat(stack, MARIA_WA, pool), Chat(stack, JUAN_WA, pool)
        await maria.say("hola")
        [maria_stopped] = await maria.say("No quiero recibir mas alertas por favor")
        await juan.say("preguntas frecuentes")
        [juan_stopped] = await juan.say("Stop")
    assert_stop_told(maria_stopped)
    assert_stop_told(juan_stopped)
    maria_now, juan_now = await stored(pool, MARIA), await stored(pool, JUAN)
    assert maria_now is not None and not maria_now.enabled
    assert juan_now is not None and not juan_now.enabled


async def test_dar_de_baja_mi_servicio_is_not_stop(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        juan = Chat(stack, JUAN_WA, pool)
        [reply] = await juan.say("quiero dar de baja mi servicio")
        conversation = await pool.fetchrow(CONVERSATION)
    assert await stored(pool, JUAN) is None  # the alerts untouched
    assert "alertas" not in text_of(reply).lower()
    # The cancellation, as from the menu's "Dar de baja": which service.
    assert conversation["state"].startswith("cancel.")
    assert "svc:s1" in choice_ids(reply)


async def test_stop_from_an_unknown_number(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        [reply] = await Chat(stack, UNKNOWN_WA, pool).say("BAJA ALERTAS")
    said = text_of(reply)
    # Politely: this number gets no alerts; nothing about anyone's account, nothing stored.
    assert "alertas" in said and "número" in said and "no " in said
    assert await pool.fetchval("SELECT count(*) FROM alert_preferences") == 0
    for client in BILLING["clients"]:
        assert client["name"].split()[0] not in said


async def test_the_switches_as_stored(pool: asyncpg.Pool) -> None:
    """store.turns.set_alerts, one upsert each, and what the flow shows in the same turn
    (flows.menu.switched) agree."""
    steps = [
        SetAlerts(JUAN, False, "invoice.paid"),  # no row yet: that one off
        SetAlerts(JUAN, False, "invoice.paid"),  # twice: once
        SetAlerts(JUAN, False),  # all off: the per-type switches kept, unused
        SetAlerts(JUAN, False, "quote.created"),  # off while all off: still all off
        SetAlerts(JUAN, True, "domain.deleted"),  # on while all off: the only one on
        SetAlerts(JUAN, True, "invoice.paid"),
        SetAlerts(JUAN, True),  # all on clears every switch
    ]
    shown = Preferences()
    async with pool.acquire() as conn:
        for step in steps:
            await turns.set_alerts(conn, step.client_id, step.enabled, step.type)
            shown = switched(shown, step)
            assert await turns.alert_preferences(conn, JUAN) == shown, step
            if step == steps[4]:
                assert {t for t in SWITCHABLE if shown.wants(t)} == {"domain.deleted"}
        assert shown == Preferences()
        with pytest.raises(ValueError):
            await turns.set_alerts(conn, JUAN, False, PASSWORD)
        assert await turns.alert_preferences(conn, MARIA) == Preferences()  # no row: all on
