"""The fake Cloud API and the webhook payload builders, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from pywa_async import WhatsApp
from pywa_async.errors import TooManyMessages, WhatsAppError
from pywa_async.types import Button

from bot.fakes import payloads as wa_payloads
from bot.fakes.cloud_api import Awkward, FakeCloudAPI
from bot.serving import serve
from bot.signatures import SignatureCheck, check
from bot.wa_client import RedirectTransport

PHONE_ID = "1234567890"
TOKEN = "test-token"
SECRET = "app-secret"
CUSTOMER = "5491155550001"
SENDS = f"/v23.0/{PHONE_ID}/messages"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Receiver:
    """A webhook endpoint on loopback that records what it is posted.

    `answer` picks the HTTP status of each request from its index (0-based).
    """

    answer: Callable[[int], int] = lambda _: 200
    bodies: list[bytes] = field(default_factory=list)
    signatures: list[str | None] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.answer(len(self.bodies))
        self.bodies.append(body)
        self.signatures.append(request.headers.get("X-Hub-Signature-256"))
        self.statuses.append(status)
        return web.Response(status=status, text="ok")

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self.bodies]

    def acked_statuses(self) -> list[dict[str, Any]]:
        """The status items of the requests answered 200, in arrival order."""
        return [
            status
            for body, answered in zip(self.bodies, self.statuses, strict=True)
            if answered == 200
            for entry in json.loads(body)["entry"]
            for change in entry["changes"]
            for status in change["value"].get("statuses", [])
        ]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/webhook", rec.handle)
    runner, base_url = await serve(app)
    rec.url = f"{base_url}/webhook"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def fake(receiver: Receiver) -> AsyncIterator[FakeCloudAPI]:
    api = FakeCloudAPI(
        phone_id=PHONE_ID, token=TOKEN, webhook_url=receiver.url, app_secret=SECRET, seed=1
    )
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def quiet_fake() -> AsyncIterator[FakeCloudAPI]:
    """A fake with no webhook: no status traffic."""
    async with FakeCloudAPI(phone_id=PHONE_ID, token=TOKEN, seed=1) as api:
        yield api


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def text_send(to: str = CUSTOMER, body: str = "hola", **extra: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": body},
        **extra,
    }


def buttons_send(titles: list[str], **interactive: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "¿Qué querés hacer?"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": f"b{n}", "title": title}}
                    for n, title in enumerate(titles)
                ]
            },
            **interactive,
        },
    }


def list_send(rows: list[dict[str, str]], button: str = "Ver planes") -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "interactive",
        "interactive": {
            "type": "list",
            "body": {"text": "Elegí un plan"},
            "action": {"button": button, "sections": [{"title": "Planes", "rows": rows}]},
        },
    }


def rows(count: int, title: str = "Plan", description: str = "") -> list[dict[str, str]]:
    made = []
    for n in range(count):
        row = {"id": f"r{n}", "title": f"{title}{n}"[:30]}
        if description:
            row["description"] = description
        made.append(row)
    return made


async def post(
    http: aiohttp.ClientSession, fake: FakeCloudAPI, payload: Any, headers: dict[str, str] = AUTH
) -> tuple[int, Any]:
    async with http.post(fake.base_url + SENDS, json=payload, headers=headers) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


# --- sends -----------------------------------------------------------------------------


async def test_text_send_answers_meta_shape_and_is_recorded(
    quiet_fake: FakeCloudAPI, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, quiet_fake, text_send(biz_opaque_callback_data="out-7"))

    assert status == 200
    wamid = body["messages"][0]["id"]
    assert body == {
        "messaging_product": "whatsapp",
        "contacts": [{"input": CUSTOMER, "wa_id": CUSTOMER}],
        "messages": [{"id": wamid}],
    }
    assert wamid.startswith("wamid.") and len(wamid) > 20
    [sent] = quiet_fake.sent
    assert (sent.seq, sent.wamid, sent.to, sent.type) == (1, wamid, CUSTOMER, "text")
    assert sent.body["text"] == {"body": "hola"}
    assert sent.biz_opaque_callback_data == "out-7"
    assert sent.received_at.utcoffset() is not None
    assert quiet_fake.failed_sends == []


async def test_wamids_are_unique(quiet_fake: FakeCloudAPI, http: aiohttp.ClientSession) -> None:
    for _ in range(20):
        assert (await post(http, quiet_fake, text_send()))[0] == 200
    assert len({m.wamid for m in quiet_fake.sent}) == 20
    assert [m.seq for m in quiet_fake.sent] == sorted({m.seq for m in quiet_fake.sent})


async def test_template_send_is_accepted_with_message_status(
    quiet_fake: FakeCloudAPI, http: aiohttp.ClientSession
) -> None:
    payload = {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "template",
        "template": {
            # One of the alerts' templates (bot.templates): the fake knows those.
            "name": "servicio_reactivado",
            "language": {"code": "es"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Juan"},
                        {"type": "text", "text": "juanperez.com.ar"},
                    ],
                }
            ],
        },
    }
    status, body = await post(http, quiet_fake, payload)

    assert status == 200
    assert body["messages"][0]["message_status"] == "accepted"
    assert quiet_fake.sent[0].type == "template"


async def test_send_to_a_bsuid_answers_user_id(
    quiet_fake: FakeCloudAPI, http: aiohttp.ClientSession
) -> None:
    payload = text_send()
    del payload["to"]
    payload["recipient"] = "AR.1502576394655843"

    status, body = await post(http, quiet_fake, payload)

    assert status == 200
    assert body["contacts"] == [{"input": "AR.1502576394655843", "user_id": "AR.1502576394655843"}]
    assert quiet_fake.sent[0].to == "AR.1502576394655843"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
async def test_bad_token_is_401_oauth_error(
    quiet_fake: FakeCloudAPI, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    status, body = await post(http, quiet_fake, text_send(), headers=headers)

    assert status == 401
    assert body["error"]["code"] == 190
    assert body["error"]["type"] == "OAuthException"
    assert body["error"]["fbtrace_id"]
    assert quiet_fake.sent == []
    assert [f.code for f in quiet_fake.failed_sends] == [190]


async def test_unknown_phone_id_is_400_code_100(
    quiet_fake: FakeCloudAPI, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        quiet_fake.base_url + "/v23.0/999/messages", json=text_send(), headers=AUTH
    ) as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"]["code"] == 100
    assert "'999' does not exist" in body["error"]["message"]
    assert quiet_fake.sent == []


@pytest.mark.parametrize(
    ("payload", "code", "detail"),
    [
        (text_send(body="x" * 4097), 100, "4096"),
        (text_send(body=""), 100, "text['body']"),
        ({"to": CUSTOMER, "type": "text", "text": {"body": "x"}}, 100, "messaging_product"),
        ({**text_send(), "to": None}, 100, "to"),
        ({**text_send(), "type": "carrier_pigeon"}, 100, "type"),
        # A user id with letters sent as a group (what pywa's guess makes of it).
        ({**text_send(to="AR.Ab3dZ9kQx7"), "recipient_type": "group"}, 100, "group"),
        (text_send(to="AR.Ab3dZ9kQx7"), 100, "recipient"),
        (buttons_send(["a", "b", "c", "d"]), 131009, "Max count: 3"),
        (buttons_send(["x" * 21]), 131009, "Button title"),
        (buttons_send(["Sí", "Sí"]), 131009, "duplicate"),
        (buttons_send(["ok"], header={"type": "text", "text": "h" * 61}), 131009, "Header"),
        (buttons_send(["ok"], footer={"text": "f" * 61}), 131009, "Footer"),
        (buttons_send(["ok"], body={"text": "b" * 1025}), 131009, "Body"),
        (list_send(rows(11)), 131009, "10"),
        (list_send(rows(1, title="t" * 25)), 131009, "Row title"),
        (list_send(rows(1, description="d" * 73)), 131009, "Row description"),
        (list_send(rows(1), button="b" * 21), 131009, "Button label"),
        ({**text_send(), "biz_opaque_callback_data": "z" * 513}, 100, "512"),
        (
            {
                "messaging_product": "whatsapp",
                "to": CUSTOMER,
                "type": "template",
                "template": {
                    "name": "t",
                    "language": {"code": "es"},
                    "components": [
                        {"type": "body", "parameters": [{"type": "text", "text": "a\nb"}]}
                    ],
                },
            },
            132018,
            "new-line",
        ),
        ({"messaging_product": "whatsapp", "to": CUSTOMER, "type": "image", "image": {}}, 100, ""),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_limit_violations_answer_meta_errors(
    quiet_fake: FakeCloudAPI,
    http: aiohttp.ClientSession,
    payload: dict[str, Any],
    code: int,
    detail: str,
) -> None:
    status, body = await post(http, quiet_fake, payload)

    assert status == 400
    assert body["error"]["code"] == code
    assert body["error"]["message"].startswith(f"(#{code}) ")
    assert detail in body["error"]["error_data"]["details"]
    assert body["error"]["error_data"]["messaging_product"] == "whatsapp"
    assert quiet_fake.sent == []
    assert [f.code for f in quiet_fake.failed_sends] == [code]


@pytest.mark.parametrize(
    "payload",
    [
        text_send(body="x" * 4096),
        buttons_send(["a" * 20, "b" * 20, "c" * 20], header={"type": "text", "text": "h" * 60}),
        list_send(rows(10, title="t" * 22, description="d" * 72), button="b" * 20),
    ],
    ids=["text-4096", "three-20-char-buttons", "ten-rows-at-limits"],
)
async def test_payloads_at_the_limits_are_accepted(
    quiet_fake: FakeCloudAPI, http: aiohttp.ClientSession, payload: dict[str, Any]
) -> None:
    status, body = await post(http, quiet_fake, payload)

    assert status == 200, body
    assert len(quiet_fake.sent) == 1


# --- failure injection -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "http_status", "title"),
    [
        (130429, 429, "Rate limit hit"),
        (131056, 429, "(Business Account, Consumer Account) pair rate limit hit"),
        (131047, 400, "Re-engagement message"),
        (131026, 400, "Message undeliverable"),
        (131000, 500, "Something went wrong"),
        (131016, 503, "Service unavailable"),
        (131057, 400, "Account in maintenance mode"),
        (132000, 400, "Template Param Count Mismatch"),
        (132001, 400, "Template does not exist"),
    ],
)
async def test_injected_error_codes_answer_meta_errors(
    quiet_fake: FakeCloudAPI, http: aiohttp.ClientSession, code: int, http_status: int, title: str
) -> None:
    quiet_fake.fail_next(code)

    status, body = await post(http, quiet_fake, text_send())

    assert status == http_status
    error = body["error"]
    assert error["code"] == code
    assert error["message"] == f"(#{code}) {title}"
    assert error["type"] == "OAuthException"
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert error["error_data"]["details"]
    assert error["fbtrace_id"]
    assert ("error_subcode" in error) == (code == 131026)
    assert quiet_fake.sent == []
    [failed] = quiet_fake.failed_sends
    assert (failed.code, failed.http_status, failed.to) == (code, http_status, CUSTOMER)
    # Only the next send fails.
    assert (await post(http, quiet_fake, text_send()))[0] == 200


@pytest.mark.parametrize("code", [500, 502, 503])
async def test_bare_5xx_answers_html(
    quiet_fake: FakeCloudAPI, http: aiohttp.ClientSession, code: int
) -> None:
    quiet_fake.fail_next(code)

    async with http.post(quiet_fake.base_url + SENDS, json=text_send(), headers=AUTH) as response:
        assert response.status == code
        assert response.content_type == "text/html"
        assert f"<h1>{code}" in await response.text()
    assert quiet_fake.sent == []


async def test_fail_next_counts_and_recipient_filter(
    quiet_fake: FakeCloudAPI, http: aiohttp.ClientSession
) -> None:
    other = "5491155550002"
    quiet_fake.fail_next(131056, count=2, to=other)

    results = [
        (await post(http, quiet_fake, text_send(to=to)))[0]
        for to in (CUSTOMER, other, CUSTOMER, other, other)
    ]

    assert results == [200, 429, 200, 429, 200]
    assert [m.to for m in quiet_fake.sent] == [CUSTOMER, CUSTOMER, other]


async def test_failure_rate_is_roughly_honoured_and_seeded(
    http: aiohttp.ClientSession,
) -> None:
    async def run(seed: int) -> list[int]:
        async with FakeCloudAPI(phone_id=PHONE_ID) as api:
            api.set_failure_rate(0.25, (131000, 130429), seed=seed)
            return [(await post(http, api, text_send(), headers={}))[0] for _ in range(300)]

    first = await run(7)
    again = await run(7)
    other = await run(8)

    failures = sum(status != 200 for status in first)
    assert 45 <= failures <= 105
    assert set(first) == {200, 500, 429}
    assert first == again
    assert first != other


async def test_failures_configured_over_http(
    quiet_fake: FakeCloudAPI, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        quiet_fake.base_url + "/_fake/failures",
        json={"fail_next": [{"code": 131047, "to": CUSTOMER}], "delay": 0.0},
    ) as response:
        assert response.status == 200
        config = await response.json()
    assert config["fail_next"] == [{"code": 131047, "count": 1, "to": CUSTOMER}]

    status, body = await post(http, quiet_fake, text_send())
    assert (status, body["error"]["code"]) == (400, 131047)

    async with http.post(
        quiet_fake.base_url + "/_fake/failures", json={"rate": 1.0, "codes": [131016]}
    ) as response:
        assert response.status == 200
    assert (await post(http, quiet_fake, text_send()))[0] == 503

    async with http.post(quiet_fake.base_url + "/_fake/failures", json={"clear": True}):
        pass
    assert (await post(http, quiet_fake, text_send()))[0] == 200

    async with http.post(quiet_fake.base_url + "/_fake/failures", json={"rate": 2}) as response:
        assert response.status == 400


async def test_delay_records_the_send_then_answers_late(
    quiet_fake: FakeCloudAPI, http: aiohttp.ClientSession
) -> None:
    quiet_fake.set_delay(0.6)

    with pytest.raises(TimeoutError):
        async with http.post(
            quiet_fake.base_url + SENDS,
            json=text_send(),
            headers=AUTH,
            timeout=aiohttp.ClientTimeout(total=0.15),
        ):
            pass
    # The request reached "Meta": it counts as sent although its answer was lost.
    assert len(quiet_fake.sent) == 1

    started = time.monotonic()
    status, body = await post(http, quiet_fake, text_send())
    assert status == 200
    assert time.monotonic() - started >= 0.55
    assert body["messages"][0]["id"] == quiet_fake.sent[1].wamid


async def test_stop_does_not_wait_for_delayed_answers(http: aiohttp.ClientSession) -> None:
    api = FakeCloudAPI(phone_id=PHONE_ID)
    await api.start()
    api.set_delay(30)
    request = asyncio.create_task(post(http, api, text_send(), headers={}))
    await api.wait_for_sends(1, timeout=5)

    started = time.monotonic()
    await api.stop()

    assert time.monotonic() - started < 3
    status, _ = await asyncio.wait_for(request, 5)
    assert status == 200


# --- records ---------------------------------------------------------------------------


async def test_messages_listing_filters_and_clears(
    quiet_fake: FakeCloudAPI, http: aiohttp.ClientSession
) -> None:
    other = "5491155550002"
    for to in (CUSTOMER, other, CUSTOMER):
        await post(http, quiet_fake, text_send(to=to))
    first_seq = quiet_fake.sent[0].seq

    async with http.get(
        quiet_fake.base_url + "/_fake/messages", params={"to": CUSTOMER, "after": str(first_seq)}
    ) as response:
        listed = await response.json()
    assert [m["seq"] for m in listed] == [quiet_fake.sent[2].seq]
    assert listed[0]["to"] == CUSTOMER
    assert listed[0]["body"]["text"] == {"body": "hola"}
    assert listed[0]["received_at"].endswith("+00:00")

    async with http.get(quiet_fake.base_url + "/_fake/stats") as response:
        assert (await response.json())["sent"] == 3
    async with http.delete(quiet_fake.base_url + "/_fake/messages") as response:
        assert response.status == 200
    assert quiet_fake.sent == []
    async with http.get(quiet_fake.base_url + "/_fake/messages") as response:
        assert await response.json() == []


async def test_wait_for_sends_wakes_and_times_out(
    quiet_fake: FakeCloudAPI, http: aiohttp.ClientSession
) -> None:
    waiting = asyncio.create_task(quiet_fake.wait_for_sends(2, timeout=5))
    await asyncio.sleep(0)
    assert not waiting.done()
    await post(http, quiet_fake, text_send())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await post(http, quiet_fake, text_send())

    assert len(await waiting) == 2
    with pytest.raises(TimeoutError, match="2 of 3"):
        await quiet_fake.wait_for_sends(3, timeout=0.05)


# --- status webhooks -------------------------------------------------------------------


async def test_status_webhooks_are_signed_ordered_and_echo_the_tracker(
    fake: FakeCloudAPI, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    _, body = await post(http, fake, text_send(biz_opaque_callback_data="42"))
    wamid = body["messages"][0]["id"]

    await fake.wait_statuses_delivered(timeout=5)

    assert len(receiver.bodies) == 3
    for raw, signature in zip(receiver.bodies, receiver.signatures, strict=True):
        assert check(raw, SECRET, signature) is SignatureCheck.VALID
    statuses = receiver.acked_statuses()
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    for item in statuses:
        assert item["id"] == wamid
        assert item["recipient_id"] == CUSTOMER
        assert item["biz_opaque_callback_data"] == "42"
        assert item["timestamp"].isdigit()
    assert statuses[0]["pricing"]["category"] == "service"
    payload = receiver.payloads()[0]
    value = payload["entry"][0]["changes"][0]["value"]
    assert payload["object"] == "whatsapp_business_account"
    assert value["metadata"]["phone_number_id"] == PHONE_ID
    assert "contacts" not in value
    assert fake.stats()["statuses_delivered"] == 3
    assert fake.statuses_pending == 0


async def test_status_webhooks_are_retried_until_acknowledged(
    fake: FakeCloudAPI, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    receiver.answer = lambda index: 500 if index < 2 else 200
    started = time.monotonic()
    await post(http, fake, text_send(biz_opaque_callback_data="7"))

    await fake.wait_statuses_delivered(timeout=10)

    assert receiver.statuses == [500, 500, 200, 200, 200]
    # A retry re-posts the same signed bytes; backoff 0.2 s then 0.4 s.
    assert receiver.bodies[0] == receiver.bodies[1] == receiver.bodies[2]
    assert time.monotonic() - started >= 0.55
    assert [s["status"] for s in receiver.acked_statuses()] == ["sent", "delivered", "read"]
    assert fake.status_attempts == 5
    assert fake.statuses_delivered == 3


async def test_statuses_keep_per_message_order_under_failures(
    fake: FakeCloudAPI, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    receiver.answer = lambda index: 503 if index % 3 == 1 else 200
    wamids = []
    for n in range(15):
        _, body = await post(http, fake, text_send(biz_opaque_callback_data=str(n)))
        wamids.append(body["messages"][0]["id"])

    await fake.wait_statuses_delivered(timeout=20)

    by_message: dict[str, list[str]] = {}
    for item in receiver.acked_statuses():
        by_message.setdefault(item["id"], []).append(item["status"])
    assert by_message == {wamid: ["sent", "delivered", "read"] for wamid in wamids}
    assert 503 in receiver.statuses


async def test_status_delay_holds_the_webhooks(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async with FakeCloudAPI(
        phone_id=PHONE_ID,
        webhook_url=receiver.url,
        app_secret=SECRET,
        statuses=("sent", "failed"),
        status_delay=0.2,
    ) as api:
        started = time.monotonic()
        await post(http, api, text_send(), headers={})
        await asyncio.sleep(0.1)
        assert receiver.bodies == []
        await api.wait_statuses_delivered(timeout=5)

    assert time.monotonic() - started >= 0.35
    statuses = receiver.acked_statuses()
    assert [s["status"] for s in statuses] == ["sent", "failed"]
    assert statuses[1]["errors"][0]["code"] == 131026


# --- inbound simulator -----------------------------------------------------------------


async def test_inbound_simulator_posts_a_signed_classic_payload(
    fake: FakeCloudAPI, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        fake.base_url + "/_fake/inbound",
        json={"from": CUSTOMER, "text": "hola ñandú", "name": "Ana"},
    ) as response:
        answer = await response.json()

    assert answer["webhook_status"] == 200
    [raw] = receiver.bodies
    assert check(raw, SECRET, receiver.signatures[0]) is SignatureCheck.VALID
    assert "ñandú".encode() in raw  # UTF-8, not \u escapes
    value = json.loads(raw)["entry"][0]["changes"][0]["value"]
    assert value["contacts"] == [{"profile": {"name": "Ana"}, "wa_id": CUSTOMER}]
    [message] = value["messages"]
    assert message["id"] == answer["wamid"]
    assert message["from"] == CUSTOMER
    assert message["type"] == "text"
    assert message["text"] == {"body": "hola ñandú"}
    assert "from_user_id" not in message


async def test_inbound_simulator_posts_a_2026_payload_without_phone(
    fake: FakeCloudAPI, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    user_id = "AR.1502576394655843"
    async with http.post(
        fake.base_url + "/_fake/inbound",
        json={
            "user_id": user_id,
            "username": "ana.dev",
            "button_reply": {"id": "b1", "title": "Sí"},
        },
    ) as response:
        answer = await response.json()

    assert answer["webhook_status"] == 200
    assert check(receiver.bodies[0], SECRET, receiver.signatures[0]) is SignatureCheck.VALID
    value = receiver.payloads()[0]["entry"][0]["changes"][0]["value"]
    assert value["contacts"] == [
        {"profile": {"name": "Cliente", "username": "ana.dev"}, "user_id": user_id}
    ]
    [message] = value["messages"]
    assert "from" not in message
    assert message["from_user_id"] == user_id
    assert message["interactive"] == {
        "type": "button_reply",
        "button_reply": {"id": "b1", "title": "Sí"},
    }
    assert message["context"]["id"].startswith("wamid.")


@pytest.mark.parametrize(
    "case",
    [
        ({"list_reply": {"id": "r2", "title": "Plan Pro"}}, "interactive"),
        ({"type": "sticker"}, "sticker"),
        ({"button": {"payload": "PAGAR", "text": "Pagar"}}, "button"),
    ],
    ids=["list_reply", "sticker", "template_button"],
)
async def test_inbound_simulator_other_kinds(
    fake: FakeCloudAPI,
    receiver: Receiver,
    http: aiohttp.ClientSession,
    case: tuple[dict[str, Any], str],
) -> None:
    request_body, type_ = case
    async with http.post(
        fake.base_url + "/_fake/inbound",
        json={"from": CUSTOMER, "user_id": "AR.1", **request_body},
    ) as response:
        assert response.status == 200
    value = receiver.payloads()[0]["entry"][0]["changes"][0]["value"]
    [message] = value["messages"]
    assert message["type"] == type_
    assert isinstance(message[type_], dict)
    assert (message["from"], message["from_user_id"]) == (CUSTOMER, "AR.1")
    assert value["contacts"][0]["wa_id"] == CUSTOMER


async def test_inbound_simulator_rejects_nonsense(
    fake: FakeCloudAPI, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async with http.post(fake.base_url + "/_fake/inbound", json={"text": "sin remitente"}) as r:
        assert r.status == 400
    assert receiver.bodies == []


async def test_send_inbound_reports_the_webhook_status(
    fake: FakeCloudAPI, receiver: Receiver
) -> None:
    receiver.answer = lambda _: 403
    item = wa_payloads.inbound_text(CUSTOMER, "hola")

    wamid, status = await fake.send_inbound(item)

    assert (wamid, status) == (item.wamid, 403)


# --- pywa through the fake -------------------------------------------------------------


async def test_pywa_sends_through_the_fake(quiet_fake: FakeCloudAPI) -> None:
    session = httpx.AsyncClient(transport=RedirectTransport(quiet_fake.base_url))
    try:
        wa = WhatsApp(phone_id=PHONE_ID, token=TOKEN, session=session, api_version="23.0")

        sent = await wa.send_message(to=CUSTOMER, text="Hola desde pywa", tracker="42")

        [recorded] = quiet_fake.sent
        assert sent.id == recorded.wamid
        assert recorded.biz_opaque_callback_data == "42"
        assert recorded.body["text"] == {"body": "Hola desde pywa", "preview_url": False}

        await wa.send_message(
            to=CUSTOMER,
            text="¿Confirmás?",
            header="Upgrade",
            buttons=[Button("Sí", callback_data="yes"), Button("No", callback_data="no")],
        )
        interactive = quiet_fake.sent[1].body["interactive"]
        assert interactive["type"] == "button"
        assert interactive["header"] == {"type": "text", "text": "Upgrade"}
        assert interactive["body"] == {"text": "¿Confirmás?"}
        assert interactive["action"]["buttons"][0] == {
            "type": "reply",
            "reply": {"id": "yes", "title": "Sí"},
        }

        quiet_fake.fail_next(131056)
        with pytest.raises(WhatsAppError) as raised:
            await wa.send_message(to=CUSTOMER, text="otra vez")
        assert isinstance(raised.value, TooManyMessages)
        assert raised.value.code == 131056
        assert raised.value.status_code == 429
        assert raised.value.details
        assert len(quiet_fake.sent) == 2
    finally:
        await session.aclose()


# --- payload builders ------------------------------------------------------------------


def test_system_messages_have_no_contacts() -> None:
    new = wa_payloads.inbound_system_changed_number(CUSTOMER, "5491155559999", new_user_id="AR.77")
    legacy = wa_payloads.inbound_system_changed_number(CUSTOMER, "5491155559999", legacy=True)

    payload = wa_payloads.messages_update(PHONE_ID, [new, legacy])

    value = payload["entry"][0]["changes"][0]["value"]
    assert "contacts" not in value
    first, second = value["messages"]
    assert first["type"] == second["type"] == "system"
    assert first["from"] == CUSTOMER
    assert first["system"]["type"] == "user_changed_number"
    assert first["system"]["wa_id"] == "5491155559999"
    assert first["system"]["user_id"] == "AR.77"
    assert second["system"]["type"] == "customer_changed_number"
    assert second["system"]["customer"] == CUSTOMER
    assert second["system"]["new_wa_id"] == "5491155559999"
    assert "5491155559999" in second["system"]["body"]


def test_messages_update_deduplicates_contacts_and_keeps_every_message() -> None:
    items = [
        wa_payloads.inbound_text(CUSTOMER, "uno", timestamp=1700000000),
        wa_payloads.inbound_text(CUSTOMER, "dos"),
        wa_payloads.inbound_list_reply("5491155550002", "r1", "Plan", "Dos núcleos"),
        wa_payloads.inbound_system_changed_number("5491155550003", "5491155550004"),
    ]

    value = wa_payloads.messages_update(PHONE_ID, items, waba_id="W1")["entry"][0]["changes"][0][
        "value"
    ]

    assert [c["wa_id"] for c in value["contacts"]] == [CUSTOMER, "5491155550002"]
    assert [m["id"] for m in value["messages"]] == [item.wamid for item in items]
    assert value["messages"][0]["timestamp"] == "1700000000"
    assert value["messages"][2]["interactive"]["list_reply"]["description"] == "Dos núcleos"


def test_2026_shape_keeps_the_phone_when_known() -> None:
    item = wa_payloads.inbound_text(CUSTOMER, "hola", user_id="AR.5", username="ana")

    assert item.contact == {
        "profile": {"name": "Cliente", "username": "ana"},
        "wa_id": CUSTOMER,
        "user_id": "AR.5",
    }
    assert (item.message["from"], item.message["from_user_id"]) == (CUSTOMER, "AR.5")
    with pytest.raises(ValueError):
        wa_payloads.inbound_text(None, "nadie")


def test_batch_update_spreads_groups_over_entries_and_changes() -> None:
    groups: list[list[wa_payloads.InboundItem | dict[str, Any]]] = [
        [wa_payloads.inbound_text(CUSTOMER, "a"), wa_payloads.inbound_text("5491155550002", "b")],
        [wa_payloads.status_item("wamid.X", "read", CUSTOMER)],
        [wa_payloads.inbound_other(CUSTOMER, "reaction", {"message_id": "wamid.X", "emoji": "👍"})],
    ]

    payload = wa_payloads.batch_update(PHONE_ID, groups, changes_per_entry=2)

    assert [len(entry["changes"]) for entry in payload["entry"]] == [2, 1]
    values = [change["value"] for entry in payload["entry"] for change in entry["changes"]]
    assert len(values[0]["messages"]) == 2
    assert "messages" not in values[1] and values[1]["statuses"][0]["status"] == "read"
    assert "contacts" not in values[1]
    assert values[2]["messages"][0]["reaction"]["emoji"] == "👍"


def test_status_items_follow_meta_shapes() -> None:
    sent = wa_payloads.status_item(
        "wamid.A", "sent", CUSTOMER, biz_opaque_callback_data="9", recipient_user_id="AR.5"
    )
    failed = wa_payloads.status_item("wamid.A", "failed", CUSTOMER)
    read = wa_payloads.status_item("wamid.A", "read", None, recipient_user_id="AR.5")

    assert sent["conversation"]["origin"] == {"type": "service"}
    assert sent["pricing"] == {"billable": True, "pricing_model": "PMP", "category": "service"}
    assert sent["biz_opaque_callback_data"] == "9"
    assert sent["recipient_user_id"] == "AR.5"
    assert failed["errors"][0]["code"] == 131026
    assert failed["errors"][0]["error_data"]["details"]
    assert "recipient_id" not in read and "pricing" not in read

    with_contacts = wa_payloads.statuses_update(PHONE_ID, [sent, read], with_contacts=True)
    value = with_contacts["entry"][0]["changes"][0]["value"]
    assert value["contacts"] == [{"wa_id": CUSTOMER, "user_id": "AR.5"}]
    assert (
        "contacts"
        not in wa_payloads.statuses_update(PHONE_ID, [sent])["entry"][0]["changes"][0]["value"]
    )


def test_unsupported_message_carries_meta_error() -> None:
    item = wa_payloads.inbound_other(CUSTOMER, "unsupported", {"type": "poll"})

    assert item.message["errors"][0]["code"] == 131051


def test_signed_body_is_compact_utf8_and_verifiable() -> None:
    payload = wa_payloads.messages_update(PHONE_ID, [wa_payloads.inbound_text(CUSTOMER, "¿Sí?")])

    body, headers = wa_payloads.signed_body(payload, SECRET)

    assert b": " not in body and b", " not in body
    assert "¿Sí?".encode() in body
    assert json.loads(body) == payload
    assert headers["Content-Type"] == "application/json"
    assert check(body, SECRET, headers["X-Hub-Signature-256"]) is SignatureCheck.VALID
    assert check(body, "other", headers["X-Hub-Signature-256"]) is SignatureCheck.INVALID


def test_bsuids_and_wamids_look_like_metas() -> None:
    user_id = wa_payloads.new_user_id("MX")
    country, digits = user_id.split(".")

    assert country == "MX" and digits.isdigit()
    assert wa_payloads.new_wamid() != wa_payloads.new_wamid()


# --- command line ----------------------------------------------------------------------


async def test_cli_serves_until_sigterm(http: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.fakes.cloud_api",
        "--port",
        "0",
        "--phone-id",
        PHONE_ID,
        "--token",
        TOKEN,
        "--statuses",
        "none",
        stdout=asyncio.subprocess.PIPE,
        cwd=PROJECT_ROOT,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        base_url = line.decode().strip()
        assert base_url.startswith("http://127.0.0.1:")

        async with http.post(base_url + SENDS, json=text_send(), headers=AUTH) as response:
            assert response.status == 200
        async with http.get(base_url + "/_fake/stats") as response:
            assert (await response.json())["sent"] == 1

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# --- Meta's habits (Awkward) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("awkward", "expected"),
    [
        (Awkward(skip_delivered=1.0), ["sent", "read"]),
        (Awkward(out_of_order=1.0), ["sent", "read", "delivered"]),
        (Awkward(failed_after_sent=1.0), ["sent", "failed"]),
    ],
)
async def test_awkward_statuses(
    fake: FakeCloudAPI,
    receiver: Receiver,
    http: aiohttp.ClientSession,
    awkward: Awkward,
    expected: list[str],
) -> None:
    fake.awkward = awkward
    await post(http, fake, text_send(biz_opaque_callback_data="5"))
    await fake.wait_statuses_delivered(timeout=10)
    statuses = receiver.acked_statuses()
    assert [s["status"] for s in statuses] == expected
    if "failed" in expected:
        assert statuses[-1]["errors"][0]["code"] == 131026


async def test_awkward_repeats_a_status(
    fake: FakeCloudAPI, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    fake.awkward = Awkward(repeat=1.0)
    await post(http, fake, text_send())
    await fake.wait_statuses_delivered(timeout=10)
    got = [s["status"] for s in receiver.acked_statuses()]
    assert len(got) == 4 and sorted(set(got)) == ["delivered", "read", "sent"]
    assert any(a == b for a, b in itertools.pairwise(got))  # the same one twice in a row


async def test_awkward_gateway_timeout_after_accepting(
    fake: FakeCloudAPI, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    fake.awkward = Awkward(gateway_timeout=1.0)
    status, body = await post(http, fake, text_send(biz_opaque_callback_data="9"))
    assert status == 504 and "Gateway Timeout" in body  # an HTML page, no wamid
    # …yet WhatsApp has it: recorded, and its statuses come, echoing our tracker.
    [sent] = fake.sent
    await fake.wait_statuses_delivered(timeout=10)
    statuses = receiver.acked_statuses()
    assert {s["id"] for s in statuses} == {sent.wamid}
    assert {s["biz_opaque_callback_data"] for s in statuses} == {"9"}
    assert fake.gateway_timeouts == 1
