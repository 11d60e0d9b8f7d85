"""The cancellation conversation (flows/cancel.py) on the WHMCS backend, against the fake
WHMCS over real HTTP, with real PostgreSQL: in-process (tests/harness.Stack) for the
conversation itself and a confirmation that arrives more than once, and as a real
`python -m bot serve` process SIGKILLed while the AddCancelRequest is in flight, or after
WHMCS answered it and before the outcome was recorded, then restarted.

The fixture is tests/test_upgrade_whmcs.py's: Juan (WHMCS client 1, WhatsApp
5491155551234) has the active juanperez.com.ar (10, paid yearly, its current year
started 120 days ago) and the suspended radio.juanperez.com.ar (11); no domains.

The kill after WHMCS answered runs tests/serve_with_test_flows.py (`python -m bot serve`
with PAUSE_AFTER_BILLING: the first cancellation WHMCS answered is recorded and never
returns, the gap where the test kills it).
"""

from __future__ import annotations

import json
import tomllib
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.fakes import payloads as wa_payloads
from bot.fakes.whmcs import ApiCall, FailureKind, FakeWhmcs
from tests.harness import PHONE_ID, Stack, choice_ids, outbox_id_of, text_of
from tests.procs import ROOT
from tests.test_upgrade_whmcs import (
    JUAN_WA,
    TIMEZONE,
    WHMCS_SETTINGS,
    Chat,
    _a_year_after,
    _async,
    _post_as_meta,
    all_within_limits,
    explainer,
    fake_whmcs,
    meta_and_server,
    rows,
    settled,
    texts,
    until,
)
from tests.test_upgrade_whmcs import in_flight as upgrade_in_flight

CANCEL_TEXTS = tomllib.loads((ROOT / "messages_es" / "cancel.toml").read_text("utf-8"))
HOSTING = "10"  # the fixture's id of juanperez.com.ar
LABEL = "juanperez.com.ar"
RADIO = "11"  # suspended: may be cancelled too
PHRASE = f"CANCELAR {LABEL}"
# Typed by the customer: accents, ñ, inverted marks, quotes, and what a form body or a
# careless encoder would mangle (&, =, %, +, €).
REASON = 'Me mudo: el precio subió 50% + IVA & el soporte tardó "días"… ¿Adiós? ¡Sí! (ñandú = 3€)'
WHMCS_TYPES = {"end_of_period": "End of Billing Period", "immediate": "Immediate"}


def local_date(day: date) -> str:
    """1/7/2026 is the 1st of July (how the bot writes a date to a customer)."""
    return f"{day.day}/{day.month}/{day.year}"


def today() -> date:
    return datetime.now(TIMEZONE).date()


def fixture_next_due() -> date:
    """juanperez.com.ar's next due date in the fixture: a year after its current period
    started, 120 days ago."""
    return _a_year_after(today() - timedelta(days=120))


def cancel_requests(whmcs: FakeWhmcs) -> list[ApiCall]:
    return whmcs.calls_of("AddCancelRequest")


def summaries(chat: Chat) -> dict[str, str]:
    """Every outcome of a cancellation told (done, refused, unknown, …), by outbox row."""
    keys = (
        *("done_immediate", "done_end", "done_end_no_date", "already_requested"),
        *("refused", "unknown", "unavailable"),
    )
    starts = [CANCEL_TEXTS[k].split("{", 1)[0] for k in keys]
    return {
        outbox_id_of(m): text_of(m)
        for m in chat.mine()
        if any(text_of(m).startswith(s) for s in starts)
    }


async def up_to_the_phrase(chat: Chat, whmcs: FakeWhmcs, kind: str) -> dict[str, str]:
    """From "quiero dar de baja" to the confirmation phrase asked for, choosing
    juanperez.com.ar and `kind`, the reason typed; what each step said."""
    hosting, radio = whmcs.wid("services", HOSTING), whmcs.wid("services", RADIO)
    picked = await chat.say("quiero dar de baja")
    offered = rows(picked[-1])
    # Active and suspended services are offered, by their labels.
    assert {f"svc:{hosting}", f"svc:{radio}"} <= set(offered), offered
    assert offered[f"svc:{hosting}"]["title"].endswith(LABEL), offered
    consequences = await chat.tap(f"svc:{hosting}", row=True)
    assert choice_ids(consequences[-1]) == ["go_on", "stop"]
    when = await chat.tap("go_on")
    assert choice_ids(when[-1]) == ["immediate", "end_of_period", "stop"]
    reason = await chat.tap(kind, prompt=False)
    phrase = await chat.say(REASON, prompt=False)
    return {
        "picked": texts(picked),
        "consequences": texts(consequences),
        "when": texts(when),
        "reason": texts(reason),
        "phrase": texts(phrase),
    }


