"""The whole service on a real port in this process, talking to the fake Cloud API over
HTTP: what the end-to-end tests drive."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from types import TracebackType
from typing import Any, Self

import aiohttp
import asyncpg
from aiohttp import web

from bot.app import build_app
from bot.config import Settings
from bot.fakes import payloads as wa_payloads
from bot.fakes.cloud_api import Awkward, FakeCloudAPI, SentMessage
from bot.fakes.payloads import InboundItem
from bot.serving import serve

PHONE_ID = "109876543210"
ALWAYS_OPEN = "mon-sun 00:00-24:00"
TOKEN = "test-token"
APP_SECRET = "test-app-secret"
VERIFY_TOKEN = "test-verify-token"

# Meta as it really behaves, on at random in every end-to-end test (issue 9): the fake's
# status and send habits (bot.fakes.cloud_api.Awkward), and customers Meta names now by
# phone and BSUID, now by BSUID alone, with standby copies of their messages in between.
# AWKWARD_SEED reproduces a run (conftest prints it and seeds each test from it and the
# test's id); AWKWARD=0 turns it off.
AWKWARD_ON = os.environ.get("AWKWARD", "1") != "0"
AWKWARD_SEED = os.environ.get("AWKWARD_SEED") or str(random.SystemRandom().randrange(10**6))
AWKWARD_RATE = 0.15
_test_seed = {"current": AWKWARD_SEED}


def seed_test(test_id: str) -> None:
    """Seed the awkwardness of the Stacks the test `test_id` makes (conftest)."""
    _test_seed["current"] = f"{AWKWARD_SEED}:{test_id}"


def awkward_fake_options() -> dict[str, Any]:
    """FakeCloudAPI options for a test that builds its own fake (the kill tests): Meta's
    habits at the suite's rate and seed, unless AWKWARD=0."""
    seed = random.Random(_test_seed["current"]).randrange(2**32)
    return {"awkward": Awkward.everything(AWKWARD_RATE) if AWKWARD_ON else None, "seed": seed}


class _Default:
    """Stack's awkward= default: awkward unless AWKWARD=0."""


DEFAULT = _Default()


def make_settings(
    database_url: str, api_url: str = "http://127.0.0.1:9", **changes: Any
) -> Settings:
    settings = Settings(
        database_url=database_url,
        whatsapp_phone_id=PHONE_ID,
        whatsapp_token=TOKEN,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_api_url=api_url,
        send_rate_per_second=1000.0,
        recipient_burst=50,
        recipient_interval_seconds=0.5,
        send_timeout_seconds=5.0,
        log_json=False,
        # People always at work: what a hand-over says must not depend on when the suite
        # runs (tests/test_handover.py sets its own hours and clock).
        business_hours_text=ALWAYS_OPEN,
    )
    return replace(settings, **changes)