async def one_summary(chat: Chat, timeout: float = 30, explain: Any = None) -> None:
    await until("an outcome told", _async(lambda: bool(summaries(chat))), timeout, explain)


# -- the conversation --------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["end_of_period", "immediate"])
async def test_cancellation_on_whmcs_sends_one_add_cancel_request_as_chosen(
    db: asyncpg.Pool, database_url: str, tmp_path: Path, kind: str
) -> None:
    async with fake_whmcs(db, tmp_path) as (whmcs, settings):
        backend = {name: getattr(settings, name) for name in WHMCS_SETTINGS}
        async with Stack(database_url, **backend) as stack:
            chat = Chat(db, stack.fake, stack.send)
            day_before = today()
            said = await up_to_the_phrase(chat, whmcs, kind)
            # Nothing asked of WHMCS before the phrase is typed back.
            assert cancel_requests(whmcs) == [] and whmcs.cancel_requests == []
            await chat.say(PHRASE.lower(), prompt=False)  # case forgiven
            await one_summary(chat)
            await until("settled", lambda: settled(db, chat.wamids, stack.fake), timeout=30)
            day_after = today()
            all_within_limits(chat.mine())

    next_due = fixture_next_due()
    assert whmcs.services[int(whmcs.wid("services", HOSTING))].nextduedate == next_due
    assert LABEL in said["consequences"] and "irreversible" in said["consequences"]
    assert local_date(next_due) in said["when"]  # "keeps working until …", offered
    assert said["reason"] == CANCEL_TEXTS["ask_reason"].format(limit=500)
    assert PHRASE in said["phrase"]

    # Exactly one AddCancelRequest, for that service, of the type chosen, the reason as
    # typed (WHMCS received it byte for byte).
    [sent] = cancel_requests(whmcs)
    assert {k: sent.params.get(k) for k in ("serviceid", "type", "reason")} == {
        "serviceid": whmcs.wid("services", HOSTING),
        "type": WHMCS_TYPES[kind],
        "reason": REASON,
    }
    [stored] = whmcs.cancel_requests
    assert (str(stored.serviceid), stored.type, stored.reason) == (
        whmcs.wid("services", HOSTING),
        WHMCS_TYPES[kind],
        REASON,
    )
    command = await db.fetchrow("SELECT key, kind, status, attempts FROM commands")
    assert command is not None
    assert (command["kind"], command["status"], command["attempts"]) == (
        "request_cancellation",
        "done",
        1,
    )
    ledger = await db.fetchrow("SELECT request_id, action, status, params FROM whmcs_requests")
    assert ledger is not None
    assert (ledger["request_id"], ledger["action"], ledger["status"]) == (
        command["key"],
        "AddCancelRequest",
        "done",
    )
    assert ledger["params"]["reason"] == REASON

    # The summary: the service, and the date the cancellation takes effect.
    [told] = summaries(chat).values()
    assert LABEL in told
    if kind == "end_of_period":
        assert told.startswith(CANCEL_TEXTS["done_end"].split("{", 1)[0]), told
        assert f"hasta el {local_date(next_due)}" in told, told
    else:
        assert told.startswith(CANCEL_TEXTS["done_immediate"].split("{", 1)[0]), told
        assert any(local_date(d) in told for d in {day_before, day_after}), told
    # The "order number" told is the bot's own idempotency key (flow, step, WhatsApp
    # message id): WHMCS's AddCancelRequest gives none. A customer must not be read it.
    assert command["key"] not in told and "wamid." not in told, told


async def test_confirmation_redelivered_and_typed_again_cancels_once(
    db: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """Meta delivers the confirmation again (the same message id) and Juan, seeing
    nothing yet, types it again, while WHMCS takes its time over the request; and once
    more after the summary: one AddCancelRequest."""
    async with fake_whmcs(db, tmp_path) as (whmcs, settings):
        backend = {name: getattr(settings, name) for name in WHMCS_SETTINGS}
        # WHMCS records the request at once and answers 6 s later.
        whmcs.fail_next("AddCancelRequest", FailureKind.SLOW, delay=6.0)
        async with Stack(database_url, **backend) as stack:
            chat = Chat(db, stack.fake, stack.send)
            await up_to_the_phrase(chat, whmcs, "end_of_period")
            confirmation = wa_payloads.inbound_text(JUAN_WA, PHRASE)
            await chat.send(confirmation)
            await until(
                "the request reached WHMCS", _async(lambda: bool(whmcs.cancel_requests)), 20
            )
            # While WHMCS holds its answer:
            payload = wa_payloads.messages_update(PHONE_ID, [confirmation])
            assert await stack.post(payload) == 200  # Meta redelivers the same message
            await chat.send(wa_payloads.inbound_text(JUAN_WA, PHRASE))  # typed again
            repeats = chat.wamids[-2:]

            async def repeats_handled() -> bool:
                done = await db.fetchval(
                    "SELECT count(*) FROM inbox WHERE wamid = ANY($1::text[])"
                    " AND status <> 'pending'",
                    repeats,
                )
                return bool(done == len(set(repeats)))

            await until("the repeats handled", repeats_handled, timeout=20)
            command = await db.fetchrow("SELECT status FROM commands")
            assert command is not None and command["status"] == "running", (
                "WHMCS answered before the repeats were handled"
            )
            await one_summary(chat)
            await chat.say(PHRASE, prompt=False)  # and once more, after the summary
            await until("settled", lambda: settled(db, chat.wamids, stack.fake), timeout=30)
            inbox = await db.fetchval(
                "SELECT count(*) FROM inbox WHERE wamid = $1", confirmation.wamid
            )

    assert inbox == 1  # the redelivery was the same message
    assert len(cancel_requests(whmcs)) == 1
    assert len(whmcs.cancel_requests) == 1
    assert await db.fetchval("SELECT count(*) FROM commands") == 1
    assert await db.fetchval("SELECT count(*) FROM whmcs_requests") == 1
    [told] = summaries(chat).values()
    assert f"hasta el {local_date(fixture_next_due())}" in told, told
    # The phrase typed again while the first request was in flight must not start a second
    # cancellation of the same service ("¿Quiere seguir con la baja?" again, whose "go on"
    # leads to a second AddCancelRequest).
    consequences = CANCEL_TEXTS["consequences"].format(service=LABEL, unpaid="")
    shown = [text_of(m) for m in chat.mine() if text_of(m) == consequences]
    assert len(shown) == 1, [text_of(m)[:60] for m in chat.mine()]


# -- killed mid-request --------------------------------------------------------------------------


async def in_flight(pool: asyncpg.Pool) -> dict[str, Any]:
    """The request-cancellation command, its request in WHMCS's ledger, and how many
    outcomes were handed to the conversation."""
    return await upgrade_in_flight(pool, "AddCancelRequest")


@pytest.mark.timeout(180)
async def test_killed_while_whmcs_holds_the_answer_requests_once_and_tells_once(
    db: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """SIGKILL after WHMCS recorded the cancellation request and before its answer
    arrived: the ledger's request is left 'pending'. Restarted, the bot must not send
    AddCancelRequest again (whether WHMCS acted is unknown to it), and Juan hears one
    outcome."""
    async with fake_whmcs(db, tmp_path) as (whmcs, settings):
        whmcs.fail_next("AddCancelRequest", FailureKind.SLOW, delay=150.0)
        async with meta_and_server(
            database_url, settings, tmp_path / "server.log", ("bot", "serve")
        ) as (cloud, server):
            await server.start()
            chat = Chat(db, cloud, lambda item: _post_as_meta(cloud, item))
            explain = explainer(db, chat, whmcs, server)
            await up_to_the_phrase(chat, whmcs, "end_of_period")
            await chat.say(PHRASE, prompt=False)  # "un momento…"
            await until(
                "the request reached WHMCS",
                _async(lambda: bool(whmcs.cancel_requests)),
                timeout=30,
                explain=explain,
            )
            at_kill = await in_flight(db)
            assert at_kill["command"]["kind"] == "request_cancellation", at_kill
            assert (at_kill["command"]["status"], at_kill["command"]["attempts"]) == (
                "running",
                1,
            ), at_kill
            assert at_kill["ledger"] == {
                "request_id": at_kill["command"]["key"],
                "status": "pending",
            }, at_kill
            assert at_kill["told"] == 0 and not summaries(chat)
            server.kill()

            await server.start()
            await one_summary(chat, timeout=60, explain=explain)
            await until(
                "settled", lambda: settled(db, chat.wamids, cloud), timeout=30, explain=explain
            )
            after = await in_flight(db)
            told = summaries(chat)

            # Asked again (though told there is no need): what he is shown.
            chat.skip()
            hosting = whmcs.wid("services", HOSTING)
            await chat.say("quiero dar de baja")
            again = await chat.tap(f"svc:{hosting}", row=True)
            await until(
                "settled again",
                lambda: settled(db, chat.wamids, cloud),
                timeout=30,
                explain=explain,
            )

    assert len(cancel_requests(whmcs)) == 1 and len(whmcs.cancel_requests) == 1
    # One outcome: the ledger cannot know WHMCS acted, so "a person checks", with the
    # staff task for that person.
    assert list(told.values()) == [CANCEL_TEXTS["unknown"].format(service=LABEL)], told
    assert after["told"] == 1
    assert (after["command"]["status"], after["command"]["attempts"]) == ("unknown", 2), after
    assert after["ledger"]["status"] != "done", after  # what WHMCS did is not known
    tasks = await db.fetch("SELECT reason FROM escalations")
    assert [t["reason"] for t in tasks] == ["billing_outcome_unknown"]
    # WHMCS has the request and a person is checking it: Juan, told "no hace falta
    # pedirla de nuevo", must not be walked through cancelling the service again (which
    # would send a second AddCancelRequest).
    assert "go_on" not in choice_ids(again[-1]), texts(again)


@pytest.mark.timeout(180)
async def test_killed_after_whmcs_answered_before_the_outcome_is_recorded_tells_it_done(
    db: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """SIGKILL after request_cancellation returned (WHMCS answered, the ledger recorded
    it) and before the command's outcome was recorded: restarted, the same request id
    gets the first answer back, WHMCS is not asked again, Juan is told it is done once;
    asked again, he is told it was requested."""
    marker = tmp_path / "billing-answered.json"
    async with (
        fake_whmcs(db, tmp_path) as (whmcs, settings),
        meta_and_server(
            database_url,
            settings,
            tmp_path / "server.log",
            ("tests.serve_with_test_flows",),
            PAUSE_AFTER_BILLING=str(marker),
        ) as (cloud, server),
    ):
        await server.start()
        chat = Chat(db, cloud, lambda item: _post_as_meta(cloud, item))
        explain = explainer(db, chat, whmcs, server)
        await up_to_the_phrase(chat, whmcs, "end_of_period")
        await chat.say(PHRASE, prompt=False)

        async def answered() -> bool:
            return marker.exists()

        await until("WHMCS answered the request", answered, timeout=30, explain=explain)
        answer = json.loads(marker.read_text())
        at_kill = await in_flight(db)
        assert at_kill["command"]["kind"] == "request_cancellation", at_kill
        assert (at_kill["command"]["status"], at_kill["command"]["attempts"]) == (
            "running",
            1,
        ), at_kill
        assert at_kill["command"]["key"] == answer["request_id"]
        assert at_kill["ledger"] == {"request_id": answer["request_id"], "status": "done"}
        assert at_kill["told"] == 0 and not summaries(chat)
        assert len(whmcs.cancel_requests) == 1
        server.kill()

        await server.start()
        await one_summary(chat, timeout=60, explain=explain)
        await until("settled", lambda: settled(db, chat.wamids, cloud), timeout=30, explain=explain)
        after = await in_flight(db)
        told = summaries(chat)

        # Asked again: told when it was requested, not asked to go through it again.
        chat.skip()
        hosting = whmcs.wid("services", HOSTING)
        await chat.say("quiero dar de baja")
        again = await chat.tap(f"svc:{hosting}", row=True)
        await until(
            "settled again", lambda: settled(db, chat.wamids, cloud), timeout=30, explain=explain
        )

    assert len(cancel_requests(whmcs)) == 1 and len(whmcs.cancel_requests) == 1
    [summary] = told.values()
    assert summary.startswith(CANCEL_TEXTS["done_end"].split("{", 1)[0]), summary
    assert f"hasta el {local_date(fixture_next_due())}" in summary, summary
    assert after["told"] == 1
    assert (after["command"]["status"], after["command"]["attempts"]) == ("done", 2), after
    row = await db.fetchrow("SELECT result FROM commands")
    assert row is not None and row["result"]["request_id"] == answer["request_id"]
    assert row["result"]["kind"] == "end_of_period"
    assert CANCEL_TEXTS["already"].split("{", 1)[0] in texts(again), texts(again)
    assert LABEL in texts(again)
    assert await db.fetchval("SELECT count(*) FROM escalations") == 0