class Stack:
    """The service and the fake Cloud API. `awkward=None` for a test of the exact status
    or send mechanics (what it checks is what Meta's habits would blur)."""

    def __init__(
        self,
        database_url: str,
        *,
        statuses: tuple[str, ...] = ("sent",),
        awkward: Awkward | _Default | None = DEFAULT,
        **changes: Any,
    ):
        self.database_url = database_url
        self.changes = changes
        if isinstance(awkward, _Default):
            awkward = Awkward.everything(AWKWARD_RATE) if AWKWARD_ON else None
        self.awkward = awkward
        self._rng = random.Random(_test_seed["current"])
        self._phones_seen: set[str] = set()
        self.fake = FakeCloudAPI(
            phone_id=PHONE_ID,
            token=TOKEN,
            app_secret=APP_SECRET,
            statuses=statuses,
            awkward=awkward,
            seed=self._rng.randrange(2**32),
        )
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> Self:
        api_url = await self.fake.start()
        self.settings = make_settings(self.database_url, api_url, **self.changes)
        self._runner, self.url = await serve(build_app(self.settings))
        self.fake.webhook_url = f"{self.url}/webhook"
        self.session = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.fake.stop()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def post(self, payload: dict[str, Any]) -> int:
        body, headers = wa_payloads.signed_body(payload, APP_SECRET)
        assert self.session is not None
        async with self.session.post(f"{self.url}/webhook", data=body, headers=headers) as r:
            return r.status

    async def send(self, *items: InboundItem) -> int:
        items = tuple(self._as_meta_would(item) for item in items)
        if self.awkward is not None and self._rng.random() < AWKWARD_RATE:
            # Another app's copy of the same messages: must change nothing.
            assert await self.post(wa_payloads.standby_update(PHONE_ID, list(items))) == 200
        return await self.post(wa_payloads.messages_update(PHONE_ID, list(items)))

    def _as_meta_would(self, item: InboundItem) -> InboundItem:
        """With awkwardness on, a customer's message carries their BSUID (opaque, with
        letters) and, once their phone was seen, sometimes only the BSUID."""
        message, contact = item.message, item.contact
        phone = message.get("from")
        if self.awkward is None or "from_user_id" in message or not isinstance(phone, str):
            return item
        system = message.get("system")
        if isinstance(system, dict) and system.get("type") == "user_changed_number":
            if "user_id" in system:
                return item
            # Meta's 2026 notice names the new BSUID (a number change makes one).
            ids = {"user_id": _bsuid(str(system["wa_id"])), "previous_user_id": _bsuid(phone)}
            return InboundItem(message={**message, "system": {**system, **ids}}, contact=None)
        if contact is None:
            return item
        bsuid = _bsuid(phone)
        message = {**message, "from_user_id": bsuid}
        contact = {**contact, "user_id": bsuid}
        if phone in self._phones_seen and self._rng.random() < 0.3:
            del message["from"]
            contact.pop("wa_id", None)
        self._phones_seen.add(phone)
        return InboundItem(message=message, contact=contact)

    async def say(self, wa_id: str, text: str, **kw: Any) -> str:
        item = wa_payloads.inbound_text(wa_id, text, **kw)
        status = await self.send(item)
        assert status == 200, status
        return item.wamid

    async def tap(self, wa_id: str, choice_id: str, title: str = "x", *, row: bool = False) -> str:
        """Tap an option of the last interactive message sent to `wa_id`, quoting it as
        WhatsApp does (a tap on an older one is answered with the current options)."""
        prompts = [m for m in self.fake.sent if m.to == wa_id and m.type == "interactive"]
        context = prompts[-1].wamid if prompts else None
        if row:
            item = wa_payloads.inbound_list_reply(wa_id, choice_id, title, context_wamid=context)
        else:
            item = wa_payloads.inbound_button_reply(wa_id, choice_id, title, context_wamid=context)
        assert await self.send(item) == 200
        return item.wamid

    async def replies(
        self, count: int, *, to: str | None = None, timeout: float = 15.0
    ) -> list[SentMessage]:
        """Wait until `count` messages were sent (to `to`, if given) and return them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            got = [m for m in self.fake.sent if to is None or m.to == to]
            if len(got) >= count:
                return got
            if loop.time() > deadline:
                raise TimeoutError(
                    f"{len(got)} of {count} replies after {timeout}s: {[text_of(m) for m in got]}"
                )
            await asyncio.sleep(0.02)


def _bsuid(phone: str) -> str:
    """The business-scoped user id awkward runs give the owner of `phone`: opaque, with
    letters, the same all run long."""
    return "AR." + hashlib.sha256(f"{AWKWARD_SEED}:{phone}".encode()).hexdigest()[:12]


def outbox_id_of(message: SentMessage) -> str:
    """The outbox row a send was for: our biz_opaque_callback_data is "<id>.<attempt>"."""
    return (message.biz_opaque_callback_data or "").partition(".")[0]


def text_of(message: SentMessage) -> str:
    """The visible text of a sent message (body of text or interactive messages)."""
    body = message.body
    if body.get("type") == "text":
        return str(body["text"]["body"])
    if body.get("type") == "interactive":
        return str(body["interactive"]["body"]["text"])
    if body.get("type") == "template":
        return "[template] " + str(body["template"]["name"])
    return ""


def choice_ids(message: SentMessage) -> list[str]:
    """The ids of the buttons or list rows of an interactive message."""
    inter = message.body.get("interactive") or {}
    action = inter.get("action") or {}
    if "buttons" in action:
        return [b["reply"]["id"] for b in action["buttons"]]
    return [r["id"] for s in action.get("sections", []) for r in s["rows"]]


async def until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Until `check()` holds; TimeoutError naming `what` after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


async def wait_rows(pool: asyncpg.Pool, where: str, count: int, timeout: float = 20.0) -> None:
    """Until at least `count` outbox rows match `where`; TimeoutError (listing the rows
    not accepted) after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await pool.fetchval(f"SELECT count(*) FROM outbox WHERE {where}") < count:
        if loop.time() > deadline:
            rows = await pool.fetch(
                "SELECT id, status, attempts, error_code, error_message FROM outbox "
                "WHERE status <> 'accepted'"
            )
            raise TimeoutError(f"not {count} rows with {where}: {rows}")
        await asyncio.sleep(0.05)


async def sender_idle(pool: asyncpg.Pool, timeout: float = 15.0) -> None:
    """Until nothing is waiting to be sent or for its answer, and every send WhatsApp took
    is recorded as taken (its status webhook may come before that record is written)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')"
        " OR (status <> 'failed' AND accepted_at IS NULL)"
    ):
        if loop.time() > deadline:
            raise TimeoutError("the outbox did not settle")
        await asyncio.sleep(0.02)


async def eventually(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    """Until the database says `check`; TimeoutError naming `what` after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)
